"""The one exception hierarchy of gridlrt.

Every error a user can cause or fix is a :class:`GridlrtError` whose message is one line that
says what is wrong and how to fix it. The CLI prints that line and exits non-zero, without a
traceback. Anything else escaping is a bug in gridlrt.
"""

from __future__ import annotations

from collections.abc import Sequence


class GridlrtError(Exception):
    """Base of all errors a user can act on. ``str(err)`` is the one-line message."""

    exit_code: int = 1


class ConfigError(GridlrtError):
    """The settings (file, environment, options) are invalid."""


class CredentialsError(GridlrtError):
    """A credentials file is missing, unreadable, malformed or unsafe."""


class PoolError(GridlrtError):
    """The token pool cannot be reached or answered unexpectedly."""


class PoolUnavailable(PoolError):
    """The pool did not answer after bounded retries."""


class TokenNotFound(PoolError):
    """No token with that id."""


class LostClaim(PoolError):
    """The token is no longer held by this pilot (recovered, reset, or finished elsewhere)."""


class RecordNotFound(PoolError):
    """No side record (e.g. a job record) of that kind and id in the pool."""


class MalformedToken(PoolError):
    """A document in the pool is not a valid token."""


class StorageError(GridlrtError):
    """A storage operation (gfal2) failed."""


class StorageNotFound(StorageError):
    """The URL does not exist (ENOENT), or its parent directory is missing."""


class StoragePermissionDenied(StorageError):
    """The endpoint refused the operation (EACCES, EPERM): check the proxy or the rights."""


class StorageTimeout(StorageError):
    """The operation did not finish in time (ETIMEDOUT). Transient: retried."""


class StorageUnavailable(StorageError):
    """The endpoint could not be reached or dropped the connection. Transient: retried."""


class StorageExists(StorageError):
    """The destination exists and overwriting was not asked for (EEXIST)."""


class StorageNotSupported(StorageError):
    """The endpoint or protocol does not support this operation (ENOSYS, EOPNOTSUPP)."""


class UnsupportedProtocol(StorageError):
    """The URL scheme is not one gridlrt can pass to gfal2."""


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


class StagingError(GridlrtError):
    """The LTA stager refused or failed an operation, or answered something unexpected."""


class StagerUnavailable(StagingError):
    """The LTA stager did not answer after bounded retries (network, server down, 5xx)."""


class StagerAuthError(StagingError):
    """The LTA stager rejected the credentials (HTTP 401/403): fix ~/.stagingrc or the token."""


class StagingRequestNotFound(StagingError):
    """The stager (or the local records) know no staging request with that id."""


class StagingTimeout(StagingError):
    """Waiting for staging requests took longer than asked; they keep running on the LTA."""


class SubmitError(GridlrtError):
    """A batch or grid system refused a submission, status query or cancel."""


class SubmitterUnavailable(SubmitError):
    """The batch/grid client programs (sbatch, dirac-wms-job-submit, ...) are not on PATH."""


class JobNotFound(SubmitError):
    """No job record with that id in the pool."""
