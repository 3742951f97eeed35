"""Tokens: the PiCaS-compatible token model, the pool contract and its two backends
(CouchDB over HTTP, embedded SQLite).

Knows nothing of how a step runs or where data lives. Start with :func:`open_pool`.
"""

from __future__ import annotations

from gridlrt.config import Settings
from gridlrt.tokens.model import PilotInfo, Token, TokenStatus, new_token
from gridlrt.tokens.pool import Overview, TokenPool

__all__ = ["Overview", "PilotInfo", "Token", "TokenPool", "TokenStatus", "new_token", "open_pool"]


def open_pool(settings: Settings, *, patience: float = 0.0) -> TokenPool:
    """The pool the settings name: embedded SQLite or CouchDB (credentials read on demand).

    ``patience``: seconds a request keeps retrying through an outage (CouchDB down, the SQLite
    file locked by another writer) before it fails; pilots ride out long outages, commands
    give up after a few seconds."""
    if settings.pool_kind == "embedded":
        from gridlrt.tokens.sqlite import SQLitePool

        return SQLitePool(settings.sqlite_path, busy_timeout=max(60.0, patience))
    from gridlrt.credentials import couchdb_auth
    from gridlrt.tokens.couchdb import CouchDBPool

    return CouchDBPool(
        settings.pool,
        couchdb_auth(settings),
        patience=patience,
        replicas=settings.pool_replica_urls,
    )
