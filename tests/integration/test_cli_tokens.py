"""``gridlrt pool`` and ``gridlrt tokens`` as a user runs them, on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridlrt.config import load_settings
from gridlrt.errors import ExitCode
from gridlrt.tokens import PilotInfo, TokenStatus, open_pool
from tests.services.couchdb import CouchDB
from tests.services.process import free_port

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
SRM = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"


def gridlrt(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GRIDLRT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )


@pytest.fixture(params=["sqlite", "couchdb"])
def pool_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pool.sqlite'}"
    server: CouchDB = request.getfixturevalue("couchdb")
    url = f"{server.url}/cli_{time.time_ns()}"
    assert gridlrt("pool", "init", "--pool", url).returncode == 0
    return url


@pytest.fixture
def srm_txt(tmp_path: Path) -> Path:
    path = tmp_path / "srm.txt"
    lines = ["# L229507, 6 subbands", ""] + [
        f"{SRM}/L229507_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar" for sb in range(100, 106)
    ]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def counts(pool_url: str, step: str = "average") -> dict[str, int]:
    result = gridlrt("tokens", "status", "--json", "--pool", pool_url)
    assert result.returncode == 0, result.stderr
    data: dict[str, dict[str, int]] = json.loads(result.stdout)
    return data.get(step, {})


def test_create_dry_run_then_create_is_idempotent(
    pool_url: str, srm_txt: Path, tmp_path: Path
) -> None:
    parset = tmp_path / "avg.parset"
    parset.write_text("steps=[avg]\n")
    dry = gridlrt(
        "tokens",
        "create",
        "--step",
        "average",
        "--inputs",
        str(srm_txt),
        "--pool",
        pool_url,
        "--dry-run",
        "--attach",
        str(parset),
    )
    assert dry.returncode == 0, dry.stderr
    assert "would create 6 token(s)" in dry.stdout
    assert "average_L229507_SB100" in dry.stdout
    if pool_url.startswith("sqlite"):
        assert not Path(pool_url.removeprefix("sqlite:///")).exists()
    else:
        assert counts(pool_url) == {}

    made = gridlrt(
        "tokens",
        "create",
        "--step",
        "average",
        "--inputs",
        str(srm_txt),
        "--pool",
        pool_url,
        "--attach",
        str(parset),
        "--field",
        "avg_freqstep=4",
    )
    assert made.returncode == 0, made.stderr
    assert "created 6 token(s)" in made.stdout
    again = gridlrt(
        "tokens", "create", "--step", "average", "--inputs", str(srm_txt), "--pool", pool_url
    )
    assert "created 0 token(s)" in again.stdout and "6 already there" in again.stdout
    assert counts(pool_url)["todo"] == 6

    shown = json.loads(
        gridlrt("tokens", "show", "average_L229507_SB103", "--json", "--pool", pool_url).stdout
    )
    assert shown["input"].endswith("L229507_SB103_uv.dppp.MS_3d78b8f1.tar")
    assert shown["avg_freqstep"] == 4
    with open_pool(load_settings(pool=pool_url)) as pool:
        assert pool.attachment("average_L229507_SB103", "avg.parset") == b"steps=[avg]\n"


def test_list_show_reset_recover_archive(pool_url: str, srm_txt: Path, tmp_path: Path) -> None:
    assert (
        gridlrt(
            "tokens", "create", "--step", "average", "--inputs", str(srm_txt), "--pool", pool_url
        ).returncode
        == 0
    )
    pilot = PilotInfo(pilot="p1", host="wn7")
    with open_pool(load_settings(pool=pool_url)) as pool:
        a, b, c = (pool.claim(pilot) for _ in range(3))
        assert a and b and c
        pool.fail(a.id, "p1", "DP3 exited 1", log_tail="line1\nStep avg failed: bad freqstep")
        pool.finish(b.id, "p1")

    listed = json.loads(
        gridlrt("tokens", "list", "--status", "error", "--json", "--pool", pool_url).stdout
    )
    assert [d["_id"] for d in listed] == [a.id]
    table = gridlrt("tokens", "list", "--pool", pool_url)
    assert "DP3 exited 1" in table.stdout and a.id in table.stdout
    show = gridlrt("tokens", "show", a.id, "--pool", pool_url)
    assert "Step avg failed: bad freqstep" in show.stdout
    assert "wn7" in show.stdout

    dry = gridlrt("tokens", "reset", "--dry-run", "--pool", pool_url)
    assert f"would reset 1 token(s): {a.id}" in dry.stdout
    assert counts(pool_url)["error"] == 1
    assert "reset 1 token(s)" in gridlrt("tokens", "reset", "--pool", pool_url).stdout
    assert counts(pool_url)["error"] == 0

    assert (
        "would recover 0"
        in gridlrt(
            "tokens", "recover", "--stale-after", "1h", "--dry-run", "--pool", pool_url
        ).stdout
    )
    time.sleep(1.1)
    recovered = gridlrt("tokens", "recover", "--stale-after", "1s", "--pool", pool_url)
    assert f"recovered 1 token(s) silent for more than 1s: {c.id}" in recovered.stdout

    archived = gridlrt("tokens", "archive", "--to", str(tmp_path / "arch"), "--pool", pool_url)
    assert "archived 1 token(s)" in archived.stdout, archived.stdout + archived.stderr
    assert counts(pool_url) == {**{s.value: 0 for s in TokenStatus}, "todo": 5}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["tokens", "create", "--step", "avg", "--inputs", "/nonexistent/srm.txt"],
            "error: /nonexistent/srm.txt: no such file",
        ),
        (
            ["tokens", "create", "--step", "bad step", "--inputs", "{srm}"],
            "error: step name 'bad step'",
        ),
        (
            ["tokens", "create", "--step", "avg", "--inputs", "{srm}", "--field", "lock=1"],
            "error: --field lock: reserved token field",
        ),
        (["tokens", "list", "--status", "finished"], "error: --status 'finished': choose one of"),
        (["tokens", "recover", "--stale-after", "soon"], "error: not a duration: 'soon'"),
        (["tokens", "show", "no-such-token"], "error: no token 'no-such-token'"),
    ],
)
def test_user_mistakes_are_one_line(
    args: list[str], expected: str, srm_txt: Path, tmp_path: Path
) -> None:
    pool = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    assert gridlrt("pool", "init", "--pool", pool).returncode == 0
    result = gridlrt(*[a.replace("{srm}", str(srm_txt)) for a in args], "--pool", pool)
    assert result.returncode == ExitCode.INPUT
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(expected), result.stderr


def test_pool_down_is_one_line_after_bounded_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/lofar_tokens"
    started = time.monotonic()
    result = gridlrt("tokens", "status", "--pool", url)
    took = time.monotonic() - started
    assert result.returncode == ExitCode.UNAVAILABLE  # retry later
    assert result.stderr.strip() == (
        f"error: token pool {url} unreachable after 5 attempts (ConnectionError); "
        "check the URL and that the server runs"
    )
    assert took < 60  # bounded: five attempts with capped backoff, not forever


def test_missing_database_and_refused_credentials(couchdb: CouchDB) -> None:
    missing = gridlrt("tokens", "status", "--pool", f"{couchdb.url}/never_created")
    # not "retry later": waiting does not make a database; `gridlrt pool init` does
    assert missing.returncode == ExitCode.INPUT
    assert missing.stderr.strip() == (
        f"error: database {couchdb.url}/never_created does not exist; run `gridlrt pool init`"
    )
    url = f"http://ann:hunter2@{couchdb.url.removeprefix('http://')}/never_created"
    refused = gridlrt("tokens", "status", "--pool", url)
    assert refused.returncode == ExitCode.CREDENTIALS
    assert "refused the credentials; check pool_credentials" in refused.stderr
    assert "hunter2" not in refused.stderr + refused.stdout
