"""LOFAR archive file names, as pure functions:
``L<obsid>[_SAP<nnn>]_SB<nnn>_uv[.dppp].MS[_<8 hex>].tar``.

One place for the naming convention that token ids (:mod:`gridlrt.tokens.create`), step
templates (:mod:`gridlrt.worker.plan`) and SURLs (:mod:`gridlrt.staging.surl`) rely on.
"""

from __future__ import annotations

import re

LOFAR_NAME = re.compile(r"(L\d+)(?:_(SAP\d{3}))?_(SB\d{3})")
ARCHIVE_SUFFIX = re.compile(r"_([0-9a-fA-F]{8})\.tar$")
_TAR = re.compile(r"(_[0-9a-fA-F]{8})?\.tar$")


def basename(text: str) -> str:
    """The last path component of a URL or path, without a query."""
    return text.rstrip("/").rsplit("/", 1)[-1].split("?")[0]


def _match(text: str) -> re.Match[str] | None:
    return LOFAR_NAME.search(basename(text)) or LOFAR_NAME.search(text)


def short_name(text: str) -> str | None:
    """``L229507_SB100`` or ``L229507_SAP000_SB100`` from a LOFAR file name or URL, else None."""
    found = _match(text)
    return "_".join(part for part in found.groups() if part) if found else None


def name_fields(text: str) -> dict[str, str]:
    """``{"obsid": "229507", "sap": "000", "subband": "100"}`` (``sap`` only when named)."""
    found = _match(text)
    if not found:
        return {}
    obs, sap, sb = found.groups()
    fields = {"obsid": obs.removeprefix("L"), "subband": sb.removeprefix("SB")}
    if sap:
        fields["sap"] = sap.removeprefix("SAP")
    return fields


def ms_name_in_archive(text: str) -> str:
    """``L229507_SB100_uv.dppp.MS_3d78b8f1.tar`` -> ``L229507_SB100_uv.dppp.MS``."""
    return _TAR.sub("", basename(text))
