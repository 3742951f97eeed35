"""Fault injection at a larger size than the suite's: SIGKILLs at random moments and a pool
outage, then count what was done once, twice, or lost, and what was left behind.

    .venv/bin/python bench/chaos.py [--backend sqlite|couchdb|both] [--tokens 200]
        [--pilots 6] [--kills 60] [--outage 30] [--seed 1]

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
    args = parser.parse_args()
    print(machine())
    backends = ["sqlite", "couchdb"] if args.backend == "both" else [args.backend]
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
                    seed=args.seed,
                    timeout=1800,
                )
            )
        print("\n".join(report.lines()), flush=True)
        bad = bad or bool(report.failures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
