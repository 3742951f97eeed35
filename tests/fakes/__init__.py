"""Fakes of remote services gridlrt cannot reach from here (the LOFAR LTA stagers).

Unlike ``tests/services`` (real components), these are stand-ins written for the tests. They
speak the real protocols over real HTTP on a loopback port, so the clients are tested as
they talk to the real services: :mod:`tests.fakes.lta_stager_v1` (XML-RPC ``LtaStager``) and
:mod:`tests.fakes.stageit` (StageIT REST + GraphQL), both driven by the same simulated
archive (:mod:`tests.fakes.archive`) whose requests advance over time.
"""
