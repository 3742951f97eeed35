"""A fake of the v1 LTA stager: XML-RPC ``LtaStager.*`` over HTTP with basic auth.

Like ``https://webportal.astron.nl/service-public/xmlrpc`` it answers POSTs on
``/service-public/xmlrpc`` only, wants HTTP basic auth (401 otherwise), and offers
``add_getid``, ``getstatus``, ``getstagedurls``, ``getprogress``, ``gettoken``, ``abort`` and
``reschedule`` under the ``LtaStager.`` namespace. Unknown ids raise a fault, as a Python
exception inside the real service would. ``getprogress`` shows the caller's requests *except*
successful ones (the real service's quirk). ``fail_next`` makes the next N HTTP requests
answer 503, to test retries. Runs in a thread of the test process on a free loopback port.
"""

from __future__ import annotations

import base64
import binascii
import threading
from socketserver import ThreadingMixIn
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from tests.fakes.archive import FakeArchive
from tests.fakes.server import LoopbackFake

PATH = "/service-public/xmlrpc"


class _Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    fake: FakeLtaStagerV1


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = (PATH,)
    server: _Server

    def do_POST(self) -> None:
        fake = self.server.fake
        with fake.lock:
            fake.http_requests += 1
            if fake.fail_next > 0:
                fake.fail_next -= 1
                self.send_response(503, "Service Unavailable")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        user = self._user()
        if user is None:
            self.send_response(401, "Unauthorized")
            self.send_header("WWW-Authenticate", 'Basic realm="LTA webportal"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        fake.local.user = user
        super().do_POST()

    def _user(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if self.server.fake.users.get(user) == password else None

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeLtaStagerV1(LoopbackFake):
    """The fake service; ``with FakeLtaStagerV1(...) as fake: fake.url``."""

    path = PATH

    def __init__(
        self, users: dict[str, str] | None = None, archive: FakeArchive | None = None
    ) -> None:
        super().__init__()
        self.users = users if users is not None else {"ann": "p@ss:w/rd"}
        self.archive = archive or FakeArchive()
        self.fail_next = 0
        self.http_requests = 0
        self.calls: list[tuple[str, str]] = []  # (user, method)
        self.lock = threading.Lock()
        self.local = threading.local()
        self._server = _Server(
            ("127.0.0.1", 0), requestHandler=_Handler, allow_none=True, logRequests=False
        )
        self._server.fake = self
        for name in (
            "add_getid", "getstatus", "getstagedurls", "getprogress", "gettoken", "abort",
            "reschedule",
        ):  # fmt: skip
            self._server.register_function(self._logged(name), f"LtaStager.{name}")

    def methods_called(self, name: str) -> int:
        return sum(1 for _, method in self.calls if method == name)

    # --- the LtaStager namespace -----------------------------------------------------------

    def _logged(self, name: str) -> Any:
        method = getattr(self, f"_{name}")

        def call(*args: Any) -> Any:
            with self.lock:
                self.calls.append((self.local.user, name))
            return method(*args)

        return call

    def _own(self, request_id: int) -> None:
        if not self.archive.exists(request_id):
            raise KeyError(f"No such request: {request_id}")
        if self.archive.view(request_id).user != self.local.user:
            raise PermissionError(f"Request {request_id} does not belong to you")

    def _add_getid(self, surls: list[str], notify: bool = True) -> int:
        if not isinstance(surls, list) or not surls:
            raise ValueError("Expected a nonempty list of SURLs")
        for surl in surls:
            if not isinstance(surl, str) or not surl.startswith("srm://"):
                raise ValueError(f"Not a valid SURL: {surl!r}")
        return self.archive.add(self.local.user, surls, notify)

    def _getstatus(self, request_id: int) -> str:
        self._own(request_id)
        return self.archive.view(request_id).state

    def _getstagedurls(self, request_id: int) -> list[str]:
        self._own(request_id)
        return self.archive.view(request_id).online

    def _gettoken(self, request_id: int) -> str:
        self._own(request_id)
        return f"srm-token-{request_id}"

    def _abort(self, request_id: int) -> str:
        self._own(request_id)
        self.archive.abort(request_id)
        return "aborted"

    def _reschedule(self, request_id: int) -> str:
        self._own(request_id)
        self.archive.reschedule(request_id)
        return "scheduled"

    def _getprogress(self) -> dict[str, dict[str, Any]]:
        table: dict[str, dict[str, Any]] = {}
        for request_id in self.archive.of_user(self.local.user):
            view = self.archive.view(request_id)
            if view.state == "success":
                continue  # the real service's quirk: finished requests vanish
            done = len(view.online)
            table[str(request_id)] = {
                "Status": view.state,
                "File count": len(view.surls),
                "Files done": done,
                "Percent done": round(100.0 * done / len(view.surls), 1),
                "Location": "sara",
                "User id": 4711,
                "Flagged abort": view.state == "aborted",
            }
        return table
