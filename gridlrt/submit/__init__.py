"""Submitting pilots: local processes, Slurm arrays, DIRAC and gLite JDL; job-id tracking.

Knows of the token schema only how many tokens are still to do.
"""
