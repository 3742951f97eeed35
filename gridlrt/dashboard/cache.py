"""The dashboard's cache of pool readings: stale while it is read again.

A page asks :meth:`TTLCache.get` for a reading (the snapshot, the pipeline runs, a listing of
tokens) by key:

* the first reading of a key is made by the request that asks for it; requests for the same
  key meanwhile wait for that one reading;
* afterwards an expired value is returned at once, and one background thread per key reads it
  again; while that runs, other requests get the old value too (no pile-up of readings);
* a background reading that fails keeps the old value, logs a warning and is tried again when
  the value expires again (counted from the failure);
* a value is kept at least ``max(ttl, 5 * c)`` after a reading that took ``c`` seconds, so a
  slow pool is read at most about a sixth of the time however many browsers watch it;
* ``ttl <= 0`` turns caching off: every call reads (what a page costs, for tests and benches).

:meth:`TTLCache.derive` keeps a pure function of readings (a page model, a plot) until one of
its inputs is a new reading, so what a page shows is never older than the readings it comes
from. :meth:`TTLCache.close` stops starting refreshes and waits for those under way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gridlrt.durations import format_duration

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
#: a reading that took ``c`` seconds is kept at least ``KEEP_FACTOR * c`` seconds
KEEP_FACTOR = 5.0

Spawn = Callable[[Callable[[], None], str], None]


def start_thread(task: Callable[[], None], name: str) -> None:
    """Run ``task`` in a daemon thread (one that never holds the interpreter up at exit)."""
    threading.Thread(target=task, name=name, daemon=True).start()


@dataclass
class _Entry(Generic[T]):
    value: T
    read_at: float  # the clock when the value's reading ended
    tried_at: float  # the clock when the last reading (or failed refresh) ended
    cost: float  # seconds the last reading (or failed refresh) took
    refreshing: bool = False


def keep_time(ttl: float, cost: float) -> float:
    """How long a value read in ``cost`` seconds is kept: ``max(ttl, 5 * cost)``."""
    return max(ttl, KEEP_FACTOR * cost)


class TTLCache(Generic[T]):
    """Readings by key, kept ``ttl`` seconds (or longer after a slow reading), refreshed in the
    background once expired (see the module's docstring). ``clock`` measures time (seconds),
    ``spawn(task, name)`` runs a refresh (a daemon thread by default)."""

    def __init__(
        self,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
        spawn: Spawn = start_thread,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.spawn = spawn
        self._entries: dict[str, _Entry[T]] = {}
        self._derived: dict[str, tuple[tuple[object, ...], Any]] = {}
        self._first: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._idle = threading.Condition(self._guard)
        self._running = 0
        self._closed = False

    def get(self, key: str, read: Callable[[], T], ttl: float | None = None) -> T:
        """The value of ``key``: read now if there is none yet (or caching is off), else the
        kept one, refreshed in the background when it is older than its keep time."""
        keep = self.ttl if ttl is None else ttl
        if keep <= 0:
            return self._read_now(key, read)
        with self._guard:
            entry = self._entries.get(key)
            if entry is not None:
                expired = self.clock() - entry.tried_at >= keep_time(keep, entry.cost)
                if expired and not entry.refreshing and not self._closed:
                    self._start_refresh(key, read, entry)
                return entry.value
            first = self._first.setdefault(key, threading.Lock())
        with first:  # one first reading; the others wait for it and take its value
            with self._guard:
                entry = self._entries.get(key)
            if entry is not None:
                return entry.value
            return self._read_now(key, read)

    def age(self, key: str) -> float | None:
        """Seconds since the value of ``key`` was read; None when it never was."""
        with self._guard:
            entry = self._entries.get(key)
            return None if entry is None else self.clock() - entry.read_at

    def derive(self, key: str, sources: Sequence[object], build: Callable[[], R]) -> R:
        """``build()``, kept until one of ``sources`` (readings this cache returned) is not the
        very object it was the last time."""
        wanted = tuple(sources)
        with self._guard:
            found = self._derived.get(key)
        if (
            found is not None
            and len(found[0]) == len(wanted)
            and all(a is b for a, b in zip(found[0], wanted, strict=True))
        ):
            kept: R = found[1]
            return kept
        value = build()
        with self._guard:
            self._derived[key] = (wanted, value)
        return value

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()
            self._derived.clear()

    def close(self, timeout: float | None = None) -> bool:
        """Start no more refreshes; wait up to ``timeout`` seconds for those under way. False
        when some are still running."""
        with self._idle:
            self._closed = True
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    # --- inside ------------------------------------------------------------------------------

    def _read_now(self, key: str, read: Callable[[], T]) -> T:
        started = self.clock()
        value = read()
        ended = self.clock()
        with self._guard:
            self._entries[key] = _Entry(value, ended, ended, ended - started)
        return value

    def _start_refresh(self, key: str, read: Callable[[], T], entry: _Entry[T]) -> None:
        """Called holding the guard."""
        entry.refreshing = True
        self._running += 1
        try:
            self.spawn(lambda: self._refresh(key, read, entry), f"dashboard-refresh {key}")
        except RuntimeError as err:  # no thread could be started: try again next request
            entry.refreshing = False
            self._running -= 1
            log.warning("dashboard: cannot refresh %s now: %s", key, err)

    def _refresh(self, key: str, read: Callable[[], T], entry: _Entry[T]) -> None:
        started = self.clock()
        fresh: list[T] = []
        try:
            fresh.append(read())
        except Exception as err:  # any failure keeps the old value until the next try
            log.warning(
                "dashboard: reading %s again failed (%s); showing the reading of %s ago until "
                "the next try",
                key,
                err,
                format_duration(self.clock() - entry.read_at),
            )
        finally:
            ended = self.clock()
            with self._idle:
                if fresh:
                    self._entries[key] = _Entry(fresh[0], ended, ended, ended - started)
                else:
                    entry.tried_at, entry.cost = ended, ended - started
                entry.refreshing = False
                self._running -= 1
                self._idle.notify_all()
