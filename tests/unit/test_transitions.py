"""The token life cycle as pure functions (gridlrt.tokens.transitions): what each transition
sets, who may apply it, and how tries are counted — no pool, no server."""

from __future__ import annotations

import pytest

from gridlrt.errors import LostClaim
from gridlrt.tokens import PilotInfo, Token, TokenStatus, new_token
from gridlrt.tokens import transitions as tr
from gridlrt.tokens.model import picas_state

ANN = PilotInfo(pilot="pilot-ann", host="wn1", job_id="42_1", heartbeat_interval=30.0)
BOB = PilotInfo(pilot="pilot-bob", host="wn2")
T0 = 1_800_000_000.0


def claimed(who: PilotInfo = ANN, at: float = T0) -> Token:
    return tr.claim(new_token("avg_SB100", inputs="L1_SB100"), who, at)


def test_claim_locks_the_picas_way_and_opens_an_attempt() -> None:
    token = claimed()
    assert (token.lock, token.done, token.hostname) == (int(T0), 0, "wn1")
    assert token.status is TokenStatus.LOCKED and picas_state(token.lock, 0, None) == "locked"
    attempt = token.attempts[-1]
    assert (attempt.pilot, attempt.job_id, attempt.started) == ("pilot-ann", "42_1", T0)
    assert attempt.heartbeat_interval == 30.0 and len(attempt.id) == 12
    with pytest.raises(LostClaim, match="not todo"):
        tr.claim(token, BOB, T0 + 1)


def test_every_attempt_has_its_own_id() -> None:
    token = claimed()
    again = tr.claim(tr.release(token, ANN.pilot, T0 + 1), BOB, T0 + 2)
    assert again.attempts[0].id != again.attempts[1].id


def test_only_the_holder_may_beat_change_finish_or_fail() -> None:
    token = claimed()
    for act in (
        lambda: tr.heartbeat(token, BOB.pilot, T0 + 1),
        lambda: tr.set_status(token, BOB.pilot, TokenStatus.RUNNING, T0 + 1, None),
        lambda: tr.finish(token, BOB.pilot, T0 + 1),
        lambda: tr.fail(token, BOB.pilot, T0 + 1, message="x"),
        lambda: tr.release(token, BOB.pilot, T0 + 1),
    ):
        with pytest.raises(LostClaim, match="held by pilot-ann"):
            act()
    with pytest.raises(ValueError, match="active status"):
        tr.set_status(token, ANN.pilot, TokenStatus.DONE, T0, None)


def test_transitions_never_change_their_input() -> None:
    # a token with history: a failed attempt (an error entry), then a running one
    failed = tr.fail(claimed(), ANN.pilot, T0 + 1, message="x", retry=True)
    token = tr.set_status(tr.claim(failed, BOB, T0 + 2), BOB.pilot, TokenStatus.RUNNING, T0 + 3,
                          {"step": "dp3"})  # fmt: skip
    before = token.model_dump()
    todo = tr.release(token, BOB.pilot, T0 + 4)
    todo_before = todo.model_dump()
    for act in (
        lambda: tr.heartbeat(token, BOB.pilot, T0 + 5, {"load": 1.0}),
        lambda: tr.set_status(token, BOB.pilot, TokenStatus.UPLOADING, T0 + 5, {"up": 1}),
        lambda: tr.finish(token, BOB.pilot, T0 + 9, output=["x"], timings={"run": 1.0}),
        lambda: tr.fail(token, BOB.pilot, T0 + 9, message="y"),
        lambda: tr.fail(token, BOB.pilot, T0 + 9, message="y", retry=True),
        lambda: tr.release(token, BOB.pilot, T0 + 9),
        lambda: tr.recover(token, T0 + 9, max_scrubs=1, stale_after=60),
        lambda: tr.recover(token, T0 + 9, max_scrubs=5, stale_after=60),
        lambda: tr.reset(token, T0 + 9),
        lambda: tr.to_waiting(token, "parent failed"),
    ):
        changed = act()
        assert changed is not token and changed.model_dump() != before
        assert token.model_dump() == before
    tr.claim(todo, ANN, T0 + 9)
    assert todo.model_dump() == todo_before


def test_finish_and_fail_close_the_attempt() -> None:
    done = tr.finish(claimed(), ANN.pilot, T0 + 60, output=["dav://x/out.tar"], timings={"run": 5})
    assert done.status is TokenStatus.DONE and done.exit_code == 0 and done.done == int(T0 + 60)
    assert (done.attempts[-1].outcome, done.attempts[-1].timings) == ("done", {"run": 5})
    failed = tr.fail(claimed(), ANN.pilot, T0 + 60, message="DP3 exited 1", exit_code=0)
    assert failed.status is TokenStatus.ERROR and failed.exit_code == 1  # never 0 for an error
    assert failed.error[-1].message == "DP3 exited 1"
    again = tr.fail(claimed(), ANN.pilot, T0 + 60, message="flaky", retry=True)
    assert again.status is TokenStatus.TODO and again.scrub_count == 1 and again.lock == 0


def test_only_failures_since_the_last_reset_count_as_tries() -> None:
    token = claimed()
    for _ in range(3):  # stopped three times: no try used
        token = tr.claim(tr.release(token, ANN.pilot, T0), ANN, T0)
    token = tr.fail(token, ANN.pilot, T0, message="x", retry=True)
    token = tr.fail(tr.claim(token, ANN, T0), ANN.pilot, T0, message="y")
    assert token.attempts_since_reset("error") == 2
    assert token.attempts_since_reset("released") == 3
    reset = tr.reset(token, T0 + 10)
    assert reset.status is TokenStatus.TODO and reset.reset_index == len(token.attempts)
    assert reset.attempts_since_reset("error") == 0 and reset.output is None


def test_recover_errors_only_after_max_scrubs_losses() -> None:
    token = tr.claim(tr.release(claimed(), ANN.pilot, T0), ANN, T0)  # one release first
    first = tr.recover(token, T0 + 3600, max_scrubs=2, stale_after=60)
    assert first.status is TokenStatus.TODO and first.attempts[-1].outcome == "lost"
    second = tr.recover(tr.claim(first, BOB, T0 + 3601), T0 + 7200, max_scrubs=2, stale_after=60)
    assert second.status is TokenStatus.ERROR and second.exit_code == -1
    assert "lost 2 time(s) since the last reset" in second.error[-1].message
    with pytest.raises(LostClaim):
        tr.recover(second, T0, max_scrubs=2, stale_after=60)
