"""Tokens: the PiCaS-compatible token model, the pool contract and its two backends
(CouchDB over HTTP, embedded SQLite).

Knows nothing of how a step runs or where data lives. Start with :func:`open_pool`.
"""

from __future__ import annotations

from gridlrt.config import Settings
from gridlrt.tokens.model import PilotInfo, Token, TokenStatus, new_token
from gridlrt.tokens.pool import Overview, TokenPool

__all__ = ["Overview", "PilotInfo", "Token", "TokenPool", "TokenStatus", "new_token", "open_pool"]


def open_pool(settings: Settings) -> TokenPool:
    """The pool the settings name: embedded SQLite or CouchDB (credentials read on demand)."""
    if settings.pool_kind == "embedded":
        from gridlrt.tokens.sqlite import SQLitePool

        return SQLitePool(settings.sqlite_path)
    from gridlrt.credentials import couchdb_auth
    from gridlrt.tokens.couchdb import CouchDBPool

    return CouchDBPool(settings.pool, couchdb_auth(settings))
