"""What both LTA fakes share: an HTTP server on a free loopback port, served from a thread."""

from __future__ import annotations

import threading
from socketserver import BaseServer
from typing import Self


class LoopbackFake:
    """Start/stop and the URL of a fake whose ``_server`` listens on 127.0.0.1."""

    path = "/"  # the service's base path
    _server: BaseServer

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])  # type: ignore[index]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
