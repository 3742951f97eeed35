"""DP3 on this node: the one adapter the worker and ``gridlrt doctor`` reach DP3 through.

Owns finding the executable (:func:`find_dp3`), asking its version (:func:`dp3_version`), the
environment it runs with (:func:`dp3_environment`) and the AOFlagger strategies its wheel ships
(:func:`find_aoflagger_strategy`). Nothing here runs a step: :mod:`gridlrt.worker.payload`
does, with the argv :mod:`gridlrt.worker.plan` renders.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from gridlrt.worker.environment import payload_environment

#: Executable names, in the order they are looked for: the pip wheel's, then LOFAR builds'.
EXECUTABLES = ("DP3.py", "DP3", "NDPPP")
#: What a DP3 step runs when no executable was found (the pip wheel's, beside Python).
DEFAULT_EXECUTABLE = "DP3.py"


def find_dp3() -> Path | None:
    """The DP3 executable: ``DP3.py`` (pip wheel), ``DP3`` or ``NDPPP`` on PATH or beside Python."""
    for name in EXECUTABLES:
        beside = Path(sys.executable).with_name(name)
        if beside.exists():
            return beside
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def default_dp3() -> Path:
    """Where a DP3 step looks for DP3 when :func:`find_dp3` was not asked: beside Python."""
    return Path(sys.executable).with_name(DEFAULT_EXECUTABLE)


def dp3_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment gridlrt runs DP3 with: OpenBLAS single-threaded, as DP3 demands, and
    no gridlrt secret (:func:`gridlrt.worker.environment.payload_environment`)."""
    return payload_environment(base)


class DP3Version(NamedTuple):
    """What ``DP3 -v`` answered."""

    returncode: int
    line: str
    """The first line of its output (``DP3 6.2.1``), empty when it printed nothing."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def dp3_version(exe: Path, *, timeout: float = 60) -> DP3Version:
    """Run ``exe -v`` with :func:`dp3_environment`. Raises :class:`OSError` when it cannot
    start and :class:`subprocess.TimeoutExpired` when it does not answer in ``timeout`` s."""
    run = subprocess.run(  # noqa: S603 - fixed argv, no user data
        [str(exe), "-v"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dp3_environment(),
        check=False,
    )
    lines = (run.stdout or run.stderr).strip().splitlines()
    return DP3Version(run.returncode, lines[0] if lines else "")


def find_aoflagger_strategy(name: str = "lofar-default.lua") -> Path | None:
    """The AOFlagger strategy shipped inside the DP3 wheel (``DP3.libs/aoflagger/strategies``)."""
    for base in map(Path, sys.path):
        candidate = base / "DP3.libs" / "aoflagger" / "strategies" / name
        if candidate.is_file():
            return candidate
    return None
