"""Real services started by the tests: CouchDB protocol, WebDAV storage, Slurm, measurement sets."""
