"""Submitting pilots and keeping track of them: the glue between settings, the pool (how many
tokens are to do; job records), the pilot sandbox and a backend.

Pilots take the tokens of one step, or any ready token (tokens carry their step): what the
pilots of a pipeline need, whose stages run different steps. Submitted for a pipeline run,
``-n auto`` sizes them by the run's widest remaining stage.

* :func:`worker_arguments` - the options every pilot gets on its command line, with the
  output root checked (grid storage for grid pilots, no password in it);
* :func:`auto_count` - ``-n auto``; :func:`tokens_to_check` - the tokens the caller's step
  check sees before anything is submitted;
* :func:`plan` - build the pilot sandbox for grid backends and render the submission
  (nothing is submitted);
* :func:`check_macaroons` - ``--macaroons FILE``: a 0600, well-formed macaroon file;
* :func:`submit` - write the credentials file and the macaroons (0600), submit, and save a
  :class:`JobRecord`;
* :func:`refresh` / :func:`cancel` - ask the backend, update the record in the pool;
  :func:`refresh_jobs` - refresh one or all submissions (what ``gridlrt jobs status`` shows).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridlrt.config import Settings, data_dir, redact_url, strip_credentials, url_credentials
from gridlrt.credentials import couchdb_auth
from gridlrt.errors import (
    CredentialsError,
    GridlrtError,
    InputError,
    JobNotFound,
    RecordNotFound,
)
from gridlrt.submit.base import Submitter
from gridlrt.submit.dirac import DiracSubmitter
from gridlrt.submit.glite import GliteSubmitter
from gridlrt.submit.grid import CREDENTIALS, MACAROONS
from gridlrt.submit.local import LocalSubmitter
from gridlrt.submit.model import (
    JobRecord,
    PilotRequest,
    Resources,
    Submission,
    work_label,
)
from gridlrt.submit.slurm import SlurmSubmitter
from gridlrt.tokens import Token, TokenPool, TokenStatus, open_pool
from gridlrt.tokens.model import ACTIVE

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[Submitter]] = {
    "local": LocalSubmitter,
    "slurm": SlurmSubmitter,
    "dirac": DiracSubmitter,
    "glite": GliteSubmitter,
}
GRID = frozenset({"dirac", "glite"})
RECORD_KIND = "job"
#: a pipeline stage's tokens that still need a pilot (or have one): ``-n auto`` counts them
REMAINING = (TokenStatus.TODO, TokenStatus.WAITING, *sorted(ACTIVE))


def get_submitter(backend: str, env: Mapping[str, str] | None = None, **options: Any) -> Submitter:
    """The submitter called ``backend`` (local, slurm, dirac, glite)."""
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise InputError(
            f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        ) from None
    return cls(env, **options)


def remaining(counts: Mapping[str, int]) -> int:
    """Tokens of a stage that still need a pilot or have one: todo, waiting and active."""
    return sum(counts.get(status.value, 0) for status in REMAINING)


def pipeline_stages(pool: TokenPool, run: str) -> dict[str, dict[str, int]]:
    """The stages of the pipeline run ``run`` with their token counts per status;
    :class:`InputError` naming the runs in the pool when it has no token of ``run``."""
    counts = pool.stage_counts()
    stages = {stage: by_status for (name, stage), by_status in counts.items() if name == run}
    if not stages:
        runs = ", ".join(sorted({name for name, _ in counts})) or "none"
        raise InputError(f"no tokens of pipeline run {run!r} in {pool.url} (runs: {runs})")
    return stages


def auto_count(
    pool: TokenPool,
    step: str | None,
    maximum: int,
    *,
    stages: Mapping[str, Mapping[str, int]] | None = None,
) -> int:
    """``-n auto``, at most ``maximum``: one pilot per todo token of ``step`` (None: of any
    step) or, given a pipeline run's ``stages`` (:func:`pipeline_stages`), one per token of its
    widest remaining stage (todo, waiting and active tokens: a gather stage needs one pilot,
    the scatter before it many)."""
    if stages is not None:
        wanted = max((remaining(counts) for counts in stages.values()), default=0)
    else:
        wanted = pool.overview().total(TokenStatus.TODO, step)
    return min(wanted, maximum)


def tokens_to_check(
    pool: TokenPool,
    step: str | None = None,
    *,
    pipeline: str | None = None,
    stages: Mapping[str, Mapping[str, int]] | None = None,
) -> list[Token]:
    """The tokens a step check should see before pilots are submitted: the first todo token
    of ``step`` or, with ``step`` None, of every step that has todo tokens (the pilots may take
    any of them); for the pipeline run ``pipeline`` also one token of each of its ``stages``
    with tokens left to run (a waiting one: the check fills in stand-ins for its parents'
    outputs), so a misspelt step of a later stage fails at submit, not on the nodes."""
    overview = pool.overview()
    steps = [step] if step is not None else sorted(overview.counts)
    found: dict[str, Token] = {}
    for name in steps:
        if overview.total(TokenStatus.TODO, name):
            first = next(iter(pool.tokens(TokenStatus.TODO, name)), None)
            if first is not None:
                found[first.id] = first
    if pipeline is None or stages is None:
        return list(found.values())
    left = {stage for stage, counts in stages.items() if remaining(counts)}
    left -= {t.stage for t in found.values() if t.pipeline == pipeline}
    for status in REMAINING:
        if not left:
            break
        if not overview.total(status):
            continue
        for token in pool.tokens(status):
            if token.pipeline == pipeline and token.stage in left:
                left.discard(token.stage)
                found[token.id] = token
                if not left:
                    break
    return list(found.values())


@dataclass(frozen=True)
class WorkerArguments:
    """What :func:`worker_arguments` decided: the output root and the pilots' arguments."""

    output_root: str
    """Where outputs go (the option, else the ``storage_root`` setting)."""
    argv: list[str]
    """The ``gridlrt worker run`` options every pilot of the submission gets."""


def check_output_root(backend: str, root: str) -> None:
    """:class:`InputError` for an output root pilots of ``backend`` must not get: a
    ``file:`` root for grid pilots (results would stay on the worker nodes), or any root
    holding a password (it would travel in every pilot's command line)."""
    if backend in GRID and root.startswith("file:"):
        raise InputError(
            f"outputs would go to {root} on each worker node; give --output-root davs://... "
            "or srm://... (or set storage_root) so results land on grid storage"
        )
    if url_credentials(root).password:
        raise InputError(
            f"the output root {redact_url(root)} holds a password, which would travel in every "
            "pilot's command line; give the URL without it (storage credentials come from the "
            "node's grid proxy or token)"
        )


def worker_arguments(
    settings: Settings,
    backend: str,
    *,
    output_root: str | None = None,
    max_tokens: int | None = None,
    idle_timeout: float | None = None,
) -> WorkerArguments:
    """The worker options for pilots on ``backend``: ``--max-tokens``, ``--idle-timeout``
    (seconds, whole) and ``--output-root`` (``output_root``, else ``settings.storage_root``,
    checked by :func:`check_output_root`)."""
    argv: list[str] = []
    if max_tokens is not None:
        argv += ["--max-tokens", str(max_tokens)]
    if idle_timeout is not None:
        argv += ["--idle-timeout", f"{idle_timeout:.0f}s"]
    root = output_root or settings.storage_root
    check_output_root(backend, root)
    argv += ["--output-root", root]
    return WorkerArguments(output_root=root, argv=argv)


def new_record_id(backend: str, label: str) -> str:
    """``<UTC time>-<backend>-<label>-<4 hex>``; ``label`` says what the pilots take
    (:func:`~gridlrt.submit.model.work_label`)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{backend}-{label}-{secrets.token_hex(2)}"


def pilot_sandbox(steps_dir: Path | None, cache: Path | None = None) -> tuple[Path, str]:
    """The pilot sandbox (steps + gridlrt runtime) for grid jobs, content-addressed in
    ``cache`` (so resubmitting the same steps reuses the file): its path and sha256."""
    from gridlrt.sandbox.bundle import build_pilot_sandbox

    cache = cache or data_dir() / "pilot-sandboxes"
    cache.mkdir(parents=True, exist_ok=True)
    sandbox = build_pilot_sandbox(steps_dir, cache)
    return sandbox.path, sandbox.id


def check_macaroons(path: Path) -> list[str]:
    """The WebDAV doors (``scheme://host:port/path`` prefixes) of the macaroon file ``path``
    (``gridlrt stage macaroons``), checked as a pilot will read it: it exists, is readable,
    0600 and holds ``<WebDAV URL prefix> <macaroon>`` lines with http(s)/dav(s) prefixes.
    :class:`CredentialsError` in one line otherwise, never showing a macaroon."""
    from gridlrt.staging.download import read_macaroon_file
    from gridlrt.storage.gfal import bearer_prefixes

    if path.is_dir():
        raise CredentialsError(f"--macaroons {path}: a directory, not a macaroon file")
    try:
        bearers = read_macaroon_file(path)
    except CredentialsError as exc:
        raise CredentialsError(f"--macaroons: {exc}") from None
    for prefix in bearers:
        try:
            bearer_prefixes(prefix)
        except InputError as exc:
            raise CredentialsError(f"--macaroons {path}: {exc}") from None
    return sorted(bearers)


def copy_macaroons(source: Path, destination: Path) -> None:
    """Copy the macaroon file ``source`` to ``destination``, created 0600 (never readable by
    others for a moment)."""
    from gridlrt.staging.download import read_macaroon_file, write_macaroon_file

    write_macaroon_file(destination, read_macaroon_file(source))


def plan(
    settings: Settings,
    submitter: Submitter,
    *,
    step: str | None,
    count: int,
    resources: Resources,
    worker_args: list[str],
    steps_dir: Path | None = None,
    run_dir: Path | None = None,
    pipeline: str | None = None,
    macaroons: Path | None = None,
) -> Submission:
    """Render what :func:`submit` would send (the count is already decided). Pilots take
    tokens of ``step``, or any ready token when it is None; ``pipeline`` (the run they are
    for) only names the submission. ``macaroons``: a macaroon file (checked by
    :func:`check_macaroons`) the pilots get a 0600 copy of, ``macaroon.cred`` in the run
    directory."""
    if submitter.name in GRID and settings.pool_kind == "embedded":
        raise InputError(
            f"the pool {settings.pool} lives on this machine; grid pilots need a CouchDB pool "
            "they can reach: set --pool https://host:6984/db (or GRIDLRT_POOL)"
        )
    if steps_dir is not None and not steps_dir.is_dir():
        raise InputError(f"--steps-dir {steps_dir}: not a directory")
    if macaroons is not None:
        check_macaroons(macaroons)
    label = work_label(step, pipeline)
    record_id = new_record_id(submitter.name, label)
    run_dir = (run_dir or settings.runs_dir / record_id).expanduser().absolute()
    credentials = couchdb_auth(settings) if settings.pool_kind == "couchdb" else None
    sandbox: Path | None = None
    sandbox_id: str | None = None
    if submitter.name in GRID:
        sandbox, sandbox_id = pilot_sandbox(steps_dir.absolute() if steps_dir else None)
    request = PilotRequest(
        step=step,
        pipeline=pipeline,
        count=count,
        pool_url=settings.pool
        if settings.pool_kind == "embedded"
        else strip_credentials(settings.pool),
        pool_replicas=settings.pool_replica_urls if settings.pool_kind == "couchdb" else [],
        run_dir=run_dir,
        resources=resources,
        worker_args=worker_args,
        steps_dir=steps_dir.absolute() if steps_dir else None,
        credentials_file=run_dir / CREDENTIALS if credentials else None,
        macaroon_source=macaroons.expanduser().absolute() if macaroons else None,
        macaroon_file=run_dir / MACAROONS if macaroons else None,
        job_name=f"gridlrt-{label}",
        sandbox=sandbox,
        sandbox_id=sandbox_id,
    )
    return submitter.prepare(request)


def write_credentials(settings: Settings, path: Path) -> None:
    """The pool credentials as a 0600 ``username=/password=`` file (created 0600, never
    world-readable for a moment)."""
    auth = couchdb_auth(settings)
    if auth is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: private before writing
    with os.fdopen(fd, "w") as fh:
        fh.write(f"username={auth[0]}\npassword={auth[1]}\n")


def submit(
    settings: Settings, pool: TokenPool, submitter: Submitter, submission: Submission
) -> JobRecord:
    """Submit and record the jobs in the pool."""
    request = submission.request
    request.run_dir.mkdir(parents=True, exist_ok=True)
    if request.credentials_file is not None:
        write_credentials(settings, request.credentials_file)
    if request.macaroon_file is not None and request.macaroon_source is not None:
        copy_macaroons(request.macaroon_source, request.macaroon_file)
    job_ids = submitter.submit(submission)
    record = JobRecord(
        id=request.run_dir.name,
        backend=submitter.name,
        step=request.step,
        pipeline=request.pipeline,
        count=request.count,
        submitted=time.time(),
        run_dir=str(request.run_dir),
        host=os.uname().nodename,
        job_ids=job_ids,
        command=submission.command,
    )
    pool.put_record(RECORD_KIND, record.id, record.model_dump(mode="json"))
    return record


@dataclass(frozen=True)
class PilotSubmission:
    """What :func:`submit_pilots` did (or, in a dry run, would do)."""

    count: int
    """Pilots planned: the requested number, or ``-n auto``'s count."""
    pool_url: str
    """The pool, as it may be shown (no password)."""
    auto_cap: int | None
    """With ``-n auto``: the cap the count was limited to; else None."""
    checked: list[Token]
    """The tokens the step check saw (:func:`tokens_to_check`)."""
    submission: Submission | None
    """The rendered submission (None when there was nothing to submit)."""
    record: JobRecord | None
    """The job record written to the pool (None in a dry run or with nothing to submit)."""


def submit_pilots(
    settings: Settings,
    submitter: Submitter,
    *,
    step: str | None = None,
    pipeline: str | None = None,
    count: int | None,
    resources: Resources,
    worker_args: list[str],
    maximum: int | None = None,
    steps_dir: Path | None = None,
    run_dir: Path | None = None,
    check: Callable[[Token], None] | None = None,
    dry_run: bool = False,
    macaroons: Path | None = None,
) -> PilotSubmission:
    """``gridlrt submit`` as one call: open the pool, decide ``-n auto`` (``count`` None, at
    most ``maximum`` or the ``max_pilots`` setting: one pilot per todo token of ``step``, of
    any step when ``step`` is None, or per token of the widest remaining stage of the pipeline
    run ``pipeline``), render the submission, run ``check`` (the caller's step check: templates
    filled as a pilot will fill them) on every token of :func:`tokens_to_check`, then submit
    and record the jobs — or, with ``dry_run``, stop before anything is written. Nothing to
    do: ``count`` 0, no submission.

    Pilots take tokens of ``step`` only, or any ready token when it is None; ``pipeline``
    sizes, checks and names the submission (pilots then take any step, the run's tokens and
    any other ready token). :class:`InputError` for both, or for a run with no tokens.
    ``macaroons``: a macaroon file whose 0600 copy the pilots get (:func:`plan`)."""
    if step is not None and pipeline is not None:
        raise InputError("pilots take one step or a pipeline's steps: give step or pipeline")
    if macaroons is not None:
        check_macaroons(macaroons)  # before the pool is asked
    with open_pool(settings) as pool:
        stages = pipeline_stages(pool, pipeline) if pipeline is not None else None
        cap = None
        if count is None:
            cap = maximum or settings.max_pilots
            count = auto_count(pool, step, cap, stages=stages)
            if count == 0:
                return PilotSubmission(
                    count=0,
                    pool_url=pool.url,
                    auto_cap=cap,
                    checked=[],
                    submission=None,
                    record=None,
                )
        submission = plan(
            settings,
            submitter,
            step=step,
            pipeline=pipeline,
            count=count,
            resources=resources,
            worker_args=worker_args,
            steps_dir=steps_dir,
            run_dir=run_dir,
            macaroons=macaroons,
        )
        checked = tokens_to_check(pool, step, pipeline=pipeline, stages=stages)
        if check is not None:
            for token in checked:
                _check_token(check, token)
        record = None if dry_run else submit(settings, pool, submitter, submission)
    return PilotSubmission(
        count=count,
        pool_url=pool.url,
        auto_cap=cap,
        checked=checked,
        submission=submission,
        record=record,
    )


def _check_token(check: Callable[[Token], None], token: Token) -> None:
    """``check(token)``; a pipeline token's problem names its run and stage."""
    try:
        check(token)
    except InputError as exc:
        if token.pipeline is None or token.stage is None:
            raise
        raise InputError(f"pipeline {token.pipeline}, stage {token.stage}: {exc}") from None


def get_record(pool: TokenPool, record_id: str) -> JobRecord:
    try:
        return JobRecord.model_validate(pool.get_record(RECORD_KIND, record_id))
    except RecordNotFound:
        raise JobNotFound(
            f"no submission {record_id!r} in {pool.url}; see gridlrt jobs status for the ids"
        ) from None


def job_records(pool: TokenPool) -> list[JobRecord]:
    return [JobRecord.model_validate(r) for r in pool.records(RECORD_KIND)]


def submitter_for(record: JobRecord, env: Mapping[str, str] | None = None) -> Submitter:
    return get_submitter(record.backend, env, run_dir=Path(record.run_dir))


def refresh(pool: TokenPool, record: JobRecord, env: Mapping[str, str] | None = None) -> JobRecord:
    """Ask the backend for the statuses of the record's unfinished jobs and save them.

    A job the backend no longer knows keeps its last known final status. A gLite collection
    id is replaced by its nodes once the WMS lists them.
    """
    if not record.active:
        return record
    if record.backend == "local" and record.host != os.uname().nodename:
        return record  # local pilots can only be seen from their own machine
    submitter = submitter_for(record, env)
    asking = record.unfinished()
    answer = submitter.status(asking)
    job_ids = list(record.job_ids)
    states = dict(record.states)
    for collection, members in submitter.members.items():  # track a collection's nodes
        if collection in job_ids:
            at = job_ids.index(collection)
            job_ids[at : at + 1] = [m for m in members if m not in job_ids]
    # jobs already ended are not asked again, so a forgotten job keeps its final status
    states.update({job_id: status for job_id, status in answer.items() if job_id in job_ids})
    updated = record.model_copy(
        update={"job_ids": job_ids, "states": states, "refreshed": time.time()}
    )
    pool.put_record(RECORD_KIND, updated.id, updated.model_dump(mode="json"))
    return updated


@dataclass(frozen=True)
class JobsRefresh:
    """What :func:`refresh_jobs` found: every record (refreshed where its backend answered)
    and, per record id, the error of a backend that did not."""

    records: list[JobRecord]
    errors: dict[str, GridlrtError]


def refresh_jobs(
    pool: TokenPool, record_id: str | None = None, env: Mapping[str, str] | None = None
) -> JobsRefresh:
    """Refresh one submission (``record_id``; its backend's error is raised) or all of them:
    one backend down must not hide the others, so its record is kept as last saved and its
    error reported in :attr:`JobsRefresh.errors`."""
    if record_id is not None:
        return JobsRefresh([refresh(pool, get_record(pool, record_id), env)], {})
    records: list[JobRecord] = []
    errors: dict[str, GridlrtError] = {}
    for record in job_records(pool):
        try:
            records.append(refresh(pool, record, env))
        except GridlrtError as exc:
            errors[record.id] = exc
            records.append(record)
    return JobsRefresh(records, errors)


def cancel(
    pool: TokenPool,
    record: JobRecord,
    env: Mapping[str, str] | None = None,
    *,
    dry_run: bool = False,
) -> tuple[JobRecord, list[str]]:
    """Cancel the record's unfinished jobs (:meth:`JobRecord.unfinished` after a refresh);
    the record as saved and the job ids cancelled (``dry_run``: that would be, and nothing
    is cancelled)."""
    record = refresh(pool, record, env)
    active = record.unfinished()
    if dry_run:
        return record, active
    submitter = submitter_for(record, env)
    submitter.cancel(active)
    record = record.model_copy(update={"cancelled": True})
    pool.put_record(RECORD_KIND, record.id, record.model_dump(mode="json"))
    return record, active
