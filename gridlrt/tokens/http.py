"""HTTP for the CouchDB pool: requests reads the settings, urllib3 sends the requests.

What the environment says about a server (proxies and ``no_proxy``, a CA bundle, ``.netrc``)
is read once per pool, by requests (:func:`session`). Sending through a requests ``Session``
costs a pilot about 0.5 ms of CPU a request (settings merged, hooks, cookies, a ``Response``
built), two to three times what sending the bytes takes; a claim is three or four requests,
and on the grid a pilot's CPU is what the user pays for. So :class:`Http` sends through
urllib3 (the library requests itself sends with) with the session's settings: its CA bundle,
its credentials as a Basic ``Authorization`` header. Through a proxy, and after a redirect
(which requests follows and this path does not), the session sends instead: the same answers,
slower. Failures are raised as requests' exceptions either way, so callers see one kind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH

POOL_CONNECTIONS = 10  # kept open to one server: a pilot's claims, heartbeats and uploads


def session(url: str, auth: tuple[str, str] | None) -> requests.Session:
    """A session that reads the environment (proxies and ``no_proxy``, a CA bundle, .netrc)
    once, here: requests would otherwise read it again on every request, which was a tenth of
    a pilot's CPU per claim (``getproxies_environment`` walks all of ``os.environ``)."""
    made = requests.Session()
    made.headers["Accept"] = "application/json"
    made.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        made.verify = bundle
    made.auth = auth or requests.utils.get_netrc_auth(url)
    made.trust_env = False
    return made


class Answer:
    """A server's answer: what the pool reads of a ``requests.Response``."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, content: bytes, headers: Mapping[str, str]) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not JSON."""
        return json.loads(self.content)


class Http:
    """Requests to one server with one session's settings."""

    def __init__(self, url: str, auth: tuple[str, str] | None) -> None:
        self.session = session(url, auth)
        scheme = urlsplit(url).scheme
        self.direct: urllib3.PoolManager | None = None
        if not (self.session.proxies.get(scheme) or self.session.proxies.get("all")):
            tls: dict[str, Any] = {}
            if scheme == "https":
                verify = self.session.verify
                tls = {
                    "cert_reqs": "CERT_REQUIRED" if verify is not False else "CERT_NONE",
                    "ca_certs": verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH,
                }
            self.direct = urllib3.PoolManager(
                num_pools=1, maxsize=POOL_CONNECTIONS, retries=False, **tls
            )
            self.server = self.direct.connection_from_url(url)  # every request goes here
            parts = urlsplit(url)
            self.origin = f"{parts.scheme}://{parts.netloc}"
        self.headers = {"Accept": "application/json"}
        if isinstance(self.session.auth, tuple):
            user, password = self.session.auth
            self.headers.update(urllib3.make_headers(basic_auth=f"{user}:{password}"))

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        if self.direct is None:
            return self._by_session(method, url, timeout, params, json, data, headers)
        body = data
        sent = dict(self.headers)
        if json is not None:
            body = _dumps(json)
            sent["Content-Type"] = "application/json"
        if headers:
            sent.update(headers)
        if not url.startswith(self.origin):  # not this pool's server: let requests go there
            return self._by_session(method, url, timeout, params, json, data, headers)
        target = url[len(self.origin) :] or "/"
        if params:
            target = f"{target}?{urlencode(params)}"
        try:
            got = self.server.urlopen(
                method,
                target,
                body=body,
                headers=sent,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.NewConnectionError as exc:  # refused, unknown host (urllib3 2
            raise requests.ConnectionError(str(exc)) from exc  # calls it a kind of timeout)
        except urllib3.exceptions.TimeoutError as exc:
            raise requests.Timeout(str(exc)) from exc
        except urllib3.exceptions.SSLError as exc:
            raise requests.exceptions.SSLError(str(exc)) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise requests.ConnectionError(str(exc)) from exc
        if 300 <= got.status < 400 and got.headers.get("Location"):
            self.direct = None  # somebody redirects this server: leave it to requests
            return self._by_session(method, url, timeout, params, json, data, headers)
        return Answer(got.status, got.data, got.headers)

    def _by_session(
        self,
        method: str,
        url: str,
        timeout: float,
        params: Mapping[str, Any] | None,
        json: Any,
        data: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> Answer:
        got = self.session.request(
            method, url, params=params, json=json, data=data, headers=headers, timeout=timeout
        )
        return Answer(got.status_code, got.content, got.headers)

    def close(self) -> None:
        self.session.close()
        if self.direct is not None:
            self.direct.clear()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
