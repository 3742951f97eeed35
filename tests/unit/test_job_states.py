"""Job states like Parsl's (issue 13, item 2): every backend's own states mapped onto
:class:`JobState` with a reason and an exit code, read from the tools' real output lines, kept
in the job record (old records still read), and :class:`SubmitError` carrying the command."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gridlrt.errors import SubmitError
from gridlrt.submit.dirac import parse_status as dirac_status
from gridlrt.submit.glite import parse_status as glite_status
from gridlrt.submit.model import TERMINAL, JobRecord, JobState, JobStatus, wait_status_code
from gridlrt.submit.slurm import SlurmSubmitter, parse_sacct, parse_squeue

# squeue -h -r -t all -O "JobArrayID:|,State:|,exit_code:|,Reason:" on the one-node test
# cluster (Slurm 22.05): an array that exited 3, a held array (sbatch --hold), a job suspended
# with scontrol suspend, a job past its --time=1 (the limit hit after 67 s), a waiting one
SQUEUE = """\
2_0|FAILED|768|NonZeroExitCode
1_0|PENDING|0|JobHeldUser
3|SUSPENDED|0|None
5|TIMEOUT|15|TimeLimit
7_1|PENDING|0|Resources
"""
# sacct -n -P -X -o JobID,State,ExitCode,Reason (ExitCode is code:signal)
SACCT = """\
12_0|TIMEOUT|0:15|TimeLimit
12_1|CANCELLED by 0|0:15|None
12_2|COMPLETED|0:0|None
12_3|OUT_OF_MEMORY|0:125|OutOfMemory
12|FAILED|1:0|NonZeroExitCode
"""


def test_slurm_states_reasons_and_exit_codes() -> None:
    found = parse_squeue(SQUEUE)
    assert found["2_0"] == JobStatus(
        state=JobState.FAILED, reason="FAILED (NonZeroExitCode)", exit_code=3
    )
    assert found["1_0"] == JobStatus(state=JobState.HELD, reason="PENDING (JobHeldUser)")
    assert found["3"] == JobStatus(state=JobState.HELD, reason="SUSPENDED")
    # a pilot at its wall time is a normal end, not a failure; SIGTERM ended the script
    assert found["5"] == JobStatus(
        state=JobState.TIMEOUT, reason="TIMEOUT (TimeLimit)", exit_code=-15
    )
    assert found["7_1"] == JobStatus(state=JobState.PENDING, reason="PENDING (Resources)")

    final = parse_sacct(SACCT)
    assert set(final) == {"12_0", "12_1", "12_2", "12_3"}  # array tasks only
    assert final["12_0"].state is JobState.TIMEOUT and final["12_0"].exit_code == -15
    assert final["12_1"] == JobStatus(
        state=JobState.CANCELLED, reason="CANCELLED by 0", exit_code=-15
    )
    assert final["12_2"] == JobStatus(state=JobState.COMPLETED, reason="COMPLETED", exit_code=0)
    assert final["12_3"].state is JobState.FAILED and final["12_3"].reason == (
        "OUT_OF_MEMORY (OutOfMemory)"
    )


@pytest.mark.parametrize(
    ("raw", "code"), [(0, 0), (768, 3), (256 * 255, 255), (15, -15), (9 | 0x80, -9)]
)
def test_wait_status_code(raw: int, code: int) -> None:
    assert wait_status_code(raw) == code


# dirac-wms-job-status prints one such line per known job (note the trailing space)
DIRAC = "".join(
    f"JobID={job} Status={status}; MinorStatus={minor}; ApplicationStatus={app}; Site={site}; \n"
    for job, status, minor, app, site in [
        (101, "Done", "Execution Complete", "Unknown", "LCG.SARA.nl"),
        (102, "Failed", "Job has exceeded maximum wall clock time", "Unknown", "LCG.SARA.nl"),
        (103, "Failed", "Job has reached the CPU limit of the queue", "Unknown", "LCG.SARA.nl"),
        (104, "Failed", "Application Finished With Errors", "Exit code 1", "LCG.SARA.nl"),
        (105, "Stalled", "Job stalled: pilot not running", "Unknown", "LCG.SARA.nl"),
        (106, "Waiting", "Pilot Agent Submission", "Unknown", "ANY"),
        (107, "Killed", "Marked for termination", "Unknown", "ANY"),
        (108, "Scouting", "Unknown", "Unknown", "ANY"),
    ]
)


def test_dirac_states_and_reasons() -> None:
    found = dirac_status(DIRAC)
    assert found["101"] == JobStatus(state=JobState.COMPLETED, reason="Done; Execution Complete")
    assert found["102"].state is found["103"].state is JobState.TIMEOUT
    assert found["104"] == JobStatus(
        state=JobState.FAILED,
        reason="Failed; Application Finished With Errors; Exit code 1",
    )
    # no heartbeat: DIRAC may bring it back to Running, so it is not final
    assert found["105"].state is JobState.UNKNOWN and found["105"].state not in TERMINAL
    assert found["105"].reason == "Stalled; Job stalled: pilot not running"
    assert found["106"].state is found["108"].state is JobState.PENDING
    assert found["107"].state is JobState.CANCELLED
    assert all(status.exit_code is None for status in found.values())


GLITE = """
======================= glite-wms-job-status Success =====================
BOOKKEEPING INFORMATION:

Status info for the Job : https://wms.grid.sara.nl:9000/parent_aaaaaaaaaaaaaaaaaa
Current Status:     Done(Exit Code !=0)
Exit code:          1
Submitted:          Mon Nov 30 10:00:00 2026 CET
==========================================================================

- Nodes information for: 
    Status info for the Job : https://wms.grid.sara.nl:9000/node0_aaaaaaaaaaaaaaaaaa
    Current Status:     Done(Exit Code !=0)
    Exit code:          1
    Status Reason:      Job Terminated Successfully
    Destination:        ce.grid.sara.nl:8443/cream-pbs-medium
    Submitted:          Mon Nov 30 10:00:00 2026 CET
==========================================================================
    
    Status info for the Job : https://wms.grid.sara.nl:9000/node1_aaaaaaaaaaaaaaaaaa
    Current Status:     Aborted
    Status Reason:      Job RetryCount (0) hit
    Submitted:          Mon Nov 30 10:00:00 2026 CET
==========================================================================
    
    Status info for the Job : https://wms.grid.sara.nl:9000/node2_aaaaaaaaaaaaaaaaaa
    Current Status:     Done (Success)
    Exit code:          0
    Status Reason:      Job Terminated Successfully
    Submitted:          Mon Nov 30 10:00:00 2026 CET
==========================================================================
    
    Status info for the Job : https://wms.grid.sara.nl:9000/node3_aaaaaaaaaaaaaaaaaa
    Current Status:     Cleared
    Exit code:          2
    Submitted:          Mon Nov 30 10:00:00 2026 CET
==========================================================================
    
    Status info for the Job : https://wms.grid.sara.nl:9000/node4_aaaaaaaaaaaaaaaaaa
    Current Status:     Scheduled
    Submitted:          Mon Nov 30 10:00:00 2026 CET
==========================================================================
"""  # noqa: W291, W293


def test_glite_states_reasons_and_exit_codes() -> None:
    found = dict(glite_status(GLITE))
    base = "https://wms.grid.sara.nl:9000/"
    assert found[f"{base}parent_aaaaaaaaaaaaaaaaaa"] == JobStatus(
        state=JobState.FAILED, reason="Done(Exit Code !=0)", exit_code=1
    )
    assert found[f"{base}node0_aaaaaaaaaaaaaaaaaa"] == JobStatus(
        state=JobState.FAILED,
        reason="Done(Exit Code !=0): Job Terminated Successfully",
        exit_code=1,
    )
    assert found[f"{base}node1_aaaaaaaaaaaaaaaaaa"] == JobStatus(
        state=JobState.FAILED, reason="Aborted: Job RetryCount (0) hit"
    )
    assert found[f"{base}node2_aaaaaaaaaaaaaaaaaa"].state is JobState.COMPLETED
    assert found[f"{base}node2_aaaaaaaaaaaaaaaaaa"].exit_code == 0
    # output retrieved after a failed run: the exit code tells
    assert found[f"{base}node3_aaaaaaaaaaaaaaaaaa"] == JobStatus(
        state=JobState.FAILED, reason="Cleared", exit_code=2
    )
    assert found[f"{base}node4_aaaaaaaaaaaaaaaaaa"] == JobStatus(
        state=JobState.PENDING, reason="Scheduled"
    )


def test_job_record_keeps_statuses_and_reads_old_records() -> None:
    old = {
        "id": "r", "backend": "slurm", "step": "s", "count": 4, "submitted": 0.0,
        "run_dir": "/tmp/r", "host": "h", "job_ids": ["1_0", "1_1", "1_2", "1_3"],
        "command": ["sbatch"], "states": {"1_0": "completed", "1_1": "running"},
    }  # fmt: skip
    record = JobRecord.model_validate(old)
    assert record.states["1_0"] == JobStatus(state=JobState.COMPLETED)
    assert record.unfinished() == ["1_1", "1_2", "1_3"]
    record = record.model_copy(
        update={
            "states": {
                **record.states,
                "1_1": JobStatus(state=JobState.TIMEOUT, reason="TIMEOUT", exit_code=-15),
                "1_2": JobStatus(state=JobState.HELD, reason="PENDING (JobHeldUser)"),
            }
        }
    )
    assert record.unfinished() == ["1_2", "1_3"]  # held jobs may still run
    counts = record.counts()
    assert (counts["completed"], counts["timeout"], counts["held"], counts["pending"]) == (
        1, 1, 1, 1,
    )  # fmt: skip
    again = JobRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert again.model_dump(mode="json")["states"]["1_1"] == {
        "state": "timeout", "reason": "TIMEOUT", "exit_code": -15,
    }  # fmt: skip


def test_submit_error_carries_command_return_code_and_stderr(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "squeue", "scancel"):
        tool = bin_dir / name
        tool.write_text(
            '#!/bin/sh\necho "$(basename "$0"): error: invalid partition specified" >&2\n'
            "echo 'second line' >&2\nexit 1\n"
        )
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    submitter = SlurmSubmitter({"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    with pytest.raises(SubmitError) as caught:
        submitter.status(["12_0"])
    error = caught.value
    assert str(error) == "squeue failed: squeue: error: invalid partition specified"
    assert error.command[0] == "squeue" and "12" in error.command
    assert error.returncode == 1
    assert error.stderr == "squeue: error: invalid partition specified\nsecond line\n"
    with pytest.raises(SubmitError) as caught:
        submitter.cancel(["12_0"])
    assert caught.value.command == ["scancel", "12_0"] and caught.value.returncode == 1
