"""``gridlrt doctor`` on this (set-up) node, on nodes missing a piece, and against real pools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gridlrt import doctor
from gridlrt.config import load_settings
from tests.services.couchdb import CouchDB
from tests.services.process import free_port

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))


def run_doctor(
    *args: str, env: dict[str, str] | None = None, wrap: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(wrap or []), GRIDLRT, "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    return {row["name"]: row for row in json.loads(result.stdout)["checks"]}


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment with a private HOME/config, so no real credentials are read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLRT_")}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        X509_USER_PROXY=str(tmp_path / "no-proxy"),
    )
    (tmp_path / "home").mkdir()
    return env


def test_set_up_node_is_healthy(clean_env: dict[str, str]) -> None:
    result = run_doctor("--json", env=clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    found = rows(result)
    assert json.loads(result.stdout)["healthy"] is True
    for name in ("python", "gfal2", "gfal2 file", "gfal2 http", "DP3", "python-casacore",
                 "casacore measures data", "token pool"):  # fmt: skip
        assert found[name]["status"] == "ok", found[name]
    assert "DP3 6." in str(found["DP3"]["detail"])
    assert found["sbatch"]["status"] == "info"


def test_table_output_has_a_row_per_check(clean_env: dict[str, str]) -> None:
    result = run_doctor(env={**clean_env, "COLUMNS": "160"})
    assert result.returncode == 0
    for name in ("gfal2 srm", "casacore measures data", "glite-wms-job-submit"):
        assert name in result.stdout
    assert "Everything gridlrt needs here is present." in result.stdout


def hidden(*paths: str) -> list[str]:
    """argv prefix running a command in a private mount namespace where ``paths`` are empty."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux unshare is needed to simulate a node missing packages"
    mounts = " && ".join(f"mount -t tmpfs gridlrt-hidden {p}" for p in paths)
    return [unshare, "--mount", "--", "sh", "-c", f'{mounts} && exec "$@"', "sh"]


def test_node_without_casacore_data_names_the_package(clean_env: dict[str, str]) -> None:
    result = run_doctor("--json", env=clean_env, wrap=hidden("/usr/share/casacore"))
    assert result.returncode == 1, result.stdout + result.stderr
    measures = rows(result)["casacore measures data"]
    assert measures["status"] == "fail"
    assert "apt-get install casacore-data" in str(measures["fix"])
    assert json.loads(result.stdout)["healthy"] is False


def test_node_without_gfal2_names_the_package(clean_env: dict[str, str]) -> None:
    result = run_doctor("--json", env=clean_env, wrap=hidden("/usr/lib/python3/dist-packages"))
    assert result.returncode == 1, result.stdout + result.stderr
    gfal2 = rows(result)["gfal2"]
    assert gfal2["status"] == "fail"
    assert "apt-get install python3-gfal2" in str(gfal2["fix"])
    table = run_doctor(
        env={**clean_env, "COLUMNS": "200"}, wrap=hidden("/usr/lib/python3/dist-packages")
    )
    assert table.returncode == 1
    assert "required check(s) failed: gfal2" in table.stdout


def test_couchdb_pool_reachable_missing_and_down(
    couchdb: CouchDB, couchdb_database: str, clean_env: dict[str, str]
) -> None:
    ok = rows(run_doctor("--json", "--pool", couchdb_database, env=clean_env))["token pool"]
    assert ok["status"] == "ok"
    assert "0 docs" in str(ok["detail"])

    missing = run_doctor("--json", "--pool", f"{couchdb.url}/no_such_db", env=clean_env)
    assert missing.returncode == 1
    assert "gridlrt pool init" in str(rows(missing)["token pool"]["fix"])

    down = run_doctor("--json", "--pool", f"http://127.0.0.1:{free_port()}/db", env=clean_env)
    assert down.returncode == 1
    assert "unreachable" in str(rows(down)["token pool"]["detail"])


def test_secrets_never_shown(
    couchdb_database: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    cred = tmp_path / "config" / "gridlrt" / "couchdb.cred"
    cred.parent.mkdir(parents=True)
    cred.write_text("username=ann\npassword=hunter2-secret\n")
    cred.chmod(0o644)
    pool_with_password = couchdb_database.replace("http://", "http://ann:url-secret@")
    result = run_doctor("--json", "--pool", pool_with_password, env=clean_env)
    found = rows(result)
    assert result.returncode == 1  # a world-readable credentials file is a failure
    assert found["pool credentials"]["status"] == "fail"
    assert f"chmod 600 {cred}" in str(found["pool credentials"]["fix"])
    assert found["pool URL"]["status"] == "warn"
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert "url-secret" not in result.stdout + result.stderr

    cred.chmod(0o600)
    fixed = rows(run_doctor("--json", "--pool", couchdb_database, env=clean_env))
    assert fixed["pool credentials"]["status"] == "ok"


def test_unwritable_or_corrupt_embedded_pool(tmp_path: Path) -> None:
    corrupt = tmp_path / "pool.sqlite"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    check = doctor.check_pool(load_settings(pool=f"sqlite:///{corrupt}"))[-1]
    assert check.status is doctor.Status.FAIL
    assert "gridlrt pool init" in str(check.fix)


def test_pure_checks() -> None:
    assert doctor.check_python((3, 10, 12)).status is doctor.Status.FAIL
    assert doctor.check_python((3, 12, 1)).status is doctor.Status.OK

    def no_module(name: str) -> object:
        raise ImportError(f"No module named {name!r}")

    assert doctor.check_gfal2(no_module)[0].status is doctor.Status.FAIL
    assert doctor.check_casacore(no_module).status is doctor.Status.FAIL
    reduction = doctor.check_reduction(no_module, lambda: None)
    assert [c.name for c in reduction] == ["losoto", "astropy", "wsclean"]
    assert all(c.status is doctor.Status.WARN and not c.required for c in reduction)
    assert "gridlrt[reduction]" in (reduction[0].fix or "")
    found = doctor.check_reduction(find_wsclean=lambda: Path("/usr/bin/wsclean"))
    assert all(c.status is doctor.Status.OK for c in found)
    clients = doctor.check_batch_clients(
        lambda name: "/opt/bin/sbatch" if name == "sbatch" else None
    )
    assert all(c.status is doctor.Status.INFO and not c.required for c in clients)
    assert "/opt/bin/sbatch" in clients[0].detail
    assert not doctor.healthy([doctor.Check(name="x", status=doctor.Status.FAIL, detail="")])
    assert doctor.healthy(
        [doctor.Check(name="x", status=doctor.Status.FAIL, detail="", required=False)]
    )


def test_measures_directory_from_casarc(tmp_path: Path) -> None:
    data = tmp_path / "measures"
    (data / "geodetic" / "Observatories").mkdir(parents=True)
    (data / "geodetic" / "Observatories" / "table.dat").write_bytes(b"")
    (tmp_path / ".casarc").write_text(f"measures.directory: {data}\n")
    candidates = doctor.measures_candidates(home=tmp_path)
    assert candidates[0] == data
    assert doctor.check_measures_data(candidates).detail == str(data)
    assert doctor.check_measures_data([tmp_path / "empty"]).status is doctor.Status.FAIL


def test_every_copy_of_a_replicated_pool_is_checked(
    couchdb: CouchDB, couchdb_database: str, clean_env: dict[str, str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}/lofar_tokens"
    env = {**clean_env, "GRIDLRT_POOL_REPLICAS": f"{couchdb_database},{down}"}
    result = run_doctor("--json", "--pool", couchdb_database, env=env)
    found = rows(result)
    assert found["pool replica 1"]["status"] == "ok"
    assert found["pool replica 2"]["status"] == "fail"
    assert "unreachable" in str(found["pool replica 2"]["detail"])
    assert result.returncode == 1
