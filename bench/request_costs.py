"""Server CPU per CouchDB request of a pilot (issue 18, item 4): the input of scale_model.py.

Starts a pouchdb-server (as ``bench/pool_bench.py`` does), fills one gridlrt pool and one
PiCaS database with ``--tokens`` tokens, builds their views, and measures the CPU seconds the
server process spends (``/proc/PID/stat``, all its threads) on blocks of identical requests,
each block ``--repeat`` times (median reported; view reads in blocks of ``--reads``):

* gridlrt: GET of a claimed token, PUT of it (as a heartbeat writes it), a PUT with a stale
  revision (409), an attachment PUT (a 4 KiB log tail), the unsettled rows of ``gridlrt_next``, the
  status counts an idle pilot reads (``gridlrt_status``, ``group_level=1``), a one-key
  ``POST _all_docs`` and a one-document ``POST _bulk_docs`` (a finished token's catalogue
  record), and the claim view (the todo rows of ``gridlrt_next``, ``limit=64``, ids only);
* PiCaS: its ``todo`` view (``limit=100``), GET and PUT of a PiCaS token;
* view indexing: pouchdb-server brings a view's index up to date when the view is read, so a
  written document costs each view that is read afterwards once. Per view: (a read after
  ``--writes`` documents were written - a clean read) / ``--writes``;
* deleted rows: a taken token's row leaves the todo views, but pouchdb-server's index
  (leveldb) keeps a tombstone that every later read from the start of the view steps over, so
  the claim view costs more with every token taken. Reads after ``--skip`` tokens were taken
  in ``--skip-steps`` bulk steps; the cost with none taken and the cost per taken token are
  the least-squares line through them (``view_claim`` + ``view_skip``, ``picas_view_todo`` +
  ``picas_view_skip``);
* two whole cycles as checks of the sum: gridlrt's claim -> finish (``CouchDBPool``, one
  client) and PiCaS's claim -> done as its client sends it (view, random row of 100, GET,
  PUT lock, PUT done), per cycle.

Prints the machine, a table and (``--json FILE``) the costs in milliseconds under the names
``bench/scale_model.py`` reads (``--costs FILE``). pouchdb-server is one node process (its
leveldb works on helper threads); a real CouchDB node (Erlang, B-tree indexes, several cores)
differs and is not measured here.

    .venv/bin/python bench/request_costs.py [--tokens 20000] [--writes 1000] [--requests 500]
        [--repeat 3] [--reads 40] [--skip 8000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from pool_bench import (
    BATCH,
    BenchError,
    cpu_seconds,
    load_average,
    machine,
    make_tokens,
    pouchdb_server,
    say,
    stop_all,
)

from gridlrt.tokens import PilotInfo
from gridlrt.tokens.couchdb import VIEW, CouchDBPool

LOG_TAIL = ("x" * 79 + "\n") * 52  # ~4 KiB, what a pilot attaches as log_tail.txt


def per_request_ms(pid: int, action: Callable[[int], object], n: int, repeat: int) -> float:
    """Median over ``repeat`` blocks of the server's CPU ms per call of ``action(i)``."""
    blocks = []
    for _ in range(repeat):
        before = cpu_seconds(pid)
        for i in range(n):
            action(i)
        blocks.append((cpu_seconds(pid) - before) / n * 1000)
    return statistics.median(blocks)


def once_ms(pid: int, action: Callable[[], object]) -> float:
    before = cpu_seconds(pid)
    action()
    return (cpu_seconds(pid) - before) * 1000


def index_ms(pid: int, write: Callable[[], None], read: Callable[[], object], writes: int,
             repeat: int, reads: int) -> tuple[float, float]:  # fmt: skip
    """(clean read ms, indexing ms per written document) of one view, medians of ``repeat``:
    ``reads`` reads of the current index, then one after ``write()`` wrote ``writes``
    distinct documents."""
    clean, per_doc = [], []
    for _ in range(repeat):
        read()  # up to date
        clean_read = per_request_ms(pid, lambda _i: read(), reads, 1)
        write()
        dirty = once_ms(pid, read)
        clean.append(clean_read)
        per_doc.append(max(0.0, dirty - clean_read) / writes)
    return statistics.median(clean), statistics.median(per_doc)


class Database:
    """One database on the server, spoken to with plain requests."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self.session, self.url = session, url

    def view(self, name: str, **params: Any) -> Callable[[], requests.Response]:
        query = {k: json.dumps(v) if k.endswith("key") else v for k, v in params.items()}

        def read() -> requests.Response:
            got = self.session.get(f"{self.url}/{VIEW}/{name}", params=query, timeout=3600)
            got.raise_for_status()
            return got

        return read

    def take(self, ids: list[str], change: dict[str, Any]) -> None:
        """Write ``change`` into these documents, in bulk (tokens taken by other pilots)."""
        for i in range(0, len(ids), 1000):
            rows = self.session.post(
                f"{self.url}/_all_docs",
                params={"include_docs": "true"},
                json={"keys": ids[i : i + 1000]},
                timeout=600,
            ).json()["rows"]
            docs = [{**row["doc"], **change} for row in rows]
            got = self.session.post(f"{self.url}/_bulk_docs", json={"docs": docs}, timeout=600)
            got.raise_for_status()


def skip_ms(pid: int, db: Database, read: Callable[[], object], view: str, taken: int,
            change: dict[str, Any], reads: int, skip: int, steps: int
            ) -> tuple[float, float, list[tuple[int, float]]]:  # fmt: skip
    """(read ms with no token taken, ms per taken token, the reads measured) of a view whose
    first rows are the next todo tokens: pouchdb-server's index (leveldb) keeps a deleted row
    as a tombstone that every read from the start of the range steps over. Reads at ``taken``
    tokens taken, then after each of ``steps`` bulk takes of the next todo tokens (``skip`` in
    all); the slope is the least-squares line through them."""
    series: list[tuple[int, float]] = []
    for step in range(steps + 1):
        if step:
            chunk = skip // steps
            db.take([r["id"] for r in db.view(view, limit=chunk)().json()["rows"]], change)
            taken += chunk
        read()  # index what changed, untimed
        series.append((taken, per_request_ms(pid, lambda _i: read(), reads, 1)))
    xs, ys = [x for x, _ in series], [y for _, y in series]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in series) / sum((x - mean_x) ** 2 for x in xs)
    return max(0.0, mean_y - slope * mean_x), max(0.0, slope), series


def measure(server_url: str, pid: int, args: argparse.Namespace) -> dict[str, float]:
    costs: dict[str, float] = {}
    session = requests.Session()
    session.headers["Accept"] = "application/json"
    n, writes, repeat, reads = args.requests, args.writes, args.repeat, args.reads

    # --- gridlrt pool ----------------------------------------------------------------------
    url = f"{server_url}/gridlrt_costs"
    db = Database(session, url)
    pool = CouchDBPool(url)
    pool.init()
    pool.create(make_tokens(args.tokens, "cost-"))
    say(f"  {args.tokens:,} gridlrt tokens created; building views ...")
    started = time.perf_counter()
    claim_view = db.view("gridlrt_next", startkey=[0], endkey=[0, {}], limit=64)
    unsettled_view = db.view("gridlrt_next", startkey=[1], endkey=[1, {}])
    status_view = db.view("gridlrt_status", group_level=1)
    for read in (claim_view, unsettled_view, status_view):
        read()
    say(f"  views built in {time.perf_counter() - started:.1f} s")
    who = PilotInfo(pilot="costs", host="bench", heartbeat_interval=30.0)
    ids = []
    for _ in range(writes):
        token = pool.claim(who)
        assert token is not None
        ids.append(token.id)

    def heartbeat_all() -> None:
        for token_id in ids:
            pool.heartbeat(token_id, who.pilot, {"load": 1.0})

    claim_clean, costs["index_claim"] = index_ms(
        pid, heartbeat_all, claim_view, writes, repeat, reads
    )
    costs["view_unsettled"], costs["index_unsettled"] = index_ms(
        pid, heartbeat_all, unsettled_view, writes, repeat, reads
    )
    costs["status_counts"], costs["index_status"] = index_ms(
        pid, heartbeat_all, status_view, writes, repeat, max(3, reads // 10)
    )
    claim_view()
    costs["get"] = per_request_ms(
        pid, lambda i: session.get(f"{url}/{ids[i % len(ids)]}", timeout=60), n, repeat
    )
    docs = {i: session.get(f"{url}/{i}", timeout=60).json() for i in ids[: min(n, len(ids))]}
    keys = list(docs)

    def put(i: int) -> None:  # the token as a pilot writes it, a heartbeat later
        doc = docs[keys[i % len(keys)]]
        doc["heartbeat"] = time.time()
        got = session.put(f"{url}/{doc['_id']}", json=doc, timeout=60)
        got.raise_for_status()
        doc["_rev"] = got.json()["rev"]

    costs["put"] = per_request_ms(pid, put, n, repeat)
    stale = {i: {**d, "_rev": "1-" + "0" * 32} for i, d in docs.items()}
    costs["put_conflict"] = per_request_ms(
        pid,
        lambda i: session.put(
            f"{url}/{keys[i % len(keys)]}", json=stale[keys[i % len(keys)]], timeout=60
        ),
        n,
        repeat,
    )
    revs = {i: str(d["_rev"]) for i, d in docs.items()}

    def attach(i: int) -> None:
        token_id = keys[i % len(keys)]
        got = session.put(
            f"{url}/{token_id}/log_tail.txt",
            params={"rev": revs[token_id]},
            data=LOG_TAIL.encode(),
            headers={"Content-Type": "text/plain"},
            timeout=60,
        )
        got.raise_for_status()
        revs[token_id] = got.json()["rev"]

    costs["attach"] = per_request_ms(pid, attach, n, repeat)
    record = {
        "type": "gridlrt_dataset",
        "url": "srm://srm.grid.sara.nl/pnfs/grid.sara.nl/data/lofar/ops/L123456_SB000_uv.MS.tar",
        "token": "L123456_SB000",
        "size": 123456789,
        "checksum": "adler32:1a2b3c4d",
        "frequency": 120.1e6,
        "channels": 16,
        "time_range": [4.9e9, 4.9e9 + 28800],
        "stations": 46,
        "flagged": 0.05,
        "recorded": time.time(),
        "gridlrt_keys": ["obs:L123456", "step:avg", "pipeline:p/target"],
    }
    costs["all_docs_keys"] = per_request_ms(
        pid,
        lambda i: session.post(
            f"{url}/_all_docs", json={"keys": [f"gridlrt:dataset:r{i}"]}, timeout=60
        ),
        n,
        repeat,
    )
    counter = iter(range(10**9))
    costs["bulk_docs_1"] = per_request_ms(
        pid,
        lambda i: session.post(
            f"{url}/_bulk_docs",
            json={"docs": [{**record, "_id": f"gridlrt:dataset:r{next(counter)}"}]},
            timeout=60,
        ),
        n,
        repeat,
    )
    claim_view()
    unsettled_view()

    # check: whole claim -> finish cycles of one gridlrt client (views current at the start)
    before = cpu_seconds(pid)
    for _ in range(n):
        token = pool.claim(who)
        assert token is not None
        pool.finish(token.id, who.pilot)
    costs["check_gridlrt_cycle"] = (cpu_seconds(pid) - before) / n * 1000
    pool.close()
    running = {"lock": time.time(), "status": "running", "heartbeat": time.time()}
    costs["view_claim"], costs["view_skip"], series = skip_ms(
        pid, db, claim_view, "gridlrt_next", writes + n, running, reads, args.skip,
        args.skip_steps,
    )  # fmt: skip
    say("  claim view (limit=64) by tokens taken: "
        + ", ".join(f"{t:,}: {ms:.1f} ms" for t, ms in series))  # fmt: skip
    costs["check_claim_view_clean"] = claim_clean
    # a read past every row (an empty claim view's price without tombstones to step over)
    empty = db.view("gridlrt_next", limit=64, startkey=[2])
    costs["view_claim_empty"] = per_request_ms(pid, lambda _i: empty(), reads, repeat)

    # --- PiCaS database ----------------------------------------------------------------------
    purl = f"{server_url}/picas_costs"
    pdb = Database(session, purl)
    CouchDBPool(purl).init()
    for start in range(0, args.tokens, BATCH):
        batch = [
            {"_id": f"picas-{i:07d}", "type": "token", "lock": 0, "done": 0, "hostname": "",
             "scrub_count": 0,
             "input": f"srm://srm.grid.sara.nl/pnfs/grid.sara.nl/data/lofar/L{i:07d}_SB000.MS"}
            for i in range(start, min(args.tokens, start + BATCH))
        ]  # fmt: skip
        session.post(f"{purl}/_bulk_docs", json={"docs": batch}, timeout=600).raise_for_status()
    picas_view = pdb.view("todo", limit=100)
    picas_view()
    locked: dict[str, dict[str, Any]] = {}

    def picas_lock(i: int) -> None:  # GET + PUT lock of the next todo token, as PiCaS does
        doc = session.get(f"{purl}/picas-{i:07d}", timeout=60).json()
        doc.update(lock=int(time.time()), hostname="bench")
        got = session.put(f"{purl}/{doc['_id']}", json=doc, timeout=60)
        got.raise_for_status()
        doc["_rev"] = got.json()["rev"]
        locked[doc["_id"]] = doc

    offset = iter(range(10**9))

    def lock_block() -> None:
        for _ in range(writes):
            picas_lock(next(offset))

    _, costs["picas_index_todo"] = index_ms(pid, lock_block, picas_view, writes, repeat, reads)
    picas_view()
    pids = list(locked)
    costs["picas_get"] = per_request_ms(
        pid, lambda i: session.get(f"{purl}/{pids[i % len(pids)]}", timeout=60), n, repeat
    )

    def picas_put(i: int) -> None:
        doc = locked[pids[i % len(pids)]]
        got = session.put(f"{purl}/{doc['_id']}", json=doc, timeout=60)
        got.raise_for_status()
        doc["_rev"] = got.json()["rev"]

    costs["picas_put"] = per_request_ms(pid, picas_put, n, repeat)
    picas_view()

    # check: whole PiCaS cycles (view, random row, GET, PUT lock, PUT done)
    rng = random.Random(1)
    before = cpu_seconds(pid)
    for _ in range(n):
        rows = picas_view().json()["rows"]
        doc = session.get(f"{purl}/{rng.choice(rows)['id']}", timeout=60).json()
        doc.update(lock=int(time.time()), hostname="bench")
        doc["_rev"] = session.put(f"{purl}/{doc['_id']}", json=doc, timeout=60).json()["rev"]
        doc.update(done=int(time.time()), exit_code=0)
        session.put(f"{purl}/{doc['_id']}", json=doc, timeout=60).raise_for_status()
    costs["check_picas_cycle"] = (cpu_seconds(pid) - before) / n * 1000
    costs["picas_view_todo"], costs["picas_view_skip"], series = skip_ms(
        pid, pdb, picas_view, "todo", len(locked) + n, {"lock": int(time.time())}, reads,
        args.skip, args.skip_steps,
    )  # fmt: skip
    say("  PiCaS todo view (limit=100) by tokens taken: "
        + ", ".join(f"{t:,}: {ms:.1f} ms" for t, ms in series))  # fmt: skip
    session.close()
    return costs


DESCRIPTIONS = {
    "get": "gridlrt: GET a claimed token",
    "put": "gridlrt: PUT a claimed token (heartbeat, status, claim, finish)",
    "put_conflict": "gridlrt: PUT with a stale revision (409)",
    "attach": "gridlrt: PUT a 4 KiB attachment (log tail)",
    "view_claim": "gridlrt: claim view, limit=64, index current, no token taken yet",
    "view_skip": "gridlrt: claim view, more per token taken (a tombstone to step over)",
    "view_claim_empty": "gridlrt: claim view read past its last row (no todo, no tombstone)",
    "check_claim_view_clean": "check: claim view, limit=64, with the first tokens taken",
    "view_unsettled": "gridlrt: unsettled view (settle_pending), index current",
    "status_counts": "gridlrt: status counts, group_level=1 (idle pilot), index current",
    "all_docs_keys": "gridlrt: POST _all_docs, one key (catalogue)",
    "bulk_docs_1": "gridlrt: POST _bulk_docs, one record (catalogue)",
    "index_claim": "indexing per written document: claim view",
    "index_unsettled": "indexing per written document: unsettled view",
    "index_status": "indexing per written document: status view",
    "picas_view_todo": "PiCaS: todo view, limit=100, index current, no token taken yet",
    "picas_view_skip": "PiCaS: todo view, more per token taken (a tombstone to step over)",
    "picas_index_todo": "indexing per written document: PiCaS todo view",
    "picas_get": "PiCaS: GET a token",
    "picas_put": "PiCaS: PUT a token (lock, done)",
    "check_gridlrt_cycle": "check: gridlrt claim -> finish, one client, per cycle",
    "check_picas_cycle": "check: PiCaS view + GET + PUT lock + PUT done, per cycle",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens in each database")
    parser.add_argument("--writes", type=int, default=1000, help="documents written per block")
    parser.add_argument("--requests", type=int, default=500, help="requests per block")
    parser.add_argument("--repeat", type=int, default=3, help="blocks per figure (median)")
    parser.add_argument("--reads", type=int, default=40, help="view reads per block")
    parser.add_argument("--skip", type=int, default=8000, help="tokens taken for view_skip")
    parser.add_argument("--skip-steps", type=int, default=4, help="reads along the way")
    parser.add_argument("--json", type=Path, help="write the costs (ms) to this file")
    args = parser.parse_args(argv)
    if args.tokens < (args.repeat + 1) * args.writes + 2 * args.requests + args.skip + 200:
        parser.error(
            "--tokens must be at least (--repeat + 1) x --writes + 2 x --requests + --skip + 200"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say("# server CPU per CouchDB request (bench/request_costs.py)")
    say("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    info = machine()
    for key, text in info.items():
        say(f"{key}: {text}")
    workdir = Path(tempfile.mkdtemp(prefix="gridlrt-request-costs-"))
    try:
        with pouchdb_server(workdir / "couchdb") as server:
            say(f"pouchdb-server {server.version} on {server.url}")
            costs = measure(server.url, server.proc.pid, args)
    except BenchError as exc:
        say(f"bench failed: {exc}")
        return 1
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"\n{args.tokens:,} tokens per database; {args.requests} requests or {args.writes} "
        f"written documents per block, median of {args.repeat} blocks\n")  # fmt: skip
    say("| request | server CPU ms |")
    say("|---|---:|")
    for name, ms in costs.items():
        say(f"| {DESCRIPTIONS.get(name, name)} (`{name}`) | {ms:.4f} |" if ms < 0.1 else
            f"| {DESCRIPTIONS.get(name, name)} (`{name}`) | {ms:.2f} |")  # fmt: skip
    say(f"\nload average at the end: {load_average()}")
    if args.json:
        payload: dict[str, Any] = {
            "machine": info,
            "server": f"pouchdb-server {server.version}",
            "tokens": args.tokens,
            "costs_ms": {k: round(v, 5) for k, v in costs.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        say(f"costs written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
