"""A fake of StageIT, the v2 LTA stager: Django-REST-style endpoints and a small GraphQL.

Under ``/stageit/api/staging/`` (the real base path), with ``Authorization: Token <t>``
(401 ``{"detail": ...}`` otherwise):

* ``POST requests/`` ``{"surls": [...], "notify": bool, "request_type": "stage"}`` -> 201
  ``{"id": N, ...}`` (400 with field errors for a bad body);
* ``PUT requests/<id>/abort/`` -> 202 with an empty body (404 for an unknown id);
* ``GET requests/<id>/convert2webdav/`` -> a list of the WebDAV URLs of the staged files
  (``webdav_door`` + the SURL's path);
* ``POST graphql/`` ``{"query": "{ request(id: N) { id currentStatus surls { surl }
  response } }"}`` -> ``{"data": {"request": {...}}}``; only the fields named in the query
  are returned; ``response`` is a JSON *text* with ``online``, ``progressing`` and ``errors``,
  as graphene's JSONString gives it. An unknown id gives ``request: null`` and an error.
* ``{ request(id: N) { macaroons { content, validUntil, ltaSite { name } } } }`` -> the
  request's macaroons, one per site (``SURF``, ``Juelich``, ``Poznan``), once a file of it is
  online (an empty list before): ``macaroon`` (one secret for every request, so that a test
  WebDAV server can require it), valid for ``macaroon_hours`` from now.

``fail_next`` makes the next N requests answer 503. Runs in a thread on a free loopback port.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.archive import FakeArchive
from tests.fakes.server import LoopbackFake

BASE = "/stageit/api/staging/"
WEBDAV_DOOR = "https://webdav.grid.surfsara.nl:2881"
SITE_NAMES = {"sara": "SURF", "juelich": "Juelich", "psnc": "Poznan"}  # host word -> LTA name
_ID_IN_QUERY = re.compile(r"request\s*\(\s*id\s*:\s*\"?(\d+)\"?\s*\)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeStageIT


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        body = self._body()
        with fake.lock:
            fake.http_requests += 1
            if fake.fail_next > 0:
                fake.fail_next -= 1
                self._send(503, {"detail": "Service temporarily unavailable."})
                return
        header = self.headers.get("Authorization", "")
        if not header.startswith("Token "):
            self._send(401, {"detail": "Authentication credentials were not provided."})
            return
        user = fake.tokens.get(header[6:].strip())
        if user is None:
            self._send(401, {"detail": "Invalid token."})
            return
        if not self.path.startswith(BASE):
            self._send(404, {"detail": "Not found."})
            return
        route = self.path[len(BASE) :]
        with fake.lock:
            fake.calls.append((user, method, route))
        status, answer = fake.route(user, method, route, body)
        self._send(status, answer)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


class FakeStageIT(LoopbackFake):
    """The fake service; ``with FakeStageIT(...) as fake: fake.url``."""

    path = BASE

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        archive: FakeArchive | None = None,
        *,
        webdav_door: str = WEBDAV_DOOR,
        macaroon: str = "MDAxY2xvY2F0aW9uIGZha2UtbWFjYXJvb24K",
        macaroon_hours: float = 168.0,
    ) -> None:
        super().__init__()
        self.webdav_door = webdav_door.rstrip("/")
        self.macaroon = macaroon
        self.macaroon_hours = macaroon_hours
        self.tokens = tokens if tokens is not None else {"0123456789abcdef": "ann"}
        self.archive = archive or FakeArchive()
        self.fail_next = 0
        self.http_requests = 0
        self.calls: list[tuple[str, str, str]] = []  # (user, method, route)
        self.posted: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self

    def submitted(self) -> int:
        return sum(1 for _, method, route in self.calls if (method, route) == ("POST", "requests/"))

    # --- routes ----------------------------------------------------------------------------

    def route(self, user: str, method: str, route: str, body: Any) -> tuple[int, Any]:
        if (method, route) == ("POST", "requests/"):
            return self._create(user, body)
        if (method, route) == ("POST", "graphql/"):
            return self._graphql(user, body)
        match = re.fullmatch(r"requests/(\d+)/(abort|convert2webdav)/", route)
        if not match:
            return 404, {"detail": "Not found."}
        request_id, action = int(match.group(1)), match.group(2)
        if not self.archive.exists(request_id) or self.archive.view(request_id).user != user:
            return 404, {"detail": "Not found."}
        if (method, action) == ("PUT", "abort"):
            self.archive.abort(request_id)
            return 202, None
        if (method, action) == ("GET", "convert2webdav"):
            online = self.archive.view(request_id).online
            return 200, [self.webdav_door + s.split(":8443", 1)[-1] for s in online]
        return 405, {"detail": f'Method "{method}" not allowed.'}

    def _create(self, user: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, {"non_field_errors": ["Invalid data. Expected a dictionary."]}
        surls = body.get("surls")
        if not isinstance(surls, list) or not surls:
            return 400, {"surls": ["This field is required."]}
        bad = [s for s in surls if not isinstance(s, str) or not s.startswith("srm://")]
        if bad:
            return 400, {"surls": [f"Not a valid SURL: {bad[0]!r}"]}
        if body.get("request_type") != "stage":
            return 400, {"request_type": ['"stage" is the only valid choice.']}
        with self.lock:
            self.posted.append(body)
        request_id = self.archive.add(user, surls, bool(body.get("notify")))
        return 201, {"id": request_id, "request_type": "stage", "surls": surls}

    def _graphql(self, user: str, body: Any) -> tuple[int, Any]:
        query = body.get("query") if isinstance(body, dict) else None
        if not isinstance(query, str):
            return 400, {"errors": [{"message": "Must provide query string."}]}
        match = _ID_IN_QUERY.search(query)
        if not match:
            return 200, {"errors": [{"message": "Only request(id: N) is supported here"}]}
        request_id = int(match.group(1))
        if not self.archive.exists(request_id) or self.archive.view(request_id).user != user:
            return 200, {
                "data": {"request": None},
                "errors": [{"message": "Request matching query does not exist."}],
            }
        view = self.archive.view(request_id)
        node: dict[str, Any] = {}
        if re.search(r"\bid\b", query.split(")", 1)[1]):
            node["id"] = str(view.id)
        if "currentStatus" in query:
            node["currentStatus"] = view.state
        if re.search(r"\bsurls\b", query):
            node["surls"] = [{"surl": s} for s in view.surls]
        if re.search(r"\bmacaroons\b", query):
            node["macaroons"] = self._macaroons(view.surls, view.online)
        if re.search(r"\bresponse\b", query):
            node["response"] = json.dumps(
                {"online": view.online, "progressing": view.progressing, "errors": view.errors}
            )
        return 200, {"data": {"request": node}}

    def _macaroons(self, surls: list[str], online: list[str]) -> list[dict[str, Any]]:
        """One macaroon per site of the request, once something of it is online."""
        if not online:
            return []
        sites = []
        for surl in surls:
            host = surl.split("/")[2].lower()
            name = next((n for word, n in SITE_NAMES.items() if word in host), host)
            if name not in sites:
                sites.append(name)
        until = datetime.now(UTC) + timedelta(hours=self.macaroon_hours)
        return [
            {
                "content": self.macaroon,
                "validUntil": until.isoformat(),
                "ltaSite": {"name": name},
            }
            for name in sites
        ]
