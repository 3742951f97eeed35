"""The winner among conflicting revisions (gridlrt.tokens.conflicts): one rule for all."""

from __future__ import annotations

import itertools

from gridlrt.tokens.conflicts import Leaf, leaf, leaves, losers, winner


def branch(ids: list[str], *, deleted: bool = False, status: str = "locked") -> Leaf:
    """A leaf whose history is ``ids`` from generation 1 on."""
    return leaf(
        {
            "_id": "t",
            "status": status,
            "_rev": f"{len(ids)}-{ids[-1]}",
            "_revisions": {"start": len(ids), "ids": ids[::-1]},
            **({"_deleted": True} if deleted else {}),
        }
    )


def test_the_first_write_after_the_split_decides_not_the_longest_branch() -> None:
    short = branch(["root", "aaa"])  # claimed, nothing since
    long = branch(["root", "bbb", "c1", "c2", "c3"])  # claimed later, heartbeats since
    assert winner([short, long]) is short
    assert winner([long, short]) is short
    assert losers([long, short]) == [long]


def test_every_order_of_the_same_leaves_gives_the_same_winner() -> None:
    found = [
        branch(["r", "x", "p"]),
        branch(["r", "x", "q", "q2"]),
        branch(["r", "m"]),
        branch(["r", "y", "z", "z2", "z3"]),
    ]
    winners = {winner(list(order)).rev for order in itertools.permutations(found)}  # type: ignore[union-attr]
    assert winners == {"2-m"}


def test_a_losing_branch_that_grows_stays_the_loser() -> None:
    mine = branch(["r", "c"])
    theirs = ["r", "d"]
    for more in range(1, 6):
        grown = branch(theirs + [f"h{i}" for i in range(more)])
        assert winner([grown, mine]) is mine


def test_deleted_leaves_never_win() -> None:
    gone = branch(["r", "a"], deleted=True)
    live = branch(["r", "z"])
    assert winner([gone, live]) is live
    assert losers([gone, live]) == []
    assert winner([gone]) is None


def test_holds_tells_whether_a_revision_is_in_a_leaf_s_history() -> None:
    found = branch(["r", "a", "b"])
    assert found.holds("2-a") and found.holds("3-b") and found.holds("1-r")
    assert not found.holds("2-b") and not found.holds("4-b") and not found.holds("junk")


def test_leaves_reads_an_open_revs_answer_and_skips_what_is_not_a_document() -> None:
    answer = [
        {"ok": {"_id": "t", "_rev": "2-b", "_revisions": {"start": 2, "ids": ["b", "a"]}}},
        {"missing": "3-zzz"},
        {"ok": {"_id": "t", "_rev": "2-c", "_deleted": True}},
        "junk",
    ]
    found = leaves(answer)
    assert [x.rev for x in found] == ["2-b", "2-c"]
    assert found[0].path == {2: "b", 1: "a"} and "_revisions" not in found[0].doc
    assert found[1].deleted and found[1].path == {2: "c"}
    assert leaves({"error": "not_found"}) == []


def test_a_finished_branch_wins_over_one_that_is_not() -> None:
    """A recovery (todo) on one copy raced a finish on another: the result is kept, whatever
    the revision ids."""
    recovered = branch(["r", "a", "todo"], status="todo")
    finished = branch(["r", "z", "done"], status="done")
    for order in ([recovered, finished], [finished, recovered]):
        assert winner(order) is finished
    other = branch(["r", "y", "done2"], status="done")
    assert winner([finished, other, recovered]) is other  # two done: the first rule again
