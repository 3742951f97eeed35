"""Retrying through outages: exponential backoff with jitter, bounded by tries *and* patience,
and one log line per outage (not one per retry).

A command on the user interface should give up after a few seconds and say so; a pilot on a
worker node should ride out a pool or storage outage of many minutes (a CouchDB restart, a
network blip) without failing its token. Both use :class:`Backoff`; they differ only in
``patience``. :func:`retry` runs a call under a :class:`Backoff`: the token pool's requests,
every gfal2 operation (:class:`gridlrt.storage.Storage`) and the LTA stager clients use it.

Conflict backoffs (a CouchDB 409 on a token many pilots want) are not outages and keep their
own short, fully random sleeps in :mod:`gridlrt.tokens.couchdb`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays between tries: ``base * 2**(n-1)`` before retry ``n``, capped at ``cap``, times a
    jitter in [0.5, 1) (so a delay never exceeds ``cap`` and never falls under half of its
    nominal value).

    Retrying stops after ``tries`` tries *unless* less than ``patience`` seconds have passed
    since the first failure: a pilot sets a long patience, a command keeps the default of a
    few tries."""

    tries: int = 5
    patience: float = 0.0
    base: float = 0.2
    cap: float = 5.0

    def delay(self, retry: int) -> float:
        """The jittered delay before retry number ``retry`` (1 for the first retry)."""
        nominal = min(self.cap, self.base * 2.0 ** min(max(retry, 1) - 1, 16))
        return nominal * random.uniform(0.5, 1.0)  # jitter, not cryptography

    def delays(self, clock: Callable[[], float] = time.monotonic) -> Iterator[float]:
        """The delay before each retry; ends when the next try would be one too many.

        Call ``next()`` after each failure (the first call starts the patience clock)."""
        started: float | None = None
        failures = 0
        while True:
            now = clock()
            started = now if started is None else started
            failures += 1
            if failures >= self.tries and now - started >= self.patience:
                return
            yield self.delay(failures)


def retry(
    call: Callable[[], T],
    backoff: Backoff,
    *,
    transient: Callable[[Exception], str | None],
    gave_up: Callable[[str, int], Exception] | None = None,
    on_retry: Callable[[str, int, float], None] | None = None,
    outage: Outage | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()`` until it returns, retrying transient failures under ``backoff``.

    :param transient: a short description of a retryable failure (``"HTTP 503"``), or
        ``None`` for an exception that propagates at once.
    :param gave_up: ``(problem, attempts) -> exception`` raised (from the last one) when
        ``backoff`` is exhausted; without it the last exception itself propagates.
    :param on_retry: ``(problem, attempt, delay)`` before each wait, e.g. to log it.
    :param outage: told of every failure and of the success that ends it (one line each).
    :param sleep: how to wait (tests record instead); ``clock`` measures patience.
    """
    delays = backoff.delays(clock)
    attempt = 0
    while True:
        attempt += 1
        try:
            result = call()
        except Exception as exc:
            problem = transient(exc)
            if problem is None:
                raise
            delay = next(delays, None)
            if delay is None:
                if gave_up is None:
                    raise
                raise gave_up(problem, attempt) from exc
        else:
            if outage is not None:
                outage.succeeded()
            return result
        if outage is not None:
            outage.failed(problem, backoff.patience)
        if on_retry is not None:
            on_retry(problem, attempt, delay)
        sleep(delay)


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
