"""Pipelines (issue 14): how fast tokens that wait for tokens start, what a scatter -> gather ->
scatter run costs with real pilots, and what pipeline status costs on a large pool.

    .venv/bin/python bench/pipeline_bench.py [--quick] [--backends sqlite,couchdb]
        [--parts latency,pipeline,status] [--repeat 20] [--fan-ins 1,10,100,240]
        [--pilots 1,2] [--seconds 1] [--poll-interval 0.2] [--idle 0s]
        [--sizes 10000,100000] [--couchdb-sizes 10000] [--warm 5]

Three parts, on the embedded SQLite pool and on CouchDB (a pouchdb-server this script starts
on a free loopback port; ``make setup`` installs it). Token sets come from
``gridlrt.pipelines.expand`` (children before parents, parents listing their children):

1. **latency** — a gather of N parents (N = ``--fan-ins``; 240 = the subbands of one LOFAR
   observation) whose last parent a pool object finishes (:meth:`TokenPool.finish`, which
   settles the waiting child). Quiet (nobody else uses the pool): the cost of a plain finish
   (a token without children), of a parent's finish that does not yet promote (N >= 2), and of
   the last parent's finish that promotes; whether the child is todo when ``finish`` returns.
   End to end: another process polls ``claim()`` for the child's step in a tight loop; the time
   from the start of the last ``finish`` to that process holding the child. The first N - 1
   parents are written as done (settled) with the tokens, so every repeat is one finish.
   Then the whole gather: every one of the N parents claimed and finished in turn (each
   finish reads all N parents: O(N^2) documents for the gather) against N plain tokens.
2. **pipeline** — ``gridlrt.pipelines.service.create_pipeline`` (what ``gridlrt pipeline
   create`` calls), then real pilots (``gridlrt worker run`` processes, a command step that
   sleeps ``--seconds``, file inputs and outputs through gfal2 on file:// URLs): 16 scatter
   tokens -> 4 gathers of 4 -> 4 one-to-one children, with 1 and 2 pilots; wall time from
   starting the pilots to the last token done, against the ideal max(critical path,
   total work / pilots). Pilots poll every ``--poll-interval`` seconds when they find nothing
   (this bounds promotion-to-claim latency for an idle pilot) and, with ``--idle`` 0s, stop
   by themselves once nothing waits (``work_may_appear``); the bench SIGTERMs any that does
   not within 30 s of the last token.
3. **status** — pools of ~10,000 and ~100,000 tokens (``--sizes``; CouchDB: ``--couchdb-sizes``,
   default 10,000 only, as pouchdb-server needs ~10 minutes to index 100,000) in a pipeline
   shape (per observation one run: 240 calibrate -> 24 combine (gather subbands:10) -> 24
   image -> 1 mosaic (gather all), with the record ``pipeline create`` stores; 90 % of the
   observations done, the rest half-way through calibrate): ``stage_counts()``,
   ``pipeline_status`` for one run and for all, ``overview()`` for comparison, and what an
   idle pilot pays per poll: ``claim()`` that finds nothing (it also completes pending
   promotions) and ``work_may_appear()``. First call (on CouchDB it builds that view's index)
   and warm repeats (median of ``--warm``; of 2 for calls slower than 2 s).

Prints the machine, then one markdown table per part. Speed is reported, never asserted.
``--quick`` is a small smoke run (under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pool_bench  # noqa: E402  (bench/ is on the path: machine facts, as demo_bench does)

from gridlrt.config import Settings  # noqa: E402
from gridlrt.pipelines import service  # noqa: E402
from gridlrt.pipelines.definition import Pipeline, validate_pipeline  # noqa: E402
from gridlrt.pipelines.expand import expand  # noqa: E402
from gridlrt.tokens import (  # noqa: E402
    PilotInfo,
    Token,
    TokenPool,
    TokenStatus,
    new_token,
    transitions,
)
from gridlrt.tokens.couchdb import CouchDBPool  # noqa: E402
from gridlrt.tokens.model import Attempt, ParentRecord, UploadResult  # noqa: E402
from gridlrt.tokens.sqlite import SQLitePool  # noqa: E402

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
HOST = socket.gethostname()
PARENT_STEP = "bench-parent"
CHILD_STEP = "bench-child"
PLAIN_STEP = "bench-plain"
SLEEP_STEP = "bench-sleep"


def say(text: str = "") -> None:
    print(text, flush=True)


class BenchError(RuntimeError):
    """Something the bench needs did not work; the message says what."""


# --- figures --------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (with 20 values: the 19th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def secs(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:,.2f} s"


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


# --- machine --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """pool_bench's machine facts, with SQLite's version and the gridlrt commit measured."""
    import sqlite3

    facts = pool_bench.machine()
    load = facts.pop("load average at the start")
    return {**facts, "sqlite": sqlite3.sqlite_version, "gridlrt": gridlrt_version(),
            "load average at the start": load}  # fmt: skip


def gridlrt_version() -> str:
    """The commit of the checkout the bench runs from, and whether gridlrt/ differs from it."""
    git = ["git", "-C", str(ROOT)]
    commit = pool_bench._command_output([*git, "rev-parse", "--short", "HEAD"])
    changed = pool_bench._command_output([*git, "status", "--porcelain", "--", "gridlrt"])
    return f"commit {commit}" + (" + uncommitted changes in gridlrt/" if changed else "")


# --- pools ----------------------------------------------------------------------------------


@dataclass
class Backend:
    """Where fresh pools come from: a directory (SQLite) or a pouchdb-server (CouchDB)."""

    name: str
    workdir: Path
    server: Any = None  # tests.services.couchdb.CouchDB
    made: int = 0

    def new_pool(self, label: str) -> tuple[str, TokenPool]:
        """A fresh, initialised pool; its URL (as a pilot's --pool) and a handle."""
        self.made += 1
        if self.name == "sqlite":
            path = self.workdir / f"{label}-{self.made}.sqlite"
            pool: TokenPool = SQLitePool(path)
            pool.init()
            return f"sqlite:///{path}", pool
        url = self.server.new_database(f"{label.replace('-', '_')}_{self.made}")
        pool = CouchDBPool(url, timeout=600)
        pool.init()
        return url, pool


def open_url(url: str) -> TokenPool:
    if url.startswith("sqlite:///"):
        return SQLitePool(Path(url.removeprefix("sqlite://")))
    return CouchDBPool(url, timeout=600)


@contextlib.contextmanager
def backend(name: str, workdir: Path) -> Iterator[Backend]:
    workdir.mkdir(parents=True, exist_ok=True)
    if name == "sqlite":
        yield Backend(name, workdir)
        return
    from tests.services.couchdb import POUCHDB_SERVER, start_pouchdb_server

    if not POUCHDB_SERVER.exists() or shutil.which("node") is None:
        raise BenchError(f"pouchdb-server not installed ({POUCHDB_SERVER}); run `make setup`")
    server = start_pouchdb_server(workdir)
    try:
        yield Backend(name, workdir, server)
    finally:
        server.process.stop()


def pouchdb_version() -> str:
    from tests.services.couchdb import POUCHDB_SERVER

    package = POUCHDB_SERVER.parent.parent / "pouchdb-server" / "package.json"
    return json.loads(package.read_text()).get("version", "?") if package.exists() else "?"


# --- tokens ---------------------------------------------------------------------------------


def pipeline(name: str, inputs: str, stages: list[dict[str, Any]]) -> Pipeline:
    return validate_pipeline({"name": name, "inputs": {inputs: inputs}, "stage": stages})


def subband_list(
    obsid: int, n: int, base: str = "srm://lta.example/lofar/ops/projects"
) -> list[str]:
    return [f"{base}/L{obsid}/L{obsid}_SAP000_SB{i:03d}_uv.MS_0badc0de.tar" for i in range(n)]


def output_url(token_id: str) -> str:
    return f"file:///bench/results/{token_id}/{token_id}.MS.tar"


def as_done(token: Token, now: float, parents: list[str] | None = None) -> Token:
    """The token as a pilot leaves it after a successful attempt: one upload, settled when it
    has children (they were told); a dependent token with the input and provenance its
    promotion gave it (``parents``: the ids of its "input" group)."""
    attempt = Attempt(
        pilot="bench-pilot",
        host=HOST,
        started=now - 30,
        ended=now,
        exit_code=0,
        outcome="done",
        timings={"download": 1.0, "run": 27.0, "upload": 1.5, "total": 29.6},
    )
    changes: dict[str, Any] = {
        "lock": int(now) - 30,
        "done": int(now),
        "exit_code": 0,
        "status": TokenStatus.DONE,
        "hostname": HOST,
        "attempts": [attempt],
        "uploads": [UploadResult(url=output_url(token.id), size=123_456_789, checksum="0badc0de")],
        "settled": True if token.children else None,
    }
    if parents:
        urls = [output_url(p) for p in parents]
        changes["input"] = urls
        changes["provenance"] = [
            ParentRecord(id=p, status="done", outputs=[UploadResult(url=u)])
            for p, u in zip(parents, urls, strict=True)
        ]
    return token.model_copy(update=changes)


GATHER = pipeline(
    "gather",
    "subbands",
    [
        {"name": "scatter", "step": PARENT_STEP, "over": "subbands"},
        {"name": "gather", "step": CHILD_STEP, "over": "scatter", "gather": "all"},
    ],
)


def gather_set(run: str, fan_in: int, todo_parents: int) -> tuple[str, list[Token], list[Token]]:
    """One run of a gather (``gridlrt.pipelines.expand``): its waiting child's id, the child
    and its ``fan_in`` parents (create in that order), the first ``fan_in - todo_parents``
    parents done and settled, the rest todo."""
    tokens = expand(GATHER, {"subbands": subband_list(600000, fan_in)}, run=run).tokens
    children = [t for t in tokens if t.stage == "gather"]
    parents = [t for t in tokens if t.stage == "scatter"]
    now = time.time()
    parents = [as_done(p, now) if i < fan_in - todo_parents else p for i, p in enumerate(parents)]
    return children[0].id, children, parents


# --- part 1: promotion latency ----------------------------------------------------------------


@dataclass
class LatencyRow:
    backend: str
    fan_in: int
    plain: list[float] = field(default_factory=list)
    not_last: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    todo_at_return: int = 0
    quiet_repeats: int = 0
    e2e: list[float] = field(default_factory=list)
    e2e_finish: list[float] = field(default_factory=list)
    promoted_by_claimer: int = 0
    claimer_polls_per_s: list[float] = field(default_factory=list)
    # the whole gather, every parent finished in turn, vs as many plain tokens
    gather_total: float = math.nan
    gather_claims: float = math.nan
    plain_total: float = math.nan


def finisher() -> PilotInfo:
    return PilotInfo(pilot="bench-finisher", host=HOST)


def finish_one(pool: TokenPool, step: str, prefix: str) -> tuple[str, float]:
    """Claim the next todo token of ``step`` (it must belong to ``prefix``); time its finish."""
    who = finisher()
    token = pool.claim(who, step)
    if token is None or not token.id.startswith(f"{prefix}."):
        raise BenchError(f"expected a todo {step} token of {prefix}, claimed {token}")
    seconds, _ = timed(
        lambda: pool.finish(
            token.id, who.pilot, uploads=[UploadResult(url=output_url(token.id), size=1)]
        )
    )
    return token.id, seconds


def consume_child(pool: TokenPool, prefix: str) -> None:
    who = finisher()
    child = pool.claim(who, CHILD_STEP)
    if child is None or not child.id.startswith(f"{prefix}."):
        raise BenchError(f"the child of {prefix} is not claimable after its parents finished")
    pool.finish(child.id, who.pilot)


def quiet_latency(pool: TokenPool, row: LatencyRow, repeat: int) -> None:
    for r in range(repeat):
        prefix = f"q{row.fan_in}-{r:03d}"
        todo = 2 if row.fan_in >= 2 else 1
        child_id, children, parents = gather_set(prefix, row.fan_in, todo)
        plain = new_token(f"{prefix}.plain", inputs="file:///bench/in/plain.tar", step=PLAIN_STEP)
        pool.create(children)
        pool.create([*parents, plain])
        row.plain.append(finish_one(pool, PLAIN_STEP, prefix)[1])
        if todo == 2:
            row.not_last.append(finish_one(pool, PARENT_STEP, prefix)[1])
        row.last.append(finish_one(pool, PARENT_STEP, prefix)[1])
        row.quiet_repeats += 1
        if pool.get(child_id).status is TokenStatus.TODO:
            row.todo_at_return += 1
        consume_child(pool, prefix)


class Claimer:
    """Another process polling ``claim(step=bench-child)`` in a tight loop (see
    :func:`claimer_main`); one line per claimed token."""

    def __init__(self, url: str, sleep: float) -> None:
        argv = [sys.executable, __file__, "_claimer", url, str(sleep)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if self.next(60).get("ready") is not True:
            raise BenchError("the claimer did not start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            return dict(json.loads(self.lines.get(timeout=timeout)))
        except queue.Empty:
            raise BenchError(f"the claimer said nothing for {timeout:g} s") from None

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def claimer_main(argv: Sequence[str]) -> int:
    """``pipeline_bench.py _claimer URL SLEEP``: claim children, say when, finish them."""
    url, pause = argv[0], float(argv[1])
    pool = open_url(url)
    who = PilotInfo(pilot="bench-claimer", host=HOST)
    promoted = [0]
    settle_pending = pool.settle_pending

    def counting() -> int:
        changed = settle_pending()
        promoted[0] += changed
        return changed

    pool.settle_pending = counting  # type: ignore[method-assign]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps({"ready": True}), flush=True)
    polls, since = 0, time.monotonic()
    while True:
        promoted[0] = 0
        token = pool.claim(who, CHILD_STEP)
        polls += 1
        if token is None:
            if pause:
                time.sleep(pause)
            continue
        now = time.monotonic()
        line = {
            "id": token.id,
            "claimed": now,
            "polls": polls,
            "seconds": now - since,
            "self_promoted": promoted[0] > 0,
        }
        print(json.dumps(line), flush=True)
        pool.finish(token.id, who.pilot)
        polls, since = 0, time.monotonic()


def end_to_end_latency(
    pool: TokenPool, url: str, row: LatencyRow, repeat: int, claimer_sleep: float
) -> None:
    claimer = Claimer(url, claimer_sleep)
    who = finisher()
    try:
        for r in range(repeat):
            prefix = f"e{row.fan_in}-{r:03d}"
            child_id, children, parents = gather_set(prefix, row.fan_in, 1)
            pool.create(children)
            pool.create(parents)
            token = pool.claim(who, PARENT_STEP)
            if token is None or not token.id.startswith(f"{prefix}."):
                raise BenchError(f"expected the last parent of {prefix}, claimed {token}")
            time.sleep(0.3)  # the claimer polls at its steady rate
            t0 = time.monotonic()
            pool.finish(token.id, who.pilot, uploads=[UploadResult(url=output_url(token.id))])
            row.e2e_finish.append(time.monotonic() - t0)
            line = claimer.next(120)
            if line.get("id") != child_id:
                raise BenchError(f"the claimer claimed {line.get('id')}, not {child_id}")
            row.e2e.append(float(line["claimed"]) - t0)
            row.promoted_by_claimer += bool(line["self_promoted"])
            if line["seconds"] > 0:
                row.claimer_polls_per_s.append(line["polls"] / line["seconds"])
    finally:
        claimer.stop()


def whole_gather(pool: TokenPool, row: LatencyRow) -> None:
    """All N parents of a gather finished one after another, vs N plain tokens."""
    prefix = f"w{row.fan_in}"
    _, children, parents = gather_set(prefix, row.fan_in, row.fan_in)
    plain = [
        new_token(f"{prefix}.plain{i:03d}", inputs="file:///bench/in/plain.tar", step=PLAIN_STEP)
        for i in range(row.fan_in)
    ]
    pool.create(children)
    pool.create([*parents, *plain])
    gather = claims = plain_total = 0.0
    for _ in range(row.fan_in):
        t0 = time.perf_counter()
        _, seconds = finish_one(pool, PARENT_STEP, prefix)
        claims += time.perf_counter() - t0 - seconds
        gather += seconds
        plain_total += finish_one(pool, PLAIN_STEP, prefix)[1]
    row.gather_total, row.gather_claims, row.plain_total = gather, claims, plain_total
    consume_child(pool, prefix)


def latency_part(
    backends: dict[str, Backend], fan_ins: list[int], repeat: int, claimer_sleep: float
) -> list[LatencyRow]:
    rows = []
    for name, where in backends.items():
        url, pool = where.new_pool("latency")
        for fan_in in fan_ins:
            row = LatencyRow(name, fan_in)
            t0 = time.monotonic()
            quiet_latency(pool, row, repeat)
            end_to_end_latency(pool, url, row, repeat, claimer_sleep)
            whole_gather(pool, row)
            say(f"  {name}, fan-in {fan_in}: {time.monotonic() - t0:.1f} s")
            rows.append(row)
        pool.close()
    return rows


def latency_tables(rows: list[LatencyRow], repeat: int, claimer_sleep: float) -> None:
    say(
        f"\nPromotion latency: one gather per repeat, {repeat} repeats, ms (median / p95); "
        "quiet = nobody else on the pool; end to end = another process polls claim() for the "
        f"child's step ({'tight loop' if not claimer_sleep else f'every {claimer_sleep:g} s'})"
    )
    say(
        "\n| backend | fan-in | plain finish | parent finish, not last | last parent finish "
        "(promotes) | settle's extra (last - plain) | child todo when finish returns "
        "| end to end: finish start -> claimed elsewhere | last finish while polled "
        "| promoted by the poller's settle | poller claims()/s |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        extra = median(r.last) - median(r.plain)
        say(
            f"| {r.backend} | {r.fan_in} | {ms(median(r.plain))} / {ms(p95(r.plain))} "
            f"| {ms(median(r.not_last))} / {ms(p95(r.not_last))} "
            f"| {ms(median(r.last))} / {ms(p95(r.last))} | {ms(extra)} "
            f"| {r.todo_at_return} of {r.quiet_repeats} "
            f"| {ms(median(r.e2e))} / {ms(p95(r.e2e))} "
            f"| {ms(median(r.e2e_finish))} / {ms(p95(r.e2e_finish))} "
            f"| {r.promoted_by_claimer} of {len(r.e2e)} | {median(r.claimer_polls_per_s):,.0f} |"
        )
    say(
        "\nThe whole gather: every parent claimed and finished in turn (each finish settles "
        "the child: reads it and all its parents), against as many plain tokens; finish "
        "calls only (claims apart)"
    )
    say(
        "\n| backend | fan-in | gather: finishes total | per finish | plain: finishes total "
        "| per finish | extra for the gather | claims of the parents total |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        say(
            f"| {r.backend} | {r.fan_in} | {secs(r.gather_total)} "
            f"| {ms(r.gather_total / r.fan_in)} ms | {secs(r.plain_total)} "
            f"| {ms(r.plain_total / r.fan_in)} ms | {secs(r.gather_total - r.plain_total)} "
            f"| {secs(r.gather_claims)} |"
        )


# --- part 2: a pipeline with real pilots -----------------------------------------------------

STEP_FILE = """name = "bench-sleep"
kind = "command"
description = "sleep, then write one small output naming the inputs it got"
command = ["sh", "-c", "sleep {seconds}; ls > {token_id}.txt"]
max_attempts = 1
[inputs]
kind = "file"
[outputs]
keep = ["{token_id}.txt"]
url = "{root}/{token_id}/{name}"
log = false
"""

PIPELINE_FILE = """name = "bench-sgs"
description = "scatter -> gather -> one-to-one, sleep payloads"
[inputs]
subbands = "one small local file per subband"
[[stage]]
name = "calibrate"
step = "bench-sleep"
over = "subbands"
parameters = {{ seconds = "{seconds}" }}
[[stage]]
name = "combine"
step = "bench-sleep"
over = "calibrate"
gather = "subbands:{per}"
parameters = {{ seconds = "{seconds}" }}
[[stage]]
name = "image"
step = "bench-sleep"
over = "combine"
parameters = {{ seconds = "{seconds}" }}
"""


@dataclass
class PipelineShape:
    scatter: int = 16
    gathers: int = 4  # each over scatter / gathers parents
    seconds: float = 1.0

    @property
    def tokens(self) -> int:
        return self.scatter + 2 * self.gathers

    @property
    def critical_path(self) -> float:
        return 3 * self.seconds

    @property
    def work(self) -> float:
        return self.tokens * self.seconds

    def ideal(self, pilots: int) -> float:
        return max(self.critical_path, self.work / pilots)


def create_run(url: str, shape: PipelineShape, base: Path) -> None:
    """The run as ``gridlrt pipeline create`` makes it (record, then every token)."""
    inputs = base / "inputs"
    inputs.mkdir()
    files = []
    for i in range(shape.scatter):
        source = inputs / f"L700000_SAP000_SB{i:03d}_uv.txt"
        source.write_text(f"subband {i}\n")
        files.append(source.as_uri())
    listing = base / "subbands.txt"
    listing.write_text("\n".join(files) + "\n")
    definition = base / "bench-sgs.toml"
    definition.write_text(
        PIPELINE_FILE.format(seconds=f"{shape.seconds:g}", per=shape.scatter // shape.gathers)
    )
    created = service.create_pipeline(Settings(pool=url), definition, {"subbands": listing})
    if len(created.created) != shape.tokens:
        raise BenchError(f"pipeline create made {len(created.created)} tokens, not {shape.tokens}")


@dataclass
class PipelineRun:
    backend: str
    pilots: int
    shape: PipelineShape
    wall: float = math.nan
    first_claim: float = math.nan
    gaps: list[float] = field(default_factory=list)  # promotion: last parent ended -> claimed
    idle_gaps: list[float] = field(default_factory=list)  # claimed by a pilot that waited
    cycles: list[float] = field(default_factory=list)  # per token: claimed -> ended
    runs: list[float] = field(default_factory=list)  # per token: the payload (timings.run)
    stage_spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    not_done: int = 0
    pilot_exits: list[int | None] = field(default_factory=list)
    pilot_ends: list[float] = field(default_factory=list)  # after the last token, s (nan: TERM)
    stop_reasons: list[str] = field(default_factory=list)
    processed: list[int] = field(default_factory=list)


def pilot_argv(
    url: str, steps: Path, scratch: Path, results: Path, poll: float, idle: str
) -> list[str]:
    return [
        GRIDLRT, "worker", "run", "--pool", url, "--steps-dir", str(steps),
        "--heartbeat", "10s", "--idle-timeout", idle, "--poll-interval", f"{poll:g}s",
        "--workdir", str(scratch), "--output-root", results.as_uri(), "--json",
    ]  # fmt: skip


def pilot_summary(log: Path) -> dict[str, Any]:
    """The summary a pilot printed (--json), or {} when it printed none."""
    text = log.read_text(errors="replace")
    start = text.rfind("\n{\n")
    with contextlib.suppress(ValueError):
        return dict(json.loads(text[start + 1 :] if start >= 0 else text))
    return {}


def run_pipeline(
    where: Backend, pilots: int, shape: PipelineShape, poll: float, idle: str, timeout: float
) -> PipelineRun:
    run = PipelineRun(where.name, pilots, shape)
    base = Path(tempfile.mkdtemp(prefix=f"pipeline-{pilots}-", dir=where.workdir))
    steps, results, scratch, logs = (base / n for n in ("steps", "results", "scratch", "logs"))
    for d in (steps, results, scratch, logs):
        d.mkdir()
    (steps / f"{SLEEP_STEP}.toml").write_text(STEP_FILE)
    url, pool = where.new_pool(f"pipeline-{pilots}")
    create_run(url, shape, base)
    argv = pilot_argv(url, steps, scratch, results, poll, idle)
    procs: list[subprocess.Popen[bytes]] = []
    ended: dict[int, float] = {}
    launched = time.time()
    try:
        for i in range(pilots):
            with (logs / f"pilot-{i}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        argv,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "GRIDLRT_JOB_ID": f"bench-pilot-{i}"},
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + timeout
        all_done_at: float | None = None
        while time.monotonic() < deadline:
            for i, proc in enumerate(procs):
                if i not in ended and proc.poll() is not None:
                    ended[i] = time.time()
            if len(ended) == len(procs):
                break
            if all_done_at is None:
                counts = pool.overview()
                finished = counts.total(TokenStatus.DONE) + counts.total(TokenStatus.ERROR)
                if finished + counts.total(TokenStatus.BLOCKED) >= shape.tokens:
                    all_done_at = time.monotonic()
            elif time.monotonic() - all_done_at > 30 + poll:  # pilots that do not stop
                break
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                run.pilot_exits.append(proc.wait(30))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                run.pilot_exits.append(proc.wait(30))
    for i in range(pilots):
        summary = pilot_summary(logs / f"pilot-{i}.log")
        run.stop_reasons.append(str(summary.get("stop_reason", "?")))
        run.processed.append(int(summary.get("processed", 0)))
    tokens = {t.id: t for t in pool.tokens()}
    pool.close()
    done = [t for t in tokens.values() if t.status is TokenStatus.DONE]
    run.not_done = len(tokens) - len(done)
    if run.not_done:
        say(f"  {run.not_done} token(s) not done")
        for t in tokens.values():
            if t.status is not TokenStatus.DONE:
                say(f"    {t.id}: {t.status.value} {t.last_error.message if t.last_error else ''}")
        for log in sorted(logs.iterdir()):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            say(f"  --- {log.name}, last lines:\n    " + "\n    ".join(lines))
    ends = [a.ended for t in done if (a := t.current_attempt) and a.ended]
    starts = [a.started for t in done if (a := t.current_attempt)]
    if ends:
        run.wall = max(ends) - launched
        run.first_claim = min(starts) - launched
        run.pilot_ends = [ended.get(i, math.nan) - max(ends) for i in range(pilots)]
    pilot_busy_until: dict[str, float] = {}
    for t in sorted(done, key=lambda t: t.attempts[-1].started):
        attempt = t.attempts[-1]
        assert attempt.ended is not None
        run.cycles.append(attempt.ended - attempt.started)
        if "run" in attempt.timings:
            run.runs.append(attempt.timings["run"])
        stage = t.stage or "?"
        first, last = run.stage_spans.get(stage, (math.inf, -math.inf))
        run.stage_spans[stage] = (min(first, attempt.started), max(last, attempt.ended))
        if t.depends is not None:
            parents = [tokens[i] for i in t.depends.parent_ids]
            ready = max(p.attempts[-1].ended or math.nan for p in parents)
            gap = attempt.started - ready
            run.gaps.append(gap)
            # a pilot that was idle (its previous token ended before the child became ready)
            if pilot_busy_until.get(attempt.pilot, -math.inf) < ready:
                run.idle_gaps.append(gap)
        pilot_busy_until[attempt.pilot] = attempt.ended
    return run


def pipeline_part(
    backends: dict[str, Backend],
    pilots: list[int],
    shape: PipelineShape,
    poll: float,
    idle: str,
) -> list[PipelineRun]:
    runs = []
    timeout = 60 + 3 * shape.work
    for name, where in backends.items():
        for n in pilots:
            t0 = time.monotonic()
            run = run_pipeline(where, n, shape, poll, idle, timeout)
            say(f"  {name}, {n} pilot(s): {time.monotonic() - t0:.1f} s")
            runs.append(run)
    return runs


def pipeline_tables(runs: list[PipelineRun], shape: PipelineShape, poll: float, idle: str) -> None:
    per = shape.scatter // shape.gathers
    say(
        f"\nPipeline (gridlrt pipeline create, then `gridlrt worker run` pilots): "
        f"{shape.scatter} calibrate -> {shape.gathers} combine (gather subbands:{per}) -> "
        f"{shape.gathers} image (one-to-one), payload `sleep {shape.seconds:g}`, file inputs "
        f"and outputs through gfal2 on file://; --poll-interval {poll:g}s --idle-timeout "
        f"{idle} --heartbeat 10s. wall = pilots started -> last token done; ideal = "
        f"max(critical path {shape.critical_path:g} s, work {shape.work:g} s / pilots)"
    )
    say(
        "\n| backend | pilots | tokens done | wall | ideal | wall - ideal | first claim after "
        "start | per token: claim -> done (median) | payload run (median) "
        "| promotion gap: last parent done -> child claimed, median / max | of it, by an idle "
        "pilot: median / max (count) | pilots stopped by themselves, after the last token |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        ideal = shape.ideal(r.pilots)
        done = shape.tokens - r.not_done
        idle_gaps = (
            f"{ms(median(r.idle_gaps))} / {ms(max(r.idle_gaps))} ms ({len(r.idle_gaps)})"
            if r.idle_gaps
            else "none"
        )
        stopped = ", ".join(
            "no (SIGTERM)" if math.isnan(e) else f"{e:+.2f} s" for e in r.pilot_ends
        )
        say(
            f"| {r.backend} | {r.pilots} | {done} of {shape.tokens} | {secs(r.wall)} "
            f"| {secs(ideal)} | {secs(r.wall - ideal)} | {secs(r.first_claim)} "
            f"| {secs(median(r.cycles))} | {secs(median(r.runs))} "
            f"| {ms(median(r.gaps))} / {ms(max(r.gaps, default=math.nan))} ms | {idle_gaps} "
            f"| {stopped} |"
        )
    for r in runs:
        origin = min((a for a, _ in r.stage_spans.values()), default=0.0)
        spans = ", ".join(
            f"{stage} {a - origin:.2f}-{b - origin:.2f} s"
            for stage, (a, b) in sorted(r.stage_spans.items(), key=lambda kv: kv[1][0])
        )
        pilots = "; ".join(
            f"{n} token(s), exit {e}, {reason!r}"
            for n, e, reason in zip(r.processed, r.pilot_exits, r.stop_reasons, strict=True)
        )
        say(f"  {r.backend}, {r.pilots} pilot(s): stages from the first claim: {spans}. "
            f"Pilots: {pilots}")  # fmt: skip


# --- part 3: the cost of pipeline status -----------------------------------------------------

OBSERVATION = pipeline(
    "observation",
    "subbands",
    [
        {"name": "calibrate", "step": "calibrate", "over": "subbands"},
        {"name": "combine", "step": "combine", "over": "calibrate", "gather": "subbands:10"},
        {"name": "image", "step": "image", "over": "combine"},
        {"name": "mosaic", "step": "mosaic", "over": "image", "gather": "all"},
    ],
)
SUBBANDS = 240
PER_OBSERVATION = SUBBANDS + 24 + 24 + 1


def observation(
    obsid: int, finished: bool, now: float
) -> tuple[service.PipelineRecord, list[Token]]:
    """One observation as one run of :data:`OBSERVATION` (record and tokens, children first).
    Finished: every token done. Else half of calibrate done, two running, the rest todo, and
    everything after it waiting."""
    inputs = subband_list(obsid, SUBBANDS)
    expansion = expand(OBSERVATION, {"subbands": inputs}, run=f"L{obsid}")
    record = service.PipelineRecord(
        run=expansion.run,
        pipeline=OBSERVATION,
        plan=expansion.plan,
        definition_file="observation.toml",
        inputs={"subbands": f"L{obsid}.txt"},
        input_counts={"subbands": SUBBANDS},
        tokens=len(expansion.tokens),
        created=now,
    )
    who = PilotInfo(pilot="bench-pilot", host=HOST)
    tokens = []
    calibrated = 0
    for token in expansion.tokens:
        parents = token.depends.groups[0].ids if token.depends else None
        if finished:
            tokens.append(as_done(token, now, parents))
        elif token.stage == "calibrate":
            calibrated += 1
            if calibrated <= SUBBANDS // 2:
                tokens.append(as_done(token, now))
            elif calibrated <= SUBBANDS // 2 + 2:
                tokens.append(transitions.claim(token, who, now))
            else:
                tokens.append(token)
        else:
            tokens.append(token)
    return record, tokens


def status_tokens(size: int) -> tuple[list[service.PipelineRecord], list[Token]]:
    """~``size`` tokens: observations of :data:`PER_OBSERVATION` tokens, 90 % finished."""
    n_obs = max(1, round(size / PER_OBSERVATION))
    n_done = math.floor(0.9 * n_obs)
    now = time.time()
    records, tokens = [], []
    for k in range(n_obs):
        record, some = observation(800000 + k, k < n_done, now)
        records.append(record)
        tokens.extend(some)
    return records, tokens


@dataclass
class StatusRow:
    backend: str
    tokens: int
    observations: int
    create: float = math.nan
    figures: dict[str, tuple[float, float]] = field(default_factory=dict)  # first, warm median


def create_status_pool(
    pool: TokenPool, records: list[service.PipelineRecord], tokens: list[Token]
) -> None:
    for record in records:  # what gridlrt pipeline create stores before the tokens
        service._store_record(pool, record)
    pool.create(tokens)


def status_part(
    backends: dict[str, Backend], sizes: dict[str, list[int]], warm: int
) -> list[StatusRow]:
    rows = []
    idle = PilotInfo(pilot="bench-idle", host=HOST)
    for size in sorted({n for some in sizes.values() for n in some}):
        records, tokens = status_tokens(size)
        for name, where in backends.items():
            if size not in sizes[name]:
                continue
            t0 = time.monotonic()
            _, pool = where.new_pool(f"status-{size}")
            row = StatusRow(name, len(tokens), len(records))

            row.create, _ = timed(partial(create_status_pool, pool, records, tokens))
            last_run = records[-1].run  # one that is running
            calls: list[tuple[str, Callable[[], Any]]] = [
                ("stage_counts", pool.stage_counts),
                ("pipeline_status one run", partial(service.pipeline_status, pool, last_run)),
                ("pipeline_status all runs", partial(service.pipeline_status, pool)),
                ("overview", pool.overview),
                ("idle claim", partial(pool.claim, idle, "bench-no-such-step")),
                ("work_may_appear", pool.work_may_appear),
            ]
            for label, call in calls:
                first, _ = timed(call)
                again = [timed(call)[0] for _ in range(warm if first < SLOW else min(warm, 2))]
                row.figures[label] = (first, median(again))
            pool.close()
            say(f"  {name}, {len(tokens):,} tokens: {time.monotonic() - t0:.1f} s")
            rows.append(row)
        del tokens, records
    return rows


SLOW = 2.0  # seconds: a status call slower than this is repeated twice, not --warm times
STATUS_CALLS = {
    "stage_counts": "`stage_counts()`",
    "pipeline_status one run": "`pipeline_status(pool, run)`",
    "pipeline_status all runs": "`pipeline_status(pool)`",
    "overview": "`overview()`",
    "idle claim": "idle `claim()`",
    "work_may_appear": "`work_may_appear()`",
}


def status_tables(rows: list[StatusRow], warm: int) -> None:
    say(
        f"\nStatus cost: first call / warm (median of {warm}; of 2 for calls over {SLOW:g} s), "
        "ms. Observations of 240 "
        "calibrate -> 24 combine (gather subbands:10) -> 24 image -> 1 mosaic (gather all): "
        f"{PER_OBSERVATION} tokens, one pipeline run each (gridlrt.pipelines.expand, with the "
        "record pipeline create stores), 90 % of them done, the rest half-way through "
        "calibrate. pipeline_status(pool, run): a running observation. Idle claim() = a claim "
        "that finds nothing (it then completes pending promotions: settle_pending); "
        "work_may_appear() = what a pilot that found nothing asks, every poll past its idle "
        "timeout. CouchDB first calls build that view's index (pouchdb-server indexes each "
        "view on its first query)"
    )
    say(
        "\n| backend | tokens | observations | create (records + tokens) | "
        + " | ".join(STATUS_CALLS.values())
        + " |"
    )
    say("|---|---:|---:|---:|" + "---:|" * len(STATUS_CALLS))
    for r in rows:
        cells = []
        for label in STATUS_CALLS:
            first, again = r.figures.get(label, (math.nan, math.nan))
            cells.append(f"{ms(first)} / {ms(again)}")
        say(
            f"| {r.backend} | {r.tokens:,} | {r.observations} | {secs(r.create)} | "
            + " | ".join(cells)
            + " |"
        )


# --- main -----------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--backends", default="sqlite,couchdb")
    parser.add_argument("--parts", default="latency,pipeline,status")
    parser.add_argument("--repeat", type=int, default=20, help="gathers per fan-in")
    parser.add_argument("--fan-ins", type=int_list, default=[1, 10, 100, 240])
    parser.add_argument(
        "--claimer-sleep", type=float, default=0.0, help="the poller's pause between claims"
    )
    parser.add_argument("--pilots", type=int_list, default=[1, 2])
    parser.add_argument("--seconds", type=float, default=1.0, help="each payload's sleep")
    parser.add_argument("--poll-interval", type=float, default=0.2, help="the pilots', s")
    parser.add_argument(
        "--idle", default="0s", help="the pilots' --idle-timeout (they wait for waiting tokens)"
    )
    parser.add_argument("--sizes", type=int_list, default=[10_000, 100_000], help="SQLite")
    parser.add_argument(
        "--couchdb-sizes",
        type=int_list,
        default=[10_000],
        help="pouchdb-server builds each view from scratch: 100,000 tokens take ~10 min",
    )
    parser.add_argument("--warm", type=int, default=5, help="warm repeats of a status call")
    args = parser.parse_args(argv)
    shape = PipelineShape(seconds=args.seconds)
    if args.quick:
        args.repeat, args.fan_ins, args.warm = 3, [1, 10], 3
        args.sizes = args.couchdb_sizes = [1_000]
        shape = PipelineShape(scatter=8, gathers=2, seconds=0.2)
    names = [n for n in args.backends.split(",") if n]
    parts = [p for p in args.parts.split(",") if p]

    say("Machine:")
    for key, value in machine().items():
        say(f"  {key}: {value}")
    if "couchdb" in names:
        say(f"  pouchdb-server: {pouchdb_version()}")
    say(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeline-bench-")))
        backends = {n: stack.enter_context(backend(n, tmp / n)) for n in names}
        if "latency" in parts:
            say("\nPart 1: promotion latency")
            rows = latency_part(backends, args.fan_ins, args.repeat, args.claimer_sleep)
            latency_tables(rows, args.repeat, args.claimer_sleep)
        if "pipeline" in parts:
            say("\nPart 2: a pipeline with real pilots")
            runs = pipeline_part(backends, args.pilots, shape, args.poll_interval, args.idle)
            pipeline_tables(runs, shape, args.poll_interval, args.idle)
        if "status" in parts:
            say("\nPart 3: the cost of pipeline status")
            sizes = {"sqlite": args.sizes, "couchdb": args.couchdb_sizes}
            status_rows = status_part(backends, sizes, args.warm)
            status_tables(status_rows, args.warm)
    load = pool_bench.load_average()
    say(f"\nBench wall time {time.monotonic() - started:.0f} s; load average {load}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_claimer":
        sys.exit(claimer_main(sys.argv[2:]))
    sys.exit(main())
