"""Nothing lost, nothing run twice (issue 12): retries counted honestly, one directory per
attempt, work directories of dead pilots removed, stops during upload, failed uploads, and
pilots riding out a pool outage of a real (restarted) pouchdb-server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

from gridlrt.errors import StorageError
from gridlrt.storage import Storage, TransferResult
from gridlrt.tokens import PilotInfo, TokenPool, TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.sqlite import SQLitePool
from gridlrt.worker.pilot import Pilot, PilotOptions
from gridlrt.worker.steps import StepConfig, load_step
from gridlrt.worker.workdirs import OWNER_FILE, attempt_dir, clean_dead
from tests.gridlrt_cli import cli_env, gridlrt
from tests.services.couchdb import start_pouchdb_server

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
ANN = PilotInfo(pilot="pilot-ann", host="wn1")


def command_step(tmp_path: Path, name: str, script: str, max_attempts: int = 2) -> StepConfig:
    steps = tmp_path / "steps"
    steps.mkdir(exist_ok=True)
    (steps / f"{name}.toml").write_text(
        f'name = "{name}"\nkind = "command"\nmax_attempts = {max_attempts}\n'
        f"command = [\"sh\", \"-c\", {json.dumps(script)}]\n"
        '[inputs]\nkind = "none"\n[outputs]\nkeep = ["out.txt"]\n'
        'url = "{root}/{token_id}/{name}"\n'
    )
    return load_step(steps / f"{name}.toml")


def make_pilot(
    pool: TokenPool, step: StepConfig, tmp_path: Path, storage: Storage | None = None, **kw: object
) -> Pilot:
    options = PilotOptions(workroot=tmp_path / "scratch", heartbeat_interval=1.0, **kw)  # type: ignore[arg-type]
    return Pilot(
        pool,
        lambda name: step,
        storage or Storage(),
        storage_root=(tmp_path / "results").as_uri(),
        options=options,
    )


# --- retries: only failures since the last reset count ----------------------------------------


def test_releases_do_not_use_up_retries_and_a_reset_starts_the_count_again(
    pool: TokenPool, tmp_path: Path
) -> None:
    step = command_step(tmp_path, "broken", "echo no >&2; exit 3", max_attempts=2)
    pool.create([new_token("broken_1", inputs="x", step="broken")])
    for _ in range(3):  # three pilots were stopped (SIGTERM, cancel) while holding it
        pool.claim(ANN)
        pool.release("broken_1", ANN.pilot)

    summary = make_pilot(pool, step, tmp_path).run()
    token = pool.get("broken_1")
    assert summary.failed == 2  # two real tries, although it had 5 attempts in all
    assert token.status is TokenStatus.ERROR
    assert token.attempts_since_reset("error") == 2

    assert pool.reset(ids=["broken_1"]) == ["broken_1"]
    assert pool.get("broken_1").attempts_since_reset("error") == 0
    summary = make_pilot(pool, step, tmp_path).run()
    assert summary.failed == 2  # the reset gave it max_attempts tries again
    assert len(pool.get("broken_1").attempts) == 7

    url = pool.url if isinstance(pool, SQLitePool) else cast(CouchDBPool, pool).db_url
    shown = gridlrt(cli_env(tmp_path), "tokens", "show", "broken_1", "--pool", url).stdout
    assert "2 failed (of the step's max_attempts), 0 lost" in shown
    assert shown.count("(before reset)") == 5  # 3 releases and 2 failures before the reset


def test_recover_counts_lost_attempts_not_releases(pool: TokenPool) -> None:
    pool.create([new_token("t1", inputs="x")])
    for _ in range(3):
        pool.claim(ANN)
        pool.release("t1", ANN.pilot)
    pool.claim(ANN)
    assert pool.recover(60, now=time.time() + 120, max_scrubs=2) == ["t1"]
    assert pool.get("t1").status is TokenStatus.TODO  # first loss of 2 allowed
    pool.claim(ANN)
    assert pool.recover(60, now=time.time() + 120, max_scrubs=2) == ["t1"]
    token = pool.get("t1")
    assert token.status is TokenStatus.ERROR
    assert "lost 2 time(s) since the last reset" in token.error[-1].message


# --- one directory per attempt; dead pilots' directories removed ------------------------------


def test_every_attempt_works_in_its_own_directory(pool: TokenPool, tmp_path: Path) -> None:
    step = command_step(tmp_path, "twice", "pwd > ../$(basename $PWD).seen; exit 5")
    pool.create([new_token("twice_1", inputs="x", step="twice")])
    make_pilot(pool, step, tmp_path).run()
    token = pool.get("twice_1")
    seen = sorted(p.stem for p in (tmp_path / "scratch").glob("*.seen"))
    assert seen == sorted(f"twice_1.{a.id}" for a in token.attempts)
    assert len(set(seen)) == 2
    # the attempts' directories are gone (no --keep-workdirs), the markers outside them stay
    assert sorted(p.name for p in (tmp_path / "scratch").iterdir() if p.is_dir()) == []


def test_pilot_removes_work_directories_of_dead_pilots_only(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    code = (
        "import sys; from pathlib import Path; from gridlrt.worker.workdirs import attempt_dir;"
        "d = attempt_dir(Path(sys.argv[1]), 'dead_1', 'a1'); (d / 'big.MS').mkdir()"
    )
    subprocess.run([sys.executable, "-c", code, str(root)], check=True)  # its owner is gone now
    mine = attempt_dir(root, "alive_1", "a2")  # owned by this (living) process
    foreign = attempt_dir(root, "other_1", "a3")
    (foreign / OWNER_FILE).write_text(json.dumps({"host": "another-node", "pid": 1, "start": "1"}))
    unknown = root / "not-a-pilot-dir"
    unknown.mkdir()

    removed = clean_dead(root)
    assert removed == [root / "dead_1.a1"]
    assert mine.is_dir() and foreign.is_dir() and unknown.is_dir()
    assert not (root / "dead_1.a1").exists()


def test_a_starting_pilot_cleans_the_node(tmp_path: Path) -> None:
    pool = SQLitePool(tmp_path / "pool.sqlite")
    pool.init()
    code = (
        "import sys; from pathlib import Path; from gridlrt.worker.workdirs import attempt_dir;"
        "attempt_dir(Path(sys.argv[1]), 'dead_1', 'a1')"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "scratch")], check=True)
    step = command_step(tmp_path, "noop", "echo ok > out.txt")
    make_pilot(pool, step, tmp_path).run()
    assert not (tmp_path / "scratch" / "dead_1.a1").exists()


# --- stop during upload; failed uploads -----------------------------------------------------------


class StopDuringUpload(Storage):
    """Real storage; the pilot is told to stop (SIGTERM) while the first output is uploading."""

    pilot: Pilot | None = None

    def copy(self, src: str, dst: str, **kw: object) -> TransferResult:  # type: ignore[override]
        if self.pilot is not None:
            self.pilot.stop()
        return super().copy(src, dst, **kw)  # type: ignore[arg-type]


def test_stop_during_upload_finishes_the_upload_and_the_token(
    pool: TokenPool, tmp_path: Path
) -> None:
    step = command_step(tmp_path, "up", "echo result > out.txt")
    pool.create([new_token("up_1", inputs="x", step="up")])
    storage = StopDuringUpload()
    pilot = make_pilot(pool, step, tmp_path, storage=storage)
    storage.pilot = pilot
    summary = pilot.run()
    token = pool.get("up_1")
    out = tmp_path / "results" / "up_1" / "out.txt"
    assert token.status is TokenStatus.DONE, token.attempts
    assert summary.done == 1 and summary.stop_reason == "stopped by signal"
    assert token.output == [out.as_uri()]
    assert out.read_text() == "result\n"


class FailSecondUpload(Storage):
    calls = 0

    def copy(self, src: str, dst: str, **kw: object) -> TransferResult:  # type: ignore[override]
        FailSecondUpload.calls += 1
        if FailSecondUpload.calls == 2:
            raise StorageError(f"copy to {dst} failed: connection reset")
        return super().copy(src, dst, **kw)  # type: ignore[arg-type]


def test_a_failed_upload_leaves_no_result_of_a_token_that_is_not_done(
    pool: TokenPool, tmp_path: Path
) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "two.toml").write_text(
        'name = "two"\nkind = "command"\nmax_attempts = 1\n'
        'command = ["sh", "-c", "echo a > a.txt; echo b > b.txt"]\n'
        '[inputs]\nkind = "none"\n[outputs]\nkeep = ["a.txt", "b.txt"]\n'
        'url = "{root}/{token_id}/{name}"\n'
    )
    step = load_step(steps / "two.toml")
    pool.create([new_token("two_1", inputs="x", step="two")])
    FailSecondUpload.calls = 0
    make_pilot(pool, step, tmp_path, storage=FailSecondUpload()).run()
    token = pool.get("two_1")
    assert token.status is TokenStatus.ERROR
    assert "connection reset" in token.error[-1].message
    results = tmp_path / "results" / "two_1"
    assert not results.exists() or not list(results.iterdir())  # a.txt was removed again


# --- a pool outage of 20 s, ridden out by busy and idle pilots --------------------------------


def _worker(
    pool_url: str, steps: Path, root: str, tmp_path: Path, name: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            GRIDLRT, "worker", "run", "--pool", pool_url, "--steps-dir", str(steps),
            "--heartbeat", "1s", "--idle-timeout", "90s", "--max-tokens", "1",
            "--workdir", str(tmp_path / name), "--output-root", root,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "GRIDLRT_CONFIG": str(tmp_path / "none.toml")},
    )  # fmt: skip


def test_pilots_ride_out_a_pool_outage(tmp_path: Path) -> None:
    """pouchdb-server is stopped for 20 s while one pilot runs a payload and another waits for
    work; both carry on when it is back, the token is done with one attempt, and each pilot
    logs the outage once (today: both die with rc=1 after ~4 s and strand their tokens)."""
    server = start_pouchdb_server(tmp_path / "couch")
    port = int(server.url.rsplit(":", 1)[1])
    db = server.new_database("outage")
    steps = tmp_path / "steps"
    command_step(tmp_path, "slow", "sleep 6; echo $0 > out.txt")
    pool = CouchDBPool(db)
    pool.init()
    pool.create([new_token("slow_1", inputs="x", step="slow")])
    root = (tmp_path / "results").as_uri()
    busy = _worker(db, steps, root, tmp_path, "busy")
    deadline = time.monotonic() + 60
    while pool.get("slow_1").status is not TokenStatus.RUNNING:
        assert time.monotonic() < deadline, "the payload never started"
        time.sleep(0.2)
    idle = _worker(db, steps, root, tmp_path, "idle")
    time.sleep(2)  # the idle pilot is polling an empty pool now
    server.process.stop()
    time.sleep(20)
    server = start_pouchdb_server(tmp_path / "couch", port=port)
    try:
        pool.create([new_token("slow_2", inputs="x", step="slow")])
        outputs = {}
        for name, proc in (("busy", busy), ("idle", idle)):
            outputs[name], _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, outputs[name]
        for token_id in ("slow_1", "slow_2"):
            token = pool.get(token_id)
            assert token.status is TokenStatus.DONE, token.error
            assert len(token.attempts) == 1 and token.attempts_since_reset("error") == 0
        for name, text in outputs.items():
            assert len(re.findall(r"unreachable \(", text)) == 1, (name, text)
            assert len(re.findall(r"reachable again after", text)) == 1, (name, text)
    finally:
        for proc in (busy, idle):
            if proc.poll() is None:
                proc.kill()
        server.process.stop()
