"""Watching a token pool: what ``gridlrt status`` shows, as data.

Owns the snapshot of a run — per step the counts by status, the done fraction, the recent
throughput and an ETA, the latest error line of failing tokens, and one row per pilot at work
(host, job, token, heartbeat age, node load and memory) with silent pilots flagged as probably
lost. The computations are pure functions of tokens and an :class:`Overview`
(:func:`build_snapshot`, :func:`measure_throughput`, :func:`pilot_row`, ...), so they can be
tried on tokens made by hand; :func:`snapshot` and :class:`Monitor` read them from a pool.

Reading a pool costs: counts come from :meth:`TokenPool.overview` and the active tokens from
one query per active status (none when nothing is active), both cheap, but throughput needs
the done tokens and the failing list the error tokens, which a pool can only list in full.
Measured with 10 000 done tokens: listing them takes about 0.12 s on the embedded pool and
1.5 s on pouchdb-server (a whole snapshot 0.13 s and 2.3 s). A :class:`Monitor`, which takes
snapshot after snapshot, lists them again only when their count changed, and then at most
once per ten times the last listing took; a snapshot with nothing newly done then costs
about 2 ms on the embedded pool and 0.3 s (mostly the counts) on pouchdb-server.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from gridlrt.durations import format_duration
from gridlrt.tokens import Overview, Token, TokenPool, TokenStatus
from gridlrt.tokens.model import ACTIVE

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 30.0  # the pilot's default (``gridlrt worker run --heartbeat``)
DEFAULT_STALE_AFTER = 3 * DEFAULT_HEARTBEAT_INTERVAL
DEFAULT_WINDOW = 600.0
DEFAULT_MAX_FAILING = 5
ACTIVE_ORDER = (
    TokenStatus.LOCKED,
    TokenStatus.DOWNLOADING,
    TokenStatus.RUNNING,
    TokenStatus.UPLOADING,
)  # the statuses of ACTIVE, in the order a token passes them


class Throughput(BaseModel):
    """Tokens done per minute, measured over the recent window."""

    per_minute: float = 0.0
    done_in_window: int = 0
    span: float = 0.0  # seconds the rate is measured over (at most the window)
    measured_at: float = 0.0  # epoch seconds the window ends


class FailingToken(BaseModel):
    """A token in error, with the first line of its latest error."""

    token_id: str
    step: str
    time: float  # when the latest error was recorded (0: unknown)
    message: str
    attempts: int


class PilotRow(BaseModel):
    """One pilot at work: the active token it holds and what its last heartbeat said."""

    token_id: str
    step: str
    status: str
    pilot: str
    host: str
    job_id: str | None
    attempt: int  # which attempt of the token this is (1 = first)
    started: float | None  # when this attempt claimed the token
    heartbeat: float  # epoch seconds of the last sign of life
    heartbeat_age: float
    stale: bool  # silent for longer than the stale threshold: probably lost
    load: float | None = None
    mem_used_pct: float | None = None
    mem_total_mb: float | None = None


class StepSnapshot(BaseModel):
    """Where one step stands."""

    step: str
    counts: dict[str, int]  # every status, zeros included
    total: int
    done: int
    remaining: int  # waiting + todo + active (blocked and error need a user)
    done_fraction: float
    throughput: Throughput
    eta_seconds: float | None  # None: unknown (nothing done recently, or no rate yet)
    failing: list[FailingToken]  # the latest few
    failing_total: int
    pilots: list[PilotRow]
    stale_pilots: int


class Snapshot(BaseModel):
    """A run at one moment: per step, and what to do about pilots that went silent."""

    pool: str
    taken: float
    window: float
    stale_after: float
    steps: list[StepSnapshot]
    finished: bool  # no token of these steps is waiting, todo or active
    stale_pilots: int
    hint: str | None  # advice when pilots look lost
    malformed: int = 0  # documents the pool skipped as not valid tokens
    malformed_docs: dict[str, str] = {}  # their ids, with why each is not a valid token

    def step(self, name: str) -> StepSnapshot:
        """The snapshot of one step; KeyError when it has no tokens."""
        for item in self.steps:
            if item.step == name:
                return item
        raise KeyError(name)


# --- pure computations -------------------------------------------------------------------------


def done_times(token: Token) -> tuple[float | None, float] | None:
    """(started, ended) of the attempt that finished a done token; PiCaS tokens, which have
    no attempts, give (None, their ``done`` time). None when the token tells no end time."""
    for attempt in reversed(token.attempts):
        if attempt.ended is not None and attempt.outcome in (None, "done"):
            return attempt.started, attempt.ended
    if token.done > 1:
        return None, float(token.done)
    return None


def group_done_times(tokens: Iterable[Token]) -> dict[str, list[tuple[float | None, float]]]:
    """Per step the :func:`done_times` of done tokens (tokens without an end time left out)."""
    by_step: dict[str, list[tuple[float | None, float]]] = {}
    for token in tokens:
        times = done_times(token)
        if times is not None:
            by_step.setdefault(token.step, []).append(times)
    return by_step


def measure_throughput(
    times: Iterable[tuple[float | None, float]], *, now: float, window: float = DEFAULT_WINDOW
) -> Throughput:
    """Tokens done per minute from (started, ended) pairs of done tokens.

    Counts the tokens that ended in the last ``window`` seconds and divides by the time they
    cover: the whole window, or, when the run is younger than that, the time since the
    earliest of them started — so the first tokens of a run give a real rate at once.
    """
    since = now - window
    count = 0
    earliest = now
    latest = now
    for started, ended in times:
        if ended < since:
            continue
        count += 1
        earliest = min(earliest, started if started is not None else ended)
        latest = max(latest, ended)  # another node's clock may run slightly ahead
    if count == 0:
        return Throughput(per_minute=0.0, done_in_window=0, span=window, measured_at=now)
    span = latest - max(since, earliest)
    per_minute = 60.0 * count / span if span > 0 else 0.0
    return Throughput(per_minute=per_minute, done_in_window=count, span=span, measured_at=now)


def estimate_eta(remaining: int, per_minute: float) -> float | None:
    """Seconds until ``remaining`` tokens are done at ``per_minute``; None when unknown."""
    if remaining <= 0:
        return 0.0
    if per_minute <= 0:
        return None
    return 60.0 * remaining / per_minute


def first_error_line(token: Token) -> str:
    """The first non-empty line of the token's latest error (message, else exception)."""
    error = token.last_error
    if error is None:
        return ""
    exception = error.exception if isinstance(error.exception, str) else "\n".join(error.exception)
    for text in (error.message, exception):
        for line in text.splitlines():
            if line.strip():
                return line.strip()
    return "(no message)"


def failing_token(token: Token) -> FailingToken:
    error = token.last_error
    return FailingToken(
        token_id=token.id,
        step=token.step,
        time=error.time if error else 0.0,
        message=first_error_line(token) or "(no error recorded)",
        attempts=len(token.attempts),
    )


def latest_failing(
    tokens: Iterable[Token], limit: int = DEFAULT_MAX_FAILING
) -> dict[str, list[FailingToken]]:
    """Per step the ``limit`` tokens with the most recent errors, newest first."""
    heaps: dict[str, list[tuple[float, str, FailingToken]]] = {}
    for token in tokens:
        row = failing_token(token)
        heap = heaps.setdefault(row.step, [])
        item = (row.time, row.token_id, row)
        if len(heap) < limit:
            heapq.heappush(heap, item)
        elif limit > 0:
            heapq.heappushpop(heap, item)
    return {
        step: [row for _, _, row in sorted(heap, key=lambda i: (-i[0], i[1]))]
        for step, heap in heaps.items()
    }


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def pilot_row(token: Token, *, now: float, stale_after: float = DEFAULT_STALE_AFTER) -> PilotRow:
    """The pilot holding an active token, as its last heartbeat describes it."""
    attempt = token.current_attempt
    last = max(token.heartbeat, float(token.lock))  # PiCaS pilots send no heartbeat
    age = max(0.0, now - last)
    return PilotRow(
        token_id=token.id,
        step=token.step,
        status=token.status.value,
        pilot=attempt.pilot if attempt else "",
        host=(attempt.host if attempt else "") or token.hostname,
        job_id=attempt.job_id if attempt else None,
        attempt=len(token.attempts),
        started=attempt.started if attempt else None,
        heartbeat=last,
        heartbeat_age=age,
        stale=age > stale_after,
        load=_number(token.progress.get("load")),
        mem_used_pct=_number(token.progress.get("mem_used_pct")),
        mem_total_mb=_number(token.progress.get("mem_total_mb")),
    )


def stale_hint(stale: int, stale_after: float) -> str | None:
    """What to do about pilots that went silent."""
    if stale == 0:
        return None
    after = format_duration(stale_after)
    return (
        f"{stale} pilot(s) silent for more than {after} are probably lost: "
        f"`gridlrt tokens recover --stale-after {after}` returns their tokens to todo"
    )


def assemble(
    overview: Overview,
    *,
    active: Iterable[Token],
    throughput: dict[str, Throughput],
    failing: dict[str, list[FailingToken]],
    now: float,
    window: float = DEFAULT_WINDOW,
    stale_after: float = DEFAULT_STALE_AFTER,
    step: str | None = None,
    pool_url: str = "",
    malformed: int | dict[str, str] = 0,
) -> Snapshot:
    """A snapshot from counts, active tokens, per-step throughput and failing rows."""
    names = [step] if step is not None else sorted(overview.counts)
    names = [name for name in names if overview.total(step=name) > 0]
    pilots: dict[str, list[PilotRow]] = {}
    for token in active:
        if token.step in names and token.status in ACTIVE:
            pilots.setdefault(token.step, []).append(
                pilot_row(token, now=now, stale_after=stale_after)
            )
    steps: list[StepSnapshot] = []
    for name in names:
        counts = overview.by_status(name)
        total = sum(counts.values())
        done = counts[TokenStatus.DONE.value]
        remaining = (
            counts[TokenStatus.WAITING.value]
            + counts[TokenStatus.TODO.value]
            + sum(counts[s.value] for s in ACTIVE_ORDER)
        )
        rate = throughput.get(name) or Throughput(span=window, measured_at=now)
        rows = sorted(
            pilots.get(name, []), key=lambda r: (not r.stale, r.host, r.job_id or "", r.token_id)
        )
        steps.append(
            StepSnapshot(
                step=name,
                counts=counts,
                total=total,
                done=done,
                remaining=remaining,
                done_fraction=done / total if total else 0.0,
                throughput=rate,
                eta_seconds=estimate_eta(remaining, rate.per_minute),
                failing=failing.get(name, []),
                failing_total=counts[TokenStatus.ERROR.value],
                pilots=rows,
                stale_pilots=sum(1 for r in rows if r.stale),
            )
        )
    stale = sum(s.stale_pilots for s in steps)
    return Snapshot(
        pool=pool_url,
        taken=now,
        window=window,
        stale_after=stale_after,
        steps=steps,
        finished=all(s.remaining == 0 for s in steps),
        stale_pilots=stale,
        hint=stale_hint(stale, stale_after),
        malformed=malformed if isinstance(malformed, int) else len(malformed),
        malformed_docs={} if isinstance(malformed, int) else malformed,
    )


def build_snapshot(
    overview: Overview,
    *,
    active: Iterable[Token] = (),
    done: Iterable[Token] = (),
    failed: Iterable[Token] = (),
    now: float,
    window: float = DEFAULT_WINDOW,
    stale_after: float = DEFAULT_STALE_AFTER,
    max_failing: int = DEFAULT_MAX_FAILING,
    step: str | None = None,
    pool_url: str = "",
) -> Snapshot:
    """A snapshot from tokens: active ones (pilots), done ones (throughput), error ones
    (failing). ``done`` and ``failed`` are read once, so generators are fine."""
    return assemble(
        overview,
        active=active,
        throughput={
            name: measure_throughput(times, now=now, window=window)
            for name, times in group_done_times(done).items()
        },
        failing=latest_failing(failed, max_failing),
        now=now,
        window=window,
        stale_after=stale_after,
        step=step,
        pool_url=pool_url,
    )


# --- reading a pool ----------------------------------------------------------------------------

T = TypeVar("T")


@dataclass
class _Reading(Generic[T]):
    """A cached full listing of one status: what it gave, for which count, and its cost."""

    count: int
    at: float  # epoch seconds when read
    monotonic: float
    cost: float  # seconds the listing took
    data: T


class Monitor:
    """Takes snapshots of one pool, again and again (``gridlrt status --watch``).

    Counts and active tokens are read for every snapshot. Done and error tokens, which the
    pool can only list in full, are read again only when their number changed, and then at
    most once per ``1 / budget`` times the duration of the last listing (with the default 0.1
    a listing that takes 1.5 s is repeated at most every 15 s; meanwhile the rate measured
    then is shown). ``budget=None`` reads them for every snapshot.
    """

    def __init__(
        self,
        pool: TokenPool,
        *,
        step: str | None = None,
        window: float = DEFAULT_WINDOW,
        stale_after: float = DEFAULT_STALE_AFTER,
        max_failing: int = DEFAULT_MAX_FAILING,
        budget: float | None = 0.1,
    ) -> None:
        self.pool = pool
        self.step = step
        self.window = window
        self.stale_after = stale_after
        self.max_failing = max_failing
        self.budget = budget
        self._done: _Reading[dict[str, list[tuple[float | None, float]]]] | None = None
        self._failing: _Reading[dict[str, list[FailingToken]]] | None = None

    def snapshot(self, now: float | None = None) -> Snapshot:
        overview = self.pool.overview()
        active: dict[str, Token] = {}
        if any(overview.total(status, self.step) for status in ACTIVE_ORDER):
            # in the order tokens pass the statuses, so one that moves on while we ask is
            # still seen (later queries win)
            for status in ACTIVE_ORDER:
                active.update((t.id, t) for t in self.pool.tokens(status, self.step))
        moment = time.time() if now is None else now
        n_done = overview.total(TokenStatus.DONE, self.step)
        n_error = overview.total(TokenStatus.ERROR, self.step)
        self._done = self._read(self._done, n_done, TokenStatus.DONE, group_done_times, moment)
        self._failing = self._read(
            self._failing,
            n_error,
            TokenStatus.ERROR,
            lambda tokens: latest_failing(tokens, self.max_failing),
            moment,
        )
        # with the listing as fresh as the count, the window can end now; else when read
        until = moment if self._done.count == n_done else self._done.at
        throughput = {
            name: measure_throughput(times, now=until, window=self.window)
            for name, times in self._done.data.items()
        }
        return assemble(
            overview,
            active=active.values(),
            throughput=throughput,
            failing=self._failing.data,
            now=moment,
            window=self.window,
            stale_after=self.stale_after,
            step=self.step,
            pool_url=self.pool.url,
            # the pool's (not only this snapshot's): a document skipped while listing done or
            # error tokens stays reported while that listing is reused
            malformed={**overview.malformed, **self.pool.malformed.reasons},
        )

    def _read(
        self,
        cached: _Reading[T] | None,
        count: int,
        status: TokenStatus,
        digest: Callable[[Iterable[Token]], T],
        now: float,
    ) -> _Reading[T]:
        if cached is not None and (
            cached.count == count
            or (
                self.budget is not None
                and time.monotonic() - cached.monotonic < cached.cost / self.budget
            )
        ):
            return cached
        started = time.monotonic()
        data = digest(self.pool.tokens(status, self.step) if count else ())
        cost = time.monotonic() - started
        log.debug("listed %s tokens (%d) in %.3f s", status.value, count, cost)
        return _Reading(count=count, at=now, monotonic=started, cost=cost, data=data)


def snapshot(
    pool: TokenPool,
    step: str | None = None,
    now: float | None = None,
    window: float = DEFAULT_WINDOW,
    stale_after: float = DEFAULT_STALE_AFTER,
    max_failing: int = DEFAULT_MAX_FAILING,
) -> Snapshot:
    """One snapshot of ``pool`` (all steps, or one), everything read afresh."""
    monitor = Monitor(
        pool,
        step=step,
        window=window,
        stale_after=stale_after,
        max_failing=max_failing,
        budget=None,
    )
    return monitor.snapshot(now)
