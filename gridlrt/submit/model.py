"""The submit contract's data: resources, what to submit, the shared job-state enum, and the job
record kept in the pool.

Every backend maps its own states onto :class:`JobState`, so ``gridlrt jobs status`` reads the
same for a Slurm array, local processes, DIRAC or gLite jobs.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gridlrt.config import redact_url
from gridlrt.errors import InputError


class JobState(StrEnum):
    """One pilot job's state, whatever the backend (after Parsl's ``parsl.jobs.states``).

    Each backend module documents how its own states map onto these.
    """

    PENDING = "pending"  # accepted, waiting for a slot (Slurm PENDING, DIRAC Waiting, ...)
    HELD = "held"  # will not start or go on until someone releases it (a hold, a suspension)
    RUNNING = "running"
    COMPLETED = "completed"  # ended with exit code 0
    TIMEOUT = "timeout"  # ended at its wall/CPU time limit: a pilot's normal end, not a failure
    FAILED = "failed"  # ended badly: non-zero exit, node failure, out of memory, aborted
    CANCELLED = "cancelled"  # cancelled or killed by the user or an administrator
    UNKNOWN = "unknown"  # the backend no longer knows the job (purged) or cannot say (stalled)


TERMINAL = frozenset({JobState.COMPLETED, JobState.TIMEOUT, JobState.FAILED, JobState.CANCELLED})


class JobStatus(BaseModel):
    """What a backend says about one job: its state, why (in the backend's own words, e.g.
    ``PENDING (JobHeldUser)``, ``Failed; Application Finished With Errors``), and its exit
    code once it has ended (negative: killed by that signal; None: not known)."""

    model_config = ConfigDict(frozen=True)

    state: JobState
    reason: str | None = None
    exit_code: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_state(cls, value: Any) -> Any:
        # job records written before statuses existed hold the bare state ("running")
        return {"state": value} if isinstance(value, str) else value


def wait_status_code(raw: int) -> int:
    """A POSIX wait status (as Slurm's ``squeue -O exit_code`` prints it) as an exit code:
    the process's exit code, or minus the signal that killed it."""
    signal_number = raw & 0x7F
    return -signal_number if signal_number else (raw >> 8) & 0xFF


_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.,:/@%+=-]+$")


def safe_word(value: str, what: str) -> str:
    """``value`` if it is one word that needs no quoting in a JDL string, a shell word or an
    ``#SBATCH`` line (letters, digits and ``_.,:/@%+=-``), else an :class:`InputError`."""
    if not _SAFE_WORD.fullmatch(value):
        raise InputError(
            f"{what} {value!r} may only contain letters, digits and _.,:/@%+=- "
            "(no spaces or quotes: it goes into job descriptions)"
        )
    return value


def work_label(step: str | None, pipeline: str | None) -> str:
    """What pilots take, as one word (record ids, job names): the step they are limited to,
    else the pipeline run they were submitted for, else ``any``."""
    return step or pipeline or "any"


class Resources(BaseModel):
    """What each pilot asks of the batch system. Unset fields are left to the site's defaults."""

    cpus: int = Field(default=1, ge=1, le=1024, description="cores per pilot")
    memory_mb: int | None = Field(default=None, ge=1, description="memory per pilot, MB")
    walltime: float = Field(default=12 * 3600.0, gt=0, description="seconds a pilot may run")
    max_running: int | None = Field(
        default=None, ge=1, description="Slurm: at most this many array tasks at once (%N)"
    )
    partition: str | None = None
    account: str | None = None
    sites: list[str] = Field(default_factory=list, description="DIRAC/gLite: only these sites")
    banned_sites: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list, description="DIRAC Tags (e.g. 8Processors)")

    @field_validator("partition", "account")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        return None if value is None else safe_word(value, "partition/account")

    @field_validator("sites", "banned_sites", "tags")
    @classmethod
    def _words(cls, values: list[str]) -> list[str]:
        return [safe_word(v, "site/tag") for v in values]


class PilotRequest(BaseModel):
    """N pilots: everything a backend needs to render its job description.

    Pilots take tokens of ``step`` only, or, with ``step`` None, any ready token (tokens carry
    their step: what a pipeline's pilots need). ``pool_url`` must not carry credentials: they
    travel as the 0600 file ``credentials_file`` (shipped with the job, read by the pilot),
    never in argv or JDL; macaroons for WebDAV doors likewise, as the 0600 ``macaroon_file``.
    """

    step: str | None = Field(default=None, description="only tokens of this step; None: any")
    pipeline: str | None = Field(
        default=None,
        description="the pipeline run the pilots were sized for (a name only: they take any "
        "ready token)",
    )
    count: int = Field(ge=1, le=100_000)
    pool_url: str
    pool_replicas: list[str] = Field(
        default_factory=list,
        description="the pool's other copies (no credentials), see the pool_replicas setting",
    )
    run_dir: Path = Field(description="where scripts, JDL, logs and job ids of this submission go")
    resources: Resources = Field(default_factory=Resources)
    worker_args: list[str] = Field(
        default_factory=list, description="extra `gridlrt worker run` options (no secrets)"
    )
    steps_dir: Path | None = Field(default=None, description="user step configs to ship")
    credentials_file: Path | None = Field(
        default=None, description="0600 pool credentials in run_dir, or None (no auth)"
    )
    macaroon_source: Path | None = Field(
        default=None,
        description="the user's 0600 macaroon file (gridlrt submit --macaroons), or None",
    )
    macaroon_file: Path | None = Field(
        default=None,
        description="its 0600 copy in run_dir that pilots read (GRIDLRT_MACAROON_FILE), or None",
    )
    job_name: str = "gridlrt"
    sandbox: Path | None = Field(
        default=None, description="grid backends: the pilot sandbox tarball to ship"
    )
    sandbox_id: str | None = Field(default=None, description="its sha256")

    @field_validator("step", "pipeline", "job_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else safe_word(value, "step/pipeline/job name")

    @field_validator("pool_replicas")
    @classmethod
    def _no_replica_secrets(cls, values: list[str]) -> list[str]:
        return [cls._no_secrets(value) for value in values]

    @field_validator("pool_url")
    @classmethod
    def _no_secrets(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.username or parts.password:
            raise InputError(
                f"pool URL {redact_url(value)} carries credentials; they go in the "
                "credentials file, not in a job description"
            )
        return safe_word(value, "pool URL")

    @field_validator("worker_args")
    @classmethod
    def _args(cls, values: list[str]) -> list[str]:
        return [safe_word(v, "worker option") for v in values]


class Submission(BaseModel):
    """A rendered, checked submission: the files to write and the command to run.

    ``--dry-run`` prints this and stops; :meth:`Submitter.submit` writes ``files`` into the
    run directory, runs ``command`` there and parses the job ids from its output.
    """

    backend: str
    request: PilotRequest
    files: dict[str, str] = Field(description="file name in run_dir -> rendered text")
    executable: list[str] = Field(default_factory=list, description="files to chmod 0755")
    command: list[str]


class JobRecord(BaseModel):
    """One submission as kept in the pool: which backend, which jobs, their last known state."""

    id: str
    backend: str
    step: str | None = Field(default=None, description="the pilots' step; None: any step")
    pipeline: str | None = Field(default=None, description="the pipeline run they were for")
    count: int
    submitted: float
    run_dir: str
    host: str
    job_ids: list[str]
    command: list[str]
    states: dict[str, JobStatus] = Field(
        default_factory=dict, description="job id -> its last known state, reason, exit code"
    )
    refreshed: float | None = None
    cancelled: bool = False

    @property
    def takes(self) -> str:
        """What the pilots take, for people: ``average``, ``any (pipeline cal-target)``,
        ``any``."""
        if self.step is not None:
            return self.step
        return f"any (pipeline {self.pipeline})" if self.pipeline else "any"

    def state(self, job_id: str) -> JobState:
        """The job's last known state (a job never seen is pending)."""
        status = self.states.get(job_id)
        return JobState.PENDING if status is None else status.state

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state (jobs never seen count as pending)."""
        result = {state.value: 0 for state in JobState}
        for job_id in self.job_ids:
            result[self.state(job_id).value] += 1
        return result

    def unfinished(self) -> list[str]:
        """Job ids not known to have ended (never seen, pending, held, running or unknown)."""
        return [j for j in self.job_ids if self.state(j) not in TERMINAL]

    @property
    def active(self) -> bool:
        """Some job may still be pending or running."""
        return bool(self.unfinished())
