"""Staging: SURLs and SRM lists, LTA stager clients (v1 XML-RPC, v2 StageIT), dCache locality.

Knows nothing of tokens or workers.
"""
