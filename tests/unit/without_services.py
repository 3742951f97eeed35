"""``pytest -p tests.unit.without_services``: make gfal2 unimportable for the run, so the unit
layer proves it needs no gfal2 (``make unit`` uses it). Services are never started by unit
tests either: tests/conftest.py refuses a unit test whose fixtures start one."""

from __future__ import annotations

import sys

sys.modules["gfal2"] = None  # type: ignore[assignment]  # `import gfal2` raises ImportError
