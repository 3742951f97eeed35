"""Sandboxes: reproducible, content-addressed tarballs of a step's scripts and parsets
(plus the pilot bootstrap); upload, fetch and verify.
"""
