"""The couchdb fixture is a real CouchDB-protocol server."""

from __future__ import annotations

import requests

from tests.services.couchdb import CouchDB


def test_put_get_and_conflict_on_stale_rev(couchdb_database: str) -> None:
    doc_url = f"{couchdb_database}/L123456_SB000"
    created = requests.put(doc_url, json={"type": "token", "lock": 0, "done": 0}, timeout=10)
    assert created.status_code == 201, created.text
    rev1 = created.json()["rev"]

    fetched = requests.get(doc_url, timeout=10).json()
    assert fetched["_rev"] == rev1
    assert fetched["type"] == "token"

    updated = requests.put(doc_url, json={**fetched, "lock": 1700000000}, timeout=10)
    assert updated.status_code == 201, updated.text

    stale = requests.put(doc_url, json={**fetched, "lock": 1700000001}, timeout=10)
    assert stale.status_code == 409
    assert stale.json()["error"] == "conflict"
    assert requests.get(doc_url, timeout=10).json()["lock"] == 1700000000


def test_design_document_view_with_builtin_reduce(couchdb_database: str) -> None:
    design = {
        "language": "javascript",
        "views": {
            "overview_total": {
                "map": "function(doc){ if(doc.type=='token'){"
                " emit(doc.lock>0?'locked':'todo',1); } }",
                "reduce": "_sum",
            }
        },
    }
    assert requests.put(f"{couchdb_database}/_design/Monitor", json=design, timeout=10).ok
    docs = [{"_id": f"t{i}", "type": "token", "lock": i % 3} for i in range(30)]
    bulk = requests.post(f"{couchdb_database}/_bulk_docs", json={"docs": docs}, timeout=30)
    assert bulk.status_code == 201
    rows = requests.get(
        f"{couchdb_database}/_design/Monitor/_view/overview_total",
        params={"group": "true"},
        timeout=60,
    ).json()["rows"]
    assert {r["key"]: r["value"] for r in rows} == {"todo": 10, "locked": 20}


def test_databases_are_isolated(couchdb: CouchDB) -> None:
    first, second = couchdb.new_database(), couchdb.new_database()
    requests.put(f"{first}/only-here", json={}, timeout=10).raise_for_status()
    assert requests.get(f"{second}/only-here", timeout=10).status_code == 404
