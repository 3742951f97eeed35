"""The CouchDB pool's HTTP (gridlrt.tokens.http) against a small local keep-alive server:
requests go through http.client with the session's credentials, one connection kept; one the
server closed while idle is replaced before it is used; a server that redirects is left to
requests, which follows; a refused connection is requests' ConnectionError, as before."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from gridlrt.tokens.http import Http


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as CouchDB and pouchdb-server
    seen: list[tuple[str, str, str]] = []  # method, path, authorization
    sockets: list[socket.socket] = []  # the server's ends of the connections

    def _answer(self) -> None:
        if self.connection not in self.sockets:
            self.sockets.append(self.connection)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", self.path.replace("/moved", "/db", 1))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = json.dumps({"path": self.path, "body": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen, Handler.sockets = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_requests_go_direct_with_the_credentials_and_parameters(server: str) -> None:
    http = Http(f"{server}/db", ("lofar", "s3cret"))
    assert http.direct is not None
    got = http.request("PUT", f"{server}/db/doc%2F1", timeout=5, params={"rev": "1-a"},
                       json={"type": "token"})  # fmt: skip
    assert got.ok and got.json() == {"path": "/db/doc%2F1?rev=1-a", "body": '{"type":"token"}'}
    method, path, authorization = Handler.seen[-1]
    assert (method, path) == ("PUT", "/db/doc%2F1?rev=1-a")
    assert authorization == "Basic " + base64.b64encode(b"lofar:s3cret").decode()
    http.close()


def test_one_connection_is_kept_and_one_closed_by_the_server_is_replaced(server: str) -> None:
    http = Http(f"{server}/db", None)
    for _ in range(3):
        assert http.request("GET", f"{server}/db/doc", timeout=5).ok
    assert len(Handler.sockets) == 1  # kept alive
    Handler.sockets[0].shutdown(socket.SHUT_RDWR)  # the server closes it while it is idle
    assert http.request("GET", f"{server}/db/doc", timeout=5).json()["path"] == "/db/doc"
    assert len(Handler.sockets) == 2
    http.close()


def test_a_redirecting_server_is_left_to_requests(server: str) -> None:
    http = Http(f"{server}/moved", None)
    got = http.request("GET", f"{server}/moved/doc", timeout=5)
    assert got.status_code == 200 and got.json()["path"] == "/db/doc"
    assert http.direct is None  # from now on requests sends (and follows)
    assert [p for _m, p, _a in Handler.seen] == ["/moved/doc", "/moved/doc", "/db/doc"]
    http.close()


def test_a_refused_connection_is_a_requests_connection_error() -> None:
    http = Http("http://127.0.0.1:9/db", None)  # port 9 (discard): nobody listens
    with pytest.raises(requests.ConnectionError):
        http.request("GET", "http://127.0.0.1:9/db", timeout=5)
    http.close()
