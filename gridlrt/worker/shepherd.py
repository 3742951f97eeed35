"""The shepherd: a tiny process between the pilot and its payload, so that no payload outlives
its pilot, however the pilot ends.

Why a process and not just ``PR_SET_PDEATHSIG`` on the payload: the death signal reaches only
the direct child, while a payload is often a shell script whose children (and a ``setsid``'d
grandchild) would keep running and keep writing into the work directory. A cgroup would catch
them all, but grid worker nodes do not let a pilot make cgroups. So the shepherd

* makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): every descendant of the
  payload whose parent dies is re-parented to the shepherd, even after ``setsid``, so the
  shepherd can always find the whole tree by walking ``/proc``;
* starts the payload with ``PR_SET_PDEATHSIG = SIGKILL`` (if the shepherd itself is killed,
  the payload goes at once);
* holds the read end of a pipe whose write end only the pilot has: when the pilot dies, even
  by SIGKILL, the pipe reaches end-of-file and the shepherd kills the whole tree and exits;
* on SIGTERM (the pilot's stop or timeout), SIGTERMs the tree, waits ``grace`` seconds,
  SIGKILLs what is left, and returns only when no descendant is left;
* when the payload's main process ends, kills whatever it left running in the background,
  then ends the way the payload ended (same exit code, or the same signal).

It is started as a script (``python -I -S shepherd.py FD GRACE -- ARGV...``) and imports
only the standard library, so it costs a few milliseconds per token. Linux only (``prctl``
and ``/proc``), as worker nodes are.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _child_setup() -> None:
    """In the payload, before exec: die with the shepherd, empty signal mask, default
    handlers, own process group."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    os.setpgid(0, 0)


def descendants(root: int) -> list[int]:
    """Live (not zombie) descendants of ``root``, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        if fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _reap() -> None:
    """Collect every exited child (the shepherd inherits orphans as a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree(grace: float) -> None:
    """SIGTERM every descendant, SIGKILL what is left after ``grace`` s, and return when none is
    left running. (Zombies are not counted: the children of an exited process are re-parented
    to this subreaper at once, so they are still found.)"""
    me = os.getpid()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        deadline = time.monotonic() + wait
        while alive := descendants(me):
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        else:
            return


def main(args: list[str]) -> int:
    """``shepherd.py PIPE_FD GRACE -- ARGV...``"""
    if len(args) < 4 or args[2] != "--":
        print("usage: shepherd.py PIPE_FD GRACE -- ARGV...", file=sys.stderr)
        return 2
    pipe_fd, grace, argv = int(args[0]), float(args[1]), args[3:]
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    stopping = {"signal": 0}

    def on_term(signum: int, _frame: object) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        proc = subprocess.Popen(argv, preexec_fn=_child_setup)  # noqa: S603 - argv, no shell
    except OSError as exc:
        print(f"cannot start {argv[0]}: {exc}", file=sys.stderr)
        return 127
    status = None
    while status is None:
        if stopping["signal"]:
            kill_tree(grace)
            status = proc.wait()
            break
        try:
            readable, _, _ = select.select([pipe_fd], [], [], 0.1)
        except InterruptedError:
            continue
        if readable and not os.read(pipe_fd, 1):  # end of file: the pilot is gone
            kill_tree(min(grace, 1.0))
            status = proc.wait()
            return 137
        status = proc.poll()
    kill_tree(min(grace, 2.0))  # what the payload left in the background
    _reap()
    if status < 0:  # killed by a signal: end the same way, so the pilot sees it
        signal.signal(-status, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {-status})
        os.kill(os.getpid(), -status)
        time.sleep(1)
        return 128 - status
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
