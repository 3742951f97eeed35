"""Storage transfer benchmark (issue 5): gridlrt's Storage (gfal2) against curl, same file,
same WebDAV server, same run.

The script starts its own WebDAV server (``tests/services/webdav_server.py``: wsgidav on
cheroot, plain HTTP on a free loopback port over a temporary directory), writes a file of
``--size-mib`` random bytes (1 GiB by default), and then, ``--rounds`` times, alternating so
that background load hits every method alike:

* **gridlrt upload**: ``Storage.copy(file -> dav://)``, i.e. gfal2 streamed PUT to a
  temporary name, size verification (wsgidav answers no checksums), rename into place;
* **gridlrt download**: ``Storage.copy(dav:// -> file)``, the same in the other direction;
* **gfal2 upload/download**: a bare ``ctx.filecopy`` (no verification, no rename), to show
  what gridlrt's safety costs;
* **curl upload/download**: ``curl -T FILE http://...`` and ``curl -o FILE http://...``.

Each round runs the methods in a rotated order, and the page cache's dirty data is written
out (``sync``, not timed) before every transfer, so that one transfer's write-back does not
slow the next. The source file stays in the page cache throughout (all methods read it).

It prints the machine, then MB/s per method (median and best of the rounds; 1 MB = 10^6
bytes) and the ratio gridlrt/curl. It never passes or fails on time.

    .venv/bin/python bench/transfer_bench.py [--size-mib 1024] [--rounds 3] [--keep]

The server runs in its own process group and is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gridlrt.storage import Storage  # noqa: E402
from gridlrt.storage.gfal import gfal2_module, new_context  # noqa: E402

CHUNK = 8 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    except OSError:
        pass
    return "?"


def machine() -> dict[str, str]:
    mem_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": f"{_first('/proc/cpuinfo', 'model name')} x {os.cpu_count()}",
        "ram": f"{int(mem_kib) / 1024**2:.1f} GiB" if mem_kib.isdigit() else "?",
        "os": _first("/etc/os-release", "PRETTY_NAME").strip('"'),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gfal2": str(gfal2_module().get_version()),
        "curl": curl.stdout.split("\n", 1)[0].split(" (")[0] if curl.stdout else "?",
        "load": "average {:.2f} {:.2f} {:.2f} (1, 5, 15 min) at the start".format(*os.getloadavg()),
    }


@contextlib.contextmanager
def webdav_server(root: Path) -> Iterator[int]:
    """The test suite's WebDAV server as a subprocess on a free port; yields the port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.services.webdav_server", "--root", str(root),
         "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, set()),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("OPTIONS", "/")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the WebDAV server did not start")
            time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            fh.write(chunk)
            left -= len(chunk)


def timed(action: Callable[[], None]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def curl(*args: str) -> None:
    result = subprocess.run(
        ["curl", "-sS", "--fail", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"curl {' '.join(args)} failed: {result.stderr.strip()}")


Method = tuple[Callable[[], float], Callable[[], float]]


def make_methods(
    storage: Storage, ctx: Any, params: Any, source: Path, back: Path, base: str
) -> dict[str, Method]:
    """Per method: (upload, download), each returning the seconds the transfer took."""

    def gridlrt_up() -> float:
        return storage.copy(source, f"dav://{base}/gridlrt.bin").seconds

    def gridlrt_down() -> float:
        return storage.copy(f"dav://{base}/gridlrt.bin", back).seconds

    def curl_up() -> float:
        return timed(lambda: curl("-T", str(source), f"http://{base}/curl.bin", "-o", os.devnull))

    def curl_down() -> float:
        return timed(lambda: curl("-o", str(back), f"http://{base}/curl.bin"))

    def gfal2_up() -> float:
        return timed(lambda: ctx.filecopy(params, f"file://{source}", f"dav://{base}/gfal2.bin"))

    def gfal2_down() -> float:
        return timed(lambda: ctx.filecopy(params, f"dav://{base}/gfal2.bin", f"file://{back}"))

    return {
        "gridlrt": (gridlrt_up, gridlrt_down),
        "curl": (curl_up, curl_down),
        "gfal2": (gfal2_up, gfal2_down),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per method")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed for the comparison")

    info = machine()
    print("machine:")
    for key, value in info.items():
        print(f"  {key:7} {value}")
    size = args.size_mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="gridlrt-transfer-bench-"))
    try:
        root = work / "dav"
        root.mkdir()
        source = work / "source.bin"
        print(f"\nwriting {size / 1e6:.0f} MB of random bytes ...", flush=True)
        make_file(source, size)
        storage = Storage(retries=0)
        ctx = new_context()
        params = ctx.transfer_parameters()
        params.overwrite = True
        params.create_parent = True
        params.timeout = 3600
        rates: dict[str, list[float]] = {}
        back = work / "back.bin"

        def record(name: str, seconds: float) -> None:
            rates.setdefault(name, []).append(size / seconds / 1e6)

        with webdav_server(root) as port:
            base = f"127.0.0.1:{port}/bench"
            storage.mkdir(f"dav://{base}")
            storage.copy(source, f"dav://{base}/warmup.bin")  # server and page cache warm
            (root / "bench" / "warmup.bin").unlink()
            methods = make_methods(storage, ctx, params, source, back, base)
            names = list(methods)
            for n in range(args.rounds):
                print(f"round {n + 1} of {args.rounds} ...", flush=True)
                # rotate the order, so that no method always comes first or last
                order = names[n % len(names) :] + names[: n % len(names)]
                for name in order:
                    os.sync()  # start each transfer without dirty pages of the previous one
                    record(f"{name} upload", methods[name][0]())
                    os.sync()
                    record(f"{name} download", methods[name][1]())
                    assert back.stat().st_size == size
                    back.unlink()
                    (root / "bench" / f"{name}.bin").unlink()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{size / 1e6:.0f} MB file, dav:// (HTTP) to a local wsgidav server, "
          f"{args.rounds} rounds; MB/s (10^6 bytes/s)\n")  # fmt: skip
    print(f"| {'method':18} | {'median':>7} | {'best':>7} | {'all rounds':24} |")
    print(f"|{'-' * 20}|{'-' * 9}|{'-' * 9}|{'-' * 26}|")
    for name in ("gridlrt upload", "curl upload", "gfal2 upload",
                 "gridlrt download", "curl download", "gfal2 download"):  # fmt: skip
        values = rates[name]
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name:18} | {statistics.median(values):7.0f} | {max(values):7.0f} | "
              f"{shown:24} |")  # fmt: skip
    print()
    for direction in ("upload", "download"):
        ours, theirs = rates[f"gridlrt {direction}"], rates[f"curl {direction}"]
        median = statistics.median(ours) / statistics.median(theirs)
        print(
            f"gridlrt/curl {direction:8}: median {median:.2f}, best {max(ours) / max(theirs):.2f}"
        )


if __name__ == "__main__":
    main()
