"""Payloads run in their own process group: timeouts and stops take all their children along."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gridlrt.worker.payload import log_tail, run_payload


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status  # a zombie is dead, just not reaped by its parent


def children_pids(log: Path) -> list[int]:
    return [
        int(line.split("=")[1]) for line in log.read_text().splitlines() if line.startswith("pid=")
    ]


SPAWNER = "sleep 300 & echo pid=$!; sleep 300 & echo pid=$!; echo started; wait"


def test_success_and_log(tmp_path: Path) -> None:
    result = run_payload(
        ["sh", "-c", "echo hello; echo oops >&2; exit 3"],
        cwd=tmp_path,
        log_path=tmp_path / "log.txt",
    )
    assert result.exit_code == 3 and not result.timed_out
    assert log_tail(tmp_path / "log.txt", 2) == "hello\noops"


def test_timeout_kills_the_whole_group_within_timeout_plus_grace(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    started = time.monotonic()
    result = run_payload(["sh", "-c", SPAWNER], cwd=tmp_path, log_path=log, timeout=1.0, grace=2.0)
    took = time.monotonic() - started
    assert result.timed_out
    assert result.exit_code < 0
    assert took < 1.0 + 2.0 + 2.0
    pids = children_pids(log)
    assert len(pids) == 2
    time.sleep(0.2)
    assert not any(alive(pid) for pid in pids)


def test_stop_event_interrupts(tmp_path: Path) -> None:
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    result = run_payload(
        ["sh", "-c", SPAWNER], cwd=tmp_path, log_path=tmp_path / "log.txt", stop=stop, grace=2.0
    )
    assert result.interrupted and not result.timed_out
    assert not any(alive(pid) for pid in children_pids(tmp_path / "log.txt"))


def test_child_gets_sigterm_even_if_the_pilot_blocks_it(tmp_path: Path) -> None:
    import signal

    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        trap = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"
        result = run_payload(
            ["sh", "-c", trap], cwd=tmp_path, log_path=tmp_path / "log.txt", timeout=1.0, grace=5.0
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    assert result.exit_code == 7  # the trap ran: SIGTERM was delivered, not SIGKILL
    assert "got-term" in (tmp_path / "log.txt").read_text()


ESCAPER = (
    "setsid sh -c 'echo pid=$$; while true; do echo tick >> out.txt; sleep 0.05; done' & "
    "sleep 300 & echo pid=$!; echo started; wait"
)


def _wait_for_pids(log: Path, n: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if log.exists() and len(pids := children_pids(log)) >= n:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"payload did not start {n} children: {log.read_text()!r}")


def test_stop_kills_a_setsid_grandchild(tmp_path: Path) -> None:
    stop = threading.Event()
    log = tmp_path / "log.txt"
    threading.Timer(0.8, stop.set).start()
    result = run_payload(["sh", "-c", ESCAPER], cwd=tmp_path, log_path=log, stop=stop, grace=2.0)
    assert result.interrupted
    pids = children_pids(log)
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)
    size = (tmp_path / "out.txt").stat().st_size
    time.sleep(0.3)
    assert (tmp_path / "out.txt").stat().st_size == size  # nobody writes any more


def test_background_children_do_not_outlive_a_finished_payload(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    result = run_payload(
        ["sh", "-c", "setsid sleep 300 & echo pid=$!; sleep 300 & echo pid=$!; exit 0"],
        cwd=tmp_path,
        log_path=log,
        grace=1.0,
    )
    assert result.exit_code == 0
    assert not any(alive(pid) for pid in children_pids(log))


@pytest.mark.parametrize("escaper", [True, False], ids=["setsid-grandchild", "plain-children"])
def test_payload_dies_with_a_sigkilled_pilot(tmp_path: Path, escaper: bool) -> None:
    """The pilot is SIGKILLed while its payload runs: the whole payload tree goes with it
    (today's failure: the payload kept writing into the directory the retry used)."""
    import signal
    import subprocess
    import sys

    log = tmp_path / "log.txt"
    script = ESCAPER if escaper else SPAWNER
    pilot = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from gridlrt.worker.payload import run_payload;"
            f"run_payload(['sh', '-c', sys.argv[1]], cwd=Path({str(tmp_path)!r}),"
            f" log_path=Path({str(log)!r}))",
            script,
        ]
    )
    pids = _wait_for_pids(log, 2)
    os.kill(pilot.pid, signal.SIGKILL)
    pilot.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)]
    if escaper:
        size = (tmp_path / "out.txt").stat().st_size
        time.sleep(0.3)
        assert (tmp_path / "out.txt").stat().st_size == size
