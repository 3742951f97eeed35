"""Settings: the one place where gridlrt learns where the pool, the storage and the secrets are.

Sources, lowest to highest priority: built-in defaults, a TOML file (``$GRIDLRT_CONFIG`` or
``~/.config/gridlrt/config.toml``), ``GRIDLRT_*`` environment variables, and explicit
overrides from command options (e.g. ``--pool``). Nothing is read at import time: call
:func:`load_settings`.

Secrets never live in the settings themselves; the settings only say *where* the credential
files are. A password inside a pool URL is accepted for convenience but redacted everywhere
(:func:`redact_url`) and reported by ``gridlrt doctor``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gridlrt.errors import ConfigError

ENV_PREFIX = "GRIDLRT_"


def data_dir() -> Path:
    """gridlrt's per-user data directory (XDG): ``$XDG_DATA_HOME/gridlrt`` or ~/.local/share."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gridlrt"


def config_dir() -> Path:
    """gridlrt's per-user config directory (XDG): ``$XDG_CONFIG_HOME/gridlrt`` or ~/.config."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gridlrt"


def default_config_file() -> Path:
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(env).expanduser() if env else config_dir() / "config.toml"


def _replica_list(value: str) -> list[str]:
    """The URLs in a ``pool_replicas`` value (comma- or space-separated)."""
    return [part for part in value.replace(",", " ").split() if part]


def _default_pool() -> str:
    return f"sqlite:///{data_dir() / 'pool.sqlite'}"


def _default_storage_root() -> str:
    return (data_dir() / "storage").as_uri()


def _default_sandbox_root() -> str:
    return (data_dir() / "sandboxes").as_uri()


POOL_SCHEMES = ("sqlite", "http", "https")

#: A CouchDB database name: a lowercase letter, then lowercase letters, digits and _$()+-/.
COUCHDB_NAME = re.compile(r"[a-z][a-z0-9_$()+/-]*")


def check_couchdb_url(url: str) -> None:
    """:class:`ValueError` saying how to fix ``url`` (given without credentials) when it
    cannot be a CouchDB database: a port that is not a number, no host, ``.``/``..`` or
    empty path segments (``/a/../../b`` would reach database ``b``), or a last segment that
    CouchDB does not accept as a database name."""
    example = "e.g. http://127.0.0.1:5984/lofar_tokens"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(
            f"CouchDB pool URL {url!r}: the port must be a number, {example}"
        ) from None
    if not parts.hostname:
        raise ValueError(f"CouchDB pool URL {url!r} has no host name, {example}")
    segments = [unquote(s) for s in parts.path.strip("/").split("/")]
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError(
            f"CouchDB pool URL {url!r}: '.', '..' and empty parts are not allowed in the path; "
            f"name the database itself, {example}"
        )
    if not COUCHDB_NAME.fullmatch(segments[-1]):
        raise ValueError(
            f"CouchDB pool URL {url!r}: {segments[-1]!r} is not a valid CouchDB database name "
            "(a lowercase letter, then lowercase letters, digits and _$()+-)"
        )


class Settings(BaseSettings):
    """Where things are. Every field can be set in the config file or as ``GRIDLRT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    pool: str = Field(
        default_factory=_default_pool,
        description="Token pool URL: sqlite:///path (embedded) or http(s)://host:port/db (CouchDB)",
    )
    pool_replicas: str = Field(
        default="",
        description="Other copies of a CouchDB pool that replicate with it both ways (URLs, "
        "comma-separated; same credentials): claims are then confirmed on every copy before "
        "a result is published. Not needed for one CouchDB cluster URL",
    )
    pool_credentials: Path = Field(
        default_factory=lambda: config_dir() / "couchdb.cred",
        description="0600 file with username=... and password=... for a CouchDB pool",
    )
    storage_root: str = Field(
        default_factory=_default_storage_root,
        description="Base URL where step outputs are uploaded (file://, dav(s)://, srm://, ...)",
    )
    sandbox_root: str = Field(
        default_factory=_default_sandbox_root,
        description="Base URL where sandbox tarballs are pushed",
    )
    lta_credentials: Path = Field(
        default_factory=lambda: Path.home() / ".stagingrc",
        description="LTA stager credentials (api_token= for StageIT; user=/password= for v1)",
    )
    lta_protocol: str | None = Field(
        default=None,
        description="LTA stager protocol: stageit (the default, current service) or v1 "
        "(the legacy XML-RPC service, only when chosen)",
    )
    awe_config: Path = Field(
        default_factory=lambda: Path.home() / ".awe" / "Environment.cfg",
        description="Older LTA credentials file (database_user : ..., database_password : ...)",
    )
    x509_proxy: Path = Field(
        default_factory=lambda: Path(
            os.environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"
        ),
        description="Grid proxy certificate (voms-proxy-init) used by gfal2 for srm/gsiftp/davs",
    )

    max_pilots: int = Field(
        default=100,
        ge=1,
        description="gridlrt submit -n auto: at most this many pilots per submission",
    )
    runs_dir: Path = Field(
        default_factory=lambda: data_dir() / "runs",
        description="Where gridlrt submit keeps each submission's scripts, JDL and pilot logs",
    )

    @field_validator("pool")
    @classmethod
    def _check_pool(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in POOL_SCHEMES:
            raise ValueError(
                f"pool URL {redact_url(value)!r} must start with sqlite:///, http:// or https://"
            )
        if scheme == "sqlite" and not value.startswith("sqlite:///"):
            raise ValueError(
                "embedded pool URL must be sqlite:///PATH (three slashes; "
                "sqlite:////abs/path.sqlite for an absolute path)"
            )
        if scheme in ("http", "https") and not urlsplit(strip_credentials(value)).path.strip("/"):
            raise ValueError(
                f"CouchDB pool URL {redact_url(value)!r} needs a database name, e.g. "
                "http://127.0.0.1:5984/lofar_tokens"
            )
        if scheme in ("http", "https"):
            check_couchdb_url(strip_credentials(value))
        return value

    @field_validator("pool_replicas")
    @classmethod
    def _check_replicas(cls, value: str) -> str:
        for url in _replica_list(value):
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(
                    f"pool replica {redact_url(url)!r} must be a CouchDB database URL "
                    "(http:// or https://), e.g. https://couch2.example.org:6984/lofar_tokens"
                )
            check_couchdb_url(strip_credentials(url))
        return value

    @property
    def pool_replica_urls(self) -> list[str]:
        """The other copies of the pool (see ``pool_replicas``), each without credentials."""
        return [strip_credentials(url) for url in _replica_list(self.pool_replicas)]

    @property
    def pool_kind(self) -> str:
        """``embedded`` or ``couchdb``."""
        return "embedded" if self.pool.startswith("sqlite:") else "couchdb"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file of an embedded pool (``sqlite:///rel`` or ``sqlite:////abs``)."""
        if self.pool_kind != "embedded":
            raise ConfigError(f"pool {redact_url(self.pool)} is not an embedded (sqlite) pool")
        return Path(self.pool.removeprefix("sqlite:///")).expanduser().absolute()


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix or remove the file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    # Accept either top-level keys or a [gridlrt] table.
    table = data.get("gridlrt", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [gridlrt] must be a table of settings")
    return dict(table)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: defaults < config file < ``GRIDLRT_*`` env < non-None overrides."""
    path = config_file or default_config_file()
    file_values = _read_config_file(path)
    env_names = {
        name for name in Settings.model_fields if f"{ENV_PREFIX}{name.upper()}" in os.environ
    }
    # Environment beats the file: drop file values that the environment sets.
    values = {k: v for k, v in file_values.items() if k not in env_names}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            known = ", ".join(Settings.model_fields)
            msg = f"unknown setting (known: {known})"
        if where in overrides:
            origin = f"--{where.replace('_', '-')}"
        elif f"{ENV_PREFIX}{where.upper()}" in os.environ:
            origin = f"{ENV_PREFIX}{where.upper()}"
        else:
            origin = f"{path}: {where}"
        raise ConfigError(f"{origin}: {msg}") from exc


class UrlCredentials(NamedTuple):
    """A URL split into the URL without its userinfo and the (percent-decoded) user and
    password that were in it (None when absent)."""

    url: str
    username: str | None
    password: str | None


# A host after the '@' of a userinfo: a name or IPv4 address, or [IPv6], and an optional port.
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::[0-9]*)?")
_DELIMITERS = re.compile(r"[/?#]")


def _userinfo_span(url: str) -> tuple[int, int] | None:
    """Where the userinfo of ``url`` is: ``url[start:end]`` is ``user[:password]`` and
    ``url[end]`` is its ``@``; None when the URL has none.

    A well-formed URL has its userinfo inside the authority (before the first ``/``, ``?``
    or ``#``). People also paste passwords with a raw ``#``, ``?``, ``/`` or ``@``
    (``http://ann:p#ss?w@host:5984/db``), which :func:`urllib.parse.urlsplit` reads as a
    fragment or a query, leaving the password outside the userinfo. Then the userinfo ends
    at the rightmost ``@`` that is followed by a host (``name[:port]``) and preceded by
    ``user:`` where the user has no ``/``, ``?`` or ``#``: a password is hidden rather than
    shown when in doubt.
    """
    marker = url.find("://")
    if marker <= 0:
        return None
    start = marker + 3
    rest = url[start:]
    first = _DELIMITERS.search(rest)
    authority = rest[: first.start()] if first else rest
    if "@" in authority:
        return start, start + authority.rindex("@")
    for at in reversed([i for i, c in enumerate(rest) if c == "@"]):
        user, colon, _password = rest[:at].partition(":")
        host = _DELIMITERS.split(rest[at + 1 :], maxsplit=1)[0]
        if colon and not _DELIMITERS.search(user) and _HOST_PORT.fullmatch(host):
            return start, start + at
    return None


def url_credentials(url: str) -> UrlCredentials:
    """``url`` without its ``user:password@`` part, and the user and password that were in
    it (percent-decoded). Raw ``#``, ``?``, ``/`` and ``@`` in a password are understood
    (see :func:`_userinfo_span`); the rest of the URL is left as it is."""
    span = _userinfo_span(url)
    if span is None:
        return UrlCredentials(url, None, None)
    start, end = span
    user, colon, password = url[start:end].partition(":")
    return UrlCredentials(
        url[:start] + url[end + 1 :], unquote(user) or None, unquote(password) if colon else None
    )


def redact_url(url: str) -> str:
    """Hide any password in ``url`` (``https://user:***@host/db``), also one with a raw
    ``#``, ``?``, ``/`` or ``@``; other URLs pass unchanged."""
    span = _userinfo_span(url)
    if span is None:
        return url
    start, end = span
    user, colon, _password = url[start:end].partition(":")
    if not colon:
        return url  # a user name alone is not a secret
    return f"{url[:start]}{user}:***@{url[end + 1 :]}"


def strip_credentials(url: str) -> str:
    """``url`` without any ``user:password@`` part (and without a fragment)."""
    return url_credentials(url).url.partition("#")[0]


# --- secrets in the environment ------------------------------------------------------------

#: gridlrt variables that hold a secret, or name a file of secrets: a process gridlrt starts
#: (a pilot, a payload, a batch client) never inherits them. A pilot is given its pool
#: credentials file explicitly (``GRIDLRT_POOL_CREDENTIALS`` -> the run's 0600 ``pool.cred``),
#: and its macaroons so (``GRIDLRT_MACAROON_FILE`` -> the run's 0600 ``macaroon.cred``).
SECRET_VARIABLES = frozenset(
    {
        f"{ENV_PREFIX}POOL_USERNAME",
        f"{ENV_PREFIX}POOL_PASSWORD",
        f"{ENV_PREFIX}POOL_CREDENTIALS",
        f"{ENV_PREFIX}MACAROON_FILE",
        f"{ENV_PREFIX}LTA_CREDENTIALS",
        f"{ENV_PREFIX}AWE_CONFIG",
    }
)
#: ... and every ``GRIDLRT_LTA_*`` variable (``_USER``, ``_PASSWORD``, ``_TOKEN``), and every
#: ``GRIDLRT_*`` variable whose name ends like a secret's.
SECRET_VARIABLE_PREFIXES = (f"{ENV_PREFIX}LTA_",)
SECRET_VARIABLE_SUFFIXES = ("_PASSWORD", "_PASSWD", "_SECRET", "_API_TOKEN", "_API_KEY")


def is_secret_variable(name: str) -> bool:
    """True for a gridlrt environment variable that holds (or points to) a secret, by name
    (:data:`SECRET_VARIABLES`, ``GRIDLRT_LTA_*``, ``GRIDLRT_*_PASSWORD`` and the like).
    A ``GRIDLRT_*`` URL with a ``user:password@`` is a secret by its value: see
    :func:`scrub_environment`."""
    upper = name.upper()
    if not upper.startswith(ENV_PREFIX):
        return False
    return (
        upper in SECRET_VARIABLES
        or upper.startswith(SECRET_VARIABLE_PREFIXES)
        or upper.endswith(SECRET_VARIABLE_SUFFIXES)
    )


def scrub_environment(
    env: Mapping[str, str], *, urls: Literal["strip", "drop"] = "strip"
) -> dict[str, str]:
    """``env`` without gridlrt's secrets: the :func:`is_secret_variable` variables are left
    out, and a ``GRIDLRT_*`` value holding a URL with a userinfo (``GRIDLRT_POOL=
    http://user:pw@host/db``) loses it (``urls="strip"``) or is left out (``urls="drop"``)."""
    if urls not in ("strip", "drop"):
        raise ValueError(f"urls must be 'strip' or 'drop', not {urls!r}")
    clean: dict[str, str] = {}
    for name, value in env.items():
        if is_secret_variable(name):
            continue
        if name.upper().startswith(ENV_PREFIX) and _userinfo_span(value) is not None:
            if urls == "drop":
                continue
            value = url_credentials(value).url
        clean[name] = value
    return clean
