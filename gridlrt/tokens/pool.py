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

from gridlrt.errors import MalformedToken
from gridlrt.tokens import transitions
from gridlrt.tokens.model import ACTIVE, PilotInfo, Token, TokenStatus, UploadResult

log = logging.getLogger(__name__)

DEFAULT_MAX_SCRUBS = 3


class CreateResult(BaseModel):
    created: list[str] = []
    duplicates: list[str] = []


class Overview(BaseModel):
    """Token counts per step and status."""

    counts: dict[str, dict[str, int]] = {}

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
            str(exc).splitlines()[0]
            if not isinstance(exc, ValidationError)
            else (
                "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
                    for e in exc.errors()[:2]
                )
            )
        )
        if doc_id not in self.reasons:
            log.warning("skipping malformed token %s: %s", doc_id, reason)
        self.reasons[doc_id] = reason


def parse_token(doc: dict[str, Any], malformed: Malformed) -> Token | None:
    """A token from a document, or None (reported) when it is not a valid token."""
    try:
        return Token.from_doc(doc)
    except (ValidationError, ValueError, TypeError) as exc:
        malformed.report(str(doc.get("_id", "?")), exc)
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
    ) -> list[str]:
        """Active tokens silent for ``stale_after`` seconds go back to todo (or to error once
        they have been scrubbed ``max_scrubs`` times). Returns the ids (would be) recovered."""
        moment = time.time() if now is None else now
        cutoff = moment - stale_after
        ids = self._stale_ids(cutoff)
        if dry_run:
            return ids
        done: list[str] = []
        for token_id in ids:

            def change(token: Token) -> Token:
                if token.status not in ACTIVE or max(token.heartbeat, token.lock) >= cutoff:
                    raise _Unchanged
                return transitions.recover(token, moment, max_scrubs, stale_after)

            if self._apply(token_id, change):
                done.append(token_id)
        return done

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
        return [i for i in chosen if self._apply(i, lambda t: transitions.reset(t, moment))]

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
