"""Test-wide fixtures: every fixture here starts a *real* component (see tests/services/)."""

pytest_plugins = [
    "tests.services.couchdb",
    "tests.services.pools",
    "tests.services.webdav",
    "tests.services.slurm",
    "tests.services.measurement_sets",
    "tests.fakes.grid_cli",
]
