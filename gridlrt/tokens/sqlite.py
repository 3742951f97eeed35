"""The embedded pool: one SQLite file (WAL), no server, safe for many processes on one machine.

Each token is one row holding its full JSON document plus the few columns queries need
(status, step, priority, created, heartbeat). A claim is one ``UPDATE ... RETURNING`` inside a
``BEGIN IMMEDIATE`` transaction, so two processes can never take the same token; every other
change is a read-modify-write in such a transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from gridlrt.errors import (
    MalformedToken,
    PoolNotInitialised,
    PoolUnavailable,
    RecordNotFound,
    TokenNotFound,
)
from gridlrt.tokens import design, transitions
from gridlrt.tokens.model import ACTIVE, PilotInfo, Token, TokenStatus
from gridlrt.tokens.pool import CreateResult, Overview, TokenPool, parse_token

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_ACTIVE = tuple(s.value for s in ACTIVE)
_STATUSES = tuple(s.value for s in TokenStatus)


# Rows the overview cannot count by their columns: a status no token has (a claim parks a
# malformed document as "malformed"), a step that is not a name, or a document that is not a
# JSON object of the token's shape (the check the CouchDB views make, see design.py). Such rows
# are parsed one by one: counted if they are valid tokens after all, else reported.
def _suspect_columns(row: str = "") -> str:
    return (
        f"{row}status NOT IN ({', '.join(repr(s) for s in _STATUSES)}) "
        f"OR typeof({row}step) != 'text' OR {row}step = ''"
    )


def _suspect_doc(row: str = "") -> str:
    return (
        f"CASE WHEN NOT json_valid({row}doc) THEN 1 WHEN json_type({row}doc) != 'object' THEN 1 "
        f"WHEN json_extract({row}doc, '$._id') IS NOT {row}id THEN 1 "
        f"ELSE {design.sql_misfit_once(row + 'doc')} END"
    )


_SUSPECT = f"{_suspect_columns()} OR {_suspect_doc()}"


# The check runs where the rows are written, so reading the overview costs milliseconds however
# big the pool: triggers keep the ids of suspect rows in ``suspects``. Every write is judged by
# its columns; the document only when the write is not this library's. A write of this library
# says so by moving ``mark`` one on (an insert sets it to 1): its document comes from a Token,
# so it fits by construction, and one that leaves the document as it was keeps the verdict the
# document had. Anybody else's write (sqlite3, another tool, an older gridlrt) is checked
# whole. A false alarm costs only a parse at the next overview; a miss cannot happen.
def _update_verdict(was: int) -> str:
    """SQL (in the update trigger): is the written row suspect; ``was``: was it before."""
    return (
        f"({_suspect_columns('NEW.')}) OR CASE WHEN NEW.mark IS NOT OLD.mark + 1 "
        f"THEN ({_suspect_doc('NEW.')}) WHEN NEW.doc IS OLD.doc THEN {was} ELSE 0 END"
    )


# The pipeline and stage of every row, for stage_counts (an index on these expressions). Two
# more indexes found by bench/million_bench.py: the claim of any step (without it every todo
# row was sorted inside the write lock: 76 ms a claim at 900,000 todo) and listing a status
# page by page (without it every page read all rows of that status: O(n^2)).
_PIPELINE = "(CASE WHEN json_valid(doc) THEN json_extract(doc, '$.pipeline') END)"
_STAGE = "(CASE WHEN json_valid(doc) THEN json_extract(doc, '$.stage') END)"
CHECKS = f"""
CREATE TABLE IF NOT EXISTS suspects (id TEXT PRIMARY KEY) WITHOUT ROWID;
DROP TRIGGER IF EXISTS tokens_check_insert;
DROP TRIGGER IF EXISTS tokens_check_update;
DROP TRIGGER IF EXISTS tokens_check_delete;
CREATE TRIGGER tokens_check_insert AFTER INSERT ON tokens BEGIN
  INSERT OR IGNORE INTO suspects (id) SELECT NEW.id WHERE {_suspect_columns("NEW.")}
    OR (NEW.mark IS NOT 1 AND ({_suspect_doc("NEW.")}));
END;
CREATE TRIGGER tokens_check_update AFTER UPDATE ON tokens BEGIN
  DELETE FROM suspects WHERE id = OLD.id AND OLD.id IS NOT NEW.id;
  DELETE FROM suspects WHERE id = NEW.id AND NOT ({_update_verdict(1)});
  INSERT OR IGNORE INTO suspects (id) SELECT NEW.id WHERE {_update_verdict(0)};
END;
CREATE TRIGGER tokens_check_delete AFTER DELETE ON tokens BEGIN
  DELETE FROM suspects WHERE id = OLD.id;
END;
DELETE FROM suspects;
INSERT INTO suspects (id) SELECT id FROM tokens WHERE {_SUSPECT};
CREATE INDEX IF NOT EXISTS tokens_stage ON tokens ({_PIPELINE}, {_STAGE}, status);
CREATE INDEX IF NOT EXISTS tokens_next ON tokens (status, priority DESC, created, id);
CREATE INDEX IF NOT EXISTS tokens_by_status ON tokens (status, id);
"""
#: what meta's ``checks`` holds once CHECKS is installed (a new check installs itself again)
CHECKS_VERSION = hashlib.sha256(CHECKS.encode()).hexdigest()[:16]


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, triggers whole (``executescript`` would commit the
    transaction they must run in)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:80]}")


# Tokens whose children are yet to be told (``settled`` false); a row that holds no valid
# JSON (reported as malformed elsewhere) must not make the expression, or a write, fail.
UNSETTLED = "(CASE WHEN json_valid(doc) THEN json_extract(doc, '$.settled') END) = 0"

# Side records (job records, ...); also created on first use in pools made before they existed.
RECORDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS record_keys (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    id   TEXT NOT NULL,
    PRIMARY KEY (kind, key, id)
);
CREATE INDEX IF NOT EXISTS record_keys_of ON record_keys (kind, id);
"""
SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS tokens (
    id        TEXT PRIMARY KEY,
    status    TEXT NOT NULL,
    step      TEXT NOT NULL,
    priority  INTEGER NOT NULL DEFAULT 0,
    created   REAL NOT NULL DEFAULT 0,
    heartbeat REAL NOT NULL DEFAULT 0,
    doc       TEXT NOT NULL,
    mark      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tokens_claim ON tokens (status, step, priority DESC, created, id);
CREATE INDEX IF NOT EXISTS tokens_heartbeat ON tokens (status, heartbeat);
DROP INDEX IF EXISTS tokens_unsettled;
DROP INDEX IF EXISTS tokens_to_settle;
CREATE INDEX IF NOT EXISTS tokens_settle ON tokens (id) WHERE {UNSETTLED};
CREATE TABLE IF NOT EXISTS attachments (
    token_id     TEXT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (token_id, name)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
    + RECORDS_SCHEMA
)


def _columns(token: Token) -> tuple[str, str, int, float, float, str]:
    doc = token.to_doc()
    doc.pop("_rev", None)
    doc.pop("_attachments", None)
    return (
        token.status.value,
        token.step,
        token.priority,
        token.created,
        max(token.heartbeat, float(token.lock)),
        json.dumps(doc, sort_keys=True),
    )


class SQLitePool(TokenPool):
    """Token pool in a SQLite file."""

    def __init__(self, path: Path, *, busy_timeout: float = 60.0) -> None:
        super().__init__()
        self.path = path
        self.url = f"sqlite:///{path}"
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._checks: bool | None = None  # triggers keep ``suspects`` (None: not looked yet)

    # --- connection ----------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self.path.exists():
                raise PoolNotInitialised(
                    f"embedded pool {self.path} does not exist; create it with `gridlrt pool init`"
                )
            conn = self._connect()
            self._install_checks(conn)  # a pool made by an older gridlrt gets them here
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise PoolUnavailable(f"cannot open embedded pool {self.path}: {exc}") from exc
        self._local.conn = conn
        return conn

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _write(self) -> _Transaction:
        return _Transaction(self._db)

    # --- primitives ----------------------------------------------------------------------

    def init(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PoolUnavailable(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        conn = self._connect()
        conn.executescript(SCHEMA)
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        self._checks = None
        self._install_checks(conn)

    def _install_checks(self, db: sqlite3.Connection) -> bool:
        """Install (or bring up to date) the triggers that keep ``suspects``, once per pool
        object; False where the file cannot be written (the overview then checks every row)."""
        if self._checks is not None:
            return self._checks
        try:
            if not self._checks_current(db):
                started = time.monotonic()
                db.execute("BEGIN IMMEDIATE")
                try:
                    # looked again under the lock: many pilots opening an old pool at once
                    # install them once, the others find them installed
                    if not self._checks_current(db):
                        columns = {r[1] for r in db.execute("PRAGMA table_info(tokens)")}
                        if "mark" not in columns:
                            db.execute(
                                "ALTER TABLE tokens ADD COLUMN mark INTEGER NOT NULL DEFAULT 0"
                            )
                        for statement in _statements(CHECKS):
                            db.execute(statement)
                        db.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES ('checks', ?)",
                            (CHECKS_VERSION,),
                        )
                        log.info(
                            "installed the malformed-document checks in %s (%.1f s)",
                            self.path,
                            time.monotonic() - started,
                        )
                    db.execute("COMMIT")
                except sqlite3.Error:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            self._checks = True
        except sqlite3.Error as exc:
            log.info(
                "cannot install the checks in %s (%s): overviews read every row", self.path, exc
            )
            self._checks = False
        return self._checks

    @staticmethod
    def _checks_current(db: sqlite3.Connection) -> bool:
        row = db.execute("SELECT value FROM meta WHERE key = 'checks'").fetchone()
        return row is not None and row[0] == CHECKS_VERSION

    def _insert(self, docs: Sequence[dict[str, Any]]) -> CreateResult:
        result = CreateResult()
        rows = []
        for doc in docs:
            token = Token.from_doc(doc)
            rows.append((token.id, *_columns(token)))
        with self._write() as db:
            for row in rows:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO tokens (id, status, step, priority, created, heartbeat,"
                    " doc, mark) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    row,
                )
                (result.created if cursor.rowcount else result.duplicates).append(row[0])
        return result

    def _get_doc(self, token_id: str) -> dict[str, Any]:
        row = self._db.execute("SELECT doc FROM tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            raise TokenNotFound(f"no token {token_id!r} in {self.url}")
        doc = self._load(token_id, row[0])
        if doc is None:
            raise MalformedToken(
                f"document {token_id} is not a valid token: {self.malformed.reasons[token_id]}"
            )
        return self._with_attachments(token_id, doc)

    def _load(self, row_id: str, text: Any) -> dict[str, Any] | None:
        """The JSON object a row holds, or None (reported) when it holds none of this row."""
        try:
            doc = json.loads(text)
        except (TypeError, ValueError) as exc:
            self.malformed.note(row_id, f"not JSON ({exc})")
            return None
        if not isinstance(doc, dict):
            self.malformed.note(row_id, "not a JSON object")
            return None
        if doc.get("_id") != row_id:
            self.malformed.note(row_id, f"_id: {doc.get('_id')!r} in the row of {row_id!r}")
            return None
        return doc

    def _parse(self, row_id: str, text: Any) -> Token | None:
        doc = self._load(row_id, text)
        return None if doc is None else parse_token(doc, self.malformed, row_id)

    def _with_attachments(self, token_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        names = self.attachment_names(token_id)
        if names:
            doc["_attachments"] = {name: {"stub": True} for name in names}
        return doc

    def _update(self, token_id: str, change: Callable[[Token], Token]) -> Token:
        with self._write() as db:
            row = db.execute("SELECT doc FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                raise TokenNotFound(f"no token {token_id!r} in {self.url}")
            token = self._parse(token_id, row[0])
            if token is None:
                raise MalformedToken(
                    f"document {token_id} is not a valid token: {self.malformed.reasons[token_id]}"
                )
            new = change(token)
            db.execute(
                "UPDATE tokens SET status=?, step=?, priority=?, created=?, heartbeat=?, "
                "doc=?, mark = mark + 1 WHERE id=?",
                (*_columns(new), token_id),
            )
        return new

    def _claim(self, who: PilotInfo, step: str | None = None) -> Token | None:
        now = time.time()
        step_clause = "AND step = ?" if step is not None else ""
        args: tuple[Any, ...] = (step,) if step is not None else ()
        with self._write() as db:
            while True:
                row = db.execute(
                    "UPDATE tokens SET status = 'locked', heartbeat = ?, mark = mark + 1 "
                    "WHERE id = ("
                    f" SELECT id FROM tokens WHERE status = 'todo' {step_clause}"
                    " ORDER BY priority DESC, created, id LIMIT 1) RETURNING id, doc",
                    (now, *args),
                ).fetchone()
                if row is None:
                    return None
                token = self._parse(row[0], row[1])
                if token is None:  # reported; park it where claims do not look
                    db.execute(
                        "UPDATE tokens SET status = 'malformed', mark = mark + 1 WHERE id = ?",
                        (row[0],),
                    )
                    continue
                new = transitions.claim(token, who, now)
                db.execute(
                    "UPDATE tokens SET status=?, step=?, priority=?, created=?, heartbeat=?, "
                    "doc=?, mark = mark + 1 WHERE id=?",
                    (*_columns(new), new.id),
                )
                return new

    def _iter_docs(
        self, status: TokenStatus | None = None, step: str | None = None
    ) -> Iterator[dict[str, Any]]:
        clauses, args = [], []
        if status is not None:
            clauses.append("status = ?")
            args.append(status.value)
        if step is not None:
            clauses.append("step = ?")
            args.append(step)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        last = ""
        while True:  # pages by id, so no cursor stays open across a caller's writes
            page = self._db.execute(
                f"SELECT id, doc FROM tokens {where} {'AND' if where else 'WHERE'} id > ? "
                "ORDER BY id LIMIT 1000",
                (*args, last),
            ).fetchall()
            if not page:
                return
            for token_id, text in page:
                doc = self._load(token_id, text)
                if doc is not None:
                    yield doc
            last = page[-1][0]

    def overview(self) -> Overview:
        counts: dict[str, dict[str, int]] = {}
        malformed: dict[str, str] = {}
        db = self._db
        if self._install_checks(db):
            # every row counted by its columns, then the suspect ones taken out and judged;
            # both read in one transaction (one snapshot of the file), or a write in between
            # could take out a row that was not counted
            own = not db.in_transaction  # (inside a caller's write: already one snapshot)
            if own:
                db.execute("BEGIN")
            try:
                totals: dict[tuple[Any, Any], int] = {
                    (step, status): n
                    for status, step, n in db.execute(
                        "SELECT status, step, count(*) FROM tokens GROUP BY status, step"
                    )
                }
                suspects = db.execute(
                    "SELECT t.id, t.step, t.status, t.doc FROM suspects s "
                    "JOIN tokens t ON t.id = s.id"
                ).fetchall()
            finally:
                if own:
                    db.execute("COMMIT")
            for _id, step, status, _doc in suspects:
                totals[(step, status)] -= 1
            for (step, status), n in totals.items():
                if n:
                    counts.setdefault(step, {})[status] = n
            rows = [(token_id, text) for token_id, _s, _st, text in suspects]
        else:
            for step, status, n in db.execute(
                f"SELECT step, status, count(*) FROM tokens WHERE NOT ({_SUSPECT}) "
                "GROUP BY step, status"
            ):
                counts.setdefault(step, {})[status] = n
            rows = db.execute(f"SELECT id, doc FROM tokens WHERE {_SUSPECT}").fetchall()
        for token_id, text in rows:
            token = self._parse(token_id, text)
            if token is None:
                malformed[token_id] = self.malformed.reasons[token_id]
            else:
                step_counts = counts.setdefault(token.step, {})
                step_counts[token.status.value] = step_counts.get(token.status.value, 0) + 1
        return Overview(counts=counts, malformed=malformed)

    def _stale_ids(self, before: float) -> list[str]:
        marks = ",".join("?" * len(_ACTIVE))
        rows = self._db.execute(  # a heartbeat that is no number: stale (and reported)
            f"SELECT id FROM tokens WHERE status IN ({marks}) AND (heartbeat < ? "
            "OR typeof(heartbeat) NOT IN ('integer', 'real')) ORDER BY id",
            (*_ACTIVE, before),
        )
        return [r[0] for r in rows]

    def status_counts(self, step: str | None = None) -> dict[str, int]:
        where, args = ("WHERE step = ?", (step,)) if step is not None else ("", ())
        query = f"SELECT status, count(*) FROM tokens {where} GROUP BY status"
        rows = self._db.execute(query, args)
        return {str(status): int(n) for status, n in rows}

    def _unsettled_ids(self) -> list[str]:
        rows = self._db.execute(f"SELECT id FROM tokens WHERE {UNSETTLED} ORDER BY id")
        return [r[0] for r in rows]

    def stage_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        counts: dict[tuple[str, str], dict[str, int]] = {}
        self._install_checks(self._db)  # (the index on these expressions comes with them)
        rows = self._db.execute(
            f"SELECT {_PIPELINE} AS p, {_STAGE} AS s, status, count(*) FROM tokens "
            "WHERE typeof(p) = 'text' AND typeof(s) = 'text' GROUP BY p, s, status"
        )
        for pipeline, stage, status, n in rows:
            counts.setdefault((pipeline, stage), {})[status] = n
        return counts

    def _get_docs(self, token_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(token_ids)
        ids = list(token_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for token_id, text in self._db.execute(
                f"SELECT id, doc FROM tokens WHERE id IN ({marks})", chunk
            ):
                found[token_id] = self._load(token_id, text)
        return found

    def delete(self, token_ids: Iterable[str]) -> int:
        deleted = 0
        with self._write() as db:
            for token_id in token_ids:
                deleted += db.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount
                db.execute("DELETE FROM attachments WHERE token_id = ?", (token_id,))
        return deleted

    def attach(
        self, token_id: str, name: str, data: bytes, content_type: str = "text/plain"
    ) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM tokens WHERE id = ?", (token_id,)).fetchone() is None:
                raise TokenNotFound(f"no token {token_id!r} in {self.url}")
            db.execute(
                "INSERT OR REPLACE INTO attachments (token_id, name, content_type, data) "
                "VALUES (?, ?, ?, ?)",
                (token_id, name, content_type, data),
            )

    def attachment(self, token_id: str, name: str) -> bytes:
        row = self._db.execute(
            "SELECT data FROM attachments WHERE token_id = ? AND name = ?", (token_id, name)
        ).fetchone()
        if row is None:
            raise TokenNotFound(f"token {token_id!r} has no attachment {name!r}")
        return bytes(row[0])

    def attachment_names(self, token_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT name FROM attachments WHERE token_id = ? ORDER BY name", (token_id,)
        )
        return [r[0] for r in rows]

    # --- side records ------------------------------------------------------------------------

    def _records_table(self) -> None:
        if not getattr(self._local, "records_ready", False):
            self._db.executescript(RECORDS_SCHEMA)
            self._local.records_ready = True

    def put_record(
        self, kind: str, record_id: str, body: dict[str, Any], keys: Sequence[str] = ()
    ) -> None:
        self.put_records(kind, {record_id: body}, {record_id: list(keys)})

    def put_records(
        self, kind: str, bodies: dict[str, dict[str, Any]], keys: dict[str, list[str]] | None = None
    ) -> None:
        self._records_table()
        keys = keys or {}
        with self._write() as db:
            for record_id, body in bodies.items():
                db.execute(
                    "INSERT OR REPLACE INTO records (kind, id, body) VALUES (?, ?, ?)",
                    (kind, record_id, json.dumps(body)),
                )
                db.execute("DELETE FROM record_keys WHERE kind = ? AND id = ?", (kind, record_id))
                db.executemany(
                    "INSERT OR IGNORE INTO record_keys (kind, key, id) VALUES (?, ?, ?)",
                    [(kind, key, record_id) for key in keys.get(record_id, ())],
                )

    def get_record(self, kind: str, record_id: str) -> dict[str, Any]:
        self._records_table()
        row = self._db.execute(
            "SELECT body FROM records WHERE kind = ? AND id = ?", (kind, record_id)
        ).fetchone()
        if row is None:
            raise RecordNotFound(f"no {kind} record {record_id!r} in {self.url}")
        body: dict[str, Any] = json.loads(row[0])
        return body

    def records(self, kind: str, key: str | None = None) -> list[dict[str, Any]]:
        self._records_table()
        if key is None:
            rows = self._db.execute("SELECT body FROM records WHERE kind = ? ORDER BY id", (kind,))
        else:
            rows = self._db.execute(
                "SELECT r.body FROM record_keys AS k JOIN records AS r "
                "ON r.kind = k.kind AND r.id = k.id WHERE k.kind = ? AND k.key = ? ORDER BY k.id",
                (kind, key),
            )
        return [json.loads(r[0]) for r in rows]

    def delete_record(self, kind: str, record_id: str) -> bool:
        self._records_table()
        with self._write() as db:
            cursor = db.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))
            db.execute("DELETE FROM record_keys WHERE kind = ? AND id = ?", (kind, record_id))
        return cursor.rowcount > 0


class _Transaction:
    """``with`` block = one ``BEGIN IMMEDIATE`` write transaction (commit or roll back)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise PoolUnavailable(f"embedded pool is busy or unwritable: {exc}") from exc
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
