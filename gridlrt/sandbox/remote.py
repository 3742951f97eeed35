"""Pushing sandboxes to storage and fetching them back, verified by their sha256 id.

A pushed sandbox lives at ``<base URL>/<id>.tar.gz``; since the name is the content's
hash, a sandbox already there is not uploaded again. Fetching checks the downloaded bytes
against the id in the file name (or an explicit sha256) before anything is extracted.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

from gridlrt.config import redact_url
from gridlrt.errors import ChecksumMismatch, InputError, StorageNotFound, TransfersFailed
from gridlrt.sandbox.build import SUFFIX, Sandbox, build_sandbox, sha256_file
from gridlrt.sandbox.extract import check_tarball, extract_tarball
from gridlrt.storage import Storage, TransferResult
from gridlrt.storage.gfal import ProgressCallback
from gridlrt.storage.urls import basename, join, to_url

log = logging.getLogger(__name__)

_ID = re.compile(r"^[0-9a-f]{64}$")


class PushPlan(BaseModel):
    """What a push will do (or did): which sandbox, where, and whether it is there already."""

    id: str
    url: str
    size: int
    files: int
    present: bool


class PushResult(PushPlan):
    uploaded: bool
    transfer: TransferResult | None = None


class FetchPlan(BaseModel):
    """What a fetch will do: which URL, the sha256 it must have, and where it goes."""

    url: str
    sha256: str
    dest: Path
    size: int


class FetchResult(FetchPlan):
    files: int
    transfer: TransferResult


def _copy_one(
    storage: Storage, src: str, dst: str, progress: ProgressCallback | None
) -> TransferResult:
    """One verified, atomic copy with progress reports; its own error if it fails."""
    try:
        [transfer] = storage.copy_many([(src, dst)], max_in_flight=1, progress=progress)
    except TransfersFailed as failed:
        raise failed.failures[0][2] from None
    return transfer


def sandbox_url(base: str, sandbox_id: str) -> str:
    """Where sandbox ``sandbox_id`` lives under ``base``: ``<base>/<id>.tar.gz``."""
    return join(to_url(base), f"{sandbox_id}{SUFFIX}")


def id_from_name(url: str) -> str | None:
    """The sha256 id in a ``<id>.tar.gz`` name, or None for any other name."""
    name = basename(url)
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
    return stem if _ID.match(stem) else None


def _checked_sha(value: str) -> str:
    sha = value.strip().lower()
    if not _ID.match(sha):
        raise InputError(f"--sha256 {value!r}: expected 64 hexadecimal characters")
    return sha


def _prepare(source: Path, workdir: Path, extra: Mapping[str, Path] | None) -> Sandbox:
    """A built sandbox for ``source``: a step directory (built now) or a built tarball."""
    if source.is_dir():
        return build_sandbox(source, workdir, extra=extra)
    if not source.is_file():
        raise InputError(f"{source}: no such directory or sandbox file")
    if extra:
        raise InputError(f"{source}: extra files can only be added when building a directory")
    members = check_tarball(source)
    digest = sha256_file(source)
    named = id_from_name(source.name)
    if named is not None and named != digest:
        raise ChecksumMismatch(
            f"{source}: its name says sha256 {named} but its bytes have {digest}; "
            "the file was changed after it was built"
        )
    files = sum(1 for m in members if m.isfile())
    return Sandbox(id=digest, path=source, size=source.stat().st_size, files=files)


def _plan(storage: Storage, sandbox: Sandbox, to: str) -> PushPlan:
    url = sandbox_url(to, sandbox.id)
    try:
        there = storage.stat(url)
    except StorageNotFound:
        present = False
    else:
        present = there.size == sandbox.size
        if not present:
            log.warning(
                "%s exists with %d bytes instead of %d: it will be replaced",
                redact_url(url), there.size, sandbox.size,
            )  # fmt: skip
    return PushPlan(
        id=sandbox.id, url=redact_url(url), size=sandbox.size, files=sandbox.files,
        present=present,
    )  # fmt: skip


def plan_push(
    storage: Storage, source: Path, to: str, *, extra: Mapping[str, Path] | None = None
) -> PushPlan:
    """What :func:`push_sandbox` would do, without uploading (building is local)."""
    with tempfile.TemporaryDirectory(prefix="gridlrt-sandbox-") as tmp:
        return _plan(storage, _prepare(source, Path(tmp), extra), to)


def push_sandbox(
    storage: Storage,
    source: Path,
    to: str,
    *,
    extra: Mapping[str, Path] | None = None,
    progress: ProgressCallback | None = None,
) -> PushResult:
    """Upload the sandbox of ``source`` (a step directory or a built ``.tar.gz``) to
    ``<to>/<id>.tar.gz``, unless a sandbox with that id is already there."""
    with tempfile.TemporaryDirectory(prefix="gridlrt-sandbox-") as tmp:
        sandbox = _prepare(source, Path(tmp), extra)
        plan = _plan(storage, sandbox, to)
        if plan.present:
            log.info("sandbox %s already at %s", sandbox.id, plan.url)
            return PushResult(**plan.model_dump(), uploaded=False)
        url = sandbox_url(to, sandbox.id)
        transfer = _copy_one(storage, to_url(sandbox.path), url, progress)
    return PushResult(**plan.model_dump(), uploaded=True, transfer=transfer)


def plan_fetch(storage: Storage, url: str, dest: Path, *, sha256: str | None = None) -> FetchPlan:
    """What :func:`fetch_sandbox` would do: checks the URL exists and the expected hash."""
    source = to_url(url)
    expected = _checked_sha(sha256) if sha256 else id_from_name(source)
    if expected is None:
        raise InputError(
            f"{redact_url(source)}: the name is not <sha256>.tar.gz, so the expected hash is "
            "unknown; pass --sha256"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: exists and is not an empty directory; choose a new one")
    size = storage.stat(source).size
    return FetchPlan(url=redact_url(source), sha256=expected, dest=dest, size=size)


def fetch_sandbox(
    storage: Storage,
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
) -> FetchResult:
    """Download the sandbox at ``url``, check its sha256, and unpack it into ``dest``.

    The expected sha256 is ``sha256`` or the id in the ``<id>.tar.gz`` name. A mismatch
    raises :class:`ChecksumMismatch` and nothing is extracted; unsafe members (absolute
    paths, ``..``, devices, links out of the tree) raise before anything is written.
    """
    plan = plan_fetch(storage, url, dest, sha256=sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gridlrt-fetch-", dir=dest.parent))
    try:
        local = tmp / f"{plan.sha256}{SUFFIX}"
        transfer = _copy_one(storage, to_url(url), to_url(local), progress)
        actual = sha256_file(local)
        if actual != plan.sha256:
            raise ChecksumMismatch(
                f"sandbox {plan.url}: sha256 is {actual}, expected {plan.sha256}; it was "
                "corrupted or tampered with, refusing to extract"
            )
        files = extract_tarball(local, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return FetchResult(**plan.model_dump(), files=files, transfer=transfer)
