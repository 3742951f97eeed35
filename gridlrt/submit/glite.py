"""The ``glite`` backend: a gLite WMS parametric job (``jdl_templates/glite.jdl``), submitted
with ``glite-wms-job-submit -d <delegation> -o jobids.txt``; ``glite-wms-job-status`` and
``glite-wms-job-cancel --noint`` for states and cancel.

gLite WMS is retired, but old LOFAR recipes use it, so the backend stays small and faithful:
the submit command prints the collection's id after "Your job identifier is:" and writes it
to the ids file (``###Submitted Job Ids###`` then one URL per line); the status of a
collection lists each node ("Status info for the Job : URL" / "Current Status: ..."), and
:meth:`GliteSubmitter.status` reports those nodes as the pilots.

The mapping of the L&B job states (Undefined, Submitted, Waiting, Ready, Scheduled, Running,
Done, Cleared, Aborted, Cancelled, Unknown, Purged; L&B has no held state, and a job killed at
the site's wall-time limit is an ordinary ``Done(Exit Code !=0)`` or ``Aborted``):

=============================================  =========  ==================================
gLite ``Current Status:``                      JobState   note
=============================================  =========  ==================================
Submitted, Waiting, Ready, Scheduled           PENDING
Running                                        RUNNING
Done(Success)                                  COMPLETED
Cleared                                        COMPLETED  output retrieved (FAILED if its
                                                          ``Exit code:`` is not 0)
Done(Exit Code !=0), Done(Failed), Aborted     FAILED     ``Status Reason:`` says why
Done(Cancelled), Cancelled                     CANCELLED
Undefined, Unknown, Purged, anything else      UNKNOWN
=============================================  =========  ==================================

The reason is the status and its ``Status Reason:``; the exit code is the ``Exit code:`` line
of a finished job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from gridlrt.submit.base import Submitter, first_line, refused
from gridlrt.submit.grid import PILOT, pilot_arguments, pilot_script, sandbox_list
from gridlrt.submit.jdl import check_jdl, jdl_string
from gridlrt.submit.model import TERMINAL, JobState, JobStatus, PilotRequest, Submission, safe_word
from gridlrt.submit.templates import render_template

JDL = "pilot.jdl"
IDS = "jobids.txt"
DEFAULT_VO = "lofar"

_STATES = {  # keys as normalised by glite_state: lower case, no space before "("
    "submitted": JobState.PENDING,
    "waiting": JobState.PENDING,
    "ready": JobState.PENDING,
    "scheduled": JobState.PENDING,
    "running": JobState.RUNNING,
    "done(success)": JobState.COMPLETED,
    "cleared": JobState.COMPLETED,
    "done(exit code !=0)": JobState.FAILED,
    "done(failed)": JobState.FAILED,
    "done(cancelled)": JobState.CANCELLED,
    "aborted": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}
_URL = re.compile(r"https://\S+")
_ENTRY = re.compile(
    r"Status info for the Job\s*:\s*(?P<id>https://\S+)\s*\n\s*Current Status:\s*(?P<state>[^\n]+)"
    r"(?P<detail>(?:(?!Status info for the Job)[\s\S])*)"
)
_EXIT_CODE = re.compile(r"^\s*Exit code:\s*(-?\d+)\s*$", re.MULTILINE)
_REASON = re.compile(r"^\s*Status Reason:\s*(\S[^\n]*?)\s*$", re.MULTILINE)


def glite_state(text: str) -> JobState:
    """``Done(Success)`` (current UI), ``Done (Success)`` (older UIs), ``Running``, ..."""
    key = re.sub(r"\s*\(", "(", " ".join(text.split())).lower()
    return _STATES.get(key, JobState.UNKNOWN)


def parse_ids_file(text: str) -> list[str]:
    """Job ids from a ``-o`` file: ``###Submitted Job Ids###`` then one URL per line."""
    return [line.strip() for line in text.splitlines() if _URL.fullmatch(line.strip())]


def parse_status(stdout: str) -> list[tuple[str, JobStatus]]:
    """``(job id, status)`` for every "Status info for the Job" block, in order."""
    entries = []
    for match in _ENTRY.finditer(stdout):
        state_text = " ".join(match["state"].split())
        state = glite_state(state_text)
        code = _EXIT_CODE.search(match["detail"])
        exit_code = int(code.group(1)) if code and state in TERMINAL else None
        if state is JobState.COMPLETED and exit_code not in (None, 0):
            state = JobState.FAILED  # Cleared after a failed run
        why = _REASON.search(match["detail"])
        reason = f"{state_text}: {why.group(1)}" if why else state_text
        entries.append((match["id"], JobStatus(state=state, reason=reason, exit_code=exit_code)))
    return entries


class GliteSubmitter(Submitter):
    """Pilots as a gLite WMS parametric job (a collection of nodes)."""

    name = "glite"
    programs = ("glite-wms-job-submit", "glite-wms-job-status", "glite-wms-job-cancel")
    install_hint = "run on a gLite UI with a VOMS proxy (voms-proxy-init --voms lofar)"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        run_dir: Path | None = None,
        vo: str = DEFAULT_VO,
        delegation: str | None = None,
    ) -> None:
        super().__init__(env, run_dir=run_dir)
        self.vo = safe_word(vo, "VO")
        self.delegation = safe_word(delegation or self.env.get("USER") or "gridlrt", "delegation")

    def prepare(self, request: PilotRequest) -> Submission:
        res = request.resources
        minutes = max(1, int(res.walltime // 60))
        requirements = [f"other.GlueCEPolicyMaxWallClockTime >= {minutes}"]
        if res.sites:
            requirements.append(
                "("
                + " || ".join(f"RegExp({jdl_string(s)}, other.GlueCEUniqueID)" for s in res.sites)
                + ")"
            )
        requirements += [
            f"!RegExp({jdl_string(s)}, other.GlueCEUniqueID)" for s in res.banned_sites
        ]
        jdl = render_template(
            "glite.jdl",
            {
                "step": request.step or "any",
                "count": request.count,
                "arguments": pilot_arguments(request),
                "input_sandbox": sandbox_list(request),
                "vo": jdl_string(self.vo),
                "cpus": res.cpus,
                "requirements": " && ".join(requirements),
            },
        )
        check_jdl(jdl, "glite", check_files=False)
        run_dir = request.run_dir
        return Submission(
            backend=self.name,
            request=request,
            files={JDL: jdl, PILOT: pilot_script()},
            executable=[PILOT],
            command=[
                "glite-wms-job-submit",
                "-d",
                self.delegation,
                "-o",
                str(run_dir / IDS),
                str(run_dir / JDL),
            ],
        )

    def _submit(self, submission: Submission) -> list[str]:
        run_dir = submission.request.run_dir
        check_jdl(submission.files[JDL], "glite", base=run_dir)
        (run_dir / IDS).unlink(missing_ok=True)
        result = self.run(submission.command, cwd=run_dir)
        ids_file = run_dir / IDS
        ids = parse_ids_file(ids_file.read_text()) if ids_file.exists() else []
        if result.returncode != 0 or not ids:
            text = result.stdout + result.stderr
            error = next((ln for ln in text.splitlines() if "Error" in ln or "error" in ln), "")
            raise refused("glite-wms-job-submit refused the job", result, error or text)
        return ids

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Statuses of the asked ids; for a collection, also (and mainly) of its nodes."""
        ids = [safe_word(j, "job id") for j in job_ids]
        statuses: dict[str, JobStatus] = {}
        for job_id in ids:
            result = self.run(["glite-wms-job-status", "--noint", job_id])
            entries = parse_status(result.stdout)
            if result.returncode != 0 and not entries:
                why = first_line(result.stderr + result.stdout)
                statuses[job_id] = JobStatus(state=JobState.UNKNOWN, reason=why)
                continue
            statuses.update(entries)
            statuses.setdefault(job_id, JobStatus(state=JobState.UNKNOWN))
            nodes = [node for node, _ in entries if node != job_id]
            if nodes:
                self.members[job_id] = nodes
        return statuses

    def cancel(self, job_ids: Sequence[str]) -> None:
        ids = [safe_word(j, "job id") for j in job_ids]
        if not ids:
            return
        result = self.run(["glite-wms-job-cancel", "--noint", *ids])
        if result.returncode != 0:
            raise refused("glite-wms-job-cancel failed", result, result.stdout + result.stderr)
