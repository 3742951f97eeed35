"""Smoke tests for the ``slurm`` fixture: the one-node cluster really runs and cancels jobs."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.services.slurm import SlurmCluster

pytestmark = pytest.mark.slow

ARRAY_SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=smoke-array
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
set -eu
printf '%s %s\\n' "$SLURM_ARRAY_TASK_ID" "$(hostname)" > "out_${SLURM_ARRAY_TASK_ID}.txt"
"""

SLEEP_SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=smoke-sleep
sleep 300
"""


def _sbatch(slurm: SlurmCluster, *argv: str) -> str:
    result = slurm.run("sbatch", "--parsable", *argv)
    job_id = result.stdout.strip().split(";")[0]  # "123" or "123;cluster"
    assert job_id.isdigit(), f"unexpected sbatch output: {result.stdout!r}"
    return job_id


def test_array_job_runs_every_task(slurm: SlurmCluster, tmp_path: Path) -> None:
    script = tmp_path / "array.sh"
    script.write_text(ARRAY_SCRIPT)
    shared = tmp_path / "shared"
    shared.mkdir()

    job_id = _sbatch(
        slurm,
        "--array=0-3",
        f"--chdir={shared}",
        f"--output={tmp_path / 'slurm-%A_%a.out'}",
        f"--partition={slurm.partition}",
        str(script),
    )
    started = time.monotonic()
    slurm.wait_jobs_gone(job_id, timeout=120)
    print(f"array {job_id} (4 tasks) done in {time.monotonic() - started:.1f} s")

    states = slurm.job_states(job_id)
    assert states == {f"{job_id}_{i}": "COMPLETED" for i in range(4)}, states
    for task in range(4):
        out = shared / f"out_{task}.txt"
        assert out.is_file(), f"task {task} wrote nothing; files: {sorted(shared.iterdir())}"
        assert out.read_text() == f"{task} {socket.gethostname()}\n"
    assert sorted(p.name for p in shared.iterdir()) == [f"out_{i}.txt" for i in range(4)]


def test_scancel_removes_running_job(slurm: SlurmCluster, tmp_path: Path) -> None:
    script = tmp_path / "sleep.sh"
    script.write_text(SLEEP_SCRIPT)
    job_id = _sbatch(slurm, f"--chdir={tmp_path}", "--output=/dev/null", str(script))

    deadline = time.monotonic() + 60
    while slurm.job_states(job_id).get(job_id) != "RUNNING":
        assert time.monotonic() < deadline, f"job {job_id} never ran: {slurm.job_states(job_id)}"
        time.sleep(0.2)
    assert slurm.queued(job_id) == [job_id]

    slurm.run("scancel", job_id)
    slurm.wait_jobs_gone(job_id, timeout=60)
    assert slurm.queued(job_id) == []
    assert slurm.job_states(job_id).get(job_id) in (None, "CANCELLED")
    # jobcomp/filetxt has the durable final state.
    records = [
        line for line in slurm.jobcomp_log.read_text().splitlines()
        if line.startswith(f"JobId={job_id} ")
    ]  # fmt: skip
    assert len(records) == 1, records
    assert " JobState=CANCELLED " in records[0]
