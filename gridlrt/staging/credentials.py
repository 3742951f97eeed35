"""LTA stager credentials: where they come from, and which protocol they mean.

Owns the lookup order; the file format and the 0600 rule belong to
:func:`gridlrt.credentials.read_key_value_file`. Nothing is read at import time: call
:func:`load_lta_credentials` when a client is about to talk to the LTA.

Sources, first match wins:

1. the environment: ``GRIDLRT_LTA_TOKEN`` (StageIT), or ``GRIDLRT_LTA_USER`` and
   ``GRIDLRT_LTA_PASSWORD`` (v1);
2. ``~/.stagingrc`` (setting ``lta_credentials``): ``api_token=...`` with an optional
   ``hostname=`` (another StageIT host, e.g. ``sdc-dev.astron.nl``) for StageIT, or
   ``user=...`` and ``password=...`` for v1;
3. ``~/.awe/Environment.cfg`` (setting ``awe_config``): ``database_user : ...`` and
   ``database_password : ...`` for v1.

With protocol ``auto`` a token anywhere means StageIT (the current service), else a user
and password mean v1. Secrets are held as :class:`pydantic.SecretStr` so that a repr or a log
line shows ``**********``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, SecretStr

from gridlrt.config import ENV_PREFIX, Settings
from gridlrt.credentials import read_key_value_file
from gridlrt.errors import CredentialsError, InputError
from gridlrt.staging.stager import PROTOCOLS, Protocol

TOKEN_ENV = f"{ENV_PREFIX}LTA_TOKEN"
USER_ENV = f"{ENV_PREFIX}LTA_USER"
PASSWORD_ENV = f"{ENV_PREFIX}LTA_PASSWORD"
PROTOCOL_ENV = f"{ENV_PREFIX}LTA_PROTOCOL"


class LtaCredentials(BaseModel):
    """Credentials for one protocol, and where they came from (safe to show)."""

    protocol: Protocol
    source: str
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    hostname: str | None = None


def requested_protocol(protocol: str | None) -> Protocol | None:
    """``v1``/``stageit`` -> that protocol; ``auto``/``None`` -> ``$GRIDLRT_LTA_PROTOCOL`` or
    ``None`` (decide from the credentials)."""
    chosen = (protocol or os.environ.get(PROTOCOL_ENV) or "auto").strip().lower()
    if chosen == "auto":
        return None
    for known in PROTOCOLS:
        if chosen == known:
            return known
    raise InputError(f"LTA protocol {chosen!r}: choose v1, stageit or auto")


def _file(path: Path) -> dict[str, str]:
    return read_key_value_file(path) if path.exists() else {}


def load_lta_credentials(settings: Settings, protocol: str | None = None) -> LtaCredentials:
    """The credentials for ``protocol`` (``v1``, ``stageit``, or ``auto``/``None``)."""
    wanted = requested_protocol(protocol)
    rc_path = settings.lta_credentials
    env_token = os.environ.get(TOKEN_ENV)
    env_user, env_password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    rc = _file(rc_path)
    if wanted in (None, "stageit"):
        if env_token:
            return LtaCredentials(
                protocol="stageit",
                source=TOKEN_ENV,
                token=SecretStr(env_token),
                hostname=rc.get("hostname") or None,
            )
        if rc.get("api_token"):
            return LtaCredentials(
                protocol="stageit",
                source=str(rc_path),
                token=SecretStr(rc["api_token"]),
                hostname=rc.get("hostname") or None,
            )
        if wanted == "stageit":
            raise CredentialsError(
                f"no StageIT token: put api_token=... in {rc_path} (chmod 600) or set {TOKEN_ENV}"
            )
    if env_user and env_password:
        return LtaCredentials(
            protocol="v1", source=USER_ENV, user=env_user, password=SecretStr(env_password)
        )
    if rc.get("user") and rc.get("password"):
        return LtaCredentials(
            protocol="v1", source=str(rc_path), user=rc["user"], password=SecretStr(rc["password"])
        )
    awe = _file(settings.awe_config)
    if awe.get("database_user") and awe.get("database_password"):
        return LtaCredentials(
            protocol="v1",
            source=str(settings.awe_config),
            user=awe["database_user"],
            password=SecretStr(awe["database_password"]),
        )
    if wanted == "v1":
        raise CredentialsError(
            f"no LTA user and password: put user=... and password=... in {rc_path} "
            f"(chmod 600), or set {USER_ENV} and {PASSWORD_ENV}"
        )
    raise CredentialsError(
        f"no LTA credentials: put api_token=... (StageIT) or user=... and password=... (v1) "
        f"in {rc_path} and chmod 600 it, or set {TOKEN_ENV}"
    )
