"""``gridlrt submit --backend dirac|glite`` against fakes of the DIRAC and gLite clients
(tests/fakes/grid_cli.py): they parse the JDL as the real tools do, print the real formats,
and run each job's pilot.sh in a fresh job directory with only the input sandbox, as a worker
node would. The pilots process real tokens (DP3, WebDAV) from a pool that demands credentials.
"""

from __future__ import annotations

import json
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest

from gridlrt.errors import ExitCode
from gridlrt.tokens import TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from tests.fakes.grid_cli import FakeGrid
from tests.gridlrt_cli import (
    cli_env,
    gridlrt,
    job_states,
    slow_step,
    wait_jobs_finished,
    write_credentials,
)
from tests.lofar_inputs import put_input
from tests.secrets_watch import ProcWatcher, files_containing
from tests.services.couchdb import SecuredCouchDB
from tests.services.webdav import WebDAV


def site(grid: FakeGrid) -> None:
    """The worker node's software: this Python (numpy, casacore, DP3, gfal2) as GRIDLRT_PYTHON;
    none of the submitting side's gridlrt settings."""
    env = {k: v for k, v in grid.site_env.items() if not k.startswith(("GRIDLRT_", "PYTHONPATH"))}
    env.update(GRIDLRT_PYTHON=sys.executable, OPENBLAS_NUM_THREADS="1")
    grid.site_env = env


@pytest.mark.parametrize("flavour", ["dirac", "glite"])
def test_grid_pilots_bootstrap_and_process_tokens(
    flavour: str,
    request: pytest.FixtureRequest,
    secured_couchdb: SecuredCouchDB,
    webdav: WebDAV,
    make_ms: Callable[..., Path],
    tmp_path: Path,
) -> None:
    grid: FakeGrid = request.getfixturevalue(f"fake_{flavour}")
    site(grid)
    url = secured_couchdb.new_database()
    pool = CouchDBPool(url, (secured_couchdb.username, secured_couchdb.password))
    pool.init()
    area = f"{flavour}-{uuid4().hex[:8]}"
    subbands = range(3)
    pool.create(
        [
            new_token(
                f"average_SB{sb}",
                inputs=put_input(
                    webdav,
                    area,
                    make_ms(obsid=900003, subband=sb, channels=8, timeslots=4),
                    tmp_path,
                ),
                step="average",
            )
            for sb in subbands
        ]
    )
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=url,
        GRIDLRT_POOL_CREDENTIALS=str(write_credentials(tmp_path / "couchdb.cred", secured_couchdb)),
        PATH=grid.env["PATH"],
        **{k: v for k, v in grid.env.items() if k.startswith("FAKE_")},
    )
    output_root = webdav.dav_url(f"{area}/results")

    with ProcWatcher(secured_couchdb.password) as watcher:
        result = gridlrt(env, "submit", "-b", flavour, "--step", "average", "-n", "2",
                         "--output-root", output_root, "--json")  # fmt: skip
        record = json.loads(result.stdout)
        final = wait_jobs_finished(env, record["id"], timeout=300)

    jobs = [j for j in grid.jobs() if j.parent is None or flavour == "glite"]
    nodes = [j for j in jobs if flavour == "dirac" or j.parent is not None]
    assert len(nodes) == 2, [j.id for j in jobs]
    assert set(job_states(final).values()) == {"completed"}, (final, [n.stdout() for n in nodes])
    assert sorted(final["job_ids"]) == sorted(n.id for n in nodes)
    assert {t.status for t in pool.tokens()} == {TokenStatus.DONE}
    for token in pool.tokens():
        assert token.output[0].startswith(output_root)
        assert token.attempts[-1].job_id in {n.id for n in nodes}
    for node in nodes:
        out = node.stdout()
        # gridlrt came from the sandbox, not from this machine's installation
        assert "gridlrt-sandbox/_gridlrt/lib/gridlrt" in out, out
        assert "sha256 verified" in out and "pool credentials:" in out
        shipped = node.job_dir / "pool.cred"
        assert stat.S_IMODE(shipped.stat().st_mode) == 0o600
        assert files_containing(secured_couchdb.password, node.job_dir, skip=(shipped,)) == []
        assert secured_couchdb.password not in node.jdl_text
    assert watcher.pilots_seen and watcher.hits == []
    run_dir = Path(record["run_dir"])
    assert files_containing(secured_couchdb.password, run_dir, skip=(run_dir / "pool.cred",)) == []


def test_dirac_dry_run_cancel_and_clear_errors(
    fake_dirac: FakeGrid, secured_couchdb: SecuredCouchDB, tmp_path: Path
) -> None:
    site(fake_dirac)
    url = secured_couchdb.new_database()
    pool = CouchDBPool(url, (secured_couchdb.username, secured_couchdb.password))
    pool.init()
    steps = slow_step(tmp_path / "steps")
    pool.create([new_token(f"slow_{i}", inputs=f"x{i}", step="slow") for i in range(25)])
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=url,
        GRIDLRT_POOL_USERNAME=secured_couchdb.username,
        GRIDLRT_POOL_PASSWORD=secured_couchdb.password,
        PATH=fake_dirac.env["PATH"],
        FAKE_DIRAC_HOME=fake_dirac.env["FAKE_DIRAC_HOME"],
    )
    args = ["submit", "-b", "dirac", "--step", "slow", "--steps-dir", str(steps),
            "--output-root", "davs://webdav.example.org/lofar/out"]  # fmt: skip

    dry = gridlrt(env, *args, "--dry-run")
    assert "-n auto: 25 pilot(s)" in dry.stderr
    assert "Parameters = 20;" in dry.stdout and "Parameters = 5;" in dry.stdout  # DIRAC's limit
    assert "dirac-wms-job-submit -f" in dry.stdout and "nothing submitted" in dry.stdout
    assert secured_couchdb.password not in dry.stdout + dry.stderr
    assert fake_dirac.jobs() == []

    # a file:// output root would leave results on the worker nodes
    bad = gridlrt(env, "submit", "-b", "dirac", "--step", "slow", "-n", "1", check=False)
    assert (
        bad.returncode == ExitCode.INPUT
        and "--output-root" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    # an embedded pool cannot be reached from the grid
    local = gridlrt(
        {**env, "GRIDLRT_POOL": f"sqlite:///{tmp_path}/p.sqlite"}, *args, "-n", "1", check=False
    )
    assert local.returncode == ExitCode.INPUT and "CouchDB pool" in local.stderr
    # without the DIRAC client on PATH: say how to get it
    nodirac = gridlrt({**env, "PATH": "/usr/bin:/bin"}, *args, "-n", "1", check=False)
    assert nodirac.returncode == ExitCode.INPUT and "DIRAC client" in nodirac.stderr

    record = json.loads(gridlrt(env, *args, "-n", "1", "--json").stdout)
    [job_id] = record["job_ids"]
    deadline = time.monotonic() + 60
    while pool.overview().total(TokenStatus.RUNNING, "slow") < 1:
        assert time.monotonic() < deadline, fake_dirac.job(job_id).stdout()
        time.sleep(0.2)
    assert "cancelled 1 job(s)" in gridlrt(env, "jobs", "cancel", record["id"]).stdout
    final = wait_jobs_finished(env, record["id"], timeout=60)
    assert job_states(final) == {job_id: "cancelled"}
    assert fake_dirac.job(job_id).state == "Killed"
