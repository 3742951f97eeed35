"""Retrying through outages: exponential backoff with jitter, bounded by tries *and* patience,
and one log line per outage (not one per retry).

A command on the user interface should give up after a few seconds and say so; a pilot on a
worker node should ride out a pool or storage outage of many minutes (a CouchDB restart, a
network blip) without failing its token. Both use :class:`Backoff`; they differ only in
``patience``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays between tries: ``base * 2**n`` capped at ``cap``, times a jitter in [0.5, 1.5).

    Retrying stops after ``tries`` tries *unless* less than ``patience`` seconds have passed
    since the first failure: a pilot sets a long patience, a command keeps the default of a
    few tries."""

    tries: int = 5
    patience: float = 0.0
    base: float = 0.2
    cap: float = 5.0

    def delays(self) -> Iterator[float]:
        """The delay before each retry; ends when the next try would be one too many."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            if attempt >= self.tries and time.monotonic() - started >= self.patience:
                return
            delay = min(self.cap, self.base * 2 ** min(attempt - 1, 16))
            yield delay * (0.5 + random.random())


@dataclass
class Outage:
    """Logs an outage of ``what`` once when it starts and once when it ends, however many
    threads retry through it."""

    what: str
    _since: float | None = None
    _level: int = logging.INFO
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, problem: str, patience: float) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                # worth a warning where it is ridden out (a pilot); a command that gives up
                # after a few seconds says so in its one error line instead
                self._level = logging.WARNING if patience > 0 else logging.INFO
                log.log(
                    self._level,
                    "%s unreachable (%s); retrying for up to %.0f s",
                    self.what,
                    problem,
                    max(patience, 0.0),
                )
            else:
                log.debug("%s still unreachable (%s)", self.what, problem)

    def succeeded(self) -> None:
        if self._since is None:  # the common case, without taking the lock
            return
        with self._lock:
            if self._since is not None:
                log.log(
                    self._level,
                    "%s reachable again after %.0f s",
                    self.what,
                    time.monotonic() - self._since,
                )
                self._since = None

    @property
    def ongoing(self) -> bool:
        return self._since is not None
