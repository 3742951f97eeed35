"""The environment a payload (DP3, aoflagger, a step's command) runs with.

A payload is the user's or LOFAR's program, not gridlrt: it gets the pilot's environment
with what DP3 demands (``OPENBLAS_NUM_THREADS=1``: DP3 runs its own threads) and without any
gridlrt secret. What counts as a secret is listed once, in :mod:`gridlrt.config`:
:data:`~gridlrt.config.SECRET_VARIABLES` (pool user, password and credentials file, LTA
credentials file, AWE config), every ``GRIDLRT_LTA_*`` variable (user, password, token),
every ``GRIDLRT_*_PASSWORD`` / ``_PASSWD`` / ``_SECRET`` / ``_API_TOKEN`` / ``_API_KEY``, and
every ``GRIDLRT_*`` variable holding a URL with a ``user:password@`` (e.g. ``GRIDLRT_POOL``),
which a payload does not get at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gridlrt.config import scrub_environment

#: Set for every payload, whatever the pilot's environment says.
PAYLOAD_VARIABLES = {"OPENBLAS_NUM_THREADS": "1"}


def payload_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a payload: ``base`` (default: this process's environment) with
    :data:`PAYLOAD_VARIABLES` set and without gridlrt's secret variables."""
    env = scrub_environment(os.environ if base is None else base, urls="drop")
    env.update(PAYLOAD_VARIABLES)
    return env
