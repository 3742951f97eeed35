"""The single-step demo on one machine, timed: the pilot sandbox build and
``gridlrt demo --single-step``'s trip (8 synthetic subbands, flag-average with AOFlagger + DP3,
local pilots) with 1 and 2 pilots. The main job, the reduction, is bench/reduction_bench.py.

    .venv/bin/python bench/demo_bench.py [--subbands 8] [--repeat 3]

Prints the machine (see bench/worker_bench.py) and, per pilot count, the median wall time of
the processing (tokens created -> all done, pilot start-up included), subbands per minute and
the speed-up over one pilot. Each run uses a fresh embedded pool and storage; the observation
is made once and reused. Nothing is asserted: figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker_bench import machine

from gridlrt.config import load_settings
from gridlrt.demo import DemoSpec, make_observation, run_demo
from gridlrt.sandbox.bundle import build_pilot_sandbox
from gridlrt.tokens import open_pool
from gridlrt.worker.dp3 import find_dp3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subbands", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dp3 = find_dp3()
    if dp3 is None:
        sys.exit("DP3 not found; run make setup")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="gridlrt-demo-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for key, value in machine(dp3, tmp).items():
            print(f"{key:>16}: {value}")
        builds = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            sandbox = build_pilot_sandbox(None, tmp / "sandboxes")
            builds.append(time.perf_counter() - began)
        build = statistics.median(builds)
        size = sandbox.size / 1e6
        print(f"\npilot sandbox (gridlrt runtime): {sandbox.files} files, {size:.2f} MB, "
              f"build {build:.2f} s (median, {args.repeat} runs)")  # fmt: skip

        spec = DemoSpec(subbands=args.subbands)
        began = time.perf_counter()
        observation = make_observation(tmp / "obs", spec)
        print(f"observation: {args.subbands} subbands, {observation.size / 1e6:.1f} MB of LTA "
              f"tarballs, made in {time.perf_counter() - began:.1f} s\n")  # fmt: skip
        print(
            f"{'pilots':>6} {'median s':>9} {'runs (s)':>24} {'subbands/min':>13} {'speed-up':>9}"
        )
        base = None
        for pilots in (1, 2):
            walls = []
            for run in range(args.repeat):
                where = tmp / f"run-{pilots}-{run}"
                settings = load_settings(
                    config_file=tmp / "none.toml",
                    pool=f"sqlite:///{where / 'pool.sqlite'}",
                    storage_root=(where / "storage").as_uri(),
                    runs_dir=where / "runs",
                )
                # the observation is reused: link its store into this run's work dir
                (where).mkdir(parents=True)
                (where / "lta").symlink_to(tmp / "obs" / "lta")
                with open_pool(settings) as pool:
                    began = time.perf_counter()
                    result = run_demo(
                        settings, pool, spec.model_copy(update={"pilots": pilots}), where, poll=0.05
                    )
                    walls.append(time.perf_counter() - began)
                if result.done != args.subbands:
                    sys.exit(f"run {run} with {pilots} pilot(s): only {result.done} done")
            median = statistics.median(walls)
            base = base or median
            runs = ", ".join(f"{w:.2f}" for w in walls)
            print(f"{pilots:>6} {median:>9.2f} {runs:>24} {args.subbands / median * 60:>13.1f} "
                  f"{base / median:>8.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
