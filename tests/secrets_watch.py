"""Watching for a secret where it must never be: every process's argv (read from /proc while
jobs run), the environment of pilot processes, and files written by a run."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType


class ProcWatcher:
    """A thread that reads ``/proc/*/cmdline`` (and the environ of gridlrt pilots) every few
    milliseconds and remembers any process whose argv or pilot environment holds ``secret``."""

    def __init__(self, secret: str, interval: float = 0.05) -> None:
        self.secret = secret.encode()
        self.interval = interval
        self.hits: list[str] = []
        self.pilots_seen: set[int] = set()
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-watcher", daemon=True)

    def _scan(self) -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if self.secret in cmdline:
                argv = cmdline.replace(b"\0", b" ")[:200]
                self.hits.append(f"argv of {proc.name}: {argv!r}")
            if b"worker\0run" in cmdline:
                self.pilots_seen.add(int(proc.name))
                try:
                    environ = (proc / "environ").read_bytes()
                except OSError:
                    continue
                if self.secret in environ:
                    self.hits.append(f"environment of pilot {proc.name}")
        self.scans += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._scan()
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcWatcher:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def files_containing(secret: str, *roots: Path, skip: tuple[Path, ...] = ()) -> list[Path]:
    """Every file under ``roots`` (except ``skip``) whose bytes contain ``secret``."""
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and path not in skip and secret.encode() in path.read_bytes():
                found.append(path)
    return found
