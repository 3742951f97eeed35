"""Staging: SURLs and SRM lists, LTA stager clients (v1 XML-RPC, v2 StageIT), dCache locality.

Knows nothing of tokens or workers. The pieces:

* :mod:`~gridlrt.staging.surl` — the :class:`SURL` model, LTA sites, URL form conversions;
* :mod:`~gridlrt.staging.lists` — reading ``srm.txt`` with line-numbered errors;
* :mod:`~gridlrt.staging.ranges` — LEDAMA ranges (``0..243..2``, ``1-3,7``);
* :mod:`~gridlrt.staging.stager` — the :class:`Stager` contract and :class:`StagingState`;
* :mod:`~gridlrt.staging.stageit` (the default), :mod:`~gridlrt.staging.lta_v1` (legacy, only
  when chosen) — the two services;
* :mod:`~gridlrt.staging.credentials` — where the LTA secrets come from;
* :mod:`~gridlrt.staging.records` — the local record of submitted requests;
* :mod:`~gridlrt.staging.locality` — ONLINE/NEARLINE through the storage layer (gfal2);
* :mod:`~gridlrt.staging.download` — per-site macaroons and the WebDAV URLs of a staged
  request, downloaded through the storage layer with the macaroon as a bearer token;
* :mod:`~gridlrt.staging.service` — what ``gridlrt stage`` does with these: submit and
  record, refresh the records (per service, tolerating one in trouble), status, abort.

Start with :func:`open_stager`. Nothing here reads a secret or opens a connection at import.
"""

from __future__ import annotations

import os

from gridlrt.config import Settings
from gridlrt.staging.lists import SrmList, parse_srm_text, read_srm_list
from gridlrt.staging.ranges import format_ranges, parse_ranges
from gridlrt.staging.stager import (
    MAX_FILES_IN_FLIGHT,
    MAX_FILES_PER_REQUEST,
    Progress,
    Protocol,
    Stager,
    StagingReport,
    StagingRequest,
    StagingState,
    plan_requests,
)
from gridlrt.staging.surl import SITES, SURL, parse_surl, to_surl

__all__ = [
    "MAX_FILES_IN_FLIGHT",
    "MAX_FILES_PER_REQUEST",
    "SITES",
    "SURL",
    "Progress",
    "Protocol",
    "SrmList",
    "Stager",
    "StagingReport",
    "StagingRequest",
    "StagingState",
    "format_ranges",
    "open_stager",
    "parse_ranges",
    "parse_srm_text",
    "parse_surl",
    "plan_requests",
    "read_srm_list",
    "service_url",
    "to_surl",
]


def service_url(protocol: Protocol, url: str | None = None, hostname: str | None = None) -> str:
    """The stager URL: ``url`` (an option), else ``$GRIDLRT_STAGER_URL`` (v1) or
    ``$GRIDLRT_STAGEIT_URL`` (StageIT), else StageIT's ``hostname=``, else the real service."""
    from gridlrt.staging import lta_v1, stageit

    if url:
        return url
    if protocol == "v1":
        return os.environ.get(lta_v1.URL_ENV) or lta_v1.DEFAULT_URL
    if os.environ.get(stageit.URL_ENV):
        return os.environ[stageit.URL_ENV]
    return stageit.url_for_hostname(hostname) if hostname else stageit.DEFAULT_URL


def open_stager(
    settings: Settings,
    protocol: str | None = None,
    url: str | None = None,
    *,
    retries: int = 5,
    backoff: float = 0.25,
    timeout: float = 60.0,
) -> Stager:
    """A client for the LTA stager. ``protocol``: ``stageit``, ``v1`` (legacy, only when
    chosen) or ``None``/``auto`` (the setting ``lta_protocol`` / ``$GRIDLRT_LTA_PROTOCOL``,
    else StageIT). Reads the credentials now (see :mod:`gridlrt.staging.credentials`)."""
    from gridlrt.staging.credentials import load_lta_credentials

    creds = load_lta_credentials(settings, protocol)
    where = service_url(creds.protocol, url, creds.hostname)
    if creds.protocol == "stageit":
        from gridlrt.staging.stageit import StageITStager

        assert creds.token is not None
        return StageITStager(
            creds.token.get_secret_value(),
            where,
            credentials_source=creds.source,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
        )
    from gridlrt.staging.lta_v1 import LtaV1Stager

    assert creds.user is not None and creds.password is not None
    return LtaV1Stager(
        creds.user,
        creds.password.get_secret_value(),
        where,
        credentials_source=creds.source,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
    )
