"""dCache locality: is a file on disk (ONLINE), only on tape (NEARLINE), or both?

Owns the interpretation of dCache's ``user.status`` extended attribute and the parallel
check of a whole list; every storage call goes through :class:`gridlrt.storage.Storage`
(the one gfal2 layer), never to gfal2 directly.

* ``srm://``, ``gsiftp://``, ``root://``: the ``user.status`` attribute answers ``ONLINE``,
  ``NEARLINE`` or ``ONLINE_AND_NEARLINE``; a file that does not exist is ``MISSING``; a
  failure to ask (no proxy, endpoint down) is ``UNKNOWN`` with the reason.
* ``file://``, ``dav(s)://``, ``http(s)://`` (local use, tests, plain WebDAV): there is no tape
  behind them, so a file that exists counts as ``ONLINE``.

:func:`check_locality` asks for many files at once with a bounded thread pool (one
:class:`~gridlrt.storage.Storage`, which lends every operation its own gfal2 context) and
keeps the input order. :func:`bring_online` asks a dCache to stage files that are *not* in the LTA
(e.g. your own tape-backed space); LTA files are staged with the LTA stager instead
(``gridlrt stage submit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel

from gridlrt.errors import StagingError, StorageError, StorageNotFound
from gridlrt.staging.surl import parse_surl
from gridlrt.storage.urls import scheme_of

if TYPE_CHECKING:
    from gridlrt.storage import BringOnlineResult, Storage

STATUS_XATTR = "user.status"
NO_TAPE_SCHEMES = frozenset({"file", "dav", "davs", "http", "https"})
DEFAULT_WORKERS = 8


class Locality(StrEnum):
    ONLINE = "ONLINE"
    NEARLINE = "NEARLINE"
    ONLINE_AND_NEARLINE = "ONLINE_AND_NEARLINE"
    UNKNOWN = "UNKNOWN"
    MISSING = "MISSING"

    @property
    def online(self) -> bool:
        return self in (Locality.ONLINE, Locality.ONLINE_AND_NEARLINE)


class LocalityResult(BaseModel):
    """The locality of one URL, with a reason when it is UNKNOWN or MISSING."""

    url: str
    locality: Locality
    detail: str = ""

    @property
    def online(self) -> bool:
        return self.locality.online


def parse_status(value: str) -> Locality:
    """dCache's ``user.status`` text -> :class:`Locality` (``UNKNOWN`` for anything else)."""
    text = value.strip().strip("\x00").upper()
    try:
        return Locality(text)
    except ValueError:
        return Locality.UNKNOWN


def is_lta_archive(url: str) -> bool:
    """True for a file in the LTA's archive area (``.../lofar/ops/...`` at an LTA site)."""
    try:
        if scheme_of(url) != "srm":
            return False
        surl = parse_surl(url)
    except Exception:
        return False
    return surl.site.known and "/lofar/ops/" in surl.path


def locality_of(url: str, storage: Storage) -> LocalityResult:
    """Ask ``storage`` where one file is (see the module docstring for the rules)."""
    try:
        if scheme_of(url) in NO_TAPE_SCHEMES:
            if storage.exists(url):
                return LocalityResult(url=url, locality=Locality.ONLINE, detail="exists (no tape)")
            return LocalityResult(url=url, locality=Locality.MISSING, detail="no such file")
        status = storage.getxattr(url, STATUS_XATTR)
    except StorageNotFound as exc:
        return LocalityResult(url=url, locality=Locality.MISSING, detail=_first_line(exc))
    except StorageError as exc:
        return LocalityResult(url=url, locality=Locality.UNKNOWN, detail=_first_line(exc))
    locality = parse_status(status)
    detail = "" if locality is not Locality.UNKNOWN else f"user.status={status.strip()!r}"
    return LocalityResult(url=url, locality=locality, detail=detail)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _default_storage() -> Storage:
    from gridlrt.storage import Storage

    return Storage()


def check_locality(
    urls: Sequence[str],
    *,
    workers: int = DEFAULT_WORKERS,
    storage: Storage | None = None,
) -> list[LocalityResult]:
    """Locality of every URL, at most ``workers`` at a time, in input order.

    One :class:`~gridlrt.storage.Storage` serves all threads (it lends each operation its own
    gfal2 context)."""
    if not urls:
        return []
    chosen = storage or _default_storage()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(urls)))) as pool:
        return list(pool.map(lambda url: locality_of(url, chosen), urls))


def summarize_locality(results: Sequence[LocalityResult]) -> dict[str, int]:
    """Counts per locality (every name present, zeros included), plus ``online`` and ``total``."""
    counts = {loc.value: 0 for loc in Locality}
    for result in results:
        counts[result.locality.value] += 1
    counts["online"] = sum(1 for r in results if r.online)
    counts["total"] = len(results)
    return counts


def bring_online(
    urls: Sequence[str],
    *,
    pin_time: int = 3600,
    timeout: int = 86400,
    asynchronous: bool = True,
    storage: Storage | None = None,
) -> BringOnlineResult:
    """Ask a dCache to stage ``urls`` from its tape and pin them for ``pin_time`` seconds
    (gfal2 bring_online through the storage layer; poll with
    :meth:`~gridlrt.storage.Storage.bring_online_poll`). Refuses files in the LTA archive:
    those are staged with the LTA stager."""
    lta = [u for u in urls if is_lta_archive(u)]
    if lta:
        raise StagingError(
            f"{lta[0]} is in the LTA archive: stage it with gridlrt stage submit, not "
            "bring_online" + (f" ({len(lta)} such files)" if len(lta) > 1 else "")
        )
    chosen = storage or _default_storage()
    return chosen.bring_online(list(urls), pin_time, timeout, asynchronous=asynchronous)
