"""Dataset transfer benchmark (issue 16): ``gridlrt data get`` of a 100-file dataset against
``gridlrt storage copy`` run once per file in a loop (what a user without ``data get`` does),
from WebDAV and from file://.

The script starts its own WebDAV server (``tests/services/webdav_server.py``, as
``transfer_bench.py`` does), writes ``--files`` files of ``--size-kib`` random bytes (LTA
names, subbands 100...) on the server's disk, and a dataset file of them (sizes known, no
checksums: WebDAV does not answer them here) for each source (``dav://`` and ``file://``).
Then, ``--rounds`` times, alternating the methods:

* **data get -j N** (N = 4 and 1): one ``gridlrt data get DATASET --to DIR -j N`` process;
* **data get rerun**: the same command again on the complete directory (resume: nothing is
  copied; what checking 100 files costs);
* **storage copy loop**: ``gridlrt storage copy SRC DIR/NAME`` once per file, one after the
  other (a process per file: the interpreter, imports and a gfal2 context each time).

Dirty pages are written out (``sync``, untimed) before each method. It prints the machine
and a markdown table: wall time per method (median and all rounds), files/s and MB/s of the
median (1 MB = 10^6 bytes), and the loop/get ratio. It never passes or fails on time.

    .venv/bin/python bench/data_bench.py [--files 100] [--size-kib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
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

from transfer_bench import webdav_server  # noqa: E402
from worker_bench import _cpu_model, _os_name, _ram  # noqa: E402

from gridlrt.datasets.model import Dataset, entry_for_url, write_dataset  # noqa: E402

GRIDLRT = [sys.executable, "-m", "gridlrt"]


def machine(work: Path) -> dict[str, str]:
    """The facts worker_bench.machine() prints, without DP3 (not used here)."""
    gfal2_version = "?"
    try:
        import gfal2

        gfal2_version = str(gfal2.get_version())
    except (ImportError, AttributeError):
        pass
    disk = shutil.disk_usage(work)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} CPUs (usable: {len(os.sched_getaffinity(0))})",
        "ram": _ram(),
        "os": _os_name(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "gfal2": gfal2_version,
        "work dir": f"{work} ({disk.free / 1e9:.0f} GB free of {disk.total / 1e9:.0f} GB)",
        "load": "{:.2f} {:.2f} {:.2f} (1/5/15 min, at start)".format(*os.getloadavg()),
    }


def run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr}")


def timed(action: Callable[[], None]) -> float:
    subprocess.run(["sync"], check=False)
    started = time.monotonic()
    action()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--size-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gridlrt-data-bench-"))
    try:
        for key, value in machine(work).items():
            print(f"{key}: {value}")
        root = work / "served"
        obs = root / "obs"
        obs.mkdir(parents=True)
        names = []
        for i in range(args.files):
            name = f"L700701_SB{100 + i:03d}_uv.MS_3d78b8f1.tar"
            (obs / name).write_bytes(os.urandom(args.size_kib * 1024))
            names.append(name)
        total = args.files * args.size_kib * 1024
        print(f"dataset: {args.files} files x {args.size_kib} KiB = {total / 1e6:.1f} MB")

        with webdav_server(root) as port:
            bases = {"dav://": f"dav://127.0.0.1:{port}/obs", "file://": obs.as_uri()}
            times: dict[str, list[float]] = {}
            for label, base in bases.items():
                urls = [f"{base}/{n}" for n in names]
                ds = work / f"{label[:-3]}.jsonl"
                size = args.size_kib * 1024
                write_dataset(ds, Dataset(entries=[entry_for_url(u, size=size) for u in urls]))

                def fresh(tag: str) -> Path:
                    target = work / "out" / tag
                    shutil.rmtree(target, ignore_errors=True)
                    return target

                def get(jobs: int, target: Path, ds: Path = ds) -> None:
                    run([*GRIDLRT, "data", "get", str(ds), "--to", str(target), "-j", str(jobs)])

                def loop(target: Path, urls: list[str] = urls) -> None:
                    target.mkdir(parents=True)
                    for url in urls:
                        run([*GRIDLRT, "storage", "copy", url, str(target / url.rsplit("/")[-1])])

                methods: list[tuple[str, Callable[[], None]]] = []
                for jobs in (4, 1):
                    tag = f"get-{jobs}"
                    methods.append(
                        (f"data get -j {jobs}", lambda j=jobs, t=tag: get(j, fresh(t)))  # type: ignore[misc]
                    )
                methods.append(
                    ("data get rerun (nothing to copy)", lambda: get(4, work / "out" / "get-4"))
                )
                methods.append(("storage copy loop", lambda: loop(fresh("loop"))))
                for r in range(args.rounds):
                    order = methods[r % 3 :] + methods[: r % 3] if r else methods
                    # the rerun needs a complete directory: keep it after "data get -j 4"
                    order = sorted(order, key=lambda m: m[0].startswith("data get rerun"))
                    for name, action in order:
                        seconds = timed(action)
                        times.setdefault(f"{label} {name}", []).append(seconds)
                        print(f"round {r + 1}: {label} {name}: {seconds:.2f} s", flush=True)

        print()
        print("| source | method | median s | files/s | MB/s | rounds (s) |")
        print("|---|---|---:|---:|---:|---|")
        for key, values in times.items():
            label, name = key.split(" ", 1)
            median = statistics.median(values)
            copies = "rerun" not in name
            rate = f"{total / median / 1e6:.0f}" if copies else "-"
            rounds = ", ".join(f"{v:.2f}" for v in values)
            print(
                f"| {label} | {name} | {median:.2f} | {args.files / median:.0f} | {rate} | "
                f"{rounds} |"
            )
        for label in bases:
            get4 = statistics.median(times[f"{label} data get -j 4"])
            get1 = statistics.median(times[f"{label} data get -j 1"])
            loop_time = statistics.median(times[f"{label} storage copy loop"])
            print(
                f"{label}: storage copy loop / data get -j 4 = {loop_time / get4:.1f}x, "
                f"/ data get -j 1 = {loop_time / get1:.1f}x"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
