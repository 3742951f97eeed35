"""Running a step's payload (DP3 or any command) as a well-behaved child.

The payload runs under a :mod:`~gridlrt.worker.shepherd` in its own session, with output to a
log file. On timeout, or when the pilot is told to stop, the shepherd SIGTERMs the *whole tree*
the payload started (even ``setsid``'d grandchildren), then SIGKILLs it after a grace period,
so DP3 and anything it started go with it. If the pilot dies (even by SIGKILL) the shepherd
notices at once (a pipe only the pilot holds reaches end-of-file) and kills the tree too: no
payload outlives its pilot and writes into a directory a later attempt uses. The child starts
with an empty signal mask (gfal2 contexts block signals in the pilot, and children would
inherit that).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

log = logging.getLogger(__name__)


class PayloadResult(BaseModel):
    exit_code: int  # negative: killed by that signal
    duration_s: float
    timed_out: bool = False
    interrupted: bool = False
    log: Path


def _child_setup() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are still running (zombies are dead; Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process went away while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def kill_group(pgid: int, grace: float, proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, and return only once no
    member is left running (at most ~5 s after the SIGKILL)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5.0
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


SHEPHERD = Path(__file__).with_name("shepherd.py")


def run_payload(
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    grace: float = 10.0,
    stop: threading.Event | None = None,
) -> PayloadResult:
    """Run ``argv`` (never through a shell) under a shepherd and wait for it, the timeout, or
    ``stop``; returns only when nothing the payload started is left running."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lifeline, keep = os.pipe()  # the shepherd reads ``lifeline``; only this process has ``keep``
    try:
        with log_path.open("ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(  # noqa: S603 - argv list from a validated step
                [
                    sys.executable,
                    "-I",
                    "-S",
                    str(SHEPHERD),
                    str(lifeline),
                    str(grace),
                    "--",
                    *list(argv),
                ],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(lifeline,),
                preexec_fn=_child_setup,  # only resets the signal mask
            )
        os.close(lifeline)
        lifeline = -1
        timed_out = interrupted = False
        while True:
            try:
                proc.wait(0.1)  # returns the moment the payload exits
                break
            except subprocess.TimeoutExpired:
                pass
            if timeout is not None and time.monotonic() - started > timeout:
                log.warning("payload exceeded %.0f s; killing everything it started", timeout)
                timed_out = True
            elif stop is not None and stop.is_set():
                log.warning("pilot stopping; killing everything the payload started")
                interrupted = True
            if timed_out or interrupted:
                _stop_shepherd(proc, grace)
                break
        code = proc.wait()
    finally:
        if lifeline >= 0:
            os.close(lifeline)
        os.close(keep)
    return PayloadResult(
        exit_code=code,
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
        interrupted=interrupted,
        log=log_path,
    )


def _stop_shepherd(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the shepherd (it takes the payload's tree down within ``grace`` + a few s);
    should it hang, SIGKILL its group (the payload then dies by its death signal)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace + 15.0)
    except subprocess.TimeoutExpired:
        log.error("the payload's shepherd did not stop; killing its process group")
        kill_group(proc.pid, 0.0, proc)


def log_tail(path: Path, lines: int = 50, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log (reading at most ``max_bytes`` from its end)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
