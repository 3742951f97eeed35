"""The command line as a user meets it: version, help, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gridlrt import __version__

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
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --pool: pool URL 'couch://nowhere/db' must start with")
    assert "Traceback" not in result.stderr


def test_broken_config_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("pool = \n")
    result = gridlrt("--config", str(config), "doctor")
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: {config}: not valid TOML")
    assert len(result.stderr.strip().splitlines()) == 1
