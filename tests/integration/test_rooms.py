"""The house plan's rooms (``ARCHITECTURE.md``): what the worker imports, what pilots get.

The worker never imports the demo or the diagnostics (``gridlrt.doctor``), and the pilot's
runtime bundle leaves the demo out, so a pilot runs ``python -m gridlrt worker run`` without it.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import gridlrt.worker
from gridlrt.sandbox.bundle import LIB_PREFIX, runtime_files

WORKER_MODULES = sorted(
    f"gridlrt.worker.{m.name}" for m in pkgutil.iter_modules(gridlrt.worker.__path__)
)


def python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (nothing imported yet by this test session)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def imported_after(modules: list[str], command: str = "") -> set[str]:
    """The gridlrt modules a fresh interpreter holds after importing ``modules`` (and building
    the CLI's ``command``, as running it or its help does)."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"if {command!r}: sys.modules['gridlrt.cli.app'].load_command({command!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('gridlrt'))))\n"
    )
    run = python(code)
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout))


def test_the_worker_imports_neither_the_demo_nor_the_doctor() -> None:
    assert "gridlrt.worker.pilot" in WORKER_MODULES and "gridlrt.worker.dp3" in WORKER_MODULES
    loaded = imported_after(WORKER_MODULES)
    assert "gridlrt.worker.pilot" in loaded
    for room in ("gridlrt.demo", "gridlrt.doctor", "gridlrt.pipelines", "gridlrt.cli"):
        assert not {m for m in loaded if m == room or m.startswith(room + ".")}, room


def test_the_cli_a_pilot_runs_does_not_import_the_demo() -> None:
    loaded = imported_after(["gridlrt.cli.app", "gridlrt.__main__"], command="demo")
    assert "gridlrt.cli.demo" in loaded  # the command is there; its room is not loaded
    assert not {m for m in loaded if m == "gridlrt.demo" or m.startswith("gridlrt.demo.")}


def test_the_cli_loads_only_the_command_it_runs() -> None:
    """Each command's module is imported when the command line names it: a pilot's ``gridlrt
    worker run`` (and every ``gridlrt tokens ...`` a script calls) starts without the others."""
    loaded = imported_after(["gridlrt.cli.app", "gridlrt.__main__"])
    assert {m for m in loaded if m.startswith("gridlrt.cli.")} == {
        "gridlrt.cli.app", "gridlrt.cli.common", "gridlrt.cli.helpfmt"
    }  # fmt: skip
    worker = imported_after(["gridlrt.cli.app"], command="worker")
    for room in ("gridlrt.dashboard", "gridlrt.doctor", "gridlrt.pipelines", "gridlrt.submit"):
        assert not {m for m in worker if m == room or m.startswith(room + ".")}, room


def test_without_the_demo_the_worker_cli_runs_and_demo_says_why() -> None:
    """As in a pilot bundle: ``gridlrt.demo`` cannot be imported."""
    code = (
        "import sys\n"
        "sys.modules['gridlrt.demo'] = None  # what a bundle without gridlrt/demo/ gives\n"
        "from gridlrt.cli.app import main\n"
        "sys.argv = ['gridlrt', *sys.argv[1:]]\n"
        "main()\n"
    )
    help_run = subprocess.run(
        [sys.executable, "-c", code, "worker", "run", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert help_run.returncode == 0, help_run.stderr
    assert "--steps-dir" in help_run.stdout
    demo_run = subprocess.run(
        [sys.executable, "-c", code, "demo", "--dry-run"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert demo_run.returncode != 0
    assert "Traceback" not in demo_run.stderr
    assert "the demo is not part of this installation" in demo_run.stderr


def test_the_pilot_bundle_leaves_the_demo_out(tmp_path: Path) -> None:
    files = runtime_files(tmp_path)
    lib = f"{LIB_PREFIX}/gridlrt/"
    for needed in ("worker/pilot.py", "worker/dp3.py", "cli/demo.py", "doctor.py"):
        assert lib + needed in files, needed
    assert not [name for name in files if name.startswith(lib + "demo/")]
    assert not [name for name in files if "synthetic_ms" in name]
    assert Path(gridlrt.__file__).with_name("demo").joinpath("synthetic_ms.py").is_file()
