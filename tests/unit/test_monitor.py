"""The monitor's arithmetic (``gridlrt status``): throughput, ETA, silent pilots, failing
tokens, on tokens made by hand — no pool, no server."""

from __future__ import annotations

import pytest

from gridlrt.monitor import (
    ACTIVE_ORDER,
    DEFAULT_STALE_AFTER,
    build_snapshot,
    done_times,
    estimate_eta,
    first_error_line,
    latest_failing,
    measure_throughput,
    pilot_row,
)
from gridlrt.tokens import Token, TokenStatus, new_token
from gridlrt.tokens import transitions as tr
from gridlrt.tokens.model import ACTIVE
from tests.token_factories import (
    NOW,
    done_token,
    error_token,
    overview_of,
    running_token,
    who,
)

# --- pure computations ------------------------------------------------------------------------


def test_active_order_covers_the_active_statuses() -> None:
    assert frozenset(ACTIVE_ORDER) == ACTIVE


def test_throughput_of_a_young_run_is_measured_since_it_started() -> None:
    # 10 tokens, started 300 s ago on 10 pilots, the first done after 60 s, one more every 20 s
    tokens = [done_token(i, NOW - 300, NOW - 240 + 20 * i) for i in range(10)]
    rate = measure_throughput([t for t in map(done_times, tokens) if t], now=NOW, window=600)
    assert rate.done_in_window == 10
    assert rate.span == pytest.approx(300)
    assert rate.per_minute == pytest.approx(2.0)


def test_throughput_counts_only_the_window_and_eta_follows() -> None:
    old = [done_token(i, NOW - 7200, NOW - 3600) for i in range(50)]  # an hour ago: not counted
    recent = [done_token(100 + i, NOW - 900, NOW - 500 + 50 * i) for i in range(10)]
    snap = build_snapshot(
        overview_of(old + recent, todo={"avg": 40}), done=old + recent, now=NOW, window=600
    )
    step = snap.step("avg")
    assert step.throughput.done_in_window == 10
    assert step.throughput.span == pytest.approx(600)
    assert step.throughput.per_minute == pytest.approx(1.0)
    assert step.eta_seconds == pytest.approx(40 * 60)
    assert (step.done, step.total, step.remaining) == (60, 100, 40)
    assert step.done_fraction == pytest.approx(0.6)
    assert not snap.finished


def test_eta_is_unknown_without_recent_work_and_zero_when_nothing_is_left() -> None:
    old = [done_token(i, NOW - 7200, NOW - 3600) for i in range(5)]
    snap = build_snapshot(overview_of(old, todo={"avg": 3}), done=old, now=NOW, window=600)
    assert snap.step("avg").throughput.per_minute == 0
    assert snap.step("avg").eta_seconds is None
    finished = build_snapshot(overview_of(old), done=old, now=NOW)
    assert finished.step("avg").eta_seconds == 0
    assert finished.finished
    assert estimate_eta(0, 0.0) == 0.0
    assert estimate_eta(5, 0.0) is None
    assert estimate_eta(30, 2.0) == pytest.approx(900)


def test_picas_done_tokens_count_by_their_done_time() -> None:
    picas = Token.from_doc(
        {"_id": "p1", "lock": int(NOW - 100), "done": int(NOW - 30), "exit_code": 0}
    )
    assert picas.status is TokenStatus.DONE
    assert done_times(picas) == (None, float(int(NOW - 30)))
    token = tr.claim(new_token("avg_1", inputs="L1_SB001", step="avg"), who(1), NOW - 90)
    token = tr.release(token, who(1).pilot, NOW - 60)
    token = tr.finish(tr.claim(token, who(2), NOW - 50), who(2).pilot, NOW - 10)
    assert done_times(token) == (NOW - 50, NOW - 10)


def test_silent_pilots_are_flagged_with_advice() -> None:
    fresh = running_token(1, NOW - 5)
    silent = running_token(2, NOW - DEFAULT_STALE_AFTER - 1)
    snap = build_snapshot(overview_of([fresh, silent]), active=[fresh, silent], now=NOW)
    rows = snap.step("avg").pilots
    assert [(r.token_id, r.stale) for r in rows] == [("avg_2", True), ("avg_1", False)]
    row = rows[1]
    assert (row.host, row.job_id, row.pilot, row.status) == (
        "wn1.grid.sara.nl", "job-1", "pilot-1", "running",
    )  # fmt: skip
    assert row.heartbeat_age == pytest.approx(5)
    assert (row.load, row.mem_used_pct, row.mem_total_mb) == (2.5, 37.5, 64000)
    assert snap.stale_pilots == 1
    assert snap.hint is not None
    assert "gridlrt tokens recover --stale-after 1m30s" in snap.hint
    # the threshold is a parameter: with 10 minutes nobody is silent
    assert not pilot_row(silent, now=NOW, stale_after=600).stale
    relaxed = build_snapshot(overview_of([silent]), active=[silent], now=NOW, stale_after=600)
    assert relaxed.hint is None


def test_a_heartbeat_without_node_figures_leaves_them_empty() -> None:
    row = pilot_row(running_token(1, NOW - 1, info={"load": "n/a"}), now=NOW)
    assert (row.load, row.mem_used_pct, row.mem_total_mb) == (None, None, None)


def test_first_line_of_the_latest_error() -> None:
    token = error_token(1, NOW - 100, "first failure")
    token = tr.reset(token, NOW - 90)
    token = tr.claim(token, who(1), NOW - 80)
    token = tr.fail(
        token, "pilot-1", NOW - 60, message="\n  DP3 exited 1  \nStd exception: no DATA"
    )
    assert first_error_line(token) == "DP3 exited 1"
    from_exception = error_token(2, NOW, "")
    from_exception.error[-1].exception = ["", "Traceback (most recent call last):", "  ..."]
    assert first_error_line(from_exception) == "Traceback (most recent call last):"
    assert first_error_line(new_token("x", inputs=None)) == ""


def test_failing_keeps_the_latest_few_per_step() -> None:
    tokens = [error_token(i, NOW - 100 + i, f"error {i}\ndetail") for i in range(8)]
    tokens += [error_token(50, NOW - 500, "old", step="cal")]
    failing = latest_failing(tokens, limit=3)
    assert [(f.token_id, f.message) for f in failing["avg"]] == [
        ("avg_7", "error 7"), ("avg_6", "error 6"), ("avg_5", "error 5"),
    ]  # fmt: skip
    assert [f.token_id for f in failing["cal"]] == ["cal_50"]
    snap = build_snapshot(overview_of(tokens), failed=tokens, now=NOW, max_failing=3)
    assert snap.step("avg").failing_total == 8
    assert len(snap.step("avg").failing) == 3
    only = build_snapshot(overview_of(tokens), failed=tokens, now=NOW, step="cal")
    assert [s.step for s in only.steps] == ["cal"]
