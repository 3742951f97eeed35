"""Fast tests of pure functions: no server, no gfal2, no Slurm, no DP3 (``make unit``)."""
