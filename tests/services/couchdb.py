"""The ``couchdb`` fixture: a real CouchDB-protocol server (pouchdb-server) on a free port.

pouchdb-server is installed by ``make setup`` into ``tests/services/node_modules``. It speaks
CouchDB's HTTP API (documents, ``_rev`` conflicts, ``_bulk_docs``, design documents with
JavaScript views and built-in reduces, attachments), which is all gridlrt uses.
"""

from __future__ import annotations

import base64
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import uuid4

import pytest
import requests

from tests.services.process import ServiceProcess, free_port

SERVICES_DIR = Path(__file__).resolve().parent
POUCHDB_SERVER = SERVICES_DIR / "node_modules" / ".bin" / "pouchdb-server"


@dataclass
class CouchDB:
    """A running CouchDB-compatible server."""

    url: str  # base URL, no trailing slash, e.g. http://127.0.0.1:41234
    process: ServiceProcess

    def new_database(self, prefix: str = "test") -> str:
        """Create a fresh, uniquely named database; return its URL."""
        db_url = f"{self.url}/{prefix}_{uuid4().hex[:12]}"
        response = requests.put(db_url, timeout=30)
        response.raise_for_status()
        return db_url


def start_pouchdb_server(workdir: Path, port: int | None = None) -> CouchDB:
    """Start pouchdb-server with all its files under ``workdir`` (on ``port``, e.g. to restart
    a stopped one with its data; default a free one); fail if it does not come up."""
    node = shutil.which("node")
    if not POUCHDB_SERVER.exists() or node is None:
        pytest.fail(
            f"pouchdb-server not installed ({POUCHDB_SERVER}); run `make setup`", pytrace=False
        )
    port = port or free_port()
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    argv = [
        str(POUCHDB_SERVER),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dir", str(workdir / "data"),
        "--config", str(workdir / "config.json"),
        "--no-stdout-logs",
    ]  # fmt: skip
    proc = ServiceProcess("pouchdb-server", argv, workdir / "server.log", cwd=workdir).start()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc.wait_ready(lambda: requests.get(url, timeout=1).ok, timeout=60)
    print(f"pouchdb-server ready on {url} in {time.monotonic() - started:.1f} s")
    return CouchDB(url=url, process=proc)


@pytest.fixture(scope="session")
def couchdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CouchDB]:
    """A pouchdb-server for the whole test session."""
    server = start_pouchdb_server(tmp_path_factory.mktemp("couchdb"))
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def couchdb_database(couchdb: CouchDB) -> str:
    """A fresh, empty database on the session's server; returns its URL."""
    return couchdb.new_database()


@dataclass
class SecuredCouchDB:
    """The session's pouchdb-server behind a gate that demands HTTP Basic credentials."""

    url: str  # base URL of the gate, no credentials
    username: str
    password: str
    upstream: CouchDB
    rejected: list[str]  # "METHOD path" of every request turned away with 401

    def new_database(self, prefix: str = "secured") -> str:
        """A fresh database (made through the gate, with the credentials); its URL (no auth)."""
        name = f"{prefix}_{uuid4().hex[:12]}"
        response = requests.put(
            f"{self.url}/{name}", auth=(self.username, self.password), timeout=30
        )
        response.raise_for_status()
        return f"{self.url}/{name}"


class _Gate(BaseHTTPRequestHandler):
    """Forward authenticated requests to the upstream server; 401 for anything else.

    pouchdb-server 4.2.0 itself cannot enforce credentials: once an admin is configured it
    crashes on database requests ("db.info is not a function"), so the gate does the checking,
    the way CouchDB answers a database with members (401 + WWW-Authenticate).
    """

    protocol_version = "HTTP/1.1"
    server: _GateServer

    def _forward(self) -> None:
        expected = (
            "Basic "
            + base64.b64encode(f"{self.server.username}:{self.server.password}".encode()).decode()
        )
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.headers.get("Authorization") != expected:
            self.server.rejected.append(f"{self.command} {self.path}")
            payload = b'{"error":"unauthorized","reason":"Name or password is incorrect."}'
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="server"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "authorization", "content-length", "connection")
        }
        answer = requests.request(
            self.command,
            self.server.upstream + self.path,
            headers=headers,
            data=body,
            timeout=60,
        )
        content = answer.content
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "content-encoding",
            ):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_COPY = _forward

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _GateServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, username: str, password: str) -> None:
        super().__init__(("127.0.0.1", 0), _Gate)
        self.upstream, self.username, self.password = upstream, username, password
        self.rejected: list[str] = []


@pytest.fixture(scope="session")
def secured_couchdb(couchdb: CouchDB) -> Iterator[SecuredCouchDB]:
    """The session's pouchdb-server behind a Basic-auth gate with a password that contains
    characters shells and URLs care about; requests without it get 401."""
    password = f"Pw#{uuid4().hex[:10]}!&$x"
    server = _GateServer(couchdb.url, "lofar_pipeline", password)
    thread = threading.Thread(target=server.serve_forever, name="couchdb-gate", daemon=True)
    thread.start()
    try:
        yield SecuredCouchDB(
            url=f"http://127.0.0.1:{server.server_address[1]}",
            username="lofar_pipeline",
            password=password,
            upstream=couchdb,
            rejected=server.rejected,
        )
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class ReplicatedCouchDB:
    """Two CouchDB-protocol servers whose databases replicate with each other, the way a pool
    is copied between sites (and the way a CouchDB cluster's copies of a document behave):
    each accepts writes on its own, and replication carries them across, conflicts and all.
    Replications run inside the first server (pouchdb-server's ``_replicate``)."""

    first: CouchDB
    second: CouchDB

    def new_pair(self, prefix: str = "replicated", *, continuous: bool = True) -> tuple[str, str]:
        """A fresh database of one name on each server (URLs); with ``continuous``, they
        replicate both ways from now on, else only when :meth:`replicate` is called."""
        name = f"{prefix}_{uuid4().hex[:12]}"
        urls = (f"{self.first.url}/{name}", f"{self.second.url}/{name}")
        for url in urls:
            requests.put(url, timeout=30).raise_for_status()
        if continuous:
            for source, target in (urls, urls[::-1]):
                self._replicate(source, target, continuous=True)
        return urls

    def replicate(self, source: str, target: str) -> None:
        """Copy every change of ``source`` to ``target`` once, now (conflicts included)."""
        self._replicate(source, target, continuous=False)

    def _replicate(self, source: str, target: str, *, continuous: bool) -> None:
        response = requests.post(
            f"{self.first.url}/_replicate",
            json={"source": source, "target": target, "continuous": continuous},
            timeout=120,
        )
        response.raise_for_status()


@pytest.fixture(scope="module")
def replicated_couchdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedCouchDB]:
    """Two pouchdb-servers of their own (stopped after the module, with the continuous
    replications they run)."""
    first = start_pouchdb_server(tmp_path_factory.mktemp("replica_a"))
    try:
        second = start_pouchdb_server(tmp_path_factory.mktemp("replica_b"))
        try:
            yield ReplicatedCouchDB(first=first, second=second)
        finally:
            second.process.stop()
    finally:
        first.process.stop()
