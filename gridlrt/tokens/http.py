"""HTTP for the CouchDB pool: requests reads the settings, the standard library sends.

What the environment says about a server (proxies and ``no_proxy``, a CA bundle, ``.netrc``)
is read once per pool, by requests (:func:`session`). Sending through a requests ``Session``
costs a pilot about 0.5 ms of CPU a request (settings merged, hooks, cookies, a ``Response``
built), urllib3 alone about 0.25 ms, the standard library's ``http.client`` about 0.15 ms (what
PiCaS's client uses): a claim is three or four requests, and on the grid a pilot's CPU is what
the user pays for. So :class:`Http` keeps one ``http.client`` connection per thread to the
pool's server (a pilot's heartbeat thread has its own), with the session's settings: its CA
bundle, its credentials as a Basic ``Authorization`` header. A connection the server closed
while idle is noticed before it is used, as urllib3 does. Through a proxy, and after a
redirect (which requests follows and this path does not), the session sends instead: the same
answers, slower. Failures are raised as requests' exceptions either way, so callers see one
kind.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH


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

    __slots__ = ("_headers", "content", "status_code")

    def __init__(
        self, status_code: int, content: bytes, headers: Iterable[tuple[str, str]]
    ) -> None:
        self.status_code = status_code
        self.content = content
        self._headers = headers

    @property
    def headers(self) -> CaseInsensitiveDict[str]:
        """By name, whatever its case (made when asked: rarely)."""
        return CaseInsensitiveDict(list(self._headers))

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not JSON."""
        return json.loads(self.content)


class Direct:
    """One keep-alive ``http.client`` connection per thread to one server."""

    def __init__(self, scheme: str, host: str, port: int | None, verify: bool | str) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.verify = verify
        self.ca_certs: str | None = None
        if scheme == "https":
            self.ca_certs = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
        self._tls: ssl.SSLContext | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[http.client.HTTPConnection] = []

    def tls(self) -> ssl.SSLContext:
        """The TLS settings (made at the first connection, so a bad CA bundle is a request's
        failure, reported with the pool, not a crash where the pool is opened)."""
        if self._tls is None:
            try:
                made = ssl.create_default_context(cafile=self.ca_certs)
            except (OSError, ssl.SSLError) as exc:
                raise requests.exceptions.SSLError(f"CA bundle {self.ca_certs}: {exc}") from exc
            if self.verify is False:
                made.check_hostname = False
                made.verify_mode = ssl.CERT_NONE
            self._tls = made
        return self._tls

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        """This thread's connection, a new one when there is none or the server closed it."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.sock is None or _dropped(conn.sock)):
            self.discard(conn)
            conn = None
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=timeout, context=self.tls()
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.timeout = timeout
        return conn

    def discard(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._opened:
                self._opened.remove(conn)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


def _dropped(sock: Any) -> bool:
    """Whether an idle keep-alive socket was closed by the server (it reads as ready: EOF)."""
    try:
        if hasattr(select, "poll"):  # select() cannot take a descriptor past 1023
            ready = select.poll()
            ready.register(sock, select.POLLIN)
            return bool(ready.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Http:
    """Requests to one server with one session's settings."""

    def __init__(self, url: str, auth: tuple[str, str] | None) -> None:
        self.session = session(url, auth)
        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.direct: Direct | None = None
        proxied = self.session.proxies.get(parts.scheme) or self.session.proxies.get("all")
        if not proxied and parts.scheme in ("http", "https") and parts.hostname:
            verify = True if self.session.verify is None else self.session.verify
            self.direct = Direct(parts.scheme, parts.hostname, parts.port, verify)
        self.headers = {"Accept": "application/json"}
        if isinstance(self.session.auth, tuple):
            user, password = self.session.auth
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"

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
        direct = self.direct
        if direct is None or not url.startswith(self.origin):
            return self._by_session(method, url, timeout, params, json, data, headers)
        body = data
        sent = dict(self.headers)
        if json is not None:
            body = _dumps(json)
            sent["Content-Type"] = "application/json"
        if headers:
            sent.update(headers)
        target = url[len(self.origin) :] or "/"
        if params:
            target = f"{target}?{urlencode(params)}"
        conn = direct.connection(timeout)
        try:
            conn.request(method, target, body=body, headers=sent)
            got = conn.getresponse()
            content = got.read()
        except TimeoutError as exc:
            direct.discard(conn)
            raise requests.Timeout(str(exc)) from exc
        except ssl.SSLError as exc:
            direct.discard(conn)
            raise requests.exceptions.SSLError(str(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            direct.discard(conn)
            raise requests.ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        if got.will_close:
            direct.discard(conn)
        if 300 <= got.status < 400 and got.getheader("Location"):
            self.direct = None  # somebody redirects this server: leave it to requests
            direct.close()
            return self._by_session(method, url, timeout, params, json, data, headers)
        return Answer(got.status, content, got.getheaders())

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
        return Answer(got.status_code, got.content, got.headers.items())

    def close(self) -> None:
        self.session.close()
        if self.direct is not None:
            self.direct.close()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
