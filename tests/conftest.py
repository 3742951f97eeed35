"""Test-wide fixtures: every fixture here starts a *real* component (see tests/services/).

Two layers: ``tests/unit/`` (pure functions; ``make unit`` runs them in seconds with gfal2
blocked) and ``tests/integration/`` (real services). Each test is marked by where it lives
(``unit``/``integration``) and by the services its fixtures start (``couchdb``, ``webdav``,
``slurm``, ``dp3``, ``grid``), so e.g. ``pytest -m "not slurm"`` or ``-m couchdb`` select
by service.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.services.couchdb",
    "tests.services.pools",
    "tests.services.webdav",
    "tests.services.slurm",
    "tests.services.measurement_sets",
    "tests.fakes.grid_cli",
]

#: service marker -> the fixtures that start it (a parametrised ``pool`` counts on its
#: CouchDB side, see below)
SERVICE_FIXTURES = {
    "couchdb": {"couchdb", "couchdb_database", "secured_couchdb", "replicated_couchdb"},
    "webdav": {"webdav", "running_webdav"},
    "slurm": {"slurm"},
    "dp3": {"make_ms"},
    "grid": {"fake_dirac", "fake_glite"},
}
UNIT = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        in_unit = UNIT in item.path.parents
        item.add_marker("unit" if in_unit else "integration")
        used = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("pool") == "couchdb":
            used.add("couchdb")
        for marker, fixtures in SERVICE_FIXTURES.items():
            if used & fixtures:
                if in_unit:
                    raise pytest.UsageError(
                        f"{item.nodeid} starts a {marker} service: it belongs in tests/integration"
                    )
                item.add_marker(marker)
