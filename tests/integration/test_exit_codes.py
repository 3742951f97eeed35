"""Exit codes a script can act on (issue 13, item 6): one per kind of failure, through the
real ``gridlrt`` command, and the README's table says the same as :class:`ExitCode`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gridlrt.cli import submit as cli_submit
from gridlrt.cli.app import main
from gridlrt.errors import ExitCode
from tests.gridlrt_cli import cli_env, gridlrt
from tests.services.couchdb import SecuredCouchDB
from tests.services.process import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def one_line(result: subprocess.CompletedProcess[str], code: ExitCode, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, line


def test_usage_and_invalid_input(tmp_path: Path) -> None:
    env = cli_env(tmp_path, GRIDLRT_POOL=f"sqlite:///{tmp_path / 'pool.sqlite'}")
    one_line(gridlrt(env, "jobs", "status", "--nope", check=False), ExitCode.USAGE, "--nope")
    one_line(
        gridlrt(env, "submit", "-b", "local", "--step", "average", "--walltime", "banana",
                check=False),
        ExitCode.INPUT, "--walltime 'banana'",
    )  # fmt: skip
    one_line(
        gridlrt(env, "jobs", "status", "--pool", "couch://nowhere/db", check=False),
        ExitCode.INPUT, "must start with",
    )  # fmt: skip
    gridlrt(env, "pool", "init")
    one_line(
        gridlrt(env, "jobs", "status", "20261121T101121Z-slurm-x-ab12", check=False),
        ExitCode.INPUT, "no submission '20261121T101121Z-slurm-x-ab12'",
    )  # fmt: skip


def test_refused_credentials(secured_couchdb: SecuredCouchDB, tmp_path: Path) -> None:
    url = secured_couchdb.new_database()
    env = cli_env(
        tmp_path, GRIDLRT_POOL=url, GRIDLRT_POOL_USERNAME=secured_couchdb.username,
        GRIDLRT_POOL_PASSWORD="not-the-password",
    )  # fmt: skip
    one_line(
        gridlrt(env, "jobs", "status", check=False), ExitCode.CREDENTIALS, "refused the credentials"
    )
    good = {**env, "GRIDLRT_POOL_PASSWORD": secured_couchdb.password}
    assert gridlrt(good, "jobs", "status").returncode == ExitCode.OK


def test_unreachable_pool_means_retry_later(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/lofar"
    env = cli_env(tmp_path, GRIDLRT_POOL=url)
    one_line(gridlrt(env, "jobs", "status", check=False), ExitCode.UNAVAILABLE, "unreachable")


def test_a_bug_is_an_internal_error_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in cli_env(tmp_path).items():
        monkeypatch.setenv(name, value)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an unforeseen state")

    monkeypatch.setattr(cli_submit, "refresh_jobs", broken)
    with pytest.raises(SystemExit) as exited:
        main(["jobs", "status", "--pool", f"sqlite:///{tmp_path / 'pool.sqlite'}"])
    assert exited.value.code == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):"), err
    last = err.strip().splitlines()[-1]
    assert last.startswith("internal error: RuntimeError: an unforeseen state"), last
    assert "a bug in gridlrt" in last


def test_readme_table_is_the_exit_codes() -> None:
    text = README.read_text()
    section = text[text.index("## Exit codes") :]
    section = section[: section.index("\n## ", 3)]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.MULTILINE)
    assert [(int(code), name) for code, name in rows] == [(c.value, c.name) for c in ExitCode]
