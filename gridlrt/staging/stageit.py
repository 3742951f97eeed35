"""The v2 LTA stager, StageIT: REST for actions, GraphQL for status.

Owns the HTTP calls to ``https://sdc.astron.nl/stageit/api/staging/`` (or the ``hostname=``
of ``~/.stagingrc``, or ``$GRIDLRT_STAGEIT_URL``), authenticated with the header
``Authorization: Token <api_token>``:

* ``POST requests/`` with ``{"surls": [...], "notify": false, "request_type": "stage"}``
  answers ``{"id": N}``;
* ``PUT requests/<id>/abort/`` (202, empty body);
* ``GET requests/<id>/convert2webdav/`` -> the WebDAV URLs of a staged request (a list);
* ``POST graphql/`` with ``{ request(id: N) { currentStatus surls { surl } response } }``:
  ``response`` is a JSON text with ``online`` (staged SURLs), ``progressing`` and ``errors``
  (SURL -> message);
* ``POST graphql/`` with ``{ request(id: N) { macaroons { content validUntil ltaSite { name }
  } } }``: the per-site macaroons (bearer tokens for the sites' WebDAV doors) of a request,
  as the LTA's ``stager_access.get_macaroons`` asks for them.

HTTP and GraphQL failures become :mod:`gridlrt.errors` one-liners; the token is only ever in
the session header.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import requests
import urllib3.exceptions
from pydantic import SecretStr

from gridlrt.config import strip_credentials
from gridlrt.errors import StagerAuthError, StagingError, StagingRequestNotFound
from gridlrt.staging.stager import Macaroon, Progress, Stager, StagingReport, StagingState

log = logging.getLogger(__name__)

DEFAULT_URL = "https://sdc.astron.nl/stageit/api/staging/"
API_PATH = "/stageit/api/staging/"
URL_ENV = "GRIDLRT_STAGEIT_URL"
_REQUEST_QUERY = "{ request(id: %d) { id currentStatus surls { surl } response } }"
_STATE_QUERY = "{ request(id: %d) { id currentStatus } }"
_MACAROONS_QUERY = "{ request(id: %d) { macaroons { content, validUntil, ltaSite { name } } } }"


def url_for_hostname(hostname: str) -> str:
    """The API base for a ``hostname=`` line: ``sdc-dev.astron.nl`` or ``https://host``."""
    base = hostname.strip().rstrip("/")
    if "://" not in base:
        base = f"https://{base}"
    return base + API_PATH


class _Transient(Exception):
    """Internal: a retryable HTTP answer (5xx)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status} {text}".strip())
        self.status = status


def _not_sent(exc: requests.RequestException) -> bool:
    """True when the request surely never reached the server (safe to resend a POST)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason or ""
    if isinstance(body, dict):
        if "detail" in body:
            return str(body["detail"])
        return "; ".join(f"{k}: {v}" for k, v in body.items())[:300]
    return str(body)[:300]


def _response_json(value: Any) -> dict[str, Any]:
    """The ``response`` field: a JSON text (or already an object, or empty)."""
    if isinstance(value, dict):
        return value
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        raise StagingError("StageIT answered a request response that is not JSON") from None
    return parsed if isinstance(parsed, dict) else {}


class StageITStager(Stager):
    """Client for StageIT, the current LTA staging service, with an API token."""

    protocol = "stageit"

    def __init__(
        self,
        token: str,
        url: str = DEFAULT_URL,
        *,
        credentials_source: str = "~/.stagingrc",
        retries: int = 5,
        backoff: float = 0.25,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(retries=retries, backoff=backoff, timeout=timeout)
        self._base = strip_credentials(url).rstrip("/") + "/"
        if not self._base.startswith(("http://", "https://")):
            raise StagingError(f"StageIT URL {self._base!r} must be http(s)://host/path/")
        self._source = credentials_source
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Token {token}"
        self._session.headers["Accept"] = "application/json"

    @property
    def service(self) -> str:
        return self._base

    def close(self) -> None:
        self._session.close()

    # --- HTTP ----------------------------------------------------------------------------------

    def _http(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: bool = True,
        request_id: int | None = None,
    ) -> Any:
        url = self._base + path
        what = f"{method} {path}"

        def call() -> requests.Response:
            response = self._session.request(method, url, json=body, timeout=self.timeout)
            if response.status_code >= 500 and (idempotent or response.status_code == 503):
                raise _Transient(response.status_code, response.reason or "")
            return response

        def transient(exc: Exception) -> str | None:
            if isinstance(exc, _Transient):
                return str(exc)
            if isinstance(exc, requests.RequestException) and (idempotent or _not_sent(exc)):
                reason = getattr(exc.args[0], "reason", None) if exc.args else None
                if isinstance(reason, urllib3.exceptions.NewConnectionError):
                    return "connection refused"
                return type(exc).__name__
            return None

        try:
            response = self._retry(f"StageIT {what}", call, transient)
        except requests.RequestException as exc:
            raise StagingError(
                f"StageIT {self._base}: {what} failed ({type(exc).__name__}); check with "
                "gridlrt stage status before submitting again"
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise StagerAuthError(
                f"StageIT {self._base} rejected the API token from {self._source} "
                f"(HTTP {status}: {_detail(response)}); check the api_token= line"
            )
        if status == 404:
            if request_id is not None:
                raise StagingRequestNotFound(f"StageIT knows no staging request {request_id}")
            raise StagingError(f"{url} not found (HTTP 404); check the StageIT URL")
        if status >= 400:
            raise StagingError(f"StageIT refused {what}: HTTP {status} {_detail(response)}")
        if status == 202 or not response.content:
            return None  # StageIT answers 202 with an empty body to actions
        try:
            return response.json()
        except ValueError:
            raise StagingError(
                f"StageIT {self._base} answered {what} with something that is not JSON; "
                "is this the StageIT API URL?"
            ) from None

    def _request_node(self, request_id: int, query: str) -> dict[str, Any]:
        answer = self._http("POST", "graphql/", {"query": query % int(request_id)})
        if not isinstance(answer, dict):
            raise StagingError("StageIT GraphQL answered something that is not an object")
        errors = answer.get("errors") or []
        if errors:
            first = (
                errors[0].get("message", "unknown error")
                if isinstance(errors[0], dict)
                else errors[0]
            )
            if "does not exist" in str(first).lower() or "not found" in str(first).lower():
                raise StagingRequestNotFound(f"StageIT knows no staging request {request_id}")
            raise StagingError(f"StageIT GraphQL error for request {request_id}: {first}")
        node = (answer.get("data") or {}).get("request")
        if not isinstance(node, dict):
            raise StagingRequestNotFound(f"StageIT knows no staging request {request_id}")
        return node

    # --- the contract --------------------------------------------------------------------------

    def submit_one(self, surls: Sequence[str]) -> int:
        answer = self._http(
            "POST",
            "requests/",
            {"surls": list(surls), "notify": False, "request_type": "stage"},
            idempotent=False,
        )
        request_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(request_id, int):
            try:
                return int(str(request_id))
            except ValueError:
                raise StagingError("StageIT answered the request without an id") from None
        return request_id

    def state(self, request_id: int) -> StagingState:
        node = self._request_node(request_id, _STATE_QUERY)
        return StagingState.parse(str(node.get("currentStatus")))

    def progress(self, request_id: int, *, requested: int | None = None) -> Progress:
        return self.report(request_id).progress

    def staged(self, request_id: int) -> list[str]:
        return self.report(request_id).staged

    def report(self, request_id: int, requested: Sequence[str] | None = None) -> StagingReport:
        """One GraphQL query gives state, SURLs, and the online/progressing/errors lists."""
        node = self._request_node(request_id, _REQUEST_QUERY)
        state = StagingState.parse(str(node.get("currentStatus")))
        response = _response_json(node.get("response"))
        surls = [
            str(entry.get("surl")) for entry in node.get("surls") or [] if isinstance(entry, dict)
        ]
        online = [str(s) for s in response.get("online") or []]
        errors = response.get("errors") or {}
        failed = [str(s) for s in errors] if isinstance(errors, (dict, list)) else []
        if (
            not failed
            and requested
            and state in (StagingState.PARTIAL_SUCCESS, StagingState.FAILED)
        ):
            failed = self._failed(request_id, state, online, requested)
        total = len(surls) or (len(requested) if requested else None)
        return StagingReport(
            request_id=request_id,
            protocol=self.protocol,
            state=state,
            progress=Progress(total=total, done=len(online), failed=len(failed)),
            staged=online,
            failed=failed,
        )

    def abort(self, request_id: int) -> None:
        self._http("PUT", f"requests/{int(request_id)}/abort/", {}, request_id=request_id)

    def webdav_urls(self, request_id: int) -> list[str]:
        """WebDAV URLs StageIT gives for the staged files of a request."""
        answer = self._http(
            "GET", f"requests/{int(request_id)}/convert2webdav/", request_id=request_id
        )
        if not isinstance(answer, list):
            raise StagingError("StageIT answered convert2webdav with something that is not a list")
        return [str(u) for u in answer]

    def macaroons(self, request_id: int) -> list[Macaroon]:
        """The macaroons StageIT gives for a request, one per LTA site (usually one: a
        request is at one site). Never logged; shown as ``*****``."""
        node = self._request_node(request_id, _MACAROONS_QUERY)
        entries = node.get("macaroons") or []
        if not isinstance(entries, list):
            raise StagingError("StageIT answered macaroons with something that is not a list")
        found: list[Macaroon] = []
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("content"):
                continue
            site = entry.get("ltaSite") or {}
            found.append(
                Macaroon(
                    site=str(site.get("name") or "") if isinstance(site, dict) else "",
                    token=SecretStr(str(entry["content"]).strip()),
                    valid_until=_when(entry.get("validUntil")),
                )
            )
        return found


def _when(value: Any) -> datetime | None:
    """An ISO time from GraphQL, or None (absent or unreadable: the door decides)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
