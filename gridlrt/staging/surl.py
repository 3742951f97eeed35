"""SURLs: one LOFAR archive file on a dCache, its site, its LOFAR name and its other URL forms.

Owns the :class:`SURL` model, the table of LTA sites (:data:`SITES`) and pure parsing and
conversion functions; no I/O, no network. An SRM URL names a file at one of the LTA sites —
SARA (SURF, Amsterdam), Jülich or Poznań — or at any other dCache, recognised by host name::

    srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507/
        L229507_SB100_uv.dppp.MS_3d78b8f1.tar

The same path is served under other host parts (:data:`URL_FORMS`):

``srm``
    ``srm://host:8443/path`` — what the LTA catalogue writes, what the stager takes.
``gfal``
    ``srm://host:8443/srm/managerv2?SFN=/path`` — the explicit form some gfal2/SRM clients want.
``gsiftp``
    ``gsiftp://<site gridftp door>:2811/path``.
``https``
    the site's LTA download service, ``https://.../SRMFifoGet.py?surl=<srm URL>`` (only the
    three LTA sites have one).
``webdav``
    ``https://<site WebDAV door>/path`` — for dCache WebDAV (with a macaroon or a proxy).

**Assumption (not checked against the real sites):** the WebDAV doors in :data:`SITES`
(SARA ``webdav.grid.surfsara.nl:2880``, Jülich ``dcache-lofar.fz-juelich.de:2880``, Poznań
``lta-head.lofar.psnc.pl:2880``, any other dCache ``<srm host>:2880``, dCache's default WebDAV
port) come from public user scripts and dCache defaults, not from the sites. They are
configurable: ``GRIDLRT_WEBDAV_DOOR_<SITE>`` (``SARA``, ``JUELICH``, ``POZNAN``, or the host
name with dots and dashes as underscores for another dCache), e.g.
``GRIDLRT_WEBDAV_DOOR_SARA=https://webdav.grid.surfsara.nl:2881``, or the ``door`` argument
of :meth:`SURL.webdav`. For staged data the StageIT service can also give the WebDAV URLs
itself (:meth:`~gridlrt.staging.stageit.StageITStager.webdav_urls`).

LOFAR file names (``L<obsid>[_SAP<nnn>]_SB<nnn>_uv[.dppp].MS[_<8 hex>].tar``) give the
observation id, SAP, subband and archive suffix; files named otherwise (beamformed data,
inspection plots) are still valid SURLs with ``subband`` ``None``, and the observation id then
comes from the ``.../<project>/<obsid>/`` directory when it is numeric.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict

from gridlrt.errors import InputError
from gridlrt.lofar_names import ARCHIVE_SUFFIX
from gridlrt.staging.ranges import format_ranges, parse_ranges

SRM_PORT = 8443
GSIFTP_PORT = 2811
WEBDAV_PORT = 2880
GFAL_ENDPOINT = "/srm/managerv2"
UrlForm = Literal["srm", "gfal", "gsiftp", "https", "webdav"]
URL_FORMS: tuple[UrlForm, ...] = ("srm", "gfal", "gsiftp", "https", "webdav")
WEBDAV_DOOR_ENV = "GRIDLRT_WEBDAV_DOOR_"


class Site(BaseModel):
    """One dCache holding LTA data: its SRM, GridFTP, download and WebDAV entry points."""

    model_config = ConfigDict(frozen=True)

    key: str
    """``sara``, ``juelich``, ``poznan``, or the SRM host name of any other dCache."""
    name: str
    """Display name: ``SARA``, ``Jülich``, ``Poznań`` or the host name."""
    srm_host: str
    srm_port: int = SRM_PORT
    gsiftp_host: str
    gsiftp_port: int = GSIFTP_PORT
    download: str | None = None
    """Prefix of the HTTPS download service; the SRM URL is appended."""
    webdav_door: str
    """``https://host:port`` of the WebDAV door (see the module docstring: an assumption)."""
    known: bool = True
    """False for a dCache that is not one of the LTA sites."""

    def door(self) -> str:
        """The WebDAV door, after a ``GRIDLRT_WEBDAV_DOOR_<SITE>`` override if one is set."""
        env = WEBDAV_DOOR_ENV + re.sub(r"[^A-Za-z0-9]", "_", self.key).upper()
        return (os.environ.get(env) or self.webdav_door).rstrip("/")


SITES: dict[str, Site] = {
    "sara": Site(
        key="sara",
        name="SARA",
        srm_host="srm.grid.sara.nl",
        gsiftp_host="gridftp.grid.sara.nl",
        download="https://lofar-download.grid.surfsara.nl/lofigrid/SRMFifoGet.py?surl=",
        webdav_door="https://webdav.grid.surfsara.nl:2880",
    ),
    "juelich": Site(
        key="juelich",
        name="Jülich",
        srm_host="lofar-srm.fz-juelich.de",
        gsiftp_host="lofar-gridftp.fz-juelich.de",
        download="https://lofar-download.fz-juelich.de/webserver-lofar/SRMFifoGet.py?surl=",
        webdav_door="https://dcache-lofar.fz-juelich.de:2880",
    ),
    "poznan": Site(
        key="poznan",
        name="Poznań",
        srm_host="lta-head.lofar.psnc.pl",
        gsiftp_host="gridftp.lofar.psnc.pl",
        download="https://lta-download.lofar.psnc.pl/lofigrid/SRMFifoGet.py?surl=",
        webdav_door="https://lta-head.lofar.psnc.pl:2880",
    ),
}
_BY_SRM_HOST = {site.srm_host: site for site in SITES.values()}
_BY_GSIFTP_HOST = {site.gsiftp_host: site for site in SITES.values()}


def site_for_host(host: str, port: int = SRM_PORT) -> Site:
    """The LTA site with this SRM host, or an "other dCache" site built from the host."""
    known = _BY_SRM_HOST.get(host.lower())
    if known is not None:
        return known
    return Site(
        key=host.lower(),
        name=host.lower(),
        srm_host=host.lower(),
        srm_port=port,
        gsiftp_host=host.lower(),
        webdav_door=f"https://{host.lower()}:{WEBDAV_PORT}",
        known=False,
    )


_LOFAR_OBS = re.compile(r"^L(\d+)")
_LOFAR_SAP = re.compile(r"_SAP(\d+)")
_LOFAR_SB = re.compile(r"_SB(\d+)")
_PROJECT = re.compile(r"/projects/([^/]+)/")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


class SURL(BaseModel):
    """One file on a dCache, by its SRM URL, with what its LOFAR name says about it."""

    model_config = ConfigDict(frozen=True)

    url: str
    """Canonical form ``srm://host:port/path`` (also the key for duplicates)."""
    host: str
    port: int
    path: str
    site: Site
    project: str | None = None
    obsid: int | None = None
    sap: int | None = None
    subband: int | None = None
    suffix: str | None = None
    """The 8 hex digits the archive appends (``3d78b8f1``), if present."""

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def name(self) -> str:
        """A short readable name: ``L229507_SB100``, ``L229507_SAP000_SB100`` or the file name."""
        if self.obsid is None or self.subband is None:
            return self.filename
        sap = f"_SAP{self.sap:03d}" if self.sap is not None else ""
        return f"L{self.obsid}{sap}_SB{self.subband:03d}"

    def srm(self) -> str:
        return self.url

    def gfal(self) -> str:
        """``srm://host:port/srm/managerv2?SFN=/path``."""
        return f"srm://{self.host}:{self.port}{GFAL_ENDPOINT}?SFN={self.path}"

    def gsiftp(self) -> str:
        """``gsiftp://<gridftp door>:2811/path`` (the SRM host itself for another dCache)."""
        return f"gsiftp://{self.site.gsiftp_host}:{self.site.gsiftp_port}{self.path}"

    def https(self) -> str | None:
        """The site's HTTPS download link, or ``None`` for a dCache that is not an LTA site."""
        return f"{self.site.download}{self.url}" if self.site.download else None

    def webdav(self, door: str | None = None) -> str:
        """``https://<WebDAV door>/path``; ``door`` overrides the site's (assumed) door."""
        return f"{(door or self.site.door()).rstrip('/')}{self.path}"

    def form(self, form: UrlForm) -> str | None:
        """This file's URL in one of :data:`URL_FORMS`."""
        if form == "srm":
            return self.srm()
        if form == "gfal":
            return self.gfal()
        if form == "gsiftp":
            return self.gsiftp()
        if form == "https":
            return self.https()
        return self.webdav()

    def forms(self) -> dict[str, str | None]:
        return {form: self.form(form) for form in URL_FORMS}

    def sort_key(self) -> tuple[str, int, int, int, str]:
        return (
            self.site.key,
            -1 if self.obsid is None else self.obsid,
            -1 if self.sap is None else self.sap,
            -1 if self.subband is None else self.subband,
            self.url,
        )


def _not_srm(text: str, why: str = "") -> InputError:
    shown = text if len(text) <= 160 else text[:157] + "..."
    return InputError(f"not an SRM URL: {shown}" + (f" ({why})" if why else ""))


def parse_surl(text: str) -> SURL:
    """Parse ``srm://host[:port]/path`` or the gfal form ``srm://host:port/srm/managerv2?SFN=/path``.

    The port defaults to 8443. Raises :class:`InputError` ``not an SRM URL: ...``.
    """
    text = text.strip()
    if not text.lower().startswith("srm://"):
        raise _not_srm(text)
    if any(ord(ch) < 32 or ch == "\x7f" for ch in text):
        raise _not_srm(repr(text), "control characters")
    try:
        parts = urlsplit(text)
        port = parts.port or SRM_PORT
    except ValueError:
        raise _not_srm(text, "bad port") from None
    host = (parts.hostname or "").lower()
    if not host or not _HOST.fullmatch(host):
        raise _not_srm(text, "no host name")
    path = parts.path
    if parts.query:
        sfn = parse_qs(parts.query).get("SFN")
        if path.rstrip("/") != GFAL_ENDPOINT or not sfn:
            raise _not_srm(text, f"unexpected query {parts.query!r}")
        path = sfn[0]
    elif path.rstrip("/") == GFAL_ENDPOINT:
        raise _not_srm(text, "SRM endpoint without ?SFN=")
    if parts.fragment:
        raise _not_srm(text, "unexpected '#'")
    path = re.sub(r"/{2,}", "/", path)
    if not path.startswith("/") or path.rstrip("/") == "" or path.endswith("/"):
        raise _not_srm(text, "no file path")
    return _make(host, port, path)


def _make(host: str, port: int, path: str) -> SURL:
    filename = path.rsplit("/", 1)[-1]
    obs = _LOFAR_OBS.match(filename)
    obsid = int(obs.group(1)) if obs else None
    if obsid is None:
        parent = path.rstrip("/").rsplit("/", 2)
        if len(parent) == 3 and parent[1].isdigit():
            obsid = int(parent[1])
    sap = _LOFAR_SAP.search(filename) if obs else None
    sb = _LOFAR_SB.search(filename) if obs else None
    suffix = ARCHIVE_SUFFIX.search(filename)
    project = _PROJECT.search(path)
    return SURL(
        url=f"srm://{host}:{port}{path}",
        host=host,
        port=port,
        path=path,
        site=site_for_host(host, port),
        project=project.group(1) if project else None,
        obsid=obsid,
        sap=int(sap.group(1)) if sap else None,
        subband=int(sb.group(1)) if sb else None,
        suffix=suffix.group(1).lower() if suffix else None,
    )


def to_surl(url: str) -> SURL:
    """Any form back to its SURL: srm, gfal srm, gsiftp, an HTTPS download link, or WebDAV.

    gsiftp and WebDAV URLs are mapped by host to an LTA site; a host that is not one of the
    LTA sites' doors is taken as a dCache whose SRM door is the same host on port 8443.
    """
    text = url.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "srm":
        return parse_surl(text)
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    if scheme in ("https", "http") and "surl=" in parts.query:
        surl = parse_qs(parts.query).get("surl")
        if surl:
            return parse_surl(surl[0])
    if scheme == "gsiftp" and host:
        site = _BY_GSIFTP_HOST.get(host)
        return parse_surl(f"srm://{site.srm_host if site else host}:{SRM_PORT}{parts.path}")
    if scheme in ("https", "davs", "http", "dav") and host:
        for site in SITES.values():
            door = urlsplit(site.door())
            if door.hostname == host and (door.port or 443) == (parts.port or 443):
                return parse_surl(f"srm://{site.srm_host}:{site.srm_port}{parts.path}")
        return parse_surl(f"srm://{host}:{SRM_PORT}{parts.path}")
    raise InputError(f"cannot turn {text!r} into an SRM URL (srm, gsiftp, https or WebDAV)")


# --- lists of SURLs ---------------------------------------------------------------------------


class SurlGroup(BaseModel):
    """SURLs of one observation at one site, sorted by SAP and subband."""

    site: Site
    obsid: int | None
    surls: list[SURL]

    @property
    def subbands(self) -> list[int]:
        return sorted({s.subband for s in self.surls if s.subband is not None})

    @property
    def subband_ranges(self) -> str:
        return format_ranges(self.subbands)


def sort_surls(surls: Iterable[SURL]) -> list[SURL]:
    """By site, observation, SAP and subband (files without subband first), then URL."""
    return sorted(surls, key=SURL.sort_key)


def group_by_site(surls: Iterable[SURL]) -> dict[str, list[SURL]]:
    """Site key -> its SURLs, sorted; sites in order of first appearance."""
    groups: dict[str, list[SURL]] = {}
    for surl in surls:
        groups.setdefault(surl.site.key, []).append(surl)
    return {key: sort_surls(members) for key, members in groups.items()}


def group_by_observation(surls: Iterable[SURL]) -> list[SurlGroup]:
    """One group per (site, observation), each sorted by SAP and subband."""
    groups: dict[tuple[str, int | None], list[SURL]] = {}
    for surl in surls:
        groups.setdefault((surl.site.key, surl.obsid), []).append(surl)
    return [
        SurlGroup(site=members[0].site, obsid=obsid, surls=sort_surls(members))
        for (_site, obsid), members in groups.items()
    ]


def select_subbands(surls: Sequence[SURL], ranges: str | Iterable[int]) -> list[SURL]:
    """The SURLs whose subband is in ``ranges`` (LEDAMA text like ``0..243..2`` or numbers).

    Files without a subband in their name are never selected.
    """
    wanted = set(parse_ranges(ranges) if isinstance(ranges, str) else ranges)
    return [s for s in surls if s.subband is not None and s.subband in wanted]
