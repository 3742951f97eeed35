"""The v1 LTA stager: XML-RPC at ``https://webportal.astron.nl/service-public/xmlrpc``.

Owns the ``LtaStager.*`` calls (``add_getid``, ``getstatus``, ``getprogress``,
``getstagedurls``, ``abort``, ``reschedule``) and the translation of XML-RPC and HTTP
failures into :mod:`gridlrt.errors`. The service wants HTTP basic auth *in the URL*
(``https://user:password@host/...``); that URL exists only inside the XML-RPC proxy: every
message, log line and record shows :attr:`LtaV1Stager.service`, which has no credentials,
and exceptions that could carry the URL are replaced, not chained.

Quirk handled: ``getprogress()`` lists only requests still running; after success a
request's entry disappears while ``getstatus`` says ``success``, so its progress is then
taken as all requested files done.
"""

from __future__ import annotations

import http.client
import logging
import xmlrpc.client
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit
from xml.parsers.expat import ExpatError

from gridlrt.config import strip_credentials
from gridlrt.errors import (
    StagerAuthError,
    StagingError,
    StagingRequestNotFound,
)
from gridlrt.staging.stager import Progress, Stager, StagingState

log = logging.getLogger(__name__)

DEFAULT_URL = "https://webportal.astron.nl/service-public/xmlrpc"
URL_ENV = "GRIDLRT_STAGER_URL"
_NOT_FOUND_HINTS = ("no such", "not found", "does not exist", "unknown request", "doesnotexist")


class _Transport(xmlrpc.client.Transport):
    """Plain-HTTP transport with a timeout (the stdlib one has none)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _SafeTransport(xmlrpc.client.SafeTransport):
    """HTTPS transport with a timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


class LtaV1Stager(Stager):
    """Client for the v1 (XML-RPC) LTA stager, with a user name and password."""

    protocol = "v1"

    def __init__(
        self,
        user: str,
        password: str,
        url: str = DEFAULT_URL,
        *,
        credentials_source: str = "~/.stagingrc",
        retries: int = 5,
        backoff: float = 0.25,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(retries=retries, backoff=backoff, timeout=timeout)
        self._service = strip_credentials(url)
        parts = urlsplit(self._service)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StagingError(f"LTA stager URL {self._service!r} must be http(s)://host/path")
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
        transport = _SafeTransport(timeout) if parts.scheme == "https" else _Transport(timeout)
        self._proxy = xmlrpc.client.ServerProxy(
            urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")),
            transport=transport,
            allow_none=True,
        )
        self._source = credentials_source

    @property
    def service(self) -> str:
        return self._service

    def close(self) -> None:
        self._proxy("close")()

    # --- calls ---------------------------------------------------------------------------------

    def _call(self, method: str, *args: Any, idempotent: bool = True) -> Any:
        what = f"LtaStager.{method}"

        def call() -> Any:
            return getattr(self._proxy.LtaStager, method)(*args)

        def transient(exc: Exception) -> str | None:
            if isinstance(exc, ConnectionRefusedError):
                return "connection refused"
            if isinstance(exc, xmlrpc.client.ProtocolError) and exc.errcode >= 500:
                if idempotent or exc.errcode == 503:
                    return f"HTTP {exc.errcode} {exc.errmsg}"
                return None
            if idempotent and isinstance(exc, (OSError, http.client.HTTPException)):
                return type(exc).__name__ if not str(exc) else str(exc)
            return None

        try:
            return self._retry(what, call, transient)
        except xmlrpc.client.ProtocolError as exc:
            raise self._protocol_error(exc, method, args) from None
        except xmlrpc.client.Fault as exc:
            raise self._fault(exc, method, args) from None
        except (xmlrpc.client.ResponseError, ExpatError):
            raise StagingError(
                f"{self._service} did not answer {what} with XML-RPC; is this the LTA stager URL?"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise StagingError(
                f"LTA stager {self._service}: {what} failed ({type(exc).__name__}: {exc}); "
                "check with gridlrt stage status before submitting again"
            ) from None

    def _protocol_error(
        self, exc: xmlrpc.client.ProtocolError, method: str, args: tuple[Any, ...]
    ) -> StagingError:
        # exc.url holds user:password@host: never use it.
        if exc.errcode in (401, 403):
            return StagerAuthError(
                f"LTA stager {self._service} rejected the user and password from {self._source} "
                f"(HTTP {exc.errcode}); check the user=/password= lines"
            )
        if exc.errcode == 404:
            return StagingError(
                f"{self._service} has no XML-RPC service (HTTP 404); check the LTA stager URL"
            )
        return StagingError(
            f"LTA stager {self._service}: LtaStager.{method} failed (HTTP {exc.errcode} "
            f"{exc.errmsg})"
        )

    def _fault(self, exc: xmlrpc.client.Fault, method: str, args: tuple[Any, ...]) -> StagingError:
        text = str(exc.faultString).strip().splitlines()
        message = text[-1] if text else f"fault {exc.faultCode}"
        if (
            args
            and isinstance(args[0], int)
            and any(h in message.lower() for h in _NOT_FOUND_HINTS)
        ):
            return StagingRequestNotFound(
                f"the LTA stager knows no staging request {args[0]} ({message})"
            )
        return StagingError(f"LTA stager refused LtaStager.{method}: {message}")

    # --- the contract --------------------------------------------------------------------------

    def submit_one(self, surls: Sequence[str]) -> int:
        request_id = _int(self._call("add_getid", list(surls), idempotent=False))
        if request_id is None:
            raise StagingError("the LTA stager answered add_getid without a request id")
        return request_id

    def state(self, request_id: int) -> StagingState:
        return StagingState.parse(self._call("getstatus", int(request_id)))

    def progress(self, request_id: int, *, requested: int | None = None) -> Progress:
        table = self._call("getprogress")
        entry = table.get(str(request_id)) if isinstance(table, dict) else None
        if isinstance(entry, dict):
            return Progress(total=_int(entry.get("File count")), done=_int(entry.get("Files done")))
        # The quirk: finished requests vanish from getprogress.
        state = self.state(request_id)
        if state is StagingState.SUCCESS:
            total = requested if requested is not None else len(self.staged(request_id))
            return Progress(total=total, done=total)
        return Progress(total=requested)

    def staged(self, request_id: int) -> list[str]:
        urls = self._call("getstagedurls", int(request_id))
        return [str(u) for u in urls or []]

    def abort(self, request_id: int) -> None:
        self._call("abort", int(request_id))

    def reschedule(self, request_id: int) -> None:
        """Ask the LTA to try a failed or on-hold request again."""
        self._call("reschedule", int(request_id), idempotent=False)
