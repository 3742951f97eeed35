"""The pool contract: one abstract class, two backends (CouchDB, embedded SQLite).

A backend provides a handful of storage primitives — atomic read-modify-write of one token
(:meth:`TokenPool._update`), an exclusive :meth:`TokenPool.claim`, bulk insert, queries,
attachments — and inherits everything else from here, so both backends share one set of
semantics (see :mod:`gridlrt.tokens.transitions`) and one contract test suite.

Documents that are not valid tokens are reported (logged, and listed in
:attr:`TokenPool.malformed`) and skipped; they never crash a claim or a listing.
"""

from __future__ import annotations

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
from gridlrt.errors import InputError, MalformedToken, TokenNotFound
from gridlrt.tokens import transitions
from gridlrt.tokens.model import ACTIVE, PilotInfo, Token, TokenStatus, UploadResult

log = logging.getLogger(__name__)

DEFAULT_MAX_SCRUBS = 3
# recover refuses a --stale-after shorter than this many heartbeat intervals of a pilot that
# holds a token (unless forced): a live pilot may just be between two heartbeats
SAFE_HEARTBEATS = 3


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
    def claim(self, who: PilotInfo, step: str | None = None) -> Token | None:
        """Exclusively take the best todo token (priority, then age), or None."""

    @abstractmethod
    def _iter_docs(
        self, status: TokenStatus | None = None, step: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Raw documents of type token, optionally filtered (status is the derived status)."""

    @abstractmethod
    def overview(self) -> Overview:
        """Counts per step and status."""

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

    @abstractmethod
    def put_record(self, kind: str, record_id: str, body: dict[str, Any]) -> None:
        """Create or replace the record ``kind``/``record_id`` (never a token; views ignore it)."""

    @abstractmethod
    def get_record(self, kind: str, record_id: str) -> dict[str, Any]:
        """One record; :class:`RecordNotFound` when absent."""

    @abstractmethod
    def records(self, kind: str) -> list[dict[str, Any]]:
        """All records of ``kind``, ordered by id."""

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
        token = parse_token(self._get_doc(token_id), self.malformed)
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

    def heartbeat(self, token_id: str, pilot: str, info: dict[str, Any] | None = None) -> Token:
        now = time.time()
        return self._update(token_id, lambda t: transitions.heartbeat(t, pilot, now, info))

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
        now = time.time()
        return self._update(
            token_id,
            lambda t: transitions.finish(
                t, pilot, now, output=output, uploads=uploads, timings=timings
            ),
        )

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
        return self._update(
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
            try:
                if dry_run:
                    change(self.get(token_id))
                    done.append(token_id)
                elif self._apply(token_id, change):
                    done.append(token_id)
            except (_Unchanged, MalformedToken, TokenNotFound):
                continue  # moved on, not a valid token (reported), or deleted meanwhile
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
    ) -> list[str]:
        """Put tokens back to todo: by id, or by status (default: error) and age (seconds since
        they were locked or finished) within an optional step. Returns the ids (would be) reset."""
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
        if dry_run:
            return chosen
        done: list[str] = []
        for token_id in chosen:
            try:
                if self._apply(token_id, lambda t: transitions.reset(t, moment)):
                    done.append(token_id)
            except MalformedToken:
                continue  # reported in self.malformed
        return done

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
        delete them from the pool. Nothing is deleted unless it was written first."""
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = directory / f"tokens-{status.value}-{stamp}.jsonl"
        ids: list[str] = []
        n_attachments = 0
        with tempfile.NamedTemporaryFile(
            "w", dir=directory, prefix=".partial-", suffix=".jsonl", delete=False
        ) as out:
            try:
                for token in self.tokens(status, step):
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
            return ArchiveResult(file=None, tokens=0, attachments=0)
        Path(out.name).rename(target)
        self.delete(ids)
        return ArchiveResult(file=target, tokens=len(ids), attachments=n_attachments)


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
