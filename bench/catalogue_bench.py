"""Dataset catalogue benchmark (issue 16): what the catalogue costs a pilot, and what a query
costs a user.

1. **Metadata per measurement set against DP3.** Builds one synthetic LOFAR subband
   (:mod:`gridlrt.demo.synthetic_ms`; default 24 stations x 256 channels x 100 timeslots, as
   ``worker_bench.py``), runs DP3 with the parset of ``--step`` (``flag-average`` by default:
   AOFlagger, then 4 x 2 averaging) and times it; then times what the pilot does for the
   catalogue on the output (:func:`gridlrt.worker.msinfo.catalogue_fields`: ``ms info`` plus
   the FLAG column), and the same on the (16 x larger) input, as a kept un-averaged set would
   cost, each ``--repeat`` times (median). Also the FLAG reading rate (cells/s), from which the
   cap of a very large set follows (the budget, :data:`FLAG_BUDGET_CELLS`, is read at most).
2. **Queries over ``--records`` catalogue records** (default 10,000: 40 observations x 250
   subbands in two runs), on the embedded SQLite pool and on CouchDB (a pouchdb-server this
   script starts): the write in bulk, then ``data find`` queries through the library
   (:func:`gridlrt.datasets.catalogue.find`): one stage of one run (250 records, by the stage
   key), one observation (250), one step (5,000), a frequency range (a scan of all 10,000),
   and everything; first call (on CouchDB: builds the view index) and the median of the next
   ``--repeat``.

It prints the machine and markdown tables. It never passes or fails on time.

    .venv/bin/python bench/catalogue_bench.py [--step flag-average] [--stations 24
        --channels 256 --timeslots 100] [--records 10000] [--repeat 5]
        [--backends sqlite,couchdb]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pool_bench import pouchdb_server  # noqa: E402
from worker_bench import _cpu_model, _os_name, _ram  # noqa: E402

from gridlrt.datasets import catalogue  # noqa: E402
from gridlrt.datasets.model import DatasetEntry  # noqa: E402
from gridlrt.demo.synthetic_ms import SyntheticMSSpec, make_synthetic_ms  # noqa: E402
from gridlrt.tokens import TokenPool, new_token  # noqa: E402
from gridlrt.worker.dp3 import dp3_environment, find_dp3  # noqa: E402
from gridlrt.worker.msinfo import FLAG_BUDGET_CELLS, catalogue_fields, ms_info  # noqa: E402
from gridlrt.worker.plan import plan_token  # noqa: E402
from gridlrt.worker.steps import load_step  # noqa: E402


def timed(action: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    action()
    return time.perf_counter() - t0


def median_of(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(first call, median of the next ``repeat``) in seconds."""
    first = timed(action)
    return first, statistics.median(timed(action) for _ in range(repeat))


# --- 1. metadata against DP3 -------------------------------------------------------------------


def metadata_vs_dp3(args: argparse.Namespace, workdir: Path) -> None:
    spec = SyntheticMSSpec(
        obsid=229507,
        subband=100,
        stations=args.stations,
        channels=args.channels,
        timeslots=args.timeslots,
    )
    dp3 = find_dp3()
    step = load_step(args.step)
    token = new_token(
        "bench", inputs=f"file:///archive/{spec.ms_name}_3d78b8f1.tar", step=step.name
    )
    plan = plan_token(step, token, workdir=workdir, storage_root="file:///unused", dp3=dp3)
    msin, msout = plan.msin[0], plan.msout
    assert plan.parset is not None and msout is not None
    make_synthetic_ms(msin, spec)
    (workdir / "step.parset").write_text(plan.parset)
    if dp3 is None:
        raise SystemExit("DP3 not found (make setup)")
    runs = []
    for _ in range(args.dp3_runs):
        t0 = time.perf_counter()
        subprocess.run(
            [str(dp3), str(workdir / "step.parset")],
            env=dp3_environment(),
            check=True,
            capture_output=True,
        )
        runs.append(time.perf_counter() - t0)
    dp3_s = statistics.median(runs)

    rows = []
    for label, path in (("output (what the pilot records)", msout), ("input, un-averaged", msin)):
        info = ms_info(path)
        cells = info.rows * info.channels * len(info.correlations)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        first, median = median_of(lambda p=path: catalogue_fields(p), args.repeat)
        _, info_median = median_of(lambda p=path: ms_info(p, history_limit=0), args.repeat)
        rows.append((label, info, cells, size, first, median, info_median))

    print(f"\n### Metadata per measurement set against DP3 `{args.step}`\n")
    print(
        f"Input: {args.stations} stations x {args.channels} channels x {args.timeslots} "
        f"timeslots; DP3 `{args.step}` {dp3_s:.2f} s (median of {args.dp3_runs}: "
        + ", ".join(f"{r:.2f}" for r in runs)
        + ").\n"
    )
    print(
        "| set | rows x channels x corr. | FLAG cells | size | catalogue_fields first | "
        "median | of which ms info | FLAG cells/s | % of DP3 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, info, cells, size, first, median, info_median in rows:
        flag_s = max(median - info_median, 1e-9)
        print(
            f"| {label} | {info.rows} x {info.channels} x {len(info.correlations)} | "
            f"{cells / 1e6:.1f} M | {size / 1e6:.0f} MB | {1e3 * first:.0f} ms | "
            f"{1e3 * median:.0f} ms | {1e3 * info_median:.0f} ms | {cells / flag_s / 1e6:.0f} M | "
            f"{100 * median / dp3_s:.1f} % |"
        )
    out_cells = rows[0][2]
    out_median, out_info = rows[0][5], rows[0][6]
    rate = out_cells / max(out_median - out_info, 1e-9)
    print(
        f"\nFLAG reading is capped at {FLAG_BUDGET_CELLS / 1e6:.0f} M cells per set (evenly "
        f"spaced chunks beyond that): {FLAG_BUDGET_CELLS / 1e6:.0f} MB of flags at most, "
        f"about {FLAG_BUDGET_CELLS / rate:.2f} s at the output's rate here ({rate / 1e6:.0f} M "
        "cells/s, from the page cache: DP3 has just written it); from disk, the disk's rate."
    )


# --- 2. queries over many records --------------------------------------------------------------


def seeded(n: int) -> list[DatasetEntry]:
    """``n`` entries: observations of 250 subbands each, alternating runs run1 (average) and
    run2 (flag-average), SB000.. at 120 + 0.195 sb MHz."""
    made = []
    for i in range(n):
        obs, sb = divmod(i, 250)
        run, step = ("run1", "average") if obs % 2 == 0 else ("run2", "flag-average")
        name = f"L{700000 + obs}_SAP000_SB{sb:03d}_uv.{step}.MS.tar"
        made.append(
            DatasetEntry(
                url=f"davs://store.example.org/lofar/{run}/L{700000 + obs}/{step}/{name}",
                name=name,
                kind="ms-tarball",
                obsid=700000 + obs,
                sap=0,
                subband=sb,
                frequency_hz=120e6 + 195312.5 * sb,
                bandwidth_hz=195312.5,
                channels=16,
                start_time=5.0e9,
                end_time=5.0e9 + 28800,
                stations=62,
                flagged_fraction=0.02 * (sb % 50),
                size=400_000_000 + sb,
                checksum=f"adler32:{i:08x}",
                site="store",
                step=step,
                pipeline=run,
                stage="avg",
                token=f"{run}_L{700000 + obs}_SB{sb:03d}",
                parents=[f"srm://srm.grid.sara.nl/lofar/L{700000 + obs}_SB{sb:03d}_uv.MS.tar"],
            )
        )
    return made


def queries(n: int) -> list[tuple[str, catalogue.Query]]:
    last = 700000 + (n - 1) // 250
    return [
        ("one stage of one run (by stage key)", catalogue.Query(pipeline="run2", stage="avg")),
        (f"one observation L{last} (by obsid key)", catalogue.Query(obsid=last)),
        ("one step (by step key)", catalogue.Query(step="average")),
        ("120..125 MHz (reads all)", catalogue.Query(freq_low_hz=120e6, freq_high_hz=125e6)),
        ("everything", catalogue.Query()),
    ]


def query_bench(args: argparse.Namespace, workdir: Path) -> None:
    entries = seeded(args.records)
    backends = args.backends.split(",")
    results: dict[str, list[tuple[str, int, float, float]]] = {}
    writes: dict[str, float] = {}
    for backend in backends:
        if backend == "sqlite":
            from gridlrt.tokens.sqlite import SQLitePool

            pool: TokenPool = SQLitePool(workdir / "catalogue.sqlite")
            pool.init()
            run_queries(pool, backend, entries, args, results, writes)
        else:
            with pouchdb_server(workdir / "couchdb") as server:
                from gridlrt.tokens.couchdb import CouchDBPool

                pool = CouchDBPool(f"{server.url}/catalogue_bench")
                pool.init()
                run_queries(pool, backend, entries, args, results, writes)

    print(f"\n### `data find` over {args.records} catalogue records\n")
    print(
        "Write: "
        + "; ".join(f"{b} {writes[b]:.1f} s ({args.records / writes[b]:.0f}/s)" for b in backends)
        + " (catalogue.record, in bulk).\n"
    )
    header = " | ".join(f"{b} first | {b} median" for b in backends)
    print(f"| query | found | {header} |")
    print("|---|---:|" + "---:|---:|" * len(backends))
    for i, (label, n_found, _, _) in enumerate(results[backends[0]]):
        cells = " | ".join(
            f"{1e3 * results[b][i][2]:.0f} ms | {1e3 * results[b][i][3]:.0f} ms" for b in backends
        )
        print(f"| {label} | {n_found} | {cells} |")


def run_queries(
    pool: TokenPool,
    backend: str,
    entries: list[DatasetEntry],
    args: argparse.Namespace,
    results: dict[str, list[tuple[str, int, float, float]]],
    writes: dict[str, float],
) -> None:
    writes[backend] = timed(lambda: catalogue.record(pool, entries))
    rows = []
    for label, query in queries(args.records):
        first, median = median_of(lambda q=query: catalogue.find(pool, q), args.repeat)
        rows.append((label, len(catalogue.find(pool, query)), first, median))
    results[backend] = rows
    pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", default="flag-average")
    parser.add_argument("--stations", type=int, default=24)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--timeslots", type=int, default=100)
    parser.add_argument("--dp3-runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,couchdb")
    parser.add_argument("--skip-dp3", action="store_true", help="only the query part")
    parser.add_argument("--skip-queries", action="store_true", help="only the DP3 part")
    args = parser.parse_args(argv)
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_cpu_model()}; {_ram()}; {_os_name()}; "
        f"Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="catalogue-bench-") as tmp:
        if not args.skip_dp3:
            metadata_vs_dp3(args, Path(tmp))
        if not args.skip_queries:
            query_bench(args, Path(tmp))


if __name__ == "__main__":
    main()
