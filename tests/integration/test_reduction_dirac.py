"""The calibrator -> target reduction (issue 15) through the DIRAC fake (tests/fakes/grid_cli.py):
``gridlrt submit -b dirac --pipeline RUN -n 2`` ships pilot.sh, the sandbox (gridlrt's runtime
bundle and the --steps-dir holding calibrator.skymodel) and the pool credentials; each job runs
the bootstrap in a fresh job directory with only that input sandbox, and its pilot takes any
ready stage of the run. The worker node's Python (GRIDLRT_PYTHON) is this venv's: it has what
the bundle leaves to the site (numpy, python-casacore, DP3, LOSOTO, astropy, h5py). The pool is
pouchdb-server behind credentials; inputs and products are on WebDAV.

Checked at the end (tests/reduction_run.py): every token done at its first attempt by one of
the two DIRAC jobs, from one verified sandbox, the products on WebDAV, the science verified
against the injected truth (downloaded solutions summary and band images), and the password in
no argv, job directory, JDL, product or token.
"""

from __future__ import annotations

import json
import stat
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.grid_cli import FakeGrid
from tests.gridlrt_cli import gridlrt, wait_jobs_finished
from tests.reduction_run import check_run, create_run
from tests.secrets_watch import ProcWatcher, files_containing
from tests.services.couchdb import SecuredCouchDB
from tests.services.webdav import WebDAV

pytestmark = [pytest.mark.dp3, pytest.mark.slow]


def test_cal_target_reduction_through_dirac_is_right(
    fake_dirac: FakeGrid, secured_couchdb: SecuredCouchDB, webdav: WebDAV, tmp_path: Path
) -> None:
    started = time.monotonic()
    # the worker node: this Python (the site's LOFAR software), none of our gridlrt settings
    site = {k: v for k, v in fake_dirac.site_env.items()
            if not k.startswith(("GRIDLRT_", "PYTHONPATH"))}  # fmt: skip
    fake_dirac.site_env = {**site, "GRIDLRT_PYTHON": sys.executable, "OPENBLAS_NUM_THREADS": "1"}
    run = create_run("calt-dirac", secured_couchdb, webdav, tmp_path,
                     PATH=fake_dirac.env["PATH"],
                     FAKE_DIRAC_HOME=fake_dirac.env["FAKE_DIRAC_HOME"])  # fmt: skip
    created = time.monotonic()

    with ProcWatcher(secured_couchdb.password) as watcher:
        record = json.loads(gridlrt(run.env, *run.submit_args("dirac")).stdout)
        assert record["pipeline"] == run.name and len(record["job_ids"]) == 2
        final = wait_jobs_finished(run.env, record["id"], timeout=420)
    ran = time.monotonic()

    nodes = fake_dirac.jobs()
    assert sorted(final["job_ids"]) == sorted(n.id for n in nodes)
    for node in nodes:
        out = node.stdout()
        # gridlrt came from the sandbox, verified, not from this machine's installation
        assert "gridlrt-sandbox/_gridlrt/lib/gridlrt" in out and "sha256 verified" in out, out
        # the job had its input sandbox and nothing else: the bootstrap, the sandbox archive
        # (gridlrt's bundle and the steps dir, unpacked into gridlrt-sandbox) and the credentials
        sandbox = sorted(Path(str(f)).name for f in node.jdl["InputSandbox"])
        assert [n for n in sandbox if not n.endswith(".tar.gz")] == ["pilot.sh", "pool.cred"]
        assert sorted(p.name for p in node.job_dir.iterdir()) == sorted(
            [*sandbox, "gridlrt-sandbox", "pilot.out", "pilot.err"]
        )
        skymodel = "calibrator.skymodel"
        assert (node.job_dir / "gridlrt-sandbox" / skymodel).read_bytes() == (
            run.reduction.steps_dir / skymodel
        ).read_bytes()

    tokens, _, verification = check_run(
        run, record, final, secured_couchdb, webdav, tmp_path / "results"
    )
    assert len({t.attempts[0].sandbox for t in tokens}) == 1  # every attempt: the same sandbox
    # nor was the password in any argv or pilot environment, job directory or JDL
    assert watcher.pilots_seen and watcher.hits == []
    for node in nodes:
        shipped = node.job_dir / "pool.cred"
        assert stat.S_IMODE(shipped.stat().st_mode) == 0o600
        assert files_containing(secured_couchdb.password, node.job_dir, skip=(shipped,)) == []
        assert secured_couchdb.password not in node.jdl_text
    print(
        f"reduction through DIRAC: observations and pipeline {created - started:.1f} s, "
        f"pilots {ran - created:.1f} s, checks {time.monotonic() - ran:.1f} s; "
        f"worst {verification.worst}"
    )
