"""Downloading staged LTA files over WebDAV with StageIT's macaroons, without a grid
certificate.

StageIT gives, per staging request, the WebDAV URLs of its staged files
(:meth:`~gridlrt.staging.stager.Stager.webdav_urls`, the LTA client's
``get_webdav_urls_requested``) and one macaroon per LTA site
(:meth:`~gridlrt.staging.stager.Stager.macaroons`, ``get_macaroons``): a bearer token the
site's dCache WebDAV door accepts as ``Authorization: Bearer <macaroon>``.

* :func:`plan_download` - which URL goes to which local file, with which site's macaroon;
* :func:`download` - verified, atomic copies through :class:`~gridlrt.storage.Storage`, the
  macaroon given to it as a bearer credential for the door's URL prefix
  (:meth:`~gridlrt.storage.Storage.add_bearer`): never in a URL, a log line or argv;
* :func:`write_macaroon_file` / :func:`read_macaroon_file` - a 0600 file of
  ``<url-prefix> <macaroon>`` lines, so that a pilot's storage can download with them
  (:func:`storage_bearers`).

A macaroon is a secret: it is held as :class:`pydantic.SecretStr` and shown as ``*****``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gridlrt.config import redact_url
from gridlrt.credentials import ensure_private
from gridlrt.errors import (
    CredentialsError,
    InputError,
    StagingError,
    StorageError,
    StoragePermissionDenied,
    TransfersFailed,
)
from gridlrt.staging.stager import Macaroon, Stager
from gridlrt.storage import Storage, TransferProgress, TransferResult

log = logging.getLogger(__name__)

#: How LTA sites are spelled in StageIT's macaroons (``SURF``, ``Juelich``, ``Poznan``),
#: in SURLs and WebDAV URLs: words that name each site.
SITE_WORDS: dict[str, tuple[str, ...]] = {
    "sara": ("surf", "sara"),
    "juelich": ("juelich", "jülich", "fz-juelich"),
    "poznan": ("poznan", "poznań", "psnc"),
}


def site_of(text: str) -> str | None:
    """The LTA site (``sara``, ``juelich``, ``poznan``) a macaroon's site name or a URL
    names, or None."""
    lowered = text.lower()
    for key, words in SITE_WORDS.items():
        if any(word in lowered for word in words):
            return key
    return None


def door_of(url: str) -> str:
    """``scheme://host:port/``: the WebDAV door of ``url``, the prefix its macaroon is for."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("https", "http", "davs", "dav") or not parts.netloc:
        raise StagingError(f"StageIT gave {redact_url(url)!r}, which is not a WebDAV URL")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}/"


@dataclass(frozen=True)
class DownloadFile:
    url: str
    destination: Path
    site: str
    """The macaroon's site name (as StageIT spells it)."""


@dataclass(frozen=True)
class DownloadPlan:
    """What :func:`download` would do for one staging request (no secret shown)."""

    request_id: int
    to: Path
    files: list[DownloadFile]
    macaroons: dict[str, Macaroon] = field(repr=False)
    """WebDAV door prefix -> its macaroon."""

    def bearers(self) -> dict[str, str]:
        """Door prefix -> macaroon, for :class:`~gridlrt.storage.Storage` (secret values)."""
        return {door: m.token.get_secret_value() for door, m in self.macaroons.items()}

    def valid_until(self) -> datetime | None:
        """When the first of the plan's macaroons expires (None: not said)."""
        times = [m.valid_until for m in self.macaroons.values() if m.valid_until is not None]
        return min(times) if times else None


def _choose(url: str, macaroons: Sequence[Macaroon], request_id: int) -> Macaroon:
    if len(macaroons) == 1:
        return macaroons[0]
    path = unquote(urlsplit(url).path)
    wanted = site_of(urlsplit(url).netloc) or site_of(path)
    for macaroon in macaroons:
        if wanted is not None and site_of(macaroon.site) == wanted:
            return macaroon
    sites = ", ".join(m.site or "?" for m in macaroons)
    raise StagingError(
        f"request {request_id}: none of StageIT's macaroons (sites {sites}) is for "
        f"{redact_url(url)}"
    )


def plan_download(stager: Stager, request_id: int, to: Path) -> DownloadPlan:
    """Ask the stager for the WebDAV URLs and macaroons of ``request_id`` and pair every
    URL with a file in ``to`` (its base name) and its site's macaroon. Contacts the stager,
    never the storage."""
    urls = stager.webdav_urls(request_id)
    if not urls:
        state = stager.state(request_id)
        raise StagingError(
            f"staging request {request_id} has no staged files to download yet ({state.label}); "
            f"see gridlrt stage status {request_id}"
        )
    macaroons = stager.macaroons(request_id)
    if not macaroons:
        raise StagingError(
            f"StageIT gave no macaroon for staging request {request_id}, so its files cannot "
            "be downloaded over WebDAV without a grid certificate; try again once it has "
            "finished staging"
        )
    files: list[DownloadFile] = []
    doors: dict[str, Macaroon] = {}
    seen: dict[str, str] = {}
    for url in urls:
        macaroon = _choose(url, macaroons, request_id)
        door = door_of(url)
        if door in doors and doors[door] is not macaroon:
            raise StagingError(
                f"request {request_id}: two macaroons ({doors[door].site}, {macaroon.site}) "
                f"for one WebDAV door {door}"
            )
        doors[door] = macaroon
        name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        if not name or name in (".", ".."):
            raise StagingError(f"StageIT gave {redact_url(url)!r}, which names no file")
        if name in seen:
            raise StagingError(
                f"request {request_id}: two files named {name} ({redact_url(seen[name])} and "
                f"{redact_url(url)}); download them into separate directories"
            )
        seen[name] = url
        files.append(DownloadFile(url, to / name, macaroon.site))
    return DownloadPlan(request_id, to, files, doors)


@dataclass(frozen=True)
class Downloaded:
    """The outcome of :func:`download`: files copied and verified, and files already there."""

    copied: list[TransferResult]
    skipped: list[DownloadFile]


def download(
    plan: DownloadPlan,
    storage: Storage | None = None,
    *,
    parallel: int = 4,
    progress: Callable[[TransferProgress], None] | None = None,
) -> Downloaded:
    """Copy the files of ``plan`` into ``plan.to``: at most ``parallel`` at once, each
    verified (size; adler32 where the door gives one) and renamed into place only when
    complete. A file already there with the size of the remote one is skipped, so a
    rerun after an interruption copies only what is missing.

    A door that refuses the macaroon (expired, or for another request) is reported in one
    line naming it.
    """
    if parallel < 1:
        raise InputError(f"--parallel must be at least 1, not {parallel}")
    store = storage or Storage()
    for door, token in plan.bearers().items():
        store.add_bearer(door, token)
    plan.to.mkdir(parents=True, exist_ok=True)
    todo: list[DownloadFile] = []
    skipped: list[DownloadFile] = []
    try:
        for item in plan.files:
            if item.destination.is_file() and (
                item.destination.stat().st_size == store.stat(item.url).size
            ):
                skipped.append(item)
            else:
                todo.append(item)
        copied = (
            store.copy_many(
                [(f.url, f.destination) for f in todo], max_in_flight=parallel, progress=progress
            )
            if todo
            else []
        )
    except TransfersFailed as failed:
        refused = [err for _src, _dst, err in failed.failures]
        raise _explained(plan, refused[0], len(refused), len(todo)) from None
    except StorageError as err:
        raise _explained(plan, err, 1, len(plan.files)) from None
    return Downloaded(copied, skipped)


def _explained(plan: DownloadPlan, err: StorageError, failed: int, total: int) -> StorageError:
    """One line: how many failed, the first error, and the cause when a door refused."""
    head = f"{failed} of {total} download(s) of request {plan.request_id} failed; first: {err}"
    if isinstance(err, StoragePermissionDenied):
        until = plan.valid_until()
        when = f" (valid until {until.isoformat(timespec='minutes')})" if until else ""
        sites = ", ".join(sorted({m.site or "?" for m in plan.macaroons.values()}))
        return StoragePermissionDenied(
            f"{head}; the WebDAV door refused StageIT's macaroon for {sites}{when}: it may "
            f"have expired; run gridlrt stage download {plan.request_id} again for a fresh one"
        )
    return type(err)(head)


# --- macaroon files for pilots -------------------------------------------------------------


def write_macaroon_file(path: Path, bearers: dict[str, str]) -> Path:
    """Write ``<url-prefix> <macaroon>`` lines to ``path``, created 0600 (atomically: a
    reader sees the old file or the whole new one)."""
    if not bearers:
        raise InputError("no macaroons to write")
    lines = ["# gridlrt macaroons: <WebDAV URL prefix> <macaroon>; keep this file 0600"]
    lines += [f"{prefix} {token}" for prefix, token in sorted(bearers.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def read_macaroon_file(path: Path) -> dict[str, str]:
    """URL prefix -> macaroon from a 0600 file of ``<url-prefix> <macaroon>`` lines
    (``#`` comments and blank lines ignored). Errors never show a macaroon."""
    try:
        ensure_private(path)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"macaroon file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(
            f"macaroon file {path} cannot be read ({type(exc).__name__})"
        ) from None
    bearers: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if len(words) != 2 or "://" not in words[0]:
            raise CredentialsError(
                f"{path}:{number}: expected '<WebDAV URL prefix> <macaroon>' (value not shown)"
            )
        bearers[words[0]] = words[1]
    if not bearers:
        raise CredentialsError(f"macaroon file {path} holds no macaroon")
    return bearers


def storage_bearers(storage: Storage, path: Path) -> Storage:
    """Give ``storage`` the macaroons of the file ``path`` (see :func:`read_macaroon_file`)."""
    for prefix, token in read_macaroon_file(path).items():
        storage.add_bearer(prefix, token)
    return storage
