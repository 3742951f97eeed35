"""The light core and its extras: numpy, python-casacore, DP3, LOSOTO, astropy and matplotlib
are optional (``gridlrt[worker]``, ``gridlrt[reduction]``, ``gridlrt[demo]``), and so are the
dashboard's starlette, jinja2 and uvicorn (``gridlrt[dashboard]``); a command that needs a
missing one says which extra to install, in one line. The missing package is simulated with
``sys.modules[name] = None`` (its import then raises ImportError), so these tests run in the
full test venv."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gridlrt.errors import ConfigError
from gridlrt.extras import EXTRAS, needs_extra

HEAVY = {"numpy", "python-casacore", "dp3", "losoto", "astropy", "matplotlib"}
WEB = {"starlette", "jinja2", "uvicorn"}  # gridlrt dashboard


def test_the_core_install_is_light_and_the_extras_bring_the_rest() -> None:
    requirements = [Requirement(text) for text in metadata.requires("gridlrt") or []]
    core = {r.name for r in requirements if r.marker is None}
    assert {"requests", "pydantic", "pydantic-settings", "typer", "rich", "packaging"} <= core
    assert not core & (HEAVY | WEB)

    def extra(name: str) -> set[str]:
        return {r.name for r in requirements if r.marker and r.marker.evaluate({"extra": name})}

    assert extra("worker") == {"numpy", "python-casacore", "dp3"}
    assert extra("reduction") == {"gridlrt", "losoto", "astropy"}  # gridlrt[worker] + these
    assert extra("demo") == {"gridlrt", "matplotlib"}  # gridlrt[reduction] + matplotlib
    assert extra("dashboard") == WEB
    assert "gridlrt" in extra("test")  # gridlrt[demo]: make test and make demo need it all
    assert {dist for dist, _ in EXTRAS.values()} == HEAVY | WEB


def test_a_missing_optional_module_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError) as err, needs_extra("the demo's plot"):
        from matplotlib.figure import Figure  # noqa: F401
    assert str(err.value) == (
        "the demo's plot needs matplotlib, which is not installed: pip install 'gridlrt[demo]'"
    )

    with pytest.raises(ImportError) as other, needs_extra("anything"):  # a bug, not an extra
        import gridlrt.no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert not isinstance(other.value, ConfigError)


def test_ms_info_without_casacore_is_one_line(tmp_path: Path) -> None:
    ms = tmp_path / "L1_SB000_uv.MS"
    ms.mkdir()
    (ms / "table.dat").write_bytes(b"")
    hidden = "import sys; sys.modules['casacore'] = sys.modules['casacore.tables'] = None; "
    for also_numpy in (False, True):
        code = hidden + ("sys.modules['numpy'] = None; " if also_numpy else "")
        code += f"from gridlrt.cli import main; sys.argv = ['gridlrt', 'ms', 'info', {str(ms)!r}]; "
        code += "main()"
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == ConfigError.exit_code, result.stderr
        missing = "numpy" if also_numpy else "python-casacore"
        purpose = "gridlrt ms info" if also_numpy else "reading a measurement set"
        assert result.stderr == (
            f"error: {purpose} needs {missing}, which is not installed: "
            "pip install 'gridlrt[worker]'\n"
        )


def test_demo_without_its_extras_is_one_line(tmp_path: Path) -> None:
    """`gridlrt demo` on an install without gridlrt[demo]: one line naming the extra, no
    traceback (numpy hidden: the synthetic observation cannot be made)."""
    code = (
        "import sys; sys.modules['numpy'] = None; from gridlrt.cli import main; "
        "sys.argv = ['gridlrt', 'demo']; main()"
    )
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "GRIDLRT_CONFIG": str(tmp_path / "no")}
    env.pop("GRIDLRT_POOL", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
        env=env,
    )  # fmt: skip
    assert result.returncode == ConfigError.exit_code, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: gridlrt demo needs numpy, which is not installed: pip install 'gridlrt[worker]'"
    )
    assert "Traceback" not in result.stderr
