"""Pipelines as library calls for the CLI: create a run's tokens, read a run's status.

:func:`create_pipeline` is ``gridlrt pipeline create`` as one call: load and check the
definition, read the input lists, expand them into tokens, check the first token of every
stage against its step (through the caller's :data:`~gridlrt.tokens.create.TokenCheck`: this
room does not know how a step runs), then store the run's record (``pipeline``/``<run>``: the
definition, the plan, the input files) and create the tokens — or only say what it would do.
Creating a run twice is a no-op (every token a duplicate); creating it again from another
definition or other inputs is refused.

:func:`pipeline_status` counts a run's tokens per stage and status, with the reasons of
blocked tokens and what waiting stages wait for; :func:`pipeline_record` reads the stored
definition and plan back (``gridlrt pipeline show``). Nothing here runs at run time: the
tokens room promotes waiting tokens itself.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gridlrt.config import Settings
from gridlrt.errors import InputError, RecordNotFound
from gridlrt.pipelines.definition import Pipeline, load_pipeline
from gridlrt.pipelines.expand import Expansion, StagePlan, check_input_names, expand
from gridlrt.staging.lists import check_list_file
from gridlrt.tokens import TokenPool, open_pool
from gridlrt.tokens.create import TokenCheck, read_inputs
from gridlrt.tokens.dependencies import promote
from gridlrt.tokens.model import Token, TokenStatus, UploadResult

log = logging.getLogger(__name__)

RECORD_KIND = "pipeline"
#: where a stand-in parent's output "is" when a dependent stage's first token is checked
CHECK_ROOT = "file:///gridlrt-check"
#: blocked tokens listed per stage, at most
SHOW_BLOCKED = 5


class CreatedPipeline(BaseModel):
    """What :func:`create_pipeline` made (or, for a dry run, would make)."""

    run: str
    pipeline: str
    definition_file: Path
    plan: list[StagePlan]
    tokens: list[Token]
    """Every token of the run, children before parents (new or not)."""
    dry_run: bool = False
    pool_url: str | None = None
    """The pool written to; None for a dry run."""
    created: list[str] = []
    duplicates: list[str] = []


class PipelineRecord(BaseModel):
    """A run as :func:`create_pipeline` stored it."""

    run: str
    pipeline: Pipeline
    plan: list[StagePlan]
    definition_file: str = ""
    inputs: dict[str, str] = {}  # input name -> the list file it was created from
    input_counts: dict[str, int] = {}
    tokens: int = 0
    tokens_digest: str = ""
    created: float = 0.0


class BlockedToken(BaseModel):
    id: str
    reason: str


class StageStatus(BaseModel):
    """One stage of a run: its tokens per status and, when stuck, why."""

    name: str
    step: str = ""
    kind: str = ""
    parents: list[str] = []
    planned: int = 0
    counts: dict[str, int]  # every status, zeros included
    present: int = 0  # tokens of the stage in the pool
    missing: int = 0  # planned but not in the pool (archived, deleted, not created yet)
    waiting_for: str = ""  # for waiting tokens: which parent stages are unfinished
    blocked: list[BlockedToken] = []  # the first few blocked tokens and their reasons
    more_blocked: int = 0

    @property
    def finished(self) -> bool:
        return self.present > 0 and self.counts["done"] + self.counts["error"] == self.present


class PipelineStatus(BaseModel):
    run: str
    pipeline: str = ""
    description: str = ""
    created: float = 0.0
    recorded: bool = True  # False: tokens of a run with no record (created by hand)
    stages: list[StageStatus]
    counts: dict[str, int]  # over all stages


def _tokens_digest(tokens: Iterable[Token]) -> str:
    return hashlib.sha256("\n".join(sorted(t.id for t in tokens)).encode()).hexdigest()


def stand_in(token: Token, by_id: dict[str, Token]) -> Token:
    """A dependent token as it would be once promoted, for checking it against its step:
    every parent done with one stand-in output ``file:///gridlrt-check/<stage>/<label>.MS.tar``
    (the real ones exist only when the parents ran). A token without parents as it is."""
    if token.depends is None:
        return token
    parents: dict[str, Token | None] = {}
    for parent_id in token.depends.parent_ids:
        parent = by_id.get(parent_id)
        stage = parent.stage if parent is not None and parent.stage else "parent"
        label = parent.group.get("label", parent_id) if parent is not None else parent_id
        parents[parent_id] = Token.model_validate(
            {
                "_id": parent_id,
                "step": parent.step if parent is not None else "default",
                "lock": 1,
                "done": 1,
                "exit_code": 0,
                "status": TokenStatus.DONE.value,
                "uploads": [UploadResult(url=f"{CHECK_ROOT}/{stage}/{label}.MS.tar")],
            }
        )
    return promote(token, parents)


def _read_lists(pipeline: Pipeline, inputs: dict[str, Path]) -> dict[str, list[str]]:
    check_input_names(pipeline, inputs)
    lists: dict[str, list[str]] = {}
    for name, path in inputs.items():
        try:
            lists[name] = read_inputs(path)
            check_list_file(path)
        except InputError as exc:
            raise InputError(f"input {name}: {exc}") from None
    return lists


def create_pipeline(
    settings: Settings | Callable[[], Settings],
    path: Path,
    inputs: dict[str, Path],
    *,
    run: str | None = None,
    check: TokenCheck | None = None,
    dry_run: bool = False,
) -> CreatedPipeline:
    """Create every token of the run ``run`` (default: the pipeline's name) of the pipeline
    file ``path`` over the input list files ``inputs`` (input name -> file), in the pool of
    ``settings``, after storing the run's record. Idempotent: tokens already there are
    reported as duplicates (an interrupted create is finished by running it again); a run
    that exists with another definition or other inputs is refused (:class:`InputError`).

    ``settings`` may be a function giving them: it is called once the definition and the
    inputs were read and expanded, so their problems are reported first. ``check`` sees the
    first token of each stage (a dependent one with stand-in parents' outputs, see
    :func:`stand_in`) before anything is written. ``dry_run``: all of that, but the pool is
    not touched."""
    pipeline = load_pipeline(path)
    path = pipeline.source or path  # a built-in pipeline given by name: its file
    lists = _read_lists(pipeline, inputs)
    expansion = expand(pipeline, lists, run=run)
    chosen = settings if isinstance(settings, Settings) else settings()
    if check is not None:
        _check_stages(expansion, check, chosen)
    planned = CreatedPipeline(
        run=expansion.run,
        pipeline=pipeline.name,
        definition_file=path,
        plan=expansion.plan,
        tokens=expansion.tokens,
    )
    if dry_run:
        return planned.model_copy(update={"dry_run": True})
    record = PipelineRecord(
        run=expansion.run,
        pipeline=pipeline,
        plan=expansion.plan,
        definition_file=str(path),
        inputs={name: str(file) for name, file in inputs.items()},
        input_counts={name: len(items) for name, items in lists.items()},
        tokens=len(expansion.tokens),
        tokens_digest=_tokens_digest(expansion.tokens),
        created=time.time(),
    )
    with open_pool(chosen) as pool:
        if chosen.pool_kind == "embedded":
            pool.init()  # the default pool needs no separate set-up step
        _store_record(pool, record)
        result = pool.create(expansion.tokens)
        url = pool.url
    log.info(
        "pipeline run %s: created %d token(s), %d already there, in %s",
        expansion.run,
        len(result.created),
        len(result.duplicates),
        url,
    )
    return planned.model_copy(
        update={"pool_url": url, "created": result.created, "duplicates": result.duplicates}
    )


def _check_stages(expansion: Expansion, check: TokenCheck, settings: Settings) -> None:
    by_id = {t.id: t for t in expansion.tokens}
    for stage in expansion.plan:
        first = next((t for t in expansion.tokens if t.stage == stage.name), None)
        if first is None:
            continue
        try:
            check(stand_in(first, by_id), settings)
        except InputError as exc:
            raise InputError(f"stage {stage.name}: {exc}") from None


def _record_body(record: PipelineRecord) -> dict[str, Any]:
    body = record.model_dump(mode="json", exclude={"pipeline"})
    return {**body, "pipeline": record.pipeline.name, "definition": record.pipeline.as_dict()}


def _store_record(pool: TokenPool, record: PipelineRecord) -> None:
    """Store the run's record, or check the stored one describes the same run."""
    try:
        stored = _parse_record(pool.get_record(RECORD_KIND, record.run), pool)
    except RecordNotFound:
        pool.put_record(RECORD_KIND, record.run, _record_body(record))
        return
    same_definition = stored.pipeline.as_dict() == record.pipeline.as_dict()
    if not same_definition or stored.tokens_digest != record.tokens_digest:
        what = "definition" if not same_definition else "inputs (other tokens)"
        raise InputError(
            f"pipeline run {record.run!r} already exists in {pool.url} with another {what} "
            f"(created from {stored.definition_file or 'another file'}); choose another run "
            "name (--run) or remove that run's tokens and record first"
        )


def _parse_record(body: dict[str, Any], pool: TokenPool) -> PipelineRecord:
    try:
        return PipelineRecord.model_validate({**body, "pipeline": body.get("definition", {})})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "record"
        raise InputError(
            f"pipeline record {body.get('run', '?')!r} in {pool.url} is damaged: "
            f"{where}: {err['msg']}"
        ) from None


def _unknown_run(pool: TokenPool, run: str, known: list[str]) -> InputError:
    names = ", ".join(known) if known else "none"
    return InputError(f"no pipeline run {run!r} in {pool.url} (runs: {names})")


def pipeline_record(pool: TokenPool, run: str) -> PipelineRecord:
    """The definition and plan a run was created with; :class:`InputError` naming the known
    runs when there is no such run."""
    try:
        return _parse_record(pool.get_record(RECORD_KIND, run), pool)
    except RecordNotFound:
        known = [str(r.get("run", "?")) for r in pool.records(RECORD_KIND)]
        raise _unknown_run(pool, run, known) from None


def _zeros() -> dict[str, int]:
    return {status.value: 0 for status in TokenStatus}


def pipeline_status(pool: TokenPool, run: str | None = None) -> list[PipelineStatus]:
    """Every run's (or the run ``run``'s) stages in DAG order with their tokens per status,
    the first blocked tokens' reasons and, for waiting tokens, the parent stages not finished
    yet. Runs whose tokens are in the pool without a record (created by hand) come last, their
    stages by name. :class:`InputError` naming the known runs for an unknown ``run``."""
    records = {str(r.get("run")): _parse_record(r, pool) for r in pool.records(RECORD_KIND)}
    counts_by_stage = pool.stage_counts()
    unrecorded = sorted({p for p, _ in counts_by_stage if p not in records})
    if run is not None and run not in records and run not in unrecorded:
        raise _unknown_run(pool, run, [*records, *unrecorded])
    runs = [run] if run is not None else [*records, *unrecorded]
    blocked = _blocked(pool, set(runs))
    found: list[PipelineStatus] = []
    for name in runs:
        record = records.get(name)

        def counts_of(stage: str, run_name: str = name) -> dict[str, int]:
            counts = _zeros()
            for key, n in counts_by_stage.get((run_name, stage), {}).items():
                counts[key] = counts.get(key, 0) + n
            return counts

        plans = (
            record.plan
            if record is not None
            else [
                StagePlan(name=stage, step="", kind="", over="")
                for (p, stage) in sorted(counts_by_stage)
                if p == name
            ]
        )
        planned_of = {plan.name: plan.tokens for plan in plans}
        stages = [
            _stage_status(plan, counts_of, planned_of, blocked.get((name, plan.name), []))
            for plan in plans
        ]
        total = _zeros()
        for stage_status in stages:
            for key, n in stage_status.counts.items():
                total[key] += n
        found.append(
            PipelineStatus(
                run=name,
                pipeline=record.pipeline.name if record else "",
                description=record.pipeline.description if record else "",
                created=record.created if record else 0.0,
                recorded=record is not None,
                stages=stages,
                counts=total,
            )
        )
    return found


def _blocked(pool: TokenPool, runs: set[str]) -> dict[tuple[str, str], list[BlockedToken]]:
    found: dict[tuple[str, str], list[BlockedToken]] = {}
    for token in pool.tokens(TokenStatus.BLOCKED):
        if token.pipeline in runs and token.stage:
            found.setdefault((token.pipeline, token.stage), []).append(
                BlockedToken(id=token.id, reason=token.blocked_reason)
            )
    for listed in found.values():
        listed.sort(key=lambda b: b.id)
    return found


def _stage_status(
    plan: StagePlan,
    counts_of: Callable[[str], dict[str, int]],
    planned_of: dict[str, int],
    blocked: list[BlockedToken],
) -> StageStatus:
    counts = counts_of(plan.name)
    present = sum(counts.values())
    status = StageStatus(
        name=plan.name,
        step=plan.step,
        kind=plan.kind,
        parents=plan.parents,
        planned=plan.tokens,
        counts=counts,
        present=present,
        missing=max(0, plan.tokens - present),
        blocked=blocked[:SHOW_BLOCKED],
        more_blocked=max(0, len(blocked) - SHOW_BLOCKED),
    )
    if counts[TokenStatus.WAITING.value] and plan.parents:
        status.waiting_for = _waiting_for(plan, counts_of, planned_of)
    return status


def _waiting_for(
    plan: StagePlan,
    counts_of: Callable[[str], dict[str, int]],
    planned_of: dict[str, int],
) -> str:
    """``waits for cal_solve (0/1 done, 1 blocked)``: the parent stages not all done; or,
    when every parent token has finished, that the promotion is yet to be settled."""
    unfinished: list[str] = []
    stuck = False
    for parent in plan.parents:
        counts = counts_of(parent)
        total = max(planned_of.get(parent, 0), sum(counts.values()))
        done, failed, blocked = counts["done"], counts["error"], counts["blocked"]
        if done >= total:
            continue
        notes = [f"{done}/{total} done"]
        notes += [f"{failed} failed"] if failed else []
        notes += [f"{blocked} blocked"] if blocked else []
        unfinished.append(f"{parent} ({', '.join(notes)})")
        stuck = stuck or done + failed < total  # some parent is still to run, or blocked
    if stuck:
        return "waits for " + ", ".join(unfinished)
    return "its parents finished; not promoted yet (any pool user settles it)"
