"""What the two grid backends (DIRAC, gLite) share: the input sandbox and pilot.sh arguments.

A grid job ships three files in its input sandbox: ``pilot.sh`` (the bootstrap), the pilot
sandbox tarball ``<sha256>.tar.gz`` (steps + gridlrt runtime) and, when the pool needs them,
the credentials file ``pool.cred``; with ``gridlrt submit --macaroons`` a fourth, the 0600
``macaroon.cred`` (pilot.sh gives it to gridlrt as ``GRIDLRT_MACAROON_FILE``). pilot.sh is
started as
``pilot.sh <sha256>.tar.gz <sha256> <gridlrt worker run options>``; nothing secret is in the
arguments.
"""

from __future__ import annotations

from gridlrt.errors import InputError
from gridlrt.submit.jdl import jdl_list, jdl_string
from gridlrt.submit.model import PilotRequest
from gridlrt.submit.pilot_args import worker_options
from gridlrt.submit.templates import template_path

PILOT = "pilot.sh"
CREDENTIALS = "pool.cred"
MACAROONS = "macaroon.cred"


def require_sandbox(request: PilotRequest) -> tuple[str, str]:
    """The sandbox file name and id; InputError when the request has none."""
    if request.sandbox is None or request.sandbox_id is None:
        raise InputError("grid backends need a pilot sandbox (built by gridlrt submit)")
    return request.sandbox.name, request.sandbox_id


def input_sandbox(request: PilotRequest) -> list[str]:
    """Absolute paths of the files each job ships: pilot.sh, the sandbox, the credentials
    and the macaroons."""
    require_sandbox(request)
    assert request.sandbox is not None
    files = [str(request.run_dir / PILOT), str(request.sandbox)]
    if request.credentials_file is not None:
        if request.credentials_file.name != CREDENTIALS:
            raise InputError(
                f"the credentials file shipped to grid jobs must be named {CREDENTIALS}"
            )
        files.append(str(request.credentials_file))
    if request.macaroon_file is not None:
        if request.macaroon_file.name != MACAROONS:
            raise InputError(f"the macaroon file shipped to grid jobs must be named {MACAROONS}")
        files.append(str(request.macaroon_file))
    return files


def pilot_arguments(request: PilotRequest) -> str:
    """The JDL ``Arguments`` string for pilot.sh (quoted)."""
    name, sandbox_id = require_sandbox(request)
    return jdl_string(" ".join([name, sandbox_id, *worker_options(request)]))


def sandbox_list(request: PilotRequest) -> str:
    """The JDL ``InputSandbox`` list (quoted)."""
    return jdl_list(input_sandbox(request))


def pilot_script() -> str:
    """The text of pilot.sh, written into the run directory beside the JDL."""
    return template_path(PILOT).read_text()


__all__ = ["CREDENTIALS", "MACAROONS", "PILOT", "pilot_arguments", "pilot_script", "sandbox_list"]
