"""Where datasets come from: a ``SOURCE`` argument of ``gridlrt data`` made into a
:class:`~gridlrt.datasets.model.Dataset`.

:func:`load_dataset` takes what a user types:

* a dataset file (``.jsonl`` / ``.csv`` with the ``gridlrt-dataset/1`` header) - read as is;
* a list file (an ``srm.txt`` from the LTA, or any list of URLs, one per line) - one entry per
  line, with what the file names say (observation, SAP, subband); no storage is touched;
* a storage directory URL (``file://``, ``dav(s)://``, ``http(s)://``, ``srm://``,
  ``gsiftp://``, ``root://``) - listed through :class:`~gridlrt.storage.Storage`: one entry
  per file (an LTA tarball, a measurement set, anything else) with its size, from one
  listing request per directory where the protocol gives sizes with names (WebDAV, file,
  SRM, GridFTP), else a stat per file, in parallel. A measurement set *directory* is one
  entry whose size is the sum of its files (its tree is walked). Half-written uploads
  (``<name>.part-<hex>``) are left out; subdirectories are left out unless ``recursive``.
  With ``checksums`` each file's adler32 is asked of the endpoint too (a request per file,
  in parallel; endpoints that do not compute checksums, such as plain WebDAV servers, are
  asked once). A URL naming a file gives a one-entry dataset;
* ``pool:RUN/STAGE`` - the outputs of a pipeline stage, from the finished (done) tokens in
  the pool: one entry per output URL, with size and checksum from the tokens' upload
  records (no storage is touched) and who made it (``pipeline``, ``stage``, ``step``,
  ``token``, ``parents``: the parent tokens it was made from); observation and subband from
  the file name or else from the token's group. Tokens of the stage that are not done are
  counted in a note.

The places that need more than a path (storage, the pool) come from a :class:`SourceContext`
(``load_dataset(source, context)``); without one, a default :class:`Storage` is made and a
``pool:`` source opens the pool of the default settings. Whatever is worth telling the user
(what was left out, checksums the endpoint does not give) is appended to ``context.notes``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gridlrt.config import redact_url
from gridlrt.datasets.model import (
    Dataset,
    DatasetEntry,
    entry_for_url,
    is_dataset_file,
    read_dataset,
)
from gridlrt.errors import InputError, StorageNotSupported
from gridlrt.staging.ranges import format_ranges
from gridlrt.tokens.create import read_inputs

if TYPE_CHECKING:
    from gridlrt.storage import StatInfo, Storage
    from gridlrt.tokens import Token, TokenPool

log = logging.getLogger(__name__)

#: schemes a SOURCE may be a storage URL of (what gridlrt.storage passes to gfal2)
URL_SOURCE: Final = re.compile(r"(file|davs?|https?|srm|gsiftp|x?root)://", re.IGNORECASE)
POOL_PREFIX: Final = "pool:"
DEFAULT_JOBS: Final = 8
CHECKSUM_ALGORITHM: Final = "adler32"


@dataclass
class SourceContext:
    """What URL and pool sources need, made only when a source needs it.

    ``storage`` and ``pool``: an object, or a function that makes one (the pool made by a
    function is closed after use; one passed in is left open). ``checksums``: also ask the
    endpoint for each file's adler32. ``recursive``: also list subdirectories. ``jobs``:
    requests in flight at once. ``notes``: what the loaders want the user to know."""

    storage: Storage | Callable[[], Storage] | None = None
    pool: TokenPool | Callable[[], TokenPool] | None = None
    checksums: bool = False
    recursive: bool = False
    jobs: int = DEFAULT_JOBS
    notes: list[str] = field(default_factory=list)
    _storage: Storage | None = field(default=None, init=False, repr=False)

    def get_storage(self) -> Storage:
        """The storage layer (made on first use)."""
        if self._storage is None:
            from gridlrt.storage import Storage

            made = self.storage
            if made is None:
                self._storage = Storage()
            elif isinstance(made, Storage):
                self._storage = made
            else:
                self._storage = made()
        return self._storage

    @contextlib.contextmanager
    def open_pool(self) -> Iterator[TokenPool]:
        """The pool, closed afterwards when this context opened it."""
        from gridlrt.tokens import TokenPool, open_pool

        given = self.pool
        if isinstance(given, TokenPool):
            yield given
            return
        if given is None:
            from gridlrt.config import load_settings

            opened = open_pool(load_settings())
        else:
            opened = given()
        with opened:
            yield opened


def is_url_source(source: str) -> bool:
    return bool(URL_SOURCE.match(source))


def load_dataset(source: str, context: SourceContext | None = None) -> Dataset:
    """The dataset ``source`` names (see the module docstring); :class:`InputError` (one
    line) when it names nothing usable, a :class:`StorageError` when storage fails."""
    context = context if context is not None else SourceContext()
    if source.startswith(POOL_PREFIX):
        run, stage = parse_pool_source(source)
        with context.open_pool() as pool:
            return dataset_from_stage(pool, run, stage, notes=context.notes)
    if is_url_source(source):
        return dataset_from_storage(
            source,
            context.get_storage(),
            checksums=context.checksums,
            recursive=context.recursive,
            jobs=context.jobs,
            notes=context.notes,
        )
    path = Path(source).expanduser()
    if path.is_file():
        return read_dataset(path) if is_dataset_file(path) else dataset_from_list(path)
    if path.is_dir():
        raise InputError(
            f"{source}: a directory; give a dataset file, an srm.txt, or the directory as a "
            f"URL (file://{path.absolute()})"
        )
    raise InputError(
        f"{source}: no such dataset file or list (an srm.txt, a dataset .jsonl), and not a "
        "storage URL (davs://..., file:///...) or pool:RUN/STAGE"
    )


def dataset_from_list(path: Path) -> Dataset:
    """One entry per URL of a list file (``srm.txt`` or any URLs), in file order."""
    entries = [entry_for_url(url) for url in read_inputs(path)]
    return Dataset(name=path.stem, source=str(path), entries=entries)


# --- storage directories -------------------------------------------------------------------


def is_measurement_set(name: str) -> bool:
    """``L700701_SB100_uv.MS`` (a measurement set directory; not its tarball)."""
    return name.rstrip("/").upper().endswith(".MS")


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def scan_level(
    storage: Storage, directories: list[str], pool: ThreadPoolExecutor
) -> list[tuple[str, list[tuple[str, StatInfo]]]]:
    """Names and stats of each of ``directories``, listed in parallel: one request per
    directory, or a listing and a stat per name where the protocol does not give both."""

    def scan(directory: str) -> tuple[str, list[tuple[str, StatInfo]] | None]:
        try:
            return directory, storage.scandir(directory)
        except StorageNotSupported:
            return directory, None

    found = []
    for directory, listing in pool.map(scan, directories):
        if listing is None:
            names = storage.listdir(directory)
            urls = [_join(directory, name) for name in names]
            listing = list(zip(names, pool.map(storage.stat, urls), strict=True))
        found.append((directory, listing))
    return found


def tree_size(storage: Storage, url: str, pool: ThreadPoolExecutor | None = None) -> int:
    """Bytes in the files under directory ``url`` (a measurement set), walked level by level,
    the directories of a level listed in parallel."""
    from gridlrt.storage.urls import is_temp_name

    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(ThreadPoolExecutor(DEFAULT_JOBS))
        total = 0
        level = [url]
        while level:
            listings = scan_level(storage, level, pool)
            level = []
            for directory, listing in listings:
                for name, info in listing:
                    if info.is_dir:
                        level.append(_join(directory, name))
                    elif not is_temp_name(name):
                        total += info.size
        return total


def dataset_from_storage(
    url: str,
    storage: Storage,
    *,
    checksums: bool = False,
    recursive: bool = False,
    jobs: int = DEFAULT_JOBS,
    notes: list[str] | None = None,
) -> Dataset:
    """The files (and measurement set directories) in directory ``url``, or the one file
    ``url`` names (see the module docstring)."""
    from gridlrt.storage.urls import is_temp_name, to_url

    notes = notes if notes is not None else []
    base = to_url(url)
    shown = redact_url(base)
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: give 1 or more requests in flight")
    with ThreadPoolExecutor(jobs, thread_name_prefix="gridlrt-dataset") as pool:
        top = storage.stat(base)
        found: list[tuple[str, int, bool]] = []  # (url, size, is a measurement set directory)
        if not top.is_dir:
            found.append((base, top.size, False))
        skipped_dirs = skipped_parts = 0
        level = [base] if top.is_dir else []
        while level:
            listings = scan_level(storage, level, pool)
            level = []
            for directory, listing in listings:
                for name, info in listing:
                    child = _join(directory, name)
                    if is_temp_name(name):
                        skipped_parts += 1
                    elif info.is_dir and is_measurement_set(name):
                        found.append((child, 0, True))
                    elif info.is_dir and recursive:
                        level.append(child)
                    elif info.is_dir:
                        skipped_dirs += 1
                    else:
                        found.append((child, info.size, False))
        found.sort(key=lambda item: item[0])
        ms_dirs = [u for u, _, is_ms in found if is_ms]
        ms_sizes = dict(
            zip(ms_dirs, pool.map(lambda u: tree_size(storage, u), ms_dirs), strict=True)
        )
        sums: dict[str, str | None] = {}
        if checksums:
            files = [u for u, _, is_ms in found if not is_ms]
            sums = dict(zip(files, pool.map(lambda u: storage.checksum(u), files), strict=True))
            if files and not any(sums.values()):
                notes.append(f"{shown}: the endpoint gives no {CHECKSUM_ALGORITHM} checksums")
    if skipped_dirs:
        notes.append(
            f"{shown}: {skipped_dirs} subdirectory(ies) that are not measurement sets left out "
            "(--recursive lists them)"
        )
    if skipped_parts:
        notes.append(f"{shown}: {skipped_parts} half-written upload(s) (*.part-*) left out")
    entries = []
    for child, size, is_ms in found:
        value = sums.get(child)
        entries.append(
            entry_for_url(
                child,
                size=ms_sizes[child] if is_ms else size,
                checksum=f"{CHECKSUM_ALGORITHM}:{value}" if value else None,
                kind="ms" if is_ms else None,
            )
        )
    name = base.rstrip("/").rsplit("/", 1)[-1]
    return Dataset(name=name, source=shown, entries=entries)


# --- pipeline stages in the pool -----------------------------------------------------------


def parse_pool_source(source: str) -> tuple[str, str]:
    """``pool:RUN/STAGE`` -> (run, stage); :class:`InputError` for anything else."""
    run, slash, stage = source.removeprefix(POOL_PREFIX).partition("/")
    if not run or not slash or not stage or "/" in stage:
        raise InputError(
            f"{source}: a pipeline stage is pool:RUN/STAGE, e.g. pool:L700701/target_prep "
            "(gridlrt pipeline status lists runs and stages)"
        )
    return run, stage


def _stage_names(pool: TokenPool, run: str) -> list[str]:
    return sorted(stage for (p, stage) in pool.stage_counts() if p == run)


def dataset_from_stage(
    pool: TokenPool, run: str, stage: str, *, notes: list[str] | None = None
) -> Dataset:
    """The outputs of stage ``stage`` of pipeline run ``run``: one entry per output of each
    done token, sizes and checksums from its upload records (see the module docstring)."""
    from gridlrt.tokens import TokenStatus

    notes = notes if notes is not None else []
    counts = pool.stage_counts()
    if (run, stage) not in counts:
        runs = sorted({p for p, _ in counts})
        if run in runs:
            raise InputError(
                f"pool:{run}/{stage}: run {run!r} has no stage {stage!r} "
                f"(stages: {', '.join(_stage_names(pool, run))})"
            )
        raise InputError(
            f"pool:{run}/{stage}: no pipeline run {run!r} in {pool.url} "
            f"(runs: {', '.join(runs) or 'none'})"
        )
    done = [t for t in pool.tokens(TokenStatus.DONE) if t.pipeline == run and t.stage == stage]
    stage_counts = counts[(run, stage)]
    total = sum(stage_counts.values())
    if len(done) < total:
        others = ", ".join(
            f"{n} {status}" for status, n in sorted(stage_counts.items()) if status != "done" and n
        )
        notes.append(
            f"pool:{run}/{stage}: {total - len(done)} of {total} token(s) not done ({others}): "
            "their outputs are not listed"
        )
    entries = with_catalogue(pool, run, stage, [e for t in done for e in stage_entries(t)])
    entries.sort(key=lambda e: (e.obsid or 0, e.sap or 0, e.subband or 0, e.url))
    return Dataset(name=f"{run}/{stage}", source=f"{POOL_PREFIX}{run}/{stage}", entries=entries)


#: what the catalogue knows of a measurement set that the tokens' upload records do not
CATALOGUE_FIELDS: Final = (
    "frequency_hz",
    "bandwidth_hz",
    "channels",
    "start_time",
    "end_time",
    "stations",
    "flagged_fraction",
)


def with_catalogue(
    pool: TokenPool, run: str, stage: str, entries: list[DatasetEntry]
) -> list[DatasetEntry]:
    """``entries`` of a stage with what the pilots catalogued of each output (frequency,
    channels, time range, stations, flagged fraction) where the entry does not know it."""
    from gridlrt.datasets.catalogue import Query
    from gridlrt.datasets.catalogue import entries as catalogued

    known = {e.url: e for e in catalogued(pool, Query(pipeline=run, stage=stage))}
    merged = []
    for entry in entries:
        found = known.get(entry.url)
        if found is not None:
            update = {
                name: getattr(found, name)
                for name in CATALOGUE_FIELDS
                if getattr(entry, name) is None and getattr(found, name) is not None
            }
            entry = entry.model_copy(update=update)
        merged.append(entry)
    return merged


def _checksum(value: str | None) -> str | None:
    if not value:
        return None
    return value if ":" in value else f"{CHECKSUM_ALGORITHM}:{value.lower()}"


def stage_entries(token: Token) -> list[DatasetEntry]:
    """One entry per output of a done token (its ``output``; a token that recorded only
    uploads: those), with the upload record's size and checksum and the token's provenance."""
    out = token.output
    urls = [] if out is None else [str(o) for o in out] if isinstance(out, list) else [str(out)]
    if not urls:
        urls = [u.url for u in token.uploads]
    records = {u.url: u for u in token.uploads}
    parents = [p.id for p in token.provenance] or (
        token.depends.parent_ids if token.depends else []
    )
    group = token.group or {}
    entries = []
    for url in urls:
        record = records.get(url)
        known: dict[str, Any] = {
            "size": record.size if record else None,
            "checksum": _checksum(record.checksum if record else None),
            "pipeline": token.pipeline,
            "stage": token.stage,
            "step": token.step,
            "token": token.id,
            "parents": parents,
        }
        entry = entry_for_url(url, **known)
        extra: dict[str, Any] = {}
        if entry.obsid is None and str(group.get("obsid", "")).isdigit():
            extra["obsid"] = int(group["obsid"])
        if entry.sap is None and str(group.get("sap", "")).isdigit():
            extra["sap"] = int(group["sap"])
        subbands = [int(s) for s in group.get("subbands") or [] if str(s).isdigit()]
        if entry.subband is None and len(subbands) == 1:
            extra["subband"] = subbands[0]
        elif len(subbands) > 1:  # a gathered group (a band): the subbands it holds
            extra["subbands"] = format_ranges(subbands)
        if group.get("label"):
            extra["group"] = str(group["label"])
        if extra:
            entry = DatasetEntry.model_validate({**entry.model_dump(), **extra})
        entries.append(entry)
    return entries
