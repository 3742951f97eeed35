"""The calibrator -> target reduction (issue 15) end to end on the real one-node Slurm fixture:
a synthetic observation pair (4 calibrator + 4 target subbands with the same station gains) as
LTA tarballs on WebDAV, ``gridlrt pipeline create`` of the built-in cal-target pipeline (bands
of 2 subbands) with the calibrator's sky model in --steps-dir, then ``gridlrt submit -b slurm
--pipeline RUN -n 2``: two pilots take whatever stage is ready (DP3 flag+average, DP3 gaincal +
the clock fit, DP3 applycal, DP3 concat, WSClean). The pool is pouchdb-server behind
credentials; every product goes to WebDAV.

Checked at the end (tests/reduction_run.py): every token done at its first attempt by one of
the two jobs, the products on WebDAV where the tokens say, and the science: the solutions
summary and the band images downloaded from WebDAV, measured and verified against the injected
truth (clocks, amplitudes, fluxes, positions), while a truth of another seed fails that
verification. The password is in no argv, pilot environment, job file, product or token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gridlrt.demo.observations import make_truth
from tests.gridlrt_cli import gridlrt, wait_jobs_finished
from tests.reduction_run import SPEC, check_run, create_run, table, verify_run
from tests.secrets_watch import ProcWatcher
from tests.services.couchdb import SecuredCouchDB
from tests.services.slurm import SlurmCluster
from tests.services.webdav import WebDAV

pytestmark = [pytest.mark.dp3, pytest.mark.slow]


def test_cal_target_reduction_on_slurm_is_right(
    slurm: SlurmCluster, secured_couchdb: SecuredCouchDB, webdav: WebDAV, tmp_path: Path
) -> None:
    started = time.monotonic()
    run = create_run("calt", secured_couchdb, webdav, tmp_path,
                     SLURM_CONF=slurm.env["SLURM_CONF"])  # fmt: skip
    created = time.monotonic()

    with ProcWatcher(secured_couchdb.password) as watcher:
        result = gridlrt(run.env, *run.submit_args("slurm"), "--walltime", "30m")
        record = json.loads(result.stdout)
        assert record["pipeline"] == run.name and len(record["job_ids"]) == 2
        final = wait_jobs_finished(run.env, record["id"], timeout=420)
    ran = time.monotonic()

    _, downloaded, verification = check_run(
        run, record, final, secured_couchdb, webdav, tmp_path / "results"
    )
    # the check tells a right answer from a wrong one: other gains and another sky fail it
    wrong, _ = verify_run(make_truth(SPEC.model_copy(update={"seed": SPEC.seed + 1})), *downloaded)
    assert not wrong.stations_passed and not wrong.sources_passed, table(wrong)
    # nor was the password in any argv or pilot environment while the jobs ran
    assert watcher.pilots_seen and watcher.hits == []
    script = (Path(record["run_dir"]) / "slurm.sh").read_text()
    assert "--step " not in script  # the pilots take any ready stage
    assert f"#SBATCH --job-name=gridlrt-{run.name}\n" in script
    print(
        f"reduction on Slurm: observations and pipeline {created - started:.1f} s, "
        f"pilots {ran - created:.1f} s, checks {time.monotonic() - ran:.1f} s; "
        f"worst {verification.worst}"
    )
