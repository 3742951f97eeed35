"""What a dashboard page costs on a big pool (issue 17): the embedded SQLite pool and CouchDB
(a pouchdb-server this bench starts on a free loopback port), each holding ``--tokens``
tokens of one step (10 % done with an attempt, 1 % in error, 20 running, the rest todo).

For every page: the first request (cold: the monitor lists the done and error tokens), then
the median of ``--repeat`` requests with no cache (``ttl=0``: what a page costs every time)
and with the dashboard's default cache (``ttl=2 s``; listings of all tokens 10 s: what a
browser refreshing every 3 s costs on average within the ttl). Prints markdown for
bench/RESULTS.md.

    .venv/bin/python bench/dashboard_bench.py                     # 100,000 tokens, both pools
    .venv/bin/python bench/dashboard_bench.py --tokens 10000 --backends sqlite
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pool_bench import pouchdb_server  # noqa: E402
from worker_bench import _cpu_model, _os_name, _ram  # noqa: E402

from gridlrt.tokens import Token, TokenPool, new_token  # noqa: E402
from gridlrt.tokens import transitions as tr  # noqa: E402
from tests.token_factories import NODE, who  # noqa: E402

PAGES = [
    "/",
    "/fragment/overview",
    "/api/status",
    "/pilots",
    "/tokens?status=error",
    "/tokens?status=running",
    "/tokens?subband=7",
    "/token/avg_L1_SB000042",
    "/plots",
]


def tokens(n: int) -> Iterator[Token]:
    now = time.time()
    done, failed, running = n // 10, n // 100, 20
    for i in range(n):
        token = new_token(f"avg_L1_SB{i:06d}", inputs=f"file:///lta/L1_SB{i:06d}_uv.MS.tar",
                          step="avg")  # fmt: skip
        if i < done + failed + running:
            pilot = who(i % 50)
            started = now - 3600 + 3000 * i / n
            token = tr.claim(token, pilot, started)
            if i < done:
                phases = {"download": 5.0, "run": 20.0, "upload": 5.0}
                token = tr.finish(token, pilot.pilot, started + 30, timings=phases)
            elif i < done + failed:
                token = tr.fail(token, pilot.pilot, started + 10, message="DP3 exited 1",
                                log_tail="line\n" * 20)  # fmt: skip
            else:
                token = tr.heartbeat(token, pilot.pilot, now - 5, NODE)
        yield token


def measure(pool: TokenPool, backend: str, repeat: int) -> list[tuple[str, float, float, float]]:
    warnings.filterwarnings("ignore")
    from starlette.testclient import TestClient

    from gridlrt.dashboard.app import create_app

    uncached = TestClient(create_app(pool, ttl=0.0, slow_ttl=0.0))
    cached = TestClient(create_app(pool))
    rows = []
    for page in PAGES:
        started = time.perf_counter()
        answer = uncached.get(page)
        first = time.perf_counter() - started
        assert answer.status_code == 200, (page, answer.text[:300])
        costs = []
        for _ in range(repeat):
            started = time.perf_counter()
            uncached.get(page)
            costs.append(time.perf_counter() - started)
        warm = []
        cached.get(page)
        for _ in range(repeat):
            started = time.perf_counter()
            cached.get(page)
            warm.append(time.perf_counter() - started)
        rows.append((page, first, statistics.median(costs), statistics.median(warm)))
        print(f"  {backend} {page}: first {first:.3f} s, uncached {statistics.median(costs):.3f}"
              f" s, cached {statistics.median(warm):.4f} s", file=sys.stderr)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,couchdb")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: {_cpu_model()}, "
        f"{_ram()}, {_os_name()}, Python {platform.python_version()}; {args.tokens:,} tokens.\n"
    )
    results: dict[str, list[tuple[str, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as tmp:
        work = Path(tmp)
        for backend in args.backends.split(","):
            started = time.perf_counter()
            if backend == "sqlite":
                from gridlrt.tokens.sqlite import SQLitePool

                pool: TokenPool = SQLitePool(work / "pool.sqlite")
                pool.init()
                pool.create(tokens(args.tokens))
                pool.overview()
                print(f"  sqlite filled in {time.perf_counter() - started:.1f} s", file=sys.stderr)
                results[backend] = measure(pool, backend, args.repeat)
            else:
                with pouchdb_server(work / "couchdb") as server:
                    from gridlrt.tokens.couchdb import CouchDBPool

                    pool = CouchDBPool(f"{server.url}/dashboard_bench")
                    pool.init()
                    pool.create(tokens(args.tokens))
                    pool.overview()  # builds the views: not the dashboard's cost
                    pool.stage_counts()
                    list(pool.tokens(None, "nothing"))
                    print(f"  couchdb filled in {time.perf_counter() - started:.1f} s",
                          file=sys.stderr)  # fmt: skip
                    results[backend] = measure(pool, backend, args.repeat)
    backends = list(results)
    header = " | ".join(f"{b} first | {b} uncached | {b} cached" for b in backends)
    print(f"| page | {header} |")
    print("|---|" + "---:|---:|---:|" * len(backends))
    for i, (page, *_) in enumerate(results[backends[0]]):
        cells = " | ".join(
            f"{results[b][i][1]:.2f} s | {results[b][i][2]:.2f} s | {1e3 * results[b][i][3]:.1f} ms"
            for b in backends
        )
        print(f"| `{page}` | {cells} |")


if __name__ == "__main__":
    main()
