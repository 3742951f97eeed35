"""Submitting pilots for a step and keeping track of them: the glue between settings, the pool
(how many tokens are to do; job records), the pilot sandbox and a backend.

* :func:`worker_arguments` - the options every pilot gets on its command line, with the
  output root checked (grid storage for grid pilots, no password in it);
* :func:`plan` - decide the count (``auto``: the step's todo tokens, capped), build the pilot
  sandbox for grid backends, and render the submission (nothing is submitted);
* :func:`submit` - write the credentials file (0600), submit, and save a :class:`JobRecord`;
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
from gridlrt.errors import GridlrtError, InputError, JobNotFound, RecordNotFound
from gridlrt.submit.base import Submitter
from gridlrt.submit.dirac import DiracSubmitter
from gridlrt.submit.glite import GliteSubmitter
from gridlrt.submit.grid import CREDENTIALS
from gridlrt.submit.local import LocalSubmitter
from gridlrt.submit.model import (
    JobRecord,
    PilotRequest,
    Resources,
    Submission,
)
from gridlrt.submit.slurm import SlurmSubmitter
from gridlrt.tokens import Token, TokenPool, TokenStatus, open_pool

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[Submitter]] = {
    "local": LocalSubmitter,
    "slurm": SlurmSubmitter,
    "dirac": DiracSubmitter,
    "glite": GliteSubmitter,
}
GRID = frozenset({"dirac", "glite"})
RECORD_KIND = "job"


def get_submitter(backend: str, env: Mapping[str, str] | None = None, **options: Any) -> Submitter:
    """The submitter called ``backend`` (local, slurm, dirac, glite)."""
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise InputError(
            f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        ) from None
    return cls(env, **options)


def auto_count(pool: TokenPool, step: str, maximum: int) -> int:
    """``-n auto``: one pilot per todo token of ``step``, at most ``maximum``."""
    todo = pool.overview().total(TokenStatus.TODO, step)
    return min(todo, maximum)


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


def new_record_id(backend: str, step: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{backend}-{step}-{secrets.token_hex(2)}"


def pilot_sandbox(steps_dir: Path | None, cache: Path | None = None) -> tuple[Path, str]:
    """The pilot sandbox (steps + gridlrt runtime) for grid jobs, content-addressed in
    ``cache`` (so resubmitting the same steps reuses the file): its path and sha256."""
    from gridlrt.sandbox.bundle import build_pilot_sandbox

    cache = cache or data_dir() / "pilot-sandboxes"
    cache.mkdir(parents=True, exist_ok=True)
    sandbox = build_pilot_sandbox(steps_dir, cache)
    return sandbox.path, sandbox.id


def plan(
    settings: Settings,
    submitter: Submitter,
    *,
    step: str,
    count: int,
    resources: Resources,
    worker_args: list[str],
    steps_dir: Path | None = None,
    run_dir: Path | None = None,
) -> Submission:
    """Render what :func:`submit` would send (the count is already decided)."""
    if submitter.name in GRID and settings.pool_kind == "embedded":
        raise InputError(
            f"the pool {settings.pool} lives on this machine; grid pilots need a CouchDB pool "
            "they can reach: set --pool https://host:6984/db (or GRIDLRT_POOL)"
        )
    if steps_dir is not None and not steps_dir.is_dir():
        raise InputError(f"--steps-dir {steps_dir}: not a directory")
    record_id = new_record_id(submitter.name, step)
    run_dir = (run_dir or settings.runs_dir / record_id).expanduser().absolute()
    credentials = couchdb_auth(settings) if settings.pool_kind == "couchdb" else None
    sandbox: Path | None = None
    sandbox_id: str | None = None
    if submitter.name in GRID:
        sandbox, sandbox_id = pilot_sandbox(steps_dir.absolute() if steps_dir else None)
    request = PilotRequest(
        step=step,
        count=count,
        pool_url=settings.pool
        if settings.pool_kind == "embedded"
        else strip_credentials(settings.pool),
        run_dir=run_dir,
        resources=resources,
        worker_args=worker_args,
        steps_dir=steps_dir.absolute() if steps_dir else None,
        credentials_file=run_dir / CREDENTIALS if credentials else None,
        job_name=f"gridlrt-{step}",
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
    job_ids = submitter.submit(submission)
    record = JobRecord(
        id=request.run_dir.name,
        backend=submitter.name,
        step=request.step,
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
    submission: Submission | None
    """The rendered submission (None when there was nothing to submit)."""
    record: JobRecord | None
    """The job record written to the pool (None in a dry run or with nothing to submit)."""


def submit_pilots(
    settings: Settings,
    submitter: Submitter,
    *,
    step: str,
    count: int | None,
    resources: Resources,
    worker_args: list[str],
    maximum: int | None = None,
    steps_dir: Path | None = None,
    run_dir: Path | None = None,
    check: Callable[[Token], None] | None = None,
    dry_run: bool = False,
) -> PilotSubmission:
    """``gridlrt submit`` as one call: open the pool, decide ``-n auto`` (``count`` None: one
    pilot per todo token of ``step``, at most ``maximum`` or the ``max_pilots`` setting),
    render the submission, run ``check`` on the first todo token (the caller's step check:
    templates filled as a pilot will fill them), then submit and record the jobs — or, with
    ``dry_run``, stop before anything is written. Nothing to do: ``count`` 0, no submission."""
    with open_pool(settings) as pool:
        cap = None
        if count is None:
            cap = maximum or settings.max_pilots
            count = auto_count(pool, step, cap)
            if count == 0:
                return PilotSubmission(
                    count=0, pool_url=pool.url, auto_cap=cap, submission=None, record=None
                )
        submission = plan(
            settings,
            submitter,
            step=step,
            count=count,
            resources=resources,
            worker_args=worker_args,
            steps_dir=steps_dir,
            run_dir=run_dir,
        )
        first = next(iter(pool.tokens(TokenStatus.TODO, step)), None)
        if check is not None and first is not None:
            check(first)
        record = None if dry_run else submit(settings, pool, submitter, submission)
    return PilotSubmission(
        count=count, pool_url=pool.url, auto_cap=cap, submission=submission, record=record
    )


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
