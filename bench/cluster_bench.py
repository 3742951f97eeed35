"""Claims on a replicated token pool (issue 19): two pouchdb-servers, 16 claimer processes.

Each run starts two pouchdb-servers (A and B) on free loopback ports, each with a database
``pool`` (``CouchDBPool.init`` on A; B's copy gets the design document by replication), and
continuous replication both ways (``POST /_replicate``, A → B run by A, B → A run by B). It
creates ``--tokens`` tokens on A, waits until B has them all (its status counts) and until the
views in use are built on both, then releases ``--claimers`` claimer processes together, half
on each server. Each claimer loops

    claim → ``--work`` seconds of simulated work → [confirm] → publish → finish

until it has found nothing to claim for ``--idle`` seconds and neither server counts a todo
token. "Publish" stands for what a pilot does with a result under its final name: the claimer
records (token, attempt, time). Two modes, alternating run by run on fresh servers:

- **unchecked**: ``CouchDBPool(own)`` — today's pool, which knows nothing of the other server:
  both servers may accept a claim of the same todo revision, and both claimers publish;
- **checked**: ``CouchDBPool(own, replicas=[other])`` — the claim is checked for conflicts on
  the own server, and ``pool.confirm`` waits until it has reached the other server and no
  other claim wins before the claimer publishes (``LostClaim``: the claimer drops the token).

After the claimers end, the bench waits until both servers hold the same revisions (replication
settled), then checks that every token is done on both and counts documents with
``_conflicts``. Reported per mode (median over ``--repeat`` runs, and each run): tokens
published per second (from the release to the end of the last claimer's last cycle), tokens run
by more than one claimer (wasted runs), tokens published more than once (the goal for checked:
0), tokens never published, ``LostClaim`` caught, requests per published token by kind (each
claimer's ``pool.sent`` and its replicas'; the idle polling at the end is left out, the first
empty claim is counted), losing revisions deleted (``pool.resolved``), conflicts left, and the
CPU of the claimers and both servers per published token. Nothing passes or fails on time.

    .venv/bin/python bench/cluster_bench.py [--quick] [--tokens N] [--claimers N]
        [--repeat R] [--work S] [--modes unchecked,checked] [--commit REV] [--keep]

``--commit REV`` runs the gridlrt package of that commit (``git archive``, extracted into the
temporary directory), not the working tree's: claimers start run after run, and an edit to the
working tree during the bench would reach the later ones half-made.

Every process started here (pouchdb-servers, claimers) runs in its own process group and is
stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pool_bench import (  # noqa: E402
    BenchError,
    Server,
    bench_main,
    cpu_seconds,
    make_tokens,
    pouchdb_server,
    race,
    say,
)

MODES = ("unchecked", "checked")
DB = "pool"
VIEWS = ("gridlrt_status", "gridlrt_next", "gridlrt_conflicts")  # what claimers query
SETTLE_TIMEOUT = 300.0  # seconds replication may take to bring both servers level


# --- claimer process ---------------------------------------------------------------------------


class LostInClaim(logging.Handler):
    """Counts the claims ``CouchDBPool.claim`` made and dropped itself: its check right after
    the write found another replica's claim winning (logged at INFO with the LostClaim)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        from gridlrt.errors import LostClaim

        if record.args and isinstance(record.args, tuple) and isinstance(record.args[0], LostClaim):
            self.count += 1


def claimer(args: argparse.Namespace) -> int:
    """One claimer: claim → work → [confirm] → publish → finish until nothing is left; what it
    did to ``args.worker_out`` (JSON)."""
    if args.source:
        sys.path.insert(0, args.source)
    from gridlrt.errors import LostClaim
    from gridlrt.tokens import PilotInfo
    from gridlrt.tokens.couchdb import CouchDBPool

    checked = args.worker == "checked"
    own, other = args.worker_own, args.worker_other
    name = args.worker_name
    pool = CouchDBPool(own, replicas=[other] if checked else ())
    watch = [CouchDBPool(own), CouchDBPool(other)]  # the todo counts at the end, not counted
    who = PilotInfo(pilot=name, host="bench")
    lost_in_claim = LostInClaim()  # claims the pool's own check drops inside claim()
    logging.getLogger("gridlrt.tokens.couchdb").addHandler(lost_in_claim)
    logging.getLogger("gridlrt.tokens.couchdb").setLevel(logging.INFO)
    pool.status_counts()  # connect before the start
    for replica in pool.replicas:
        replica.status_counts()
    print("ready", flush=True)
    sys.stdin.readline()

    def sent() -> tuple[Counter[str], Counter[str]]:
        theirs: Counter[str] = Counter()
        for replica in pool.replicas:
            theirs.update(replica.sent)
        return Counter(pool.sent), theirs

    pool.sent.clear()
    for replica in pool.replicas:
        replica.sent.clear()
    started, cpu = time.time(), time.process_time()
    cycles: list[dict[str, Any]] = []
    last_cycle = started
    snapshot: tuple[Counter[str], Counter[str]] | None = None
    idle_since: float | None = None
    empty_claims = 0
    error = ""
    try:
        while True:
            token = pool.claim(who)
            if token is None:
                empty_claims += 1
                now = time.monotonic()
                if idle_since is None:  # the requests of a run end with its first empty claim
                    idle_since, snapshot = now, sent()
                if now - idle_since >= args.idle and not any(
                    w.status_counts().get("todo", 0) for w in watch
                ):
                    break
                time.sleep(0.2)
                continue
            idle_since, snapshot = None, None
            attempt = token.current_attempt
            cycle: dict[str, Any] = {
                "token": token.id,
                "attempt": attempt.id if attempt else None,
                "claimed": time.time(),
                "published": None,
                "lost": None,
            }
            cycles.append(cycle)
            if args.work > 0:
                time.sleep(args.work)
            if checked:
                confirming = time.perf_counter()
                try:
                    pool.confirm(token.id, name)
                except LostClaim as exc:
                    cycle["lost"], cycle["why"] = "confirm", str(exc)
                    last_cycle = time.time()
                    continue
                finally:
                    cycle["confirm_s"] = time.perf_counter() - confirming
            cycle["published"] = time.time()
            try:
                pool.finish(token.id, name)
            except LostClaim as exc:
                cycle["lost"], cycle["why"] = "finish", str(exc)
            last_cycle = time.time()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    ended, cpu = time.time(), time.process_time() - cpu
    own_sent, replica_sent = snapshot if snapshot is not None else sent()
    result = {
        "name": name,
        "server": own,
        "started": started,
        "last_cycle": last_cycle,
        "ended": ended,
        "cpu": cpu,
        "cycles": cycles,
        "empty_claims": empty_claims,
        "lost_in_claim": lost_in_claim.count,
        "sent": dict(own_sent),
        "replica_sent": dict(replica_sent),
        "resolved": pool.resolved,
        "replica_resolved": sum(r.resolved for r in pool.replicas),
        "error": error,
    }
    Path(args.worker_out).write_text(json.dumps(result))
    pool.close()
    for w in watch:
        w.close()
    return 0


# --- servers ------------------------------------------------------------------------------------


def replicate(server: Server, source: str, target: str) -> None:
    answer = requests.post(
        f"{server.url}/_replicate",
        json={"source": source, "target": target, "continuous": True},
        timeout=60,
    )
    if not answer.ok:
        raise BenchError(
            f"replication {source} → {target}: HTTP {answer.status_code} {answer.text}"
        )


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` until true; seconds taken. BenchError after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise BenchError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def warm_views(db_url: str) -> None:
    from gridlrt.tokens.couchdb import VIEW

    for view in VIEWS:
        requests.get(
            f"{db_url}/{VIEW}/{view}", params={"limit": 1}, timeout=3600
        ).raise_for_status()


def prepare(a: Server, b: Server, n: int, prefix: str) -> tuple[str, str]:
    """The pool on A, its empty copy on B, replication both ways, ``n`` tokens created on A and
    arrived on B, the views built on both. The two database URLs."""
    from gridlrt.tokens.couchdb import CouchDBPool
    from gridlrt.tokens.design import DESIGN_ID

    a_db, b_db = f"{a.url}/{DB}", f"{b.url}/{DB}"
    pool_a = CouchDBPool(a_db)
    pool_a.init()
    requests.put(b_db, timeout=60).raise_for_status()
    replicate(a, a_db, b_db)
    replicate(b, b_db, a_db)
    wait_for(
        "the design document on B",
        lambda: requests.get(f"{b_db}/{DESIGN_ID}", timeout=30).ok,
        120,
    )
    pool_b = CouchDBPool(b_db)
    pool_b.init()  # a no-op when the design document arrived whole
    started = time.perf_counter()
    created = pool_a.create(make_tokens(n, prefix))
    create_s = time.perf_counter() - started
    if len(created.created) != n:
        raise BenchError(f"created {len(created.created)} tokens of {n} on A")
    arrive_s = wait_for(
        f"{n} todo tokens on B", lambda: pool_b.status_counts().get("todo", 0) == n, 600
    )
    for db in (a_db, b_db):
        warm_views(db)
    if pool_a.status_counts().get("todo", 0) != n:
        raise BenchError(f"A counts {pool_a.status_counts()}, not {n} todo")
    say(
        f"    created {n} tokens on A in {create_s:.2f} s; all todo on B "
        f"{arrive_s:.2f} s later; views built on both"
    )
    pool_a.close()
    pool_b.close()
    return a_db, b_db


def token_docs(db_url: str) -> dict[str, dict[str, Any]]:
    """Every document of the database (winning revisions) with its ``_conflicts``."""
    answer = requests.get(
        f"{db_url}/_all_docs",
        params={"include_docs": "true", "conflicts": "true"},
        timeout=600,
    )
    answer.raise_for_status()
    return {row["id"]: row["doc"] for row in answer.json()["rows"] if row.get("doc")}


def settled_docs(a_db: str, b_db: str) -> tuple[dict[str, Any], dict[str, Any], float]:
    """The documents of both copies once they hold the same revisions (and conflicts) twice in
    a row, half a second apart; and the seconds that took."""
    started = time.monotonic()
    previous: Any = None
    while True:
        a, b = token_docs(a_db), token_docs(b_db)

        def revs(docs: dict[str, Any]) -> dict[str, Any]:
            return {k: (d.get("_rev"), sorted(d.get("_conflicts", []))) for k, d in docs.items()}

        now = revs(a)
        if now == revs(b) and now == previous:
            return a, b, time.monotonic() - started
        previous = now if now == revs(b) else None
        if time.monotonic() - started > SETTLE_TIMEOUT:
            raise BenchError(f"the two copies differ after {SETTLE_TIMEOUT:.0f} s")
        time.sleep(0.5)


# --- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    rep: int
    tokens: int
    claimers: int
    seconds: float  # release → the end of the last claimer's last cycle
    claims: int  # claims returned to claimers
    published: int  # publications
    published_tokens: int  # distinct tokens published
    wasted: int  # tokens run by more than one claimer (distinct attempts)
    published_twice: int  # tokens published more than once
    never_published: int
    lost: int  # LostClaim caught (confirm or finish)
    lost_finish: int  # of them, at finish (after publishing)
    lost_in_claim: int  # claims the pool dropped inside claim() (its check found a winner)
    confirm_s: list[float]  # seconds of each pool.confirm (checked mode)
    resolved: int  # losing revisions deleted by the claimers' pools
    not_done: dict[str, int]  # per server: tokens not done after replication settled
    conflicts: dict[str, int]  # per server: tokens with _conflicts after it settled
    other_conflicts: dict[str, int]  # per server: other documents (design) with _conflicts
    settle_s: float
    client_cpu: float
    server_cpu: dict[str, float]
    sent: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.published_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def requests_per_token(self) -> float:
        n = self.published_tokens
        return sum(self.sent.values()) / n if n else float("nan")

    def cpu_ms(self, cpu: float) -> float:
        n = self.published_tokens
        return cpu / n * 1000 if n and not math.isnan(cpu) else float("nan")


def run_claimers(
    mode: str, a_db: str, b_db: str, args: argparse.Namespace, workdir: Path, label: str
) -> tuple[float, float, list[dict[str, Any]]]:
    """Start the claimers (half on A, half on B), release them together, wait for all.
    The release time, the end of the last claimer's last cycle, and their results."""
    claimers = []
    for i in range(args.claimers):
        on_a = i < (args.claimers + 1) // 2
        own, other = (a_db, b_db) if on_a else (b_db, a_db)
        name = f"{label}-{'A' if on_a else 'B'}{i}"
        out, log = workdir / f"{name}.json", workdir / f"{name}.log"
        argv = [
            sys.executable, str(Path(__file__).resolve()),
            "--worker", mode, "--worker-own", own, "--worker-other", other,
            "--worker-name", name, "--worker-out", str(out),
            "--work", str(args.work), "--idle", str(args.idle),
            *(["--source", args.source] if args.source else []),
        ]  # fmt: skip
        claimers.append((argv, out, log))
    released, results = race(claimers, label)
    return released, max(r["last_cycle"] for r in results), results


def one_run(mode: str, rep: int, args: argparse.Namespace, workdir: Path) -> Run:
    label = f"{mode[0]}{rep}"
    say(f"\n  run {rep + 1}, {mode}:")
    here = workdir / label
    with pouchdb_server(here / "a") as a, pouchdb_server(here / "b") as b:
        a_db, b_db = prepare(a, b, args.tokens, "tok-")
        cpu_before = {"A": cpu_seconds(a.proc.pid), "B": cpu_seconds(b.proc.pid)}
        released, last, results = run_claimers(mode, a_db, b_db, args, here, label)
        server_cpu = {
            "A": cpu_seconds(a.proc.pid) - cpu_before["A"],
            "B": cpu_seconds(b.proc.pid) - cpu_before["B"],
        }
        docs_a, docs_b, settle_s = settled_docs(a_db, b_db)
    return analyse(mode, rep, args, last - released, results, docs_a, docs_b, settle_s,
                   server_cpu)  # fmt: skip


def analyse(
    mode: str,
    rep: int,
    args: argparse.Namespace,
    seconds: float,
    results: list[dict[str, Any]],
    docs_a: dict[str, Any],
    docs_b: dict[str, Any],
    settle_s: float,
    server_cpu: dict[str, float],
) -> Run:
    attempts: dict[str, set[str]] = {}
    publications: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    claims = lost = lost_finish = 0
    confirm_s: list[float] = []
    for r in results:
        for c in r["cycles"]:
            claims += 1
            if "confirm_s" in c:
                confirm_s.append(c["confirm_s"])
            attempts.setdefault(c["token"], set()).add(str(c["attempt"]))
            if c["published"] is not None:
                publications.setdefault(c["token"], []).append((r["name"], c))
            if c["lost"]:
                lost += 1
                lost_finish += c["lost"] == "finish"
    sent: Counter[str] = Counter()
    for r in results:
        sent.update(r["sent"])
        sent.update({f"replica: {k}": v for k, v in r["replica_sent"].items()})
    ids = [f"tok-{i:07d}" for i in range(args.tokens)]
    not_done, conflicts, other_conflicts = {}, {}, {}
    for server, docs in (("A", docs_a), ("B", docs_b)):
        not_done[server] = sum(1 for i in ids if (docs.get(i) or {}).get("status") != "done")
        conflicts[server] = sum(1 for i in ids if (docs.get(i) or {}).get("_conflicts"))
        other_conflicts[server] = sum(
            1 for i, d in docs.items() if d.get("_conflicts") and not i.startswith("tok-")
        )
    twice = sorted(t for t, p in publications.items() if len(p) > 1)
    never = [i for i in ids if i not in publications]
    run = Run(
        mode=mode,
        rep=rep,
        tokens=args.tokens,
        claimers=args.claimers,
        seconds=seconds,
        claims=claims,
        published=sum(len(p) for p in publications.values()),
        published_tokens=len(publications),
        wasted=sum(1 for a in attempts.values() if len(a) > 1),
        published_twice=len(twice),
        never_published=len(never),
        lost=lost,
        lost_finish=lost_finish,
        lost_in_claim=sum(r["lost_in_claim"] for r in results),
        confirm_s=confirm_s,
        resolved=sum(r["resolved"] + r["replica_resolved"] for r in results),
        not_done=not_done,
        conflicts=conflicts,
        other_conflicts=other_conflicts,
        settle_s=settle_s,
        client_cpu=sum(r["cpu"] for r in results),
        server_cpu=server_cpu,
        sent=sent,
        errors=[f"{r['name']}: {r['error']}" for r in results if r["error"]],
    )
    if mode == "checked":  # what each claimer saw of a token that went wrong
        seen: dict[str, list[str]] = {}
        for r in results:
            for c in r["cycles"]:
                seen.setdefault(c["token"], []).append(
                    f"{r['name']} attempt {c['attempt']} claimed {c['claimed']:.3f}, published "
                    f"{'no' if c['published'] is None else format(c['published'], '.3f')}, "
                    f"lost {c['lost'] or 'no'} {c.get('why', '')}".rstrip()
                )
        wrong = set(twice) | set(never)
        wrong |= {i for i, d in docs_a.items() if d.get("_conflicts") or d.get("status") != "done"}
        wrong |= {i for i, d in docs_b.items() if d.get("_conflicts") or d.get("status") != "done"}
        wrong &= set(ids)
        for token_id in sorted(wrong):
            doc_a, doc_b = docs_a.get(token_id) or {}, docs_b.get(token_id) or {}
            run.anomalies.append(
                f"{token_id}: published {len(publications.get(token_id, []))}x; "
                f"A {doc_a.get('status')} {doc_a.get('_rev')} conflicts "
                f"{doc_a.get('_conflicts', [])}; B {doc_b.get('status')} {doc_b.get('_rev')} "
                f"conflicts {doc_b.get('_conflicts', [])}; "
                + " | ".join(seen.get(token_id, ["never claimed"]))
            )
    show(run)
    return run


def quantiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return (
        f"{len(ordered)} calls, median {statistics.median(ordered) * 1000:.0f} ms, p90 "
        f"{at(0.9):.0f} ms, p99 {at(0.99):.0f} ms, max {ordered[-1] * 1000:.0f} ms"
    )


def show(run: Run) -> None:
    say(
        f"    {run.claims} claims, {run.published} publications of {run.published_tokens} "
        f"tokens in {run.seconds:.2f} s = {run.per_s:,.0f} tokens/s; run by more than one "
        f"claimer: {run.wasted}; published twice: {run.published_twice}; never published: "
        f"{run.never_published}; LostClaim {run.lost} ({run.lost_finish} at finish); claims the "
        f"pool dropped inside claim() {run.lost_in_claim}; losing revisions deleted "
        f"{run.resolved}"
    )
    if run.confirm_s:
        say(f"    confirm: {quantiles(run.confirm_s)}")
    say(
        f"    after replication settled ({run.settle_s:.1f} s): not done A {run.not_done['A']}, "
        f"B {run.not_done['B']}; documents with _conflicts A {run.conflicts['A']}, "
        f"B {run.conflicts['B']} (other documents: A {run.other_conflicts['A']}, B "
        f"{run.other_conflicts['B']}); CPU ms per token: claimers "
        f"{run.cpu_ms(run.client_cpu):.1f}, "
        f"server A {run.cpu_ms(run.server_cpu['A']):.1f}, B {run.cpu_ms(run.server_cpu['B']):.1f}"
        f"; load {os.getloadavg()[0]:.2f}"
    )
    if run.published_tokens:
        per = ", ".join(f"{k} {v / run.published_tokens:.2f}" for k, v in sorted(run.sent.items()))
        say(f"    requests per published token ({run.requests_per_token:.2f}): {per}")
    for error in run.errors:
        say(f"    ERROR {error}")
    for anomaly in run.anomalies:
        say(f"    ANOMALY {anomaly}")


# --- report -------------------------------------------------------------------------------------


def report(runs: list[Run], args: argparse.Namespace) -> None:
    say("\n== summary ==")
    say(
        f"\n{args.tokens:,} tokens, {args.claimers} claimers (half on each server), work "
        f"{args.work:g} s; median of {args.repeat} run(s), counts per run:\n"
    )
    say(
        "| mode | tokens/s | tokens run twice (wasted) | published twice | never published "
        "| lost claims | requests per token | conflicts left (A / B) | losing revisions deleted "
        "| CPU ms per token: claimers / server A / server B |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    medians: dict[str, float] = {}
    for mode in args.modes:
        group = [r for r in runs if r.mode == mode]
        if not group:
            continue

        def each(value: Callable[[Run], object], runs_: list[Run] = group) -> str:
            return " / ".join(str(value(r)) for r in runs_)

        def cpu(value: Callable[[Run], float], runs_: list[Run] = group) -> str:
            tokens = sum(r.published_tokens for r in runs_)
            return f"{sum(value(r) for r in runs_) / tokens * 1000:.1f}" if tokens else "n/a"

        medians[mode] = statistics.median(r.requests_per_token for r in group)
        say(
            f"| {mode} | {statistics.median(r.per_s for r in group):,.0f} "
            f"({each(lambda r: f'{r.per_s:.0f}')}) | {each(lambda r: r.wasted)} | "
            f"{each(lambda r: r.published_twice)} | {each(lambda r: r.never_published)} | "
            f"{each(lambda r: r.lost)} | {medians[mode]:.2f} | "
            f"{each(lambda r: '/'.join(str(r.conflicts[s]) for s in 'AB'))} | "
            f"{each(lambda r: r.resolved)} | {cpu(lambda r: r.client_cpu)} / "
            f"{cpu(lambda r: r.server_cpu['A'])} / {cpu(lambda r: r.server_cpu['B'])} |"
        )
    for mode in args.modes:
        group = [r for r in runs if r.mode == mode]
        if not group:
            continue
        total: Counter[str] = Counter()
        for r in group:
            total.update(r.sent)
        tokens = sum(r.published_tokens for r in group)
        if tokens:
            per = ", ".join(f"{k} {v / tokens:.2f}" for k, v in sorted(total.items()))
            say(f"\n{mode}, requests per published token (all runs): {per}")
        say(
            f"{mode}, claims the pool dropped inside claim() (its check after the write): "
            f"{' / '.join(str(r.lost_in_claim) for r in group)}"
        )
        if any(r.confirm_s for r in group):
            say(f"{mode}, pool.confirm: {quantiles([s for r in group for s in r.confirm_s])}")
    if "checked" in medians and "unchecked" in medians:
        say(
            f"\nextra requests per published token, checked minus unchecked (medians): "
            f"{medians['checked'] - medians['unchecked']:+.2f}"
        )
    bad = [r for r in runs if r.mode == "checked" and r.anomalies]
    if bad:
        say(f"\nCHECKED MODE ANOMALIES in {len(bad)} run(s): see the ANOMALY lines above")


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per run")
    parser.add_argument("--claimers", type=int, default=16, help="claimer processes, half a server")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (alternating)")
    parser.add_argument("--work", type=float, default=0.0, help="seconds of work per token")
    parser.add_argument("--idle", type=float, default=3.0, help="a claimer's empty seconds")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 tokens, 1 run")
    parser.add_argument("--commit", help="run the gridlrt package of this commit (git archive)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--source", help=argparse.SUPPRESS)  # where gridlrt is imported from
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-own", help=argparse.SUPPRESS)
    parser.add_argument("--worker-other", help=argparse.SUPPRESS)
    parser.add_argument("--worker-name", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.repeat = 200, 1
    args.modes = [m.strip() for m in str(args.modes).split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if args.claimers < 2:
        parser.error("--claimers: at least 2 (one on each server)")
    return args


def git(*argv: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout.strip()


def code(args: argparse.Namespace, workdir: Path) -> str:
    """Make the gridlrt package to run importable (``--commit``: extract it); what it is."""
    if args.commit:
        commit = git("rev-parse", "--verify", f"{args.commit}^{{commit}}")
        source = workdir / f"gridlrt-{commit[:10]}"
        source.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit, "gridlrt"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        args.source = str(source)
        sys.path.insert(0, args.source)
        import gridlrt

        if not Path(gridlrt.__file__).resolve().is_relative_to(source):
            raise BenchError(f"gridlrt imported from {gridlrt.__file__}, not {source}")
        subject = git("log", "-1", "--format=%h, committed %cd", "--date=iso", commit)
        return f"gridlrt code: commit {subject} (git archive into {source})"
    dirty = git("status", "--porcelain", "--", "gridlrt")
    changed = f"uncommitted changes: {' '.join(dirty.split())}" if dirty else "no local changes"
    return f"gridlrt code: the working tree at {git('rev-parse', '--short', 'HEAD')}, {changed}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return claimer(args)

    def body(workdir: Path) -> None:
        runs: list[Run] = []
        say(code(args, workdir))
        with pouchdb_server(workdir / "probe") as probe:  # the version, and a first start
            say(f"pouchdb-server {probe.version}, two per run, fresh (data in {workdir})")
        say("\n== runs (modes alternate, each on two fresh servers) ==")
        for rep in range(args.repeat):
            for mode in args.modes:
                runs.append(one_run(mode, rep, args, workdir))
        report(runs, args)

    return bench_main(
        "# claims on a replicated pool (bench/cluster_bench.py, issue 19)",
        f"sizes: {args.tokens:,} tokens per run, {args.claimers} claimers, repeat "
        f"{args.repeat}, work {args.work:g} s, modes {args.modes}",
        "gridlrt-cluster-bench-",
        args.keep,
        body,
    )


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
