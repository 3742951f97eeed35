"""The command line as a user meets it: version, help, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gridlrt import __version__
from gridlrt.errors import ExitCode

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))


def gridlrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRIDLRT, *args], capture_output=True, text=True, timeout=60, check=False)


def test_version() -> None:
    result = gridlrt("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"gridlrt {__version__}"


def test_help_teaches_where_to_start() -> None:
    result = gridlrt("--help")
    assert result.returncode == 0
    assert "gridlrt doctor" in result.stdout
    assert "doctor" in gridlrt("doctor", "--help").stdout


def test_bad_pool_is_one_line_without_traceback() -> None:
    result = gridlrt("doctor", "--pool", "couch://nowhere/db")
    assert result.returncode == ExitCode.INPUT
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --pool: pool URL 'couch://nowhere/db' must start with")
    assert "Traceback" not in result.stderr


def test_broken_config_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("pool = \n")
    result = gridlrt("--config", str(config), "doctor")
    assert result.returncode == ExitCode.INPUT
    assert result.stderr.strip().startswith(f"error: {config}: not valid TOML")
    assert len(result.stderr.strip().splitlines()) == 1


def _option_line(help_text: str, option: str) -> str:
    """The row of ``option`` in the help's options panel."""
    return next(
        line for line in help_text.splitlines() if line.startswith("│") and f" {option} " in line
    )


def test_help_names_values_as_python_cli_users_expect() -> None:
    """Flags show no value (typer 0.2x printed `--dry-run <bool>`, as if a value were due);
    options that take one say TEXT, INTEGER, PATH, as click and argparse do."""
    import re

    import pytest

    from gridlrt.cli.helpfmt import plain_label

    for argv in (["tokens", "reset"], ["submit"], ["worker", "run"], ["status"], []):
        result = subprocess.run(
            [GRIDLRT, *argv, "--help"],
            capture_output=True, text=True, timeout=60, check=False,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert not re.search(r"<\w[^>]*>", result.stdout), result.stdout
        assert re.search(r"--help\s+Show this message", result.stdout), result.stdout
    reset = gridlrt("tokens", "reset", "--help").stdout
    assert re.search(r"--dry-run\s+Show what would change", _option_line(reset, "--dry-run"))
    assert re.search(r"--step\s+TEXT\s", _option_line(reset, "--step"))
    submit = subprocess.run(
        [GRIDLRT, "submit", "--help"], capture_output=True, text=True, timeout=60, check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert re.search(r"--steps-dir\s+PATH\s", _option_line(submit, "--steps-dir"))
    assert re.search(r"--max\s+INTEGER\s", _option_line(submit, "--max"))
    for typed, plain in [("<int>", "INTEGER"), ("<list[str]>", "TEXT"), ("<a|b>", "[a|b]"),
                         ("<float range>", "FLOAT"), ("<directory>", "PATH")]:  # fmt: skip
        assert plain_label(typed) == plain
    with pytest.raises(StopIteration):
        _option_line("no options here", "--x")
