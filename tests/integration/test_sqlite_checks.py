"""The embedded pool checks documents where they are written (triggers keeping ``suspects``),
so its overview costs milliseconds on any size; these tests make sure nothing is missed.

Writes behind the pool's back (raw SQL, as sqlite3 or an older tool would make them) are
judged whole: an insert, an update of a valid token's document, an update of its columns
only. A pool made before the checks existed (no ``mark`` column, no triggers, malformed rows
already in it) gets them when opened, its old rows judged. On a pool mixing every kind of
malformed row with tokens at every status, the overview equals the full check of every row
(the path a pool that cannot be written takes). The single-parse shape check the triggers run
agrees with the per-field one on thousands of broken documents.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gridlrt.tokens import PilotInfo, Token, TokenStatus, design, new_token
from gridlrt.tokens.sqlite import SCHEMA, SQLitePool
from tests.integration.test_malformed_docs import BROKEN, changed, todo_doc

ANN = PilotInfo(pilot="pilot-ann", host="wn1")


def tokens(n: int) -> list[Token]:
    return [new_token(f"avg_SB{i:03d}", inputs=f"L1_SB{i:03d}", step="average") for i in range(n)]


def full_check(path: Path) -> tuple[dict[str, dict[str, int]], set[str]]:
    """The overview as a pool that cannot install the checks reads it (every row judged)."""
    pool = SQLitePool(path)
    pool._checks = False
    seen = pool.overview()
    pool.close()
    return seen.counts, set(seen.malformed)


def suspects(pool: SQLitePool) -> set[str]:
    return {r[0] for r in pool._db.execute("SELECT id FROM suspects")}


@pytest.fixture
def pool(tmp_path: Path) -> SQLitePool:
    made = SQLitePool(tmp_path / "pool.sqlite")
    made.init()
    return made


def test_a_raw_update_of_a_valid_document_is_judged(pool: SQLitePool) -> None:
    pool.create(tokens(4))
    doc = pool.get("avg_SB001").to_doc()
    doc.pop("_rev", None)
    with pool._write() as db:  # another tool edits a document; its columns look fine
        db.execute(
            "UPDATE tokens SET doc = ? WHERE id = 'avg_SB001'",
            (json.dumps(changed(doc, {"heartbeat": "yesterday"})),),
        )
        db.execute("UPDATE tokens SET doc = '[1, 2]' WHERE id = 'avg_SB002'")

    seen = pool.overview()

    assert set(seen.malformed) == {"avg_SB001", "avg_SB002"}
    assert seen.counts == {"average": {"todo": 2}}
    # the pool's own writes do not clear a verdict they did not earn: a claim parks them
    claimed = [pool.claim(ANN), pool.claim(ANN)]
    assert {t.id for t in claimed if t} == {"avg_SB000", "avg_SB003"}
    assert pool.claim(ANN) is None
    again = pool.overview()
    assert set(again.malformed) == {"avg_SB001", "avg_SB002"}
    assert again.counts == {"average": {"locked": 2}}


def test_a_raw_column_change_is_judged_and_a_repair_clears_the_verdict(pool: SQLitePool) -> None:
    pool.create(tokens(2))
    with pool._write() as db:
        db.execute("UPDATE tokens SET step = '' WHERE id = 'avg_SB000'")
    assert "avg_SB000" in suspects(pool)
    seen = pool.overview()  # the document is still a valid token: counted by what it says
    assert seen.counts == {"average": {"todo": 2}} and not seen.malformed

    with pool._write() as db:  # repaired by hand
        db.execute("UPDATE tokens SET step = 'average' WHERE id = 'avg_SB000'")
    assert suspects(pool) == set()


def test_the_pools_own_writes_stay_unsuspected_through_a_whole_life(pool: SQLitePool) -> None:
    pool.create(tokens(3))
    for _ in range(3):
        token = pool.claim(ANN)
        assert token is not None
        pool.heartbeat(token.id, ANN.pilot)
        if token.id == "avg_SB001":
            pool.fail(token.id, ANN.pilot, "exit 3", exit_code=3)
        else:
            pool.finish(token.id, ANN.pilot)
    assert pool.reset(ids=["avg_SB001"]) == ["avg_SB001"]
    pool.delete(["avg_SB002"])

    assert suspects(pool) == set()
    assert pool.overview().counts == {"average": {"done": 1, "todo": 1}}


@pytest.mark.parametrize("broken", list(BROKEN), ids=list(BROKEN))
def test_every_kind_of_broken_document_inserted_raw_is_a_suspect(
    pool: SQLitePool, broken: str
) -> None:
    pool.create(tokens(1))
    doc = todo_doc("raw", **BROKEN[broken])
    with pool._write() as db:
        db.execute(
            "INSERT INTO tokens (id, status, step, doc) VALUES ('raw', 'todo', 'average', ?)",
            (json.dumps(doc),),
        )
    assert "raw" in suspects(pool)
    counts, malformed = full_check(pool.path)
    seen = pool.overview()
    assert (seen.counts, set(seen.malformed)) == (counts, malformed)
    assert "raw" in seen.malformed


def old_pool(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """A pool as gridlrt made it before the checks: no ``mark`` column, no triggers."""
    old_schema = SCHEMA.replace(",\n    mark      INTEGER NOT NULL DEFAULT 0", "")
    assert "mark" not in old_schema
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(old_schema)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.executemany("INSERT INTO tokens (id, status, step, doc) VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def test_a_pool_made_before_the_checks_gets_them_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    good = [t.to_doc() for t in tokens(3)]
    rows = [(d["_id"], "todo", "average", json.dumps(d)) for d in good]
    rows.append(("bad", "todo", "average", json.dumps(todo_doc("bad", lock="soon"))))
    rows.append(("notjson", "todo", "average", "{"))
    old_pool(path, rows)

    pool = SQLitePool(path)
    seen = pool.overview()

    assert set(seen.malformed) == {"bad", "notjson"}
    assert seen.counts == {"average": {"todo": 3}}
    claimed = pool.claim(ANN)  # the pool's writes work on the added column
    assert claimed is not None and claimed.id in {d["_id"] for d in good}
    assert pool.overview().counts == {"average": {"todo": 2, "locked": 1}}
    meta = dict(pool._db.execute("SELECT key, value FROM meta").fetchall())
    assert meta["checks"]


def test_a_pool_that_cannot_take_the_checks_is_read_by_checking_every_row(
    tmp_path: Path,
) -> None:
    """Installing needs the write lock (a read-only file, or a writer that holds it)."""
    path = tmp_path / "old.sqlite"
    rows = [(d["_id"], "todo", "average", json.dumps(d)) for d in (t.to_doc() for t in tokens(2))]
    rows.append(("bad", "todo", "average", "[]"))
    old_pool(path, rows)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        pool = SQLitePool(path, busy_timeout=0.2)
        seen = pool.overview()
        assert pool._checks is False
        assert set(seen.malformed) == {"bad"} and seen.counts == {"average": {"todo": 2}}
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_the_overview_equals_the_full_check_on_a_mixed_pool(pool: SQLitePool) -> None:
    rng = random.Random(17)
    pool.create(tokens(60))
    for _ in range(30):
        token = pool.claim(ANN)
        assert token is not None
        luck = rng.random()
        if luck < 0.4:
            pool.finish(token.id, ANN.pilot)
        elif luck < 0.6:
            pool.fail(token.id, ANN.pilot, "boom")
    kinds = list(BROKEN)
    with pool._write() as db:
        for i, kind in enumerate(kinds):
            doc = todo_doc(f"raw{i}", **BROKEN[kind])
            db.execute(
                "INSERT INTO tokens (id, status, step, doc) VALUES (?, ?, ?, ?)",
                (
                    f"raw{i}",
                    rng.choice(["todo", "running", "nonsense"]),
                    "average",
                    json.dumps(doc),
                ),
            )
        for token_id in rng.sample([f"avg_SB{i:03d}" for i in range(60)], 10):
            doc = json.loads(
                db.execute("SELECT doc FROM tokens WHERE id = ?", (token_id,)).fetchone()[0]
            )
            kind = rng.choice(kinds)
            db.execute(
                "UPDATE tokens SET doc = ? WHERE id = ?",
                (json.dumps(changed(doc, BROKEN[kind])), token_id),
            )
    while pool.claim(ANN) is not None:  # claims park what they cannot parse
        pass

    seen = pool.overview()

    assert (seen.counts, set(seen.malformed)) == full_check(pool.path)
    assert seen.malformed  # the test is about something


def _mutations(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``doc`` with one member (or one member of one attempt) removed or of another kind."""
    out = json.loads(json.dumps(doc))
    target = out
    if out.get("attempts") and rng.random() < 0.4:
        target = rng.choice(out["attempts"])
    key = rng.choice(sorted(target))
    value = rng.choice([DROPPED, "x", "12", " 3.5e2 ", 1.5, 7, True, None, [1], [{}], {"a": 1}])
    if value is DROPPED:
        del target[key]
    else:
        target[key] = value
    return out


DROPPED = object()


def test_the_single_parse_shape_check_agrees_with_the_per_field_one() -> None:
    rng = random.Random(5)
    attempts = [{"pilot": "p", "host": "h", "started": 1.0}, {"pilot": "q", "started": 2}]
    base = todo_doc("t", attempts=attempts)
    docs = [base] + [_mutations(base, rng) for _ in range(3000)]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (doc TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [(json.dumps(d),) for d in docs])
    per_field = [r[0] for r in db.execute(f"SELECT {design.sql_misfit('doc')} FROM t")]
    once = [r[0] for r in db.execute(f"SELECT {design.sql_misfit_once('doc')} FROM t")]

    assert once == per_field
    assert 0 < sum(once) < len(once)  # both verdicts occur
    assert once[0] == 0


def test_a_status_only_claim_write_keeps_a_documents_verdict(pool: SQLitePool) -> None:
    """The claim's first write moves only the status; a document flagged by an outside write
    must stay flagged until the claim has judged it (and parked it)."""
    pool.create(tokens(1))
    with pool._write() as db:
        db.execute("UPDATE tokens SET doc = '{\"_id\": 1}', priority = 5 WHERE id = 'avg_SB000'")
    assert pool.claim(ANN) is None
    row = pool._db.execute("SELECT status FROM tokens WHERE id = 'avg_SB000'").fetchone()
    assert row[0] == "malformed" and "avg_SB000" in suspects(pool)
    assert TokenStatus.TODO.value not in pool.overview().counts.get("average", {})


def test_a_library_write_that_leaves_the_document_keeps_its_verdict(pool: SQLitePool) -> None:
    """The trigger's contract for a write that says it is this library's (``mark`` moved on)
    but leaves the document as it was (a column-only write): the document's verdict stands."""
    pool.create(tokens(2))
    with pool._write() as db:
        db.execute("UPDATE tokens SET doc = '{\"_id\": 1}' WHERE id = 'avg_SB000'")
        db.execute("UPDATE tokens SET heartbeat = 5, mark = mark + 1 WHERE id = 'avg_SB000'")
        db.execute("UPDATE tokens SET heartbeat = 5, mark = mark + 1 WHERE id = 'avg_SB001'")
    assert suspects(pool) == {"avg_SB000"}
    assert set(pool.overview().malformed) == {"avg_SB000"}


def test_pilots_opening_an_old_pool_at_once_install_the_checks_once(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    docs = [t.to_doc() for t in tokens(300)]
    old_pool(path, [(d["_id"], "todo", "average", json.dumps(d)) for d in docs])
    opener = (
        "import logging, sys; from pathlib import Path; "
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
        "from gridlrt.tokens.sqlite import SQLitePool; "
        f"print(SQLitePool(Path({str(path)!r})).overview().counts)"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", opener], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]

    assert all(run.returncode == 0 for run in runs)
    assert sum("installed the malformed-document checks" in out for out in outputs) == 1
    assert all("{'average': {'todo': 300}}" in out for out in outputs)


def _plans(pool: SQLitePool, action: Any) -> list[str]:
    """The query plans of the statements ``action`` runs on the pool's connection."""
    statements: list[str] = []
    db = pool._db
    db.set_trace_callback(statements.append)
    try:
        action()
    finally:
        db.set_trace_callback(None)
    plans = []
    for sql in statements:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
            rows = db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            plans.append(sql + " => " + " | ".join(str(r[-1]) for r in rows))
    return plans


def test_claiming_any_step_and_listing_a_status_sort_nothing(pool: SQLitePool) -> None:
    """bench/million_bench.py: without an index for them, a claim of any step sorted every todo
    row inside the write lock, and listing a status read all its rows for every page."""
    pool.create(tokens(50))
    claims = _plans(pool, lambda: pool.claim(ANN))
    listing = _plans(pool, lambda: list(pool.tokens(TokenStatus.TODO)))

    assert claims and listing
    assert not [p for p in claims + listing if "TEMP B-TREE" in p], claims + listing
