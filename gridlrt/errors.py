"""The one exception hierarchy of gridlrt, and the exit codes of the ``gridlrt`` command.

Every error a user can cause or fix is a :class:`GridlrtError` whose message is one line that
says what is wrong and how to fix it. The CLI prints that line and exits with the error's
:attr:`GridlrtError.exit_code`, without a traceback. Anything else escaping is a bug in gridlrt
(exit code 6, with the traceback).

Exit codes (:class:`ExitCode`; the README's "Exit codes" table says the same), chosen so that a
script can tell what to do next. They stay clear of pilot.sh's own 64-70 (a pilot's bootstrap
failed) and of the shells' 126, 127 and 128+N (killed by signal N):

====  ===========  =========================================================================
code  name         meaning, and what a script should do
====  ===========  =========================================================================
0     OK           done
1     FAILED       the command ran and the answer is no: an operation failed or was refused
                   (a copy, a submission, a staging request), a check failed (doctor, stage
                   wait, storage locality); read the message
2     USAGE        the command line is wrong (unknown option, missing argument, a value of
                   the wrong type); see ``--help``
3     INPUT        a setting, option value or input file is invalid, or names something that
                   does not exist (a token, a submission, a step); fix it, do not retry as is
4     CREDENTIALS  credentials are missing, unsafe (readable by others) or refused by the
                   service; renew or fix them
5     UNAVAILABLE  a service (the pool, the LTA stager, a storage endpoint, the batch system)
                   did not answer after bounded retries; retry later, nothing is lost
6     INTERNAL     a bug in gridlrt: the traceback is printed; please report it
130   INTERRUPTED  Ctrl-C (SIGINT)
====  ===========  =========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of the ``gridlrt`` command (see the module docstring)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    INPUT = 3
    CREDENTIALS = 4
    UNAVAILABLE = 5
    INTERNAL = 6
    INTERRUPTED = 130


class GridlrtError(Exception):
    """Base of all errors a user can act on. ``str(err)`` is the one-line message."""

    exit_code: int = ExitCode.FAILED


class ConfigError(GridlrtError):
    """The settings (file, environment, options) are invalid."""

    exit_code = ExitCode.INPUT


class CredentialsError(GridlrtError):
    """A credentials file is missing, unreadable, malformed or unsafe."""

    exit_code = ExitCode.CREDENTIALS


class PoolError(GridlrtError):
    """The token pool cannot be reached or answered unexpectedly."""


class PoolUnavailable(PoolError):
    """The pool did not answer after bounded retries."""

    exit_code = ExitCode.UNAVAILABLE


class PoolNotInitialised(PoolUnavailable):
    """The pool answers but has no database, file or gridlrt views yet: `gridlrt pool init`
    fixes it; waiting does not (hence not "retry later")."""

    exit_code = ExitCode.INPUT


class TokenNotFound(PoolError):
    """No token with that id."""

    exit_code = ExitCode.INPUT


class LostClaim(PoolError):
    """The token is no longer held by this pilot (recovered, reset, or finished elsewhere)."""


class RecordNotFound(PoolError):
    """No side record (e.g. a job record) of that kind and id in the pool."""

    exit_code = ExitCode.INPUT


class MalformedToken(PoolError):
    """A document in the pool is not a valid token."""


class StorageError(GridlrtError):
    """A storage operation (gfal2) failed."""


class StorageNotFound(StorageError):
    """The URL does not exist (ENOENT), or its parent directory is missing."""

    exit_code = ExitCode.INPUT


class StoragePermissionDenied(StorageError):
    """The endpoint refused the operation (EACCES, EPERM): check the proxy or the rights."""

    exit_code = ExitCode.CREDENTIALS


class StorageTimeout(StorageError):
    """The operation did not finish in time (ETIMEDOUT). Transient: retried."""

    exit_code = ExitCode.UNAVAILABLE


class StorageUnavailable(StorageError):
    """The endpoint could not be reached or dropped the connection. Transient: retried."""

    exit_code = ExitCode.UNAVAILABLE


class StorageExists(StorageError):
    """The destination exists and overwriting was not asked for (EEXIST)."""

    exit_code = ExitCode.INPUT


class StorageNotSupported(StorageError):
    """The endpoint or protocol does not support this operation (ENOSYS, EOPNOTSUPP)."""


class UnsupportedProtocol(StorageError):
    """The URL scheme is not one gridlrt can pass to gfal2."""

    exit_code = ExitCode.INPUT


class VerificationError(StorageError):
    """A copied file differs from its source."""


class SizeMismatch(VerificationError):
    """Source and destination sizes differ after a copy."""


class ChecksumMismatch(VerificationError):
    """Source and destination checksums differ after a copy (or a sandbox hash is wrong)."""


class TransfersFailed(StorageError):
    """Some copies of a many-file transfer failed for good; the others finished.

    ``failures`` holds ``(src, dst, error)`` for each failed copy, ``results`` the transfer
    results of the copies that worked.
    """

    def __init__(
        self,
        message: str,
        *,
        failures: list[tuple[str, str, StorageError]] | None = None,
        results: Sequence[object] = (),
    ) -> None:
        super().__init__(message)
        self.failures = failures or []
        self.results = list(results)


class InputError(GridlrtError):
    """A user-supplied file or value is malformed."""

    exit_code = ExitCode.INPUT


class StagingError(GridlrtError):
    """The LTA stager refused or failed an operation, or answered something unexpected."""


class StagerUnavailable(StagingError):
    """The LTA stager did not answer after bounded retries (network, server down, 5xx)."""

    exit_code = ExitCode.UNAVAILABLE


class StagerAuthError(StagingError):
    """The LTA stager rejected the credentials (HTTP 401/403): fix ~/.stagingrc or the token."""

    exit_code = ExitCode.CREDENTIALS


class StagingRequestNotFound(StagingError):
    """The stager (or the local records) know no staging request with that id."""

    exit_code = ExitCode.INPUT


class StagingTimeout(StagingError):
    """Waiting for staging requests took longer than asked; they keep running on the LTA."""


class SubmitError(GridlrtError):
    """A batch or grid system refused a submission, status query or cancel.

    ``command`` is the client program's argv (never secrets: pilots read the pool credentials
    from a file), ``returncode`` its exit code (None: it did not run to the end) and
    ``stderr`` what it printed there, for a caller that wants more than the one-line message.
    """

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr


class SubmitterUnavailable(SubmitError):
    """The batch/grid client programs (sbatch, dirac-wms-job-submit, ...) are not on PATH."""

    exit_code = ExitCode.INPUT


class SubmitterUnreachable(SubmitError):
    """A batch/grid client program did not answer in time (controller or WMS down)."""

    exit_code = ExitCode.UNAVAILABLE


class JobNotFound(SubmitError):
    """No job record with that id in the pool."""

    exit_code = ExitCode.INPUT


class ReductionError(GridlrtError):
    """A reduction program (DP3 gaincal in cal-solve, WSClean in image) failed on a node, or
    its results cannot be used; the message names the program's log."""


class CalSolveError(ReductionError):
    """DP3 gaincal failed on a calibrator subband, or the solutions cannot be combined."""


class WSCleanError(ReductionError):
    """WSClean could not start, failed or did not finish in time."""
