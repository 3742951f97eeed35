"""Tests against real components started by the fixtures in tests/services/: the CouchDB
protocol, WebDAV through gfal2, DP3, Slurm, and the grid and LTA fakes."""
