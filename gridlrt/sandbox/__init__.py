"""Sandboxes: reproducible, content-addressed tarballs of a step's scripts and parsets
(plus the pilot bootstrap); upload, fetch and verify.

* :mod:`gridlrt.sandbox.build` - a directory (+ extra files) to deterministic ``tar.gz``
  bytes whose sha256 is the sandbox id;
* :mod:`gridlrt.sandbox.extract` - refusing unsafe tarballs and unpacking safe ones;
* :mod:`gridlrt.sandbox.remote` - push to ``<url>/<id>.tar.gz`` once, fetch and verify
  (through :class:`gridlrt.storage.Storage`).

Knows nothing of the pool's internals.
"""

from __future__ import annotations

from gridlrt.sandbox.build import Sandbox, build_sandbox, sha256_file
from gridlrt.sandbox.extract import UnsafeSandbox, check_tarball, extract_tarball
from gridlrt.sandbox.remote import (
    FetchPlan,
    FetchResult,
    PushPlan,
    PushResult,
    fetch_sandbox,
    id_from_name,
    plan_fetch,
    plan_push,
    push_sandbox,
    sandbox_url,
)

__all__ = [
    "FetchPlan",
    "FetchResult",
    "PushPlan",
    "PushResult",
    "Sandbox",
    "UnsafeSandbox",
    "build_sandbox",
    "check_tarball",
    "extract_tarball",
    "fetch_sandbox",
    "id_from_name",
    "plan_fetch",
    "plan_push",
    "push_sandbox",
    "sandbox_url",
    "sha256_file",
]
