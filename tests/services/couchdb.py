"""The ``couchdb`` fixture: a real CouchDB-protocol server (pouchdb-server) on a free port.

pouchdb-server is installed by ``make setup`` into ``tests/services/node_modules``. It speaks
CouchDB's HTTP API (documents, ``_rev`` conflicts, ``_bulk_docs``, design documents with
JavaScript views and built-in reduces, attachments), which is all gridlrt uses.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


def start_pouchdb_server(workdir: Path) -> CouchDB:
    """Start pouchdb-server with all its files under ``workdir``; fail if it does not come up."""
    node = shutil.which("node")
    if not POUCHDB_SERVER.exists() or node is None:
        pytest.fail(
            f"pouchdb-server not installed ({POUCHDB_SERVER}); run `make setup`", pytrace=False
        )
    port = free_port()
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
