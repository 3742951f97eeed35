"""The pool contract: one abstract class, two backends (CouchDB, embedded SQLite).

A backend provides a handful of storage primitives — atomic read-modify-write of one token
(:meth:`TokenPool._update`), an exclusive :meth:`TokenPool.claim`, bulk insert, queries,
attachments — and inherits everything else from here, so both backends share one set of
semantics (see :mod:`gridlrt.tokens.transitions`) and one contract test suite.

Documents that are not valid tokens are reported (logged, and listed in
:attr:`TokenPool.malformed`) and skipped; they never crash a claim or a listing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gridlrt.durations import format_duration
from gridlrt.errors import GridlrtError, InputError, MalformedToken, TokenNotFound
from gridlrt.tokens import dependencies, transitions
from gridlrt.tokens.conflicts import Leaf
from gridlrt.tokens.model import (
    ACTIVE,
    PENDING,
    PilotInfo,
    Token,
    TokenStatus,
    UploadResult,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_SCRUBS = 3
# recover refuses a --stale-after shorter than this many heartbeat intervals of a pilot that
# holds a token (unless forced): a live pilot may just be between two heartbeats
SAFE_HEARTBEATS = 3
# a pool user that finds no todo token (or that has not looked for this long) completes the
# promotions a dead pilot left undone (finished parents not yet marked settled)
SETTLE_EVERY = 30.0


class CreateResult(BaseModel):
    created: list[str] = []
    duplicates: list[str] = []


class Overview(BaseModel):
    """Token counts per step and status, and the documents of type token that are not valid
    tokens (id: why), which are counted nowhere."""

    counts: dict[str, dict[str, int]] = {}
    malformed: dict[str, str] = {}

    def total(self, status: TokenStatus | None = None, step: str | None = None) -> int:
        steps = [step] if step is not None else list(self.counts)
        return sum(
            n
            for s in steps
            for st, n in self.counts.get(s, {}).items()
            if status is None or st == status.value
        )

    def by_status(self, step: str | None = None) -> dict[str, int]:
        return {st.value: self.total(st, step) for st in TokenStatus}


class ArchiveResult(BaseModel):
    file: Path | None
    tokens: int
    attachments: int
    kept: list[str] = []  # parents left in the pool: children still wait for their outputs


@dataclass
class Malformed:
    """Ids of documents that failed validation, with why (first error only)."""

    reasons: dict[str, str] = field(default_factory=dict)

    def report(self, doc_id: str, exc: Exception) -> None:
        reason = (
            (str(exc).splitlines() or [type(exc).__name__])[0]
            if not isinstance(exc, ValidationError)
            else (
                "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
                    for e in exc.errors()[:2]
                )
            )
        )
        self.note(doc_id, reason)

    def note(self, doc_id: str, reason: str) -> None:
        if doc_id not in self.reasons:
            log.warning("skipping malformed token %s: %s", doc_id, reason)
        self.reasons[doc_id] = reason


def parse_token(doc: Any, malformed: Malformed, doc_id: str | None = None) -> Token | None:
    """A token from a document, or None (reported) when it is not a valid token."""
    if not isinstance(doc, dict):
        malformed.note(doc_id or "?", "not a JSON object")
        return None
    ident = doc_id or str(doc.get("_id", "?"))
    try:
        token = Token.from_doc(doc)
    except (ValidationError, ValueError, TypeError) as exc:
        malformed.report(ident, exc)
        return None
    problem = _not_finite(token)
    if problem:
        malformed.note(ident, f"{problem}: not a finite number")
        return None
    return token


def _not_finite(token: Token) -> str | None:
    """The first time field holding NaN or infinity (which no arithmetic on times survives)."""
    fields: list[tuple[str, float | None]] = [
        ("heartbeat", token.heartbeat),
        ("created", token.created),
    ]
    for i, attempt in enumerate(token.attempts):
        fields += [
            (f"attempts.{i}.started", attempt.started),
            (f"attempts.{i}.ended", attempt.ended),
            (f"attempts.{i}.heartbeat_interval", attempt.heartbeat_interval),
        ]
        fields += [(f"attempts.{i}.timings.{k}", v) for k, v in attempt.timings.items()]
    fields += [(f"error.{i}.time", e.time) for i, e in enumerate(token.error)]
    for name, value in fields:
        if value is not None and not math.isfinite(value):
            return name
    return None


class TokenPool(ABC):
    """A pool of tokens. Use :func:`gridlrt.tokens.open_pool` to get one."""

    url: str  # redacted; safe to show

    def __init__(self) -> None:
        self.malformed = Malformed()
        self._next_settle = 0.0

    # --- primitives a backend provides ---------------------------------------------------

    @abstractmethod
    def init(self) -> None:
        """Create the database/schema and (CouchDB) the design document; idempotent upgrade."""

    @abstractmethod
    def _insert(self, docs: Sequence[dict[str, Any]]) -> CreateResult:
        """Insert new documents; existing ids are reported as duplicates, not overwritten."""

    @abstractmethod
    def _get_doc(self, token_id: str) -> dict[str, Any]:
        """The raw document; :class:`TokenNotFound` when absent."""

    @abstractmethod
    def _update(self, token_id: str, change: Callable[[Token], Token]) -> Token:
        """Atomically read the token, apply ``change``, write the result; return it."""

    @abstractmethod
    def _claim(self, who: PilotInfo, step: str | None = None) -> Token | None:
        """Exclusively take the best todo token (priority, then age), or None."""

    @abstractmethod
    def _unsettled_ids(self) -> list[str]:
        """Ids of tokens with children and ``settled`` false (finished, or just blocked or
        unblocked): their children are yet to be told."""

    @abstractmethod
    def status_counts(self, step: str | None = None) -> dict[str, int]:
        """Token counts per status, of one step or the whole pool (no shape checks: a quick
        look)."""

    @abstractmethod
    def stage_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """Token counts per (pipeline, stage) and status, for tokens that belong to a pipeline."""

    # --- replicas: a pool whose copies may accept two writes of one revision ---------------
    # (issue 19; see gridlrt.tokens.conflicts). On one server, or the embedded pool, two
    # writes of a revision cannot both succeed: these are no-ops.

    def confirm(self, token_id: str, pilot: str) -> None:  # noqa: B027 - optional hook
        """Make sure ``pilot``'s claim of the token is the only one that can ever win, waiting
        (bounded) until every copy of the pool has it; :class:`LostClaim` when another claim
        wins. A pilot calls it before publishing anything under a final name, and
        :meth:`finish` calls it before finishing."""

    def _spread(self, token: Token) -> None:  # noqa: B027 - optional hook
        """Before a finished (or blocked) token's children are told: wait until every copy of
        the pool has it as written."""

    @property
    def clustered(self) -> bool:
        """True when two writes of one revision can both be accepted (replicas of a CouchDB
        pool, a CouchDB cluster): then claims are confirmed and conflicts settled."""
        return False

    def _silent_everywhere(self, token_id: str, cutoff: float) -> bool:
        """Whether no copy of the pool has a sign of life of the token's pilot since
        ``cutoff`` (recover takes it only then). True on a pool of one copy."""
        return True

    def resolve(self, token_id: str) -> bool:
        """Settle conflicting revisions of one token: the winner (see
        :mod:`gridlrt.tokens.conflicts`) stays, the others are deleted. True when there were
        any."""
        return False

    def conflicts(self) -> list[tuple[str, list[Leaf]]]:
        """Tokens with conflicting revisions, each with its leaves (none deleted)."""
        return []

    def _check(self, token: Token) -> None:  # noqa: B027 - optional hook
        """After a pilot's own claim or heartbeat: raise :class:`LostClaim` if a
        conflicting revision already seen here wins over the pilot's."""

    def resolve_conflicts(self) -> int:
        """Settle every token with conflicting revisions; how many were settled. A no-op on
        a pool that cannot have any."""
        return 0

    def _promoted(self) -> None:  # noqa: B027 - optional hook
        """Children changed state here: forget any claim candidates read before (they may
        miss a child of higher priority that is todo now)."""

    def _get_docs(self, token_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Raw documents by id (None when absent); backends read them in bulk."""
        found: dict[str, dict[str, Any] | None] = {}
        for token_id in token_ids:
            try:
                found[token_id] = self._get_doc(token_id)
            except (TokenNotFound, MalformedToken):
                found[token_id] = None
        return found

    @abstractmethod
    def _iter_docs(
        self, status: TokenStatus | None = None, step: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Raw documents of type token, optionally filtered (status is the derived status)."""

    @abstractmethod
    def overview(self) -> Overview:
        """Counts per step and status."""

    def follow(self) -> None:  # noqa: B027 - optional hook
        """This pool object will be asked for its counts again and again (a watcher): keep
        them current incrementally where the backend has a way (CouchDB's ``_changes``).
        A no-op where counts cost little anyway (the embedded pool)."""

    @abstractmethod
    def _stale_ids(self, before: float) -> list[str]:
        """Ids of active tokens whose heartbeat (or lock time) is older than ``before``."""

    @abstractmethod
    def delete(self, token_ids: Iterable[str]) -> int:
        """Delete tokens (and their attachments); return how many existed."""

    @abstractmethod
    def attach(
        self, token_id: str, name: str, data: bytes, content_type: str = "text/plain"
    ) -> None:
        """Store (or replace) an attachment of a token."""

    @abstractmethod
    def attachment(self, token_id: str, name: str) -> bytes:
        """Read an attachment; :class:`TokenNotFound` when absent."""

    @abstractmethod
    def attachment_names(self, token_id: str) -> list[str]:
        """Names of a token's attachments."""

    # --- side records: small JSON documents beside the tokens (e.g. job records) -----------
    #
    # A record may carry index ``keys`` (short strings such as ``obsid:700701``): then
    # ``records(kind, key=...)`` finds the records of that key without reading the others
    # (an SQL index; a CouchDB view). The keys are not part of the body read back.

    @abstractmethod
    def put_record(
        self, kind: str, record_id: str, body: dict[str, Any], keys: Sequence[str] = ()
    ) -> None:
        """Create or replace the record ``kind``/``record_id`` (never a token; views ignore it),
        findable by each of ``keys`` (replacing the keys it had)."""

    def put_records(
        self, kind: str, bodies: dict[str, dict[str, Any]], keys: dict[str, list[str]] | None = None
    ) -> None:
        """Create or replace many records at once: ``bodies`` by record id, ``keys`` by record
        id. Each record is replaced as a whole; backends write them in bulk."""
        for record_id, body in bodies.items():
            self.put_record(kind, record_id, body, (keys or {}).get(record_id, ()))

    @abstractmethod
    def get_record(self, kind: str, record_id: str) -> dict[str, Any]:
        """One record; :class:`RecordNotFound` when absent."""

    @abstractmethod
    def records(self, kind: str, key: str | None = None) -> list[dict[str, Any]]:
        """All records of ``kind`` (with ``key``: those put with that index key), ordered by
        id."""

    @abstractmethod
    def delete_record(self, kind: str, record_id: str) -> bool:
        """Delete a record; False when it did not exist."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> TokenPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the contract, shared ---------------------------------------------------------------

    def create(self, tokens: Iterable[Token], batch: int = 2000) -> CreateResult:
        """Insert tokens in batches; idempotent by id (existing ids are reported as duplicates)."""
        result = CreateResult()
        chunk: list[dict[str, Any]] = []
        for token in tokens:
            chunk.append(token.to_doc())
            if len(chunk) >= batch:
                self._merge(result, self._insert(chunk))
                chunk = []
        if chunk:
            self._merge(result, self._insert(chunk))
        return result

    @staticmethod
    def _merge(into: CreateResult, part: CreateResult) -> None:
        into.created.extend(part.created)
        into.duplicates.extend(part.duplicates)

    def get(self, token_id: str) -> Token:
        return self._valid(self._get_doc(token_id), token_id)

    def _valid(self, doc: Any, token_id: str) -> Token:
        """The token of a document; :class:`MalformedToken` (reported) when it is not one."""
        token = parse_token(doc, self.malformed, token_id)
        if token is None:
            raise MalformedToken(
                f"document {token_id} is not a valid token: {self.malformed.reasons[token_id]}"
            )
        return token

    def document(self, token_id: str) -> dict[str, Any]:
        """The raw document, valid token or not (to show or repair a malformed one)."""
        return self._get_doc(token_id)

    def tokens(self, status: TokenStatus | None = None, step: str | None = None) -> Iterator[Token]:
        """Valid tokens, optionally by status and step; malformed documents are skipped."""
        for doc in self._iter_docs(status, step):
            token = parse_token(doc, self.malformed)
            if token is not None:
                yield token

    def claim(self, who: PilotInfo, step: str | None = None) -> Token | None:
        """Exclusively take the best todo token (priority, then age), or None.

        When there is none (and every :data:`SETTLE_EVERY` seconds anyway), first complete the
        promotions that finished parents still owe their children (:meth:`settle_pending`):
        a pilot that died right after finishing a parent must not strand its children."""
        token = self._claim(who, step)
        if token is None:
            if self.settle_pending():
                token = self._claim(who, step)
        elif time.monotonic() >= self._next_settle:
            try:  # the claim is made: a failure here must not lose it
                self.settle_pending()
            except GridlrtError as exc:
                log.warning("pending promotions left for later: %s", exc)
        return token

    # --- dependencies: waiting tokens and their promotion -------------------------------------

    def by_id(self, token_ids: Sequence[str]) -> dict[str, Token | None]:
        """Valid tokens by id; None for an id that is absent or not a valid token."""
        found: dict[str, Token | None] = {}
        for token_id, doc in self._get_docs(list(dict.fromkeys(token_ids))).items():
            found[token_id] = None if doc is None else parse_token(doc, self.malformed, token_id)
        return found

    def settle_child(self, child_id: str) -> bool:
        """Promote, block or unblock one waiting token from the state of its parents; True
        when it changed. Idempotent: any pool user may call it any number of times (on
        replicas too: the same parents give the same document, hence the same revision)."""
        try:
            if self.clustered:
                self.resolve(child_id)
            child = self.get(child_id)
        except (TokenNotFound, MalformedToken):
            return False
        if child.status not in PENDING or child.depends is None:
            return False
        parents = self.by_id(child.depends.parent_ids)
        if dependencies.settled_child(child, parents) is None:
            return False

        def change(token: Token) -> Token:
            new = dependencies.settled_child(token, parents)
            if new is None:
                raise _Unchanged  # somebody settled it meanwhile
            return new

        try:
            new = self._update(child_id, change)
        except (_Unchanged, TokenNotFound, MalformedToken):
            return False
        log.info("token %s is %s (settled from its parents)", child_id, new.status.value)
        if new.settled is False:
            # blocked, or no longer: its own children (which count a blocked parent as failed
            # for good) must hear of it too; until they have, it stays in the unsettled view
            self.settle(new)
        return True

    def settle(self, token: Token | str) -> int:
        """Tell a token's children that it finished (or was reset), then mark it settled.
        Returns how many children changed. A crash in between leaves the token unsettled, so
        the next pool user to call :meth:`settle_pending` does it again."""
        if isinstance(token, str):
            try:
                token = self.get(token)
            except (TokenNotFound, MalformedToken):
                return 0
        if token.settled is False:
            self._spread(token)
        changed = sum(1 for child_id in token.children if self.settle_child(child_id))
        if changed:
            self._promoted()
        if token.settled is False:

            def mark(current: Token) -> Token:
                if current.settled is not False:
                    raise _Unchanged
                return current.model_copy(update={"settled": True})

            with contextlib.suppress(TokenNotFound, MalformedToken):
                self._apply(token.id, mark)
        return changed

    def settle_pending(self) -> int:
        """Settle every finished token whose children were not told (a pilot died in between).
        Returns how many children changed."""
        self._next_settle = time.monotonic() + SETTLE_EVERY
        self.resolve_conflicts()
        changed = 0
        for token_id in self._unsettled_ids():
            changed += self.settle(token_id)
        return changed

    def work_may_appear(self, step: str | None = None) -> bool:
        """True while a pilot that found nothing to claim (of ``step``, or of any step) should
        look again rather than stop: such a token is todo (promoted since it looked), or such
        tokens wait for parents that somebody is working on or has just finished (their
        promotion is under way). False when nothing waits, or nothing could end a wait.
        Cheap: counts by status only."""
        mine = self.status_counts(step)
        if mine.get(TokenStatus.TODO.value, 0):
            return True
        if not mine.get(TokenStatus.WAITING.value, 0):
            return False
        every = mine if step is None else self.status_counts()
        return any(every.get(s.value, 0) for s in ACTIVE) or bool(self._unsettled_ids())

    def _settle_quietly(self, token: Token) -> None:
        """Settle after a pilot's finish or failure; a failure here is left for later."""
        if not token.children or token.settled is not False:
            return
        try:
            self.settle(token)
        except GridlrtError as exc:
            log.warning(
                "children of %s not promoted yet (%s); the next pool user will", token.id, exc
            )

    def heartbeat(self, token_id: str, pilot: str, info: dict[str, Any] | None = None) -> Token:
        now = time.time()
        token = self._update(token_id, lambda t: transitions.heartbeat(t, pilot, now, info))
        self._check(token)
        return token

    def set_status(
        self,
        token_id: str,
        pilot: str,
        status: TokenStatus,
        progress: dict[str, Any] | None = None,
    ) -> Token:
        now = time.time()
        return self._update(
            token_id, lambda t: transitions.set_status(t, pilot, status, now, progress)
        )

    def finish(
        self,
        token_id: str,
        pilot: str,
        *,
        output: Any = None,
        uploads: list[UploadResult] | None = None,
        timings: dict[str, float] | None = None,
    ) -> Token:
        self.confirm(token_id, pilot)
        now = time.time()
        token = self._update(
            token_id,
            lambda t: transitions.finish(
                t, pilot, now, output=output, uploads=uploads, timings=timings
            ),
        )
        self._settle_quietly(token)
        return token

    def fail(
        self,
        token_id: str,
        pilot: str,
        message: str,
        *,
        exception: str = "",
        log_tail: str = "",
        exit_code: int = 1,
        retry: bool = False,
    ) -> Token:
        now = time.time()
        token = self._update(
            token_id,
            lambda t: transitions.fail(
                t,
                pilot,
                now,
                message=message,
                exception=exception,
                log_tail=log_tail,
                exit_code=exit_code,
                retry=retry,
            ),
        )
        self._settle_quietly(token)
        return token

    def release(self, token_id: str, pilot: str) -> Token:
        now = time.time()
        return self._update(token_id, lambda t: transitions.release(t, pilot, now))

    def recover(
        self,
        stale_after: float,
        *,
        max_scrubs: int = DEFAULT_MAX_SCRUBS,
        dry_run: bool = False,
        now: float | None = None,
        force: bool = False,
    ) -> list[str]:
        """Active tokens silent for ``stale_after`` seconds go back to todo (or to error once
        they have been lost ``max_scrubs`` times). Returns the ids (would be) recovered.

        Refuses (:class:`InputError`) a ``stale_after`` that is not positive, a ``max_scrubs``
        below 1, and, unless ``force``, a ``stale_after`` shorter than
        :data:`SAFE_HEARTBEATS` times the heartbeat interval a pilot holding a token recorded
        in it: that would take tokens from live pilots and run their payloads twice.
        Documents that are not valid tokens are skipped (see :attr:`malformed`)."""
        if not stale_after > 0:
            raise InputError(f"--stale-after must be longer than 0 s (got {stale_after:g} s)")
        if max_scrubs < 1:
            raise InputError(f"--max-scrubs must be 1 or more (got {max_scrubs})")
        if not force:
            self._check_stale_after(stale_after)
        moment = time.time() if now is None else now
        cutoff = moment - stale_after

        def change(token: Token) -> Token:
            if token.status not in ACTIVE or max(token.heartbeat, token.lock) >= cutoff:
                raise _Unchanged
            return transitions.recover(token, moment, max_scrubs, stale_after)

        done: list[str] = []
        for token_id in self._stale_ids(cutoff):
            if not self._silent_everywhere(token_id, cutoff):
                continue  # its pilot is alive on another copy of the pool
            try:
                if dry_run:
                    change(self.get(token_id))
                    done.append(token_id)
                elif self._apply(token_id, change):
                    done.append(token_id)
            except (_Unchanged, MalformedToken, TokenNotFound):
                continue  # moved on, not a valid token (reported), or deleted meanwhile
        if not dry_run:
            self.settle_pending()  # tokens that failed for good here, and any a pilot left
        return done

    def _check_stale_after(self, stale_after: float) -> None:
        """Refuse a ``stale_after`` a live pilot of an active token could exceed."""
        widest: tuple[float, str] | None = None
        for status in ACTIVE:
            for token in self.tokens(status):
                attempt = token.current_attempt
                interval = attempt.heartbeat_interval if attempt else None
                if interval and (widest is None or interval > widest[0]):
                    widest = (interval, token.id)
        if widest is not None and stale_after < SAFE_HEARTBEATS * widest[0]:
            interval, token_id = widest
            raise InputError(
                f"--stale-after {format_duration(stale_after)} is shorter than "
                f"{SAFE_HEARTBEATS}x the heartbeat interval ({format_duration(interval)}) "
                f"recorded by the pilot of active token {token_id}: it would take tokens from "
                f"live pilots; use --stale-after {format_duration(SAFE_HEARTBEATS * interval)} "
                "or more, or --force"
            )

    def reset(
        self,
        *,
        statuses: Sequence[TokenStatus] | None = None,
        older_than: float | None = None,
        ids: Sequence[str] | None = None,
        step: str | None = None,
        dry_run: bool = False,
        now: float | None = None,
        cascade: bool = False,
    ) -> list[str]:
        """Put tokens back to todo: by id, or by status (default: error) and age (seconds since
        they were locked or finished) within an optional step. Returns the ids (would be) reset.

        A token with parents goes back to waiting (and is promoted again at once if its
        parents still allow). A token whose outputs a child already took (the child is no
        longer waiting) is refused (:class:`InputError`) unless ``cascade``, which resets those
        children, and theirs, too."""
        moment = time.time() if now is None else now
        if ids is not None:
            chosen = list(ids)
        else:
            wanted = list(statuses or [TokenStatus.ERROR])
            chosen = [
                t.id
                for status in wanted
                for t in self.tokens(status, step)
                if older_than is None or _last_change(t) <= moment - older_than
            ]
        consumers = self._consumers(chosen)
        if consumers and not cascade:
            first, used_by = next(iter(consumers.items()))
            raise InputError(
                f"token {first} was already used by {', '.join(used_by[:3])}"
                f"{' and more' if len(used_by) > 3 else ''} ({len(consumers)} token(s) to reset "
                "have children that started); reset with --cascade to redo them too"
            )
        order = list(dict.fromkeys([*chosen, *self._descendants(consumers)]))
        if dry_run:
            return order
        done: list[str] = []
        for token_id in order:
            try:
                if self._apply(token_id, lambda t: transitions.reset(t, moment)):
                    done.append(token_id)
            except MalformedToken:
                continue  # reported in self.malformed
        # dependent tokens are promoted again where their parents allow; blocked children of
        # the reset tokens wait again
        for token in self.by_id(done).values():
            if token is None:
                continue
            if token.depends is not None:
                self.settle_child(token.id)
            for child_id in token.children:
                self.settle_child(child_id)
        return done

    def _consumers(self, token_ids: Sequence[str]) -> dict[str, list[str]]:
        """For tokens whose children already started (not waiting or blocked): those ids."""
        found: dict[str, list[str]] = {}
        for token in self.by_id(token_ids).values():
            if token is None or not token.children:
                continue
            children = self.by_id(token.children)
            started = [i for i, c in children.items() if c is not None and c.status not in PENDING]
            if started:
                found[token.id] = started
        return found

    def _descendants(self, consumers: dict[str, list[str]]) -> list[str]:
        """Every started token below ``consumers``, parents before children."""
        order: list[str] = []
        queue = [i for ids in consumers.values() for i in ids]
        seen: set[str] = set()
        while queue:
            token_id = queue.pop(0)
            if token_id in seen:
                continue
            seen.add(token_id)
            order.append(token_id)
            queue.extend(self._consumers([token_id]).get(token_id, []))
        return order

    def _apply(self, token_id: str, change: Callable[[Token], Token]) -> bool:
        try:
            self._update(token_id, change)
        except _Unchanged:
            return False
        return True

    def archive(
        self, directory: Path, status: TokenStatus = TokenStatus.DONE, step: str | None = None
    ) -> ArchiveResult:
        """Export tokens (JSON lines) and their attachments under ``directory``, fsync, then
        delete them from the pool. Nothing is deleted unless it was written first. A token
        whose children still wait for it (waiting or blocked) stays: they need its outputs."""
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = directory / f"tokens-{status.value}-{stamp}.jsonl"
        ids: list[str] = []
        kept: list[str] = []
        n_attachments = 0
        with tempfile.NamedTemporaryFile(
            "w", dir=directory, prefix=".partial-", suffix=".jsonl", delete=False
        ) as out:
            try:
                for token in self.tokens(status, step):
                    if token.children and any(
                        child is not None and child.status in PENDING
                        for child in self.by_id(token.children).values()
                    ):
                        kept.append(token.id)
                        continue
                    out.write(json.dumps(token.to_doc(), sort_keys=True) + "\n")
                    for name in self.attachment_names(token.id):
                        path = directory / "attachments" / token.id / name
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(self.attachment(token.id, name))
                        n_attachments += 1
                    ids.append(token.id)
                out.flush()
                os.fsync(out.fileno())
            except BaseException:
                Path(out.name).unlink(missing_ok=True)
                raise
        if not ids:
            Path(out.name).unlink()
            return ArchiveResult(file=None, tokens=0, attachments=0, kept=kept)
        Path(out.name).rename(target)
        self.delete(ids)
        return ArchiveResult(file=target, tokens=len(ids), attachments=n_attachments, kept=kept)


class _Unchanged(Exception):
    """Raised by a change function to leave a token as it is."""


def _last_change(token: Token) -> float:
    attempt = token.current_attempt
    return max(
        float(token.done),
        float(token.lock),
        attempt.ended or 0.0 if attempt else 0.0,
        token.created,
    )
