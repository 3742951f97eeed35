"""Pilots downloading their inputs with a macaroon (``gridlrt submit --macaroons FILE``).

The inputs sit on a WebDAV door that answers 401 to every request without
``Authorization: Bearer <macaroon>`` (the ``macaroon_webdav`` fixture). ``gridlrt submit
--macaroons`` copies the 0600 macaroon file into the run directory as ``macaroon.cred`` and
points the pilots at it (local: ``GRIDLRT_MACAROON_FILE`` in their environment; Slurm: an
``export`` in the job script; DIRAC/gLite: the job's input sandbox, exported by pilot.sh);
``gridlrt worker run`` gives its storage the macaroons as bearer tokens. The macaroon itself
is never in an argv, a pilot's or payload's environment, a script, a JDL, a log, a token or
any file but ``macaroon.cred``; payloads do not even get the file's name.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from gridlrt.config import is_secret_variable, load_settings
from gridlrt.errors import ExitCode
from gridlrt.staging.download import write_macaroon_file
from gridlrt.tokens import TokenPool, TokenStatus, new_token, open_pool
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.worker.environment import payload_environment
from tests.fakes.grid_cli import FakeGrid
from tests.gridlrt_cli import cli_env, gridlrt, job_states, wait_jobs_finished, write_credentials
from tests.secrets_watch import ProcWatcher, files_containing
from tests.services.couchdb import SecuredCouchDB
from tests.services.webdav import MacaroonWebDAV

#: a command step that downloads its input file as is, then writes what its payload sees
FETCH_STEP = """\
name = "fetch"
kind = "command"
max_attempts = 1
command = ["sh", "-c", "env > payload.env && sha256sum \\"$0\\" > sum.txt && sleep 2", "{msin}"]

[inputs]
kind = "file"

[outputs]
keep = ["payload.env", "sum.txt"]
url = "{root}/{step}/{token_id}/{name}"
"""


@dataclass
class Door:
    """The macaroon WebDAV door with one input file on it, and a macaroon file for it."""

    dav: MacaroonWebDAV
    area: str
    input_url: str
    content: bytes
    macaroons: Path
    steps: Path

    @property
    def secret(self) -> str:
        return self.dav.macaroon

    def output_root(self) -> str:
        return self.dav.server.davs_url(f"{self.area}/results")


@pytest.fixture
def door(macaroon_webdav: MacaroonWebDAV, tmp_path: Path) -> Door:
    area = f"mac-{uuid4().hex[:8]}"
    name = "L229507_SB100_uv.dppp.MS_3d78b8f1.tar"
    content = os.urandom(70_000)
    target = macaroon_webdav.server.path(f"{area}/lta/{name}")
    target.parent.mkdir(parents=True)
    target.write_bytes(content)
    macaroons = write_macaroon_file(
        tmp_path / "cfg" / "request.macaroons",
        {macaroon_webdav.server.https_url(): macaroon_webdav.macaroon},
    )
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "fetch.toml").write_text(FETCH_STEP)
    return Door(
        macaroon_webdav,
        area,
        macaroon_webdav.server.davs_url(f"{area}/lta/{name}"),
        content,
        macaroons,
        steps,
    )


def _sqlite_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], TokenPool]:
    url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    env = cli_env(tmp_path, GRIDLRT_POOL=url, **extra)
    gridlrt(env, "pool", "init")
    return env, open_pool(load_settings(pool=url))


def _pilot_environ(marker: bytes) -> dict[str, str] | None:
    """The environment of the first ``gridlrt worker run`` process whose argv holds
    ``marker``, or None."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b"worker\0run" not in cmdline or marker not in cmdline:
                continue
            raw = (proc / "environ").read_bytes()
        except OSError:
            continue
        pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
        return {name: value for name, _, value in pairs}
    return None


def one_error_line(result: object, code: int) -> str:
    assert getattr(result, "returncode", None) == code, result
    stderr: str = result.stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --- the variable is a secret ----------------------------------------------------------------


def test_the_macaroon_file_variable_is_a_secret_payloads_never_get() -> None:
    assert is_secret_variable("GRIDLRT_MACAROON_FILE")
    env = payload_environment({"GRIDLRT_MACAROON_FILE": "/run/macaroon.cred", "PATH": "/bin"})
    assert env == {"PATH": "/bin", "OPENBLAS_NUM_THREADS": "1"}


# --- a bad --macaroons file: one line, before anything is asked or written -------------------

BAD_FILES = {
    "missing": (None, "does not exist"),
    "not private": (0o644, "is accessible by others (mode 0644); run: chmod 600"),
    "malformed": ("https://door.example.org:2880/ MDAsecret extra\n", ":1: expected"),
    "empty": ("# only a comment\n\n", "holds no macaroon"),
    "not webdav": ("srm://srm.grid.sara.nl:8443/ MDAsecret\n", "http(s):// or dav(s)://"),
    "a directory": ("dir", "a directory, not a macaroon file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_macaroon_file_is_one_line(case: str, tmp_path: Path) -> None:
    env, pool = _sqlite_env(tmp_path)
    pool.create([new_token("t0", inputs="https://door.example.org/x", step="command")])
    path = tmp_path / "bad.macaroons"
    given, expected = BAD_FILES[case]
    if given == "dir":
        path.mkdir()
    elif isinstance(given, int):
        write_macaroon_file(path, {"https://door.example.org:2880/": "MDAsecret"}).chmod(given)
    elif given is not None:
        path.write_text(given)
        path.chmod(0o600)
    for backend in ("local", "slurm"):
        result = gridlrt(
            env, "submit", "-b", backend, "-n", "1", "--macaroons", str(path), "--dry-run",
            check=False,
        )  # fmt: skip
        line = one_error_line(result, ExitCode.CREDENTIALS)
        assert line.startswith("error: --macaroons") and expected in line, line
        assert "MDAsecret" not in result.stdout + result.stderr
    # pipeline run refuses it before creating anything
    inputs = tmp_path / "in.txt"
    inputs.write_text("https://door.example.org/L1_SB000_uv.MS_00000000.tar\n")
    result = gridlrt(
        env, "pipeline", "run", "cal-target", "-i", f"calibrator={inputs}", "-i",
        f"target={inputs}", "--macaroons", str(path), check=False,
    )  # fmt: skip
    line = one_error_line(result, ExitCode.CREDENTIALS)
    assert expected in line and "MDAsecret" not in result.stdout + result.stderr
    assert [t.id for t in pool.tokens()] == ["t0"]  # no run created
    assert not (tmp_path / "runs").exists()


# --- dry runs show the file, never its content ------------------------------------------------


def test_dry_runs_name_the_macaroon_file_and_never_show_a_macaroon(
    door: Door, tmp_path: Path
) -> None:
    env, pool = _sqlite_env(tmp_path)
    pool.create([new_token("f0", inputs=door.input_url, step="fetch")])
    args = ["submit", "--step", "fetch", "-n", "1", "--steps-dir", str(door.steps),
            "--macaroons", str(door.macaroons), "--dry-run"]  # fmt: skip
    run_dir = tmp_path / "runs" / "planned"
    for backend in ("local", "slurm"):
        result = gridlrt(env, *args, "-b", backend, "--run-dir", str(run_dir))
        shown = " ".join(result.stdout.split())
        assert (
            f"macaroons: {door.macaroons} would be copied to {run_dir}/macaroon.cred (0600) "
            f"and given to the pilots for {door.dav.server.https_url()} (not shown)"
        ) in shown, shown
        assert door.secret not in result.stdout + result.stderr
        assert "--macaroons" not in shown.split("command")[-1]  # not in the pilots' argv
        if backend == "slurm":
            assert f"export GRIDLRT_MACAROON_FILE={run_dir}/macaroon.cred" in result.stdout
    assert not run_dir.exists()


# --- a real local pilot ---------------------------------------------------------------------


@pytest.mark.slow
def test_local_pilot_downloads_and_uploads_with_the_macaroon_and_fails_clearly_without(
    door: Door, tmp_path: Path
) -> None:
    # the submitting shell's own GRIDLRT_MACAROON_FILE is not passed on: only --macaroons is
    env, pool = _sqlite_env(
        tmp_path,
        GRIDLRT_STORAGE_ROOT=door.output_root(),
        GRIDLRT_MACAROON_FILE=str(door.macaroons),
    )
    pool.create([new_token("without", inputs=door.input_url, step="fetch")])
    base = ["submit", "-b", "local", "--step", "fetch", "-n", "1", "--steps-dir",
            str(door.steps), "--json"]  # fmt: skip

    refusals = len(door.dav.refusals())
    record = json.loads(gridlrt(env, *base).stdout)
    final = wait_jobs_finished(env, record["id"], timeout=120)
    assert set(job_states(final).values()) == {"completed"}, final
    token = pool.get("without")
    assert token.status is TokenStatus.ERROR
    error = token.error[-1].message
    assert error.startswith("1 of 1 transfer(s) failed; first: copy davs://"), error
    assert "HTTP 401 : Authentication Error" in error and "\n" not in error, error
    assert "--macaroons FILE" in error, error  # the pilot says what to do about it
    assert len(door.dav.refusals()) > refusals
    assert not (Path(record["run_dir"]) / "macaroon.cred").exists()

    pool.create([new_token("with", inputs=door.input_url, step="fetch")])
    with ProcWatcher(door.secret) as watcher:
        record = json.loads(gridlrt(env, *base, "--macaroons", str(door.macaroons)).stdout)
        run_dir = Path(record["run_dir"])
        deadline = time.monotonic() + 60
        pilot_env = None
        while pilot_env is None:
            assert time.monotonic() < deadline, "no pilot process seen"
            pilot_env = _pilot_environ(str(door.steps).encode() + b"\0")
            time.sleep(0.05)
        final = wait_jobs_finished(env, record["id"], timeout=120)
    assert set(job_states(final).values()) == {"completed"}, final
    token = pool.get("with")
    assert token.status is TokenStatus.DONE, token.error
    assert watcher.scans > 0 and watcher.pilots_seen and watcher.hits == []

    # the pilot had the file's name, not the macaroon; the payload had neither
    assert pilot_env["GRIDLRT_MACAROON_FILE"] == str(run_dir / "macaroon.cred")
    assert door.secret not in json.dumps(pilot_env)
    outputs = {url.rsplit("/", 1)[-1]: door.dav.server.path(url) for url in token.output}
    assert set(outputs) == {"payload.env", "sum.txt"}, token.output  # uploaded with it too
    payload_env = outputs["payload.env"].read_text()
    assert "GRIDLRT_MACAROON_FILE" not in payload_env and "macaroon.cred" not in payload_env
    assert door.secret not in payload_env
    import hashlib

    assert outputs["sum.txt"].read_text().split()[0] == hashlib.sha256(door.content).hexdigest()

    shipped = run_dir / "macaroon.cred"
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o600
    assert door.secret in shipped.read_text()
    assert files_containing(door.secret, run_dir, skip=(shipped,)) == []
    assert files_containing(door.secret, door.dav.server.path(door.area)) == []
    logs = "".join(p.read_text() for p in run_dir.glob("pilot-*.log"))
    assert f"macaroons from {shipped} for" in logs and "(not shown)" in logs
    for each in pool.tokens():
        assert door.secret not in json.dumps(each.to_doc())
        for name in pool.attachment_names(each.id):
            assert door.secret.encode() not in pool.attachment(each.id, name)
    assert door.secret not in json.dumps(gridlrt(env, "jobs", "status", "--json").stdout)


def test_worker_run_refuses_a_bad_macaroon_file_before_claiming(door: Door, tmp_path: Path) -> None:
    env, pool = _sqlite_env(tmp_path)
    pool.create([new_token("f0", inputs=door.input_url, step="fetch")])
    loose = write_macaroon_file(tmp_path / "loose.macaroons", {"https://d.example.org/": "MDAx"})
    loose.chmod(0o640)
    for given in (["--macaroons", str(loose)], []):
        result = gridlrt(
            {**env, "GRIDLRT_MACAROON_FILE": str(loose)}, "worker", "run", "--steps-dir",
            str(door.steps), *given, check=False,
        )  # fmt: skip
        line = one_error_line(result, ExitCode.CREDENTIALS)
        assert "is accessible by others (mode 0640)" in line and "MDAx" not in line
    assert pool.get("f0").status is TokenStatus.TODO


# --- a DIRAC pilot: macaroon.cred in the input sandbox ----------------------------------------


@pytest.mark.slow
def test_dirac_pilot_gets_the_macaroons_in_its_input_sandbox(
    door: Door, fake_dirac: FakeGrid, secured_couchdb: SecuredCouchDB, tmp_path: Path
) -> None:
    env_site = {
        k: v for k, v in fake_dirac.site_env.items() if not k.startswith(("GRIDLRT_", "PYTHONPATH"))
    }
    env_site.update(GRIDLRT_PYTHON=sys.executable, OPENBLAS_NUM_THREADS="1")
    fake_dirac.site_env = env_site
    url = secured_couchdb.new_database()
    pool = CouchDBPool(url, (secured_couchdb.username, secured_couchdb.password))
    pool.init()
    pool.create([new_token("grid", inputs=door.input_url, step="fetch")])
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=url,
        GRIDLRT_POOL_CREDENTIALS=str(write_credentials(tmp_path / "couchdb.cred", secured_couchdb)),
        PATH=fake_dirac.env["PATH"],
        FAKE_DIRAC_HOME=fake_dirac.env["FAKE_DIRAC_HOME"],
    )
    args = ["submit", "-b", "dirac", "--step", "fetch", "-n", "1", "--steps-dir",
            str(door.steps), "--output-root", door.output_root(),
            "--macaroons", str(door.macaroons)]  # fmt: skip
    dry = gridlrt(env, *args, "--dry-run")
    assert "macaroon.cred" in dry.stdout and door.secret not in dry.stdout + dry.stderr

    with ProcWatcher(door.secret) as watcher:
        record = json.loads(gridlrt(env, *args, "--json").stdout)
        final = wait_jobs_finished(env, record["id"], timeout=240)
    [node] = fake_dirac.jobs()
    assert set(job_states(final).values()) == {"completed"}, (final, node.stdout())
    token = pool.get("grid")
    assert token.status is TokenStatus.DONE, (token.error, node.stdout())
    assert watcher.hits == []
    out = node.stdout()
    assert f"macaroons: {node.job_dir}/macaroon.cred (content not shown)" in out, out
    shipped = node.job_dir / "macaroon.cred"
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o600
    assert "macaroon.cred" in node.jdl_text and door.secret not in node.jdl_text
    assert files_containing(door.secret, node.job_dir, skip=(shipped,)) == []
    run_dir = Path(record["run_dir"])
    assert files_containing(door.secret, run_dir, skip=(run_dir / "macaroon.cred",)) == []
    payload_env = door.dav.server.path(
        next(u for u in token.output if u.endswith("payload.env"))
    ).read_text()
    assert "GRIDLRT_MACAROON_FILE" not in payload_env and door.secret not in payload_env
    assert door.secret not in json.dumps(token.to_doc())
