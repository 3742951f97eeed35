"""A million tokens on the embedded pool (issue 18, item 3): what creating them, the read
paths, claim -> finish and ``gridlrt tokens archive`` cost on one SQLite pool of ``--tokens``
(default 1,000,000) tokens.

This script owns only its measurements. It prints figures and the machine they ran on and
never passes or fails on time; it exits 1 when a correctness check fails (a token claimed
twice, a claimed token not done afterwards, an archive or counts that do not add up).

1. **create** - ``--tokens`` LOFAR-like SRM URLs (244 subbands per observation) in an inputs
   file, made into tokens as ``gridlrt tokens create`` makes them (``read_inputs`` and
   ``make_tokens`` of gridlrt.tokens.create, all in memory), then ``SQLitePool.create``
   (batches of 2000, one transaction each): wall, tokens/s, the process's peak RSS
   (``resource.getrusage``), the pool file's size.
2. **read paths** - each on a fresh pool object (the first call opens the file) and then warm
   (median of ``--warm``; of 2 for a call over 2 s, as bench/pipeline_bench.py does):
   ``overview()``, ``status_counts()``, ``stage_counts()``, ``work_may_appear()``, an idle
   ``claim()`` of a step with no tokens, ``tokens(done)`` (the listing a status reads),
   ``gridlrt.monitor.snapshot(pool)`` and ``gridlrt status --json`` as a subprocess. At three
   moments: every token todo (after create), with done tokens (before the archive), after
   the archive.
3. **claim -> finish** - 1, 4 and 16 claimer processes (``--claimers``; bench/pool_bench.py's
   ``gridlrt_worker``, started by its ``run_claimers``: they open the pool, then are released
   at once), each claiming and finishing its share of the level's tokens, on the big pool.
   Two ways to claim: a pilot with ``--step`` (``claim(who, step)``, ``--claims`` tokens per
   level) and one without (``claim(who)``, the default pilot, ``--any-claims`` per level).
   Claims/s, claimer CPU per claim, distinct tokens, tokens claimed twice, claimed tokens not
   done afterwards.
4. **archive** - ``--done`` more tokens made done in bulk (their todo rows replaced, 2000 at a
   time, by the documents a successful attempt leaves), then ``gridlrt tokens archive`` of
   every done token as a subprocess: wall, archive size, the pool's counts afterwards against
   what they must be.

``--quick`` is a smoke run (20,000 tokens, 2,000 claims). Everything is written under a
temporary directory, removed at the end (``--workdir DIR``: there, kept).

    .venv/bin/python bench/million_bench.py [--quick] [--tokens N] [--claims N]
        [--any-claims N] [--done N] [--claimers 1,4,16] [--warm 5] [--workdir DIR]
        [--json-out FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline_bench  # noqa: E402  (bench/ is on the path: machine facts, timing helpers)
import pool_bench  # noqa: E402  (claimer processes and their summary)

from gridlrt.monitor import snapshot  # noqa: E402
from gridlrt.tokens import PilotInfo, TokenStatus  # noqa: E402
from gridlrt.tokens.create import make_tokens, read_inputs  # noqa: E402
from gridlrt.tokens.sqlite import SQLitePool  # noqa: E402

GRIDLRT = pipeline_bench.GRIDLRT
STEP = "bench"
ABSENT_STEP = "bench-absent"  # the idle claim's: no token has it
SUBBANDS = 244
BATCH = 2000  # TokenPool.create's batch
IDLE = PilotInfo(pilot="bench-idle", host=socket.gethostname())
say = pool_bench.say
ms = pipeline_bench.ms
secs = pipeline_bench.secs


class BenchError(pool_bench.BenchError):
    """Something the bench needs did not work; the message says what."""


def rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def file_mb(path: Path) -> float:
    """Size of the pool file with its write-ahead log, MiB."""
    wal = path.with_name(path.name + "-wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists()) / 1024**2


def counts(path: Path) -> dict[str, int]:
    pool = SQLitePool(path)
    try:
        return pool.status_counts()
    finally:
        pool.close()


# --- 1. create ------------------------------------------------------------------------------


def srm_inputs(n: int) -> Iterator[str]:
    """``n`` LOFAR-like SRM URLs: observation L229507 onwards, 244 subbands each."""
    base = "srm://srm.grid.sara.nl/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035"
    for i in range(n):
        obs, sb = 229507 + i // SUBBANDS, i % SUBBANDS
        yield f"{base}/{obs}/L{obs}_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar"


@dataclass
class CreateFigures:
    tokens: int
    make_s: float  # read_inputs + make_tokens
    insert_s: float  # SQLitePool.create
    rss_before_mb: float
    rss_peak_mb: float
    file_mb: float

    @property
    def wall_s(self) -> float:
        return self.make_s + self.insert_s


def create_part(path: Path, n: int, workdir: Path) -> tuple[CreateFigures, list[str]]:
    """Create ``n`` todo tokens as ``gridlrt tokens create`` would; their ids in claim order
    (oldest first) are returned."""
    say(f"\n== create: {n:,} tokens ==")
    inputs = workdir / "srm.txt"
    with inputs.open("w") as out:
        for url in srm_inputs(n):
            out.write(url + "\n")
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    tokens = make_tokens(read_inputs(inputs), step=STEP)
    made = time.perf_counter()
    pool = SQLitePool(path)
    pool.init()
    result = pool.create(tokens, batch=BATCH)
    ended = time.perf_counter()
    pool.close()
    figures = CreateFigures(n, made - started, ended - made, before, rss_mb(), file_mb(path))
    ids = [t.id for t in tokens]
    del tokens, result
    gc.collect()
    if len(ids) != n or counts(path) != {"todo": n}:
        raise BenchError(f"created {counts(path)}, expected {n:,} todo tokens")
    say(
        f"  read + make_tokens {secs(figures.make_s)}, SQLitePool.create "
        f"{secs(figures.insert_s)} ({n / figures.insert_s:,.0f} tokens/s); peak RSS "
        f"{figures.rss_peak_mb:,.0f} MiB (before: {before:,.0f}); file {figures.file_mb:,.1f} MiB"
    )
    return figures, ids


# --- 2. read paths --------------------------------------------------------------------------


def idle_claim(pool: SQLitePool) -> None:
    if pool.claim(IDLE, ABSENT_STEP) is not None:
        raise BenchError(f"the idle claim of step {ABSENT_STEP} took a token")


READS: dict[str, Callable[[SQLitePool], object]] = {
    "`overview()`": lambda pool: pool.overview(),
    "`status_counts()`": lambda pool: pool.status_counts(),
    "`stage_counts()`": lambda pool: pool.stage_counts(),
    "`work_may_appear()`": lambda pool: pool.work_may_appear(),
    "idle `claim()` of a step with no tokens": idle_claim,
    "`tokens(done)`, every done token listed": lambda pool: sum(
        1 for _ in pool.tokens(TokenStatus.DONE)
    ),
    "`gridlrt.monitor.snapshot(pool)`": lambda pool: snapshot(pool),
}
STATUS_JSON = "`gridlrt status --json` (a subprocess)"


@dataclass
class ReadFigures:
    state: str
    counts: dict[str, int]
    figures: dict[str, tuple[float, float]] = field(default_factory=dict)  # first, warm median
    checks: list[tuple[str, bool]] = field(default_factory=list)


def repeat(call: Callable[[], Any], warm: int) -> tuple[float, float]:
    """The first call's seconds and the median of ``warm`` more (2 for a slow call)."""
    first, _ = pipeline_bench.timed(call)
    again = [
        pipeline_bench.timed(call)[0]
        for _ in range(warm if first < pipeline_bench.SLOW else min(warm, 2))
    ]
    return first, pipeline_bench.median(again)


def status_json(url: str) -> dict[str, Any]:
    done = subprocess.run(
        [GRIDLRT, "status", "--json", "--pool", url], capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise BenchError(f"gridlrt status --json exited {done.returncode}: {done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def read_part(path: Path, state: str, warm: int) -> ReadFigures:
    say(f"\n== read paths: {state} ==")
    row = ReadFigures(state=state, counts=counts(path))
    for label, call in READS.items():
        pool = SQLitePool(path)  # a fresh object: its first call opens the file
        row.figures[label] = repeat(partial(call, pool), warm)
        if label == "`overview()`":
            total = pool.overview().by_status()
            row.checks.append(
                (f"{state}: overview() counts = status_counts()", _same(total, row.counts))
            )
        pool.close()
        say(f"  {label}: first {ms(row.figures[label][0])} ms, warm {ms(row.figures[label][1])}")
    url = SQLitePool(path).url
    answers: list[dict[str, Any]] = []
    row.figures[STATUS_JSON] = repeat(lambda: answers.append(status_json(url)), warm)
    shown: dict[str, int] = {}
    for step in answers[0]["steps"]:
        for status, n in step["counts"].items():
            shown[status] = shown.get(status, 0) + n
    row.checks.append(
        (f"{state}: gridlrt status --json counts = status_counts()", _same(shown, row.counts))
    )
    say(
        f"  {STATUS_JSON}: first {ms(row.figures[STATUS_JSON][0])} ms, warm "
        f"{ms(row.figures[STATUS_JSON][1])}; counts {row.counts}"
    )
    return row


def _same(a: dict[str, int], b: dict[str, int]) -> bool:
    return {k: v for k, v in a.items() if v} == {k: v for k, v in b.items() if v}


# --- 3. claim -> finish ---------------------------------------------------------------------


CLAIMS = {"step": f'`claim(who, "{STEP}")`', "any": "`claim(who)`"}


@dataclass
class ClaimFigures:
    mode: str  # a key of CLAIMS
    run: pool_bench.ClaimRun
    load: float  # 1-minute load average at the end


def claim_level(path: Path, workdir: Path, mode: str, n: int, claims: int) -> ClaimFigures:
    """``n`` claimers claim and finish ``claims`` tokens together."""
    before = counts(path)
    shares = [claims // n + (1 if i < claims % n else 0) for i in range(n)]

    def argv(i: int, out: Path) -> list[str]:
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            str(path),
            "--worker-name",
            f"{mode}-{n}-{i}",
            "--worker-out",
            str(out),
            "--worker-share",
            str(shares[i]),
            "--worker-step",
            STEP if mode == "step" else "",
        ]

    seconds, server_cpu, results = pool_bench.run_claimers(argv, n, workdir, f"claim-{mode}")
    after = counts(path)
    finished = after.get("done", 0) - before.get("done", 0)
    run = pool_bench.summarize(
        CLAIMS[mode], "sqlite", n, claims, seconds, server_cpu, results, claims - finished
    )
    if after.get("todo", 0) != before.get("todo", 0) - run.distinct:
        run.errors.append(f"todo went from {before.get('todo')} to {after.get('todo')}")
    return ClaimFigures(mode, run, os.getloadavg()[0])


def claim_part(path: Path, workdir: Path, args: argparse.Namespace) -> list[ClaimFigures]:
    say("\n== claim -> finish ==")
    runs = []
    for mode, claims in (("step", args.claims), ("any", args.any_claims)):
        for n in args.claimers:
            if claims:
                runs.append(claim_level(path, workdir, mode, n, claims))
    return runs


# --- 4. archive -----------------------------------------------------------------------------


def bulk_done(path: Path, ids: Sequence[str]) -> float:
    """Make the tokens ``ids`` done as a successful attempt leaves them: their todo rows are
    replaced, ``BATCH`` at a time; seconds."""
    started = time.perf_counter()
    now = time.time()
    pool = SQLitePool(path)
    for i in range(0, len(ids), BATCH):
        chunk = ids[i : i + BATCH]
        found = pool.by_id(chunk)
        done = [pipeline_bench.as_done(t, now) for t in found.values() if t is not None]
        pool.delete(chunk)
        pool.create(done, batch=BATCH)
    pool.close()
    return time.perf_counter() - started


@dataclass
class ArchiveFigures:
    before: dict[str, int]
    after: dict[str, int]
    seconds: float
    archived: int  # lines in the archive
    distinct: int  # distinct ids in it
    archive_mb: float
    file_before_mb: float
    file_after_mb: float
    checks: list[tuple[str, bool]] = field(default_factory=list)


def archive_part(path: Path, workdir: Path) -> ArchiveFigures:
    say("\n== gridlrt tokens archive ==")
    before = counts(path)
    file_before = file_mb(path)
    target = workdir / "archive"
    started = time.perf_counter()
    done = subprocess.run(
        [GRIDLRT, "tokens", "archive", "--to", str(target), "--pool", SQLitePool(path).url],
        capture_output=True,
        text=True,
        timeout=7200,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"gridlrt tokens archive exited {done.returncode}: {done.stderr[-2000:]}")
    files = sorted(target.glob("tokens-done-*.jsonl"))
    ids: list[str] = []
    for file in files:
        with file.open() as lines:
            ids.extend(json.loads(line)["_id"] for line in lines)
    after = counts(path)
    figures = ArchiveFigures(
        before=before,
        after=after,
        seconds=seconds,
        archived=len(ids),
        distinct=len(set(ids)),
        archive_mb=sum(f.stat().st_size for f in files) / 1024**2,
        file_before_mb=file_before,
        file_after_mb=file_mb(path),
    )
    expected = {k: v for k, v in before.items() if k != "done"}
    figures.checks = [
        ("archive: one file", len(files) == 1),
        (
            "archive: every done token in it once",
            figures.archived == figures.distinct == before.get("done", 0),
        ),
        ("archive: counts after = counts before without done", _same(after, expected)),
    ]
    say(
        f"  {figures.archived:,} done tokens archived in {secs(seconds)} "
        f"({figures.archived / seconds:,.0f} tokens/s); archive {figures.archive_mb:,.1f} MiB; "
        f"pool file {file_before:,.1f} -> {figures.file_after_mb:,.1f} MiB; counts after {after}"
    )
    return figures


# --- summary --------------------------------------------------------------------------------


def summary(
    args: argparse.Namespace,
    create: CreateFigures,
    done_s: float,
    reads: list[ReadFigures],
    claims: list[ClaimFigures],
    archive: ArchiveFigures,
) -> list[tuple[str, bool]]:
    say("\n== summary ==")
    c = create
    say(
        f"\nCreate ({c.tokens:,} tokens as `gridlrt tokens create` makes them, "
        f"`SQLitePool.create` in batches of {BATCH}):\n"
    )
    say(
        "| tokens | read inputs + `make_tokens` | `SQLitePool.create` | tokens/s (create) "
        "| wall | peak RSS | pool file | per token |"
    )
    say("|---:|---:|---:|---:|---:|---:|---:|---:|")
    say(
        f"| {c.tokens:,} | {secs(c.make_s)} | {secs(c.insert_s)} | "
        f"{c.tokens / c.insert_s:,.0f} | {secs(c.wall_s)} | {c.rss_peak_mb:,.0f} MiB | "
        f"{c.file_mb:,.0f} MiB | {c.file_mb * 1024**2 / c.tokens:,.0f} B |"
    )
    say(
        f"\nRead paths, ms: first call on a fresh pool object / warm (median of {args.warm}; of "
        f"2 for calls over {pipeline_bench.SLOW:g} s). With done: the tokens the claim runs "
        f"finished and {args.done:,} made done in bulk ({secs(done_s)}).\n"
    )
    heads = [f"{r.state}: " + ", ".join(f"{k} {v:,}" for k, v in r.counts.items()) for r in reads]
    say("| call | " + " | ".join(heads) + " |")
    say("|---|" + "---:|" * len(reads))
    for label in [*READS, STATUS_JSON]:
        cells = [f"{ms(r.figures[label][0])} / {ms(r.figures[label][1])}" for r in reads]
        say(f"| {label} | " + " | ".join(cells) + " |")
    say(
        f"\nClaim -> finish on the big pool, claimer processes released together; {CLAIMS['step']}"
        f" is a pilot with --step, {CLAIMS['any']} one without (the default):\n"
    )
    say(
        "| claim | claimers | claims | wall | claims/s | distinct tokens | claimed twice "
        "| not done after | claimer CPU ms/claim | load (1 min) at the end |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in claims:
        r = f.run
        say(
            f"| {CLAIMS[f.mode]} | {r.claimers} | {r.cycles:,} | {secs(r.seconds)} | "
            f"{r.claims_per_s:,.1f} | {r.distinct:,} | {r.doubled} | {r.not_done} | "
            f"{r.per_claim_ms(r.client_cpu)} | {f.load:.2f} |"
        )
    a = archive
    say("\n`gridlrt tokens archive` of every done token (a subprocess):\n")
    say(
        "| done tokens | wall | tokens/s | archive (JSON lines) | pool file before -> after "
        "| counts after |"
    )
    say("|---:|---:|---:|---:|---:|---|")
    after = ", ".join(f"{k} {v:,}" for k, v in a.after.items()) or "none"
    say(
        f"| {a.archived:,} | {secs(a.seconds)} | {a.archived / a.seconds:,.0f} | "
        f"{a.archive_mb:,.1f} MiB | {a.file_before_mb:,.0f} -> {a.file_after_mb:,.0f} MiB | "
        f"{after} |"
    )
    checks = [check for r in reads for check in r.checks] + archive.checks
    for f in claims:
        r = f.run
        label = f"{CLAIMS[f.mode]} x {r.claimers}"
        checks.append(
            (
                f"{label}: every claim a distinct token, all {r.tokens:,} done",
                r.doubled == r.extra == r.not_done == r.lost == 0
                and not r.errors
                and r.cycles == r.distinct == r.tokens,
            )
        )
    say("\nChecks:")
    for text, ok in checks:
        say(f"  {'ok' if ok else 'FAILED'}: {text}")
    return checks


# --- main -----------------------------------------------------------------------------------


SIZES = {"tokens": 1_000_000, "claims": 20_000, "any_claims": 400, "done": 100_000}
QUICK = {"tokens": 20_000, "claims": 2_000, "any_claims": 200, "done": 2_000}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tokens", type=int, help="the pool's size (1,000,000)")
    parser.add_argument(
        "--claims", type=int, help="tokens claimed per level by claimers with a step (20,000)"
    )
    parser.add_argument(
        "--any-claims", type=int, help="tokens claimed per level by claimers without one (400)"
    )
    parser.add_argument(
        "--done", type=int, help="tokens made done in bulk before the archive (100,000)"
    )
    parser.add_argument(
        "--claimers",
        type=pipeline_bench.int_list,
        default=[1, 4, 16],
        help="claimer processes per level (1,4,16)",
    )
    parser.add_argument("--warm", type=int, default=5, help="warm repeats of a read (median)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20,000 tokens, 2,000 (and 200) claims, 2,000 done (sizes given win)",
    )
    parser.add_argument("--workdir", type=Path, help="work here and keep it (default: a temp dir)")
    parser.add_argument("--json-out", type=Path, help="also write the figures here (JSON)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-name", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-share", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-step", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, size in (QUICK if args.quick else SIZES).items():
        if getattr(args, name) is None:
            setattr(args, name, size)
    used = len(args.claimers) * (args.claims + args.any_claims) + args.done
    if args.worker is None and used > args.tokens:
        parser.error(f"the claim runs and --done take {used:,} tokens; --tokens must be as many")
    if args.worker is None and (not args.claimers or min(args.claimers) < 1 or args.warm < 0):
        parser.error("--claimers: numbers of 1 or more; --warm: 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return pool_bench.gridlrt_worker(
            f"sqlite:{args.worker}",
            args.worker_name,
            args.worker_out,
            args.worker_share,
            args.worker_step or None,
        )
    signal.signal(signal.SIGTERM, pool_bench._terminate)
    say("# A million tokens on the embedded pool (bench/million_bench.py)")
    say("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    for key, value in pipeline_bench.machine().items():
        say(f"{key}: {value}")
    say(
        f"sizes: {args.tokens:,} tokens, claims per level {args.claims:,} (with a step) and "
        f"{args.any_claims:,} (without), claimers {args.claimers}, {args.done:,} made done "
        f"in bulk, warm repeats {args.warm}"
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gridlrt-million-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "pool.sqlite"
    started = time.monotonic()
    try:
        if path.exists():
            raise BenchError(f"{path} exists: give an empty --workdir")
        create, ids = create_part(path, args.tokens, workdir)
        reads = [read_part(path, "all todo", args.warm)]
        claims = claim_part(path, workdir, args)
        say(f"\n== {args.done:,} tokens made done in bulk ==")
        done_s = bulk_done(path, ids[len(ids) - args.done :])
        del ids
        say(f"  {secs(done_s)}")
        reads.append(read_part(path, "with done", args.warm))
        archive = archive_part(path, workdir)
        reads.append(read_part(path, "after archive", args.warm))
        checks = summary(args, create, done_s, reads, claims, archive)
        say(
            f"\nbench wall time {time.monotonic() - started:,.0f} s; load average at the end: "
            f"{pool_bench.load_average()}"
        )
        if args.json_out is not None:
            figures = {
                "create": {**asdict(create), "wall_s": create.wall_s},
                "reads": [asdict(r) for r in reads],
                "claims": [
                    {
                        "mode": f.mode,
                        "load": f.load,
                        **asdict(f.run),
                        "claims_per_s": f.run.claims_per_s,
                    }
                    for f in claims
                ],
                "done_s": done_s,
                "archive": asdict(archive),
                "checks": checks,
            }
            args.json_out.write_text(json.dumps(figures, indent=2))
    except BenchError as exc:
        say(f"\nbench failed: {exc}")
        return 1
    finally:  # (Ctrl-C or SIGTERM: KeyboardInterrupt, after this)
        pool_bench.stop_all()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
