"""``gridlrt submit --backend local`` end to end, through the command line: real pilots, real
DP3 on synthetic measurement sets, inputs and outputs on the WebDAV fixture, and a pool that
demands credentials (pouchdb-server behind a Basic-auth gate)."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest

from gridlrt.errors import ExitCode
from gridlrt.tokens import TokenPool, TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
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


@pytest.fixture
def secured_pool(secured_couchdb: SecuredCouchDB) -> tuple[str, TokenPool]:
    url = secured_couchdb.new_database()
    pool = CouchDBPool(url, (secured_couchdb.username, secured_couchdb.password))
    pool.init()
    return url, pool


def test_local_pilots_process_tokens_and_no_secret_leaks(
    secured_couchdb: SecuredCouchDB,
    secured_pool: tuple[str, TokenPool],
    webdav: WebDAV,
    make_ms: Callable[..., Path],
    tmp_path: Path,
) -> None:
    url, pool = secured_pool
    area = f"local-{uuid4().hex[:8]}"
    subbands = range(300, 304)
    inputs = [
        put_input(
            webdav, area, make_ms(obsid=700001, subband=sb, channels=16, timeslots=4), tmp_path
        )
        for sb in subbands
    ]
    pool.create(
        [
            new_token(f"average_SB{sb}", inputs=u, step="average")
            for sb, u in zip(subbands, inputs, strict=True)
        ]
    )
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=url,
        GRIDLRT_POOL_CREDENTIALS=str(write_credentials(tmp_path / "couchdb.cred", secured_couchdb)),
        GRIDLRT_STORAGE_ROOT=webdav.dav_url(f"{area}/results"),
    )
    rejected_before = len(secured_couchdb.rejected)

    with ProcWatcher(secured_couchdb.password) as watcher:
        submitted = gridlrt(env, "submit", "-b", "local", "--step", "average", "-n", "2", "--json")
        record = json.loads(submitted.stdout)
        assert record["backend"] == "local" and len(record["job_ids"]) == 2
        final = wait_jobs_finished(env, record["id"])

    assert set(job_states(final).values()) == {"completed"}, final
    tokens = {t.id: t for t in pool.tokens()}
    assert {t.status for t in tokens.values()} == {TokenStatus.DONE}, {
        t.id: t.error for t in tokens.values()
    }
    assert len({t.attempts[-1].pilot for t in tokens.values()}) == 2  # both pilots worked
    for token in tokens.values():
        [output] = token.output
        name = output.removeprefix(webdav.dav_url(""))
        assert webdav.path(name).stat().st_size > 0
    # credentials were needed, and the pilots had them
    assert len(secured_couchdb.rejected) == rejected_before
    assert watcher.pilots_seen, "the watcher never saw a pilot process"
    assert watcher.hits == []
    run_dir = Path(record["run_dir"])
    cred = run_dir / "pool.cred"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert files_containing(secured_couchdb.password, run_dir, skip=(cred,)) == []
    assert files_containing(secured_couchdb.password, webdav.path(area)) == []
    for token in tokens.values():
        assert secured_couchdb.password not in json.dumps(token.to_doc())
        for name in pool.attachment_names(token.id):
            assert secured_couchdb.password.encode() not in pool.attachment(token.id, name)
    # the pilots' logs are there and say what happened
    logs = "".join(p.read_text() for p in run_dir.glob("pilot-*.log"))
    assert "token(s)" in logs


def test_without_credentials_the_pilots_fail_and_say_why(
    secured_pool: tuple[str, TokenPool], tmp_path: Path
) -> None:
    url, pool = secured_pool
    pool.create([new_token("t1", inputs="x", step="command")])
    env = cli_env(tmp_path, GRIDLRT_POOL=url)
    result = gridlrt(env, "submit", "-b", "local", "--step", "command", "-n", "1", check=False)
    assert result.returncode == ExitCode.CREDENTIALS  # the pool refused: 401
    assert "401" in result.stderr or "credentials" in result.stderr
    assert "Traceback" not in result.stderr


def test_auto_count_dry_run_and_cancel(tmp_path: Path) -> None:
    pool_url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    steps = slow_step(tmp_path / "steps")
    env = cli_env(tmp_path, GRIDLRT_POOL=pool_url, GRIDLRT_MAX_PILOTS="2")
    gridlrt(env, "pool", "init")
    from gridlrt.config import load_settings
    from gridlrt.tokens import open_pool

    pool = open_pool(load_settings(pool=pool_url))
    pool.create([new_token(f"slow_{i}", inputs=f"x{i}", step="slow") for i in range(3)])

    dry = gridlrt(
        env, "submit", "-b", "local", "--step", "slow", "--steps-dir", str(steps), "--dry-run"
    )
    assert "-n auto: 2 pilot(s)" in dry.stderr  # 3 todo tokens, capped by max_pilots=2
    assert "-m gridlrt worker run --pool" in dry.stdout and "nothing submitted" in dry.stdout
    assert not (tmp_path / "runs").exists()
    assert json.loads(gridlrt(env, "jobs", "status", "--json").stdout) == []

    record = json.loads(
        gridlrt(
            env,
            "submit",
            "-b",
            "local",
            "--step",
            "slow",
            "--steps-dir",
            str(steps),
            "-n",
            "1",
            "--json",
        ).stdout
    )
    deadline = time.monotonic() + 60
    while pool.overview().total(TokenStatus.RUNNING, "slow") < 1:
        assert time.monotonic() < deadline, "the pilot never started the slow token"
        time.sleep(0.2)
    [status] = json.loads(gridlrt(env, "jobs", "status", record["id"], "--json").stdout)
    assert list(job_states(status).values()) == ["running"]

    cancelled = gridlrt(env, "jobs", "cancel", record["id"])
    assert "cancelled 1 job(s)" in cancelled.stdout
    final = wait_jobs_finished(env, record["id"], timeout=60)
    assert list(job_states(final).values()) == ["cancelled"]
    assert pool.overview().total(TokenStatus.TODO, "slow") == 3  # the token went back to todo
    table = gridlrt(env, "jobs", "status").stdout
    assert record["id"] in table and "cancelled" in table


def test_local_pilots_for_a_pipeline_run(tmp_path: Path) -> None:
    """``--pipeline RUN``: -n auto is the widest stage (3), the pilots take any step, wait for
    the gather's parents and drain the run; ``jobs status`` names the run."""
    pool_url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    out = tmp_path / "out"
    env = cli_env(tmp_path, GRIDLRT_POOL=pool_url, GRIDLRT_STORAGE_ROOT=out.as_uri())
    steps = tmp_path / "steps"
    steps.mkdir()
    url = '[outputs]\nkeep = ["{token_id}.txt"]\nurl = "{root}/{stage}/{name}"\n'
    (steps / "part.toml").write_text(
        'name = "part"\nkind = "command"\nmax_attempts = 1\n'
        'command = ["sh", "-c", "echo $0 > {workdir}/{token_id}.txt", "{input}"]\n'
        '[inputs]\nkind = "none"\n' + url
    )
    (steps / "join.toml").write_text(
        'name = "join"\nkind = "command"\nmax_attempts = 1\n'
        'command = ["sh", "-c", "cat $0 > {workdir}/{token_id}.txt", "{local_inputs}"]\n'
        '[inputs]\nkind = "file"\n' + url
    )
    (tmp_path / "parts.txt").write_text("a\nb\nc\n")
    (tmp_path / "run.toml").write_text(
        'name = "joined"\n[inputs]\nparts = "words"\n'
        '[[stage]]\nname = "part"\nstep = "part"\nover = "parts"\n'
        '[[stage]]\nname = "join"\nstep = "join"\nover = "part"\ngather = "all"\n'
    )
    gridlrt(env, "pipeline", "create", str(tmp_path / "run.toml"),
            "-i", f"parts={tmp_path / 'parts.txt'}", "--steps-dir", str(steps))  # fmt: skip

    submitted = gridlrt(env, "submit", "-b", "local", "--pipeline", "joined",
                        "--steps-dir", str(steps), "--json")  # fmt: skip
    assert "-n auto: 3 pilot(s) for pipeline run joined" in submitted.stderr
    record = json.loads(submitted.stdout)
    assert (record["step"], record["pipeline"]) == (None, "joined")
    assert "-local-joined-" in record["id"]
    final = wait_jobs_finished(env, record["id"], timeout=120)
    assert set(job_states(final).values()) == {"completed"}, final

    from gridlrt.config import load_settings
    from gridlrt.tokens import open_pool

    with open_pool(load_settings(pool=pool_url)) as pool:
        tokens = {t.id: t for t in pool.tokens()}
    assert {t.status for t in tokens.values()} == {TokenStatus.DONE}, tokens
    assert (out / "join" / "joined.join.all.txt").read_text() == "a\nb\nc\n"
    table = gridlrt(env, "jobs", "status").stdout
    assert "any (pipeline joined)" in table
