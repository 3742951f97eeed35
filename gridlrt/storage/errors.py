"""gfal2 errors as gridlrt exceptions: one line naming the operation, the URL(s) and the cause.

Pure: works on an errno and gfal2's message, so it can be read and tested without gfal2.
Which errors are worth a retry (:func:`is_transient`) is decided here too.
"""

from __future__ import annotations

import errno
import re

from gridlrt.config import redact_url
from gridlrt.errors import (
    StorageError,
    StorageExists,
    StorageNotFound,
    StorageNotSupported,
    StoragePermissionDenied,
    StorageTimeout,
    StorageUnavailable,
    UnsupportedProtocol,
    VerificationError,
)

#: errno -> (exception class, what to tell the user).
_BY_CODE: dict[int, tuple[type[StorageError], str]] = {
    errno.ENOENT: (StorageNotFound, "no such file or directory"),
    errno.EACCES: (StoragePermissionDenied, "permission denied"),
    errno.EPERM: (StoragePermissionDenied, "operation not permitted"),
    errno.EROFS: (StoragePermissionDenied, "read-only storage"),
    errno.ETIMEDOUT: (StorageTimeout, "timed out"),
    errno.ECONNREFUSED: (StorageUnavailable, "connection refused"),
    errno.EHOSTDOWN: (StorageUnavailable, "cannot connect to the storage endpoint"),
    errno.EHOSTUNREACH: (StorageUnavailable, "storage host unreachable"),
    errno.ENETUNREACH: (StorageUnavailable, "network unreachable"),
    errno.ECONNRESET: (StorageUnavailable, "connection reset"),
    errno.ECONNABORTED: (StorageUnavailable, "connection aborted"),
    errno.ENXIO: (StorageUnavailable, "connection lost during the transfer"),
    errno.EPIPE: (StorageUnavailable, "connection lost during the transfer"),
    errno.ECOMM: (StorageUnavailable, "communication error"),
    errno.EAGAIN: (StorageUnavailable, "endpoint busy, try again"),
    errno.EEXIST: (StorageExists, "already exists"),
    errno.ENOSYS: (StorageNotSupported, "not supported by this endpoint"),
    errno.EOPNOTSUPP: (StorageNotSupported, "not supported by this endpoint"),
    errno.EPROTONOSUPPORT: (UnsupportedProtocol, "protocol not supported by gfal2"),
    errno.EISDIR: (StorageError, "is a directory, or its parent directory is missing"),
    errno.ENOTDIR: (StorageError, "not a directory"),
    errno.ENOTEMPTY: (StorageError, "directory not empty"),
    errno.ENOSPC: (StorageError, "no space left on the storage"),
    errno.EDQUOT: (StorageError, "quota exceeded"),
    errno.ENODATA: (StorageError, "no such attribute"),
    errno.EINVAL: (StorageError, "invalid request"),
    errno.ECANCELED: (StorageError, "cancelled"),
    errno.EIO: (StorageError, "input/output error"),
}

#: An HTTP 5xx answer: the server's fault, usually passing (a busy or restarting pool node).
_SERVER_ERROR = re.compile(r"\bHTTP 50[0-4]\b")
_TIMEOUT_WORDS = ("timed out", "timeout of", "timeout expired")
_CREDENTIAL_WORDS = ("could not load client credentials", "valid credentials could not be found")
_RESET_WORDS = ("connection reset", "could not connect", "invalid read", "broken pipe")


def describe(code: int, message: str) -> tuple[type[StorageError], str]:
    """The exception class and short cause for a gfal2 error (``GError.code``, ``.message``)."""
    lowered = message.lower()
    if any(word in lowered for word in _CREDENTIAL_WORDS):
        return StoragePermissionDenied, (
            "no usable grid credentials (make a proxy with voms-proxy-init; gfal2 reads "
            "X509_USER_PROXY or /tmp/x509up_u<uid>)"
        )
    if code not in (errno.ENOENT, errno.EACCES, errno.EPERM) and any(
        word in lowered for word in _TIMEOUT_WORDS
    ):
        return StorageTimeout, "timed out"
    if _SERVER_ERROR.search(message):
        return StorageUnavailable, "the server failed (HTTP 5xx)"
    if code in _BY_CODE:
        return _BY_CODE[code]
    if any(word in lowered for word in _RESET_WORDS):
        return StorageUnavailable, "connection lost"
    name = errno.errorcode.get(code, f"error {code}")
    return StorageError, name


def one_line(message: str, limit: int = 300) -> str:
    """gfal2 messages can hold newlines, escaped ``\\n`` and doubled spaces: make one line."""
    text = " ".join(message.replace("\\n", " ").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storage_error(op: str, urls: str | tuple[str, ...], code: int, message: str) -> StorageError:
    """The gridlrt exception for gfal2 error ``code``/``message`` during ``op`` on ``urls``.

    ``str()`` is one line: ``<op> <url>[ -> <url>]: <cause> (gfal2: <message>)``, passwords
    in URLs redacted.
    """
    cls, cause = describe(code, message)
    where = " -> ".join(redact_url(u) for u in ((urls,) if isinstance(urls, str) else urls))
    detail = one_line(_redact_all(message, urls))
    return cls(f"{op} {where}: {cause}" + (f" (gfal2: {detail})" if detail else ""))


def _redact_all(message: str, urls: str | tuple[str, ...]) -> str:
    for url in (urls,) if isinstance(urls, str) else urls:
        redacted = redact_url(url)
        if redacted != url:
            message = message.replace(url, redacted)
    return message


def is_transient(err: BaseException) -> bool:
    """Worth another try: timeouts, lost or refused connections, a corrupted copy."""
    return isinstance(err, StorageTimeout | StorageUnavailable | VerificationError)
