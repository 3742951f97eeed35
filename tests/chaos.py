"""Fault injection: real pilots, real pool, SIGKILLs at random moments and a pool outage.

Used by ``tests/integration/test_chaos.py`` (small, seeded, asserts zero) and
``bench/chaos.py`` (larger, prints figures). One run:

* a pool (embedded SQLite, or a pouchdb-server this harness starts and can restart) holds
  ``tokens`` tokens of a command step whose payload writes ``out.txt`` line by line, each line
  naming the attempt's work directory, and a 2 MB ``big.bin``; both are uploaded to a file://
  results tree through real gfal2;
* ``pilots`` ``gridlrt worker run`` processes share one ``--workdir`` (as the local backend's
  pilots do); whenever one ends or is killed, another is started;
* every ``kill_every`` seconds (jittered) a random pilot gets SIGKILL; the phase its token was
  in (claiming, downloading, running, uploading) is noted;
* once, mid-run, the pool is stopped for ``outage`` seconds (pouchdb-server is stopped and
  restarted on the same port; the SQLite file is held under an exclusive write lock);
* ``gridlrt``'s own recovery (``TokenPool.recover``) runs every second with a stale-after of
  ``stale_after`` s, paused during the outage and for a while after it (heartbeats are stale
  right after any outage: recovering then would take tokens from live pilots).

At the end the report counts what was done once, twice, or lost; outputs written by more than
one attempt or incomplete; ``.part`` leftovers; processes of killed pilots still running;
work directories left behind. Every count but ``done_once`` must be zero.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests

from gridlrt.tokens import Token, TokenPool, TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.sqlite import SQLitePool

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
LINES = 5
PAYLOAD = (
    'mark=$(basename "$PWD"); i=0; while [ $i -lt ' + str(LINES) + " ]; do i=$((i+1)); "
    'echo "$mark $i" >> out.txt; sleep 0.15; done; head -c 2000000 /dev/zero > big.bin'
)
STEP = (
    'name = "chaos"\nkind = "command"\nmax_attempts = 3\n'
    f"command = [\"sh\", \"-c\", {json.dumps(PAYLOAD)}]\n"
    '[inputs]\nkind = "none"\n[outputs]\nkeep = ["out.txt", "big.bin"]\n'
    'url = "{root}/{token_id}/{name}"\n'
)


@dataclass
class ChaosConfig:
    backend: str  # "sqlite" or "couchdb"
    workdir: Path
    tokens: int = 60
    pilots: int = 4
    kills: int = 20
    kill_every: float = 0.8
    outage: float = 20.0
    stale_after: float = 4.0
    heartbeat: float = 1.0
    seed: int = 12
    timeout: float = 600.0


@dataclass
class ChaosReport:
    backend: str
    tokens: int
    seconds: float = 0.0
    kills: int = 0
    kills_by_phase: dict[str, int] = field(default_factory=dict)
    outages: int = 0
    outage_seconds: float = 0.0
    recovered: int = 0
    attempts: int = 0
    done_once: int = 0
    done_twice: int = 0
    lost: int = 0
    in_error: int = 0
    mixed_outputs: int = 0
    incomplete_outputs: int = 0
    part_files: int = 0
    stray_processes: int = 0
    workdirs_left: int = 0
    pilots_started: int = 0

    @property
    def failures(self) -> dict[str, int]:
        """Every count that must be zero, by name."""
        names = (
            "done_twice lost in_error mixed_outputs incomplete_outputs part_files "
            "stray_processes workdirs_left"
        )
        return {n: getattr(self, n) for n in names.split() if getattr(self, n)}

    def lines(self) -> list[str]:
        phases = ", ".join(f"{k} {v}" for k, v in sorted(self.kills_by_phase.items()))
        return [
            f"backend {self.backend}: {self.tokens} tokens in {self.seconds:.1f} s, "
            f"{self.pilots_started} pilots started, {self.attempts} attempts",
            f"  SIGKILLs {self.kills} ({phases}); pool outages {self.outages} "
            f"({self.outage_seconds:.1f} s); tokens recovered {self.recovered}",
            f"  done once {self.done_once}, done twice {self.done_twice}, lost {self.lost}, "
            f"error {self.in_error}",
            f"  outputs mixed {self.mixed_outputs}, incomplete {self.incomplete_outputs}; "
            f".part files {self.part_files}; stray processes {self.stray_processes}; "
            f"work directories left {self.workdirs_left}",
        ]


class _Pool:
    """The pool under test and how to take it away and bring it back."""

    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.server = None
        self._lock: sqlite3.Connection | None = None
        if config.backend == "sqlite":
            self.url = f"sqlite:///{config.workdir / 'pool.sqlite'}"
            self.pool: TokenPool = SQLitePool(config.workdir / "pool.sqlite", busy_timeout=600)
        else:
            from tests.services.couchdb import start_pouchdb_server

            self.server = start_pouchdb_server(config.workdir / "couch")
            self.port = int(self.server.url.rsplit(":", 1)[1])
            self.url = self.server.new_database("chaos")
            self.pool = CouchDBPool(self.url, patience=600)
        self.pool.init()

    def stop(self) -> None:
        if self.server is not None:
            self.server.process.stop()
        else:
            self._lock = sqlite3.connect(self.config.workdir / "pool.sqlite", timeout=60)
            self._lock.execute("BEGIN EXCLUSIVE")

    def start(self) -> None:
        if self.server is not None:
            from tests.services.couchdb import start_pouchdb_server

            self.server = start_pouchdb_server(self.config.workdir / "couch", port=self.port)
        elif self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        self.pool.close()
        if self.server is not None:
            self.server.process.stop()


# --- every status a token went through, from the pool's own storage --------------------------

HISTORY_SQL = """
CREATE TABLE IF NOT EXISTS chaos_status_history (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    id     TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS chaos_history_insert AFTER INSERT ON tokens BEGIN
    INSERT INTO chaos_status_history (id, status) VALUES (NEW.id, NEW.status);
END;
CREATE TRIGGER IF NOT EXISTS chaos_history_update AFTER UPDATE ON tokens BEGIN
    INSERT INTO chaos_status_history (id, status) VALUES (NEW.id, NEW.status);
END;
"""


def record_history(pool: TokenPool) -> None:
    """Keep the status after every write of every token, so promotions can be counted
    afterwards: an SQLite pool gets an audit table filled by triggers inside each write
    transaction; CouchDB keeps every revision anyway (pouchdb-server does not compact). Call
    before creating tokens."""
    if isinstance(pool, SQLitePool):
        with contextlib.closing(sqlite3.connect(pool.path, timeout=60)) as db:
            db.executescript(HISTORY_SQL)


def status_history(pool: TokenPool, token_id: str, *, merged: bool = False) -> list[str]:
    """The status after each write of ``token_id``, oldest first; ``merged``: repeats of one
    status merged (the statuses it went through). (On SQLite a claim is two writes.)"""
    statuses: list[str] = []
    if isinstance(pool, SQLitePool):
        with contextlib.closing(sqlite3.connect(pool.path, timeout=60)) as db:
            rows = db.execute(
                "SELECT status FROM chaos_status_history WHERE id = ? ORDER BY seq", (token_id,)
            ).fetchall()
        statuses = [row[0] for row in rows]
    else:
        assert isinstance(pool, CouchDBPool)
        doc_url = f"{pool.db_url}/{quote(token_id, safe='')}"
        latest = requests.get(doc_url, params={"revs": "true"}, timeout=30).json()
        start, hashes = latest["_revisions"]["start"], latest["_revisions"]["ids"]
        for back, rev_hash in reversed(list(enumerate(hashes))):
            rev = f"{start - back}-{rev_hash}"
            doc = requests.get(doc_url, params={"rev": rev}, timeout=30).json()
            statuses.append(Token.from_doc(doc).status.value)
    if not merged:
        return statuses
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


def promotions(history: list[str]) -> int:
    """How many writes promoted a token (of an unmerged :func:`status_history`): writes that
    made it todo when it was waiting or blocked, or todo already (nothing else writes a todo
    token over a todo token: a second promotion that found it promoted already)."""
    before = {TokenStatus.WAITING.value, TokenStatus.BLOCKED.value, TokenStatus.TODO.value}
    return sum(
        1 for a, b in itertools.pairwise(history) if a in before and b == TokenStatus.TODO.value
    )


def _phase(pool: TokenPool, pilot_name: str) -> str:
    """What a pilot (by its --workdir-independent log name) is doing: the status of a token it
    holds, or 'claiming' when it holds none."""
    for token in pool.tokens():
        attempt = token.current_attempt
        if token.status.picas == "locked" and attempt and attempt.job_id == pilot_name:
            return token.status.value
    return "claiming"


def run_chaos(config: ChaosConfig) -> ChaosReport:
    rng = random.Random(config.seed)
    config.workdir.mkdir(parents=True, exist_ok=True)
    steps = config.workdir / "steps"
    steps.mkdir(exist_ok=True)
    (steps / "chaos.toml").write_text(STEP)
    results = config.workdir / "results"
    scratch = config.workdir / "scratch"
    logs = config.workdir / "logs"
    logs.mkdir(exist_ok=True)
    report = ChaosReport(backend=config.backend, tokens=config.tokens)
    target = _Pool(config)
    pool = target.pool
    pool.create(
        [new_token(f"chaos_{i:04d}", inputs="none", step="chaos") for i in range(config.tokens)]
    )
    started = time.monotonic()
    running: dict[str, subprocess.Popen[bytes]] = {}
    killed: list[int] = []
    stop_recover = threading.Event()
    recover_paused_until = [0.0]
    pool_down = threading.Event()

    def start_pilot() -> None:
        name = f"chaos-pilot-{report.pilots_started}"
        report.pilots_started += 1
        with (logs / f"{name}.log").open("wb") as out:
            running[name] = subprocess.Popen(
                [
                    GRIDLRT, "worker", "run", "--pool", target.url, "--steps-dir", str(steps),
                    "--heartbeat", f"{config.heartbeat}s", "--idle-timeout", "3s",
                    "--pool-patience", "10m", "--workdir", str(scratch),
                    "--output-root", results.as_uri(),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "GRIDLRT_JOB_ID": name},
                start_new_session=True,
            )  # fmt: skip

    def recover_loop() -> None:
        while not stop_recover.wait(1.0):
            if pool_down.is_set() or time.monotonic() < recover_paused_until[0]:
                continue
            report.recovered += len(pool.recover(config.stale_after, max_scrubs=10_000))

    def todo_left() -> bool:
        counts = pool.overview().by_status()
        return counts[TokenStatus.DONE.value] + counts[TokenStatus.ERROR.value] < config.tokens

    def take_pool_away() -> None:
        """The outage, in its own thread: kills go on meanwhile."""
        pool_down.set()
        t0 = time.monotonic()
        target.stop()
        time.sleep(config.outage)
        target.start()
        report.outage_seconds += time.monotonic() - t0
        recover_paused_until[0] = time.monotonic() + 3 * config.stale_after + 8.0
        report.outages += 1
        pool_down.clear()

    outage: threading.Thread | None = None
    recoverer = threading.Thread(target=recover_loop, daemon=True)
    recoverer.start()
    outage_at = started + 3.0
    next_kill = started + 1.0
    try:
        for _ in range(config.pilots):
            start_pilot()
        while time.monotonic() - started < config.timeout:
            now = time.monotonic()
            if outage is None and now >= outage_at:
                outage = threading.Thread(target=take_pool_away, daemon=True)
                outage.start()
            if report.kills < config.kills and now >= next_kill and running:
                name = rng.choice(sorted(running))
                phase = "pool down" if pool_down.is_set() else _phase(pool, name)
                proc = running.pop(name)
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed.append(proc.pid)
                    report.kills += 1
                    report.kills_by_phase[phase] = report.kills_by_phase.get(phase, 0) + 1
                # fewer kills while the pool is away: most should hit pilots at work
                spacing = 4.0 if pool_down.is_set() else 1.0
                next_kill = now + spacing * rng.uniform(0.3, 2 * config.kill_every)
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    running.pop(name)
            more = pool_down.is_set() or todo_left()  # pilots also start during the outage
            if not more and not running and report.outages:
                break
            while more and len(running) < config.pilots:
                start_pilot()
            time.sleep(0.1)
        else:
            raise AssertionError(f"chaos run did not end within {config.timeout:.0f} s")
        # one last pilot: it finds nothing to do, and cleans what killed pilots left here
        start_pilot()
        for proc in running.values():
            proc.wait(120)
    finally:
        stop_recover.set()
        recoverer.join(10)
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
        report.seconds = time.monotonic() - started
        _judge(report, pool, results, scratch, killed)
        target.close()
    return report


def _judge(
    report: ChaosReport, pool: TokenPool, results: Path, scratch: Path, killed: list[int]
) -> None:
    statuses: Counter[str] = Counter()
    for token in pool.tokens():
        statuses[token.status.value] += 1
        report.attempts += len(token.attempts)
        done_attempts = [a for a in token.attempts if a.outcome == "done"]
        if token.status is TokenStatus.DONE and len(done_attempts) == 1:
            report.done_once += 1
        elif len(done_attempts) > 1:
            report.done_twice += 1
        if token.status is TokenStatus.ERROR:
            report.in_error += 1
        out = results / token.id / "out.txt"
        if token.status is TokenStatus.DONE:
            if not out.is_file() or not (results / token.id / "big.bin").is_file():
                report.lost += 1
                continue
            lines = out.read_text().splitlines()
            marks = {line.split()[0] for line in lines}
            if marks != {f"{token.id}.{done_attempts[-1].id}"}:
                report.mixed_outputs += 1
            if [line.split()[1] for line in lines] != [str(i) for i in range(1, LINES + 1)]:
                report.incomplete_outputs += 1
    report.lost += report.tokens - sum(statuses.values())
    report.lost += sum(n for s, n in statuses.items() if s not in ("done", "error"))
    report.part_files = sum(1 for p in results.rglob("*") if ".part" in p.name)
    report.stray_processes = _strays(scratch, killed)
    if scratch.exists():
        report.workdirs_left = sum(1 for p in scratch.iterdir() if p.is_dir())


def _strays(scratch: Path, killed: list[int]) -> int:
    """Processes still running that belonged to killed pilots: any killed pid, or any process
    whose working directory is inside the shared scratch directory."""
    strays = 0
    root = str(scratch.resolve())
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ours = int(proc.name) in killed or os.readlink(proc / "cwd").startswith(root)
            if ours and "State:\tZ" not in (proc / "status").read_text():
                strays += 1
        except OSError:
            continue
    return strays
