"""LTA stager credentials: where they come from, and which protocol they are for.

Owns the lookup order; the file format and the 0600 rule belong to
:func:`gridlrt.credentials.read_key_value_file`. Nothing is read at import time: call
:func:`load_lta_credentials` when a client is about to talk to the LTA.

**StageIT is the protocol** unless v1 is chosen explicitly (``--protocol v1``, the setting
``lta_protocol = "v1"`` or ``GRIDLRT_LTA_PROTOCOL=v1``): the current LTA stager client
accepts only an API token, and v1 (user and password, XML-RPC) is legacy. Old v1
credentials alone are never used silently: the error says how to choose v1, or to get a
token.

StageIT: ``GRIDLRT_LTA_TOKEN``, else ``api_token=...`` in ``~/.stagingrc`` (setting
``lta_credentials``, with an optional ``hostname=``, e.g. ``sdc-dev.astron.nl``).

v1: ``GRIDLRT_LTA_USER`` and ``GRIDLRT_LTA_PASSWORD``, else ``user=...`` and
``password=...`` in ``~/.stagingrc``, else ``database_user : ...`` and
``database_password : ...`` in ``~/.awe/Environment.cfg`` (setting ``awe_config``).

Secrets are held as :class:`pydantic.SecretStr` so that a repr or a log line shows
``**********``.
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
DEFAULT_TOKEN_PAGE = "https://sdc.astron.nl/stageit/"


class LtaCredentials(BaseModel):
    """Credentials for one protocol, and where they came from (safe to show)."""

    protocol: Protocol
    source: str
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    hostname: str | None = None


DEFAULT_PROTOCOL: Protocol = "stageit"
_HOW_TO_CHOOSE_V1 = f'--protocol v1, lta_protocol = "v1" in the settings or {PROTOCOL_ENV}=v1'


def requested_protocol(protocol: str | None, settings: Settings | None = None) -> Protocol | None:
    """The protocol chosen explicitly: ``protocol`` (an option), else the setting
    ``lta_protocol`` (or ``$GRIDLRT_LTA_PROTOCOL``); ``None`` when nothing was chosen, which
    means StageIT. ``auto``, the older name of the default, is taken as not choosing."""
    chosen = (
        protocol
        or (settings.lta_protocol if settings is not None else None)
        or os.environ.get(PROTOCOL_ENV)
        or "auto"
    )
    chosen = chosen.strip().lower()
    if chosen == "auto":
        return None
    for known in PROTOCOLS:
        if chosen == known:
            return known
    raise InputError(
        f"LTA protocol {chosen!r}: choose stageit (the default) or v1 (the legacy XML-RPC stager)"
    )


def _file(path: Path) -> dict[str, str]:
    return read_key_value_file(path) if path.exists() else {}


def _stageit(settings: Settings, rc: dict[str, str]) -> LtaCredentials | None:
    env_token = os.environ.get(TOKEN_ENV)
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
            source=str(settings.lta_credentials),
            token=SecretStr(rc["api_token"]),
            hostname=rc.get("hostname") or None,
        )
    return None


def _v1(settings: Settings, rc: dict[str, str]) -> LtaCredentials | None:
    env_user, env_password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if env_user and env_password:
        return LtaCredentials(
            protocol="v1", source=USER_ENV, user=env_user, password=SecretStr(env_password)
        )
    if rc.get("user") and rc.get("password"):
        return LtaCredentials(
            protocol="v1",
            source=str(settings.lta_credentials),
            user=rc["user"],
            password=SecretStr(rc["password"]),
        )
    awe = _file(settings.awe_config)
    if awe.get("database_user") and awe.get("database_password"):
        return LtaCredentials(
            protocol="v1",
            source=str(settings.awe_config),
            user=awe["database_user"],
            password=SecretStr(awe["database_password"]),
        )
    return None


def load_lta_credentials(settings: Settings, protocol: str | None = None) -> LtaCredentials:
    """The credentials for ``protocol`` (``stageit``, ``v1``, or ``None``/``auto``: the
    setting, else StageIT). Raises :class:`CredentialsError` in one line saying what to do."""
    wanted = requested_protocol(protocol, settings)
    rc_path = settings.lta_credentials
    rc = _file(rc_path)
    if wanted == "v1":
        found = _v1(settings, rc)
        if found is None:
            raise CredentialsError(
                f"no LTA user and password for the legacy v1 stager: put user=... and "
                f"password=... in {rc_path} (chmod 600), or set {USER_ENV} and {PASSWORD_ENV}"
            )
        return found
    found = _stageit(settings, rc)
    if found is not None:
        return found
    get_token = (
        f"put api_token=... (from StageIT, {DEFAULT_TOKEN_PAGE}) in {rc_path} (chmod 600) "
        f"or set {TOKEN_ENV}"
    )
    old = _v1(settings, rc)
    if old is not None:
        raise CredentialsError(
            f"{old.source} has only v1 credentials (user and password); the LTA stager now "
            f"takes a StageIT API token: {get_token}; or choose the legacy v1 stager with "
            f"{_HOW_TO_CHOOSE_V1}"
        )
    raise CredentialsError(f"no StageIT API token for the LTA stager: {get_token}")
