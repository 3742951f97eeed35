"""Fault injection in the suite (issue 12): on both pool backends, 4 pilots drain 60 tokens
while 20 of them are SIGKILLed at random moments and the pool goes away for 20 s; then every
token is done exactly once, every output was written by exactly one attempt and is complete,
and nothing is left behind (no .part file, no process of a killed pilot, no work directory).
bench/chaos.py runs the same harness (tests/chaos.py) at a larger size."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import ChaosConfig, run_chaos


@pytest.mark.parametrize("backend", ["sqlite", "couchdb"])
def test_kills_and_an_outage_lose_nothing_and_run_nothing_twice(
    backend: str, tmp_path: Path
) -> None:
    report = run_chaos(ChaosConfig(backend=backend, workdir=tmp_path, seed=20261130))
    print("\n".join(report.lines()))
    assert report.kills >= 20 and report.outages == 1 and report.outage_seconds >= 20
    assert len(report.kills_by_phase) >= 2, report.kills_by_phase  # kills hit several phases
    assert report.failures == {}, "\n".join(report.lines())
    assert report.done_once == report.tokens
