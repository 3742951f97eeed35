"""The ``slurm`` backend: one ``sbatch`` array job, one pilot per array task.

The script (``jdl_templates/slurm.sh``) runs ``python -m gridlrt worker run`` with the
submitting machine's Python, so it expects gridlrt on a file system the compute nodes share
(as on SURF's Spider). ``--array=0-(N-1)%M`` caps how many pilots run at once.

States come from ``squeue -t all`` (state, reason, wait status) while slurmctld keeps the
job, then from ``sacct`` (state, ``ExitCode`` as ``code:signal``, reason) when the cluster has
accounting; a job neither knows is UNKNOWN. The mapping
(https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES):

==========================================================  =========  =====================
Slurm state                                                 JobState   note
==========================================================  =========  =====================
PENDING, CONFIGURING, REQUEUED, REQUEUE_FED                 PENDING
PENDING with reason JobHeldUser / JobHeldAdmin              HELD       ``scontrol release``
REQUEUE_HOLD, RESV_DEL_HOLD, SUSPENDED, STOPPED             HELD       waits for an admin/user
RUNNING, COMPLETING, SIGNALING, STAGE_OUT, RESIZING         RUNNING
COMPLETED                                                   COMPLETED
TIMEOUT, DEADLINE                                           TIMEOUT    hit --time / --deadline
FAILED, BOOT_FAIL, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED,     FAILED
SPECIAL_EXIT
CANCELLED, REVOKED                                          CANCELLED
anything else                                               UNKNOWN
==========================================================  =========  =====================

The reason is Slurm's state and, when it gives one, its reason (``PENDING (Priority)``,
``FAILED (NonZeroExitCode)``); the exit code is the batch script's (minus the signal that
killed it), once the job has ended.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from gridlrt.errors import InputError, SubmitError
from gridlrt.submit.base import SharedPythonSubmitter, first_line, refused
from gridlrt.submit.model import (
    TERMINAL,
    JobState,
    JobStatus,
    PilotRequest,
    Submission,
    safe_word,
    wait_status_code,
)
from gridlrt.submit.pilot_args import slurm_time, worker_command
from gridlrt.submit.templates import render_template

SCRIPT = "slurm.sh"

_STATES = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.HELD,
    "RESV_DEL_HOLD": JobState.HELD,
    "SUSPENDED": JobState.HELD,
    "STOPPED": JobState.HELD,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,
    "FAILED": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
}
#: pending reasons that mean "held until released" (squeue's JobHeldUser / JobHeldAdmin)
_HELD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
_ARRAY_ID = re.compile(r"^(\d+)_(\d+)$")
#: squeue's fields, '|'-separated (the reason last: it may hold spaces)
SQUEUE_FORMAT = "JobArrayID:|,State:|,exit_code:|,Reason:"


def slurm_state(text: str) -> JobState:
    """A Slurm state (``CANCELLED by 0`` included) as a :class:`JobState`."""
    word = text.split()[0].rstrip("+").upper() if text.strip() else ""
    return _STATES.get(word, JobState.UNKNOWN)


def slurm_status(state_text: str, reason: str = "", exit_code: str = "") -> JobStatus:
    """A job's status from Slurm's state, reason and exit code (``squeue``'s wait status such
    as ``768``, or ``sacct``'s ``3:0``; ignored until the job has ended)."""
    state = slurm_state(state_text)
    reason = reason.strip().strip("()")
    if state is JobState.PENDING and reason in _HELD_REASONS:
        state = JobState.HELD
    words = " ".join(state_text.split())
    if reason and reason != "None":
        words += f" ({reason})"
    code: int | None = None
    if state in TERMINAL:
        number, _, signal_number = exit_code.strip().partition(":")
        if signal_number.isdigit() and number.isdigit():  # sacct: code:signal
            code = -int(signal_number) if int(signal_number) else int(number)
        elif number.isdigit():  # squeue: the raw wait status
            code = wait_status_code(int(number))
    return JobStatus(state=state, reason=words or None, exit_code=code)


def parse_squeue(stdout: str) -> dict[str, JobStatus]:
    """``{job id: status}`` from ``squeue -h -O`` :data:`SQUEUE_FORMAT` output."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split("|", 3)
        if len(parts) == 4 and parts[0].strip():
            job_id, state, code, reason = (p.strip() for p in parts)
            found[job_id] = slurm_status(state, reason, code)
    return found


def parse_sacct(stdout: str) -> dict[str, JobStatus]:
    """``{array task id: status}`` from ``sacct -n -P -o JobID,State,ExitCode,Reason``."""
    found = {}
    for line in stdout.splitlines():
        job_id, state, code, reason = ([*line.split("|", 3), "", "", ""])[:4]
        if _ARRAY_ID.match(job_id):
            found[job_id] = slurm_status(state, reason, code)
    return found


def _path_word(path: Path, what: str) -> str:
    text = str(path)
    if any(c.isspace() or c in "\"'\\$`" for c in text):
        raise InputError(f"{what} {text!r} must not contain spaces, quotes or '$' for Slurm")
    return text


class SlurmSubmitter(SharedPythonSubmitter):
    """Pilots as a Slurm array job."""

    name = "slurm"
    programs = ("sbatch", "squeue", "scancel")
    install_hint = "run on the cluster's login node (Slurm clients: sbatch, squeue, scancel)"

    def prepare(self, request: PilotRequest) -> Submission:
        res = request.resources
        directives = []
        if res.memory_mb is not None:
            directives.append(f"#SBATCH --mem={res.memory_mb}M")
        if res.partition:
            directives.append(f"#SBATCH --partition={res.partition}")
        if res.account:
            directives.append(f"#SBATCH --account={res.account}")
        exports = []
        if request.credentials_file is not None:
            path = _path_word(request.credentials_file, "credentials file")
            exports.append(f"export GRIDLRT_POOL_CREDENTIALS={shlex.quote(path)}")
        if request.macaroon_file is not None:
            path = _path_word(request.macaroon_file, "macaroon file")
            exports.append(f"export GRIDLRT_MACAROON_FILE={shlex.quote(path)}")
        script = render_template(
            SCRIPT,
            {
                "step": request.step or "any",
                "job_name": request.job_name,
                "last_index": request.count - 1,
                "array_cap": f"%{res.max_running}" if res.max_running else "",
                "cpus": res.cpus,
                "walltime": slurm_time(res.walltime),
                "run_dir": _path_word(request.run_dir, "run directory"),
                "extra_directives": "\n".join(directives),
                "credentials_export": "\n".join(exports),
                "python": shlex.quote(self.python),
                "worker_args": shlex.join(worker_command(request, local=True)[2:]),
            },
        )
        return Submission(
            backend=self.name,
            request=request,
            files={SCRIPT: script},
            executable=[SCRIPT],
            command=["sbatch", "--parsable", str(request.run_dir / SCRIPT)],
        )

    def _submit(self, submission: Submission) -> list[str]:
        result = self.run(submission.command, cwd=submission.request.run_dir)
        if result.returncode != 0:
            raise refused("sbatch refused the job", result)
        job_id = result.stdout.strip().split(";")[0]  # "123" or "123;cluster"
        if not job_id.isdigit():
            raise refused("sbatch printed no job id", result, repr(first_line(result.stdout)))
        (submission.request.run_dir / "slurm_job_id").write_text(job_id + "\n")
        return [f"{job_id}_{i}" for i in range(submission.request.count)]

    def _squeue(self, array_ids: set[str]) -> dict[str, JobStatus]:
        result = self.run(
            ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(sorted(array_ids)),
             "-O", SQUEUE_FORMAT]
        )  # fmt: skip
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return {}
            raise refused("squeue failed", result)
        return parse_squeue(result.stdout)

    def _sacct(self, array_ids: set[str]) -> dict[str, JobStatus]:
        """Final states from accounting, when the cluster has it (empty otherwise)."""
        result = self.run(
            ["sacct", "-n", "-P", "-X", "-j", ",".join(sorted(array_ids)),
             "-o", "JobID,State,ExitCode,Reason"]
        )  # fmt: skip
        if result.returncode != 0:
            return {}  # no accounting storage on this cluster
        return parse_sacct(result.stdout)

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        arrays = {m.group(1) for j in job_ids if (m := _ARRAY_ID.match(safe_word(j, "job id")))}
        unknown = JobStatus(state=JobState.UNKNOWN, reason="not in squeue or sacct")
        if not arrays:
            return {j: unknown for j in job_ids}
        found = self._squeue(arrays)
        if any(j not in found for j in job_ids):
            with contextlib.suppress(SubmitError):
                found = {**self._sacct(arrays), **found}
        return {j: found.get(j, unknown) for j in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        result = self.run(["scancel", *(safe_word(j, "job id") for j in job_ids)])
        if result.returncode != 0:
            raise refused("scancel failed", result)
