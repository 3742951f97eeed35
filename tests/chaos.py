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

With ``replicas`` (CouchDB only, issue 19) the pool is two pouchdb-servers, each with the pool
database, replicating continuously both ways; pilots alternate between the copies (``--pool A
--pool-replicas B``, then ``--pool B --pool-replicas A``), the harness (tokens, recover, the
phase of a kill) uses the first copy, and the outage stops the second copy and restarts it on
its port with its data. Both replications run inside the second server: pouchdb-server 4.2.0
cannot keep them (no ``_replicator`` persistence), and a server that runs a continuous
replication whose other side goes away crashes (an unhandled replication error); so they die
with the second server, and are started again after each restart (also if it crashed). They
reach the first server through a proxy that holds each request ``lag`` seconds (as between
sites; 0.3 s makes a change take about 0.5 s from the first copy to the second and 1.6 s back,
on localhost 0.1 s): a claim made on one copy is not seen on the other for that long, the
window in which two pilots can claim one token. Every
``out.txt`` is watched while the pilots run, to catch an output published by an attempt that
was discarded later (a losing claim), even if a later attempt replaced it.

With ``pipeline``, the tokens are a small pipeline instead of independent tokens: ``tokens``
scatter tokens (the payload above), a gather token over each ``group`` of them, and one final
token over every gather token, built by hand as waiting tokens that list their parents
(``Depends``) and parents that list their children. A gather's payload lists the ``out.txt``
URLs among its inputs in ``inputs.txt`` (checking each is there), then does what a scatter
token does. Besides the random kills, ``aimed_kills`` times a pilot is watched while it works
on a parent and SIGKILLed the moment the parent is done: in the window between a parent's
finish and its children's promotion, or just after. Nothing but the pool's own users (idle
pilots' claims, the harness's recover) completes what those pilots left undone.

At the end the report counts what was done once, twice, or lost; outputs written by more than
one attempt or incomplete; ``.part`` leftovers; processes of killed pilots still running;
work directories left behind; and, for a pipeline, children stranded (waiting although their
parents decided them), promoted twice (every write of every child is kept: an audit trigger
on SQLite, every revision on CouchDB) and with wrong gathered inputs (input, provenance or what
the payload saw is not exactly its parents' outputs, each once). With ``replicas``, once
replication has settled: documents whose revision differs between the copies, documents with
conflicts left on either copy, tokens with an ``out.txt`` (at the end, or seen during the run)
written by an attempt the token's final document does not know (a losing claim's, whose
revisions were deleted), and losing revisions (deleted leaves of a token's revision tree) done
by an attempt that the winning revision has not done: a finish accepted and then thrown away;
and, as figures, the claims that lost (wasted attempts) and the pilots' "its work here is
discarded" lines. Every count but ``done_once`` must be zero.
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
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from gridlrt.tokens import Token, TokenPool, TokenStatus, dependencies, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.model import ACTIVE, FINISHED, Depends, ParentGroup
from gridlrt.tokens.sqlite import SQLitePool

if TYPE_CHECKING:
    from tests.services.couchdb import CouchDB

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
LINES = 5
PAYLOAD = (
    'mark=$(basename "$PWD"); i=0; while [ $i -lt ' + str(LINES) + " ]; do i=$((i+1)); "
    'echo "$mark $i" >> out.txt; sleep 0.15; done; head -c 2000000 /dev/zero > big.bin'
)
STEP = (
    'name = "chaos"\nkind = "command"\nmax_attempts = 3\n'
    f'command = ["sh", "-c", {json.dumps(PAYLOAD)}]\n'
    '[inputs]\nkind = "none"\n[outputs]\nkeep = ["out.txt", "big.bin"]\n'
    'url = "{root}/{token_id}/{name}"\n'
)
# a gather: every out.txt among its inputs (its parents' outputs) must be there; it lists them
GATHER_PAYLOAD = (
    'mark=$(basename "$PWD"); for u in {inputs}; do case $u in *out.txt) '
    'p=${{u#file://}}; [ -s "$p" ] || exit 3; echo "$mark $u" >> inputs.txt;; esac; done; '
    + PAYLOAD
)
GATHER_STEP = (
    'name = "chaos-gather"\nkind = "command"\nmax_attempts = 3\n'
    f'command = ["sh", "-c", {json.dumps(GATHER_PAYLOAD)}]\n'
    '[inputs]\nkind = "none"\n[outputs]\nkeep = ["out.txt", "big.bin", "inputs.txt"]\n'
    'url = "{root}/{token_id}/{name}"\n'
)
KEEP = {"chaos": ["out.txt", "big.bin"], "chaos-gather": ["out.txt", "big.bin", "inputs.txt"]}


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
    pipeline: bool = False  # tokens scatter tokens -> a gather per group -> one final token
    group: int = 4
    aimed_kills: int = 0  # kills of a pilot the moment its parent token is done
    quiet: float = 20.0  # pipeline: end when nothing was todo or active for this long
    replicas: bool = False  # couchdb: two servers replicating both ways; the second goes away
    lag: float = 0.3  # replicas: seconds each replication request to the first copy is held


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
    # a pipeline run
    pipeline: bool = False
    children: int = 0  # tokens with parents
    promotions: int = 0
    aimed: int = 0  # aimed kills: the moment a parent was done
    aimed_before_settle: int = 0  # ... of which landed before its children were all told
    stranded: int = 0
    promoted_twice: int = 0
    gathered_wrong: int = 0
    # a replicated pool
    replicas: bool = False
    copies_differ: int = 0  # documents whose _rev differs between the copies (or on one only)
    conflicts_left: int = 0  # documents with _conflicts on either copy
    loser_outputs: int = 0  # tokens with an out.txt written by an attempt the token lost
    losers_done: int = 0  # losing revisions (deleted) done by an attempt the winner has not done
    lost_claims: int = 0  # losing revisions whose attempt is not the winner's: wasted attempts
    lost_claims_by_phase: dict[str, int] = field(default_factory=dict)  # ... as far as they got
    lost_writes: int = 0  # other losing revisions (the winner's attempt: heartbeat vs recover)
    discarded: int = 0  # pilots' "its work here is discarded" (LostClaim in a token's work)
    discarded_conflict: int = 0  # ... of which said another pilot's claim won
    settle_seconds: float = 0.0  # replication settling after the last pilot
    replica_crashes: int = 0  # the second server died outside the outage (restarted)

    @property
    def failures(self) -> dict[str, int]:
        """Every count that must be zero, by name."""
        names = (
            "done_twice lost in_error mixed_outputs incomplete_outputs part_files "
            "stray_processes workdirs_left stranded promoted_twice gathered_wrong "
            "copies_differ conflicts_left loser_outputs losers_done"
        )
        return {n: getattr(self, n) for n in names.split() if getattr(self, n)}

    def lines(self) -> list[str]:
        phases = ", ".join(f"{k} {v}" for k, v in sorted(self.kills_by_phase.items()))
        lines = [
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
        if self.pipeline:
            lines += [
                f"  pipeline: {self.children} children, {self.promotions} promotions; kills "
                f"aimed at a parent just done {self.aimed} ({self.aimed_before_settle} before "
                "its children were told)",
                f"  children stranded {self.stranded}, promoted twice {self.promoted_twice}, "
                f"gathered inputs wrong {self.gathered_wrong}",
            ]
        if self.replicas:
            lost = ", ".join(f"{k} {v}" for k, v in sorted(self.lost_claims_by_phase.items()))
            lines += [
                f"  replicas: copies differ {self.copies_differ}, conflicts left "
                f"{self.conflicts_left}, outputs of a losing attempt {self.loser_outputs}, "
                f"losing revisions that were done {self.losers_done} (replication settled in "
                f"{self.settle_seconds:.1f} s; second server crashes {self.replica_crashes})",
                f"  wasted attempts: claims that lost {self.lost_claims} ({lost}), other losing "
                f"writes {self.lost_writes}; pilots discarded work {self.discarded} times "
                f"({self.discarded_conflict} saying another claim won)",
            ]
        return lines


class _Pool:
    """The pool under test and how to take it away and bring it back. With replicas: two
    pouchdb-servers, the first (``url``) stays up, the second (``replica_url``) goes away."""

    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.servers: list[CouchDB] = []  # the last one is the one that goes away
        self.replica_url: str | None = None
        self._lock: sqlite3.Connection | None = None
        if config.backend == "sqlite":
            if config.replicas:
                raise ValueError("replicas: CouchDB only")
            self.url = f"sqlite:///{config.workdir / 'pool.sqlite'}"
            self.pool: TokenPool = SQLitePool(config.workdir / "pool.sqlite", busy_timeout=600)
        elif not config.replicas:
            self.servers = [_server(config.workdir / "couch")]
            self.url = self.servers[0].new_database("chaos")
            self.pool = CouchDBPool(self.url, patience=600)
        else:
            self.servers = [_server(config.workdir / "couch"), _server(config.workdir / "couch-b")]
            name = f"chaos_{uuid.uuid4().hex[:12]}"
            self.url, self.replica_url = (f"{s.url}/{name}" for s in self.servers)
            for url in (self.url, self.replica_url):
                requests.put(url, timeout=30).raise_for_status()
            self.lag = _LagServer(self.servers[0].url, config.lag)
            threading.Thread(target=self.lag.serve_forever, name="lag", daemon=True).start()
            self.lagged_url = f"http://127.0.0.1:{self.lag.server_address[1]}/{name}"
            self.replicate()
            self.pool = CouchDBPool(self.url, patience=600, replicas=[self.replica_url])
        if self.servers:
            self.port = int(self.servers[-1].url.rsplit(":", 1)[1])
        self.pool.init()

    def twin(self) -> TokenPool:
        """Another pool object on the same storage (for another thread of the harness)."""
        if not self.servers:
            return SQLitePool(self.config.workdir / "pool.sqlite", busy_timeout=600)
        return CouchDBPool(self.url, patience=600, replicas=self.replicas_of(self.url))

    def observer(self) -> TokenPool:
        """A pool object that only reads (the judge's): on replicas, one that does not know of
        them, so reading settles no conflict."""
        if self.replica_url is None:
            return self.pool
        return CouchDBPool(self.url, patience=60)

    @property
    def copies(self) -> list[str]:
        return [self.url] if self.replica_url is None else [self.url, self.replica_url]

    def replicas_of(self, url: str) -> list[str]:
        return [u for u in self.copies if u != url]

    def pilot_args(self, k: int) -> list[str]:
        """``--pool`` (and ``--pool-replicas``) of the ``k``-th pilot: copies alternate."""
        own = self.copies[k % len(self.copies)]
        others = self.replicas_of(own)
        return ["--pool", own, *(["--pool-replicas", ",".join(others)] if others else [])]

    def replicate(self) -> None:
        """Start the continuous replications both ways, inside the second server (see the
        module docstring: they die with it, and start again with it)."""
        assert self.replica_url is not None
        first = self.lagged_url
        for source, target in ((first, self.replica_url), (self.replica_url, first)):
            requests.post(
                f"{self.servers[-1].url}/_replicate",
                json={"source": source, "target": target, "continuous": True},
                timeout=60,
            ).raise_for_status()

    def replica_crashed(self) -> bool:
        """The second server (that runs the replications) died by itself."""
        return self.replica_url is not None and not self.servers[-1].process.alive

    def stop(self) -> None:
        if self.servers:
            self.servers[-1].process.stop()
        else:
            self._lock = sqlite3.connect(self.config.workdir / "pool.sqlite", timeout=60)
            self._lock.execute("BEGIN EXCLUSIVE")

    def start(self) -> None:
        if self.servers:
            directory = "couch" if self.replica_url is None else "couch-b"
            self.servers[-1] = _server(self.config.workdir / directory, port=self.port)
            if self.replica_url is not None:
                self.replicate()
        elif self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    def in_sync(self, timeout: float) -> float:
        """Wait until every copy has the same revision of every document (twice in a row, a
        second apart): how long it took; the timeout when they never got there."""
        if self.replica_url is None:
            return 0.0
        t0 = time.monotonic()
        last: list[dict[str, str]] | None = None
        while time.monotonic() - t0 < timeout:
            now = [_revisions(url) for url in self.copies]
            if all(r == now[0] for r in now) and now == last:
                return time.monotonic() - t0
            last = now
            time.sleep(1.0)
        return timeout

    def close(self) -> None:
        self.pool.close()
        for server in self.servers:
            server.process.stop()
        if self.replica_url is not None:
            self.lag.shutdown()
            self.lag.server_close()


class _Lag(BaseHTTPRequestHandler):
    """Forward each request to the upstream server after holding it ``delay`` seconds; one
    request per connection."""

    protocol_version = "HTTP/1.1"
    server: _LagServer
    HOP = ("host", "content-length", "transfer-encoding", "connection", "keep-alive",
           "accept-encoding", "content-encoding", "date", "server")  # fmt: skip

    def _forward(self) -> None:
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        time.sleep(self.server.delay)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self.HOP}
        try:
            answer = requests.request(
                self.command, self.server.upstream + self.path, headers=headers, data=body,
                timeout=600,
            )  # fmt: skip
        except requests.RequestException:
            return  # the replication sees the connection end, as with the server gone
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in self.HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _LagServer(ThreadingHTTPServer):
    """The replication's way to the first copy (see :class:`_Lag`)."""

    daemon_threads = True

    def __init__(self, upstream: str, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _Lag)
        self.upstream, self.delay = upstream, delay

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client gone meanwhile (the second server stopped): nothing to tell


def _server(directory: Path, port: int | None = None) -> CouchDB:
    from tests.services.couchdb import start_pouchdb_server

    return start_pouchdb_server(directory, port=port)


def _revisions(db_url: str) -> dict[str, str]:
    """Every document's winning revision on one copy (none on a copy that is down)."""
    try:
        rows = requests.get(f"{db_url}/_all_docs", timeout=30).json()["rows"]
    except (requests.RequestException, ValueError, KeyError):
        return {}
    return {row["id"]: row["value"]["rev"] for row in rows}


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


def status_history(
    pool: TokenPool, token_id: str, *, merged: bool = False, copies: Sequence[str] = ()
) -> list[str]:
    """The status after each write of ``token_id``, oldest first; ``merged``: repeats of one
    status merged (the statuses it went through). (On SQLite a claim is two writes.) On a
    replicated CouchDB pool, an older revision's body may be only on the copy that wrote it:
    ``copies`` are the other copies to look in."""
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
            token = _revision([pool.db_url, *copies], token_id, f"{start - back}-{rev_hash}")
            if token is None:
                raise AssertionError(f"{token_id}: revision {start - back}-{rev_hash} is nowhere")
            statuses.append(token.status.value)
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
    holds; 'settling' when it holds none but finished a parent whose children are not all
    told yet; else 'claiming'."""
    settling = False
    for token in pool.tokens():
        attempt = token.current_attempt
        if attempt is None or attempt.job_id != pilot_name:
            continue
        if token.status.picas == "locked":
            return token.status.value
        settling = settling or (token.status in FINISHED and token.settled is False)
    return "settling" if settling else "claiming"


def _holder(token: Token) -> str | None:
    """The pilot (by its log name, GRIDLRT_JOB_ID) of the token's last attempt."""
    attempt = token.current_attempt
    return attempt.job_id if attempt is not None else None


# --- a pipeline: scatter -> gather by group -> final ---------------------------------------------


def pipeline_tokens(scatter: int, group: int) -> list[list[Token]]:
    """``scatter`` tokens of the chaos step, a gather token (step chaos-gather) over each
    ``group`` of them, and one final token over all gather tokens; in three batches to create
    in order, children first (a parent never finishes before its children exist)."""
    ids = [f"chaos_{i:04d}" for i in range(scatter)]
    groups = [ids[i : i + group] for i in range(0, scatter, group)]
    gathers = [f"gather_{g:03d}" for g in range(len(groups))]

    def waiting(token_id: str, parents: list[str], children: list[str]) -> Token:
        rule = Depends(groups=[ParentGroup(name="input", ids=parents)])
        token = new_token(token_id, inputs=None, step="chaos-gather", depends=rule)
        return token.model_copy(update={"children": children})

    child_of = {i: gather for gather, members in zip(gathers, groups, strict=True) for i in members}
    return [
        [waiting("final", gathers, [])],
        [waiting(g, members, ["final"]) for g, members in zip(gathers, groups, strict=True)],
        [
            new_token(i, inputs="none", step="chaos").model_copy(update={"children": [child_of[i]]})
            for i in ids
        ],
    ]


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
    report = ChaosReport(
        backend=config.backend,
        tokens=config.tokens,
        pipeline=config.pipeline,
        replicas=config.replicas,
    )
    target = _Pool(config)
    pool = target.pool
    if config.pipeline:
        (steps / "chaos-gather.toml").write_text(GATHER_STEP)
        record_history(pool)
        batches = pipeline_tokens(config.tokens, config.group)
        for batch in batches:
            pool.create(batch)
        report.tokens = sum(len(batch) for batch in batches)
    else:
        pool.create(
            [new_token(f"chaos_{i:04d}", inputs="none", step="chaos") for i in range(config.tokens)]
        )
    if target.in_sync(120) >= 120:  # every copy has the tokens and the design document
        raise AssertionError("the copies of the pool did not get in sync within 120 s")
    started = time.monotonic()
    running: dict[str, subprocess.Popen[bytes]] = {}
    procs = threading.Lock()  # running, killed and the kill counts: the aiming thread's too
    killed: list[int] = []
    stop_recover = threading.Event()
    recover_paused_until = [0.0]
    pool_down = threading.Event()
    on_replica: set[str] = set()  # pilots on the copy that goes away (with replicas)
    seen: dict[str, set[str]] = {}  # token -> every out.txt mark seen while the pilots ran
    stop_watching = threading.Event()

    def start_pilot(idle: str = "3s") -> None:
        name = f"chaos-pilot-{report.pilots_started}"
        pool_args = target.pilot_args(report.pilots_started)
        if target.replica_url is not None and pool_args[1] == target.replica_url:
            on_replica.add(name)
        report.pilots_started += 1
        with (logs / f"{name}.log").open("wb") as out:
            running[name] = subprocess.Popen(
                [
                    GRIDLRT, "worker", "run", *pool_args, "--steps-dir", str(steps),
                    "--heartbeat", f"{config.heartbeat}s", "--idle-timeout", idle,
                    "--pool-patience", "10m", "--workdir", str(scratch),
                    "--output-root", results.as_uri(),
                    # a pipeline's idle pilots wait for promotions: look often
                    *(["--poll-interval", "1s"] if config.pipeline else []),
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
        return counts[TokenStatus.DONE.value] + counts[TokenStatus.ERROR.value] < report.tokens

    def quiet() -> bool:
        """Nothing todo or at work (only finished tokens and, if any, waiting ones)."""
        counts = pool.overview().by_status()
        return not any(counts[s.value] for s in (TokenStatus.TODO, *ACTIVE))

    def kill(name: str, phase: str) -> bool:
        """SIGKILL pilot ``name`` if it still runs (callers hold ``procs``)."""
        proc = running.pop(name, None)
        if proc is None or proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed.append(proc.pid)
        report.kills += 1
        report.kills_by_phase[phase] = report.kills_by_phase.get(phase, 0) + 1
        return True

    def aim_loop() -> None:
        """Now and then watch a pilot that works on a parent token, and SIGKILL it the moment
        the parent is done: between its finish and its children's promotion, or just after."""
        aim = random.Random(config.seed + 1)
        watcher = target.twin()
        try:
            while report.aimed < config.aimed_kills and not stop_aiming.wait(aim.uniform(0.2, 1)):
                if pool_down.is_set():
                    continue
                with procs:
                    names = set(running)
                held = sorted(
                    (t.current_attempt.job_id, t.id)
                    for t in watcher.tokens()
                    if t.status in ACTIVE and t.children and t.current_attempt is not None
                    and t.current_attempt.job_id in names
                )  # fmt: skip
                if not held:
                    continue
                name, token_id = aim.choice(held)
                deadline = time.monotonic() + 30
                token = watcher.get(token_id)
                while (
                    token.status in ACTIVE
                    and _holder(token) == name
                    and not pool_down.is_set()
                    and time.monotonic() < deadline
                ):
                    token = watcher.get(token_id)
                if token.status is not TokenStatus.DONE or _holder(token) != name:
                    continue  # released, lost or failed meanwhile
                if pool_down.is_set():
                    continue  # not "the moment" it was done: the pool went away meanwhile
                with procs:
                    if not kill(name, "parent done"):
                        continue
                    report.aimed += 1
                if watcher.get(token_id).settled is False:
                    report.aimed_before_settle += 1
        finally:
            watcher.close()

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
    outputs_watch = threading.Thread(target=_watch_outputs, args=(results, stop_watching, seen))
    if config.replicas:
        outputs_watch.start()
    recoverer = threading.Thread(target=recover_loop, daemon=True)
    recoverer.start()
    stop_aiming = threading.Event()
    aimer = threading.Thread(target=aim_loop, daemon=True)
    if config.aimed_kills:
        aimer.start()
    outage_at = started + 3.0
    next_kill = started + 1.0
    quiet_since: float | None = None
    try:
        with procs:
            for _ in range(config.pilots):
                start_pilot()
        while time.monotonic() - started < config.timeout:
            now = time.monotonic()
            if outage is None and now >= outage_at:
                outage = threading.Thread(target=take_pool_away, daemon=True)
                outage.start()
            if report.kills - report.aimed < config.kills and now >= next_kill and running:
                with procs:
                    name = rng.choice(sorted(running))
                if not pool_down.is_set():
                    phase = _phase(pool, name)
                elif config.replicas:  # the first copy is there: pilots on it work on
                    phase = "copy down" if name in on_replica else _phase(pool, name)
                else:
                    phase = "pool down"
                with procs:
                    kill(name, phase)
                # fewer kills while the pool is away: most should hit pilots at work
                spacing = 4.0 if pool_down.is_set() else 1.0
                next_kill = now + spacing * rng.uniform(0.3, 2 * config.kill_every)
            with procs:
                for name, proc in list(running.items()):
                    if proc.poll() is not None:
                        running.pop(name)
            if not pool_down.is_set() and target.replica_crashed():
                report.replica_crashes += 1  # it runs the replications: they died with it
                target.start()
            more = pool_down.is_set() or todo_left()  # pilots also start during the outage
            if not more and not running and report.outages:
                break
            if config.pipeline and report.outages and not pool_down.is_set():
                # children nobody promotes would wait for ever: end, and count them stranded
                quiet_since = (quiet_since or now) if more and quiet() else None
                if quiet_since is not None and now - quiet_since > config.quiet:
                    break
            with procs:
                while more and len(running) < config.pilots:
                    start_pilot()
            time.sleep(0.1)
        else:
            raise AssertionError(f"chaos run did not end within {config.timeout:.0f} s")
        stop_aiming.set()
        if aimer.is_alive():
            aimer.join(60)
        # one last pilot: it cleans what killed pilots left here as it starts and finds nothing
        # to do; once every token is finished nothing can appear, so it need not wait for work
        finished = not todo_left()
        with procs:
            start_pilot(idle="0s" if finished else "3s")
        for proc in running.values():
            proc.wait(120)
    finally:
        stop_aiming.set()
        stop_recover.set()
        recoverer.join(10)
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
        report.seconds = time.monotonic() - started
        stop_watching.set()
        if outputs_watch.is_alive():
            outputs_watch.join(30)
        try:
            if config.replicas:  # first: the judge's reading settles nothing
                _judge_copies(report, target, results, seen)
                _count_discarded(report, logs)
            observer = target.observer()
            _judge(report, observer, results, scratch, killed, target.replicas_of(target.url))
            if observer is not pool:
                observer.close()
        finally:
            target.close()  # the servers stop even when judging fails
    return report


def _judge(
    report: ChaosReport,
    pool: TokenPool,
    results: Path,
    scratch: Path,
    killed: list[int],
    copies: Sequence[str] = (),
) -> None:
    statuses: Counter[str] = Counter()
    everything = list(pool.tokens())
    for token in everything:
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
    if report.pipeline:
        _judge_children(report, pool, {t.id: t for t in everything}, results, copies)
    report.part_files = sum(1 for p in results.rglob("*") if ".part" in p.name)
    report.stray_processes = _strays(scratch, killed)
    if scratch.exists():
        report.workdirs_left = sum(1 for p in scratch.iterdir() if p.is_dir())


def _marks(path: Path) -> set[str]:
    """The work directories (``<token>.<attempt>``) named in an ``out.txt``."""
    try:
        return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}
    except OSError:
        return set()


def _watch_outputs(results: Path, stop: threading.Event, seen: dict[str, set[str]]) -> None:
    """Until ``stop``: every 0.2 s, note the marks of every new or changed ``out.txt`` (an
    upload renames it into place whole), so one that is replaced later is still seen."""
    stamps: dict[Path, tuple[int, int, int]] = {}
    while True:
        last = stop.is_set()
        for path in results.glob("*/out.txt") if results.is_dir() else ():
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamps.get(path) != stamp:
                stamps[path] = stamp
                seen.setdefault(path.parent.name, set()).update(_marks(path))
        if last:  # one more look after the pilots ended
            return
        stop.wait(0.2)


def _all_docs(db_url: str) -> dict[str, dict[str, Any]]:
    rows = requests.get(
        f"{db_url}/_all_docs", params={"include_docs": "true", "conflicts": "true"}, timeout=60
    ).json()["rows"]
    return {row["id"]: row["doc"] for row in rows if isinstance(row.get("doc"), dict)}


def _leaves(db_url: str, token_id: str) -> list[dict[str, Any]]:
    """Every leaf of a document's revision tree (deleted ones too), with its history."""
    answer = requests.get(
        f"{db_url}/{quote(token_id, safe='')}",
        params={"open_revs": "all", "revs": "true"},
        headers={"Accept": "application/json"},
        timeout=60,
    ).json()
    return [e["ok"] for e in answer if isinstance(e, dict) and isinstance(e.get("ok"), dict)]


def _judge_copies(
    report: ChaosReport, target: _Pool, results: Path, seen: dict[str, set[str]]
) -> None:
    """Once replication has settled: copies that differ, conflicts left, outputs of attempts
    the token's final document does not know, and the losing revisions (what the claims that
    lost had done, and any finish that was thrown away)."""
    report.settle_seconds = target.in_sync(120)
    docs = {url: _all_docs(url) for url in target.copies}
    ids = set().union(*docs.values())
    report.copies_differ = sum(
        1 for i in ids if len({(d.get(i) or {}).get("_rev") for d in docs.values()}) > 1
    )
    report.conflicts_left = sum(
        1 for i in ids if any((d.get(i) or {}).get("_conflicts") for d in docs.values())
    )
    for token_id, doc in sorted(docs[target.url].items()):
        if token_id.startswith("_design/"):
            continue
        token = Token.from_doc(doc)
        known = {f"{token.id}.{a.id}" for a in token.attempts}
        marks = seen.get(token_id, set()) | _marks(results / token_id / "out.txt")
        report.loser_outputs += bool(marks - known)
        # the losing revisions: each deleted leaf's parent (found on any copy), the furthest
        # one of each attempt (a losing branch may be deleted at two points, once per copy)
        parents: set[str] = set()
        for url in target.copies:
            for leaf in _leaves(url, token_id):
                history = leaf.get("_revisions") or {}
                if leaf.get("_deleted") and len(history.get("ids", ())) > 1:
                    parents.add(f"{history['start'] - 1}-{history['ids'][1]}")
        losers: dict[str | None, tuple[int, Token]] = {}
        for rev in parents:
            loser = _revision(target.copies, token_id, rev)
            if loser is None:
                continue
            attempt = loser.current_attempt.id if loser.current_attempt is not None else None
            generation = int(rev.split("-")[0])
            if attempt not in losers or losers[attempt][0] < generation:
                losers[attempt] = (generation, loser)
        winner_attempts = {a.id for a in token.attempts}
        winner_done = {a.id for a in token.attempts if a.outcome == "done"}
        for attempt_id, (_, loser) in losers.items():
            # a finish thrown away; not a losing write of a finish the winner has as well (two
            # pool users marking one finished parent settled, once on each copy)
            report.losers_done += loser.status is TokenStatus.DONE and attempt_id not in winner_done
            if attempt_id is not None and attempt_id not in winner_attempts:
                report.lost_claims += 1
                phase = loser.status.value
                report.lost_claims_by_phase[phase] = report.lost_claims_by_phase.get(phase, 0) + 1
            else:
                report.lost_writes += 1


def _revision(copies: list[str], token_id: str, rev: str) -> Token | None:
    """One revision of a token, from the first copy that has its body (replication carries
    only the leaves' bodies: an older revision may be on the copy that wrote it only)."""
    for url in copies:
        answer = requests.get(f"{url}/{quote(token_id, safe='')}", params={"rev": rev}, timeout=60)
        if answer.ok:
            return Token.from_doc(answer.json())
    return None


def _count_discarded(report: ChaosReport, logs: Path) -> None:
    """The pilots' own word (killed ones too): work on a token discarded (LostClaim)."""
    for path in logs.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if "its work here is discarded" in line:
                report.discarded += 1
                report.discarded_conflict += "claim won" in line


def _judge_children(
    report: ChaosReport,
    pool: TokenPool,
    tokens: dict[str, Token],
    results: Path,
    copies: Sequence[str] = (),
) -> None:
    """Per token with parents: promoted how many times (every write of it, from the pool's
    storage), stranded (waiting or blocked although settling it now would change it), and,
    once done, whether it gathered exactly its parents' outputs, each once."""
    for child in tokens.values():
        if child.depends is None:
            continue
        report.children += 1
        promoted = promotions(status_history(pool, child.id, copies=copies))
        report.promotions += promoted
        report.promoted_twice += promoted > 1
        parents: dict[str, Token | None] = {i: tokens.get(i) for i in child.depends.parent_ids}
        if dependencies.settled_child(child, parents) is not None:
            report.stranded += 1
        if child.status is TokenStatus.DONE and not _gathered_right(child, parents, results):
            report.gathered_wrong += 1


def _gathered_right(child: Token, parents: dict[str, Token | None], results: Path) -> bool:
    """The child's input, provenance and what its payload saw (``inputs.txt``, written by the
    attempt that finished it) are its parents' outputs (what their step keeps, at the step's
    URLs) in the group's order, each once."""
    assert child.depends is not None
    ids = child.depends.parent_ids
    found = [parents[i] for i in ids]
    if any(p is None or p.status is not TokenStatus.DONE for p in found):
        return False
    outputs = [
        f"{results.as_uri()}/{p.id}/{name}" for p in found if p is not None for name in KEEP[p.step]
    ]
    if child.input != outputs or [r.id for r in child.provenance] != ids:
        return False
    seen = results / child.id / "inputs.txt"
    if not seen.is_file():
        return False
    lines = [line.split() for line in seen.read_text().splitlines()]
    attempt = [a for a in child.attempts if a.outcome == "done"][-1]
    wanted = [u for u in outputs if u.endswith("/out.txt")]
    return (
        {mark for mark, _ in lines} == {f"{child.id}.{attempt.id}"}
        and [url for _, url in lines] == wanted
        and [url.rsplit("/", 2)[-2] for url in wanted] == ids
    )


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
