"""Starting and stopping the background processes behind the test services.

A service that cannot start makes its fixture *fail* with the tail of its log: tests never
skip because a required service is missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest


def unblock_signals() -> None:
    """Run in the child before exec: clear the signal mask. gfal2's gridftp/srm plugins block
    SIGTERM, SIGINT, SIGCHLD... in the thread that creates a context, and children inherit
    the mask, so a service started after a gfal2 context would ignore SIGTERM."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ServiceProcess:
    """One background process with its output in a log file; stopped with its process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=unblock_signals,
                )
            except OSError as exc:
                pytest.fail(f"{self.name}: cannot start {self.argv[0]}: {exc}", pytrace=False)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll ``ready()`` until true; fail the fixture with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                code = self.proc.returncode if self.proc else None
                pytest.fail(
                    f"{self.name} exited (code {code}) before it was ready; log {self.log}:\n"
                    f"{log_tail(self.log)}",
                    pytrace=False,
                )
            try:
                if ready():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(
            f"{self.name} not ready after {timeout:.0f} s; log {self.log}:\n{log_tail(self.log)}",
            pytrace=False,
        )

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(grace)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
