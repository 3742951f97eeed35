"""Tokens made by hand through the pure transitions (no pool): running, done, failed, at
chosen times, for the monitor's arithmetic and the status command's tests."""

from __future__ import annotations

from typing import Any

from gridlrt.tokens import Overview, PilotInfo, Token, TokenStatus, new_token
from gridlrt.tokens import transitions as tr

NOW = 1_800_000_000.0
NODE = {"load": 2.5, "mem_used_pct": 37.5, "mem_total_mb": 64000}


def who(i: int) -> PilotInfo:
    return PilotInfo(pilot=f"pilot-{i}", host=f"wn{i}.grid.sara.nl", job_id=f"job-{i}")


def done_token(i: int, started: float, ended: float, step: str = "avg") -> Token:
    token = tr.claim(new_token(f"{step}_{i}", inputs=f"L1_SB{i:03d}", step=step), who(i), started)
    return tr.finish(token, who(i).pilot, ended)


def running_token(
    i: int, beat: float, step: str = "avg", info: dict[str, Any] | None = None
) -> Token:
    token = tr.claim(new_token(f"{step}_{i}", inputs=f"L1_SB{i:03d}", step=step), who(i), beat - 1)
    token = tr.set_status(token, who(i).pilot, TokenStatus.RUNNING, beat - 1, None)
    return tr.heartbeat(token, who(i).pilot, beat, NODE if info is None else info)


def error_token(i: int, at: float, message: str, step: str = "avg") -> Token:
    token = tr.claim(new_token(f"{step}_{i}", inputs=f"L1_SB{i:03d}", step=step), who(i), at - 5)
    return tr.fail(token, who(i).pilot, at, message=message)


def overview_of(tokens: list[Token], todo: dict[str, int] | None = None) -> Overview:
    counts: dict[str, dict[str, int]] = {}
    for token in tokens:
        step = counts.setdefault(token.step, {})
        step[token.status.value] = step.get(token.status.value, 0) + 1
    for step_name, n in (todo or {}).items():
        counts.setdefault(step_name, {})["todo"] = n
    return Overview(counts=counts)
