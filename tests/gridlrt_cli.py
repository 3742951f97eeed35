"""Running the gridlrt command line in tests: an isolated environment, one call, waiting for
submitted pilot jobs to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.services.couchdb import SecuredCouchDB


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """An environment for the gridlrt CLI that ignores the user's own config and data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLRT_")}
    env.update(
        GRIDLRT_CONFIG=str(tmp_path / "no-config.toml"),
        XDG_DATA_HOME=str(tmp_path / "xdg-data"),
        GRIDLRT_RUNS_DIR=str(tmp_path / "runs"),
        OPENBLAS_NUM_THREADS="1",
        COLUMNS="200",
    )
    env.update(settings)
    return env


def gridlrt(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "gridlrt", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"gridlrt {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    return result


def job_states(record: dict[str, Any]) -> dict[str, str]:
    """``{job id: state}`` of a job record as ``gridlrt jobs status --json`` prints it (each
    job's status is ``{"state", "reason", "exit_code"}``; a job never seen is pending)."""
    return {
        j: record["states"][j]["state"] if j in record["states"] else "pending"
        for j in record["job_ids"]
    }


def wait_jobs_finished(env: dict[str, str], record_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        [record] = json.loads(gridlrt(env, "jobs", "status", record_id, "--json").stdout)
        states = list(job_states(record).values())
        if all(s in ("completed", "timeout", "failed", "cancelled") for s in states):
            return record
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-2000:] for p in Path(record["run_dir"]).glob("*.log")}
            raise AssertionError(f"jobs still {states} after {timeout} s; logs: {logs}")
        time.sleep(0.5)


def write_credentials(path: Path, couch: SecuredCouchDB) -> Path:
    path.write_text(f"username={couch.username}\npassword={couch.password}\n")
    path.chmod(0o600)
    return path


def slow_step(steps_dir: Path, seconds: int = 300) -> Path:
    """A step ``slow`` that sleeps: a token a pilot is busy with until it is told to stop."""
    steps_dir.mkdir(parents=True, exist_ok=True)
    (steps_dir / "slow.toml").write_text(
        f'name = "slow"\nkind = "command"\ncommand = ["sleep", "{seconds}"]\n'
        '[inputs]\nkind = "none"\n'
        '[outputs]\nkeep = []\nurl = "{root}/{step}/{token_id}/{name}"\n'
    )
    return steps_dir
