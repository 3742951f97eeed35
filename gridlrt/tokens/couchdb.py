"""The CouchDB pool: a PiCaS-compatible database spoken to over HTTP (:mod:`gridlrt.tokens.http`).

Exclusive claims rest on CouchDB's multi-version concurrency control: a claimer reads todo
rows from the claim view (ids only), reads the chosen document, checks it really is todo,
and writes it back with the ``_rev`` it read. Only one writer can succeed for a revision; a loser
gets 409 and tries another candidate. (PiCaS re-reads the document after the view and writes
it without re-checking ``lock``, which is how two of its workers can "win" one token.)
A claimer keeps the rest of one view read for a few seconds and tries those ids first (one
view query serves many claims). Alone, it takes them in view order (priority, then age).
Once it has lost a race, for a while it reads more ids at once (256), from where its last
read began, and walks them along a ring every claimer sees the same (ordered by a hash of the
id) from a random place, jumping elsewhere when it meets a taken one: concurrent claimers
spread out instead of all going for the head, and it backs off with jitter when a read is
used up. Figures in ``bench/RESULTS.md`` (issue 18).

On more than one copy (a CouchDB cluster, or ``replicas`` that replicate with this database)
each copy may accept a claim of the same revision; both survive as conflicting revisions.
Then a claim is checked on this copy after it is made and at every heartbeat, and confirmed
on every copy before its pilot publishes anything (:meth:`CouchDBPool.confirm`); the losing
revisions are deleted, by the rule of :mod:`gridlrt.tokens.conflicts`. Figures in
``bench/RESULTS.md`` (issue 19).

Every request is retried with backoff on connection errors and 5xx answers, a bounded number
of times; then :class:`~gridlrt.errors.PoolUnavailable` says so in one line. Credentials go in
the HTTP session, never in a URL that is shown.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import requests

from gridlrt.config import redact_url, strip_credentials
from gridlrt.errors import (
    CredentialsError,
    LostClaim,
    PoolError,
    PoolNotInitialised,
    PoolUnavailable,
    RecordNotFound,
    TokenNotFound,
)
from gridlrt.retry import Backoff, Outage, retry
from gridlrt.tokens import design, transitions
from gridlrt.tokens.conflicts import Leaf, losers, winner
from gridlrt.tokens.conflicts import leaves as parse_leaves
from gridlrt.tokens.follow import CountsFollower
from gridlrt.tokens.http import Answer, Http
from gridlrt.tokens.model import ACTIVE, PilotInfo, Token, TokenStatus
from gridlrt.tokens.pool import CreateResult, Overview, TokenPool, parse_token

log = logging.getLogger(__name__)

RETRIES = 5
CLAIM_WINDOW = 64  # todo rows a claimer reads at once
CONTENDED_WINDOW = 256  # ... while others take the same ones (fewer view reads, fewer misses)
CONTENDED_FOR = 60.0  # seconds a claimer keeps scattering after it lost a race
MISSES_BEFORE_REREAD = 2  # taken candidates in a row before reading the view again
KNOWN_REVISIONS = 1000  # tokens whose last written revision a pool remembers
SEEN_DOCUMENTS = 5000  # parents' documents a pool keeps by revision (settling reads them often)
CANDIDATES_TTL = 10.0  # seconds a claimer keeps trying the rest of one claim-view read
FULL_READ_EVERY = 10.0  # seconds a contended claimer reads the claim view from its last head
CONFIRM_TIMEOUT = 300.0  # seconds a claim may take to reach every replica before a pilot gives up
VIEW = f"{design.DESIGN_ID}/_view"


def _digest(data: bytes) -> str:
    """An attachment's digest as CouchDB and PouchDB write it in stubs: md5, base64."""
    return "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()


def _ring(token_id: str) -> int:
    """A token's place on a ring that every claimer sees the same (crc32 of its id)."""
    return zlib.crc32(token_id.encode())


def _elsewhere(ids: list[str]) -> list[str]:
    """``ids`` from a random place on, wrapping around. Contended claimers walk the ring of
    candidates (:func:`_ring`) from random places: each takes the tokens ahead of it until it
    meets what another has taken (about window / claimers tokens), where it jumps again. With
    a random order instead, each try's odds of meeting a taken token grow with every claim
    made since the read: 0.44 misses a claim at 16 claimers, against 0.26-0.32 on the ring."""
    if not ids:
        return ids
    start = random.randrange(len(ids))
    return ids[start:] + ids[:start]


class _ServerError(Exception):
    """Internal: a 5xx answer, retried like a lost connection."""


def _transient(exc: Exception) -> str | None:
    """What a request's failure was, when it is worth a retry (no answer, or a 5xx)."""
    if isinstance(exc, _ServerError):
        return str(exc)
    if isinstance(exc, requests.RequestException):
        return type(exc).__name__
    return None


def _number(value: Any) -> float:
    """A number field of a raw document (0 when it is not one)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _json(response: Answer) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class CouchDBPool(TokenPool):
    """Token pool in a CouchDB (or CouchDB-compatible) database."""

    def __init__(
        self,
        url: str,
        auth: tuple[str, str] | None = None,
        *,
        timeout: float = 60.0,
        retries: int = RETRIES,
        patience: float = 0.0,
        replicas: Sequence[str] = (),
        confirm_timeout: float = CONFIRM_TIMEOUT,
    ) -> None:
        """``retries`` tries of each request, and more while less than ``patience`` seconds
        have passed since its first failure (pilots ride out outages; commands give up).
        ``replicas``: the URLs of the other copies of this database that replicate with it
        (both ways, continuously), when the pool is more than one server (see
        :meth:`confirm`)."""
        super().__init__()
        self.db_url = strip_credentials(url).split("?")[0].rstrip("/")
        self.url = redact_url(self.db_url)
        self.timeout = timeout
        self.backoff = Backoff(tries=retries, patience=patience)
        self.outage = Outage(f"token pool {self.url}")
        self._local = threading.local()  # per thread: was the last request retried?
        self.http = Http(self.db_url, auth)
        self._known: dict[str, Token] = {}
        self._seen: dict[str, dict[str, Any]] = {}
        self._pending: dict[str | None, tuple[float, list[str]]] = {}
        self._contended_until = 0.0
        self._heads: dict[str | None, tuple[float, Any]] = {}  # see _claim_rows
        self._follower: CountsFollower | None = None  # see follow()
        self.sent: Counter[str] = Counter()  # requests by kind and answer, for benches
        self.replicas = [
            CouchDBPool(r, auth, timeout=timeout, retries=retries, patience=patience)
            for r in replicas
        ]
        self.confirm_timeout = max(confirm_timeout, patience)
        self._copies: int | None = None  # copies of each document (a cluster's n), see clustered
        self._confirmed: set[tuple[str, str]] = set()  # (token, attempt) claims confirmed
        self.resolved = 0  # losing revisions this pool deleted

    @staticmethod
    def _kind(method: str, path: str, status: int) -> str:
        """A request's kind for :attr:`sent`: ``GET doc 200``, ``GET view gridlrt_todo 200``."""
        head = path.split("?")[0]
        if "/_view/" in head:
            what = "view " + head.rsplit("/", 1)[-1]
        elif head.startswith("_"):
            what = head.split("/")[0]
        else:
            what = "doc" if head else "db"
        return f"{method} {what} {status}"

    def close(self) -> None:
        self.http.close()
        for replica in self.replicas:
            replica.close()

    # --- HTTP ------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str = "", *, ok: Sequence[int] = (200, 201, 202), **kwargs: Any
    ) -> Answer:
        """One request with bounded retries; statuses outside ``ok`` and 409 raise. (202: a
        CouchDB cluster stored a write on fewer copies than its write quorum ``w``; it is
        stored, and on a clustered pool :meth:`confirm` makes sure of the claims.)"""
        url = f"{self.db_url}/{path}" if path else self.db_url
        kwargs.setdefault("timeout", self.timeout)
        self._local.retried = False

        def once() -> Answer:
            response = self.http.request(method, url, **kwargs)
            if response.status_code >= 500:
                raise _ServerError(f"HTTP {response.status_code}")
            return response

        def gave_up(problem: str, attempts: int) -> PoolUnavailable:
            patience = self.backoff.patience
            waited = f" and {patience:.0f} s of patience" if patience else ""
            return PoolUnavailable(
                f"token pool {self.url} unreachable after {attempts} attempts"
                f"{waited} ({problem}); check the URL and that the server runs"
            )

        def retried(_problem: str, _attempt: int, _delay: float) -> None:
            self._local.retried = True

        response = retry(
            once,
            self.backoff,
            transient=_transient,
            gave_up=gave_up,
            on_retry=retried,
            outage=self.outage,
        )
        self.sent[self._kind(method, path, response.status_code)] += 1
        if response.status_code in ok or response.status_code == 409:
            return response
        if response.status_code == 401:
            raise CredentialsError(
                f"CouchDB at {self.url} refused the credentials; check pool_credentials "
                "(or GRIDLRT_POOL_USERNAME/GRIDLRT_POOL_PASSWORD)"
            )
        if response.status_code == 403:
            raise CredentialsError(f"CouchDB user may not access {self.url}; ask its admin")
        if "error" not in _json(response):  # CouchDB answers every error in JSON
            raise self._not_couchdb(response)
        if response.status_code == 404:
            reason = str(_json(response).get("reason", "")).lower()
            if not path or "database" in reason or "no_db_file" in reason:
                raise PoolNotInitialised(
                    f"database {self.url} does not exist; run `gridlrt pool init`"
                )
            if path.startswith("_design/"):
                raise PoolNotInitialised(
                    f"{self.url} lacks the gridlrt view {path.rsplit('/', 1)[-1].split('?')[0]} "
                    "(not initialised, or by an older gridlrt); run `gridlrt pool init` "
                    "(safe on a pool in use: it keeps every token)"
                )
            raise TokenNotFound(f"not found in {self.url}: {path.split('?')[0]}")
        raise PoolError(
            f"CouchDB {self.url} answered HTTP {response.status_code} to {method} "
            f"{path.split('?')[0] or '/'}: {response.text[:200]}"
        )

    def _not_couchdb(self, response: Answer) -> PoolError:
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        return PoolError(
            f"{self.url}: not a CouchDB server (it answered HTTP {response.status_code} with "
            f"{kind}, not CouchDB's JSON); check the host, port and path of the pool URL"
        )

    def _view(self, name: str, **params: Any) -> list[dict[str, Any]]:
        query = {k: json.dumps(v) if k.endswith("key") else v for k, v in params.items()}
        return list(self._request("GET", f"{VIEW}/{name}", params=query).json()["rows"])

    @staticmethod
    def _doc_path(token_id: str) -> str:
        return quote(token_id, safe="")

    # --- primitives ----------------------------------------------------------------------

    def init(self) -> None:
        probe = self._request("GET", ok=(200, 404))  # a database, or CouchDB saying "no such"
        if not {"db_name", "error"} & set(_json(probe)):
            raise self._not_couchdb(probe)
        response = self._request("PUT", ok=(201, 202, 412))
        if response.status_code in (201, 202):
            log.info("created database %s", self.url)
        got = self._request("GET", design.DESIGN_ID, ok=(200, 404))
        existing = got.json() if got.status_code == 200 else None
        wanted = design.merged(existing)
        if wanted is not None:
            put = self._request("PUT", design.DESIGN_ID, json=wanted)
            if put.status_code == 409:
                raise PoolError(f"design document of {self.url} changed meanwhile; run init again")

    def _insert(self, docs: Sequence[dict[str, Any]]) -> CreateResult:
        response = self._request("POST", "_bulk_docs", json={"docs": list(docs)})
        result = CreateResult()
        for row in response.json():
            if "error" not in row:
                result.created.append(row["id"])
            elif row["error"] == "conflict":
                result.duplicates.append(row["id"])
            else:
                raise PoolError(
                    f"cannot create token {row['id']}: {row.get('reason', row['error'])}"
                )
        return result

    def _get_doc(self, token_id: str) -> dict[str, Any]:
        response = self._request("GET", self._doc_path(token_id), ok=(200, 404))
        if response.status_code == 404:
            raise TokenNotFound(f"no token {token_id!r} in {self.url}")
        doc: dict[str, Any] = response.json()
        return doc

    def _put(self, token: Token) -> str | None:
        """Write with the token's ``_rev``; the new rev, or None on a conflict."""
        doc = token.to_doc()
        response = self._request("PUT", self._doc_path(token.id), json=doc, ok=(200, 201, 202, 412))
        if response.status_code == 409:
            return self._landed(doc) if self._local.retried else None
        if response.status_code == 412:  # an attachment stub of our copy is not the server's
            log.debug("token %s: %s", token.id, response.text[:200])
            return None
        return str(response.json()["rev"])

    def _landed(self, doc: dict[str, Any]) -> str | None:
        """After a write that was retried through an outage ends in 409: the revision of the
        document if the first try did land (the answer was lost), else None (a real conflict)."""
        current = self._request("GET", self._doc_path(str(doc["_id"])), ok=(200, 404))
        if not current.ok:
            return None
        stored = current.json()

        def body(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if k not in ("_rev", "_attachments")}

        if body(stored) == body(json.loads(json.dumps(doc))):
            log.info("token %s: the write before the outage had landed", doc["_id"])
            return str(stored["_rev"])
        return None

    def _update(self, token_id: str, change: Callable[[Token], Token]) -> Token:
        # First try on the revision this pool last wrote (saves a GET for a pilot's own
        # heartbeats, status changes and finish); anything but success means a fresh read.
        cached = self._known.pop(token_id, None)
        if cached is not None:
            try:
                new = change(cached)
            except Exception:  # decided on a stale copy: decide again on the current one
                new = None
            if new is not None and (rev := self._put(new)) is not None:
                new.rev = rev
                return self._remember(new)
        for attempt in range(50):
            new = change(self._current(token_id))
            rev = self._put(new)
            if rev is not None:
                new.rev = rev
                return self._remember(new)
            time.sleep(min(1.0, 0.01 * 2**attempt) * random.random())
        raise PoolError(f"token {token_id} keeps changing under us in {self.url}; try again")

    def _current(self, token_id: str) -> Token:
        """The token as it stands. On a clustered pool: the winner of its conflicting
        revisions by gridlrt's rule, the losers deleted first. (A plain read shows CouchDB's
        choice, the longest branch: a losing pilot's that kept heartbeating would make the
        winning pilot believe its token was taken.)"""
        if not self.clustered:
            return self.get(token_id)
        best, _ = self._settled(token_id)
        if best is None:
            raise TokenNotFound(f"no token {token_id!r} in {self.url}")
        return self._valid(best.doc, token_id)

    def _remember(self, token: Token) -> Token:
        self._known[token.id] = token
        if len(self._known) > KNOWN_REVISIONS:
            self._known.pop(next(iter(self._known)))
        return token

    def _claim(self, who: PilotInfo, step: str | None = None) -> Token | None:
        for round_ in range(100):
            candidates = self._candidates(step)
            if not candidates:
                return None
            missed = 0
            while candidates:
                token_id = candidates.pop(0)
                # The view said todo; only the document can say so for sure. Write back exactly
                # the revision that was checked: a concurrent claim turns this PUT into a 409.
                response = self._request("GET", self._doc_path(token_id), ok=(200, 404))
                token = parse_token(response.json(), self.malformed) if response.ok else None
                if token is not None and token.status is TokenStatus.TODO:
                    new = transitions.claim(token, who, time.time())
                    rev = self._put(new)
                    if rev is not None:
                        new.rev = rev
                        self._remember(new)
                        try:
                            self._check(new)
                            return new
                        except LostClaim as exc:  # another replica's claim wins
                            log.info("%s", exc)
                missed += 1
                self._contended_until = time.monotonic() + CONTENDED_FOR
                if missed >= MISSES_BEFORE_REREAD:  # the read is stale: a new one is cheaper
                    break
                candidates = _elsewhere(candidates)  # others are at work here: go elsewhere
            self._pending.pop(step, None)
            if missed:
                time.sleep(min(0.5, 0.01 * 2 ** min(round_, 6)) * random.random())
        raise PoolError(f"could not claim a token in {self.url} after 100 rounds of conflicts")

    def _candidates(self, step: str | None) -> list[str]:
        """Todo ids to try, best first: what is left of a recent view read (saves a view query
        per claim), else a fresh read of the claim view."""
        read_at, ids = self._pending.get(step, (0.0, []))
        if ids and time.monotonic() - read_at < CANDIDATES_TTL:
            return ids
        contended = time.monotonic() < self._contended_until
        window = (CONTENDED_WINDOW if contended else CLAIM_WINDOW) + len(self.malformed.reasons)
        rows = self._claim_rows(step, window, contended)
        rows = [r for r in rows if r["id"] not in self.malformed.reasons]
        ids = [r["id"] for r in self._claim_order(rows)] if rows else []
        if contended:  # recently lost races: do not all start at the head
            ids = _elsewhere(sorted(ids, key=_ring))
        self._pending[step] = (time.monotonic(), ids)
        return ids

    def _claim_rows(self, step: str | None, window: int, contended: bool) -> list[dict[str, Any]]:
        """Up to ``window`` rows of the claim view, from its start; or, while others take the
        same tokens, from the first key this pool saw there less than :data:`FULL_READ_EVERY`
        seconds ago. Every token taken leaves a deleted row at the start of the view that
        pouchdb-server's index steps over on each read from the start (9-13 us a row: 9-13 ms
        a read once 1,000 are taken); a contended claimer reads often, and tokens that became
        todo before that key meanwhile (reset, promoted, more urgent) wait at most until the
        next full read. Which is also made when the shorter one finds nothing."""
        full_at, head = self._heads.get(step, (0.0, None))
        first: list[Any] = [0] if step is None else [step]  # gridlrt_next: [0, ...] are todo
        rows: list[dict[str, Any]] = []
        if contended and head is not None and time.monotonic() - full_at < FULL_READ_EVERY:
            rows = self._view(self._todo_view(step), startkey=head, endkey=[*first, {}],
                              limit=window)  # fmt: skip
        if not rows:
            full_at = time.monotonic()
            rows = self._view(self._todo_view(step), startkey=first, endkey=[*first, {}],
                              limit=window)  # fmt: skip
        if rows:
            self._heads[step] = (full_at, rows[0]["key"])
        else:
            self._heads.pop(step, None)
        return rows

    @staticmethod
    def _todo_view(step: str | None) -> str:
        return "gridlrt_next" if step is None else "gridlrt_todo"

    @staticmethod
    def _claim_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of the best priority in view order (priority, then age); lower priorities
        wait for the next read. (The claim views' keys end with ``-priority, created``.)"""
        head, rest = rows[0], rows[1:]
        same = [r for r in rest if r["key"][-2] == head["key"][-2]]
        return [head, *same]

    def _iter_docs(
        self, status: TokenStatus | None = None, step: str | None = None
    ) -> Iterator[dict[str, Any]]:
        if status is None:
            yield from self._iter_all(step)
            return
        start: list[Any] = [status.value] if step is None else [status.value, step]
        end: list[Any] = [*start, {}]
        skip = 0
        while True:
            rows = self._view(
                "gridlrt_status",
                reduce="false",
                include_docs="true",
                startkey=start,
                endkey=end,
                limit=1000,
                skip=skip,
            )
            for row in rows:
                if row.get("doc"):
                    yield row["doc"]
            if len(rows) < 1000:
                return
            start, skip = row["key"], 1

    def _iter_all(self, step: str | None) -> Iterator[dict[str, Any]]:
        startkey: str | None = None
        while True:
            params: dict[str, Any] = {"include_docs": "true", "limit": 1000}
            if startkey is not None:
                params.update(startkey=json.dumps(startkey), skip=1)
            rows = self._request("GET", "_all_docs", params=params).json()["rows"]
            for row in rows:
                doc = row.get("doc") or {}
                if doc.get("type") == "token" and (
                    step is None or (doc.get("step") or "default") == step
                ):
                    yield doc
            if len(rows) < 1000:
                return
            startkey = rows[-1]["id"]

    def follow(self) -> None:
        if self._follower is None:
            self._follower = CountsFollower(self)

    def overview(self) -> Overview:
        if self._follower is not None:
            self._follower.refresh()
            return self._follower.overview()
        counts: dict[str, dict[str, int]] = {}
        statuses = {s.value for s in TokenStatus}
        suspects: list[Any] = []
        for row in self._view("gridlrt_status", group_level=2):
            key = row["key"]
            status, step = (*key, None, None)[:2] if isinstance(key, list) else (None, None)
            if status in statuses and isinstance(step, str) and step:
                counts.setdefault(step, {})[status] = row["value"]
            else:  # "malformed", or garbage a design document older than gridlrt's let through
                suspects.append(key)
        malformed: dict[str, str] = {}
        for key in suspects:  # read them one by one: counted if valid after all, else reported
            for row in self._view(
                "gridlrt_status",
                reduce="false",
                include_docs="true",
                startkey=key,
                endkey=[*key, {}] if isinstance(key, list) else key,
            ):
                token = parse_token(row.get("doc"), self.malformed, row["id"])
                if token is None:
                    malformed[row["id"]] = self.malformed.reasons[row["id"]]
                else:
                    step_counts = counts.setdefault(token.step, {})
                    step_counts[token.status.value] = step_counts.get(token.status.value, 0) + 1
        return Overview(counts=counts, malformed=malformed)

    def _stale_ids(self, before: float) -> list[str]:
        return [r["id"] for r in self._view("gridlrt_heartbeat", endkey=before)]

    def _promoted(self) -> None:
        self._pending.clear()
        self._heads.clear()  # promoted children may sort before the last head

    def status_counts(self, step: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._view("gridlrt_status", group_level=1 if step is None else 2):
            key = row["key"]
            if not (isinstance(key, list) and key and isinstance(key[0], str)):
                continue
            if step is None or (len(key) > 1 and key[1] == step):
                counts[key[0]] = counts.get(key[0], 0) + int(row["value"])
        return counts

    def _unsettled_ids(self) -> list[str]:
        return [r["id"] for r in self._view("gridlrt_next", startkey=[1], endkey=[1, {}])]

    def stage_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        if self._follower is not None:
            self._follower.refresh()
            return self._follower.stage_counts()
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for row in self._view("gridlrt_stages", group_level=3):
            pipeline, stage, status = row["key"]
            counts.setdefault((pipeline, stage), {})[status] = row["value"]
        return counts

    def _get_docs(self, token_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Documents by id, read in bulk. Settling a child reads all its parents each time one
        of them finishes (240 for a LOFAR observation's gather): their revisions are asked
        first, and only documents this pool has not seen at that revision are fetched."""
        found: dict[str, dict[str, Any] | None] = {}
        ids = list(token_ids)
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            if self.clustered:  # settle conflicts first: a promotion reads only winners
                self._resolve_among(chunk)
            revs = self._request("POST", "_all_docs", json={"keys": chunk}).json()["rows"]
            stale: list[str] = []
            for row in revs:
                value = row.get("value") or {}
                cached = self._seen.get(row["key"])
                if "error" in row or value.get("deleted"):
                    found[row["key"]] = None
                elif cached is not None and cached.get("_rev") == value.get("rev"):
                    found[row["key"]] = cached
                else:
                    stale.append(row["key"])
            if stale:
                rows = self._request(
                    "POST", "_all_docs", params={"include_docs": "true"}, json={"keys": stale}
                ).json()["rows"]
                for row in rows:
                    doc = row.get("doc")
                    found[row["key"]] = doc if isinstance(doc, dict) else None
                    if isinstance(doc, dict):
                        self._seen[row["key"]] = doc
                        if len(self._seen) > SEEN_DOCUMENTS:
                            self._seen.pop(next(iter(self._seen)))
        return {i: found.get(i) for i in ids}

    # --- replicas and conflicting revisions (issue 19) ----------------------------------------

    @property
    def clustered(self) -> bool:
        """True when two writes of one revision can both be accepted: replicas were named, or
        the database is a CouchDB cluster's keeping more than one copy of each document
        (``cluster.n`` of its info; asked once)."""
        if self.replicas:
            return True
        if self._copies is None:
            cluster = _json(self._request("GET")).get("cluster")
            n = cluster.get("n") if isinstance(cluster, dict) else None
            self._copies = n if isinstance(n, int) and n > 0 else 1
        return self._copies > 1

    def _leaves(self, token_id: str) -> list[Leaf]:
        """Every leaf of the token's revision tree, deleted ones too, with their histories. On
        a CouchDB cluster read from all ``n`` copies (``r=n``), so none is missed."""
        params: dict[str, Any] = {"open_revs": "all", "revs": "true"}
        if self._copies and self._copies > 1:
            params["r"] = self._copies
        response = self._request("GET", self._doc_path(token_id), params=params, ok=(200, 404))
        return parse_leaves(response.json()) if response.ok else []

    def _delete_losers(self, token_id: str, found: Sequence[Leaf]) -> bool:
        """Delete the leaves that lose (True when there were none, or all are deleted now)."""
        gone = losers(found)
        if not gone:
            return True
        docs = [{"_id": token_id, "_rev": leaf.rev, "_deleted": True} for leaf in gone]
        answer = self._request("POST", "_bulk_docs", json={"docs": docs}).json()
        ok = sum(1 for row in answer if isinstance(row, dict) and "error" not in row)
        self.resolved += ok
        kept = winner(found)
        known = self._known.get(token_id)
        if known is not None and known.rev and not (kept and kept.holds(known.rev)):
            self._known.pop(token_id, None)  # what this pool wrote last lost
        log.warning(
            "token %s had %d conflicting revision(s) (two replicas accepted one write): "
            "kept %s, deleted %s",
            token_id,
            len(gone),
            kept.rev if kept else "none",
            ", ".join(leaf.rev for leaf in gone),
        )
        return ok == len(gone)

    def resolve(self, token_id: str) -> bool:
        return self._settled(token_id)[1] > 0

    def _settled(self, token_id: str) -> tuple[Leaf | None, int]:
        """The token's winning leaf once the losers are deleted (None: there is no live
        one), and how many losers there were."""
        for _ in range(10):
            found = self._leaves(token_id)
            if self._delete_losers(token_id, found):
                break
        return winner(found), len(losers(found))

    def conflicts(self) -> list[tuple[str, list[Leaf]]]:
        found = []
        for row in self._view("gridlrt_conflicts"):
            live = [leaf for leaf in self._leaves(row["id"]) if not leaf.deleted]
            if len(live) > 1:
                found.append((str(row["id"]), live))
        return found

    def resolve_conflicts(self) -> int:
        if not self.clustered:
            return 0
        try:
            ids = [row["id"] for row in self._view("gridlrt_conflicts")]
        except PoolNotInitialised:
            log.warning("%s has no conflicts view; run `gridlrt pool init`", self.url)
            return 0
        return sum(1 for token_id in ids if self.resolve(token_id))

    def _silent_everywhere(self, token_id: str, cutoff: float) -> bool:
        """On a replicated pool a pilot writes on its own copy: before a token is taken from
        it, every copy is asked (all revisions, conflicting ones too) whether the pilot gave
        a sign of life since ``cutoff``, or moved the token on (finished, failed, released:
        a finish not yet replicated here must not be thrown away by a recovery that wins
        over it). A copy that does not answer keeps the token where it is."""
        if not self.replicas:
            return True
        for node in self.replicas:
            try:
                found = node._leaves(token_id)
            except PoolUnavailable as exc:
                log.warning("token %s not recovered: %s", token_id, exc)
                return False
            for leaf in found:
                if leaf.deleted:
                    continue
                if leaf.doc.get("status") not in {s.value for s in ACTIVE}:
                    log.info("token %s not recovered: moved on at %s", token_id, node.url)
                    return False
                beat = max(_number(leaf.doc.get("heartbeat")), _number(leaf.doc.get("lock")))
                if beat >= cutoff:
                    log.info("token %s not recovered: alive on %s", token_id, node.url)
                    return False
        return True

    def _check(self, token: Token) -> None:
        attempt = token.current_attempt
        if self.clustered and attempt is not None and token.rev:
            self._referee(token.id, token.rev, attempt.id, wait=0.0)

    def confirm(self, token_id: str, pilot: str) -> None:
        """A claim is confirmed once every copy of the pool has it and knows no other leaf
        that wins over it. From then on no other claim of that todo revision can appear
        anywhere: a copy that has the claim answers 409 to a write on the revision before it,
        and a claim written on a copy before the claim reached it is a leaf there, seen and
        settled by this check. So a result published after :meth:`confirm` is the only one.
        Waits up to ``confirm_timeout`` for the claim to arrive on each copy (then
        :class:`PoolUnavailable`: replication is down); :class:`LostClaim` when it lost."""
        if not self.clustered:
            return
        mine = self._known.get(token_id) or self.get(token_id)
        attempt = transitions.ensure_owner(mine, pilot)
        if (token_id, attempt.id) in self._confirmed:
            return
        assert mine.rev is not None
        for node in (self, *self.replicas):
            node._referee(token_id, mine.rev, attempt.id, wait=self.confirm_timeout)
        self._confirmed.add((token_id, attempt.id))
        if len(self._confirmed) > KNOWN_REVISIONS:
            self._confirmed.pop()

    def _referee(self, token_id: str, rev: str, attempt_id: str, *, wait: float) -> None:
        """On this copy: settle the token's conflicts, and raise :class:`LostClaim` unless the
        winner continues revision ``rev`` with attempt ``attempt_id`` still running. Waits up
        to ``wait`` seconds for ``rev`` to arrive here; with 0, a copy that lacks it passes."""
        while True:
            found = self._arrived(token_id, rev, wait, what="this pilot's claim")
            if found is None:
                return
            best = winner(found)
            if best is None or not best.holds(rev):
                self._delete_losers(token_id, found)
                raise LostClaim(
                    f"token {token_id}: another pilot's claim won on {self.url} "
                    "(two replicas of the pool accepted a claim each)"
                )
            token = parse_token(best.doc, self.malformed, token_id)
            current = token.current_attempt if token is not None else None
            if (
                token is None
                or token.status not in ACTIVE
                or current is None
                or (current.id != attempt_id)
            ):
                raise LostClaim(f"token {token_id} is no longer this pilot's on {self.url}")
            if self._delete_losers(token_id, found):
                return
            # a loser changed meanwhile: look again

    def _arrived(self, token_id: str, rev: str, wait: float, *, what: str) -> list[Leaf] | None:
        """The token's leaves on this copy once one of them holds ``rev``, polling up to
        ``wait`` seconds; with 0, None when it is not here. :class:`PoolUnavailable` when it
        does not arrive in time (the replication is down)."""
        deadline = time.monotonic() + wait
        delay = 0.02
        while True:
            found = self._leaves(token_id)
            if any(leaf.holds(rev) for leaf in found):
                return found
            if not wait:
                return None
            if time.monotonic() > deadline:
                raise PoolUnavailable(
                    f"token {token_id}: {what} has not reached {self.url} after {wait:.0f} s; "
                    "check that the pool's replication runs"
                )
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def _spread(self, token: Token) -> None:
        """Wait until every copy has ``token`` as written (a parent's finish, before its
        children are told): of two parents finishing on two copies at once, the one that
        tells the children last then sees both done, and promotes them. (Without the wait,
        each copy could see only its own parent done, and both parents be marked settled
        with the children still waiting, for ever.)"""
        if not self.clustered or token.rev is None:
            return
        for node in (self, *self.replicas):
            node._arrived(token.id, token.rev, self.confirm_timeout, what="its finish")

    def _resolve_among(self, token_ids: Sequence[str]) -> None:
        """Settle the conflicts of those of ``token_ids`` that have any (one read of the
        conflicts view finds them)."""
        try:
            rows = self._request(
                "POST", f"{VIEW}/gridlrt_conflicts", json={"keys": list(token_ids)}
            ).json()["rows"]
        except PoolNotInitialised:
            log.warning("%s has no conflicts view; run `gridlrt pool init`", self.url)
            return
        for token_id in {str(row["id"]) for row in rows}:
            self.resolve(token_id)
            self._seen.pop(token_id, None)

    def delete(self, token_ids: Iterable[str]) -> int:
        ids = list(token_ids)
        deleted = 0
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            rows = self._request("POST", "_all_docs", json={"keys": chunk}).json()["rows"]
            docs = [
                {"_id": r["id"], "_rev": r["value"]["rev"], "_deleted": True}
                for r in rows
                if "value" in r and not r["value"].get("deleted")
            ]
            if docs:
                answer = self._request("POST", "_bulk_docs", json={"docs": docs}).json()
                deleted += sum(1 for r in answer if "error" not in r)
        return deleted

    def attach(
        self, token_id: str, name: str, data: bytes, content_type: str = "text/plain"
    ) -> None:
        # On the revision this pool last wrote when it knows one (a pilot attaching its log
        # before finishing); afterwards it knows the new one, with the attachment's stub, so
        # the finish that follows needs no GET and keeps the attachment.
        known = self._known.pop(token_id, None)
        for _ in range(50):
            rev = known.rev if known is not None else self._get_doc(token_id)["_rev"]
            response = self._request(
                "PUT",
                f"{self._doc_path(token_id)}/{quote(name, safe='')}",
                params={"rev": rev},
                data=data,
                headers={"Content-Type": content_type},
            )
            if response.status_code != 409:
                if known is not None:
                    stub = {
                        "content_type": content_type,
                        "digest": _digest(data),  # pouchdb-server finds a stub by it
                        "length": len(data),
                        "stub": True,
                    }
                    attachments = {**known.attachments, name: stub}
                    self._remember(
                        known.model_copy(
                            update={"rev": str(response.json()["rev"]), "attachments": attachments}
                        )
                    )
                return
            known = None  # changed meanwhile: read it
            time.sleep(0.05 * random.random())
        raise PoolError(f"token {token_id} keeps changing; attachment {name} not stored")

    def attachment(self, token_id: str, name: str) -> bytes:
        response = self._request(
            "GET", f"{self._doc_path(token_id)}/{quote(name, safe='')}", ok=(200, 404)
        )
        if response.status_code == 404:
            raise TokenNotFound(f"token {token_id!r} has no attachment {name!r}")
        return response.content

    def attachment_names(self, token_id: str) -> list[str]:
        return sorted(self._get_doc(token_id).get("_attachments", {}))

    # --- side records: documents "gridlrt:<kind>:<id>" of type "gridlrt_<kind>" --------------

    @staticmethod
    def _record_id(kind: str, record_id: str) -> str:
        return f"gridlrt:{kind}:{record_id}"

    def _record_doc(
        self, kind: str, record_id: str, body: dict[str, Any], keys: Sequence[str]
    ) -> dict[str, Any]:
        doc = {**body, "_id": self._record_id(kind, record_id), "type": f"gridlrt_{kind}"}
        if keys:
            doc[design.RECORD_KEYS] = list(keys)
        return doc

    def put_record(
        self, kind: str, record_id: str, body: dict[str, Any], keys: Sequence[str] = ()
    ) -> None:
        doc_id = self._record_id(kind, record_id)
        path = self._doc_path(doc_id)
        for _ in range(50):
            current = self._request("GET", path, ok=(200, 404))
            doc = self._record_doc(kind, record_id, body, keys)
            if current.status_code == 200:
                doc["_rev"] = current.json()["_rev"]
            if self._request("PUT", path, json=doc).status_code != 409:
                return
            time.sleep(0.05 * random.random())
        raise PoolError(f"{kind} record {record_id} keeps changing; not stored")

    def put_records(
        self, kind: str, bodies: dict[str, dict[str, Any]], keys: dict[str, list[str]] | None = None
    ) -> None:
        """In bulk, 1000 at a time: the current revisions, then the documents over them (a
        record that changed meanwhile is written again)."""
        todo = dict(bodies)
        for _ in range(50):
            if not todo:
                return
            conflicted: dict[str, dict[str, Any]] = {}
            ids = list(todo)
            for i in range(0, len(ids), 1000):
                chunk = ids[i : i + 1000]
                doc_ids = [self._record_id(kind, r) for r in chunk]
                rows = self._request("POST", "_all_docs", json={"keys": doc_ids}).json()["rows"]
                revs = {
                    row["key"]: row["value"]["rev"]
                    for row in rows
                    if "value" in row and not row["value"].get("deleted")
                }
                docs = []
                for record_id, doc_id in zip(chunk, doc_ids, strict=True):
                    doc = self._record_doc(
                        kind, record_id, todo[record_id], (keys or {}).get(record_id, ())
                    )
                    if doc_id in revs:
                        doc["_rev"] = revs[doc_id]
                    docs.append(doc)
                answer = self._request("POST", "_bulk_docs", json={"docs": docs}).json()
                by_doc = dict(zip(doc_ids, chunk, strict=True))
                for row in answer:
                    if row.get("error") == "conflict":
                        record_id = by_doc[row["id"]]
                        conflicted[record_id] = todo[record_id]
                    elif "error" in row:
                        raise PoolError(
                            f"cannot store {kind} record {by_doc.get(row['id'], row['id'])}: "
                            f"{row.get('reason', row['error'])}"
                        )
            todo = conflicted
            time.sleep(0.05 * random.random() if todo else 0)
        raise PoolError(f"{len(todo)} {kind} record(s) keep changing; not stored")

    def get_record(self, kind: str, record_id: str) -> dict[str, Any]:
        response = self._request(
            "GET", self._doc_path(self._record_id(kind, record_id)), ok=(200, 404)
        )
        if response.status_code == 404:
            raise RecordNotFound(f"no {kind} record {record_id!r} in {self.url}")
        return _strip_record(response.json())

    def records(self, kind: str, key: str | None = None) -> list[dict[str, Any]]:
        if key is not None:
            try:
                return self._records_by_key(kind, key)
            except PoolNotInitialised:  # a pool from before the records view: read them all
                log.info("%s has no records view (run `gridlrt pool init`): reading all", self.url)
                return [
                    r for r in self._all_records(kind, keep_keys=True)
                    if key in (r.pop(design.RECORD_KEYS, None) or [])
                ]  # fmt: skip
        return self._all_records(kind)

    def _all_records(self, kind: str, *, keep_keys: bool = False) -> list[dict[str, Any]]:
        prefix = self._record_id(kind, "")
        params = {
            "include_docs": "true",
            "startkey": json.dumps(prefix),
            "endkey": json.dumps(prefix + "\ufff0"),
        }
        rows = self._request("GET", "_all_docs", params=params).json()["rows"]
        return [_strip_record(row["doc"], keep_keys) for row in rows if row.get("doc")]

    def _records_by_key(self, kind: str, key: str) -> list[dict[str, Any]]:
        """The records of ``key``: their ids from the records view (20,000 at a time), then
        the documents in bulk, 1000 at a time (cheaper than the view's include_docs, which
        pouchdb-server reads one by one)."""
        ids: list[str] = []
        view_key = json.dumps([f"gridlrt_{kind}", key])
        params: dict[str, Any] = {"startkey": view_key, "endkey": view_key, "limit": 20000}
        while True:
            rows = self._request("GET", f"{VIEW}/gridlrt_records", params=params).json()["rows"]
            ids.extend(row["id"] for row in rows)
            if len(rows) < 20000:
                break
            params.update(startkey_docid=rows[-1]["id"], skip=1)
        found: list[dict[str, Any]] = []
        for i in range(0, len(ids), 1000):
            rows = self._request(
                "POST",
                "_all_docs",
                params={"include_docs": "true"},
                json={"keys": ids[i : i + 1000]},
            ).json()["rows"]
            found.extend(_strip_record(row["doc"]) for row in rows if row.get("doc"))
        return found

    def delete_record(self, kind: str, record_id: str) -> bool:
        path = self._doc_path(self._record_id(kind, record_id))
        for _ in range(50):
            current = self._request("GET", path, ok=(200, 404))
            if current.status_code == 404:
                return False
            rev = current.json()["_rev"]
            if self._request("DELETE", path, params={"rev": rev}).status_code != 409:
                return True
        raise PoolError(f"{kind} record {record_id} keeps changing; not deleted")


def _strip_record(doc: dict[str, Any], keep_keys: bool = False) -> dict[str, Any]:
    """A record's body: the document without CouchDB's and gridlrt's bookkeeping fields."""
    drop = ("_id", "_rev", "type") if keep_keys else ("_id", "_rev", "type", design.RECORD_KEYS)
    return {k: v for k, v in doc.items() if k not in drop}
