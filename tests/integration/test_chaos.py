"""Fault injection in the suite (issue 12): on both pool backends, 4 pilots drain 60 tokens
while 20 of them are SIGKILLed at random moments and the pool goes away for 20 s; then every
token is done exactly once, every output was written by exactly one attempt and is complete,
and nothing is left behind (no .part file, no process of a killed pilot, no work directory).
bench/chaos.py runs the same harness (tests/chaos.py) at a larger size."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gridlrt.tokens import TokenStatus, new_token
from gridlrt.tokens.sqlite import SQLitePool
from gridlrt.worker.workdirs import OWNER_FILE
from tests.chaos import STEP, ChaosConfig, run_chaos
from tests.gridlrt_cli import cli_env, gridlrt


@pytest.mark.parametrize("backend", ["sqlite", "couchdb"])
def test_kills_and_an_outage_lose_nothing_and_run_nothing_twice(
    backend: str, tmp_path: Path
) -> None:
    report = run_chaos(ChaosConfig(backend=backend, workdir=tmp_path, seed=20261130))
    print("\n".join(report.lines()))
    assert report.kills >= 20 and report.outages == 1 and report.outage_seconds >= 20
    assert len(report.kills_by_phase) >= 2, report.kills_by_phase  # kills hit several phases
    assert report.failures == {}, "\n".join(report.lines())
    assert report.done_once == report.tokens


# A pilot removes its attempt's work directory after the token (shutil.rmtree, in the order
# the file system lists it), then a starting pilot removes what dead pilots left: directories
# whose owner file names a process that is gone. Run as `gridlrt worker run`, with an audit
# hook that SIGKILLs the pilot at the first removal after the owner file's (a file, or the
# directory itself), i.e. a kill that lands in its cleanup once the owner file is gone.
KILLED_IN_CLEANUP = f"""
import os, signal, sys
owner_gone = False
def hook(event, args):
    global owner_gone
    if event in ("os.remove", "os.rmdir") and owner_gone:
        os.kill(os.getpid(), signal.SIGKILL)
    if event == "os.remove" and str(args[0]).endswith({OWNER_FILE!r}):
        owner_gone = True
sys.addaudithook(hook)
from gridlrt.cli import main
sys.argv = ["gridlrt", *sys.argv[1:]]
main()
"""


def test_a_pilot_killed_while_removing_its_work_directory_leaves_none_behind(
    tmp_path: Path,
) -> None:
    pool_url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    pool = SQLitePool(tmp_path / "pool.sqlite")
    pool.init()
    pool.create([new_token("tidy_1", inputs="none", step="chaos")])
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "chaos.toml").write_text(STEP)
    scratch = tmp_path / "scratch"
    args = [
        "worker", "run", "--pool", pool_url, "--steps-dir", str(steps), "--idle-timeout", "0s",
        "--workdir", str(scratch), "--output-root", (tmp_path / "results").as_uri(),
    ]  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_CLEANUP, *args], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert pool.get("tidy_1").status is TokenStatus.DONE  # the cleanup comes after the token

    gridlrt(cli_env(tmp_path), *args)  # the next pilot on the node cleans what the dead one left
    left = {p.name: sorted(f.name for f in p.iterdir()) for p in scratch.iterdir() if p.is_dir()}
    assert left == {}, f"work directories left by the killed pilot, without their owner: {left}"
