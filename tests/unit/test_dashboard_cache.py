"""The dashboard's cache of readings (gridlrt.dashboard.cache): stale while read again, one
refresh per key, a failed refresh keeps the old value, slow readings are kept longer. Time is
an injected clock and a "reading" is a fake that moves it; background refreshes run when the
test says (an injected spawner), except in the tests that prove the real threads behave."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from gridlrt.dashboard.cache import TTLCache, keep_time


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Spawner:
    """Keeps the refreshes the cache starts; :meth:`run` runs them, as their threads would."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, Callable[[], None]]] = []

    def __call__(self, task: Callable[[], None], name: str) -> None:
        self.tasks.append((name, task))

    def run(self) -> None:
        tasks, self.tasks = self.tasks, []
        for _name, task in tasks:
            task()


class Reader:
    """A fake pool reading: returns 1, 2, 3, ... and takes ``cost`` seconds of the clock (or
    raises ``failure`` once set)."""

    def __init__(self, clock: Clock, cost: float = 0.0) -> None:
        self.clock, self.cost = clock, cost
        self.calls = 0
        self.failure: Exception | None = None

    def __call__(self) -> int:
        self.calls += 1
        self.clock.now += self.cost
        if self.failure is not None:
            raise self.failure
        return self.calls


def make(ttl: float = 2.0, cost: float = 0.0) -> tuple[TTLCache[int], Clock, Spawner, Reader]:
    clock, spawner = Clock(), Spawner()
    return TTLCache(ttl, clock=clock, spawn=spawner), clock, spawner, Reader(clock, cost)


def test_a_fresh_value_is_kept_for_its_ttl() -> None:
    cache, clock, spawner, read = make(ttl=2.0)
    assert cache.get("k", read) == 1 and read.calls == 1
    clock.now += 1.9
    assert cache.get("k", read) == 1
    assert read.calls == 1 and spawner.tasks == []
    assert cache.age("k") == pytest.approx(1.9) and cache.age("other") is None


def test_an_expired_value_is_returned_at_once_and_refreshed_once_in_the_background() -> None:
    cache, clock, spawner, read = make(ttl=2.0)
    assert cache.get("k", read) == 1
    clock.now += 2.0
    # expired: the old value now, one refresh started, not run in this request
    assert cache.get("k", read) == 1
    assert read.calls == 1 and [name for name, _ in spawner.tasks] == ["dashboard-refresh k"]
    # while it runs, more requests get the old value and start no other refresh
    for _ in range(5):
        assert cache.get("k", read) == 1
    assert len(spawner.tasks) == 1 and read.calls == 1
    spawner.run()
    assert read.calls == 2
    assert cache.get("k", read) == 2 and spawner.tasks == []
    assert cache.age("k") == 0.0
    # and the refreshed value is kept its ttl again
    clock.now += 1.0
    assert cache.get("k", read) == 2 and spawner.tasks == []


def test_a_failed_refresh_keeps_the_old_value_warns_and_is_retried_at_the_next_expiry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, clock, spawner, read = make(ttl=2.0)
    assert cache.get("k", read) == 1
    clock.now += 3.0
    read.failure = ConnectionError("pool unreachable")
    assert cache.get("k", read) == 1
    with caplog.at_level(logging.WARNING, logger="gridlrt.dashboard.cache"):
        spawner.run()
    assert read.calls == 2
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "reading k again failed (pool unreachable)" in record.getMessage()
    assert "the reading of 3s ago" in record.getMessage()
    # the old value, and no new try before the value expires again (counted from the failure)
    clock.now += 1.9
    assert cache.get("k", read) == 1 and spawner.tasks == []
    assert cache.age("k") == pytest.approx(4.9)  # the value shown is that old
    clock.now += 0.1
    read.failure = None
    assert cache.get("k", read) == 1 and len(spawner.tasks) == 1
    spawner.run()
    assert cache.get("k", read) == 3


def test_a_slow_reading_is_kept_five_times_as_long_as_it_took() -> None:
    assert keep_time(2.0, 0.1) == 2.0 and keep_time(2.0, 3.0) == 15.0
    cache, clock, spawner, read = make(ttl=2.0, cost=3.0)
    assert cache.get("k", read) == 1  # took 3 s: kept 15 s from its end
    clock.now += 14.9
    assert cache.get("k", read) == 1 and spawner.tasks == []
    clock.now += 0.1
    assert cache.get("k", read) == 1 and len(spawner.tasks) == 1
    spawner.run()
    # over a long watch with a request every second the pool is read at most ~1/6 of the time
    began, busy = clock.now, 0.0
    while clock.now - began < 600:
        clock.now += 1.0
        cache.get("k", read)
        before = clock.now
        spawner.run()
        busy += clock.now - before
    assert busy / (clock.now - began) <= 0.2


def test_the_first_reading_blocks_and_concurrent_requests_wait_for_it() -> None:
    cache: TTLCache[int] = TTLCache(2.0)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow() -> int:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return 42

    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", slow))) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert started.wait(10)
    time.sleep(0.2)
    assert got == []  # nobody returned without the value
    release.set()
    for thread in threads:
        thread.join(10)
    assert got == [42] * 4 and len(calls) == 1


def test_a_first_reading_that_fails_fails_the_request_and_the_next_one_reads_again() -> None:
    cache, _clock, spawner, read = make()
    read.failure = ConnectionError("down")
    with pytest.raises(ConnectionError):
        cache.get("k", read)
    read.failure = None
    assert cache.get("k", read) == 2 and spawner.tasks == []


def test_the_real_background_refresh_serves_the_old_value_while_it_reads() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(2.0, clock=clock)  # the default spawner: real threads
    assert cache.get("k", lambda: "old") == "old"
    clock.now += 5
    reading, release = threading.Event(), threading.Event()

    def slow() -> str:
        reading.set()
        assert release.wait(10)
        return "new"

    began = time.monotonic()
    assert cache.get("k", slow) == "old"
    assert time.monotonic() - began < 0.5  # did not wait for the reading
    assert reading.wait(10)
    names = [t.name for t in threading.enumerate() if t.name == "dashboard-refresh k"]
    assert names == ["dashboard-refresh k"]
    assert cache.get("k", slow) == "old"  # still reading: the old value, no second thread
    release.set()
    assert cache.close(timeout=10)  # waits for it; starts no more
    assert cache.get("k", slow) == "new"
    clock.now += 60
    assert cache.get("k", lambda: "newer") == "new"  # closed: no refresh started
    assert not [t for t in threading.enumerate() if t.name.startswith("dashboard-refresh")]


def test_no_caching_with_ttl_zero() -> None:
    cache, _clock, spawner, read = make(ttl=0.0)
    assert [cache.get("k", read) for _ in range(3)] == [1, 2, 3]
    assert spawner.tasks == []
    cache2, _clock, _spawner, read2 = make(ttl=2.0)
    assert cache2.get("k", read2, ttl=0.0) == 1 and cache2.get("k", read2, ttl=0.0) == 2


def test_derive_rebuilds_only_from_a_new_reading() -> None:
    clock, spawner = Clock(), Spawner()
    cache: TTLCache[list[int]] = TTLCache(2.0, clock=clock, spawn=spawner)
    reads: list[int] = []
    builds: list[int] = []

    def read() -> list[int]:
        reads.append(len(reads) + 1)
        return [reads[-1]]

    def page() -> str:
        value = cache.get("k", read)

        def build() -> str:
            builds.append(value[0])
            return f"page of reading {value[0]}"

        return cache.derive("page", [value], build)

    assert [page(), page()] == ["page of reading 1"] * 2 and builds == [1]
    clock.now += 2.0
    assert page() == "page of reading 1" and builds == [1]  # the old reading: the kept page
    spawner.run()
    assert page() == "page of reading 2" and builds == [1, 2]
    assert cache.derive("page", [[2]], lambda: "an equal but other list") == (
        "an equal but other list"
    )  # identity, not equality: a new reading with the same content is a new page
    cache.clear()
    assert page() == "page of reading 3" and builds == [1, 2, 3]
