"""``gridlrt submit --backend slurm`` on the real one-node Slurm fixture: an array of pilots
drains a pool of 32 subbands (real DP3, WebDAV storage, a pool that demands credentials), job
states come back through the backend, and cancel works."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

from gridlrt.config import load_settings
from gridlrt.submit.model import JobState, JobStatus
from gridlrt.submit.slurm import SlurmSubmitter
from gridlrt.tokens import TokenStatus, new_token, open_pool
from gridlrt.tokens.couchdb import CouchDBPool
from tests.gridlrt_cli import cli_env, gridlrt, job_states, slow_step, wait_jobs_finished
from tests.lofar_inputs import put_input
from tests.secrets_watch import ProcWatcher, files_containing
from tests.services.couchdb import SecuredCouchDB
from tests.services.slurm import SlurmCluster
from tests.services.webdav import WebDAV

SUBBANDS = 32


def test_slurm_array_drains_32_subbands(
    slurm: SlurmCluster,
    secured_couchdb: SecuredCouchDB,
    webdav: WebDAV,
    make_ms: Callable[..., Path],
    tmp_path: Path,
) -> None:
    url = secured_couchdb.new_database()
    pool = CouchDBPool(url, (secured_couchdb.username, secured_couchdb.password))
    pool.init()
    area = f"slurm-{uuid4().hex[:8]}"
    tokens = []
    for sb in range(SUBBANDS):
        ms = make_ms(obsid=800002, subband=sb, channels=8, timeslots=4)
        tokens.append(
            new_token(
                f"average_SB{sb:03d}", inputs=put_input(webdav, area, ms, tmp_path), step="average"
            )
        )
    pool.create(tokens)
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=url,
        # credentials given to the submitting command in its environment: they must reach the
        # pilots only as the 0600 file in the run directory
        GRIDLRT_POOL_USERNAME=secured_couchdb.username,
        GRIDLRT_POOL_PASSWORD=secured_couchdb.password,
        GRIDLRT_STORAGE_ROOT=webdav.dav_url(f"{area}/results"),
        SLURM_CONF=slurm.env["SLURM_CONF"],
    )
    rejected_before = len(secured_couchdb.rejected)

    with ProcWatcher(secured_couchdb.password) as watcher:
        result = gridlrt(env, "submit", "--backend", "slurm", "--step", "average", "-n", "auto",
                         "--max", "8", "--walltime", "30m", "--json")  # fmt: skip
        record = json.loads(result.stdout)
        assert "-n auto: 8 pilot(s)" in result.stderr
        array = record["job_ids"][0].split("_")[0]
        assert record["job_ids"] == [f"{array}_{i}" for i in range(8)]
        final = wait_jobs_finished(env, record["id"], timeout=400)

    assert set(job_states(final).values()) == {"completed"}, final
    done = list(pool.tokens(TokenStatus.DONE))
    assert len(done) == SUBBANDS, pool.overview()
    assert {t.attempts[-1].job_id for t in done} <= {f"{array}_{i}" for i in range(8)}
    for token in done:
        [output] = token.output
        assert webdav.path(output.removeprefix(webdav.dav_url(""))).stat().st_size > 0
    assert len(secured_couchdb.rejected) == rejected_before
    assert watcher.pilots_seen and watcher.hits == []
    run_dir = Path(record["run_dir"])
    cred = run_dir / "pool.cred"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert files_containing(secured_couchdb.password, run_dir, skip=(cred,)) == []
    script = (run_dir / "slurm.sh").read_text()
    assert "#SBATCH --array=0-7" in script and secured_couchdb.username not in script
    assert list(run_dir.glob("slurm-*_*.out"))
    table = gridlrt(env, "jobs", "status", "--jobs").stdout
    assert f"{array}_7" in table and "completed" in table


def test_slurm_states_and_cancel(slurm: SlurmCluster, tmp_path: Path) -> None:
    pool_url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    steps = slow_step(tmp_path / "steps")
    env = cli_env(tmp_path, GRIDLRT_POOL=pool_url, SLURM_CONF=slurm.env["SLURM_CONF"])
    gridlrt(env, "pool", "init")
    pool = open_pool(load_settings(pool=pool_url))
    pool.create([new_token(f"slow_{i}", inputs=f"x{i}", step="slow") for i in range(2)])

    record = json.loads(
        gridlrt(env, "submit", "-b", "slurm", "--step", "slow", "--steps-dir", str(steps),
                "-n", "2", "--max-running", "1", "--json").stdout
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        [status] = json.loads(gridlrt(env, "jobs", "status", record["id"], "--json").stdout)
        states = list(job_states(status).values())
        if sorted(map(str, states)) == ["pending", "running"]:  # %1: one runs, one waits
            break
        assert time.monotonic() < deadline, f"states stayed {states}"
        time.sleep(0.3)
    while pool.overview().total(TokenStatus.RUNNING, "slow") < 1:
        assert time.monotonic() < deadline, "the pilot never started a token"
        time.sleep(0.2)

    assert "cancelled 2 job(s)" in gridlrt(env, "jobs", "cancel", record["id"]).stdout
    final = wait_jobs_finished(env, record["id"], timeout=90)
    assert set(job_states(final).values()) == {"cancelled"}, final
    slurm.wait_jobs_gone(record["job_ids"][0].split("_")[0])
    # the running pilot got SIGTERM and put its token back
    assert pool.overview().total(TokenStatus.TODO, "slow") == 2


def test_slurm_held_suspended_and_failed_jobs_for_real(slurm: SlurmCluster, tmp_path: Path) -> None:
    """The backend's statuses against the real cluster: a held array task (sbatch --hold), a
    suspended one (scontrol suspend) and one whose script exited 3. (A job at its --time is
    TIMEOUT: the parser is tested on real squeue lines in test_job_states; on this cluster the
    1-minute minimum takes about 70 s to pass.)"""
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/sh\nsleep "$1"\nexit "$2"\n')
    script.chmod(0o755)

    def sbatch(*args: str) -> str:
        return slurm.run(
            "sbatch", "--parsable", "--array=0-0", "-o", "/dev/null", *args
        ).stdout.strip()

    held = sbatch("--hold", str(script), "60", "0")
    failing = sbatch(str(script), "0", "3")
    running = sbatch(str(script), "60", "0")
    submitter = SlurmSubmitter(slurm.env)
    ids = [f"{held}_0", f"{failing}_0", f"{running}_0"]
    deadline = time.monotonic() + 60
    while True:
        found = submitter.status(ids)
        if found[ids[1]].state is JobState.FAILED and found[ids[2]].state is JobState.RUNNING:
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.3)
    slurm.run("scontrol", "suspend", ids[2])
    try:
        found = submitter.status(ids)
        assert found[ids[0]] == JobStatus(state=JobState.HELD, reason="PENDING (JobHeldUser)")
        assert found[ids[1]] == JobStatus(
            state=JobState.FAILED, reason="FAILED (NonZeroExitCode)", exit_code=3
        )
        assert found[ids[2]] == JobStatus(state=JobState.HELD, reason="SUSPENDED")
    finally:
        slurm.run("scontrol", "resume", ids[2], check=False)
        slurm.run("scancel", held, running, check=False)
    slurm.wait_jobs_gone(held)
    slurm.wait_jobs_gone(running)
    assert submitter.status(ids[:1])[ids[0]].state is JobState.CANCELLED
