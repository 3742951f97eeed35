"""Sandboxes: reproducible, content-addressed tarballs of a step's scripts and parsets
(plus the pilot bootstrap); upload, fetch and verify.

* :mod:`gridlrt.sandbox.build` - a directory (+ extra files) to deterministic ``tar.gz``
  bytes whose sha256 is the sandbox id;
* :mod:`gridlrt.sandbox.extract` - refusing unsafe tarballs and unpacking safe ones;
* :mod:`gridlrt.sandbox.remote` - push to ``<url>/<id>.tar.gz`` once, fetch and verify
  (through :class:`gridlrt.storage.Storage`);
* :mod:`gridlrt.sandbox.bundle` - the runtime bundle (gridlrt and its pure-Python
  dependencies under ``_gridlrt/``) that lets ``jdl_templates/pilot.sh`` run a pilot on a
  worker node without gridlrt installed.

Knows nothing of the pool's internals.
"""

from __future__ import annotations

from gridlrt.sandbox.build import Sandbox, build_sandbox, output_path, sha256_file
from gridlrt.sandbox.bundle import (
    SITE_PROVIDED,
    BundleInfo,
    build_pilot_sandbox,
    read_bundle_info,
    runtime_bundle,
    runtime_files,
)
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
    "SITE_PROVIDED",
    "BundleInfo",
    "FetchPlan",
    "FetchResult",
    "PushPlan",
    "PushResult",
    "Sandbox",
    "UnsafeSandbox",
    "build_pilot_sandbox",
    "build_sandbox",
    "check_tarball",
    "extract_tarball",
    "fetch_sandbox",
    "id_from_name",
    "output_path",
    "plan_fetch",
    "plan_push",
    "push_sandbox",
    "read_bundle_info",
    "runtime_bundle",
    "runtime_files",
    "sandbox_url",
    "sha256_file",
]
