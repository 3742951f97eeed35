"""Counts of a CouchDB pool kept current from its ``_changes`` feed.

``gridlrt status --watch`` and the dashboard ask a pool for its counts again and again. A
grouped reduce of the status view is what CouchDB answers that with, but pouchdb-server
re-reduces every row of it on each query (4.4 s at 100,000 tokens). :class:`CountsFollower`
reads every token's key once (the status and stage views' rows, no documents; the database's
``update_seq`` taken first), then applies what ``_changes?since=`` reports: a repeated reading
costs one request plus the documents that changed. Every change is judged by parsing the
document (:func:`~gridlrt.tokens.pool.parse_token`, the judge the overview uses for suspect
rows); a change reported twice, or one already in the rows read, is applied idempotently (by
id), so nothing is counted twice.

The follower is the pool's, switched on by :meth:`CouchDBPool.follow` (what a watcher
calls); a one-off reading keeps the single reduce, which costs less than the first load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gridlrt.tokens.model import TokenStatus
from gridlrt.tokens.pool import Malformed, Overview, parse_token

if TYPE_CHECKING:
    from gridlrt.tokens.couchdb import CouchDBPool

log = logging.getLogger(__name__)

#: changes read per request
BATCH = 2000
_STATUSES = frozenset(s.value for s in TokenStatus)


@dataclass(frozen=True)
class Entry:
    """What one token document counts as."""

    step: str = ""
    status: str = ""
    pipeline: str | None = None
    stage: str | None = None
    malformed: str | None = None  # why it is counted nowhere


def judge(doc: dict[str, Any], malformed: Malformed) -> Entry | None:
    """What a document (from ``_changes``) counts as; None for no token (a record, a design
    document, a deleted one)."""
    if doc.get("_deleted") or doc.get("type") != "token":
        return None
    doc_id = str(doc.get("_id", "?"))
    token = parse_token(doc, malformed, doc_id)
    if token is None:
        return Entry(malformed=malformed.reasons.get(doc_id, "not a valid token"))
    pipeline, stage = doc.get("pipeline"), doc.get("stage")
    staged = isinstance(pipeline, str) and isinstance(stage, str)
    return Entry(
        step=token.step,
        status=token.status.value,
        pipeline=pipeline if staged else None,
        stage=stage if staged else None,
    )


class CountsFollower:
    """The counts of one CouchDB pool, current to its last :meth:`refresh`."""

    def __init__(self, pool: CouchDBPool) -> None:
        self.pool = pool
        self.seq: Any = None  # the last update sequence applied (None: not loaded)
        self.entries: dict[str, Entry] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.stages: Counter[tuple[str, str, str]] = Counter()
        self.malformed: dict[str, str] = {}
        self.changes_applied = 0  # documents read from _changes (for tests and benches)
        self._lock = threading.Lock()

    # --- keeping the aggregates --------------------------------------------------------------

    def _set(self, doc_id: str, entry: Entry | None) -> None:
        old = self.entries.pop(doc_id, None)
        if old is not None:
            self._count(doc_id, old, -1)
        if entry is not None:
            self.entries[doc_id] = entry
            self._count(doc_id, entry, +1)

    def _count(self, doc_id: str, entry: Entry, sign: int) -> None:
        if entry.malformed is not None:
            if sign > 0:
                self.malformed[doc_id] = entry.malformed
            else:
                self.malformed.pop(doc_id, None)
            return
        self.counts[(entry.step, entry.status)] += sign
        if entry.pipeline is not None and entry.stage is not None:
            self.stages[(entry.pipeline, entry.stage, entry.status)] += sign

    # --- reading -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the counts up to date: the first call loads every token's key, later ones
        read the changes since."""
        with self._lock:
            if self.seq is None:
                self._load()
            self._catch_up()

    def _load(self) -> None:
        started = time.monotonic()
        seq = self.pool._request("GET").json().get("update_seq")
        stage_of: dict[str, tuple[str, str]] = {}
        for row in self.pool._view("gridlrt_stages", reduce="false"):
            pipeline, stage, _status = row["key"]
            stage_of[row["id"]] = (pipeline, stage)
        suspects: list[str] = []
        self.entries.clear()
        self.counts.clear()
        self.stages.clear()
        self.malformed.clear()
        for row in self.pool._view("gridlrt_status", reduce="false"):
            key = row["key"]
            status, step = (*key, None, None)[:2] if isinstance(key, list) else (None, None)
            if status in _STATUSES and isinstance(step, str) and step:
                pipeline, stage = stage_of.get(row["id"], (None, None))
                self._set(row["id"], Entry(step, status, pipeline, stage))
            else:  # "malformed", or what an older design let through: judged by parsing
                suspects.append(row["id"])
        for doc_id, doc in self.pool._get_docs(suspects).items():
            self._set(doc_id, judge(doc, self.pool.malformed) if doc is not None else None)
        self.seq = seq
        log.debug(
            "loaded the counts of %d documents of %s in %.2f s",
            len(self.entries),
            self.pool.url,
            time.monotonic() - started,
        )

    def _catch_up(self) -> None:
        while True:
            answer = self.pool._request(
                "GET",
                "_changes",
                params={
                    "since": self.seq,
                    "include_docs": "true",
                    "style": "main_only",
                    "limit": BATCH,
                },
            ).json()
            results = answer.get("results") or []
            for change in results:
                doc_id = change.get("id")
                if not isinstance(doc_id, str) or doc_id.startswith("_design/"):
                    continue
                doc = change.get("doc")
                gone = change.get("deleted") or not isinstance(doc, dict)
                self._set(doc_id, None if gone else judge(doc, self.pool.malformed))
            self.changes_applied += len(results)
            self.seq = answer.get("last_seq", self.seq)
            if len(results) < BATCH:
                return

    def overview(self) -> Overview:
        counts: dict[str, dict[str, int]] = {}
        with self._lock:  # (another thread may be applying changes)
            for (step, status), n in self.counts.items():
                if n:
                    counts.setdefault(step, {})[status] = n
            malformed = dict(self.malformed)
        return Overview(counts=counts, malformed=malformed)

    def stage_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        counts: dict[tuple[str, str], dict[str, int]] = {}
        with self._lock:
            for (pipeline, stage, status), n in self.stages.items():
                if n:
                    counts.setdefault((pipeline, stage), {})[status] = n
        return counts
