"""Reading secrets safely: key=value files that must be private (0600), and the environment.

Secrets are read only when a caller needs them (never at import time), are never logged, and
never go into argv, JDL or token documents. Files may use ``key=value`` (``~/.stagingrc``,
gridlrt's own) or ``key : value`` (``~/.awe/Environment.cfg``) lines; a line starting with
``#`` is a comment (a ``#`` elsewhere is part of the value: passwords may contain it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gridlrt.config import ENV_PREFIX, Settings, url_credentials
from gridlrt.errors import CredentialsError


def ensure_private(path: Path) -> None:
    """Refuse a secrets file that group or others can read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CredentialsError(
            f"{path} is accessible by others (mode {mode:04o}); run: chmod 600 {path}"
        )


def read_key_value_file(path: Path, *, private: bool = True) -> dict[str, str]:
    """Parse ``key=value`` / ``key : value`` lines. Values are returned, never shown."""
    try:
        if private:
            ensure_private(path)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CredentialsError(f"{path} does not exist") from exc
    except PermissionError as exc:
        raise CredentialsError(f"{path} is not readable by you") from exc
    except UnicodeDecodeError:  # the message would quote the bytes: part of a secret
        raise CredentialsError(
            f"{path} is not UTF-8 text; write it again as UTF-8 key=value lines (value not shown)"
        ) from None
    except OSError as exc:
        raise CredentialsError(f"{path} cannot be read ({exc.strerror})") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):  # only whole-line comments: '#' may be in a secret
            continue
        eq, colon = line.find("="), line.find(":")
        cut = min(i for i in (eq, colon) if i >= 0) if max(eq, colon) >= 0 else -1
        if cut <= 0:
            raise CredentialsError(f"{path}:{number}: expected key=value (value not shown)")
        values[line[:cut].strip()] = line[cut + 1 :].strip()
    return values


def couchdb_auth(settings: Settings) -> tuple[str, str] | None:
    """CouchDB credentials: ``GRIDLRT_POOL_USERNAME``/``_PASSWORD``, else the 0600
    ``pool_credentials`` file, else user:password in the pool URL, else none (admin party).

    A file named by ``GRIDLRT_POOL_CREDENTIALS`` must exist: a typo there is an error, not
    a silent fall-back to no credentials."""
    user = os.environ.get(f"{ENV_PREFIX}POOL_USERNAME")
    password = os.environ.get(f"{ENV_PREFIX}POOL_PASSWORD")
    if user and password:
        return user, password
    env = f"{ENV_PREFIX}POOL_CREDENTIALS"
    named = os.environ.get(env)
    # a typo there must not mean "no credentials"
    if named and Path(named) == settings.pool_credentials and not Path(named).exists():
        raise CredentialsError(
            f"{named} (from {env}) does not exist; create it with username=... and "
            f"password=... lines (chmod 600), or unset {env}"
        )
    if settings.pool_credentials.exists():
        values = read_key_value_file(settings.pool_credentials)
        if not values.get("username") or not values.get("password"):
            raise CredentialsError(
                f"{settings.pool_credentials} needs username=... and password=... lines"
            )
        return values["username"], values["password"]
    found = url_credentials(settings.pool)  # also a password with a raw '#', '?' or '/'
    if found.username and found.password:
        return found.username, found.password
    return None
