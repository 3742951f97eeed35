"""The pilot end to end: real pool, real gfal2 against the WebDAV fixture, real DP3 on
synthetic LOFAR measurement sets, and real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from casacore import tables

from gridlrt.config import load_settings
from gridlrt.storage import Storage
from gridlrt.tokens import Token, TokenPool, TokenStatus, new_token, open_pool
from gridlrt.worker.pilot import Pilot, PilotOptions
from gridlrt.worker.steps import StepConfig, load_step
from tests.lofar_inputs import put_input
from tests.services.webdav import WebDAV

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))


@pytest.fixture
def pool(tmp_path: Path) -> TokenPool:
    made = open_pool(load_settings(pool=f"sqlite:///{tmp_path / 'pool.sqlite'}"))
    made.init()
    return made


@pytest.fixture
def area(webdav: WebDAV) -> str:
    """A fresh directory on the WebDAV server for this test."""
    return f"test-{uuid4().hex[:8]}"


def pilot_for(pool: TokenPool, webdav: WebDAV, area: str, tmp_path: Path, **kw: object) -> Pilot:
    options = PilotOptions(workroot=tmp_path / "scratch", heartbeat_interval=1.0, **kw)  # type: ignore[arg-type]
    return Pilot(
        pool, load_step, Storage(), storage_root=webdav.dav_url(f"{area}/results"), options=options
    )


def fetch_output(url: str, tmp_path: Path) -> Path:
    local = tmp_path / "check" / url.rsplit("/", 1)[-1]
    local.parent.mkdir(parents=True, exist_ok=True)
    Storage().copy(url, local.as_uri())
    with tarfile.open(local) as tar:
        tar.extractall(local.parent, filter="data")
    return local.parent / local.name.removesuffix(".tar")


@pytest.mark.parametrize("step", ["average", "flag-average"])
def test_token_to_dp3_to_webdav(
    step: str,
    pool: TokenPool,
    webdav: WebDAV,
    area: str,
    tmp_path: Path,
    make_ms: Callable[..., Path],
) -> None:
    ms = make_ms(obsid=229507, subband=100, channels=64, timeslots=10)
    url = put_input(webdav, area, ms, tmp_path)
    pool.create([new_token(f"{step}_L229507_SB100", inputs=url, step=step)])

    summary = pilot_for(pool, webdav, area, tmp_path).run()
    assert summary.done == 1, pool.get(f"{step}_L229507_SB100").error

    token = pool.get(f"{step}_L229507_SB100")
    assert token.status is TokenStatus.DONE and token.exit_code == 0
    stem = ms.name.removesuffix(".MS")  # L229507_SAP000_SB100_uv
    expected = webdav.dav_url(f"{area}/results/L229507/{step}/{stem}.{step}.MS.tar")
    assert token.output == [expected]
    assert {"claim", "download", "run", "validate", "upload", "total"} <= set(
        token.attempts[-1].timings
    )
    assert "log_tail.txt" in pool.attachment_names(token.id)
    assert webdav.path(f"{area}/results/L229507/{step}/{token.id}.log").stat().st_size > 0

    out = fetch_output(expected, tmp_path)
    with tables.table(str(out), ack=False) as t:
        assert len(np.unique(t.getcol("TIME"))) == 5
        assert t.getcol("DATA").shape[1:] == (16, 4)
        flags = t.getcol("FLAG")
        assert flags.shape[1:] == (16, 4)
    with tables.table(f"{out}::SPECTRAL_WINDOW", ack=False) as spw:
        assert spw.getcol("NUM_CHAN")[0] == 16
    leftovers = [p.name for p in webdav.path(f"{area}/results/L229507/{step}").iterdir()]
    assert not [n for n in leftovers if ".part-" in n]


def test_gaincal_writes_a_solution_table(
    pool: TokenPool, webdav: WebDAV, area: str, tmp_path: Path, make_ms: Callable[..., Path]
) -> None:
    from gridlrt.demo.synthetic_ms import SyntheticMSSpec

    ms = make_ms(obsid=229507, subband=101, channels=16, timeslots=6)
    url = put_input(webdav, area, ms, tmp_path)
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "sky.skymodel").write_text(SyntheticMSSpec().sky_model())
    gaincal = load_step("gaincal")
    pool.create([new_token("gaincal_L229507_SB101", inputs=url, step="gaincal")])
    options = PilotOptions(workroot=tmp_path / "scratch", heartbeat_interval=1.0)
    pilot = Pilot(
        pool,
        lambda name: gaincal,
        Storage(),
        storage_root=webdav.dav_url(f"{area}/results"),
        options=options,
        step_dir=steps,
    )
    assert pilot.run().done == 1, pool.get("gaincal_L229507_SB101").error
    token = pool.get("gaincal_L229507_SB101")
    out = fetch_output(str(token.output[0]), tmp_path)
    solutions = out / "instrument.h5"
    assert solutions.is_file() and solutions.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
    with tables.table(str(out), ack=False) as t:
        assert "CORRECTED_DATA" in t.colnames()


def test_failing_step_ends_in_error_with_log_tail(
    pool: TokenPool, webdav: WebDAV, area: str, tmp_path: Path
) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "broken.toml").write_text(
        'name = "broken"\nkind = "command"\nmax_attempts = 2\n'
        'command = ["sh", "-c", "echo working on $0; echo disk quota exceeded >&2; exit 4",'
        ' "{input}"]\n'
        '[inputs]\nkind = "none"\n[outputs]\nkeep = []\n'
    )
    step = load_step(steps / "broken.toml")
    pool.create([new_token("broken_1", inputs="srm://x/L1_SB000_uv.MS.tar", step="broken")])
    pilot = Pilot(
        pool,
        lambda name: step,
        Storage(),
        storage_root=webdav.dav_url(area),
        options=PilotOptions(workroot=tmp_path / "s"),
    )
    summary = pilot.run()
    token = pool.get("broken_1")
    assert summary.failed == 2  # tried max_attempts times
    assert token.status is TokenStatus.ERROR and token.exit_code == 4
    assert token.error[-1].message == "sh exited with 4"
    assert "disk quota exceeded" in token.error[-1].log_tail
    assert "working on srm://x/L1_SB000_uv.MS.tar" in token.error[-1].log_tail


def test_unknown_template_key_fails_before_any_download(
    pool: TokenPool, webdav: WebDAV, area: str, tmp_path: Path
) -> None:
    bad = StepConfig(
        name="bad", kind="dp3", parset="msin={msin}\nmsout={msout}\navg.freqstep={freqstepp}\n"
    )
    missing_input = webdav.dav_url(f"{area}/does-not-exist/L1_SB000_uv.MS_12345678.tar")
    pool.create([new_token("bad_1", inputs=missing_input, step="bad")])
    pilot = Pilot(
        pool,
        lambda name: bad,
        Storage(),
        storage_root=webdav.dav_url(area),
        options=PilotOptions(workroot=tmp_path / "s"),
    )
    pilot.run()
    token = pool.get("bad_1")
    assert token.status is TokenStatus.ERROR
    assert "unknown placeholder {freqstepp}" in token.error[-1].message  # not a download error
    assert len(token.attempts) == 1  # a template error is not retried


SLOW_STEP = (
    'name = "slow"\nkind = "command"\ntimeout = "{timeout}"\nmax_attempts = 1\n'
    'command = ["sh", "-c", "echo $$ > {workdir}/payload.pid; '
    "sleep 300 & echo $! > {workdir}/child.pid; "
    'wait; echo done > {workdir}/out.txt", "{input}"]\n'
    '[inputs]\nkind = "none"\n[outputs]\nkeep = ["out.txt"]\nurl = "{root}/{token_id}/{name}"\n'
)


def start_worker(
    pool_url: str, steps: Path, root: str, tmp_path: Path, name: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            GRIDLRT,
            "worker",
            "run",
            "--pool",
            pool_url,
            "--steps-dir",
            str(steps),
            "--heartbeat",
            "1s",
            "--workdir",
            str(tmp_path / name),
            "--keep-workdirs",
            "--output-root",
            root,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path_glob: Callable[[], list[Path]], timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = path_glob()
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError("the payload never started")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def slow_setup(tmp_path: Path, timeout: str = "1h") -> tuple[str, Path, TokenPool]:
    pool_url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "slow.toml").write_text(SLOW_STEP.replace("{timeout}", timeout))
    pool = open_pool(load_settings(pool=pool_url))
    pool.init()
    pool.create([new_token("slow_1", inputs="L1_SB000", step="slow")])
    return pool_url, steps, pool


def test_sigterm_releases_the_token_and_kills_the_payload(
    tmp_path: Path, webdav: WebDAV, area: str
) -> None:
    pool_url, steps, pool = slow_setup(tmp_path)
    worker = start_worker(pool_url, steps, webdav.dav_url(area), tmp_path, "w1")
    pidfile = wait_for(lambda: list((tmp_path / "w1").glob("*/child.pid")))
    time.sleep(0.3)
    child = int(pidfile.read_text())
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    token = pool.get("slow_1")
    assert token.status is TokenStatus.TODO
    assert token.attempts[-1].outcome == "released"
    assert not alive(child)
    assert not webdav.path(f"{area}/slow_1").exists()  # nothing partial uploaded


def test_sigkill_then_recover_then_second_worker_finishes_once(
    tmp_path: Path, webdav: WebDAV, area: str
) -> None:
    pool_url, steps, pool = slow_setup(tmp_path)
    first = start_worker(pool_url, steps, webdav.dav_url(area), tmp_path, "w1")
    pidfile = wait_for(lambda: list((tmp_path / "w1").glob("*/child.pid")))
    time.sleep(0.3)
    first.kill()
    first.communicate(timeout=30)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:  # the payload dies with its pilot
        time.sleep(0.05)
    assert not alive(child)
    assert pool.get("slow_1").status is TokenStatus.RUNNING

    time.sleep(3.5)
    recover = subprocess.run(
        [GRIDLRT, "tokens", "recover", "--stale-after", "3s", "--pool", pool_url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "recovered 1 token(s)" in recover.stdout, recover.stdout + recover.stderr
    (steps / "slow.toml").write_text(
        SLOW_STEP.replace("sleep 300", "sleep 0.2").replace("{timeout}", "1h")
    )
    second = start_worker(pool_url, steps, webdav.dav_url(area), tmp_path, "w2")
    output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output
    token = pool.get("slow_1")
    assert token.status is TokenStatus.DONE
    assert [a.outcome for a in token.attempts] == ["lost", "done"]
    results = list(webdav.path(f"{area}/slow_1").iterdir())
    assert [p.name for p in results if not p.name.endswith(".log")] == ["out.txt"]


def test_timeout_kills_payload_and_children(tmp_path: Path, webdav: WebDAV, area: str) -> None:
    pool_url, steps, pool = slow_setup(tmp_path, timeout="2s")
    started = time.monotonic()
    worker = start_worker(pool_url, steps, webdav.dav_url(area), tmp_path, "w1")
    output, _ = worker.communicate(timeout=60)
    took = time.monotonic() - started
    assert worker.returncode == 0, output
    token: Token = pool.get("slow_1")
    assert token.status is TokenStatus.ERROR
    assert token.exit_code == 124
    assert "step timeout of 2 s" in token.error[-1].message
    child = int(next((tmp_path / "w1").glob("*/child.pid")).read_text())
    assert not alive(child)
    assert took < 2 + 10 + 15  # timeout + grace + start-up of the pilot


def quick_step(seconds: float) -> StepConfig:
    return StepConfig(
        name="quick",
        kind="command",
        command=["sleep", str(seconds)],
        inputs={"kind": "none"},
        outputs={"keep": [], "log": False},
    )


def test_stops_after_max_tokens_and_when_time_is_short(
    pool: TokenPool, webdav: WebDAV, area: str, tmp_path: Path
) -> None:
    pool.create([new_token(f"quick_{i}", inputs="x", step="quick") for i in range(6)])
    step = quick_step(0.4)
    counted = Pilot(
        pool,
        lambda name: step,
        Storage(),
        storage_root=webdav.dav_url(area),
        options=PilotOptions(workroot=tmp_path / "a", max_tokens=2),
    ).run()
    assert counted.done == 2 and "--max-tokens" in counted.stop_reason

    # Each token takes >= 0.4 s; with 1.0 s and a safety factor of 1.5 a third cannot fit.
    timed = Pilot(
        pool,
        lambda name: step,
        Storage(),
        storage_root=webdav.dav_url(area),
        options=PilotOptions(workroot=tmp_path / "b", max_time=1.0),
    ).run()
    assert 1 <= timed.done <= 2
    assert "not enough time left" in timed.stop_reason
    assert pool.overview().by_status("quick")["todo"] == 6 - 2 - timed.done


def test_batch_job_id_from_the_environment() -> None:
    from gridlrt.worker.pilot import batch_job_id

    assert (
        batch_job_id({"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "80"})
        == "77_3"
    )
    assert batch_job_id({"SLURM_JOB_ID": "80"}) == "80"
    assert batch_job_id({"DIRACJOBID": "123456"}) == "123456"
    assert batch_job_id({"GLITE_WMS_JOBID": "https://wms.grid.sara.nl:9000/abc"}).endswith("abc")
    assert batch_job_id({}) is None


EXTRA_STEP = """
name = "apply"
kind = "command"
max_attempts = 1
command = ['sh', '-c', 'cat "$0" > seen.txt; ls "$1" >> seen.txt', '{cal_solve}', '{cal_ms}']
[inputs]
kind = "none"
[outputs]
keep = ["seen.txt"]
url = "{root}/{pipeline}/{stage}/{group_label}/{name}"
"""


def test_a_pilot_downloads_extra_inputs_and_records_its_sandbox(tmp_path: Path) -> None:
    """A promoted token's extra inputs (a parent's file, a parent's packed measurement set)
    reach the payload as {name}; the attempt records GRIDLRT_SANDBOX_ID."""
    from gridlrt.worker.pilot import pack_directory

    parents = tmp_path / "parents"
    parents.mkdir()
    solutions = parents / "solutions.h5"
    solutions.write_text("gains of the calibrator\n")
    ms = parents / "L123_SB000_uv.cal_prep.MS"
    ms.mkdir()
    (ms / "table.dat").write_bytes(b"not really a table")
    packed = pack_directory(ms, parents / "packed")  # as a parent's pilot uploads it
    pool_url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    pool = open_pool(load_settings(pool=pool_url))
    pool.init()
    token = new_token("apply_L456_SB004", inputs=None, step="apply").model_copy(
        update={
            "extra_inputs": {"cal_solve": [solutions.as_uri()], "cal_ms": [packed.as_uri()]},
            "pipeline": "lba",
            "stage": "target_apply",
            "group": {"label": "SB004"},
        }
    )
    pool.create([token])
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "apply.toml").write_text(EXTRA_STEP)
    results = tmp_path / "results"
    sandbox = "ab" * 32
    worker = subprocess.run(
        [GRIDLRT, "worker", "run", "--pool", pool_url, "--steps-dir", str(steps),
         "--workdir", str(tmp_path / "w"), "--output-root", results.as_uri()],
        env={**os.environ, "GRIDLRT_SANDBOX_ID": sandbox},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr
    done = pool.get("apply_L456_SB004")
    assert done.status is TokenStatus.DONE, done.error
    out = results / "lba" / "target_apply" / "SB004" / "seen.txt"
    assert done.output == [out.as_uri()]
    assert out.read_text() == "gains of the calibrator\ntable.dat\n"
    assert done.attempts[-1].sandbox == sandbox


def test_sandbox_id_from_the_environment() -> None:
    from gridlrt.worker.pilot import sandbox_id

    assert sandbox_id({"GRIDLRT_SANDBOX_ID": "AB" * 32 + "\n"}) == "ab" * 32
    assert sandbox_id({"GRIDLRT_SANDBOX_ID": ""}) is None
    assert sandbox_id({"GRIDLRT_SANDBOX_ID": "not-a-sha"}) is None
    assert sandbox_id({}) is None
