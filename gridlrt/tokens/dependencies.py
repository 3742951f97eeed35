"""Dependencies between tokens, as pure functions: when a waiting token may start.

A dependent token (``depends``) lists its parents in groups, each with a rule: at least
``min_done`` of the group's parents done and the rest failed for good (error, blocked or
gone). :func:`verdict` reads the parents and says *ready*, *waiting* or *blocked* (with the
reason, naming the parents); :func:`settled_child` turns that into the child's next state:
promoted to todo with its parents' outputs as inputs and their provenance recorded, blocked,
or waiting again. Nothing here reads or writes a pool: :meth:`TokenPool.settle` does, and
anybody may call it again — the result depends only on the parents, so settling is idempotent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel

from gridlrt.tokens import transitions
from gridlrt.tokens.model import (
    PENDING,
    ParentGroup,
    ParentRecord,
    Token,
    TokenStatus,
    UploadResult,
)

Parents = Mapping[str, Token | None]  # id -> the parent (None: not in the pool)
SHOW_IDS = 5  # parents named in a reason, at most


class Verdict(BaseModel):
    state: Literal["ready", "waiting", "blocked"]
    reason: str = ""


def failed_for_good(parent: Token | None) -> bool:
    """A parent that will not finish without a user's reset: error, blocked, or gone."""
    return parent is None or parent.status in (TokenStatus.ERROR, TokenStatus.BLOCKED)


def _is_done(parent: Token | None) -> bool:
    return parent is not None and parent.status is TokenStatus.DONE


def needed(group: ParentGroup) -> int:
    """How many of the group's parents must be done (``min_done`` of them, rounded up)."""
    return math.ceil(group.min_done * len(group.ids) - 1e-9)


def _names(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOW_IDS])
    return shown + (f" and {len(ids) - SHOW_IDS} more" if len(ids) > SHOW_IDS else "")


def group_verdict(group: ParentGroup, parents: Parents) -> Verdict:
    done = [i for i in group.ids if _is_done(parents.get(i))]
    failed = [i for i in group.ids if failed_for_good(parents.get(i))]
    pending = len(group.ids) - len(done) - len(failed)
    need = needed(group)
    if len(done) + pending < need:
        rule = "all" if need == len(group.ids) else f"{need} of {len(group.ids)}"
        missing = [i for i in failed if parents.get(i) is None]
        detail = f"{len(failed)} failed: {_names(failed)}"
        if missing:
            detail += f" ({len(missing)} not in the pool)"
        return Verdict(
            state="blocked",
            reason=f"{group.name}: needs {rule} parents done, {detail}",
        )
    if pending:
        return Verdict(state="waiting", reason=f"{group.name}: {pending} parent(s) not finished")
    return Verdict(state="ready")


def verdict(child: Token, parents: Parents) -> Verdict:
    """Ready when every group's rule holds; blocked as soon as one group can no longer hold."""
    if child.depends is None:
        return Verdict(state="ready")
    waiting: list[str] = []
    for group in child.depends.groups:
        found = group_verdict(group, parents)
        if found.state == "blocked":
            return found
        if found.state == "waiting":
            waiting.append(found.reason)
    if waiting:
        return Verdict(state="waiting", reason="; ".join(waiting))
    return Verdict(state="ready")


def promote(child: Token, parents: Parents) -> Token:
    """The child as todo: each group's done parents' uploads (in the group's order) become its
    input (group "input", after its own input) or the extra input named by the group, and
    each parent is recorded in its provenance."""
    assert child.depends is not None
    new = transitions.to_waiting(child)
    own = child.depends.base_input
    inputs: list[str] = [] if own is None else ([*own] if isinstance(own, list) else [own])
    extra: dict[str, list[str]] = {}
    provenance: list[ParentRecord] = []
    gathered = False
    for group in child.depends.groups:
        for parent_id in group.ids:
            parent = parents.get(parent_id)
            if parent is None or parent.status is not TokenStatus.DONE:
                continue
            urls, records = _outputs(parent)
            if group.name == "input":
                inputs.extend(urls)
                gathered = True
            else:
                extra.setdefault(group.name, []).extend(urls)
            attempt = parent.current_attempt
            provenance.append(
                ParentRecord(
                    id=parent.id,
                    step=parent.step,
                    status=parent.status.value,
                    group=group.name,
                    outputs=records,
                    sandbox=attempt.sandbox if attempt else None,
                )
            )
    new.lock = 0
    new.status = TokenStatus.TODO
    new.blocked_reason = ""
    new.settled = None  # its children wait for it to finish, nothing to tell them yet
    new.input = inputs if gathered or isinstance(own, list) else own
    new.extra_inputs = extra
    new.provenance = provenance
    return new


def _outputs(parent: Token) -> tuple[list[str], list[UploadResult]]:
    """A parent's outputs (``output``, in its order; PiCaS style, a string or a list) and the
    upload records of those that have one (size, checksum). Other uploads, such as the
    payload's log, are not outputs."""
    out = parent.output
    urls = [] if out is None else [str(o) for o in out] if isinstance(out, list) else [str(out)]
    if not urls:  # a parent that recorded uploads only
        urls = [u.url for u in parent.uploads]
    by_url = {u.url: u for u in parent.uploads}
    return urls, [by_url.get(url) or UploadResult(url=url) for url in urls]


def settled_child(child: Token, parents: Parents) -> Token | None:
    """The child's next state given its parents, or None when it stays as it is (it is not
    waiting or blocked any more, or its verdict did not change)."""
    if child.status not in PENDING or child.depends is None:
        return None
    found = verdict(child, parents)
    if found.state == "ready":
        return promote(child, parents)
    reason = found.reason if found.state == "blocked" else ""
    wanted = TokenStatus.BLOCKED if reason else TokenStatus.WAITING
    if child.status is wanted and child.blocked_reason == reason:
        return None
    new = transitions.to_waiting(child, reason)
    if new.children and new.status is not child.status:
        # blocked (or no longer): its own children must hear of it, even if whoever writes
        # this dies right after; like a finished parent, it is unsettled until they have
        new.settled = False
    return new
