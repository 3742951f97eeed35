"""Token pool benchmark (issue 3): gridlrt's pools against the PiCaS client.

Per backend — the embedded SQLite file and CouchDB (a pouchdb-server this script starts on a
free loopback port with a temporary directory, and stops at the end) — it measures:

1. bulk create of ``--tokens`` tokens (``TokenPool.create``; ``_bulk_docs`` batches of 2000
   on CouchDB): seconds and tokens/s;
2. ``overview()`` latency: the first call (on CouchDB that builds the view index) and the
   median of 5 warm calls;
3. claims per second with 1, 4 and 16 concurrent claimers, each a separate process looping
   claim → finish until the pool is empty, on a fresh pool of ``--claims`` tokens whose views
   were warmed first (so index builds are not counted). Claimers connect first and are then
   released together; the time runs from the release to the last claimer's end. Every claimer
   records the ids it processed; a token processed by more than one claimer is a double claim.
   Also reported: CPU per claim of the claimers and of pouchdb-server (from /proc).

Then the PiCaS client (``picas`` 1.1.x from PyPI, installed into its own venv by this script,
outside the project's dependencies) runs the same claim → done loop on the same server: a
separate database per run holding the same number of tokens in PiCaS's minimal form, with
PiCaS's ``Monitor`` views (written by ``CouchDBPool.init``, which writes them verbatim). The
claimers are ``bench/_picas_worker.py``: PiCaS's own ``RunActor`` + ``TaskViewIterator``.
gridlrt and PiCaS runs alternate, level by level, so background load hits both alike;
``--repeat`` runs every level several times and reports medians.

All figures are printed with the machine they ran on; nothing passes or fails on time.

    .venv/bin/python bench/pool_bench.py [--quick] [--tokens N] [--claims N]
        [--backends sqlite,couchdb] [--claimers 1,4,16] [--repeat R] [--no-picas]
        [--picas-venv DIR] [--keep]

Every process started here (pouchdb-server, claimers) runs in its own process group and is
stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
POUCHDB_SERVER = ROOT / "tests" / "services" / "node_modules" / ".bin" / "pouchdb-server"
PICAS_WORKER = Path(__file__).resolve().parent / "_picas_worker.py"
PICAS_REQUIREMENTS = ["picas==1.1.2", "setuptools<81"]  # stopit imports pkg_resources
DEFAULT_PICAS_VENV = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gridlrt-bench" / "picas-venv"
)
BATCH = 2000


# --- processes ------------------------------------------------------------------------------

_CHILDREN: list[subprocess.Popen[Any]] = []


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a process in its own process group and remember it, so it is always stopped."""
    proc: subprocess.Popen[Any] = subprocess.Popen(argv, start_new_session=True, **kwargs)
    _CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    if proc in _CHILDREN:
        _CHILDREN.remove(proc)


def stop_all() -> None:
    for proc in list(_CHILDREN):
        stop(proc)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc), or NaN."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class BenchError(RuntimeError):
    """Something the bench needs did not work; the message says what."""


# --- machine --------------------------------------------------------------------------------


def _command_output(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        os_name = platform.system()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "hostname": socket.gethostname(),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs (usable: {len(os.sched_getaffinity(0))})",
        "ram": ram,
        "os": f"{os_name}, kernel {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_version()} ({sys.executable})",
        "node": _command_output(["node", "--version"]),
        "load average at the start": load_average(),
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


# --- pouchdb-server ---------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[Any]
    log: Path
    version: str


@contextlib.contextmanager
def pouchdb_server(workdir: Path) -> Iterator[Server]:
    """A pouchdb-server on a free loopback port, all files under ``workdir``; stopped after."""
    if not POUCHDB_SERVER.exists() or shutil.which("node") is None:
        raise BenchError(f"pouchdb-server not installed ({POUCHDB_SERVER}); run `make setup`")
    package = POUCHDB_SERVER.parent.parent / "pouchdb-server" / "package.json"
    version = json.loads(package.read_text()).get("version", "?") if package.exists() else "?"
    port = free_port()
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    argv = [
        str(POUCHDB_SERVER),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dir", str(workdir / "data"),
        "--config", str(workdir / "config.json"),
        "--no-stdout-logs",
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = spawn(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     cwd=workdir)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise BenchError(f"pouchdb-server exited ({proc.returncode}):\n{tail(log)}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=1).ok:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"pouchdb-server not ready after 60 s:\n{tail(log)}")
            time.sleep(0.1)
        yield Server(url=url, proc=proc, log=log, version=version)
    finally:
        stop(proc)


# --- results ----------------------------------------------------------------------------------


@dataclass
class ClaimRun:
    client: str  # "gridlrt" or "PiCaS"
    backend: str
    claimers: int
    tokens: int
    seconds: float
    cycles: int  # claim → finish cycles, all claimers together
    distinct: int  # distinct tokens processed
    doubled: int  # tokens processed by more than one claimer
    extra: int  # cycles beyond one per token
    not_done: int  # tokens not done in the pool afterwards
    lost: int  # finishes that failed (gridlrt: LostClaim; PiCaS: save conflict, done lost)
    crashes: int  # PiCaS: "Unable to claim task." (10 conflicts in a row); claimer restarted
    client_cpu: float  # CPU seconds of all claimers during the run
    server_cpu: float  # CPU seconds of pouchdb-server during the run (NaN for SQLite)
    errors: list[str] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)  # gridlrt on CouchDB: requests by kind

    @property
    def claims_per_s(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.distinct / self.seconds if self.seconds > 0 else float("nan")

    def per_claim_ms(self, cpu: float) -> str:
        return "n/a" if math.isnan(cpu) or not self.cycles else f"{cpu / self.cycles * 1000:.1f}"


@dataclass
class BackendFigures:
    backend: str
    tokens: int
    create_s: float
    overview_first_s: float
    overview_warm_s: float
    overview_counts: str
    picas_overview_first_s: float | None = None
    picas_overview_warm_s: float | None = None
    follow: tuple[float, float, float, float] | None = None  # following_frames
    runs: list[ClaimRun] = field(default_factory=list)


def say(text: str = "") -> None:
    print(text, flush=True)


# --- claimers --------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    name: str
    ids: list[str]
    started: float
    ended: float
    crashes: int
    lost: int
    cpu: float
    error: str
    sent: dict[str, int] = field(default_factory=dict)


def race(
    argvs: Sequence[tuple[list[str], Path, Path]],
    label: str,
    on_release: Callable[[], None] = lambda: None,
) -> tuple[float, list[dict[str, Any]]]:
    """Start a claimer process per ``(argv, out, log)``, wait until each says it is ready,
    call ``on_release``, release them at once and wait for all. Returns the release time and
    each claimer's results (the JSON it wrote to ``out``)."""
    procs: list[tuple[subprocess.Popen[str], Path, Path]] = []
    try:
        for argv, out, log in argvs:
            with log.open("wb") as err:
                proc = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                             text=True)  # fmt: skip
            procs.append((proc, out, log))
        for proc, _, log in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise BenchError(f"{label} claimer did not start ({line!r}):\n{tail(log)}")
        on_release()
        released = time.time()
        for proc, _, _ in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
        results = []
        for proc, out, log in procs:
            code = proc.wait()
            if code != 0 or not out.exists():
                raise BenchError(f"{label} claimer failed (exit {code}):\n{tail(log)}")
            results.append(json.loads(out.read_text()))
        return released, results
    finally:
        for proc, _, _ in procs:
            stop(proc)


def run_claimers(
    argv_for: Callable[[int, Path], list[str]],
    n: int,
    workdir: Path,
    label: str,
    server_pid: int | None = None,
) -> tuple[float, float, list[WorkerResult]]:
    """Start ``n`` claimer processes, wait until all are connected, release them at once and
    wait for all. Returns the wall time from release to the last claimer's end, the server's
    CPU seconds meanwhile (NaN without a server) and the claimers' results."""
    files = [
        (workdir / f"{label}-{n}-{i}.json", workdir / f"{label}-{n}-{i}.log") for i in range(n)
    ]
    before: list[float] = []

    def take_cpu() -> None:
        before.append(cpu_seconds(server_pid) if server_pid else float("nan"))

    released, found = race([(argv_for(i, o), o, g) for i, (o, g) in enumerate(files)], label,
                           take_cpu)  # fmt: skip
    results = [WorkerResult(**data) for data in found]
    server_cpu = cpu_seconds(server_pid) - before[0] if server_pid else float("nan")
    return max(r.ended for r in results) - released, server_cpu, results


def summarize(
    client: str,
    backend: str,
    n: int,
    tokens: int,
    seconds: float,
    server_cpu: float,
    results: list[WorkerResult],
    not_done: int,
) -> ClaimRun:
    per_token: Counter[str] = Counter()
    for result in results:
        per_token.update(set(result.ids))  # how many claimers processed each token
    cycles = sum(len(r.ids) for r in results)
    run = ClaimRun(
        client=client,
        backend=backend,
        claimers=n,
        tokens=tokens,
        seconds=seconds,
        cycles=cycles,
        distinct=len(per_token),
        doubled=sum(1 for c in per_token.values() if c > 1),
        extra=cycles - len(per_token),
        not_done=not_done,
        lost=sum(r.lost for r in results),
        crashes=sum(r.crashes for r in results),
        client_cpu=sum(r.cpu for r in results),
        server_cpu=server_cpu,
        errors=[f"{r.name}: {r.error}" for r in results if r.error],
        sent=sum((Counter(r.sent) for r in results), Counter()),
    )
    say(
        f"  {client} {backend} {n:>2} claimers: {run.cycles} claims in {seconds:.2f} s = "
        f"{run.claims_per_s:,.0f} claims/s ({run.tokens_per_s:,.0f} distinct tokens/s); "
        f"double-processed {run.doubled} tokens ({run.extra} extra); not done after: "
        f"{not_done}; lost finishes {run.lost}; claimer crashes {run.crashes}; CPU per claim: "
        f"claimers {run.per_claim_ms(run.client_cpu)} ms, server "
        f"{run.per_claim_ms(run.server_cpu)} ms; load {os.getloadavg()[0]:.2f}"
    )
    for error in run.errors:
        say(f"    ERROR {error}")
    if run.sent and run.cycles:
        per = ", ".join(f"{k} {v / run.cycles:.2f}" for k, v in sorted(run.sent.items()))
        say(f"    requests per claim ({sum(run.sent.values()) / run.cycles:.2f}): {per}")
    return run


def gridlrt_worker(
    target: str, name: str, out: Path, share: int | None = None, step: str | None = None
) -> int:
    """Claimer process: claim → finish until the pool is empty (or it finished ``share``
    tokens; of ``step`` only, if given); ids to ``out`` (JSON)."""
    from gridlrt.errors import LostClaim
    from gridlrt.tokens import PilotInfo, TokenPool

    pool: TokenPool
    kind, _, where = target.partition(":")
    if kind == "sqlite":
        from gridlrt.tokens.sqlite import SQLitePool

        pool = SQLitePool(Path(where))
    else:
        from gridlrt.tokens.couchdb import CouchDBPool

        pool = CouchDBPool(where)
    who = PilotInfo(pilot=f"bench-{name}-{os.getpid()}", host=socket.gethostname())
    pool.overview()  # connect (and open the file) before the start
    print("ready", flush=True)
    sys.stdin.readline()
    getattr(pool, "sent", Counter()).clear()  # count the run's requests only
    started, cpu = time.time(), time.process_time()
    ids: list[str] = []
    lost = 0
    error = ""
    try:
        while (share is None or len(ids) < share) and (token := pool.claim(who, step)) is not None:
            ids.append(token.id)
            try:
                pool.finish(token.id, who.pilot)
            except LostClaim:
                lost += 1
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    ended, cpu = time.time(), time.process_time() - cpu
    result = {"name": name, "ids": ids, "started": started, "ended": ended, "crashes": 0,
              "lost": lost, "cpu": cpu, "error": error,
              "sent": dict(getattr(pool, "sent", {}))}  # fmt: skip
    out.write_text(json.dumps(result))
    pool.close()
    return 0


# --- gridlrt pools ----------------------------------------------------------------------------


def make_tokens(n: int, prefix: str) -> list[Any]:
    from gridlrt.tokens import new_token

    return [
        new_token(
            f"{prefix}{i:07d}",
            inputs=[f"srm://srm.grid.sara.nl/pnfs/grid.sara.nl/data/lofar/L{i:07d}_SB000.MS"],
            parameters={"sb": i % 488},
        )
        for i in range(n)
    ]


def open_gridlrt(backend: str, where: str) -> Any:
    if backend == "sqlite":
        from gridlrt.tokens.sqlite import SQLitePool

        return SQLitePool(Path(where))
    from gridlrt.tokens.couchdb import CouchDBPool

    return CouchDBPool(where)


def warm_claim_view(backend: str, where: str) -> None:
    """pouchdb-server indexes each view on its first query: build the claim view too."""
    if backend == "couchdb":
        from gridlrt.tokens.couchdb import VIEW

        requests.get(f"{where}/{VIEW}/gridlrt_next", params={"limit": 1}, timeout=3600)


def timed_calls(call: Callable[[], object], warm_calls: int = 5) -> tuple[float, float]:
    """Seconds of the first call and the median of ``warm_calls`` more."""
    started = time.perf_counter()
    call()
    first = time.perf_counter() - started
    warm = []
    for _ in range(warm_calls):
        started = time.perf_counter()
        call()
        warm.append(time.perf_counter() - started)
    return first, statistics.median(warm)


def location(backend: str, name: str, workdir: Path, server: Server | None) -> str:
    """Where a gridlrt pool called ``name`` lives: a SQLite file or a CouchDB database URL."""
    if backend == "sqlite":
        return f"{workdir / name}.sqlite"
    assert server is not None
    return f"{server.url}/{name}"


def bench_backend(
    backend: str, args: argparse.Namespace, workdir: Path, server: Server | None
) -> BackendFigures:
    """Bulk create and overview latency of one backend."""
    say(f"\n== gridlrt, {backend}: bulk create and overview ==")
    tokens = make_tokens(args.tokens, "bench-")
    where = location(backend, "gridlrt_create", workdir, server)
    pool = open_gridlrt(backend, where)
    pool.init()
    started = time.perf_counter()
    created = pool.create(tokens)
    create_s = time.perf_counter() - started
    del tokens
    say(
        f"  create {args.tokens:,} tokens: {create_s:.2f} s = {args.tokens / create_s:,.0f} "
        f"tokens/s ({len(created.created):,} created, {len(created.duplicates)} duplicates)"
    )
    started = time.perf_counter()
    overview = pool.overview()
    first = time.perf_counter() - started
    warm = []
    for _ in range(5):
        started = time.perf_counter()
        pool.overview()
        warm.append(time.perf_counter() - started)
    counts = ", ".join(f"{k} {v:,}" for k, v in overview.by_status().items() if v)
    say(
        f"  overview: first {first:.3f} s, warm median {statistics.median(warm) * 1000:.1f} ms "
        f"(min {min(warm) * 1000:.1f}, max {max(warm) * 1000:.1f}); counts: {counts}"
    )
    pool.close()
    follow = following_frames(backend, where)
    figures = BackendFigures(
        backend=backend,
        tokens=args.tokens,
        create_s=create_s,
        overview_first_s=first,
        overview_warm_s=statistics.median(warm),
        overview_counts=counts,
        follow=follow,
    )
    if backend == "couchdb":
        # reference: PiCaS's own overview view (overview_total, _sum, grouped) on the same data
        picas_first, picas_warm = timed_calls(lambda: picas_counts(where))
        figures.picas_overview_first_s, figures.picas_overview_warm_s = picas_first, picas_warm
        say(
            "  reference, PiCaS's overview_total view on the same database: first "
            f"{picas_first:.3f} s, warm median {picas_warm * 1000:.1f} ms"
        )

    return figures


def following_frames(backend: str, where: str) -> tuple[float, float, float, float]:
    """What a watcher's frames cost on a following pool (``pool.follow()``: CouchDB reads
    ``_changes``): the first (the load; the first ever builds the stage view's index on
    pouchdb-server), a second watcher's first, one with nothing changed (median of 5), and
    one after 100 claims (median of 5 such rounds). Seconds."""
    from gridlrt.tokens import PilotInfo

    pool = open_gridlrt(backend, where)
    pool.follow()
    started = time.perf_counter()
    pool.overview()
    pool.stage_counts()
    load = time.perf_counter() - started
    quiet, busy = [], []
    for _ in range(5):
        started = time.perf_counter()
        pool.overview()
        pool.stage_counts()
        quiet.append(time.perf_counter() - started)
    writer = open_gridlrt(backend, where)
    who = PilotInfo(pilot="bench-follow", host=socket.gethostname())
    for _ in range(5):
        for _ in range(100):
            writer.claim(who)
        started = time.perf_counter()
        pool.overview()
        pool.stage_counts()
        busy.append(time.perf_counter() - started)
    writer.close()
    pool.close()
    again = open_gridlrt(backend, where)  # a second watcher: the views are built now
    again.follow()
    started = time.perf_counter()
    again.overview()
    again.stage_counts()
    reload = time.perf_counter() - started
    again.close()
    figures = (load, reload, statistics.median(quiet), statistics.median(busy))
    say(
        "  following (a watcher's frames: overview + stage counts): first "
        f"{figures[0]:.3f} s (a second watcher's first: {reload:.3f} s), nothing changed "
        f"{figures[2] * 1000:.1f} ms, after 100 claims {figures[3] * 1000:.1f} ms"
    )
    return figures


def gridlrt_claim_run(
    backend: str, n: int, rep: int, args: argparse.Namespace, workdir: Path, server: Server | None
) -> ClaimRun:
    """``n`` gridlrt claimers on a fresh pool of ``args.claims`` tokens, views warmed."""
    from gridlrt.tokens import TokenStatus

    where = location(backend, f"gridlrt_claims_c{n}_r{rep}", workdir, server)
    pool = open_gridlrt(backend, where)
    pool.init()
    pool.create(make_tokens(args.claims, f"claim-c{n}-"))
    pool.overview()  # builds the views (the status view on CouchDB) outside the timing
    warm_claim_view(backend, where)
    pool.close()
    target = f"{backend}:{where}"

    def argv(i: int, out: Path) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--worker", target,
                "--worker-name", f"c{n}-r{rep}-{i}", "--worker-out", str(out)]  # fmt: skip

    server_pid = server.proc.pid if server and backend == "couchdb" else None
    seconds, server_cpu, results = run_claimers(argv, n, workdir, f"gridlrt-{backend}", server_pid)
    pool = open_gridlrt(backend, where)
    after = pool.overview()
    pool.close()
    not_done = args.claims - after.total(TokenStatus.DONE)
    return summarize("gridlrt", backend, n, args.claims, seconds, server_cpu, results, not_done)


# --- PiCaS ------------------------------------------------------------------------------------


def picas_python(venv: Path) -> tuple[Path, dict[str, str]]:
    """The PiCaS venv's python, creating the venv if needed; with its package versions."""
    python = venv / "bin" / "python"
    probe = (
        "import json, importlib.metadata as m; import picas.actors, picas.clients; "
        "print(json.dumps({p: m.version(p) for p in ('picas', 'CouchDB', 'setuptools', "
        "'stopit', 'requests')}))"
    )

    def versions() -> dict[str, str] | None:
        if not python.exists():
            return None
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if done.returncode != 0:
            return None
        data: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
        return data

    found = versions()
    if found is not None:
        return python, found
    say(f"  creating the PiCaS venv {venv}: pip install {' '.join(PICAS_REQUIREMENTS)}")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *PICAS_REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    found = versions()
    if installed.returncode != 0 or found is None:
        raise BenchError(
            f"cannot install PiCaS into {venv}:\n{installed.stdout[-2000:]}"
            f"{installed.stderr[-2000:]}"
        )
    return python, found


def picas_database(server: Server, name: str, n: int) -> str:
    """A database of ``n`` PiCaS tokens (minimal form) with PiCaS's Monitor views, warmed."""
    from gridlrt.tokens.couchdb import VIEW, CouchDBPool

    url = f"{server.url}/{name}"
    pool = CouchDBPool(url)
    pool.init()  # creates the database and the Monitor design document with PiCaS's views
    pool.close()
    session = requests.Session()
    for start in range(0, n, BATCH):
        docs = [
            {
                "_id": f"picas-{i:07d}",
                "type": "token",
                "lock": 0,
                "done": 0,
                "hostname": "",
                "scrub_count": 0,
                "input": f"srm://srm.grid.sara.nl/pnfs/grid.sara.nl/data/lofar/L{i:07d}_SB000.MS",
            }
            for i in range(start, min(n, start + BATCH))
        ]
        answer = session.post(f"{url}/_bulk_docs", json={"docs": docs}, timeout=600)
        answer.raise_for_status()
    # PiCaS claims from todo; build it (and overview_total, used for the counts) untimed
    for view in ("todo", "overview_total"):
        session.get(f"{url}/{VIEW}/{view}", params={"limit": 1}, timeout=3600).raise_for_status()
    session.close()
    return url


def picas_counts(url: str) -> dict[str, int]:
    from gridlrt.tokens.couchdb import VIEW

    rows = requests.get(f"{url}/{VIEW}/overview_total", params={"group": "true"}, timeout=600)
    rows.raise_for_status()
    return {str(r["key"]): int(r["value"]) for r in rows.json()["rows"]}


def picas_claim_run(
    python: Path, n: int, rep: int, args: argparse.Namespace, workdir: Path, server: Server
) -> ClaimRun:
    """``n`` PiCaS claimers on a fresh database of ``args.claims`` PiCaS tokens, views warmed."""
    name = f"picas_claims_c{n}_r{rep}"
    url = picas_database(server, name, args.claims)

    def argv(i: int, out: Path) -> list[str]:
        return [str(python), str(PICAS_WORKER), "--server", server.url, "--db", name,
                "--name", f"c{n}-r{rep}-{i}", "--out", str(out)]  # fmt: skip

    seconds, server_cpu, results = run_claimers(argv, n, workdir, "picas", server.proc.pid)
    counts = picas_counts(url)
    run = summarize("PiCaS", "couchdb", n, args.claims, seconds, server_cpu, results,
                    args.claims - counts.get("done", 0))  # fmt: skip
    say(f"    PiCaS views afterwards: {counts}")
    return run


# --- report -----------------------------------------------------------------------------------


@dataclass
class RunGroup:
    """The repetitions of one client / backend / concurrency level."""

    runs: list[ClaimRun]

    @property
    def first(self) -> ClaimRun:
        return self.runs[0]

    def median(self, value: Callable[[ClaimRun], float]) -> float:
        return statistics.median(value(r) for r in self.runs)

    def each(self, value: Callable[[ClaimRun], int]) -> str:
        return " / ".join(str(value(r)) for r in self.runs)

    def cpu_ms(self, value: Callable[[ClaimRun], float]) -> str:
        cycles = sum(r.cycles for r in self.runs)
        cpu = sum(value(r) for r in self.runs)
        return "n/a" if math.isnan(cpu) or not cycles else f"{cpu / cycles * 1000:.1f}"


def group_runs(runs: list[ClaimRun]) -> dict[tuple[str, str, int], RunGroup]:
    groups: dict[tuple[str, str, int], RunGroup] = {}
    for run in runs:
        groups.setdefault((run.client, run.backend, run.claimers), RunGroup([])).runs.append(run)
    return groups


def report(figures: list[BackendFigures], runs: list[ClaimRun], args: argparse.Namespace) -> None:
    say("\n== summary ==")
    say(
        "\n| backend | tokens | bulk create | tokens/s | overview first "
        "| overview warm (median of 5) |"
    )
    say("|---|---:|---:|---:|---:|---:|")
    for f in figures:
        say(
            f"| {f.backend} | {f.tokens:,} | {f.create_s:.2f} s | {f.tokens / f.create_s:,.0f} | "
            f"{f.overview_first_s:.3f} s | {f.overview_warm_s * 1000:.1f} ms |"
        )
        if f.picas_overview_first_s is not None and f.picas_overview_warm_s is not None:
            say(
                f"| {f.backend}, PiCaS overview_total view (reference) | {f.tokens:,} | | | "
                f"{f.picas_overview_first_s:.3f} s | {f.picas_overview_warm_s * 1000:.1f} ms |"
            )
    say(
        "\nA watcher's frames (`gridlrt status --watch`, the dashboard) on a following pool "
        "(`pool.follow()`; CouchDB: the `_changes` feed), overview + stage counts:\n"
    )
    say(
        "| backend | tokens | first frame ever (load, views built) | a new watcher's first frame "
        "| nothing changed | after 100 claims |"
    )
    say("|---|---:|---:|---:|---:|---:|")
    for f in figures:
        if f.follow is not None:
            load, reload, quiet, busy = f.follow
            say(
                f"| {f.backend} | {f.tokens:,} | {load:.3f} s | {reload:.3f} s | "
                f"{quiet * 1000:.1f} ms | {busy * 1000:.1f} ms |"
            )
    if not runs:
        return
    repeats = f", median of {args.repeat} runs; counts per run" if args.repeat > 1 else ""
    say(
        f"\nClaim → finish with separate claimer processes, {args.claims:,} tokens per run "
        f"(fresh database, views warmed{repeats}):\n"
    )
    say(
        "| client / backend | claimers | claims/s | distinct tokens/s | "
        "double-processed tokens | extra claims | not done after | lost finishes | "
        "claimer crashes | claimer CPU ms/claim | server CPU ms/claim |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    groups = group_runs(runs)
    for (client, backend, claimers), g in groups.items():
        say(
            f"| {client} / {backend} | {claimers} | {g.median(lambda r: r.claims_per_s):,.0f} | "
            f"{g.median(lambda r: r.tokens_per_s):,.0f} | {g.each(lambda r: r.doubled)} | "
            f"{g.each(lambda r: r.extra)} | {g.each(lambda r: r.not_done)} | "
            f"{g.each(lambda r: r.lost)} | {g.each(lambda r: r.crashes)} | "
            f"{g.cpu_ms(lambda r: r.client_cpu)} | {g.cpu_ms(lambda r: r.server_cpu)} |"
        )
    top = max(args.claimers)
    gridlrt = groups.get(("gridlrt", "couchdb", top))
    picas = groups.get(("PiCaS", "couchdb", top))
    if gridlrt and picas:
        claims = gridlrt.median(lambda r: r.claims_per_s) / picas.median(lambda r: r.claims_per_s)
        distinct = gridlrt.median(lambda r: r.tokens_per_s) / picas.median(lambda r: r.tokens_per_s)
        say(
            f"\ngridlrt / PiCaS at {top} claimers on the same pouchdb-server: {claims:.2f}x "
            f"claims/s, {distinct:.2f}x distinct tokens/s (target ≥ 2x); double-processed "
            f"tokens: gridlrt {gridlrt.each(lambda r: r.doubled)}, PiCaS "
            f"{picas.each(lambda r: r.doubled)} (target 0 for gridlrt)"
        )


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tokens", type=int, default=100_000, help="bulk create size")
    parser.add_argument("--claims", type=int, default=2000, help="tokens per claim run")
    parser.add_argument("--claimers", default="1,4,16", help="concurrency levels")
    parser.add_argument("--repeat", type=int, default=1, help="claim runs per level (median)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 tokens, 300 claims")
    parser.add_argument("--backends", default="sqlite,couchdb")
    parser.add_argument("--no-picas", action="store_true", help="skip the PiCaS client")
    parser.add_argument("--picas-venv", type=Path, default=DEFAULT_PICAS_VENV)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-name", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.claims = 2000, 300
    args.claimers = [int(x) for x in str(args.claimers).split(",") if x.strip()]
    args.backends = [b.strip() for b in str(args.backends).split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "couchdb"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return args


def bench_main(
    title: str, sizes: str, prefix: str, keep: bool, body: Callable[[Path], None]
) -> int:
    """The frame of a bench: its title, command line, machine and sizes printed; ``body`` run
    in a fresh temporary directory (removed after, unless ``keep``); a :class:`BenchError`
    or Ctrl-C ends it in one line; every process it started is stopped however it ends."""
    signal.signal(signal.SIGTERM, _terminate)
    say(title)
    say("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    for key, value in machine().items():
        say(f"{key}: {value}")
    say(sizes)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        body(workdir)
        say(f"\nload average at the end: {load_average()}")
    except BenchError as exc:
        say(f"\nbench failed: {exc}")
        return 1
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    finally:
        stop_all()
        if keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return gridlrt_worker(args.worker, args.worker_name, args.worker_out)

    def body(workdir: Path) -> None:
        figures: list[BackendFigures] = []
        runs: list[ClaimRun] = []
        server_cm: contextlib.AbstractContextManager[Server | None] = (
            pouchdb_server(workdir / "couchdb")
            if "couchdb" in args.backends
            else contextlib.nullcontext()
        )
        with server_cm as server:
            if server is not None:
                say(f"pouchdb-server {server.version} on {server.url} (data in {workdir})")
            for backend in args.backends:
                figures.append(bench_backend(backend, args, workdir, server))
            python: Path | None = None
            if server is not None and not args.no_picas:
                say("\n== PiCaS venv ==")
                python, versions = picas_python(args.picas_venv)
                say(f"  {args.picas_venv}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
            say("\n== claim → finish runs (gridlrt and PiCaS alternate on CouchDB) ==")
            for rep in range(args.repeat):
                for backend in args.backends:
                    for n in args.claimers:
                        runs.append(gridlrt_claim_run(backend, n, rep, args, workdir, server))
                        if backend == "couchdb" and python is not None and server is not None:
                            runs.append(picas_claim_run(python, n, rep, args, workdir, server))
        report(figures, runs, args)

    return bench_main(
        "# gridlrt token pool bench (bench/pool_bench.py)",
        f"sizes: {args.tokens:,} tokens bulk-created, {args.claims:,} tokens per claim run, "
        f"claimers {args.claimers}, repeat {args.repeat}, backends {args.backends}",
        "gridlrt-pool-bench-",
        args.keep,
        body,
    )


if __name__ == "__main__":
    sys.exit(main())
