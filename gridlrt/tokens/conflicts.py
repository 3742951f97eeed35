"""Conflicting revisions of one token, as pure functions: which one wins.

On one CouchDB node a write on a stale revision gets 409, so two pilots can never both claim
a token. Replicas of a pool (a CouchDB cluster's shard copies, or servers replicating between
sites) accept two writes of the same revision on different nodes and keep both as
conflicting *leaves* of the document's revision tree. :func:`winner` picks one of them the
same way for everybody who sees the same leaves, whatever the order they are listed in and
however long the branches grow afterwards:

    a finished token (status done) wins over one that is not: a published result is never
    thrown away; otherwise the branches are compared at the first generation where their
    revision ids differ, and the smaller id wins (and takes its whole branch with it).

So the winner is decided by the first write after the branches split (the claim, for two
pilots that claimed the same todo token), never by who wrote more since: a losing pilot
that keeps heartbeating on its branch cannot overtake the winner. CouchDB's own choice
(longest branch first) would change as the pilots heartbeat, so it is not used. A done
branch comes from a pilot whose claim was confirmed (it won on every copy), so preferring
it agrees with the first rule, and keeps a finish that a recovery on another copy raced.

Nothing here reads or writes a pool: :class:`~gridlrt.tokens.couchdb.CouchDBPool` reads the
leaves (``GET doc?open_revs=all&revs=true``), deletes the losers and tells a losing pilot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import Any


@dataclass(frozen=True)
class Leaf:
    """One leaf of a document's revision tree: its revision, its history (generation -> id,
    as far as the server keeps it), whether it is a deletion, and its body."""

    rev: str
    path: dict[int, str]
    deleted: bool = False
    doc: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def holds(self, rev: str) -> bool:
        """True when ``rev`` is this leaf or one of its ancestors (the server still knows)."""
        generation, _, rev_id = rev.partition("-")
        return generation.isdigit() and self.path.get(int(generation)) == rev_id


def leaf(doc: dict[str, Any]) -> Leaf:
    """A leaf from one ``{"ok": doc}`` entry's document of ``open_revs=all&revs=true``."""
    rev = str(doc.get("_rev", ""))
    history = doc.get("_revisions") or {}
    start, ids = history.get("start"), history.get("ids")
    if isinstance(start, int) and isinstance(ids, list):
        path = {start - i: str(rev_id) for i, rev_id in enumerate(ids)}
    else:  # no history sent: the leaf itself is all that is known
        generation, _, rev_id = rev.partition("-")
        path = {int(generation): rev_id} if generation.isdigit() else {}
    body = {k: v for k, v in doc.items() if k != "_revisions"}
    return Leaf(rev=rev, path=path, deleted=bool(doc.get("_deleted")), doc=body)


def leaves(answer: Any) -> list[Leaf]:
    """The leaves in an ``open_revs=all`` answer (a JSON list of ``{"ok": doc}`` or
    ``{"missing": rev}``); entries that are not documents are left out."""
    found: list[Leaf] = []
    for entry in answer if isinstance(answer, list) else []:
        doc = entry.get("ok") if isinstance(entry, dict) else None
        if isinstance(doc, dict) and "_rev" in doc:
            found.append(leaf(doc))
    return found


def _finished(candidate: Leaf) -> bool:
    return candidate.doc.get("status") == "done"


def _compare(a: Leaf, b: Leaf) -> int:
    """Negative when ``a`` wins over ``b``: a done one wins; then, at the first generation
    both know where their ids differ, the smaller id wins; with no such generation, the
    smaller leaf revision wins."""
    if _finished(a) != _finished(b):
        return -1 if _finished(a) else 1
    for generation in sorted(a.path.keys() & b.path.keys()):
        if a.path[generation] != b.path[generation]:
            return -1 if a.path[generation] < b.path[generation] else 1
    return (a.rev > b.rev) - (a.rev < b.rev)


def winner(candidates: Sequence[Leaf]) -> Leaf | None:
    """The winning leaf among the ones not deleted (None when all are deleted)."""
    live = [c for c in candidates if not c.deleted]
    if not live:
        return None
    return sorted(live, key=cmp_to_key(_compare))[0]


def losers(candidates: Sequence[Leaf]) -> list[Leaf]:
    """The leaves, not deleted, that lose to :func:`winner`: to be deleted."""
    best = winner(candidates)
    return [c for c in candidates if not c.deleted and c is not best]
