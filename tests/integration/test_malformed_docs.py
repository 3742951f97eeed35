"""One malformed document must not stop the pool's maintenance (issue 12, item 2), and
``tokens recover`` must not take tokens from live pilots (item 7).

Documents that are not valid tokens are written behind the pool's back (HTTP PUT on
pouchdb-server, the raw table of the SQLite file), then every path is tried on both backends,
through the library and through the real command line: the malformed document is skipped and
reported (id and reason), and everything else works as if it were not there.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from gridlrt.errors import InputError
from gridlrt.monitor import snapshot
from gridlrt.tokens import PilotInfo, Token, TokenPool, TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.sqlite import SQLitePool
from tests.gridlrt_cli import cli_env, gridlrt
from tests.services.couchdb import CouchDB

ANN = PilotInfo(pilot="pilot-ann", host="wn1.grid.sara.nl", job_id="1234_5")
DROP = object()  # a value in a change: remove the field


@dataclass
class Pool:
    pool: TokenPool
    url: str  # what --pool takes
    kind: str


@pytest.fixture(params=["sqlite", "couchdb"])
def pool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pool]:
    if request.param == "sqlite":
        path = tmp_path / "pool.sqlite"
        made: TokenPool = SQLitePool(path)
        url = f"sqlite:///{path}"
    else:
        server: CouchDB = request.getfixturevalue("couchdb")
        url = f"{server.url}/malformed_{time.time_ns()}"
        made = CouchDBPool(url)
    made.init()
    yield Pool(made, url, request.param)
    made.close()


def _column(value: Any, default: Any) -> Any:
    """What a raw writer would have put in a SQLite column for this field."""
    if value is None or value is DROP:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return json.dumps(value)
    return value


def put_raw(p: Pool, doc: dict[str, Any], *, text: str | None = None) -> bool:
    """Write ``doc`` (or, SQLite only, the raw ``text``) as it is, behind the pool's back;
    False when the CouchDB protocol itself refuses such a document (then no tool
    can put it in a CouchDB pool, and there is nothing for gridlrt to survive).

    The SQLite columns are filled as a careless tool would: from the document's own fields
    where they are plain values; a heartbeat that is not a number leaves the column at 0
    (the document was edited after the pilot's last heartbeat was written).
    """
    if isinstance(p.pool, CouchDBPool):
        response = requests.put(f"{p.pool.db_url}/{doc['_id']}", json=doc, timeout=10)
        if response.status_code >= 400 and not isinstance(doc.get("_attachments", {}), dict):
            return False  # pouchdb-server answers 400 or 500 to _attachments that is no object
        response.raise_for_status()
        return True
    assert isinstance(p.pool, SQLitePool)
    status = doc.get("status")
    beat = doc.get("heartbeat", 0)
    lock = doc.get("lock", 0)
    numbers = [v for v in (beat, lock) if isinstance(v, int | float) and not isinstance(v, bool)]
    with p.pool._write() as db:
        db.execute(
            "INSERT INTO tokens (id, status, step, priority, created, heartbeat, doc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                doc["_id"],
                status if isinstance(status, str) else "todo",
                _column(doc.get("step", "default"), "default"),
                _column(doc.get("priority", 0), 0),
                _column(doc.get("created", 0), 0),
                max(numbers, default=0) if not isinstance(beat, str) else 0,
                json.dumps(doc) if text is None else text,
            ),
        )
    return True


def changed(doc: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = {**doc, **change}
    return {k: v for k, v in out.items() if v is not DROP}


def running_doc(doc_id: str, **change: Any) -> dict[str, Any]:
    """An active token as a pilot (silent for an hour) left it, then changed."""
    then = time.time() - 3600
    doc = {
        "_id": doc_id,
        "type": "token",
        "lock": int(then),
        "done": 0,
        "hostname": "wn9",
        "scrub_count": 0,
        "input": "srm://x/L1_SB999_uv.MS.tar",
        "step": "average",
        "status": "running",
        "heartbeat": then,
        "created": then - 10,
        "priority": 0,
        "attempts": [{"pilot": "pilot-gone", "host": "wn9", "started": then}],
    }
    return changed(doc, change)


def todo_doc(doc_id: str, **change: Any) -> dict[str, Any]:
    """A todo token that would be claimed first (high priority, old), then changed."""
    doc = {
        "_id": doc_id,
        "type": "token",
        "lock": 0,
        "done": 0,
        "input": "srm://x/L1_SB998_uv.MS.tar",
        "step": "average",
        "status": "todo",
        "created": 1.0,
        "priority": 100,
    }
    return changed(doc, change)


# Each: a change that makes a document of type token an invalid token.
BROKEN: dict[str, dict[str, Any]] = {
    "heartbeat-word": {"heartbeat": "yesterday"},
    "heartbeat-null": {"heartbeat": None},
    "heartbeat-nan": {"heartbeat": "NaN"},
    "heartbeat-list": {"heartbeat": [1, 2]},
    "lock-word": {"lock": "soon"},
    "lock-fraction": {"lock": 12.5},
    "done-word": {"done": "no"},
    "scrub-count-word": {"scrub_count": "many"},
    "priority-word": {"priority": "high"},
    "priority-object": {"priority": {"level": 1}},
    "created-word": {"created": "monday"},
    "step-number": {"step": 123},
    "step-list": {"step": ["average"]},
    "hostname-number": {"hostname": 5},
    "exit-code-list": {"exit_code": [1]},
    "attempts-string": {"attempts": "oops"},
    "attempts-of-numbers": {"attempts": [1, 2]},
    "attempt-without-pilot": {"attempts": [{"host": "wn9", "started": 1.0}]},
    "attempt-started-word": {"attempts": [{"pilot": "p", "started": "then"}]},
    "error-string": {"error": "boom"},
    "error-entry-without-time": {"error": [{"message": "boom"}]},
    "progress-list": {"progress": ["50%"]},
    "progress-string": {"progress": "50%"},
    "parameters-string": {"parameters": "avg=4"},
    "uploads-string": {"uploads": "out.tar"},
    "attachments-string": {"_attachments": "log.txt"},
}


def good_tokens(n: int, step: str = "average") -> list[Token]:
    return [new_token(f"{step}_SB{i:03d}", inputs=f"L1_SB{i:03d}", step=step) for i in range(n)]


# --- recover -----------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", list(BROKEN), ids=list(BROKEN))
def test_recover_skips_a_malformed_active_document_and_recovers_the_rest(
    pool: Pool, broken: str
) -> None:
    p = pool.pool
    p.create(good_tokens(3))
    held = [p.claim(ANN) for _ in range(2)]
    assert all(held)
    stored = put_raw(pool, running_doc("broken", **BROKEN[broken]))

    recovered = p.recover(stale_after=60, now=time.time() + 3600)

    assert sorted(recovered) == sorted(t.id for t in held if t)
    for token in held:
        assert token and p.get(token.id).status is TokenStatus.TODO
    if not stored:  # the server refused it: only CouchDB's own _attachments check does that
        assert (pool.kind, broken) == ("couchdb", "attachments-string")
        return
    assert "broken" in p.malformed.reasons
    assert p.malformed.reasons["broken"]  # with a reason


def test_recover_command_reports_the_malformed_document_and_exits_0(
    pool: Pool, tmp_path: Path
) -> None:
    p = pool.pool
    p.create(good_tokens(3))
    held = [p.claim(ANN) for _ in range(2)]
    put_raw(pool, running_doc("broken", heartbeat="yesterday"))
    time.sleep(1.2)
    env = cli_env(tmp_path)

    result = gridlrt(env, "tokens", "recover", "--stale-after", "1s", "--pool", pool.url)

    assert result.returncode == 0, result.stderr
    assert "recovered 2 token(s)" in result.stdout
    assert "broken" in result.stderr and "heartbeat" in result.stderr
    assert all(t and p.get(t.id).status is TokenStatus.TODO for t in held)

    p.create(good_tokens(2, step="flag"))
    assert p.claim(ANN, step="flag")
    time.sleep(1.2)
    as_json = gridlrt(env, "tokens", "recover", "--stale-after", "1s", "--json", "--pool", pool.url)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["recovered"] == ["flag_SB000"]
    assert "heartbeat" in data["malformed"]["broken"]


# --- reset, archive, listing ----------------------------------------------------------------


def test_reset_and_archive_skip_malformed_documents(pool: Pool, tmp_path: Path) -> None:
    p = pool.pool
    p.create(good_tokens(2))
    a, b = p.claim(ANN), p.claim(ANN)
    assert a and b
    p.fail(a.id, ANN.pilot, "boom")
    p.finish(b.id, ANN.pilot)
    put_raw(pool, running_doc("bad-error", status="error", done=5, exit_code=1, error="boom"))
    put_raw(pool, running_doc("bad-done", status="done", done=5, exit_code=0, step=123))

    assert p.reset(ids=["bad-error", a.id]) == [a.id]
    assert "bad-error" in p.malformed.reasons
    assert p.reset(statuses=[TokenStatus.ERROR]) == []

    result = p.archive(tmp_path / "archive")
    assert result.tokens == 1 and result.file is not None
    assert [json.loads(line)["_id"] for line in result.file.read_text().splitlines()] == [b.id]


def test_listing_skips_and_reports_every_kind_of_malformed_document(pool: Pool) -> None:
    p = pool.pool
    p.create(good_tokens(2))
    for name, change in BROKEN.items():
        if name == "attachments-string" and pool.kind == "couchdb":
            continue  # CouchDB refuses it (see put_raw)
        put_raw(pool, todo_doc(f"todo-{name}", **change))
        put_raw(pool, running_doc(f"running-{name}", **change))
    if pool.kind == "sqlite":
        put_raw(pool, {"_id": "not-json"}, text="{oops")
        put_raw(pool, {"_id": "a-list"}, text="[1, 2]")

    assert sorted(t.id for t in p.tokens()) == ["average_SB000", "average_SB001"]
    assert sorted(t.id for t in p.tokens(TokenStatus.TODO, "average")) == [
        "average_SB000",
        "average_SB001",
    ]
    assert list(p.tokens(TokenStatus.RUNNING)) == []
    assert {f"todo-{n}" for n in BROKEN if n != "attachments-string"} <= set(p.malformed.reasons)


# --- overview and status ---------------------------------------------------------------------


def test_overview_counts_valid_tokens_and_names_malformed_documents(pool: Pool) -> None:
    p = pool.pool
    p.create(good_tokens(3))
    assert p.claim(ANN)
    broken = [n for n in BROKEN if not (n == "attachments-string" and pool.kind == "couchdb")]
    for name in broken:
        put_raw(pool, todo_doc(f"todo-{name}", **BROKEN[name]))
        put_raw(pool, running_doc(f"running-{name}", **BROKEN[name]))
    put_raw(pool, {"_id": "bare", "type": "token"})  # valid: PiCaS defaults for everything
    put_raw(pool, todo_doc("odd-but-valid", input={"a": [1, None]}, status="banana"))

    overview = p.overview()

    assert overview.counts == {"average": {"todo": 3, "locked": 1}, "default": {"todo": 1}}
    expected = {f"{kind}-{name}" for name in broken for kind in ("todo", "running")}
    assert set(overview.malformed) == expected
    assert all(overview.malformed.values())
    assert expected <= set(p.malformed.reasons)


def test_status_snapshot_survives_malformed_documents(pool: Pool) -> None:
    p = pool.pool
    p.create(good_tokens(2))
    assert p.claim(ANN)
    put_raw(pool, todo_doc("todo-step", step=123))
    put_raw(pool, running_doc("running-step", step=123))
    put_raw(pool, running_doc("running-progress", progress="50%"))

    snap = snapshot(p)

    assert [s.step for s in snap.steps] == ["average"]
    assert snap.step("average").counts["todo"] == 1
    assert len(snap.step("average").pilots) == 1
    assert snap.malformed == 3
    assert set(snap.malformed_docs) == {"todo-step", "running-step", "running-progress"}


def test_status_commands_report_malformed_documents_and_exit_0(pool: Pool, tmp_path: Path) -> None:
    p = pool.pool
    p.create(good_tokens(2))
    assert p.claim(ANN)
    put_raw(pool, todo_doc("todo-step", step=123))
    put_raw(pool, running_doc("running-step", step=123))
    env = cli_env(tmp_path)

    status = gridlrt(env, "status", "--pool", pool.url, check=False)
    assert status.returncode == 0, status.stderr
    assert "todo-step" in status.stdout + status.stderr
    snap = json.loads(gridlrt(env, "status", "--json", "--pool", pool.url).stdout)
    assert set(snap["malformed_docs"]) == {"todo-step", "running-step"}
    assert "step" in snap["malformed_docs"]["todo-step"]

    table = gridlrt(env, "tokens", "status", "--pool", pool.url, check=False)
    assert table.returncode == 0, table.stderr
    assert "running-step" in table.stderr
    counts = json.loads(gridlrt(env, "tokens", "status", "--json", "--pool", pool.url).stdout)
    assert counts["average"]["todo"] == 1 and counts["average"]["locked"] == 1
    assert set(counts["_malformed"]) == {"todo-step", "running-step"}


def test_list_and_show_commands_skip_and_report(pool: Pool, tmp_path: Path) -> None:
    p = pool.pool
    p.create(good_tokens(2))
    put_raw(pool, running_doc("running-hb", heartbeat="yesterday"))
    put_raw(pool, todo_doc("todo-attempts", attempts="oops"))
    env = cli_env(tmp_path)

    listed = gridlrt(env, "tokens", "list", "--pool", pool.url, check=False)
    assert listed.returncode == 0, listed.stderr
    assert "running-hb" in listed.stderr and "todo-attempts" in listed.stderr
    docs = json.loads(gridlrt(env, "tokens", "list", "--json", "--pool", pool.url).stdout)
    assert sorted(d["_id"] for d in docs) == ["average_SB000", "average_SB001"]
    running = gridlrt(env, "tokens", "list", "--status", "running", "--pool", pool.url)
    assert running.returncode == 0 and "running-hb" in running.stderr

    good = gridlrt(env, "tokens", "show", "average_SB000", "--pool", pool.url, check=False)
    assert good.returncode == 0, good.stderr
    bad = gridlrt(env, "tokens", "show", "running-hb", "--pool", pool.url, check=False)
    assert bad.returncode == 0, bad.stderr
    assert "yesterday" in bad.stdout  # the raw document, to repair it
    assert "not a valid token" in bad.stderr and "heartbeat" in bad.stderr
    raw = gridlrt(env, "tokens", "show", "running-hb", "--json", "--pool", pool.url)
    assert json.loads(raw.stdout)["heartbeat"] == "yesterday"


# --- claim -------------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", list(BROKEN), ids=list(BROKEN))
def test_claim_skips_a_malformed_todo_document(pool: Pool, broken: str) -> None:
    p = pool.pool
    put_raw(pool, todo_doc("first-but-broken", **BROKEN[broken]))
    p.create(good_tokens(1))

    for step in (None, "average"):
        token = p.claim(ANN, step=step)
        assert token is not None and token.id == "average_SB000"
        p.release(token.id, ANN.pilot)
    assert p.claim(ANN) is not None
    assert p.claim(ANN) is None


def test_claim_skips_documents_that_are_not_json_objects(tmp_path: Path) -> None:
    p = Pool(SQLitePool(tmp_path / "pool.sqlite"), "", "sqlite")
    p.pool.init()
    put_raw(p, todo_doc("not-json"), text="{oops")
    put_raw(p, todo_doc("a-list"), text="[1, 2]")
    put_raw(p, todo_doc("no-id", _id=DROP) | {"_id": "no-id"}, text='{"type": "token"}')
    p.pool.create(good_tokens(1))
    token = p.pool.claim(ANN)
    assert token is not None and token.id == "average_SB000"
    assert {"not-json", "a-list", "no-id"} <= set(p.pool.malformed.reasons)
    assert p.pool.overview().counts["average"] == {"locked": 1}


def test_non_finite_numbers_are_malformed(pool: Pool) -> None:
    p = pool.pool
    put_raw(pool, todo_doc("inf-created", created="Infinity"))
    put_raw(pool, running_doc("nan-started", attempts=[{"pilot": "p", "started": "NaN"}]))
    assert list(p.tokens()) == []
    assert {"inf-created", "nan-started"} <= set(p.malformed.reasons)
    assert p.recover(stale_after=60) == []


# --- recover guards (issue 12, item 7) -----------------------------------------------------------


@pytest.mark.parametrize("stale_after", [0, -5, math.nan])
def test_recover_refuses_a_stale_after_that_is_not_positive(pool: Pool, stale_after: float) -> None:
    pool.pool.create(good_tokens(1))
    assert pool.pool.claim(ANN)
    with pytest.raises(InputError, match="stale-after"):
        pool.pool.recover(stale_after)
    with pytest.raises(InputError, match="max-scrubs"):
        pool.pool.recover(3600, max_scrubs=0)
    assert pool.pool.overview().counts == {"average": {"locked": 1}}


def test_claim_records_the_pilots_heartbeat_interval(pool: Pool) -> None:
    pool.pool.create(good_tokens(1))
    who = PilotInfo(pilot="p", host="h", heartbeat_interval=30.0)
    token = pool.pool.claim(who)
    assert token is not None
    attempt = pool.pool.get(token.id).attempts[-1]
    assert attempt.heartbeat_interval == 30.0


def test_recover_refuses_a_stale_after_shorter_than_the_recorded_heartbeat(pool: Pool) -> None:
    p = pool.pool
    p.create(good_tokens(2))
    live = p.claim(PilotInfo(pilot="live", host="h", heartbeat_interval=30.0))
    assert live is not None
    soon = time.time() + 45  # 45 s later the live pilot may just not have beaten yet
    with pytest.raises(InputError, match=r"30s.*--force") as refused:
        p.recover(45, now=soon)
    assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match="--force"):
        p.recover(45, now=soon, dry_run=True)
    assert p.get(live.id).status is TokenStatus.LOCKED
    assert p.recover(90, now=soon) == []  # 3x the heartbeat: fine
    assert p.recover(45, now=soon, force=True) == [live.id]


def test_recover_command_guards(pool: Pool, tmp_path: Path) -> None:
    p = pool.pool
    p.create(good_tokens(1))
    assert p.claim(PilotInfo(pilot="live", host="h", heartbeat_interval=30.0))
    env = cli_env(tmp_path)

    for value in ("0", "-5m", "0s"):
        result = gridlrt(
            env, "tokens", "recover", f"--stale-after={value}", "--pool", pool.url, check=False
        )
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert "stale-after" in result.stderr or "not a duration" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    scrubs = gridlrt(env, "tokens", "recover", "--max-scrubs", "0", "--pool", pool.url, check=False)
    assert scrubs.returncode != 0 and "max-scrubs" in scrubs.stderr
    short = gridlrt(
        env, "tokens", "recover", "--stale-after", "1m", "--pool", pool.url, check=False
    )
    assert short.returncode != 0 and "--force" in short.stderr
    assert len(short.stderr.strip().splitlines()) == 1
    time.sleep(1.2)
    forced = gridlrt(env, "tokens", "recover", "--stale-after", "1s", "--force", "--pool", pool.url)
    assert "recovered 1 token(s)" in forced.stdout
