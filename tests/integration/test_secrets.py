"""Secrets stay where they belong (issue 12, item 11).

* a password with a raw ``#``, ``?``, ``/`` or ``@`` in the pool URL is shown as ``***`` by
  every command that shows the pool URL (``tokens status``, ``doctor``, ``submit --dry-run``);
* pilots started by ``gridlrt submit`` (local processes, Slurm array tasks) have no password
  in their environment (``/proc/<pid>/environ``): pool credentials reach them only through
  the run's 0600 ``pool.cred``;
* payloads get a scrubbed environment: no gridlrt secret at all
  (:func:`gridlrt.worker.environment.payload_environment`).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote
from uuid import uuid4

import pytest

from gridlrt.config import is_secret_variable, scrub_environment
from gridlrt.submit.local import LocalSubmitter
from gridlrt.submit.slurm import SlurmSubmitter
from gridlrt.tokens import TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.worker.dp3 import dp3_environment
from gridlrt.worker.environment import payload_environment
from tests.gridlrt_cli import cli_env, gridlrt, slow_step, wait_jobs_finished
from tests.services.couchdb import SecuredCouchDB
from tests.services.process import free_port
from tests.services.slurm import SlurmCluster

# --- redaction in what the commands print -------------------------------------------------


def _raw_password(kind: str) -> tuple[str, list[str]]:
    """A password with raw URL delimiters, and the pieces of it that must never be shown."""
    a, b, c = (uuid4().hex[:8] for _ in range(3))
    password = {
        "hash-query": f"{a}#{b}?{c}",
        "slash-at": f"{a}/{b}@{c}",
        "query-first": f"?{a}#{b}/{c}",
    }[kind]
    return password, [a, b, c]


def _assert_hidden(text: str, pieces: list[str], what: str) -> None:
    shown = [piece for piece in pieces if piece in text]
    assert shown == [], f"{what} shows part of the password:\n{text}"


def _dry_run(tmp: Path) -> list[str]:
    steps = str(slow_step(tmp / "steps"))
    return ["submit", "-b", "local", "--step", "slow", "-n", "1", "--steps-dir", steps, "--dry-run"]


COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "tokens status": lambda _tmp: ["tokens", "status"],
    "doctor": lambda _tmp: ["doctor"],
    "submit --dry-run": _dry_run,
}


@pytest.mark.parametrize("kind", ["hash-query", "slash-at", "query-first"])
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("given", ["option", "environment"])
def test_commands_never_show_a_password_with_raw_delimiters(
    command: str, kind: str, given: str, tmp_path: Path
) -> None:
    """A pool that does not answer: the commands fail, and say so without the password."""
    password, pieces = _raw_password(kind)
    pool = f"http://alice:{password}@127.0.0.1:{free_port()}/tokens_db"  # nothing listens
    env = cli_env(tmp_path, **({"GRIDLRT_POOL": pool} if given == "environment" else {}))
    args = COMMANDS[command](tmp_path)
    if given == "option":
        args = [*args, "--pool", pool]
    result = gridlrt(env, *args, check=False)
    output = result.stdout + result.stderr
    _assert_hidden(output, pieces, f"gridlrt {command} ({given})")
    assert "Traceback" not in output
    # the URL is understood (host, port and database), not refused as having no database
    assert "needs a database name" not in output
    assert "http://alice:***@127.0.0.1:" in output or "http://127.0.0.1:" in output, output


@pytest.mark.parametrize("kind", ["hash-query", "slash-at"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_on_a_working_pool_never_show_a_password_with_raw_delimiters(
    command: str, kind: str, secured_couchdb: SecuredCouchDB, tmp_path: Path
) -> None:
    """The same URL shape on a pool that answers (its credentials come from the
    environment): what the commands print when all is well has no password either."""
    password, pieces = _raw_password(kind)
    db = secured_couchdb.new_database("shown")
    pool = CouchDBPool(db, (secured_couchdb.username, secured_couchdb.password))
    pool.init()
    pool.create([new_token("slow_0", inputs="x", step="slow")])
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=db.replace("http://", f"http://alice:{password}@"),
        GRIDLRT_POOL_USERNAME=secured_couchdb.username,
        GRIDLRT_POOL_PASSWORD=secured_couchdb.password,
    )
    result = gridlrt(env, *COMMANDS[command](tmp_path), check=False)
    output = result.stdout + result.stderr
    _assert_hidden(output, [*pieces, secured_couchdb.password], f"gridlrt {command}")
    assert "Traceback" not in output
    if command == "submit --dry-run":
        assert result.returncode == 0, output
        assert f"--pool {db} " in result.stdout, output  # no credentials in the pilots' argv
    if command == "doctor":
        assert "pool URL" in result.stdout  # the warning about credentials in the URL
        assert "alice:***@" in result.stdout
    if command == "tokens status":
        assert result.returncode == 0, output


def test_tokens_status_against_a_server_that_wants_the_password(
    secured_couchdb: SecuredCouchDB, tmp_path: Path
) -> None:
    """The secured pool's own password (``Pw#...!&$x``) pasted raw into the URL."""
    db = secured_couchdb.new_database("raw")
    pool = db.replace("http://", f"http://{secured_couchdb.username}:{secured_couchdb.password}@")
    secret = secured_couchdb.password
    pieces = [secret, secret.split("#", 1)[1]]
    for args in (["tokens", "status"], ["tokens", "status", "--json"], ["doctor"]):
        result = gridlrt(cli_env(tmp_path, GRIDLRT_POOL=pool), *args, check=False)
        _assert_hidden(result.stdout + result.stderr, pieces, f"gridlrt {' '.join(args)}")
        assert "Traceback" not in result.stderr


# --- the environment of payloads ----------------------------------------------------------

SECRETS = {
    "GRIDLRT_POOL_USERNAME": "pool-user-S1",
    "GRIDLRT_POOL_PASSWORD": "pool-pw-S2",
    "GRIDLRT_POOL_CREDENTIALS": "/home/u/.config/gridlrt/couchdb.cred",
    "GRIDLRT_LTA_USER": "lta-user-S3",
    "GRIDLRT_LTA_PASSWORD": "lta-pw-S4",
    "GRIDLRT_LTA_TOKEN": "lta-token-S5",
    "GRIDLRT_LTA_CREDENTIALS": "/home/u/.stagingrc",
    "GRIDLRT_AWE_CONFIG": "/home/u/.awe/Environment.cfg",
    "GRIDLRT_POOL": "https://ann:pool-url-pw-S6@couch.example.org:6984/tokens",
    "GRIDLRT_STAGER_URL": "https://ann:stager-pw-S7@lta.example.org/rpc",
    "GRIDLRT_SOMETHING_PASSWORD": "future-pw-S8",
}
HARMLESS = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/u",
    "OPENBLAS_NUM_THREADS": "8",
    "GRIDLRT_STORAGE_ROOT": "davs://webdav.example.org/out",
    "GRIDLRT_JOB_ID": "42_1",
    "GRIDLRT_WEBDAV_DOOR_SARA": "https://webdav.grid.surfsara.nl:2881",
    "X509_USER_PROXY": "/tmp/x509up_u1000",
}


def test_payload_environment_has_no_gridlrt_secret() -> None:
    env = payload_environment({**SECRETS, **HARMLESS})
    assert env == {**HARMLESS, "OPENBLAS_NUM_THREADS": "1"}
    blob = json.dumps(env)
    assert not [value for value in SECRETS.values() if value in blob]


def test_payload_environment_defaults_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GRIDLRT_JOB_ID", "7")
    env = payload_environment()
    assert not set(SECRETS) & set(env)
    assert env["GRIDLRT_JOB_ID"] == "7" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["PATH"] == os.environ["PATH"]
    # what the pilot passes its payloads today is the same scrubbed environment
    assert dp3_environment() == env


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("GRIDLRT_POOL_PASSWORD", True),
        ("gridlrt_lta_token", True),
        ("GRIDLRT_LTA_PROTOCOL", True),  # the whole LTA family stays with gridlrt
        ("GRIDLRT_DASHBOARD_SECRET", True),
        ("GRIDLRT_POOL", False),  # a secret only when its URL carries a password
        ("GRIDLRT_TOKEN_ID", False),  # a work token's id, not an access token
        ("MY_PASSWORD", False),  # not gridlrt's
    ],
)
def test_secret_variables_by_name(name: str, secret: bool) -> None:
    assert is_secret_variable(name) is secret


def test_scrubbed_environment_for_pilots_keeps_urls_without_their_password() -> None:
    env = scrub_environment({**SECRETS, **HARMLESS})
    assert env["GRIDLRT_POOL"] == "https://couch.example.org:6984/tokens"
    assert env["GRIDLRT_STAGER_URL"] == "https://lta.example.org/rpc"
    assert not {n for n in SECRETS if n not in ("GRIDLRT_POOL", "GRIDLRT_STAGER_URL")} & set(env)
    raw = scrub_environment({"GRIDLRT_POOL": "http://ann:p#ss?w@127.0.0.1:5984/db"})
    assert raw == {"GRIDLRT_POOL": "http://127.0.0.1:5984/db"}


@pytest.mark.parametrize("backend", [LocalSubmitter, SlurmSubmitter])
def test_submitters_pass_no_secret_to_pilots_or_batch_clients(
    backend: type[LocalSubmitter | SlurmSubmitter],
) -> None:
    env = backend({**SECRETS, **HARMLESS}).env
    blob = json.dumps(env)
    assert not [value for value in SECRETS.values() if value in blob]
    assert env["GRIDLRT_POOL"] == "https://couch.example.org:6984/tokens"
    assert env["GRIDLRT_STORAGE_ROOT"] == HARMLESS["GRIDLRT_STORAGE_ROOT"]


# --- pilots and payloads started by `gridlrt submit` ---------------------------------------


def _processes(marker: bytes) -> dict[int, tuple[bytes, bytes]]:
    """pid -> (argv, environ) of this user's processes whose argv contains ``marker``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if marker in cmdline:
                found[int(proc.name)] = (cmdline, (proc / "environ").read_bytes())
        except OSError:
            continue
    return found


def _environ(raw: bytes) -> dict[str, str]:
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "slurm"])
def test_pilots_and_payloads_started_by_submit_hold_no_secret(
    backend: str, secured_couchdb: SecuredCouchDB, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    extra: dict[str, str] = {}
    if backend == "slurm":
        cluster: SlurmCluster = request.getfixturevalue("slurm")
        extra["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    db = secured_couchdb.new_database("env")
    user, password = secured_couchdb.username, secured_couchdb.password
    pool = CouchDBPool(db, (user, password))
    pool.init()
    pool.create([new_token("slow_0", inputs="x", step="slow")])
    seconds = 3000 + int(uuid4().hex[:3], 16)  # names this test's payload: `sleep <seconds>`
    steps = slow_step(tmp_path / "steps", seconds=seconds)
    lta = {
        "GRIDLRT_LTA_USER": f"lta-user-{uuid4().hex[:8]}",
        "GRIDLRT_LTA_PASSWORD": f"lta-pw-{uuid4().hex[:8]}",
        "GRIDLRT_LTA_TOKEN": f"lta-token-{uuid4().hex[:8]}",
    }
    # the pool password only in the URL (percent-encoded) and in GRIDLRT_POOL_PASSWORD
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=db.replace("http://", f"http://{user}:{quote(password, safe='')}@"),
        GRIDLRT_POOL_USERNAME=user,
        GRIDLRT_POOL_PASSWORD=password,
        **lta,
        **extra,
    )
    secrets = [password, quote(password, safe=""), *lta.values()]

    record = json.loads(
        gridlrt(env, "submit", "-b", backend, "--step", "slow", "--steps-dir", str(steps),
                "-n", "1", "--json").stdout
    )  # fmt: skip
    run_dir = Path(record["run_dir"])
    try:
        deadline = time.monotonic() + 90
        payloads: dict[int, tuple[bytes, bytes]] = {}
        while not payloads:
            assert time.monotonic() < deadline, "the payload never started"
            time.sleep(0.2)
            payloads = _processes(f"sleep\0{seconds}\0".encode())
        pilots = _processes(str(steps).encode() + b"\0")
        pilots = {pid: seen for pid, seen in pilots.items() if b"worker\0run" in seen[0]}
        assert pilots, "no pilot process found"
        for what, processes in (("pilot", pilots), ("payload", payloads)):
            for pid, (argv, environ) in processes.items():
                leaked = [s for s in secrets if s.encode() in argv + environ]
                assert leaked == [], f"{what} {pid} holds a secret"
        for _argv, environ in pilots.values():
            variables = _environ(environ)
            assert variables["GRIDLRT_POOL_CREDENTIALS"] == str(run_dir / "pool.cred")
            assert "GRIDLRT_POOL_PASSWORD" not in variables
            assert "@" not in variables.get("GRIDLRT_POOL", "")
        for _argv, environ in payloads.values():
            variables = _environ(environ)
            assert variables["OPENBLAS_NUM_THREADS"] == "1"
            assert not [name for name in variables if is_secret_variable(name)]
            assert "@" not in variables.get("GRIDLRT_POOL", "")
        cred = run_dir / "pool.cred"
        assert stat.S_IMODE(cred.stat().st_mode) == 0o600
        assert cred.read_text() == f"username={user}\npassword={password}\n"
    finally:
        gridlrt(env, "jobs", "cancel", record["id"], check=False)
        wait_jobs_finished(env, record["id"], timeout=120)
    assert pool.overview().total(TokenStatus.TODO, "slow") == 1  # the pilot put it back


def test_an_output_root_with_a_password_is_refused_before_any_pilot(tmp_path: Path) -> None:
    """--output-root is passed to every pilot on its command line: a password in it would be
    in every job's argv (and JDL), so submit refuses it in one line, without showing it."""
    pool = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    env = cli_env(tmp_path, GRIDLRT_POOL=pool)
    gridlrt(env, "pool", "init")
    root = "davs://ann:s3cr#t@webdav.example.org:2880/lofar"
    result = gridlrt(env, *_dry_run(tmp_path), "--output-root", root, check=False)
    assert result.returncode != 0
    assert "holds a password" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "s3cr" not in result.stdout + result.stderr
