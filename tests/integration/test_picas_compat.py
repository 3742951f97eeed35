"""A gridlrt pool is a PiCaS pool: PiCaS's Monitor views count gridlrt tokens correctly, and
gridlrt's JavaScript status rules agree with its Python ones on every kind of document."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from gridlrt.tokens import PilotInfo, Token, TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from tests.services.couchdb import CouchDB

WHO = PilotInfo(pilot="p", host="wn")


@pytest.fixture
def pool(couchdb: CouchDB) -> CouchDBPool:
    made = CouchDBPool(f"{couchdb.url}/picas_{time.time_ns()}")
    made.init()
    return made


def view(pool: CouchDBPool, name: str, **params: str) -> list[dict[str, Any]]:
    url = f"{pool.db_url}/_design/Monitor/_view/{name}"
    return list(requests.get(url, params=params, timeout=60).json()["rows"])


def test_picas_views_count_gridlrt_tokens(pool: CouchDBPool) -> None:
    pool.create(new_token(f"t{i:02d}", inputs=f"L1_SB{i:03d}", step="avg") for i in range(10))
    claimed = [pool.claim(WHO) for _ in range(6)]
    assert all(claimed)
    ids = [t.id for t in claimed if t]
    pool.finish(ids[0], "p")
    pool.finish(ids[1], "p")
    pool.fail(ids[2], "p", "DP3 failed", exit_code=3)
    pool.set_status(ids[3], "p", TokenStatus.RUNNING)
    pool.fail(ids[4], "p", "transient", retry=True)  # back to todo

    expected = {"todo": 5, "locked": 2, "done": 2, "error": 1}
    for name, n in expected.items():
        rows = view(pool, name)
        assert len(rows) == n, name
        assert all(r["key"] == r["id"] == r["value"] for r in rows)  # keyed by _id, as PiCaS
    total = view(pool, "overview_total", group="true")
    assert {r["key"]: r["value"] for r in total} == expected
    assert pool.overview().by_status("avg") == {
        "waiting": 0,
        "blocked": 0,
        "todo": 5,
        "locked": 1,
        "downloading": 0,
        "running": 1,
        "uploading": 0,
        "done": 2,
        "error": 1,
    }


EDGE_CASES: list[dict[str, Any]] = [
    {"lock": 0, "done": 0},
    {"lock": 1700000000, "done": 0},
    {"lock": 1700000000, "done": 0, "status": "running"},
    {"lock": 1700000000, "done": 0, "status": "done"},  # stale status: lock/done decide
    {"lock": 1700000000, "done": 1700000100, "exit_code": 0},
    {"lock": 1700000000, "done": 1700000100, "exit_code": "0"},
    {"lock": 1700000000, "done": 1700000100, "exit_code": 2},
    {"lock": 1700000000, "done": 1700000100},  # no exit code: PiCaS calls this an error
    {"lock": 99, "done": 99},  # PiCaS 1.x error()
    {"lock": -1, "done": -1},  # older PiCaS error()
    {"lock": 0, "done": 0, "status": "error"},
    {"lock": -1, "done": 0},  # waiting for parents: in no PiCaS view
    {"lock": -1, "done": 0, "status": "blocked"},
    {"lock": -1, "done": 0, "status": "running"},  # a stale status: still waiting
]


def test_javascript_and_python_status_rules_agree(pool: CouchDBPool) -> None:
    for i, fields in enumerate(EDGE_CASES):
        doc = {
            "_id": f"case{i:02d}",
            "type": "token",
            "hostname": "",
            "scrub_count": 0,
            "input": "x",
            **fields,
        }
        requests.put(f"{pool.db_url}/{doc['_id']}", json=doc, timeout=10).raise_for_status()
    rows = view(pool, "gridlrt_status", reduce="false", include_docs="true")
    assert len(rows) == len(EDGE_CASES)
    for row in rows:
        python_status = Token.from_doc(row["doc"]).status.value
        assert row["key"][0] == python_status, (row["doc"], row["key"])
    by_id = {r["id"]: r["key"][0] for r in rows}
    assert by_id["case02"] == "running"
    assert by_id["case03"] == "locked"
    assert by_id["case07"] == "error"
    assert by_id["case09"] == "error"
    assert [by_id[f"case{i}"] for i in (11, 12, 13)] == ["waiting", "blocked", "waiting"]
    for name in ("todo", "locked", "done", "error"):  # PiCaS never sees a waiting token
        assert not {"case11", "case12", "case13"} & {r["id"] for r in view(pool, name)}


def test_init_keeps_views_others_added_and_upgrades_in_place(pool: CouchDBPool) -> None:
    design_url = f"{pool.db_url}/_design/Monitor"
    design = requests.get(design_url, timeout=10).json()
    design["views"]["my_view"] = {"map": "function(doc){ emit(doc._id, 1); }"}
    design["views"]["todo"] = {"map": "function(doc){ emit('outdated', 1); }"}
    design["gridlrt_version"] = 0
    requests.put(design_url, json=design, timeout=10).raise_for_status()
    pool.init()
    upgraded = requests.get(design_url, timeout=10).json()
    assert "my_view" in upgraded["views"]
    assert "outdated" not in upgraded["views"]["todo"]["map"]
    assert upgraded["gridlrt_version"] >= 1
    rev = upgraded["_rev"]
    pool.init()  # current: nothing to write
    assert requests.get(design_url, timeout=10).json()["_rev"] == rev
