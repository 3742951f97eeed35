"""gridlrt.retry: bounded, jittered delays; tries and patience; one log line per outage.

Pure and fast: no sleeping (``sleep`` records), patience on a fake clock.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from gridlrt.retry import Backoff, Outage, retry


class Clock:
    """A monotonic clock that moves only when told (or by the recorded sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns ``"ok"``."""

    def __init__(self, failures: int, exc: Exception | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.exc = exc or ConnectionError("refused")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def connection(exc: Exception) -> str | None:
    return "connection refused" if isinstance(exc, ConnectionError) else None


# --- Backoff ---------------------------------------------------------------------------------


def test_delays_double_with_jitter_and_never_exceed_the_cap() -> None:
    backoff = Backoff(tries=12, base=0.5, cap=3.0)
    for _ in range(200):
        delays = list(backoff.delays())
        assert len(delays) == 11  # 12 tries: 11 waits between them
        nominal = [min(3.0, 0.5 * 2**n) for n in range(11)]
        assert all(n / 2 <= d <= n for d, n in zip(delays, nominal, strict=True)), delays
    spread = {round(backoff.delay(1), 6) for _ in range(50)}
    assert len(spread) > 10  # jittered: pilots retrying together do not stay in step


@pytest.mark.parametrize("tries", [1, 2, 5])
def test_tries_are_honoured_without_patience(tries: int) -> None:
    assert len(list(Backoff(tries=tries).delays())) == tries - 1


def test_patience_keeps_retrying_past_the_tries_until_it_has_passed() -> None:
    clock = Clock()
    backoff = Backoff(tries=2, patience=60.0, base=1.0, cap=4.0)
    delays = backoff.delays(clock)
    waited = 0.0
    for delay in delays:  # the first next() starts the patience clock
        clock.sleep(delay)
        waited += delay
        assert waited < 60.0 + 4.0
    assert waited >= 60.0  # no give-up before the patience has passed ...
    assert len(clock.slept) > 2  # ... although the two tries were spent long before


def test_patience_counts_from_the_first_failure_not_from_creation() -> None:
    clock = Clock()
    delays = Backoff(tries=1, patience=10.0, base=1.0).delays(clock)
    clock.now += 100.0  # idle time before the first failure does not use up the patience
    assert next(delays, None) is not None


# --- retry() ---------------------------------------------------------------------------------


def test_retry_returns_after_transient_failures_and_reports_each_retry() -> None:
    clock = Clock()
    call = Flaky(2)
    seen: list[tuple[str, int, float]] = []
    result = retry(
        call,
        Backoff(tries=3, base=0.1),
        transient=connection,
        on_retry=lambda problem, attempt, delay: seen.append((problem, attempt, delay)),
        sleep=clock.sleep,
        clock=clock,
    )
    assert result == "ok" and call.calls == 3
    assert [(p, a) for p, a, _ in seen] == [("connection refused", 1), ("connection refused", 2)]
    assert [d for _, _, d in seen] == clock.slept


def test_retry_gives_up_after_the_tries_with_the_callers_error() -> None:
    clock = Clock()
    call = Flaky(10)

    def gave_up(problem: str, attempts: int) -> Exception:
        return RuntimeError(f"unreachable after {attempts} attempts ({problem})")

    with pytest.raises(RuntimeError, match=r"after 4 attempts \(connection refused\)") as err:
        retry(call, Backoff(tries=4), transient=connection, gave_up=gave_up, sleep=clock.sleep)
    assert call.calls == 4 and len(clock.slept) == 3
    assert isinstance(err.value.__cause__, ConnectionError)

    call = Flaky(10)  # without gave_up: the last failure itself
    with pytest.raises(ConnectionError):
        retry(call, Backoff(tries=2), transient=connection, sleep=clock.sleep)
    assert call.calls == 2


def test_retry_lets_a_permanent_failure_through_at_once() -> None:
    clock = Clock()
    call = Flaky(1, PermissionError("denied"))
    with pytest.raises(PermissionError):
        retry(call, Backoff(tries=5), transient=connection, sleep=clock.sleep)
    assert call.calls == 1 and clock.slept == []


def test_retry_rides_out_an_outage_for_its_patience() -> None:
    clock = Clock()
    call = Flaky(10)  # ten failures in a row, at most 17.5 s of waiting: ridden out
    backoff = Backoff(tries=2, patience=30.0, base=0.5, cap=2.0)
    assert retry(call, backoff, transient=connection, sleep=clock.sleep, clock=clock) == "ok"
    assert call.calls == 11 and sum(clock.slept) < 30.0

    call = Flaky(1000)  # a longer outage: given up once the patience has passed
    with pytest.raises(ConnectionError):
        retry(call, backoff, transient=connection, sleep=clock.sleep, clock=clock)
    assert 30.0 <= sum(clock.slept[10:]) < 32.0


# --- Outage ----------------------------------------------------------------------------------


def ride_out_together(outage: Outage, threads: int) -> None:
    """``threads`` threads retry through one outage: all of them fail before it ends."""
    down = threading.Event()
    down.set()
    all_failed = threading.Barrier(threads + 1)
    first = threading.local()

    def call() -> str:
        if down.is_set():
            raise ConnectionError("refused")
        return "ok"

    def pause(_seconds: float) -> None:
        if not getattr(first, "done", False):
            first.done = True
            all_failed.wait(timeout=10)
        time.sleep(0.001)

    running = [
        threading.Thread(
            target=retry,
            args=(call, Backoff(tries=2, patience=5.0, base=0.001)),
            kwargs={"transient": connection, "outage": outage, "sleep": pause},
        )
        for _ in range(threads)
    ]
    for thread in running:
        thread.start()
    all_failed.wait(timeout=10)  # every thread is inside the outage
    assert outage.ongoing
    down.clear()
    for thread in running:
        thread.join(timeout=10)
    assert not outage.ongoing


def test_outage_logs_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gridlrt.retry")
    outage = Outage("token pool http://db")
    outage.succeeded()  # no outage: nothing to say
    assert caplog.records == []

    for _ in range(2):  # two outages, each ridden out by four threads' retries
        ride_out_together(outage, threads=4)

    lines = [r for r in caplog.records if r.levelno > logging.DEBUG]
    texts = [r.getMessage() for r in lines]
    assert len(lines) == 4, texts
    started = "token pool http://db unreachable (connection refused); retrying for up to 5 s"
    assert texts[0] == texts[2] == started
    assert texts[1].startswith("token pool http://db reachable again after")
    assert texts[3].startswith("token pool http://db reachable again after")
    assert all(r.levelno == logging.WARNING for r in lines)  # ridden out: worth a warning


def test_outage_of_a_command_that_gives_up_is_info_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gridlrt.retry")
    outage = Outage("LTA stager")
    with pytest.raises(ConnectionError):
        retry(
            Flaky(10), Backoff(tries=3), transient=connection, outage=outage,
            sleep=lambda _s: None,
        )  # fmt: skip
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # its error line says the rest
    assert outage.ongoing
