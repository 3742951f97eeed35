"""Moving whole datasets: :func:`get_dataset` fetches one into a local directory,
:func:`put_dataset` uploads local files (a directory, or a dataset of ``file://`` entries) to
a storage directory.

Every file goes through :meth:`gridlrt.storage.Storage.copy` (gfal2: a verified copy to
``<name>.part-<hex>`` renamed into place once its size, and adler32 where both ends answer,
agree), at most ``parallel`` at a time; this module adds what a dataset needs on top:

* **resume** (the default): a file already at its destination with the right size (and the
  right adler32 when the dataset knows the checksum) is skipped, so a rerun of the same
  command after an interruption copies only what is missing. A killed copy never leaves a
  file under its final name (the storage layer's ``.part`` + rename), so whatever is there
  under its name was complete when it was renamed; the temporaries killed copies leave are
  removed when the rerun is done.
* **the dataset's own checksums**: where the endpoint answers no checksums (most WebDAV
  servers) the copy is verified by size; when the dataset records an adler32 (the LTA's),
  the local file is compared with it, and a file that differs is removed and reported.
* **one overall progress** (:class:`DatasetProgress`: bytes done of total, files done,
  failed and skipped) through a callback, about every half second while bytes move;
* **failures per file**: a file that cannot be copied is one :class:`FileFailure` line, the
  others go on; the caller decides the exit code;
* **the local copy is a dataset**: :func:`get_dataset` writes ``<dir>/dataset.jsonl``
  (:data:`LOCAL_DATASET`) with one ``file://`` entry per file fetched (merged with what an
  earlier get into the same directory recorded), so ``gridlrt data list DIR/dataset.jsonl``
  and ``gridlrt data put DIR`` work on it;
* **LTA tarballs** (``unpack=True``): each verified ``.MS...tar`` is unpacked into a
  temporary directory beside it (unsafe members refused), the measurement set renamed into
  place, then the tarball removed.
* **measurement sets stored as directories** (entries of kind ``ms``, a source that is a
  directory, a local ``*.MS`` directory to put): the tree is listed on the source
  (:func:`list_tree`: one listing per directory), made as a temporary twin beside its final
  name (``.<name>.part-<hex>`` locally, ``<name>.part-<hex>`` on storage, which ``gridlrt
  data list`` leaves out), every file copied into it (verified, among the other copies),
  and once the twin's listing matches the source's (the same files with the same sizes; the
  total the dataset's size when it knows one) it is renamed to its final name - atomic
  locally and on WebDAV (a ``MOVE``), where what was there under that name is removed
  first. A killed transfer never leaves a partial measurement set under its final name; a
  rerun skips one there with the same number of files and total size and removes the
  twins killed runs left. An endpoint that cannot rename a directory gets no measurement
  set (one failure line), never a partial one. Progress counts the bytes of the tree's
  files; ``dataset.jsonl`` records the measurement set (its directory, its total size).

One ``get`` at a time per directory: a second one into the same directory is refused while
the first runs (an advisory lock, released even when the first is killed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from gridlrt.config import redact_url
from gridlrt.datasets.model import (
    Dataset,
    DatasetEntry,
    entry_for_url,
    is_dataset_file,
    read_dataset,
    write_dataset,
)
from gridlrt.errors import (
    GridlrtError,
    InputError,
    StorageError,
    StorageNotFound,
    StorageNotSupported,
)
from gridlrt.lofar_names import ms_name_in_archive
from gridlrt.storage import Storage
from gridlrt.storage.models import TransferResult
from gridlrt.storage.urls import (
    TEMP_MARKER,
    endpoint,
    is_temp_name,
    join,
    local_path,
    scheme_of,
    to_url,
)

#: the dataset file :func:`get_dataset` writes beside the data
LOCAL_DATASET: Final = "dataset.jsonl"
LOCK_NAME: Final = ".gridlrt-data.lock"
PROGRESS_INTERVAL: Final = 0.5

Action = Literal["copy", "skip"]
PlanKind = Literal["file", "tree"]


class TreeFile(BaseModel):
    """One file of a directory tree (a measurement set): its path inside, and its size."""

    path: str = Field(description="relative to the tree's top, '/'-separated")
    size: int


class TreeListing(BaseModel):
    """What a directory tree holds: its subdirectories (parents first) and its files."""

    directories: list[str] = Field(default_factory=list)
    files: list[TreeFile] = Field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)

    def summary(self) -> str:
        return f"{len(self.files)} files, {self.total} bytes"


class FilePlan(BaseModel):
    """One entry of a transfer: where from, where to, and whether it is copied or skipped.

    A measurement set directory is a ``tree``: ``tree`` lists its files (what is copied, one
    verified copy each), ``size`` is their total."""

    name: str
    src: str
    dst: str
    size: int | None = Field(default=None, description="expected bytes, when known")
    action: Action
    reason: str = Field(default="", description="why skipped, or why copied again")
    unpack: bool = Field(default=False, description="an LTA tarball to unpack once verified")
    kind: PlanKind = Field(default="file", description="tree: a directory (measurement set)")
    tree_files: int | None = Field(default=None, description="files in the tree")
    problem: str = Field(default="", description="why it cannot be copied (found in planning)")
    tree: TreeListing | None = Field(default=None, exclude=True, repr=False)


class TransferPlan(BaseModel):
    """What a get or put will do (what ``--dry-run`` shows)."""

    files: list[FilePlan]
    destination: str

    @property
    def to_copy(self) -> list[FilePlan]:
        return [f for f in self.files if f.action == "copy"]

    @property
    def to_skip(self) -> list[FilePlan]:
        return [f for f in self.files if f.action == "skip"]

    @property
    def bytes_to_copy(self) -> int:
        return sum(f.size or 0 for f in self.to_copy)

    @property
    def bytes_skipped(self) -> int:
        return sum(f.size or 0 for f in self.to_skip)


class DatasetProgress(BaseModel):
    """The running totals of a dataset transfer, sent to ``on_progress``."""

    files_total: int = Field(description="files to copy (skipped ones not counted)")
    files_done: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    bytes_total: int = Field(description="bytes to copy (0 when no size is known)")
    bytes_done: int = 0
    current: str = Field(default="", description="the file that just finished or failed")


class FileFailure(BaseModel):
    """One file that could not be copied, and why (one line)."""

    name: str
    src: str
    dst: str
    error: str

    def line(self) -> str:
        return f"{self.name}: {self.error}"


class TransferReport(BaseModel):
    """What a get or put did."""

    destination: str
    copied: list[str] = Field(default_factory=list, description="names copied")
    skipped: list[str] = Field(default_factory=list, description="names already there")
    failed: list[FileFailure] = Field(default_factory=list)
    unpacked: list[str] = Field(default_factory=list, description="measurement sets unpacked")
    bytes_copied: int = 0
    bytes_skipped: int = 0
    seconds: float = 0.0
    stale_parts_removed: int = Field(default=0, description=".part files of killed copies")
    dataset_file: str | None = Field(default=None, description="the dataset file written")
    dataset: Dataset = Field(description="the copies, as a dataset (destination URLs)")

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def rate(self) -> float:
        """Bytes copied per second."""
        return self.bytes_copied / self.seconds if self.seconds > 0 else 0.0


ProgressCallback = Callable[[DatasetProgress], None]
FailureCallback = Callable[[FileFailure], None]


# --- checksums -------------------------------------------------------------------------------


def adler32_of(entry: DatasetEntry) -> str | None:
    """The hex adler32 the entry records (``adler32:0a1b2c3d``), else None."""
    if not entry.checksum:
        return None
    algorithm, _, value = entry.checksum.partition(":")
    if algorithm.strip().lower() != "adler32" or not value.strip():
        return None
    return value.strip().lower()


def _same_checksum(a: str, b: str) -> bool:
    """Hex checksums compared case- and leading-zero-insensitively."""
    try:
        return int(a, 16) == int(b, 16)
    except ValueError:
        return a.strip().lower() == b.strip().lower()


def _checksum_matches(storage: Storage, url: str, expected: str) -> tuple[bool, str | None]:
    """(True, sum) when ``url``'s adler32 is ``expected`` or cannot be computed here (None)."""
    actual = storage.checksum(url)
    if actual is None:
        return True, None
    return _same_checksum(actual, expected), actual


# --- directory trees (measurement sets) ------------------------------------------------------

#: listings in flight at once while walking one tree
TREE_JOBS: Final = 4


def list_tree(storage: Storage, url: str) -> TreeListing:
    """The subdirectories and files under directory ``url``, walked level by level: one
    listing per directory (:meth:`Storage.scandir`), a level's directories in parallel.
    Temporaries (``*.part-<hex>``) are left out, as ``gridlrt data list`` leaves them out of
    a measurement set's size."""
    from gridlrt.datasets.sources import scan_level

    listing = TreeListing()
    with ThreadPoolExecutor(TREE_JOBS, thread_name_prefix="gridlrt-tree") as pool:
        level = [""]
        while level:
            scanned = scan_level(storage, [join(url, rel) if rel else url for rel in level], pool)
            below = []
            for rel, (_, names) in zip(level, scanned, strict=True):
                for name, info in names:
                    child = f"{rel}/{name}" if rel else name
                    if info.is_dir:
                        listing.directories.append(child)
                        below.append(child)
                    elif not is_temp_name(name):
                        listing.files.append(TreeFile(path=child, size=info.size))
            level = below
    return listing


def local_tree(root: Path) -> TreeListing:
    """:func:`list_tree` of a local directory (``os.walk``; temporaries left out)."""
    listing = TreeListing()
    for here, subdirs, names in os.walk(root):
        subdirs.sort()
        rel = Path(here).relative_to(root)
        listing.directories += [(rel / d).as_posix() for d in subdirs]
        for name in sorted(names):
            if not is_temp_name(name):
                size = (Path(here) / name).stat().st_size
                listing.files.append(TreeFile(path=(rel / name).as_posix(), size=size))
    return listing


def _same_tree(there: TreeListing, wanted: TreeListing) -> bool:
    """What resume takes as "already there": the same number of files and the same total."""
    return len(there.files) == len(wanted.files) and there.total == wanted.total


def _tree_item(item: FilePlan, listing: TreeListing, known: int | None) -> FilePlan:
    """``item`` as a tree of ``listing``; a problem when the dataset says another size."""
    update: dict[str, object] = {
        "kind": "tree", "tree": listing, "tree_files": len(listing.files), "size": listing.total
    }  # fmt: skip
    if known is not None and known != listing.total:
        update["problem"] = update["reason"] = (
            f"the measurement set holds {listing.summary()}, but the dataset says {known} "
            "bytes (list it again: gridlrt data list)"
        )
    return item.model_copy(update=update)


# --- plans -----------------------------------------------------------------------------------


def _names(dataset: Dataset, where: str) -> list[str]:
    names = [e.name or e.url.rstrip("/").rsplit("/", 1)[-1] for e in dataset.entries]
    seen: dict[str, str] = {}
    for name, entry in zip(names, dataset.entries, strict=True):
        if not name or name in (".", "..") or "/" in name:
            raise InputError(f"{redact_url(entry.url)}: no file name to copy it under")
        if is_temp_name(name) or name in (LOCAL_DATASET, LOCK_NAME):
            raise InputError(
                f"{redact_url(entry.url)}: {name!r} is a name gridlrt keeps for itself"
            )
        if name in seen:
            raise InputError(
                f"two entries are named {name} ({redact_url(seen[name])} and "
                f"{redact_url(entry.url)}): they would overwrite each other in {where}"
            )
        seen[name] = entry.url
    return names


def _parallel_map(
    func: Callable[[FilePlan], FilePlan], items: Sequence[FilePlan], parallel: int
) -> list[FilePlan]:
    if len(items) < 2:
        return [func(i) for i in items]
    with ThreadPoolExecutor(min(parallel, len(items)), thread_name_prefix="gridlrt-plan") as pool:
        return list(pool.map(func, items))


def local_directory(to_dir: str | os.PathLike[str]) -> Path:
    """The local directory ``to_dir`` names (a path or ``file://`` URL), checked: not a
    file, not a remote URL."""
    text = os.fspath(to_dir)
    if "://" in text and not text.lower().startswith("file://"):
        raise InputError(
            f"--to {redact_url(text)}: data get copies into a local directory "
            "(to copy between storage endpoints use gridlrt storage copy)"
        )
    path = local_path(to_url(text))
    assert path is not None
    if path.exists() and not path.is_dir():
        raise InputError(f"--to {text}: a file, not a directory")
    return path


def _checked_get(dataset: Dataset, directory: Path) -> list[str]:
    """The local names of ``dataset``'s entries; one-line errors before anything moves."""
    if not dataset.entries:
        raise InputError(f"{dataset.source or dataset.name}: the dataset has no files to get")
    names = _names(dataset, str(directory))
    for entry in dataset.entries:
        scheme_of(entry.url)
    return names


def plan_get(
    dataset: Dataset,
    to_dir: str | os.PathLike[str],
    *,
    storage: Storage,
    resume: bool = True,
    checksums: bool = True,
    unpack: bool = False,
    parallel: int = 4,
) -> TransferPlan:
    """What :func:`get_dataset` would copy into ``to_dir`` and what it would skip.

    Looks only: at the local files (their sizes, their adler32 when the dataset records
    one and ``checksums``), and at the sources' sizes when the dataset does not know them
    (one stat each, ``parallel`` at a time).
    """
    directory = local_directory(to_dir)
    names = _checked_get(dataset, directory)

    def decide(item: FilePlan) -> FilePlan:
        entry = by_name[item.name]
        target = directory / item.name
        if item.unpack:
            ms = directory / ms_name_in_archive(item.name)
            if resume and ms.is_dir():
                return item.model_copy(update={"action": "skip", "reason": f"unpacked: {ms.name}"})
        if entry.kind == "ms":
            return decide_tree(item, entry, target)
        size = item.size
        if size is None:  # for the totals (and the ETA), and to compare with what is there
            try:
                info = storage.stat(item.src)
            except StorageError:
                return item  # the copy reports it
            if info.is_dir:
                return decide_tree(item, entry, target)
            size = info.size
            item = item.model_copy(update={"size": size})
        if not resume or not target.is_file():
            return item
        local = target.stat().st_size
        if local != size:
            return item.model_copy(
                update={"size": size, "reason": f"there with {local} of {size} bytes"}
            )
        expected = adler32_of(entry) if checksums else None
        if expected is not None:
            same, actual = _checksum_matches(storage, item.dst, expected)
            if not same:
                return item.model_copy(
                    update={"size": size, "reason": f"there with adler32 {actual}, not {expected}"}
                )
        how = "size and adler32" if expected is not None else "size"
        return item.model_copy(
            update={"size": size, "action": "skip", "reason": f"there, same {how}"}
        )

    def decide_tree(item: FilePlan, entry: DatasetEntry, target: Path) -> FilePlan:
        try:
            listing = list_tree(storage, item.src)
        except StorageError as err:
            return item.model_copy(update={"kind": "tree", "problem": str(err)})
        item = _tree_item(item, listing, entry.size)
        if item.problem or not resume or not (target.exists() or target.is_symlink()):
            return item
        if not target.is_dir():
            return item.model_copy(update={"reason": "there as a file, not a directory"})
        there = local_tree(target)
        if not _same_tree(there, listing):
            why = f"there with {there.summary()}, not {listing.summary()}"
            return item.model_copy(update={"reason": why})
        why = f"there, same number of files ({len(listing.files)}) and size"
        return item.model_copy(update={"action": "skip", "reason": why})

    by_name = dict(zip(names, dataset.entries, strict=True))
    items = [
        FilePlan(
            name=name,
            src=to_url(entry.url),
            dst=to_url(directory / name),
            size=entry.size,
            action="copy",
            unpack=unpack and entry.kind == "ms-tarball",
        )
        for name, entry in by_name.items()
    ]
    return TransferPlan(files=_parallel_map(decide, items, parallel), destination=str(directory))


def _local_entries(source: str | os.PathLike[str] | Dataset) -> Dataset:
    """A dataset of local files: a dataset as is; a directory's ``dataset.jsonl`` (its entries
    found in that directory) or else its files; a dataset or list file."""
    if isinstance(source, Dataset):
        return source
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        recorded = path / LOCAL_DATASET
        if recorded.is_file() and is_dataset_file(recorded):
            dataset = read_dataset(recorded)
            moved = [
                e.model_copy(update={"url": to_url(path / (e.name or Path(e.url).name))})
                for e in dataset.entries
            ]
            return dataset.model_copy(update={"entries": moved, "source": str(path)})
        files = sorted(
            p
            for p in path.iterdir()
            if not p.name.startswith(".") and not is_temp_name(p.name) and p.name != LOCK_NAME
        )
        from gridlrt.datasets.sources import is_measurement_set

        entries = []
        for p in files:
            if p.is_dir() and not is_measurement_set(p.name):
                raise InputError(
                    f"{p}: a directory that is not a measurement set (*.MS); data put uploads "
                    "files and measurement sets - give a dataset of the files to put"
                )
            size = local_tree(p).total if p.is_dir() else p.stat().st_size
            entries.append(entry_for_url(to_url(p.absolute()), size=size))
        if not entries:
            raise InputError(f"{path}: no files to put")
        return Dataset(name=path.name, source=str(path), entries=entries)
    from gridlrt.datasets.sources import load_dataset

    return load_dataset(os.fspath(source))


def plan_put(
    source: str | os.PathLike[str] | Dataset,
    to_url_: str,
    *,
    storage: Storage,
    resume: bool = True,
    checksums: bool = True,
    parallel: int = 4,
) -> TransferPlan:
    """What :func:`put_dataset` would upload to the directory ``to_url_`` and what it would
    skip (already there with the same size, and adler32 where the endpoint answers one)."""
    dataset = _local_entries(source)
    if not dataset.entries:
        raise InputError(f"{dataset.source or dataset.name}: the dataset has no files to put")
    base = to_url(to_url_).rstrip("/")
    scheme_of(base)
    names = _names(dataset, redact_url(base))
    for entry in dataset.entries:
        if local_path(to_url(entry.url)) is None:
            raise InputError(
                f"{redact_url(entry.url)}: not a local file; data put uploads local files "
                "(gridlrt data get fetches remote ones first)"
            )
    try:
        present = set(storage.listdir(base)) if resume else set()
    except StorageNotFound:
        present = set()
    by_name = dict(zip(names, dataset.entries, strict=True))

    def decide(item: FilePlan) -> FilePlan:
        local = local_path(item.src)
        assert local is not None
        if local.is_dir():
            return decide_tree(item, local)
        if item.name not in present:
            return item
        try:
            size = local.stat().st_size
            remote = storage.stat(item.dst)
        except (OSError, StorageError):
            return item
        if remote.is_dir or remote.size != size:
            return item.model_copy(
                update={"size": size, "reason": f"there with {remote.size} of {size} bytes"}
            )
        expected = adler32_of(by_name[item.name]) if checksums else None
        if expected is not None:
            same, actual = _checksum_matches(storage, item.dst, expected)
            if not same:
                return item.model_copy(
                    update={"size": size, "reason": f"there with adler32 {actual}, not {expected}"}
                )
        return item.model_copy(
            update={"size": size, "action": "skip", "reason": "there, same size"}
        )

    def decide_tree(item: FilePlan, local: Path) -> FilePlan:
        try:
            listing = local_tree(local)
        except OSError as exc:
            return item.model_copy(update={"kind": "tree", "problem": f"cannot list it: {exc}"})
        item = _tree_item(item, listing, None)
        if item.name not in present:
            return item
        try:
            there = list_tree(storage, item.dst)
        except StorageError:  # a file of that name, or unreadable: replaced by the upload
            return item.model_copy(update={"reason": "there, but not as a directory"})
        if not _same_tree(there, listing):
            why = f"there with {there.summary()}, not {listing.summary()}"
            return item.model_copy(update={"reason": why})
        why = f"there, same number of files ({len(listing.files)}) and size"
        return item.model_copy(update={"action": "skip", "reason": why})

    items = []
    for name, entry in by_name.items():
        local = local_path(to_url(entry.url))
        assert local is not None
        try:
            size: int | None = None if local.is_dir() else local.stat().st_size
        except OSError:
            size = entry.size
        items.append(
            FilePlan(
                name=name, src=to_url(entry.url), dst=join(base, name), size=size, action="copy"
            )
        )
    return TransferPlan(files=_parallel_map(decide, items, parallel), destination=redact_url(base))


# --- running a plan --------------------------------------------------------------------------


class _Tree:
    """A directory tree being copied: its temporary twin, the files left, the first error."""

    def __init__(self, item: FilePlan, part: str) -> None:
        assert item.tree is not None
        self.item, self.listing, self.part = item, item.tree, part
        self.left = len(item.tree.files)
        self.results: list[TransferResult] = []
        self.futures: list[Future[Any]] = []
        self.error = ""
        self.closed = False
        self.started = time.monotonic()

    @property
    def bytes_done(self) -> int:
        return sum(r.size for r in self.results)


_Submit = Callable[..., "Future[Any]"]


class _Run:
    """Copies a plan's files, ``parallel`` at a time, reporting progress and failures.

    A tree (a measurement set directory) is made as a temporary twin beside its final name
    (``.<name>.part-<hex>`` when ``hidden_parts``, else ``<name>.part-<hex>``) with its
    directories, its files are copied one verified copy each among the other copies, and once
    all are there and its listing matches the source's it is renamed to its final name."""

    def __init__(
        self,
        plan: TransferPlan,
        storage: Storage,
        parallel: int,
        on_progress: ProgressCallback | None,
        on_failure: FailureCallback | None,
        after_copy: Callable[[FilePlan, TransferResult], None] | None,
        watch_dir: Path | None,
        *,
        hidden_parts: bool = False,
    ) -> None:
        self.plan, self.storage, self.parallel = plan, storage, parallel
        self.on_progress, self.on_failure, self.after_copy = on_progress, on_failure, after_copy
        self.watch_dir, self.hidden_parts = watch_dir, hidden_parts
        todo = plan.to_copy
        self.progress = DatasetProgress(
            files_total=len(todo),
            files_skipped=len(plan.to_skip),
            bytes_total=sum(f.size or 0 for f in todo),
        )
        self.results: dict[str, TransferResult] = {}
        self.failures: list[FileFailure] = []
        self.trees: dict[str, _Tree] = {}
        self._moving: set[str] = set()
        self._moving_files: set[Path] = set()  # local files of trees being written
        self._lock = threading.Lock()
        self._shown = 0
        self._reported = 0.0

    def _report(self, current: str = "") -> None:
        self._reported = time.monotonic()
        if self.on_progress is None:
            return
        moving = self._bytes_moving()
        done = sum(r.size for r in self.results.values())
        done += sum(t.bytes_done for t in self.trees.values() if not t.closed)
        self._shown = max(self._shown, done + moving)  # never backwards
        self.progress.bytes_done = self._shown
        self.progress.bytes_total = max(self.progress.bytes_total, self._shown)
        self.progress.current = current
        self.on_progress(self.progress.model_copy())

    def _bytes_moving(self) -> int:
        """Bytes in the local files being written now: the ``.part`` files of files, the
        files of trees."""
        with self._lock:
            moving, files = set(self._moving), set(self._moving_files)
        total = 0
        for path in files:
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        if self.watch_dir is None or not moving:
            return total
        with contextlib.suppress(OSError), os.scandir(self.watch_dir) as listing:
            for item in listing:
                head = item.name.rpartition(TEMP_MARKER)[0]
                if head in moving and is_temp_name(item.name):
                    with contextlib.suppress(OSError):
                        total += item.stat().st_size
        return total

    def _copy(self, item: FilePlan) -> TransferResult:
        with self._lock:
            self._moving.add(item.name)
        try:
            result = self.storage.copy(item.src, item.dst, clean_parts=False)
            if self.after_copy is not None:
                self.after_copy(item, result)
            return result
        finally:
            with self._lock:
                self._moving.discard(item.name)

    # -- trees ------------------------------------------------------------------------------

    def _start_tree(self, item: FilePlan) -> str:
        """Make the tree's temporary twin and its directories; its URL."""
        assert item.tree is not None
        parent, name = item.dst.rstrip("/").rsplit("/", 1)
        hidden = "." if self.hidden_parts else ""
        part = f"{parent}/{hidden}{name}{TEMP_MARKER}{secrets.token_hex(4)}"
        try:
            self.storage.mkdir(part, parents=True)
            for rel in item.tree.directories:  # parents first
                self.storage.mkdir(join(part, rel), parents=False)
        except BaseException:
            with contextlib.suppress(StorageError):
                self.storage.delete(part, recursive=True, missing_ok=True)
            raise
        return part

    def _copy_tree_file(self, tree: _Tree, file: TreeFile) -> TransferResult:
        """One file of a tree into its twin (written in place there: the twin is the
        temporary), verified; its size must be the listed one."""
        dst = join(tree.part, file.path)
        local = local_path(dst)
        if local is not None:
            with self._lock:
                self._moving_files.add(local)
        try:
            result = self.storage.copy(
                join(tree.item.src, file.path), dst, atomic=False, clean_parts=False
            )
        finally:
            if local is not None:
                with self._lock:
                    self._moving_files.discard(local)
        if result.size != file.size:
            raise StorageError(
                f"{result.size} bytes, but {file.size} when listed (changed meanwhile?)"
            )
        return result

    def _finish_tree(self, tree: _Tree) -> TransferResult:
        """Check the twin against the source's listing, then rename it to the final name
        (what was there under that name is removed first)."""
        item = tree.item
        there = list_tree(self.storage, tree.part)
        files = sorted((f.path, f.size) for f in there.files)
        if files != sorted((f.path, f.size) for f in tree.listing.files):
            raise GridlrtError(
                f"the copy holds {there.summary()}, the source {tree.listing.summary()}; "
                "not put in place"
            )
        self.storage.delete(item.dst, recursive=True, missing_ok=True)
        try:
            self.storage.rename(tree.part, item.dst)
        except StorageNotSupported:
            raise GridlrtError(
                f"{endpoint(item.dst)} cannot rename a directory, so a measurement set cannot "
                "be put in place whole there; pack it as a tarball and put that"
            ) from None
        results = tree.results
        return TransferResult(
            src=redact_url(item.src),
            dst=redact_url(item.dst),
            size=tree.listing.total,
            seconds=time.monotonic() - tree.started,
            attempts=max((r.attempts for r in results), default=1),
            verified="adler32" if results and all(r.verified == "adler32" for r in results)
            else "size",
            atomic=True,
            note=f"a directory of {len(tree.listing.files)} files",
        )  # fmt: skip

    def _discard(self, tree: _Tree) -> None:
        """Remove a failed tree's twin (best effort; a rerun removes what stays)."""
        with contextlib.suppress(StorageError):
            self.storage.delete(tree.part, recursive=True, missing_ok=True)

    def _tree_step(self, tree: _Tree, submit: _Submit) -> set[Future[Any]]:
        """Once every file of ``tree`` ended: fail it, or submit its finish."""
        if tree.left > 0 or tree.closed:
            return set()
        tree.closed = True
        if tree.error:
            self._discard(tree)
            self._fail(tree.item, tree.error)
            return set()
        return {submit("finish", tree.item, self._finish_tree, tree)}

    # -- the loop ---------------------------------------------------------------------------

    def _fail(self, item: FilePlan, error: str) -> None:
        failure = _failure(item, error)
        self.failures.append(failure)
        self.progress.files_failed += 1
        if self.on_failure is not None:
            self.on_failure(failure)
        self._report(item.name)

    def _done(self, item: FilePlan, result: TransferResult) -> None:
        self.results[item.name] = result
        self.progress.files_done += 1
        self._report(item.name)

    def _ended(
        self, future: Future[Any], kind: str, item: FilePlan, file: TreeFile | None,
        submit: _Submit,
    ) -> set[Future[Any]]:  # fmt: skip
        """Handle one finished task; the tasks it submits."""
        tree = self.trees.get(item.name)
        if future.cancelled():  # a file of a tree that failed already
            assert tree is not None
            tree.left -= 1
            return self._tree_step(tree, submit)
        try:
            value = future.result()
        except GridlrtError as err:
            if kind == "part":
                assert tree is not None and file is not None
                if not tree.error:
                    tree.error = f"{file.path}: {err}"
                    for other in tree.futures:
                        other.cancel()
                tree.left -= 1
                return self._tree_step(tree, submit)
            if kind == "finish":
                assert tree is not None
                self._discard(tree)
            self._fail(item, str(err))
            return set()
        if kind == "start":
            assert item.tree is not None
            tree = self.trees[item.name] = _Tree(item, value)
            tree.futures = [
                submit("part", item, self._copy_tree_file, tree, f, file=f) for f in item.tree.files
            ]
            return {*tree.futures, *self._tree_step(tree, submit)}
        if kind == "part":
            assert tree is not None
            tree.results.append(value)
            tree.left -= 1
            return self._tree_step(tree, submit)
        self._done(item, value)  # a file, or a tree in place
        return set()

    def run(self) -> None:
        todo = self.plan.to_copy
        self._report()
        if not todo:
            return
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="gridlrt-data") as pool:
            tasks: dict[Future[Any], tuple[str, FilePlan, TreeFile | None]] = {}

            def submit(
                kind: str, item: FilePlan, fn: Callable[..., Any], *args: Any,
                file: TreeFile | None = None,
            ) -> Future[Any]:  # fmt: skip
                future = pool.submit(fn, *args)
                tasks[future] = (kind, item, file)
                return future

            for item in todo:
                if item.problem:
                    self._fail(item, item.problem)
                elif item.kind == "tree":
                    submit("start", item, self._start_tree, item)
                else:
                    submit("file", item, self._copy, item)
            pending = set(tasks)
            try:
                while pending:
                    finished, pending = wait(
                        pending, timeout=PROGRESS_INTERVAL, return_when=FIRST_COMPLETED
                    )
                    for future in finished:
                        kind, item, file = tasks.pop(future)
                        pending |= self._ended(future, kind, item, file, submit)
                    if time.monotonic() - self._reported >= PROGRESS_INTERVAL:
                        self._report()
            except BaseException:  # Ctrl-C: stop what moves, start nothing more
                for other in tasks:
                    other.cancel()
                self.storage.cancel()
                raise


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``directory`` (refused at once when held elsewhere)."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_NAME
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"{directory}: another gridlrt data get is writing into it; wait for it to "
                "end (or choose another --to)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                lock.unlink()


def _remove_local_parts(directory: Path, names: set[str]) -> int:
    """Remove ``<name>.part-<hex>`` files, ``.<name>.part-<hex>`` directories (measurement
    sets being fetched) and ``.<name>.unpack-*`` directories killed copies and unpacks left
    in ``directory`` for ``names``; how many."""
    removed = 0
    for item in directory.iterdir():
        head = item.name.rpartition(TEMP_MARKER)[0]
        hidden = item.name.startswith(".")
        unpack_of = item.name[1:].rpartition(".unpack-")[0] if hidden else ""
        tree_of = head[1:] if hidden and is_temp_name(item.name) else ""
        if is_temp_name(item.name) and head in names and item.is_file():
            item.unlink(missing_ok=True)
            removed += 1
        elif (unpack_of in names or tree_of in names) and item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
            removed += 1
    return removed


def _failure(item: FilePlan, error: str) -> FileFailure:
    return FileFailure(
        name=item.name, src=redact_url(item.src), dst=redact_url(item.dst), error=error
    )


def _unpack(tarball: Path) -> Path:
    """Unpack the LTA tarball beside itself: into ``.<name>.unpack-<pid>``, the measurement
    set renamed into place, then the tarball removed. Returns the measurement set."""
    from gridlrt.sandbox.extract import extract_tarball

    expected = tarball.parent / ms_name_in_archive(tarball.name)
    staging = tarball.parent / f".{tarball.name}.unpack-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            extract_tarball(tarball, staging)
        except OSError as exc:
            raise GridlrtError(f"cannot unpack {tarball.name}: {exc.strerror or exc}") from None
        found = [p for p in staging.iterdir() if p.is_dir() and p.suffix.upper() == ".MS"]
        if (staging / "table.dat").is_file():  # the tar held the MS contents, not the directory
            found = [staging]
        if len(found) != 1:
            raise InputError(f"{tarball.name}: holds no single measurement set; kept as is")
        if expected.exists():
            shutil.rmtree(expected)
        found[0].rename(expected)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tarball.unlink()
    return expected


def _local_record(directory: Path) -> dict[str, DatasetEntry]:
    """The entries an earlier get recorded in ``directory``, by name (files still there)."""
    path = directory / LOCAL_DATASET
    if not path.is_file():
        return {}
    try:
        dataset = read_dataset(path)
    except InputError:
        return {}
    return {e.name: e for e in dataset.entries if (directory / e.name).exists()}


def get_dataset(
    dataset: Dataset,
    to_dir: str | os.PathLike[str],
    *,
    storage: Storage,
    parallel: int = 4,
    resume: bool = True,
    checksums: bool = True,
    unpack: bool = False,
    on_progress: ProgressCallback | None = None,
    on_failure: FailureCallback | None = None,
    write_local_dataset: bool = True,
) -> TransferReport:
    """Fetch every file of ``dataset`` into the local directory ``to_dir`` (created).

    :param parallel: copies in flight at once.
    :param resume: skip files already there with the right size (and adler32, when the
        dataset records one and ``checksums``); False copies everything again.
    :param checksums: compare local files with the dataset's adler32 where it records one.
    :param unpack: unpack LTA tarballs (``*.MS*.tar``) once verified; the tarball goes.
    :param on_progress: gets the running totals (:class:`DatasetProgress`).
    :param on_failure: gets each failed file as it fails.
    :param write_local_dataset: write ``<to_dir>/dataset.jsonl`` of what is there.

    Failed files are in the report's ``failed`` (the others are copied); nothing raises
    for them. Input errors (an empty dataset, two entries with one name, ``to_dir`` a file)
    raise :class:`InputError` before anything moves.
    """
    if parallel < 1:
        raise InputError(f"parallel must be at least 1, not {parallel}")
    directory = local_directory(to_dir)
    _checked_get(dataset, directory)
    started = time.monotonic()
    with _directory_lock(directory):
        plan = plan_get(
            dataset, directory, storage=storage, resume=resume, checksums=checksums,
            unpack=unpack, parallel=parallel,
        )  # fmt: skip
        entries = {f.name: e for f, e in zip(plan.files, dataset.entries, strict=True)}
        unpacked: dict[str, Path] = {}
        lock = threading.Lock()

        def after_copy(item: FilePlan, result: TransferResult) -> None:
            expected = adler32_of(entries[item.name]) if checksums else None
            if expected is not None:
                actual = result.checksum if result.verified == "adler32" else None
                if actual is None:
                    actual = storage.checksum(item.dst)
                if actual is not None and not _same_checksum(actual, expected):
                    storage.delete(item.dst, missing_ok=True)
                    raise InputError(
                        f"adler32 {actual}, but the dataset says {expected} (the copy is "
                        "removed; the source itself differs from the dataset)"
                    )
            if item.unpack:
                local = local_path(item.dst)
                assert local is not None
                ms = _unpack(local)
                with lock:
                    unpacked[item.name] = ms

        # what killed gets left goes first: a measurement set's twin may be large
        stale = _remove_local_parts(directory, {f.name for f in plan.files})
        run = _Run(
            plan, storage, parallel, on_progress, on_failure, after_copy, directory,
            hidden_parts=True,
        )  # fmt: skip
        try:
            run.run()
            for item in plan.to_skip:  # verified tarballs an interrupted get did not unpack
                tarball = directory / item.name
                if item.unpack and tarball.is_file():
                    try:
                        unpacked[item.name] = _unpack(tarball)
                    except GridlrtError as err:
                        run.failures.append(_failure(item, str(err)))
        finally:
            stale += _remove_local_parts(directory, {f.name for f in plan.files})
        report = TransferReport(
            destination=str(directory),
            copied=[f.name for f in plan.to_copy if f.name in run.results],
            skipped=[f.name for f in plan.to_skip],
            failed=run.failures,
            unpacked=[p.name for p in unpacked.values()],
            bytes_copied=sum(r.size for r in run.results.values()),
            bytes_skipped=plan.bytes_skipped,
            seconds=time.monotonic() - started,
            stale_parts_removed=stale,
            dataset=_got_dataset(dataset, plan, run.results, unpacked, directory),
        )
        if write_local_dataset:
            report.dataset_file = str(_write_local_dataset(directory, report.dataset))
    return report


def _got_dataset(
    dataset: Dataset,
    plan: TransferPlan,
    results: dict[str, TransferResult],
    unpacked: dict[str, Path],
    directory: Path,
) -> Dataset:
    """The files now in ``directory`` (copied or skipped) as ``file://`` entries."""
    recorded = _local_record(directory)
    entries = []
    for item, entry in zip(plan.files, dataset.entries, strict=True):
        if item.action == "copy" and item.name not in results:
            continue
        update: dict[str, object] = {"url": item.dst, "name": item.name, "site": None}
        if item.kind == "tree":
            update["kind"] = "ms"
        result = results.get(item.name)
        if result is not None:
            update["size"] = result.size
            if result.checksum:
                update["checksum"] = f"adler32:{result.checksum}"
        elif item.size is not None:
            update["size"] = item.size
        local = entry.model_copy(update=update)
        local.__pydantic_extra__ = {**(entry.model_extra or {}), "copied_from": item.src}
        ms_path = unpacked.get(item.name)
        if ms_path is None and item.unpack and item.action == "skip":
            ms_path = directory / ms_name_in_archive(item.name)
        if ms_path is not None:
            previous = recorded.get(ms_path.name)
            local = local.model_copy(
                update={"url": to_url(ms_path), "name": ms_path.name, "kind": "ms"}
            )
            extra = {**(local.model_extra or {}), "unpacked_from": item.name}
            if previous is not None:
                extra = {**(previous.model_extra or {}), **extra}
            local.__pydantic_extra__ = extra
        entries.append(local)
    return Dataset(
        name=dataset.name or directory.name,
        source=dataset.source,
        entries=entries,
    )


def _write_local_dataset(directory: Path, got: Dataset) -> Path:
    """``<directory>/dataset.jsonl``: what an earlier get recorded (files still there, not
    fetched again now), then this get's files."""
    now = {e.name for e in got.entries}
    kept = [e for name, e in _local_record(directory).items() if name not in now]
    merged = got.model_copy(update={"entries": [*kept, *got.entries], "created": time.time()})
    return write_dataset(directory / LOCAL_DATASET, merged)


def put_dataset(
    source: str | os.PathLike[str] | Dataset,
    to_url_: str,
    *,
    storage: Storage,
    parallel: int = 4,
    resume: bool = True,
    checksums: bool = True,
    on_progress: ProgressCallback | None = None,
    on_failure: FailureCallback | None = None,
) -> TransferReport:
    """Upload local files into the storage directory ``to_url_``: a directory (its
    ``dataset.jsonl`` when it has one, else its files and ``*.MS`` directories), a dataset
    file of ``file://`` entries, or a :class:`Dataset` of them. Resume, progress and failures as
    :func:`get_dataset`; the report's dataset lists the uploaded files at their new URLs."""
    if parallel < 1:
        raise InputError(f"parallel must be at least 1, not {parallel}")
    started = time.monotonic()
    dataset = _local_entries(source)
    plan = plan_put(
        dataset, to_url_, storage=storage, resume=resume, checksums=checksums, parallel=parallel
    )
    run = _Run(plan, storage, parallel, on_progress, on_failure, None, None, hidden_parts=False)
    run.run()
    landed = {f.name for f in plan.files if f.action == "skip" or f.name in run.results}
    stale = _remove_remote_parts(storage, to_url(to_url_).rstrip("/"), landed)
    entries = []
    for item, entry in zip(plan.files, dataset.entries, strict=True):
        if item.name not in landed:
            continue
        result = run.results.get(item.name)
        update: dict[str, object] = {"url": item.dst, "name": item.name}
        update["size"] = result.size if result is not None else item.size
        if result is not None and result.checksum:
            update["checksum"] = f"adler32:{result.checksum}"
        fields = {**entry.model_dump(exclude_none=True), **update}
        entries.append(entry_for_url(item.dst, **{k: v for k, v in fields.items() if k != "url"}))
    return TransferReport(
        destination=plan.destination,
        copied=[f.name for f in plan.to_copy if f.name in run.results],
        skipped=[f.name for f in plan.to_skip],
        failed=run.failures,
        bytes_copied=sum(r.size for r in run.results.values()),
        bytes_skipped=plan.bytes_skipped,
        seconds=time.monotonic() - started,
        stale_parts_removed=stale,
        dataset=Dataset(name=dataset.name, source=dataset.source, entries=entries),
    )


def _remove_remote_parts(storage: Storage, base: str, names: set[str]) -> int:
    """Remove the ``<name>.part-<hex>`` files (and measurement set directories) killed
    uploads left in ``base`` for ``names`` (one listing; best effort)."""
    if not names:
        return 0
    try:
        listed = storage.listdir(base)
    except StorageError:
        return 0
    removed = 0
    for name in listed:
        if is_temp_name(name) and name.rpartition(TEMP_MARKER)[0] in names:
            with contextlib.suppress(StorageError):
                removed += storage.delete(join(base, name), recursive=True, missing_ok=True)
    return removed
