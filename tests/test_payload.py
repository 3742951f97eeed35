"""Payloads run in their own process group: timeouts and stops take all their children along."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gridlrt.errors import InputError
from gridlrt.templating import placeholders, render
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


def test_strict_templates() -> None:
    fields = {"msin": "in.MS", "subband": 7}
    assert (
        render("msin={msin}\nsb={subband:03d}\nlit={{x}}", fields) == "msin=in.MS\nsb=007\nlit={x}"
    )
    assert placeholders("{a} {b} {a}") == ["a", "b"]
    with pytest.raises(InputError, match=r"unknown placeholder \{msout\} \(known: msin, subband\)"):
        render("msout={msout}", fields, where="average.parset")
    for bad in ("{msin.__class__}", "{msin[0]}", "{msin!r}"):
        with pytest.raises(InputError, match="not allowed"):
            render(bad, fields)
    with pytest.raises(InputError, match="literal braces"):
        render("steps=[avg] {", fields)
