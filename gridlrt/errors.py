"""The one exception hierarchy of gridlrt.

Every error a user can cause or fix is a :class:`GridlrtError` whose message is one line that
says what is wrong and how to fix it. The CLI prints that line and exits non-zero, without a
traceback. Anything else escaping is a bug in gridlrt.
"""

from __future__ import annotations


class GridlrtError(Exception):
    """Base of all errors a user can act on. ``str(err)`` is the one-line message."""

    exit_code: int = 1


class ConfigError(GridlrtError):
    """The settings (file, environment, options) are invalid."""


class CredentialsError(GridlrtError):
    """A credentials file is missing, unreadable, malformed or unsafe."""


class PoolError(GridlrtError):
    """The token pool cannot be reached or answered unexpectedly."""


class PoolUnavailable(PoolError):
    """The pool did not answer after bounded retries."""


class TokenNotFound(PoolError):
    """No token with that id."""


class LostClaim(PoolError):
    """The token is no longer held by this pilot (recovered, reset, or finished elsewhere)."""


class MalformedToken(PoolError):
    """A document in the pool is not a valid token."""


class StorageError(GridlrtError):
    """A storage operation (gfal2) failed."""


class InputError(GridlrtError):
    """A user-supplied file or value is malformed."""
