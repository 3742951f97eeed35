"""Dependencies in the pool, both backends: waiting tokens, promotion, blocking through a chain,
reset with and without --cascade, and pilots that wait for the next stage."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gridlrt.errors import InputError
from gridlrt.tokens import PilotInfo, Token, TokenPool, TokenStatus, new_token, transitions
from gridlrt.tokens.model import Depends, ParentGroup, UploadResult

WHO = PilotInfo(pilot="p1", host="wn1")


def chain(pool: TokenPool) -> None:
    """a -> b -> c, each one waiting for the one before."""
    pool.create(
        [
            new_token("c", inputs=None, depends=Depends(groups=[ParentGroup(ids=["b"])])),
            new_token(
                "b",
                inputs=None,
                fields={"children": ["c"]},
                depends=Depends(groups=[ParentGroup(ids=["a"])]),
            ),
            new_token("a", inputs="srm://x/L1_SB000_uv.MS.tar", fields={"children": ["b"]}),
        ]
    )


def run(pool: TokenPool, token_id: str, url: str | None = None) -> Token:
    token = pool.claim(WHO)
    assert token is not None and token.id == token_id, token
    uploads = [UploadResult(url=url or f"file:///out/{token_id}.tar", checksum="adler32:1")]
    return pool.finish(token_id, WHO.pilot, uploads=uploads)


def statuses(pool: TokenPool, *ids: str) -> list[str]:
    return [pool.get(i).status.value for i in ids]


def test_a_chain_runs_in_order_and_outputs_become_inputs(pool: TokenPool) -> None:
    chain(pool)
    assert statuses(pool, "a", "b", "c") == ["todo", "waiting", "waiting"]
    run(pool, "a")
    assert pool.claim(PilotInfo(pilot="p2", host="wn2")) is not None  # b is todo at once
    pool.release("b", "p2")
    b = run(pool, "b")
    assert b.input == ["file:///out/a.tar"]
    assert [(p.id, p.outputs[0].url) for p in b.provenance] == [("a", "file:///out/a.tar")]
    c = run(pool, "c")
    assert c.status is TokenStatus.DONE and c.input == ["file:///out/b.tar"]
    assert pool.claim(WHO) is None


def test_blocked_travels_down_a_chain_and_a_reset_lifts_it(pool: TokenPool) -> None:
    chain(pool)
    assert pool.claim(WHO) is not None
    pool.fail("a", WHO.pilot, "DP3 exited 1", retry=False)
    assert statuses(pool, "b", "c") == ["blocked", "blocked"]
    assert "a" in pool.get("b").blocked_reason and "b" in pool.get("c").blocked_reason
    assert pool.reset(ids=["a"]) == ["a"]  # nothing started below it: no --cascade needed
    assert statuses(pool, "a", "b", "c") == ["todo", "waiting", "waiting"]
    run(pool, "a")
    run(pool, "b")
    run(pool, "c")
    assert statuses(pool, "a", "b", "c") == ["done", "done", "done"]


def test_resetting_a_consumed_parent_needs_cascade(pool: TokenPool) -> None:
    chain(pool)
    run(pool, "a")
    run(pool, "b")
    with pytest.raises(InputError, match="--cascade"):
        pool.reset(ids=["a"])
    assert statuses(pool, "a", "b", "c") == ["done", "done", "todo"]  # refused: nothing changed
    assert pool.reset(ids=["a"], cascade=True, dry_run=True) == ["a", "b", "c"]
    assert pool.reset(ids=["a"], cascade=True) == ["a", "b", "c"]
    assert statuses(pool, "a", "b", "c") == ["todo", "waiting", "waiting"]
    assert pool.get("b").input is None and pool.get("b").provenance == []
    run(pool, "a", "file:///out/a-again.tar")
    assert run(pool, "b").input == ["file:///out/a-again.tar"]


def test_pilots_wait_while_parents_are_being_worked_on(pool: TokenPool) -> None:
    chain(pool)
    assert pool.work_may_appear()  # a is todo: look again
    assert not pool.work_may_appear(step="other")  # nothing of that step will ever come
    assert pool.claim(WHO) is not None
    assert pool.claim(PilotInfo(pilot="p2", host="wn2")) is None
    assert pool.work_may_appear()  # a runs, b waits for it
    # a is written done, its pilot has not told b yet (or died): b's promotion is under way
    pool._update("a", lambda t: transitions.finish(t, WHO.pilot, time.time()))
    assert pool.status_counts().get("todo", 0) == 0 and pool.work_may_appear()
    pool.settle_pending()
    run(pool, "b")
    run(pool, "c")
    assert not pool.work_may_appear()  # all done


def test_archive_keeps_parents_their_children_still_wait_for(
    pool: TokenPool, tmp_path: Path
) -> None:
    pool.create(
        [
            new_token(
                "gather",
                inputs=None,
                depends=Depends(groups=[ParentGroup(ids=["p1", "p2"])]),
            ),
            *(
                new_token(i, inputs=f"file:///in/{i}", fields={"children": ["gather"]})
                for i in ("p1", "p2")
            ),
        ]
    )
    run(pool, "p1")
    archived = pool.archive(tmp_path / "archive")
    assert archived.tokens == 0 and archived.kept == ["p1"]  # gather still needs p1's output
    run(pool, "p2")  # gather is promoted: it has its inputs now
    archived = pool.archive(tmp_path / "archive")
    assert archived.tokens == 2 and archived.kept == []
    assert pool.get("gather").input == ["file:///out/p1.tar", "file:///out/p2.tar"]
