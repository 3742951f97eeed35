"""The ``slurm`` backend: one ``sbatch`` array job, one pilot per array task.

The script (``jdl_templates/slurm.sh``) runs ``python -m gridlrt worker run`` with the
submitting machine's Python, so it expects gridlrt on a file system the compute nodes share
(as on SURF's Spider). ``--array=0-(N-1)%M`` caps how many pilots run at once.

States come from ``squeue -t all`` while slurmctld keeps the job, then from ``sacct`` when
the cluster has accounting; a job neither knows is UNKNOWN.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from gridlrt.errors import InputError, SubmitError
from gridlrt.submit.base import SharedPythonSubmitter, first_line
from gridlrt.submit.model import JobState, PilotRequest, Submission, safe_word
from gridlrt.submit.pilot_args import slurm_time, worker_command
from gridlrt.submit.templates import render_template

SCRIPT = "slurm.sh"

# https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
_STATES = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SUSPENDED": JobState.PENDING,
    "STOPPED": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "DEADLINE": JobState.FAILED,
    "FAILED": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
}
_ARRAY_ID = re.compile(r"^(\d+)_(\d+)$")


def slurm_state(text: str) -> JobState:
    """A Slurm state (``CANCELLED by 0`` included) as a :class:`JobState`."""
    word = text.split()[0].rstrip("+").upper() if text.strip() else ""
    return _STATES.get(word, JobState.UNKNOWN)


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
        credentials = ""
        if request.credentials_file is not None:
            path = _path_word(request.credentials_file, "credentials file")
            credentials = f"export GRIDLRT_POOL_CREDENTIALS={shlex.quote(path)}"
        script = render_template(
            SCRIPT,
            {
                "step": request.step,
                "job_name": request.job_name,
                "last_index": request.count - 1,
                "array_cap": f"%{res.max_running}" if res.max_running else "",
                "cpus": res.cpus,
                "walltime": slurm_time(res.walltime),
                "run_dir": _path_word(request.run_dir, "run directory"),
                "extra_directives": "\n".join(directives),
                "credentials_export": credentials,
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
            raise SubmitError(f"sbatch refused the job: {first_line(result.stderr)}")
        job_id = result.stdout.strip().split(";")[0]  # "123" or "123;cluster"
        if not job_id.isdigit():
            raise SubmitError(f"sbatch printed {first_line(result.stdout)!r}, not a job id")
        (submission.request.run_dir / "slurm_job_id").write_text(job_id + "\n")
        return [f"{job_id}_{i}" for i in range(submission.request.count)]

    def _squeue(self, array_ids: set[str]) -> dict[str, JobState]:
        result = self.run(
            ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(sorted(array_ids)), "-o", "%i %T"]
        )
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return {}
            raise SubmitError(f"squeue failed: {first_line(result.stderr)}")
        found = {}
        for line in result.stdout.splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                found[parts[0]] = slurm_state(parts[1])
        return found

    def _sacct(self, array_ids: set[str]) -> dict[str, JobState]:
        """Final states from accounting, when the cluster has it (empty otherwise)."""
        result = self.run(
            ["sacct", "-n", "-P", "-X", "-j", ",".join(sorted(array_ids)), "-o", "JobID,State"]
        )
        if result.returncode != 0:
            return {}  # no accounting storage on this cluster
        found = {}
        for line in result.stdout.splitlines():
            job_id, _, state = line.partition("|")
            if _ARRAY_ID.match(job_id):
                found[job_id] = slurm_state(state)
        return found

    def status(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        arrays = {m.group(1) for j in job_ids if (m := _ARRAY_ID.match(safe_word(j, "job id")))}
        if not arrays:
            return {j: JobState.UNKNOWN for j in job_ids}
        found = self._squeue(arrays)
        if any(j not in found for j in job_ids):
            with contextlib.suppress(SubmitError):
                found = {**self._sacct(arrays), **found}
        return {j: found.get(j, JobState.UNKNOWN) for j in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        result = self.run(["scancel", *(safe_word(j, "job id") for j in job_ids)])
        if result.returncode != 0:
            raise SubmitError(f"scancel failed: {first_line(result.stderr)}")
