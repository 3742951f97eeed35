"""The pure rules of waiting tokens: when a child is ready, waiting or blocked, and what its
promotion gives it."""

from __future__ import annotations

from gridlrt.tokens import Token, TokenStatus, new_token
from gridlrt.tokens.dependencies import promote, settled_child, verdict
from gridlrt.tokens.model import Depends, ParentGroup, UploadResult


def parent(i: int, status: str) -> Token:
    data: dict[str, object] = {"_id": f"p{i}", "input": f"file:///in/{i}", "children": ["c"]}
    if status == "done":
        out = f"file:///out/p{i}.MS.tar"
        data.update(
            lock=1, done=2, exit_code=0, output=[out],
            uploads=[
                UploadResult(url=out, size=10, checksum="adler32:0a").model_dump(),
                UploadResult(url=f"file:///out/p{i}.log").model_dump(),  # the log: no output
            ],
        )  # fmt: skip
    elif status == "error":
        data.update(lock=1, done=2, exit_code=1)
    elif status == "running":
        data.update(lock=1, status="running")
    return Token.model_validate(data)


def child(n: int, min_done: float = 1.0, own: str | None = None) -> Token:
    ids = [f"p{i}" for i in range(n)]
    group = ParentGroup(ids=ids, min_done=min_done)
    return new_token("c", inputs=own, depends=Depends(groups=[group]))


def test_min_done_needs_the_rest_failed_for_good_and_blocks_when_out_of_reach() -> None:
    kid = child(10, min_done=0.9)  # 9 of 10
    states = ["done"] * 8 + ["error", "running"]
    parents = {f"p{i}": parent(i, s) for i, s in enumerate(states)}
    assert verdict(kid, parents).state == "waiting"  # 9 still possible
    parents["p9"] = parent(9, "done")
    assert verdict(kid, parents).state == "ready"
    parents["p9"] = parent(9, "error")
    found = verdict(kid, parents)
    assert found.state == "blocked" and "p8" in found.reason and "p9" in found.reason
    del parents["p7"]  # gone from the pool: failed for good too
    assert "not in the pool" in verdict(kid, parents).reason


def test_promotion_takes_outputs_in_the_groups_order_and_records_provenance() -> None:
    kid = child(3)
    parents = {f"p{i}": parent(i, "done") for i in (2, 0, 1)}  # read in any order
    new = settled_child(kid, parents)
    assert new is not None and new.status is TokenStatus.TODO and new.lock == 0
    assert new.input == [f"file:///out/p{i}.MS.tar" for i in range(3)]  # no logs
    assert [(p.id, p.outputs[0].checksum) for p in new.provenance] == [
        (f"p{i}", "adler32:0a") for i in range(3)
    ]
    assert settled_child(new, parents) is None  # idempotent: a todo child stays as it is


def test_an_extra_input_group_keeps_the_own_input() -> None:
    kid = new_token(
        "c",
        inputs="srm://x/L2_SB004_uv.MS_abcdef12.tar",
        depends=Depends(groups=[ParentGroup(name="cal_solve", ids=["p0"])]),
    )
    new = promote(kid, {"p0": parent(0, "done")})
    assert new.input == "srm://x/L2_SB004_uv.MS_abcdef12.tar"
    assert new.extra_inputs == {"cal_solve": ["file:///out/p0.MS.tar"]}


def test_a_child_with_children_that_blocks_owes_them_the_news() -> None:
    kid = child(1).model_copy(update={"children": ["grandchild"]})
    blocked = settled_child(kid, {"p0": parent(0, "error")})
    assert blocked is not None and blocked.status is TokenStatus.BLOCKED
    assert blocked.settled is False and blocked.lock == -1
    assert settled_child(blocked, {"p0": parent(0, "error")}) is None
