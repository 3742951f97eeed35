"""The ``dirac`` backend: a DIRAC parametric job (``jdl_templates/dirac.jdl``), one pilot per
parameter, submitted with ``dirac-wms-job-submit``; ``dirac-wms-job-status`` and
``dirac-wms-job-kill`` for states and cancel. This is how SURF's grid takes jobs now.

The DIRAC client prints ``JobID = 123`` (or ``JobID = [123, 124]`` for a parametric job) and
``JobID=123 Status=Running; MinorStatus=...; ApplicationStatus=...; Site=...;`` per job.

The mapping of DIRAC's job states (``WorkloadManagementSystem/Client/JobStatus.py``; DIRAC has
no held state) and minor statuses (``JobMinorStatus.py``):

=====================================================  =========  ===========================
DIRAC Status (MinorStatus)                             JobState   note
=====================================================  =========  ===========================
Submitting, Received, Checking, Staging, Scouting,     PENDING
Waiting, Matched, Rescheduled
Running, Completing                                    RUNNING
Stalled                                                UNKNOWN    no heartbeat: may go back
                                                                  to Running, or to Failed
Done, Completed                                        COMPLETED
Failed ("Job has reached the CPU limit of the queue",  TIMEOUT    the watchdog's time limits
"Job has exceeded maximum wall clock time")
Failed (any other minor status)                        FAILED
Killed, Deleted                                        CANCELLED
anything else                                          UNKNOWN
=====================================================  =========  ===========================

The reason is ``Status; MinorStatus`` (and the ApplicationStatus when it says something);
``dirac-wms-job-status`` gives no exit code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from gridlrt.submit.base import Submitter, first_line, refused
from gridlrt.submit.grid import PILOT, pilot_arguments, pilot_script, sandbox_list
from gridlrt.submit.jdl import check_jdl, jdl_list
from gridlrt.submit.model import JobState, JobStatus, PilotRequest, Submission, safe_word
from gridlrt.submit.templates import render_template

IDS = "jobids.txt"
# DIRAC's JobManager refuses parametric jobs with more parameters than MaxParametricJobs
# (default MAX_PARAMETRIC_JOBS = 20); bigger submissions are split into several JDL files.
MAX_PARAMETRIC = 20

log = logging.getLogger(__name__)

_STATES = {
    "Submitting": JobState.PENDING,
    "Received": JobState.PENDING,
    "Checking": JobState.PENDING,
    "Staging": JobState.PENDING,
    "Scouting": JobState.PENDING,
    "Waiting": JobState.PENDING,
    "Matched": JobState.PENDING,
    "Rescheduled": JobState.PENDING,
    "Running": JobState.RUNNING,
    "Completing": JobState.RUNNING,
    "Stalled": JobState.UNKNOWN,
    "Done": JobState.COMPLETED,
    "Completed": JobState.COMPLETED,
    "Failed": JobState.FAILED,
    "Killed": JobState.CANCELLED,
    "Deleted": JobState.CANCELLED,
}
#: JobMinorStatus.JOB_EXCEEDED_CPU and JOB_EXCEEDED_WALL_CLOCK: the watchdog's time limits
_TIME_LIMITS = frozenset(
    {"Job has reached the CPU limit of the queue", "Job has exceeded maximum wall clock time"}
)
_SUBMITTED = re.compile(r"^JobID\s*=\s*(\[[\d,\s]*\]|\d+)\s*$", re.MULTILINE)
_STATUS = re.compile(r"^JobID=(\d+)\s+(.*)$", re.MULTILINE)


def dirac_state(text: str, minor: str = "") -> JobState:
    state = _STATES.get(text.strip(), JobState.UNKNOWN)
    if state is JobState.FAILED and minor.strip() in _TIME_LIMITS:
        return JobState.TIMEOUT
    return state


def parse_submitted(stdout: str) -> list[str]:
    """Job ids from ``dirac-wms-job-submit`` output (``JobID = 12`` / ``JobID = [12, 13]``)."""
    ids: list[str] = []
    for match in _SUBMITTED.finditer(stdout):
        ids += re.findall(r"\d+", match.group(1))
    return ids


def parse_status(stdout: str) -> dict[str, JobStatus]:
    """``{job id: status}`` from ``dirac-wms-job-status`` output."""
    statuses = {}
    for match in _STATUS.finditer(stdout):
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (item.partition("=") for item in match.group(2).split(";"))
            if value
        )
        status, minor = fields.get("Status", ""), fields.get("MinorStatus", "")
        words = [w for w in (status, minor) if w]
        if fields.get("ApplicationStatus", "Unknown") not in ("Unknown", ""):
            words.append(fields["ApplicationStatus"])
        statuses[match.group(1)] = JobStatus(
            state=dirac_state(status, minor), reason="; ".join(words) or None
        )
    return statuses


class DiracSubmitter(Submitter):
    """Pilots as a DIRAC parametric job."""

    name = "dirac"
    programs = ("dirac-wms-job-submit", "dirac-wms-job-status", "dirac-wms-job-kill")
    install_hint = (
        "source the DIRAC client environment (e.g. source /etc/diracosrc or diracos/diracosrc) "
        "and create a proxy with dirac-proxy-init -g lofar_user"
    )

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        run_dir: Path | None = None,
        max_parametric: int = MAX_PARAMETRIC,
    ) -> None:
        super().__init__(env, run_dir=run_dir)
        self.max_parametric = max_parametric

    def _jdl(self, request: PilotRequest, count: int) -> str:
        res = request.resources
        extra = []
        if res.sites:
            extra.append(f"  Site = {jdl_list(res.sites)};\n")
        if res.banned_sites:
            extra.append(f"  BannedSites = {jdl_list(res.banned_sites)};\n")
        if res.tags:
            extra.append(f"  Tags = {jdl_list(res.tags)};\n")
        jdl = render_template(
            "dirac.jdl",
            {
                "job_name": request.job_name,
                "step": request.step or "any",
                "count": count,
                "arguments": pilot_arguments(request),
                "input_sandbox": sandbox_list(request),
                "cpu_time": int(res.walltime * res.cpus),
                "cpus": res.cpus,
                "extra_attributes": "".join(extra),
            },
        )
        check_jdl(jdl, "dirac", check_files=False)
        return jdl

    def prepare(self, request: PilotRequest) -> Submission:
        """One parametric JDL per MAX_PARAMETRIC pilots (``pilot-0.jdl``, ...), one command."""
        sizes = [
            min(self.max_parametric, request.count - start)
            for start in range(0, request.count, self.max_parametric)
        ]
        files = {f"pilot-{k}.jdl": self._jdl(request, n) for k, n in enumerate(sizes)}
        run_dir = request.run_dir
        return Submission(
            backend=self.name,
            request=request,
            files={**files, PILOT: pilot_script()},
            executable=[PILOT],
            command=[
                "dirac-wms-job-submit",
                "-f",
                str(run_dir / IDS),
                *(str(run_dir / name) for name in files),
            ],
        )

    def _submit(self, submission: Submission) -> list[str]:
        run_dir = submission.request.run_dir
        for name, text in submission.files.items():
            if name.endswith(".jdl"):
                check_jdl(text, "dirac", base=run_dir)
        result = self.run(submission.command, cwd=run_dir)
        ids = parse_submitted(result.stdout)
        errors = [ln for ln in (result.stdout + result.stderr).splitlines() if "ERROR" in ln]
        if result.returncode != 0 or errors or not ids:
            if ids:  # some JDL files went through: say which jobs exist before failing
                log.warning("dirac: jobs %s were submitted before the error", ", ".join(ids))
            raise refused(
                "dirac-wms-job-submit refused the job",
                result,
                first_line("\n".join(errors) or result.stderr or result.stdout)
                + (f" (jobs {', '.join(ids)} were submitted nevertheless)" if ids else ""),
            )
        return ids

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        ids = [safe_word(j, "job id") for j in job_ids]
        if not ids:
            return {}
        result = self.run(["dirac-wms-job-status", *ids])
        statuses = parse_status(result.stdout)
        if result.returncode != 0 and not statuses:
            raise refused("dirac-wms-job-status failed", result, result.stdout)
        unknown = JobStatus(state=JobState.UNKNOWN, reason="not in DIRAC's job database")
        return {j: statuses.get(j, unknown) for j in ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        ids = [safe_word(j, "job id") for j in job_ids]
        if not ids:
            return
        result = self.run(["dirac-wms-job-kill", *ids])
        if result.returncode != 0:
            raise refused("dirac-wms-job-kill failed", result, result.stdout)
