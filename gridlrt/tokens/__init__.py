"""Tokens: the PiCaS-compatible token model, the pool contract and its two backends
(CouchDB over HTTP, embedded SQLite).

Knows nothing of how a step runs or where data lives.
"""
