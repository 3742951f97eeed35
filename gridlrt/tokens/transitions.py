"""The token life cycle as pure functions: ``Token -> Token``, no I/O.

Both pool backends read a token, apply one of these, and write it back atomically (CouchDB:
``_rev``; SQLite: a write transaction), so both have exactly the same semantics. Functions
acting for a pilot first check the token is still that pilot's (:func:`ensure_owner`): a pilot
whose token was recovered and handed to another can never heartbeat, finish or fail it.
"""

from __future__ import annotations

from typing import Any

from gridlrt.errors import LostClaim
from gridlrt.tokens.model import (
    ACTIVE,
    WAITING_LOCK,
    Attempt,
    ErrorEntry,
    PilotInfo,
    Token,
    TokenStatus,
    UploadResult,
)


def _copy(token: Token) -> Token:
    """A copy the transitions may change: they replace fields, and change in place only the
    lists of attempts and errors (new lists here) and the current attempt (copied here). Not
    a deep copy: that was a sixth of a pilot's CPU per claim (inputs, payload, history)."""
    new = token.model_copy()
    new.attempts = list(token.attempts)
    if new.attempts:
        new.attempts[-1] = new.attempts[-1].model_copy()
    new.error = list(token.error)
    return new


def ensure_owner(token: Token, pilot: str) -> Attempt:
    """The current attempt, if ``pilot`` still holds ``token``; else :class:`LostClaim`."""
    attempt = token.current_attempt
    if token.status not in ACTIVE or attempt is None or attempt.pilot != pilot:
        holder = attempt.pilot if attempt and token.status in ACTIVE else None
        raise LostClaim(
            f"token {token.id} is no longer held by pilot {pilot} "
            f"(status {token.status.value}{', held by ' + holder if holder else ''})"
        )
    return attempt


def claim(token: Token, who: PilotInfo, now: float) -> Token:
    if token.status is not TokenStatus.TODO:
        raise LostClaim(f"token {token.id} is {token.status.value}, not todo")
    new = _copy(token)
    new.lock = max(int(now), 1)
    new.done = 0
    new.hostname = who.host
    new.status = TokenStatus.LOCKED
    new.heartbeat = now
    new.exit_code = None
    new.progress = {}
    new.attempts.append(
        Attempt(
            pilot=who.pilot,
            host=who.host,
            job_id=who.job_id,
            started=now,
            heartbeat_interval=who.heartbeat_interval,
            sandbox=who.sandbox,
        )
    )
    return new


def heartbeat(token: Token, pilot: str, now: float, info: dict[str, Any] | None = None) -> Token:
    new = _copy(token)
    ensure_owner(new, pilot)
    new.heartbeat = now
    if info:
        new.progress = {**new.progress, **info}
    return new


def set_status(
    token: Token, pilot: str, status: TokenStatus, now: float, progress: dict[str, Any] | None
) -> Token:
    if status not in ACTIVE:
        raise ValueError(f"set_status takes an active status, not {status.value}")
    new = _copy(token)
    ensure_owner(new, pilot)
    new.status = status
    new.heartbeat = now
    if progress:
        new.progress = {**new.progress, **progress}
    return new


def _close_attempt(
    token: Token, pilot: str, now: float, outcome: str, exit_code: int | None
) -> None:
    attempt = ensure_owner(token, pilot)
    attempt.ended = now
    attempt.outcome = outcome
    attempt.exit_code = exit_code


def finish(
    token: Token,
    pilot: str,
    now: float,
    *,
    output: Any = None,
    uploads: list[UploadResult] | None = None,
    timings: dict[str, float] | None = None,
) -> Token:
    new = _copy(token)
    _close_attempt(new, pilot, now, "done", 0)
    if timings:
        new.attempts[-1].timings = dict(timings)
    new.done = max(int(now), 1)
    new.exit_code = 0
    new.status = TokenStatus.DONE
    new.output = output
    new.uploads = list(uploads or [])
    return _unsettled(new)


def _unsettled(token: Token) -> Token:
    """A token that just finished for good owes its children a look (see ``settle``)."""
    if token.children:
        token.settled = False
    return token


def fail(
    token: Token,
    pilot: str,
    now: float,
    *,
    message: str,
    exception: str = "",
    log_tail: str = "",
    exit_code: int = 1,
    retry: bool = False,
) -> Token:
    """Record the error; with ``retry`` the token goes back to todo (scrub_count + 1)."""
    new = _copy(token)
    _close_attempt(new, pilot, now, "error", exit_code)
    new.error.append(ErrorEntry(time=now, message=message, exception=exception, log_tail=log_tail))
    if retry:
        return _to_todo(new)
    new.done = max(int(now), 1)
    new.exit_code = exit_code if exit_code != 0 else 1
    new.status = TokenStatus.ERROR
    return _unsettled(new)


def _to_todo(token: Token) -> Token:
    """PiCaS's scrub: lock = done = 0, scrub_count + 1, hostname cleared."""
    token.lock = 0
    token.done = 0
    token.hostname = ""
    token.exit_code = None
    token.status = TokenStatus.TODO
    token.scrub_count += 1
    token.progress = {}
    return token


def release(token: Token, pilot: str, now: float, reason: str = "released") -> Token:
    new = _copy(token)
    _close_attempt(new, pilot, now, reason, None)
    return _to_todo(new)


def recover(token: Token, now: float, max_scrubs: int, stale_after: float) -> Token:
    """A locked token whose pilot stopped heartbeating: back to todo, or error once
    ``max_scrubs`` of its attempts since the last reset were lost this way (a token that keeps
    killing its pilots, e.g. by running out of memory, must stop somewhere)."""
    if token.status not in ACTIVE:
        raise LostClaim(f"token {token.id} is {token.status.value}, not locked")
    new = _copy(token)
    attempt = new.current_attempt
    if attempt is not None and attempt.ended is None:
        attempt.ended = now
        attempt.outcome = "lost"
    lost = new.attempts_since_reset("lost")
    if lost >= max_scrubs:
        new.error.append(
            ErrorEntry(
                time=now,
                message=f"pilot lost (no heartbeat for {stale_after:.0f} s); the token was lost "
                f"{lost} time(s) since the last reset (limit: --max-scrubs {max_scrubs})",
            )
        )
        new.done = max(int(now), 1)
        new.exit_code = -1
        new.status = TokenStatus.ERROR
        new.scrub_count += 1
        return _unsettled(new)
    return _to_todo(new)


def reset(token: Token, now: float) -> Token:
    """Back to todo whatever the status (history in attempts and error is kept); a token with
    parents goes back to waiting for them instead (its promotion is undone)."""
    new = _copy(token)
    attempt = new.current_attempt
    if attempt is not None and attempt.ended is None:
        attempt.ended = now
        attempt.outcome = "reset"
    new.output = None
    new.uploads = []
    new.reset_index = len(new.attempts)
    new.settled = None
    if new.depends is not None:
        return to_waiting(_to_todo(new))
    return _to_todo(new)


def to_waiting(token: Token, reason: str = "") -> Token:
    """A dependent token back to waiting (``reason``: blocked, and why): its own input again,
    no parents' outputs, lock -1 so no PiCaS view shows it."""
    new = _copy(token)
    new.lock = WAITING_LOCK
    new.done = 0
    new.hostname = ""
    new.exit_code = None
    new.progress = {}
    new.status = TokenStatus.BLOCKED if reason else TokenStatus.WAITING
    new.blocked_reason = reason
    if new.depends is not None:
        new.input = new.depends.base_input
    new.extra_inputs = {}
    new.provenance = []
    return new
