"""Fault injection at a larger size than the suite's: SIGKILLs at random moments and a pool
outage, then count what was done once, twice, or lost, and what was left behind.

    .venv/bin/python bench/chaos.py [--backend sqlite|couchdb|both] [--tokens 200]
        [--pilots 6] [--kills 60] [--outage 30] [--seed 1]
        [--pipeline [--group 4] [--aimed-kills 20]] [--replicas [--lag 0.3]]
        [--stale-after 4]

With --pipeline the tokens are a pipeline: --tokens scatter tokens, a gather token over each
--group of them and one final token; --aimed-kills more pilots are SIGKILLed the moment their
parent token is done, and the report adds children stranded, promoted twice and with wrong
gathered inputs.

With --replicas (CouchDB only) the pool is two pouchdb-servers replicating both ways (each
replication request to the first held --lag seconds), pilots alternate between them, the
outage stops the second, and the report adds copies that differ, conflicts left, outputs of a
losing attempt, losing revisions that were done, and the wasted attempts (claims that lost).
recover runs on the first copy, which sees the heartbeats of the second copy's pilots only as
fast as the replication brings them; it asks the second copy before it takes a token (see
bench/RESULTS.md, "Chaos on a replicated pool").

Prints the machine, the figures per backend, and exits 1 if any count that must be zero is
not (see tests/chaos.py for the harness, shared with tests/integration/test_chaos.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos import ChaosConfig, run_chaos


def machine() -> str:
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs{mem}, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "couchdb", "both"], default="both")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--pilots", type=int, default=6)
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pipeline", action="store_true", help="scatter -> gather by --group -> one final token"
    )
    parser.add_argument("--group", type=int, default=4, help="parents per gather token")
    parser.add_argument(
        "--aimed-kills",
        type=int,
        default=None,
        help="kills the moment a parent is done (default: a third of --kills with --pipeline)",
    )
    parser.add_argument(
        "--replicas", action="store_true", help="two CouchDB copies replicating both ways"
    )
    parser.add_argument(
        "--lag", type=float, default=0.3, help="seconds each replication request is held"
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=None,
        help="the harness's recover --stale-after (default 4 s)",
    )
    args = parser.parse_args()
    if args.replicas and args.backend == "sqlite":
        parser.error("--replicas: CouchDB only")
    print(machine())
    backends = ["sqlite", "couchdb"] if args.backend == "both" else [args.backend]
    if args.replicas:
        backends = ["couchdb"]
    stale_after = args.stale_after or 4.0
    bad = False
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"gridlrt-chaos-{backend}-") as tmp:
            report = run_chaos(
                ChaosConfig(
                    backend=backend,
                    workdir=Path(tmp),
                    tokens=args.tokens,
                    pilots=args.pilots,
                    kills=args.kills,
                    outage=args.outage,
                    stale_after=stale_after,
                    seed=args.seed,
                    timeout=1800,
                    pipeline=args.pipeline,
                    group=args.group,
                    aimed_kills=(
                        args.aimed_kills
                        if args.aimed_kills is not None
                        else (args.kills // 3 if args.pipeline else 0)
                    ),
                    replicas=args.replicas,
                    lag=args.lag,
                )
            )
        print("\n".join(report.lines()), flush=True)
        bad = bad or bool(report.failures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
