"""Removing data safely: a dataset (``gridlrt data rm``) or a finished pipeline run's
intermediates (``gridlrt data clean``), then the empty directories left behind (LEDAMA's
DeleteData and CleanEmptyLDSPaths).

Two halves. :func:`plan_rm` and :func:`plan_clean` change nothing: they read the pool once
and stat every file, and return a :class:`RemovalPlan` (what would go with its size, what is
already gone, what is refused and why, the directories that would be left empty). Then
:func:`carry_out` acts on a plan: it reads the pool again (a token that started to need a
file since the plan keeps it), removes the files in parallel, removes the directories the
plan found would be left empty (each only if it *is* empty then: never recursively), and
marks the tokens whose outputs went.

**The safety rule.** A file is never removed while a token may still read it: a token that
is *waiting*, *blocked*, *todo*, *locked*, *downloading*, *running* or *uploading* needs

* every URL in its ``input`` and ``extra_inputs`` (a promoted child, a plain token);
* for a waiting or blocked token, also its own input before promotion (``depends``) and the
  outputs of every one of its parents that is done (what promotion will hand it).

Blocked counts: a reset of the failed parent unblocks the child, which then takes the other
parents' outputs. Tokens that are done or in error need nothing (an error token reset later
downloads its inputs again; if they were removed, it fails saying which).

**Cleaning a run** removes, for every token of a stage not kept, its ``output`` URLs and the
other files it uploaded (the payload's log: its last lines stay attached to the token as
``log_tail.txt``), so that whole directories can go. A URL that is also a kept stage's file is
refused. A run with tokens still to run (waiting, todo, active) is cleaned only when the plan
refuses nothing; a run whose unfinished tokens are only blocked is cleaned around them.

**Directories.** Only directories strictly below the deepest directory common to the run's
files (every stage, kept ones too) or to the dataset's files are considered, and each only
when everything in it is removed by the plan (or is such a directory itself). A directory is
removed with a non-recursive delete after listing it empty; one that is not empty (a file
appeared, a removal failed) stays and is reported.

**What the tokens record.** Each token whose files were removed gets a field
``outputs_removed``: ``{"at": <epoch seconds>, "by": "gridlrt data clean", "urls": [...]}``
(merged over reruns). Its ``output`` and ``uploads`` stay as they were: they are what it
produced. The mark is current while ``at`` is later than the token's ``done``: a token reset
and run again has new outputs and an older mark.

A measurement set stored as a directory (``.MS``) is one entry of a dataset and is removed
whole; any other directory in a dataset is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from gridlrt.datasets.catalogue import forget
from gridlrt.datasets.model import Dataset
from gridlrt.errors import GridlrtError, InputError, StorageError, StorageNotFound
from gridlrt.pipelines.service import RECORD_KIND, pipeline_record
from gridlrt.storage import Storage, TransferProgress
from gridlrt.storage.urls import to_url
from gridlrt.tokens import Token, TokenPool, TokenStatus
from gridlrt.tokens.model import ACTIVE, PENDING

#: statuses whose tokens may still read their inputs (see the module docstring)
NEEDING: Final = frozenset({*PENDING, TokenStatus.TODO, *ACTIVE})
#: ... and of those, the ones that make a run unfinished (blocked ones wait for a user)
UNFINISHED: Final = NEEDING - {TokenStatus.BLOCKED}
MARK_FIELD: Final = "outputs_removed"
DEFAULT_JOBS: Final = 8
SHOW_NEEDERS: Final = 3

FileKind = Literal["output", "log", "file", "ms-directory"]
Progress = Callable[[TransferProgress], None]


class RemovalFile(BaseModel):
    """One file (or measurement-set directory) a plan removes, or found already gone."""

    url: str
    size: int | None = Field(default=None, description="bytes, as stat said (None: gone)")
    kind: FileKind = "file"
    token: str | None = Field(default=None, description="the token whose file it is")
    stage: str | None = None


class RefusedFile(BaseModel):
    """A file a plan keeps, and why."""

    url: str
    size: int | None = None
    token: str | None = None
    stage: str | None = None
    reason: str


class RemovalPlan(BaseModel):
    """What a removal would do; nothing is changed making one (see the module docstring)."""

    what: str = Field(description="dataset NAME, or run RUN")
    run: str | None = None
    kept_stages: list[str] = Field(default_factory=list)
    removed_stages: list[str] = Field(default_factory=list)
    files: list[RemovalFile] = Field(default_factory=list, description="to remove")
    missing: list[RemovalFile] = Field(default_factory=list, description="already gone")
    refused: list[RefusedFile] = Field(default_factory=list)
    directories: list[str] = Field(
        default_factory=list, description="left empty, so removed (deepest first)"
    )
    roots: list[str] = Field(
        default_factory=list, description="the top directories: never removed, nor above"
    )
    unfinished: list[str] = Field(
        default_factory=list, description="tokens of the run still to run (waiting/todo/active)"
    )
    refusal: str = Field(default="", description="why nothing may be removed (empty: go)")

    @property
    def bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def refused_bytes(self) -> int:
        return sum(f.size or 0 for f in self.refused)


class FailedRemoval(BaseModel):
    url: str
    error: str


class RemovalResult(BaseModel):
    """What :func:`carry_out` did."""

    what: str
    removed: list[str] = Field(default_factory=list)
    bytes_freed: int = 0
    missing: list[str] = Field(default_factory=list, description="already gone: nothing to do")
    failed: list[FailedRemoval] = Field(default_factory=list)
    refused: list[RefusedFile] = Field(default_factory=list)
    directories_removed: list[str] = Field(default_factory=list)
    directories_kept: list[str] = Field(
        default_factory=list, description="planned to go but not empty (or not removable)"
    )
    tokens_marked: list[str] = Field(default_factory=list)
    records_forgotten: int = Field(
        default=0, description="catalogue records of removed files deleted (gridlrt data find)"
    )

    @property
    def complete(self) -> bool:
        """Everything planned went (nothing failed, nothing refused)."""
        return not self.failed and not self.refused and not self.directories_kept


# --- what the pool says ----------------------------------------------------------------------


def normalized(url: str) -> str:
    """``url`` as compared between tokens and datasets (file:// forms made one, no trailing
    slash)."""
    try:
        text = to_url(url)
    except GridlrtError:
        text = url
    return text.rstrip("/")


def token_outputs(token: Token) -> list[str]:
    """The token's outputs as its children get them: ``output`` (a string or a list), else
    the URLs of its uploads."""
    out = token.output
    urls = [] if out is None else [str(o) for o in out] if isinstance(out, list) else [str(out)]
    return urls or [u.url for u in token.uploads]


def token_files(token: Token) -> list[RemovalFile]:
    """Every file the token put on storage: its outputs, then its other uploads (the log)."""
    outputs = token_outputs(token)
    sizes = {u.url: u.size for u in token.uploads}
    files = [RemovalFile(url=u, size=sizes.get(u), kind="output") for u in outputs]
    files += [
        RemovalFile(url=u.url, size=u.size, kind="log")
        for u in token.uploads
        if u.url not in outputs
    ]
    for f in files:
        f.token, f.stage = token.id, token.stage
    return files


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def needed_urls(tokens: Iterable[Token]) -> dict[str, list[str]]:
    """``{normalized url: ["<token id> (<status>)", ...]}`` for every URL a token still
    needs (the safety rule of the module docstring)."""
    by_id = {t.id: t for t in tokens}
    needs: dict[str, list[str]] = {}
    for token in by_id.values():
        if token.status not in NEEDING:
            continue
        urls = [*token.inputs, *(u for urls in token.extra_inputs.values() for u in urls)]
        if token.status in PENDING and token.depends is not None:
            urls += _listed(token.depends.base_input)
            for parent_id in token.depends.parent_ids:
                parent = by_id.get(parent_id)
                if parent is not None and parent.status is TokenStatus.DONE:
                    urls += token_outputs(parent)
        who = f"{token.id} ({token.status.value})"
        for url in dict.fromkeys(normalized(u) for u in urls):
            needs.setdefault(url, []).append(who)
    return needs


def _refused(item: RemovalFile, reason: str) -> RefusedFile:
    return RefusedFile(
        url=item.url, size=item.size, token=item.token, stage=item.stage, reason=reason
    )


def _why(needers: list[str]) -> str:
    shown = ", ".join(needers[:SHOW_NEEDERS])
    more = f" and {len(needers) - SHOW_NEEDERS} more" if len(needers) > SHOW_NEEDERS else ""
    return f"still needed by {shown}{more}"


# --- directories -----------------------------------------------------------------------------


def _split(url: str) -> tuple[str, list[str]] | None:
    """(``scheme://host``, path parts), or None for URLs whose path is not plain (SRM's
    ``?SFN=``): no directories are considered for those."""
    parts = urlsplit(url)
    if parts.query or parts.fragment or not parts.scheme:
        return None
    return f"{parts.scheme}://{parts.netloc}", [p for p in parts.path.split("/") if p]


def _join(head: str, parts: Sequence[str]) -> str:
    return head + "/" + "/".join(parts)


def common_roots(urls: Iterable[str]) -> dict[str, list[str]]:
    """Per endpoint, the path parts of the deepest directory holding all of ``urls``."""
    roots: dict[str, list[str]] = {}
    for url in urls:
        split = _split(url)
        if split is None:
            continue
        head, parts = split
        parent = parts[:-1]
        if head not in roots:
            roots[head] = parent
            continue
        common = roots[head]
        n = 0
        while n < min(len(common), len(parent)) and common[n] == parent[n]:
            n += 1
        roots[head] = common[:n]
    return roots


def _candidates(urls: Iterable[str], roots: dict[str, list[str]]) -> list[str]:
    """The directories holding ``urls`` strictly below their root, deepest first."""
    found: set[str] = set()
    for url in urls:
        split = _split(url)
        if split is None or split[0] not in roots:
            continue
        head, parts = split
        found.update(_join(head, parts[:k]) for k in range(len(roots[head]) + 1, len(parts)))
    return sorted(found, key=lambda d: (-d.count("/"), d))


def _emptied(storage: Storage, candidates: list[str], going: set[str]) -> list[str]:
    """Of ``candidates`` (deepest first), those whose every entry is in ``going`` or is such
    a directory itself: what the removal leaves empty."""
    empty: list[str] = []
    gone = {u.rstrip("/") for u in going}
    for directory in candidates:
        try:
            names = storage.listdir(directory)
        except StorageNotFound:
            continue
        if all(f"{directory}/{name.rstrip('/')}" in gone for name in names):
            empty.append(directory)
            gone.add(directory)
    return empty


# --- planning ------------------------------------------------------------------------------


def _parallel(jobs: int, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``fn`` over ``items``, ``jobs`` at a time, in order. Interrupted (Ctrl-C), what has not
    started is not started: a rerun finishes the rest."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    executor = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items))))
    try:
        return list(executor.map(fn, items))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _tree_size(storage: Storage, url: str) -> int:
    total = 0
    for name in storage.listdir(url):
        child = f"{url.rstrip('/')}/{name}"
        info = storage.stat(child)
        total += _tree_size(storage, child) if info.is_dir else info.size
    return total


def _look(storage: Storage, item: RemovalFile) -> RemovalFile | RefusedFile | None:
    """The file as storage has it now (its size), None when it is gone, refused when it is a
    directory that is not a measurement set."""
    try:
        info = storage.stat(item.url)
    except StorageNotFound:
        return None
    if not info.is_dir:
        return item.model_copy(update={"size": info.size})
    if item.url.rstrip("/").upper().endswith(".MS"):
        size = item.size if item.size is not None else _tree_size(storage, item.url)
        return item.model_copy(update={"size": size, "kind": "ms-directory"})
    return _refused(item.model_copy(update={"size": None}), "a directory, not a file")


def _plan(
    what: str,
    wanted: list[RemovalFile],
    refused: list[RefusedFile],
    scope: Iterable[str],
    needs: dict[str, list[str]],
    storage: Storage,
    jobs: int,
    **fields: Any,
) -> RemovalPlan:
    """Split ``wanted`` into needed (refused), present (to remove) and gone; find the
    directories left empty below the roots of ``scope``."""
    unique: dict[str, RemovalFile] = {}
    for item in wanted:
        unique.setdefault(normalized(item.url), item)
    candidates: list[RemovalFile] = []
    for key, item in unique.items():
        if key in needs:
            refused.append(_refused(item, _why(needs[key])))
        else:
            candidates.append(item)
    looked = _parallel(jobs, lambda item: _look(storage, item), candidates)
    files = [f for f in looked if isinstance(f, RemovalFile)]
    refused += [f for f in looked if isinstance(f, RefusedFile)]
    missing = [item for item, f in zip(candidates, looked, strict=True) if f is None]
    roots = common_roots(scope)
    dirs = _candidates([f.url for f in [*files, *missing]], roots)
    directories = _emptied(storage, dirs, {f.url for f in files})
    return RemovalPlan(
        what=what,
        files=files,
        missing=[m.model_copy(update={"size": None}) for m in missing],
        refused=refused,
        directories=directories,
        roots=sorted(_join(head, parts) for head, parts in roots.items()),
        **fields,
    )


def plan_rm(
    dataset: Dataset,
    pool: TokenPool,
    *,
    storage: Storage | None = None,
    jobs: int = DEFAULT_JOBS,
) -> RemovalPlan:
    """What removing every file of ``dataset`` would do (nothing is changed)."""
    needs = needed_urls(pool.tokens())
    wanted = [
        RemovalFile(url=e.url, size=e.size, kind="file", token=e.token, stage=e.stage)
        for e in dataset.entries
    ]
    urls = [e.url for e in dataset.entries]
    return _plan(
        f"dataset {dataset.name or dataset.source or '(unnamed)'}",
        wanted,
        [],
        urls,
        needs,
        storage or Storage(),
        jobs,
    )


def run_stages(pool: TokenPool, run: str, tokens: Sequence[Token]) -> list[str]:
    """The stages of ``run`` in DAG order (its record's; else its tokens' stages by name);
    :class:`InputError` naming the known runs when there is no such run."""
    if any(r.get("run") == run for r in pool.records(RECORD_KIND)):
        return [stage.name for stage in pipeline_record(pool, run).plan]
    stages = sorted({t.stage for t in tokens if t.pipeline == run and t.stage})
    if not stages:
        pipeline_record(pool, run)  # raises, naming the runs there are
    return stages


def plan_clean(
    pool: TokenPool,
    run: str,
    keep: Sequence[str],
    *,
    storage: Storage | None = None,
    jobs: int = DEFAULT_JOBS,
) -> RemovalPlan:
    """What removing the files of every stage of ``run`` but ``keep`` would do (nothing is
    changed); :class:`InputError` for an unknown run or stage."""
    tokens = list(pool.tokens())
    stages = run_stages(pool, run, tokens)
    unknown = [s for s in keep if s not in stages]
    if unknown:
        raise InputError(
            f"run {run} has no stage {', '.join(unknown)} (stages: {', '.join(stages)})"
        )
    mine = [t for t in tokens if t.pipeline == run]
    kept_urls: dict[str, str] = {}
    for token in mine:
        if token.stage in keep:
            kept_urls.update({normalized(f.url): f"{token.stage}" for f in token_files(token)})
    wanted: list[RemovalFile] = []
    refused: list[RefusedFile] = []
    for token in mine:
        if token.stage in keep:
            continue
        for item in token_files(token):
            stage = kept_urls.get(normalized(item.url))
            if stage is None:
                wanted.append(item)
            else:
                refused.append(_refused(item, f"also a file of kept stage {stage}"))
    unfinished = sorted(t.id for t in mine if t.status in UNFINISHED)
    plan = _plan(
        f"run {run}",
        wanted,
        refused,
        [f.url for t in mine for f in token_files(t)],
        needed_urls(tokens),
        storage or Storage(),
        jobs,
        run=run,
        kept_stages=[s for s in stages if s in keep],
        removed_stages=[s for s in stages if s not in keep],
        unfinished=unfinished,
    )
    needed = [f for f in plan.refused if f.reason.startswith("still needed")]
    if unfinished and needed:
        plan.refusal = (
            f"run {run} is not finished ({len(unfinished)} token(s) still to run, e.g. "
            f"{unfinished[0]}) and {len(needed)} of its files are still needed; wait for it "
            "to finish (gridlrt pipeline status)"
        )
    return plan


# --- acting --------------------------------------------------------------------------------


def _remove(storage: Storage, item: RemovalFile) -> tuple[str, str]:
    """("removed" | "missing" | "failed", error)."""
    try:
        removed = storage.delete(item.url, recursive=item.kind == "ms-directory", missing_ok=True)
    except StorageError as exc:
        return "failed", str(exc)
    return ("removed" if removed else "missing"), ""


def _mark(pool: TokenPool, removed: dict[str, list[str]], by: str, now: float) -> list[str]:
    """Add ``outputs_removed`` to each token of ``removed`` (token id -> URLs)."""
    marked: list[str] = []
    for token_id, urls in sorted(removed.items()):

        def change(token: Token, urls: list[str] = urls) -> Token:
            new = token.model_copy(deep=True)
            before = (new.model_extra or {}).get(MARK_FIELD) or {}
            known = [str(u) for u in before.get("urls", [])] if isinstance(before, dict) else []
            mark = {"at": now, "by": by, "urls": list(dict.fromkeys([*known, *urls]))}
            setattr(new, MARK_FIELD, mark)
            return new

        try:
            pool._update(token_id, change)
        except GridlrtError:
            continue  # the token is gone or malformed: nothing to mark
        marked.append(token_id)
    return marked


def carry_out(
    plan: RemovalPlan,
    pool: TokenPool,
    *,
    storage: Storage | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
    by: str = "gridlrt data rm",
) -> RemovalResult:
    """Do what ``plan`` says: the files (a file a token started to need since the plan is
    refused now), then the directories it found would be left empty (each only if empty),
    then mark the tokens. :class:`GridlrtError` when the plan refuses everything."""
    if plan.refusal:
        raise GridlrtError(plan.refusal)
    store = storage or Storage()
    tokens = list(pool.tokens())
    needs = needed_urls(tokens)
    result = RemovalResult(what=plan.what, refused=list(plan.refused))
    going: list[RemovalFile] = []
    for item in plan.files:
        key = normalized(item.url)
        if key in needs:
            result.refused.append(_refused(item, _why(needs[key])))
        else:
            going.append(item)
    total = sum(f.size or 0 for f in going)
    lock = threading.Lock()

    def one(item: RemovalFile) -> tuple[str, str]:
        outcome = _remove(store, item)
        with lock:
            if outcome[0] == "removed":
                result.removed.append(item.url)
                result.bytes_freed += item.size or 0
            elif outcome[0] == "missing":
                result.missing.append(item.url)
            else:
                result.failed.append(FailedRemoval(url=item.url, error=outcome[1]))
            if progress is not None:
                done = len(result.removed) + len(result.missing) + len(result.failed)
                progress(TransferProgress(files_done=done, files_total=len(going),
                                          bytes_done=result.bytes_freed, bytes_total=total,
                                          current=item.url))  # fmt: skip
        return outcome

    _parallel(jobs, one, going)
    result.missing += [m.url for m in plan.missing]
    for directory in plan.directories:
        try:
            if store.listdir(directory):
                result.directories_kept.append(directory)
                continue
            store.delete(directory)
        except StorageNotFound:
            continue  # gone already (a rerun, or removed by someone else)
        except StorageError:
            result.directories_kept.append(directory)
            continue
        result.directories_removed.append(directory)
    owners = _owners(tokens, plan)
    gone = {normalized(u) for u in [*result.removed, *result.missing]}
    removed: dict[str, list[str]] = {}
    for key, (token_id, url) in owners.items():
        if key in gone:
            removed.setdefault(token_id, []).append(url)
    result.tokens_marked = _mark(pool, removed, by, time.time())
    # the catalogue must not list files that are gone (a rerun forgets what is left)
    result.records_forgotten = forget(pool, [*result.removed, *result.missing])
    return result


def _owners(tokens: Sequence[Token], plan: RemovalPlan) -> dict[str, tuple[str, str]]:
    """normalized url -> (token id, url) of the token that put each planned file there."""
    owners: dict[str, tuple[str, str]] = {}
    for item in [*plan.files, *plan.missing]:
        if item.token is not None:
            owners[normalized(item.url)] = (item.token, item.url)
    wanted = {normalized(f.url) for f in [*plan.files, *plan.missing]} - set(owners)
    if wanted:
        for token in tokens:
            for item in token_files(token):
                key = normalized(item.url)
                if key in wanted:
                    owners.setdefault(key, (token.id, item.url))
    return owners
