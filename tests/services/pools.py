"""The ``pool`` fixture: a fresh, initialised token pool on each backend in turn (embedded
SQLite in a temp file, and a database on the session's pouchdb-server). Tests that take it
run twice, so both backends keep one set of semantics. A test module may define its own
``pool`` (e.g. SQLite only) instead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlrt.tokens import TokenPool
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.sqlite import SQLitePool
from tests.services.couchdb import CouchDB


@pytest.fixture(params=["sqlite", "couchdb"])
def pool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TokenPool]:
    if request.param == "sqlite":
        made: TokenPool = SQLitePool(tmp_path / "pool.sqlite")
    else:
        server: CouchDB = request.getfixturevalue("couchdb")
        module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
        made = CouchDBPool(f"{server.url}/{module}_{time.time_ns()}")
    made.init()
    yield made
    made.close()
