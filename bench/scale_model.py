"""One CouchDB pool node under 100 to 5,000 pilots: a discrete-event model (issue 18, item 4).

Owns the model and its table and plot; measures nothing. The server costs are CPU
milliseconds per request measured on pouchdb-server by ``bench/request_costs.py`` (defaults
below, or ``--costs FILE`` from its ``--json``); ``--scale`` multiplies them (a real CouchDB
node is not pouchdb-server: measure it and set the factor), ``--workers`` gives the server
more CPUs (pouchdb-server runs its JavaScript on one thread: 1).

The server shares its CPU among the requests in it (processor sharing: node interleaves
requests at every wait for leveldb, CouchDB runs each in its own Erlang process); ``--server
fifo`` serves them one at a time instead. A request's effect on the pool happens as its service
starts (on arrival when shared), its answer leaves when it has had its CPU time. A view read
costs its clean price, plus the indexing of each document written since that view was last
read (pouchdb-server brings an index up to date when it is read), plus, for a todo view, each
taken token it steps over (a deleted row kept in leveldb). Pilots sit ``--rtt`` away and spend
``--client-ms`` CPU before each request.

Pilots follow the code, request by request:

* gridlrt (``CouchDBPool`` and ``Pilot`` at this commit): the claim reads the claim view
  (64 ids) unless a read of the last 10 s is left, GETs the head candidate and PUTs it back with
  the revision read (409 if another pilot wrote it meanwhile: the next candidate; after two
  misses a new view read, after losing a race the ids in random order for 60 s); then the
  unsettled view (at most every 30 s), two status PUTs, a heartbeat PUT every ``--heartbeat``
  seconds from a second thread, the uploading PUT, GET + PUT of the log-tail attachment, the
  finish (PUT from the cached revision, which the attachment made stale: 409, GET, PUT) and the
  catalogue record (``POST _all_docs`` + ``POST _bulk_docs``; ``--no-catalogue`` for steps
  whose outputs are not measurement sets). No todo left: the claim view, the unsettled view,
  past ``--idle-timeout`` the status counts, then ``--poll`` seconds of sleep, or the end.
* PiCaS 1.1 (``TaskViewIterator`` + ``RunActor``): the ``todo`` view (``limit=100``), a random
  row, GET of that document, PUT with ``lock`` set — without looking at ``lock`` — then the
  token, then PUT with ``done`` set; no heartbeat. A 409 on the lock: again from the view, 10
  tries, then the client raises (the pilot ends; the bench's claimer starts it again). A 409
  on done: the done is lost (a GET for the new revision). The race that processes a token twice
  is PiCaS's own: pilot B reads the view before pilot A's lock lands and GETs the document
  after it, so B's PUT carries the current revision and wins too; nothing here draws it.

``--profile bench`` is ``bench/pool_bench.py``'s claimers instead: claim -> finish (gridlrt) or
claim -> done (PiCaS) in a loop until nothing is left, all started at once: ``--validate``
runs that setting and prints it beside what the bench measured.

    .venv/bin/python bench/scale_model.py [--pilots 100,500,1000,2000,5000] [--client
        gridlrt,picas] [--hours 4] [--heartbeat 30] [--duration-median 30m] [--seed 1]
        [--plot FILE] [--json FILE] [--costs FILE] [--validate]

Nothing passes or fails here; it prints figures and the machine the run took place on.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
import time
from array import array
from collections import deque
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gridlrt.durations import parse_duration
from gridlrt.tokens.couchdb import (
    CANDIDATES_TTL,
    CLAIM_WINDOW,
    CONTENDED_FOR,
    MISSES_BEFORE_REREAD,
)
from gridlrt.tokens.pool import SETTLE_EVERY

PICAS_WINDOW = 100  # rows of todo PiCaS picks one from (picas.iterators._claim_task)
PICAS_TRIES = 10  # its allowed_failures

#: Server CPU ms per request on pouchdb-server 4.2.0, measured by bench/request_costs.py
#: --tokens 20000 on 2026-11-30 (see bench/RESULTS.md, "Scale model"). ``index_*``: per
#: document written since the view was last read; ``*_skip``: per taken token the read steps
#: over (pouchdb-server's leveldb keeps the deleted view row; CouchDB's B-tree does not).
COSTS_MS: dict[str, float] = {
    "get": 0.86,
    "put": 1.64,
    "put_conflict": 1.82,
    "attach": 4.38,
    "view_claim": 2.35,
    "view_skip": 0.0091,
    "view_claim_empty": 3.0,
    "view_unsettled": 1.75,
    "status_counts": 730.0,  # grows with the pool: pouchdb-server re-reduces every row
    "all_docs_keys": 0.9,
    "bulk_docs_1": 1.42,
    "index_claim": 0.90,
    "index_unsettled": 0.66,
    "index_status": 0.97,
    "picas_view_todo": 12.6,
    "picas_view_skip": 0.0061,
    "picas_index_todo": 0.72,
    "picas_get": 0.82,
    "picas_put": 1.54,
}

#: bench/pool_bench.py --tokens 2000 --claims 2000 --claimers 16 --repeat 3 --backends couchdb
#: (see bench/RESULTS.md, "Scale model"): what --validate compares with.
MEASURED_BENCH: dict[str, dict[str, Any]] = {
    "gridlrt": {
        "claims_per_s": [62, 59, 81],
        "processed_twice": [0, 0, 0],
        "client_ms_per_claim": 5.0,
        "server_ms_per_claim": 12.4,
    },
    "picas": {
        "claims_per_s": [45, 42, 53],
        "processed_twice": [101, 84, 98],
        "client_ms_per_claim": 2.0,
        "server_ms_per_claim": 20.6,
    },
}

CLIENTS = ("gridlrt", "picas")
# views whose index a gridlrt or a PiCaS pilot brings up to date by reading it
VIEWS = {"gridlrt": ("claim", "unsettled", "status"), "picas": ("picas",)}


@dataclass(frozen=True)
class Params:
    client: str = "gridlrt"  # "gridlrt" or "picas"
    pilots: int = 100
    tokens: int | None = None  # None: enough to keep every pilot busy until the end
    hours: float = 4.0  # simulated time (bench profile: until the pool is empty)
    ramp: float = 600.0  # pilots start evenly spread over this many seconds
    heartbeat: float = 30.0  # gridlrt's default (gridlrt worker run --heartbeat)
    poll: float = 5.0  # gridlrt's default --poll-interval
    idle_timeout: float = 0.0  # gridlrt's default --idle-timeout
    duration_median: float = 1800.0  # seconds a token takes, lognormal median
    duration_sigma: float = 1.0  # lognormal sigma (1.0: 5 % < 0.19 x median, 5 % > 5.2 x)
    rtt: float = 0.01  # seconds between pilot and server, both ways
    client_ms: float = 1.0  # pilot CPU before each request
    server: str = "shared"  # "shared": requests share the server's CPU; "fifo": one by one
    workers: int = 1  # CPUs of the server
    scale: float = 1.0  # multiplies every server cost
    profile: str = "pilot"  # "pilot" or "bench"
    catalogue: bool = True  # gridlrt pilots record their measurement-set outputs
    seed: int = 1


@dataclass
class Result:
    params: Params
    simulated_s: float = 0.0  # the time simulated (bench profile: until the last pilot ended)
    steady_from_s: float = 0.0  # figures marked "steady" cover steady_from_s .. simulated_s
    utilisation: float = 0.0  # server busy fraction, steady
    peak_minute_utilisation: float = 0.0  # server seconds asked in the busiest minute / 60
    requests: int = 0
    requests_per_s: float = 0.0  # steady
    response_mean_ms: float = 0.0  # from a request's arrival at the server to its answer
    response_p95_ms: float = 0.0
    claims: int = 0
    claims_per_s: float = 0.0  # claims / simulated time
    claim_latency_median_s: float = 0.0
    claim_latency_p95_s: float = 0.0
    claim_latency_max_s: float = 0.0
    conflicts: int = 0  # 409s on a claim or lock
    finished: int = 0  # finishes (gridlrt) or saved dones (PiCaS)
    tokens_done: int = 0  # distinct tokens finished
    done_per_hour: float = 0.0  # distinct tokens finished per hour, steady
    processed_twice: int = 0  # tokens run by more than one pilot
    extra_runs: int = 0  # runs beyond one per token
    wasted_pilot_hours: float = 0.0  # pilot time spent on those extra runs (within the run)
    lost_finishes: int = 0  # PiCaS: a done PUT that met a 409
    gave_up: int = 0  # PiCaS: claims that failed 10 times
    pilots_ended: int = 0  # pilots that found nothing more to do
    load_per_pilot: float = 0.0  # server seconds per second per pilot, steady
    by_request: dict[str, int] = field(default_factory=dict)
    # server seconds per request kind; a view read's indexing of written documents and its
    # stepping over deleted rows apart, as "(indexing)" and "(deleted rows)"
    server_s_by_request: dict[str, float] = field(default_factory=dict)
    model_cpu_s: float = 0.0  # CPU time of this simulation

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = asdict(self.params)
        return data


def default_tokens(p: Params) -> int:
    """Enough tokens that no pilot runs dry within the simulated time."""
    mean = p.duration_median * math.exp(p.duration_sigma**2 / 2)
    per_pilot = p.hours * 3600 / mean if mean > 0 else 0.0
    return max(p.pilots * 2, math.ceil(p.pilots * (per_pilot * 1.5 + 3)))


def token_durations(p: Params, n: int) -> list[float]:
    """Seconds each token's payload takes: lognormal around ``duration_median``."""
    if p.duration_median <= 0:
        return [0.0] * n
    rng = random.Random(p.seed)
    mu = math.log(p.duration_median)
    return [rng.lognormvariate(mu, p.duration_sigma) for _ in range(n)]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


_RESUME, _ARRIVE, _DONE, _PS_DONE = 0, 1, 2, 3
Request = tuple[str, int, int]  # kind, token index, argument (a revision)
Process = Generator[Request | float, Any, None]


class _Model:
    """One run: the pool's documents, the server, the pilots (generators that yield a request
    and get its answer back, or yield seconds to sleep)."""

    def __init__(self, p: Params, costs_ms: Mapping[str, float]) -> None:
        self.p = p
        self.cost = {k: v * p.scale / 1000.0 for k, v in costs_ms.items()}
        n = p.tokens if p.tokens is not None else default_tokens(p)
        self.duration = token_durations(p, n)
        self.state = bytearray(n)  # 0 todo, 1 locked, 2 done
        self.rev = [1] * n
        self.runs = [0] * n
        self.todo = n
        self.head = 0  # tokens before it are not todo
        self.dirty: dict[str, set[int]] = {v: set() for v in VIEWS[p.client]}
        self.rng = random.Random(p.seed * 1_000_003 + 7)
        self.now = 0.0
        self.heap: list[tuple[float, int, int, Any, Any]] = []
        self.seq = 0
        # FIFO: requests waiting, idle workers
        self.queue: deque[tuple[Request, Process, float]] = deque()
        self.free = p.workers
        # processor sharing: requests in service by virtual finish time; the virtual clock
        # (service each request has had) and the version of the one pending completion event
        self.shared: list[tuple[float, int, Process, Any, float]] = []
        self.virtual = 0.0
        self.virtual_at = 0.0
        self.version = 0
        self.end = math.inf if p.profile == "bench" else p.hours * 3600.0
        self.steady_from = 0.0 if p.profile == "bench" else min(p.ramp, self.end / 2)
        minutes = 1 if math.isinf(self.end) else int(self.end // 60) + 1
        self.busy_by_minute = [0.0] * minutes
        self.busy_steady = 0.0
        self.requests_steady = 0
        self.response = array("d")  # seconds from a request's arrival to its answer
        self.by_request: dict[str, int] = {}
        self.server_s: dict[str, float] = {}  # per kind; a view's extras apart (below)
        self.indexing = 0.0  # of the request being applied: indexing written documents
        self.stepping = 0.0  # ... and stepping over deleted rows
        self.latencies: list[float] = []
        self.extra: list[tuple[int, float]] = []  # (token, start) of runs beyond the first
        self.r = Result(params=p)
        self.done_steady = 0
        self.last_event = 0.0

    # --- the event loop ---------------------------------------------------------------------

    def push(self, t: float, code: int, a: Any, b: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, code, a, b))

    def spawn(self, proc: Process, delay: float = 0.0) -> None:
        self.push(self.now + delay, _RESUME, proc, None)

    def step(self, proc: Process, value: Any) -> None:
        try:
            command = proc.send(value)
        except StopIteration:
            return
        if isinstance(command, tuple):
            arrive = self.now + self.p.client_ms / 1000.0 + self.p.rtt / 2
            self.push(arrive, _ARRIVE, (command, proc, arrive), None)
        else:
            self.push(self.now + command, _RESUME, proc, None)

    def run(self) -> Result:
        started = time.process_time()
        heap, half_rtt, fifo = self.heap, self.p.rtt / 2, self.p.server == "fifo"
        while heap:
            t, _, code, a, b = heapq.heappop(heap)
            if t > self.end:
                break
            self.now = self.last_event = t
            if code == _RESUME:
                self.step(a, b)
            elif code == _ARRIVE:
                if not fifo:
                    self.share(a)
                elif self.free:
                    self.free -= 1
                    self.serve(a)
                else:
                    self.queue.append(a)
            elif code == _DONE:  # FIFO: answer the pilot, take the next request
                proc, answer, arrived = a
                self.response.append(t - arrived)
                self.push(t + half_rtt, _RESUME, proc, answer)
                if self.queue:
                    self.serve(self.queue.popleft())
                else:
                    self.free += 1
            elif a == self.version:  # processor sharing: the next request is through
                self.advance()
                shared = self.shared
                # this event was set for the first one (pop it even where the clock cannot
                # resolve the last nanoseconds), and any due with it
                self.virtual = max(self.virtual, shared[0][0])
                while shared and shared[0][0] <= self.virtual + 1e-9:
                    _, _, proc, answer, arrived = heapq.heappop(shared)
                    self.response.append(t - arrived)
                    self.push(t + half_rtt, _RESUME, proc, answer)
                self.reschedule()
        self.r.model_cpu_s = time.process_time() - started
        return self.finish()

    def apply(self, request: Request) -> tuple[float, Any]:
        """The request's effect, now, and its server seconds (with the statistics)."""
        kind, token, arg = request
        self.indexing = self.stepping = 0.0
        seconds, answer = self.effect(kind, token, arg)
        now = self.now
        self.by_request[kind] = self.by_request.get(kind, 0) + 1
        server_s = self.server_s
        server_s[kind] = server_s.get(kind, 0.0) + seconds - self.indexing - self.stepping
        if self.indexing:
            server_s["(indexing)"] = server_s.get("(indexing)", 0.0) + self.indexing
        if self.stepping:
            server_s["(deleted rows)"] = server_s.get("(deleted rows)", 0.0) + self.stepping
        if now < self.end:
            self.busy_by_minute[int(now // 60) if not math.isinf(self.end) else 0] += seconds
        if now >= self.steady_from:
            self.busy_steady += seconds
            self.requests_steady += 1
        return seconds, answer

    def serve(self, item: tuple[Request, Process, float]) -> None:
        """FIFO: start serving a request (its effect happens as it starts)."""
        request, proc, arrived = item
        seconds, answer = self.apply(request)
        self.push(self.now + seconds, _DONE, (proc, answer, arrived), None)

    def rate(self) -> float:
        """Processor sharing: the speed at which each request in service is served."""
        n = len(self.shared)
        return min(1.0, self.p.workers / n) if n else 0.0

    def advance(self) -> None:
        self.virtual += (self.now - self.virtual_at) * self.rate()
        self.virtual_at = self.now

    def share(self, item: tuple[Request, Process, float]) -> None:
        """Processor sharing: a request joins the ones in service (its effect happens now,
        as it arrives; its answer leaves when it has had its server seconds)."""
        request, proc, arrived = item
        self.advance()
        seconds, answer = self.apply(request)
        self.seq += 1
        heapq.heappush(self.shared, (self.virtual + seconds, self.seq, proc, answer, arrived))
        self.reschedule()

    def reschedule(self) -> None:
        self.version += 1
        if self.shared:
            left = max(0.0, self.shared[0][0] - self.virtual)
            self.push(self.now + left / self.rate(), _PS_DONE, self.version, None)

    # --- the pool: what each request does and costs -----------------------------------------

    def todo_head(self, k: int) -> tuple[list[int], int]:
        """The first ``k`` todo tokens in view order (priority, then age: index order), and
        how many taken tokens the read stepped over on the way (each left a deleted row)."""
        state, n, i = self.state, len(self.state), self.head
        while i < n and state[i]:
            i += 1
        self.head = i
        rows: list[int] = []
        while i < n and len(rows) < k:
            if not state[i]:
                rows.append(i)
            i += 1
        skipped = rows[-1] + 1 - len(rows) if len(rows) == k else n - self.todo
        return rows, skipped

    def wrote(self, doc: int) -> None:
        for dirty in self.dirty.values():
            dirty.add(doc)

    def read_view(self, view: str, price: str, skipped: int = 0) -> float:
        """A view read: its price, the indexing of what was written since it was last read,
        and (todo views) the deleted rows of taken tokens it steps over."""
        dirty, cost = self.dirty[view], self.cost
        if view == "picas":
            self.indexing = cost["picas_index_todo"] * len(dirty)
            self.stepping = cost["picas_view_skip"] * skipped
        else:
            self.indexing = cost[f"index_{view}"] * len(dirty)
            self.stepping = cost["view_skip"] * skipped
        dirty.clear()
        return cost[price] + self.indexing + self.stepping

    def effect(self, kind: str, token: int, rev: int) -> tuple[float, Any]:
        """(server seconds, answer) of one request, applied now."""
        cost = self.cost
        if kind == "view_claim":
            rows, skipped = self.todo_head(CLAIM_WINDOW)
            price = "view_claim" if rows else "view_claim_empty"
            return self.read_view("claim", price, skipped), rows
        if kind == "get" or kind == "picas_get":
            return cost[kind], (self.rev[token], self.state[token] == 0)
        if kind == "claim_put" or kind == "picas_lock":  # PUT with the revision read
            if self.rev[token] != rev:
                self.r.conflicts += 1
                return cost["put_conflict"], None
            if self.state[token] == 0:
                self.todo -= 1
                self.state[token] = 1
            self.rev[token] += 1
            self.runs[token] += 1
            if self.runs[token] > 1:
                self.extra.append((token, self.now))
            self.wrote(token)
            return cost["put" if kind == "claim_put" else "picas_put"], self.rev[token]
        if kind == "put" or kind == "heartbeat" or kind == "attach":  # a pilot's own write
            self.rev[token] += 1
            self.wrote(token)
            return cost["put" if kind == "heartbeat" else kind], None
        if kind == "finish":
            self.rev[token] += 1
            self.mark_done(token)
            return cost["put"], None
        if kind == "picas_done":
            if self.rev[token] != rev:
                return cost["put_conflict"], False
            self.rev[token] += 1
            self.mark_done(token)
            return cost["picas_put"], True
        if kind == "put_409":
            return cost["put_conflict"], None
        if kind == "view_unsettled":
            return self.read_view("unsettled", "view_unsettled"), None
        if kind == "status_counts":
            return self.read_view("status", "status_counts"), self.todo
        if kind == "picas_view":
            rows, skipped = self.todo_head(PICAS_WINDOW)
            return self.read_view("picas", "picas_view_todo", skipped), rows
        if kind == "bulk_docs_1":
            self.wrote(-1 - token)  # a catalogue record: a new document
            return cost[kind], None
        return cost[kind], None  # all_docs_keys

    def mark_done(self, token: int) -> None:
        self.wrote(token)
        self.r.finished += 1
        if self.state[token] != 2:
            self.state[token] = 2
            self.r.tokens_done += 1
            if self.now >= self.steady_from:
                self.done_steady += 1

    # --- gridlrt ------------------------------------------------------------------------------

    def gridlrt_pilot(self) -> Process:
        p = self.p
        me = _GridlrtPilot()
        bench = p.profile == "bench"
        while True:
            started = waited_since = self.now
            while True:  # Pilot._next_token
                token = yield from self.gridlrt_claim(me)
                if token is not None:
                    if self.now >= me.next_settle:  # TokenPool.claim: settle_pending
                        me.next_settle = self.now + SETTLE_EVERY
                        yield ("view_unsettled", 0, 0)
                    break
                me.next_settle = self.now + SETTLE_EVERY
                yield ("view_unsettled", 0, 0)
                if bench:
                    self.r.pilots_ended += 1
                    return
                if self.now - waited_since >= p.idle_timeout:  # work_may_appear
                    todo = yield ("status_counts", 0, 0)
                    if not todo:
                        self.r.pilots_ended += 1
                        return
                yield p.poll
            self.latencies.append(self.now - started)
            self.r.claims += 1
            if bench:
                if self.duration[token] > 0:
                    yield self.duration[token]
                yield ("finish", token, 0)
                continue
            finished = [False]
            if p.heartbeat > 0:
                self.spawn(self.heartbeat(token, finished))
            yield ("put", token, 0)  # downloading
            yield ("put", token, 0)  # running
            if self.duration[token] > 0:
                yield self.duration[token]
            yield ("put", token, 0)  # uploading
            yield ("get", token, 0)  # attach: the current revision ...
            yield ("attach", token, 0)  # ... and the log tail
            yield ("put_409", token, 0)  # finish from the cached (pre-attachment) revision
            yield ("get", token, 0)
            yield ("finish", token, 0)
            if p.catalogue:
                yield ("all_docs_keys", token, 0)
                yield ("bulk_docs_1", token, 0)
            finished[0] = True

    def heartbeat(self, token: int, finished: list[bool]) -> Process:
        while True:
            yield self.p.heartbeat
            if finished[0]:
                return
            yield ("heartbeat", token, 0)

    def gridlrt_claim(self, me: _GridlrtPilot) -> Generator[Request | float, Any, int | None]:
        """CouchDBPool._claim and _candidates, request by request."""
        for round_ in range(100):
            if me.pending and self.now - me.read_at < CANDIDATES_TTL:
                candidates = me.pending
            else:
                candidates = list((yield ("view_claim", 0, 0)))
                if self.now < me.contended_until:
                    self.rng.shuffle(candidates)
                me.pending, me.read_at = candidates, self.now
            if not candidates:
                return None
            conflicts = 0
            while candidates:
                token = candidates.pop(0)
                rev, todo = yield ("get", token, 0)
                if todo:
                    written = yield ("claim_put", token, rev)
                    if written is not None:
                        return token
                conflicts += 1
                me.contended_until = self.now + CONTENDED_FOR
                if conflicts >= MISSES_BEFORE_REREAD:
                    break
                self.rng.shuffle(candidates)
            me.pending = []
            if conflicts:
                yield min(0.5, 0.01 * 2 ** min(round_, 6)) * self.rng.random()
        raise RuntimeError("100 rounds of conflicts: the model's pool is broken")

    # --- PiCaS --------------------------------------------------------------------------------

    def picas_pilot(self) -> Process:
        while True:
            started = self.now
            token, rev = -1, 0
            for _ in range(PICAS_TRIES):
                rows = yield ("picas_view", 0, 0)
                if not rows:  # IndexError in random.choice: the iterator stops
                    self.r.pilots_ended += 1
                    return
                choice = rows[self.rng.randrange(len(rows))]
                current, _todo = yield ("picas_get", choice, 0)
                written = yield ("picas_lock", choice, current)
                if written is not None:
                    token, rev = choice, written
                    break
            if token < 0:
                self.r.gave_up += 1
                if self.p.profile == "bench":
                    continue  # the bench's claimer runs the actor again
                self.r.pilots_ended += 1
                return
            self.latencies.append(self.now - started)
            self.r.claims += 1
            if self.duration[token] > 0:
                yield self.duration[token]
            saved = yield ("picas_done", token, rev)
            if not saved:
                self.r.lost_finishes += 1
                yield ("picas_get", token, 0)  # RunActor reads the new revision, saves nothing

    # --- figures ------------------------------------------------------------------------------

    def finish(self) -> Result:
        r, p = self.r, self.p
        r.simulated_s = self.end if not math.isinf(self.end) else self.last_event
        r.steady_from_s = self.steady_from
        window = max(r.simulated_s - self.steady_from, 1e-9)
        r.utilisation = self.busy_steady / (window * p.workers)
        if math.isinf(self.end):
            r.peak_minute_utilisation = r.utilisation
        else:
            r.peak_minute_utilisation = max(self.busy_by_minute) / (60.0 * p.workers)
        r.requests = sum(self.by_request.values())
        r.requests_per_s = self.requests_steady / window
        r.by_request = dict(sorted(self.by_request.items()))
        r.server_s_by_request = {
            k: round(v, 3) for k, v in sorted(self.server_s.items(), key=lambda kv: -kv[1])
        }
        r.response_mean_ms = statistics.fmean(self.response) * 1000 if self.response else 0.0
        r.response_p95_ms = percentile(self.response, 0.95) * 1000
        r.claims_per_s = r.claims / r.simulated_s if r.simulated_s > 0 else 0.0
        r.claim_latency_median_s = percentile(self.latencies, 0.5)
        r.claim_latency_p95_s = percentile(self.latencies, 0.95)
        r.claim_latency_max_s = max(self.latencies, default=0.0)
        r.done_per_hour = self.done_steady / window * 3600
        r.processed_twice = sum(1 for n in self.runs if n > 1)
        r.extra_runs = len(self.extra)
        r.wasted_pilot_hours = (
            sum(min(self.duration[t], r.simulated_s - start) for t, start in self.extra) / 3600
        )
        r.load_per_pilot = r.utilisation * p.workers / p.pilots
        return r


class _GridlrtPilot:
    """What one CouchDBPool remembers between claims."""

    __slots__ = ("contended_until", "next_settle", "pending", "read_at")

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.read_at = -math.inf
        self.contended_until = -math.inf
        self.next_settle = 0.0


def simulate(p: Params, costs_ms: Mapping[str, float] | None = None) -> Result:
    """Run the model once; deterministic for a given ``p`` (seed included) and costs."""
    if p.client not in CLIENTS:
        raise ValueError(f"client must be one of {', '.join(CLIENTS)}, not {p.client!r}")
    if p.profile not in ("pilot", "bench"):
        raise ValueError(f"profile must be pilot or bench, not {p.profile!r}")
    if p.server not in ("shared", "fifo"):
        raise ValueError(f"server must be shared or fifo, not {p.server!r}")
    model = _Model(p, {**COSTS_MS, **(costs_ms or {})})
    rng = random.Random(p.seed * 31 + 3)
    for _ in range(p.pilots):
        pilot = model.gridlrt_pilot() if p.client == "gridlrt" else model.picas_pilot()
        delay = 0.0 if p.profile == "bench" else rng.uniform(0.0, p.ramp)
        model.spawn(pilot, delay)
    return model.run()


def carried(results: Iterable[Result], client: str, busy: float) -> Result | None:
    """The run with the most pilots of ``client`` that kept the server at most ``busy``
    (steady), or None. Not extrapolated: the load per pilot grows with the pilots (more tokens
    taken, more deleted rows for every claim view read to step over)."""
    fits = [r for r in results if r.params.client == client and r.utilisation <= busy]
    return max(fits, key=lambda r: r.params.pilots, default=None)


def shares(result: Result, top: int = 5) -> str:
    """Where the server's time went: the biggest request kinds, in per cent."""
    total = sum(result.server_s_by_request.values()) or 1.0
    items = list(result.server_s_by_request.items())[:top]
    return ", ".join(f"{kind} {seconds / total:.0%}" for kind, seconds in items)


# --- command line --------------------------------------------------------------------------------


def seconds_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"


def table(results: Iterable[Result]) -> list[str]:
    lines = [
        "| client | pilots | server busy: steady / busiest minute | requests/s | server response "
        "mean / p95 | claim latency median / p95 | tokens done/h | processed twice | wasted "
        "pilot-h | lost dones |",
        "|---|---:|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r.params
        lines.append(
            f"| {p.client} | {p.pilots:,} | {r.utilisation:.0%} / "
            f"{r.peak_minute_utilisation:.0%} | {r.requests_per_s:,.0f} | "
            f"{r.response_mean_ms:,.1f} / {r.response_p95_ms:,.1f} ms | "
            f"{seconds_text(r.claim_latency_median_s)} / {seconds_text(r.claim_latency_p95_s)} "
            f"| {r.done_per_hour:,.0f} | {r.processed_twice:,} | {r.wasted_pilot_hours:,.1f} "
            f"| {r.lost_finishes:,} |"
        )
    return lines


def plot(results: Sequence[Result], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "gridlrt-scale-model"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: a smaller file
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    styles = {"gridlrt": ("tab:blue", "o"), "picas": ("tab:red", "s")}
    for client in CLIENTS:
        runs = sorted(
            (r for r in results if r.params.client == client), key=lambda r: r.params.pilots
        )
        if not runs:
            continue
        colour, marker = styles[client]
        x = [r.params.pilots for r in runs]
        label = "gridlrt" if client == "gridlrt" else "PiCaS 1.1"
        axes[0].plot(x, [100 * r.utilisation for r in runs], marker=marker, color=colour,
                     label=f"{label}, steady")  # fmt: skip
        axes[0].plot(x, [100 * r.peak_minute_utilisation for r in runs], marker=marker,
                     color=colour, linestyle=":",
                     label=f"{label}, busiest minute (asked)")  # fmt: skip
        axes[1].plot(x, [r.claim_latency_median_s for r in runs], marker=marker, color=colour,
                     label=f"{label}, median")  # fmt: skip
        axes[1].plot(x, [r.claim_latency_p95_s for r in runs], marker=marker, color=colour,
                     linestyle=":", label=f"{label}, p95")  # fmt: skip
        axes[2].plot(x, [r.wasted_pilot_hours for r in runs], marker=marker, color=colour,
                     label=label)  # fmt: skip
    axes[0].axhline(100, color="grey", linewidth=0.8)
    axes[0].set_ylabel("server busy (%)")
    axes[1].set_ylabel("claim latency (s)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("pilot-hours spent on tokens run twice")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("pilots")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)


def validate(costs: Mapping[str, float], base: Params) -> list[str]:
    """The bench's setting: 16 claimers released together on 2,000 tokens of no duration, on
    the loopback, with the claimers' measured CPU; ``base`` gives the server and the seed."""
    lines = [
        "| client | model claims/s | measured claims/s | model processed twice | measured "
        "processed twice | model server ms/claim | measured server ms/claim | model server busy |",
        "|---|---:|---|---|---|---:|---:|---:|",
    ]
    for client in CLIENTS:
        measured = MEASURED_BENCH[client]
        requests_per_claim = 3.0 if client == "gridlrt" else 4.0
        p = replace(base, client=client, pilots=16, tokens=2000, duration_median=0.0,
                    profile="bench", rtt=0.0002,
                    client_ms=measured["client_ms_per_claim"] / requests_per_claim)  # fmt: skip
        runs = [simulate(replace(p, seed=base.seed + i), costs) for i in range(3)]
        rate = statistics.median(r.claims_per_s for r in runs)
        twice = " / ".join(str(r.processed_twice) for r in runs)
        busy = statistics.median(r.utilisation for r in runs)
        per_claim = statistics.median(
            r.utilisation * r.simulated_s * r.params.workers / r.claims for r in runs
        )
        lines.append(
            f"| {client} | {rate:.0f} | "
            f"{' / '.join(f'{x:.0f}' for x in measured['claims_per_s'])} | {twice} | "
            f"{' / '.join(str(x) for x in measured['processed_twice'])} | "
            f"{per_claim * 1000:.1f} | {measured['server_ms_per_claim']:.1f} | {busy:.0%} |"
        )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pilots", default="100,500,1000,2000,5000")
    parser.add_argument("--client", default="gridlrt,picas", help="gridlrt, picas or both")
    parser.add_argument("--tokens", type=int, help="tokens in the pool (default: enough)")
    parser.add_argument("--hours", type=float, default=4.0, help="simulated time")
    parser.add_argument("--ramp", default="10m", help="pilots start spread over this time")
    parser.add_argument("--heartbeat", default="30s", help="gridlrt's heartbeat interval")
    parser.add_argument("--poll", default="5s", help="gridlrt's --poll-interval")
    parser.add_argument("--idle-timeout", default="0s", help="gridlrt's --idle-timeout")
    parser.add_argument("--duration-median", default="30m", help="token duration, median")
    parser.add_argument("--duration-sigma", type=float, default=1.0, help="lognormal sigma")
    parser.add_argument("--rtt", default="0.01", help="pilot <-> server round trip, seconds")
    parser.add_argument("--client-ms", type=float, default=1.0, help="pilot CPU per request")
    parser.add_argument("--workers", type=int, default=1, help="CPUs of the server")
    parser.add_argument("--server", choices=("shared", "fifo"), default="shared",
                        help="requests share the CPU (node, Erlang) or queue for it")  # fmt: skip
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies server costs")
    parser.add_argument("--profile", choices=("pilot", "bench"), default="pilot")
    parser.add_argument("--no-catalogue", action="store_true", help="no catalogue records")
    parser.add_argument("--costs", type=Path, help="bench/request_costs.py --json output")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", type=Path, help="draw the curves into this file (.svg/.png)")
    parser.add_argument("--json", type=Path, help="write every result to this file")
    parser.add_argument("--validate", action="store_true", help="also the bench's setting")
    args = parser.parse_args(argv)
    args.pilots = [int(x) for x in str(args.pilots).split(",") if x]
    args.client = [c.strip().lower() for c in str(args.client).split(",") if c.strip()]
    if bad := set(args.client) - set(CLIENTS):
        parser.error(f"unknown client(s): {', '.join(sorted(bad))}")
    for name in ("ramp", "heartbeat", "poll", "idle_timeout", "duration_median", "rtt"):
        setattr(args, name, parse_duration(str(getattr(args, name))))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    costs = dict(COSTS_MS)
    source = "the defaults in bench/scale_model.py (bench/request_costs.py, see RESULTS.md)"
    if args.costs:
        costs.update(json.loads(args.costs.read_text())["costs_ms"])
        source = str(args.costs)
    print("# one CouchDB pool node under many pilots (bench/scale_model.py)")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    from pool_bench import machine  # run as a script, bench/ is on the path

    for key, value in machine().items():
        print(f"{key}: {value}")
    base = Params(
        hours=args.hours,
        ramp=args.ramp,
        heartbeat=args.heartbeat,
        poll=args.poll,
        idle_timeout=args.idle_timeout,
        duration_median=args.duration_median,
        duration_sigma=args.duration_sigma,
        rtt=args.rtt,
        client_ms=args.client_ms,
        workers=args.workers,
        server=args.server,
        scale=args.scale,
        profile=args.profile,
        catalogue=not args.no_catalogue,
        seed=args.seed,
        tokens=args.tokens,
    )
    shown = {k: v for k, v in asdict(base).items() if k not in ("client", "pilots", "tokens")}
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    print(f"server costs (ms, x{args.scale:g}) from {source}:")
    print("  " + ", ".join(f"{k} {v:g}" for k, v in costs.items() if not k.startswith("check")))
    results: list[Result] = []
    for client in args.client:
        for pilots in args.pilots:
            p = replace(base, client=client, pilots=pilots)
            result = simulate(p, costs)
            results.append(result)
            print(
                f"  {client} {pilots:>5} pilots: {result.requests:,} requests, "
                f"{result.claims:,} claims, server {result.utilisation:.0%} busy "
                f"(model CPU {result.model_cpu_s:.1f} s)",
                flush=True,
            )
    print()
    for line in table(results):
        print(line)
    print()
    for client in args.client:
        for busy in (0.5, 0.7):
            best = carried(results, client, busy)
            if best is None:
                print(f"{client}: no run kept the server at most {busy:.0%} busy")
                continue
            print(
                f"{client}: at most {busy:.0%} busy up to {best.params.pilots:,} pilots "
                f"({best.utilisation:.0%}); server time there: {shares(best)}"
            )
    if args.validate:
        print("\nvalidation: bench/pool_bench.py's setting (16 claimers released together, "
              "2,000 tokens of no duration, loopback), 3 seeds:")  # fmt: skip
        for line in validate(costs, base):
            print(line)
    if args.json:
        args.json.write_text(json.dumps([r.row() for r in results], indent=1) + "\n")
        print(f"\nresults written to {args.json}")
    if args.plot:
        title = (
            f"one pouchdb-server node (costs x{args.scale:g}, {args.workers} worker), "
            f"heartbeat {args.heartbeat:g} s, tokens lognormal median "
            f"{args.duration_median / 60:g} min sigma {args.duration_sigma:g}, "
            f"{args.hours:g} h simulated, seed {args.seed}"
        )
        plot(results, args.plot, title)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
