"""The pool contract: one suite, both backends, real storage (pouchdb-server, a SQLite file)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from gridlrt.errors import LostClaim, MalformedToken, RecordNotFound, TokenNotFound
from gridlrt.tokens import PilotInfo, Token, TokenPool, TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.sqlite import SQLitePool

ANN = PilotInfo(pilot="pilot-ann", host="wn1.grid.sara.nl", job_id="1234_5")
BOB = PilotInfo(pilot="pilot-bob", host="wn2.grid.sara.nl")


def put_raw(pool: TokenPool, doc: dict[str, object]) -> None:
    """Write a document behind the pool's back (what another tool might have written)."""
    if isinstance(pool, CouchDBPool):
        requests.put(f"{pool.db_url}/{doc['_id']}", json=doc, timeout=10).raise_for_status()
    else:
        assert isinstance(pool, SQLitePool)
        with pool._write() as db:
            db.execute(
                "INSERT INTO tokens (id, status, step, doc) VALUES (?, 'todo', 'default', ?)",
                (doc["_id"], json.dumps(doc)),
            )


def subbands(n: int, step: str = "average", **kw: object) -> list[Token]:
    return [
        new_token(
            f"{step}_L123456_SB{sb:03d}",
            inputs=f"srm://x/L123456_SB{sb:03d}_uv.MS.tar",
            step=step,
            **kw,
        )  # type: ignore[arg-type]
        for sb in range(n)
    ]


def test_init_is_idempotent(pool: TokenPool) -> None:
    pool.create(subbands(2))
    pool.init()
    assert pool.overview().total() == 2


def test_create_is_idempotent_and_reports_duplicates(pool: TokenPool) -> None:
    first = pool.create(subbands(5))
    assert len(first.created) == 5 and first.duplicates == []
    again = pool.create(subbands(7))
    assert sorted(again.duplicates) == sorted(t.id for t in subbands(5))
    assert len(again.created) == 2
    assert pool.overview().by_status("average")["todo"] == 7


def test_claim_takes_priority_then_age_and_filters_step(pool: TokenPool) -> None:
    old, new = subbands(2)
    urgent = new_token("average_urgent", inputs="x", step="average", priority=5)
    other = new_token("flag_L1_SB000", inputs="y", step="flag")
    pool.create([old])
    time.sleep(0.01)
    pool.create([new, urgent, other])

    assert pool.claim(ANN, step="flag").id == other.id  # type: ignore[union-attr]
    assert pool.claim(ANN, step="average").id == urgent.id  # type: ignore[union-attr]
    assert pool.claim(ANN, step="average").id == old.id  # type: ignore[union-attr]
    claimed = pool.claim(BOB)
    assert claimed is not None and claimed.id == new.id
    assert pool.claim(BOB) is None


def test_claim_marks_picas_fields_and_attempt(pool: TokenPool) -> None:
    pool.create(subbands(1))
    token = pool.claim(ANN)
    assert token is not None
    stored = pool.get(token.id)
    assert stored.status is TokenStatus.LOCKED
    assert stored.lock > 0 and stored.done == 0
    assert stored.hostname == ANN.host
    assert stored.attempts[-1].pilot == ANN.pilot
    assert stored.attempts[-1].job_id == "1234_5"
    assert stored.heartbeat >= stored.lock


def test_life_cycle_heartbeat_status_finish(pool: TokenPool) -> None:
    pool.create(subbands(1))
    token = pool.claim(ANN)
    assert token is not None
    before = pool.get(token.id).heartbeat
    time.sleep(0.01)
    pool.heartbeat(token.id, ANN.pilot, {"load": 0.5})
    assert pool.get(token.id).heartbeat > before
    pool.set_status(token.id, ANN.pilot, TokenStatus.RUNNING, {"phase": "dp3"})
    assert pool.get(token.id).status is TokenStatus.RUNNING
    assert pool.overview().by_status()["running"] == 1

    done = pool.finish(
        token.id, ANN.pilot, output=["dav://out/L123456_SB000.MS.tar"], timings={"run": 1.5}
    )
    assert done.status is TokenStatus.DONE
    stored = pool.get(token.id)
    assert stored.done > 0 and stored.exit_code == 0
    assert stored.output == ["dav://out/L123456_SB000.MS.tar"]
    assert stored.attempts[-1].outcome == "done"
    assert stored.attempts[-1].timings == {"run": 1.5}
    assert pool.overview().by_status()["done"] == 1


def test_fail_records_error_and_retry_releases(pool: TokenPool) -> None:
    pool.create(subbands(1))
    token = pool.claim(ANN)
    assert token is not None
    retried = pool.fail(token.id, ANN.pilot, "DP3 exited 1", log_tail="...\nbad", retry=True)
    assert retried.status is TokenStatus.TODO and retried.scrub_count == 1
    again = pool.claim(BOB)
    assert again is not None and again.id == token.id
    failed = pool.fail(again.id, BOB.pilot, "DP3 exited 2", exception="Traceback ...", exit_code=2)
    stored = pool.get(failed.id)
    assert stored.status is TokenStatus.ERROR
    assert stored.exit_code == 2
    assert [e.message for e in stored.error] == ["DP3 exited 1", "DP3 exited 2"]
    assert stored.error[0].log_tail.endswith("bad")
    assert [a.outcome for a in stored.attempts] == ["error", "error"]


def test_release_returns_token_to_todo(pool: TokenPool) -> None:
    pool.create(subbands(1))
    token = pool.claim(ANN)
    assert token is not None
    released = pool.release(token.id, ANN.pilot)
    assert released.status is TokenStatus.TODO
    stored = pool.get(token.id)
    assert stored.lock == 0 and stored.done == 0 and stored.scrub_count == 1
    assert stored.attempts[-1].outcome == "released"


def test_a_pilot_that_lost_its_token_cannot_touch_it(pool: TokenPool) -> None:
    pool.create(subbands(1))
    token = pool.claim(ANN)
    assert token is not None
    assert pool.recover(stale_after=60, now=time.time() + 120) == [token.id]
    reclaimed = pool.claim(BOB)
    assert reclaimed is not None and reclaimed.id == token.id
    for act in (
        lambda: pool.heartbeat(token.id, ANN.pilot),
        lambda: pool.finish(token.id, ANN.pilot),
        lambda: pool.fail(token.id, ANN.pilot, "late"),
        lambda: pool.release(token.id, ANN.pilot),
        lambda: pool.set_status(token.id, ANN.pilot, TokenStatus.RUNNING),
    ):
        with pytest.raises(LostClaim):
            act()
    assert pool.get(token.id).attempts[-1].pilot == BOB.pilot
    pool.finish(token.id, BOB.pilot)
    assert pool.get(token.id).status is TokenStatus.DONE


def test_recover_stale_tokens_then_error_at_max_scrubs(pool: TokenPool) -> None:
    pool.create(subbands(2))
    stale = pool.claim(ANN)
    assert stale is not None
    time.sleep(0.3)
    fresh = pool.claim(BOB)
    assert fresh is not None
    stale_beat = pool.get(stale.id).heartbeat
    assert pool.recover(stale_after=60, now=stale_beat + 1) == []
    both = pool.recover(stale_after=60, now=stale_beat + 120, dry_run=True)
    assert sorted(both) == sorted([stale.id, fresh.id])
    assert pool.get(stale.id).status is TokenStatus.LOCKED  # dry run changed nothing

    # 60.1 s after the first claim only ANN's token is silent for more than 60 s.
    assert pool.recover(stale_after=60, now=stale_beat + 60.1) == [stale.id]
    back = pool.get(stale.id)
    assert back.status is TokenStatus.TODO and back.scrub_count == 1
    assert back.attempts[-1].outcome == "lost"
    assert pool.get(fresh.id).status is TokenStatus.LOCKED

    assert pool.delete([fresh.id]) == 1
    for _ in range(2):  # lost twice more: the third loss reaches max_scrubs=3
        again = pool.claim(ANN)
        assert again is not None and again.id == stale.id
        assert pool.recover(stale_after=60, now=time.time() + 120, max_scrubs=3) == [stale.id]
    final = pool.get(stale.id)
    assert final.status is TokenStatus.ERROR
    assert final.scrub_count == 3
    assert "pilot lost" in final.error[-1].message
    assert final.exit_code == -1


def test_reset_by_status_age_and_ids(pool: TokenPool) -> None:
    pool.create(subbands(3))
    a, b, c = (pool.claim(ANN) for _ in range(3))
    assert a and b and c
    pool.fail(a.id, ANN.pilot, "boom")
    pool.finish(b.id, ANN.pilot)
    assert pool.reset(dry_run=True) == [a.id]
    assert pool.get(a.id).status is TokenStatus.ERROR
    assert pool.reset(older_than=3600) == []
    assert pool.reset() == [a.id]
    assert pool.get(a.id).status is TokenStatus.TODO
    assert pool.get(a.id).error[0].message == "boom"  # history is kept
    assert pool.reset(statuses=[TokenStatus.DONE]) == [b.id]
    assert pool.reset(ids=[c.id]) == [c.id]
    assert pool.overview().by_status()["todo"] == 3


def test_attachments_survive_updates(pool: TokenPool) -> None:
    pool.create(subbands(1))
    token = pool.claim(ANN)
    assert token is not None
    pool.attach(token.id, "log_tail.txt", b"DP3 says hi\n")
    pool.attach(token.id, "pilot.log", b"\x00binary\xff", "application/octet-stream")
    pool.heartbeat(token.id, ANN.pilot)
    pool.finish(token.id, ANN.pilot)
    assert pool.attachment_names(token.id) == ["log_tail.txt", "pilot.log"]
    assert pool.attachment(token.id, "pilot.log") == b"\x00binary\xff"
    pool.attach(token.id, "log_tail.txt", b"replaced")
    assert pool.attachment(token.id, "log_tail.txt") == b"replaced"
    with pytest.raises(TokenNotFound):
        pool.attachment(token.id, "nope")


def test_list_overview_delete(pool: TokenPool) -> None:
    pool.create(subbands(4) + subbands(2, step="flag"))
    claimed = pool.claim(ANN, step="flag")
    assert claimed is not None
    assert {t.id for t in pool.tokens(TokenStatus.TODO, "average")} == {t.id for t in subbands(4)}
    assert [t.id for t in pool.tokens(TokenStatus.LOCKED)] == [claimed.id]
    assert len(list(pool.tokens(step="flag"))) == 2
    assert len(list(pool.tokens())) == 6
    overview = pool.overview()
    assert overview.counts == {"average": {"todo": 4}, "flag": {"todo": 1, "locked": 1}}
    assert pool.delete([t.id for t in subbands(2)] + ["not-there"]) == 2
    assert pool.overview().total() == 4
    with pytest.raises(TokenNotFound):
        pool.get(subbands(1)[0].id)


def test_archive_exports_then_deletes(pool: TokenPool, tmp_path: Path) -> None:
    pool.create(subbands(3))
    for _ in range(2):
        token = pool.claim(ANN)
        assert token is not None
        pool.attach(token.id, "log.txt", f"log of {token.id}".encode())
        pool.finish(token.id, ANN.pilot)
    result = pool.archive(tmp_path / "archive")
    assert result.tokens == 2 and result.attachments == 2
    assert result.file is not None
    lines = [json.loads(line) for line in result.file.read_text().splitlines()]
    assert {d["status"] for d in lines} == {"done"}
    for doc in lines:
        log = tmp_path / "archive" / "attachments" / doc["_id"] / "log.txt"
        assert log.read_text() == f"log of {doc['_id']}"
    assert pool.overview().by_status() == {**{s.value: 0 for s in TokenStatus}, "todo": 1}
    assert pool.archive(tmp_path / "archive").tokens == 0
    assert not list((tmp_path / "archive").glob(".partial-*"))


def test_picas_minimal_tokens_are_claimed_and_finished(pool: TokenPool) -> None:
    for i in range(3):
        put_raw(
            pool,
            {
                "_id": f"picas_{i}",
                "type": "token",
                "lock": 0,
                "done": 0,
                "hostname": "",
                "scrub_count": 0,
                "input": f"L1_SB00{i}",
            },
        )
    token = pool.claim(ANN)
    assert token is not None and token.step == "default" and token.input.startswith("L1_SB")
    pool.finish(token.id, ANN.pilot, output="ok")
    assert pool.overview().counts == {"default": {"todo": 2, "done": 1}}


def test_malformed_documents_are_reported_and_skipped(pool: TokenPool) -> None:
    put_raw(pool, {"_id": "broken", "type": "token", "lock": 0, "done": 0, "attempts": "oops"})
    pool.create(subbands(1))
    token = pool.claim(ANN)
    assert token is not None and token.id == subbands(1)[0].id
    assert pool.claim(ANN) is None
    assert [t.id for t in pool.tokens()] == [token.id]
    assert "broken" in pool.malformed.reasons
    assert "attempts" in pool.malformed.reasons["broken"]
    assert "attempts" in pool.overview().malformed["broken"]  # counted nowhere, but named
    with pytest.raises(MalformedToken, match="broken is not a valid token"):
        pool.get("broken")


def test_side_records_live_beside_tokens_without_being_tokens(pool: TokenPool) -> None:
    pool.create(subbands(3))
    pool.put_record("job", "slurm-1", {"backend": "slurm", "job_ids": ["7_0", "7_1"]})
    pool.put_record("job", "local-2", {"backend": "local", "job_ids": []})
    pool.put_record("other", "slurm-1", {"x": 1})
    pool.put_record("job", "slurm-1", {"backend": "slurm", "job_ids": ["7_0"]})  # replaces

    assert pool.get_record("job", "slurm-1") == {"backend": "slurm", "job_ids": ["7_0"]}
    assert [r["backend"] for r in pool.records("job")] == ["local", "slurm"]
    assert pool.records("other") == [{"x": 1}]
    # tokens, counts and claims do not see records
    assert len(list(pool.tokens())) == 3
    assert pool.overview().total() == 3
    assert pool.delete_record("job", "local-2") is True
    assert pool.delete_record("job", "local-2") is False
    with pytest.raises(RecordNotFound, match="local-2"):
        pool.get_record("job", "local-2")
    assert [r["backend"] for r in pool.records("job")] == ["slurm"]


def test_side_records_are_found_by_their_index_keys(pool: TokenPool) -> None:
    pool.create(subbands(2))
    pool.put_record("dataset", "b", {"n": 2}, keys=["obsid:1", "step:avg"])
    pool.put_records(
        "dataset",
        {"a": {"n": 1}, "c": {"n": 3}, "d": {"n": 4}},
        {"a": ["obsid:1"], "c": ["obsid:2", "step:avg"]},  # d: no keys
    )
    pool.put_record("other", "a", {"n": 9}, keys=["obsid:1"])

    def numbers(key: str | None = None) -> list[int]:
        return [r["n"] for r in pool.records("dataset", key)]

    assert numbers() == [1, 2, 3, 4]
    assert numbers("obsid:1") == [1, 2] and numbers("step:avg") == [2, 3]
    assert numbers("obsid:3") == []
    assert pool.get_record("dataset", "b") == {"n": 2}  # the keys are no part of the body
    pool.put_record("dataset", "b", {"n": 5}, keys=["obsid:2"])  # replaced, keys too
    assert numbers("obsid:1") == [1] and numbers("obsid:2") == [5, 3]
    pool.put_records("dataset", {"a": {"n": 6}})  # replaced without keys
    assert numbers("obsid:1") == [] and numbers() == [6, 5, 3, 4]
    assert pool.delete_record("dataset", "c") is True
    assert numbers("step:avg") == [] and numbers("obsid:2") == [5]
    assert pool.records("other", "obsid:1") == [{"n": 9}]
    assert pool.overview().total() == 2 and len(list(pool.tokens())) == 2
