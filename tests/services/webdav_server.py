"""A small, real WebDAV server for the tests: wsgidav on cheroot, anonymous read/write.

Run as its own process so that tests can stop and restart it (even in the middle of a
transfer)::

    python -m tests.services.webdav_server --root DIR --port P [--cert C --key K]
        [--bearer-file F]

With ``--cert``/``--key`` it speaks HTTPS (cheroot's builtin ``ssl`` adapter). With
``--bearer-file`` it behaves like a dCache door that takes macaroons: every request must
carry ``Authorization: Bearer <the file's token>`` or ``?authz=<token>``, else it answers
401 (the token is read from a file, so it is never in this process's argv; refusals are
logged without it). SIGTERM and SIGINT stop it gracefully: open connections get
``--shutdown-timeout`` seconds to finish.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from wsgidav.wsgidav_app import WsgiDAVApp  # type: ignore[import-untyped]


class _Stop(BaseException):
    """Raised from the signal handler to leave cheroot's serve loop (which swallows Exception)."""


def make_app(root: Path) -> WsgiDAVApp:
    config = {
        "host": "127.0.0.1",
        "provider_mapping": {"/": str(root)},
        # "*": anonymous access with full read/write rights.
        "simple_dc": {"user_mapping": {"*": True}},
        "http_authenticator": {"domain_controller": None},
        "lock_storage": True,
        "property_manager": True,
        "dir_browser": {"enable": False},
        "verbose": 1,
        "logging": {"enable": False},
    }
    return WsgiDAVApp(config)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def require_bearer(app: WsgiApp, token: str) -> WsgiApp:
    """``app`` behind a bearer check: ``Authorization: Bearer <token>`` or ``?authz=<token>``,
    else 401 (and a log line naming the request and why, never a token)."""

    def allowed(environ: dict[str, Any]) -> str | None:
        header = str(environ.get("HTTP_AUTHORIZATION") or "")
        given = parse_qs(str(environ.get("QUERY_STRING") or "")).get("authz", [])
        if header.startswith("Bearer "):
            given.append(header[7:].strip())
        if any(hmac.compare_digest(g.encode(), token.encode()) for g in given):
            return None
        return "wrong macaroon" if given else "no macaroon"

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        why = allowed(environ)
        if why is None:
            return app(environ, start_response)
        print(
            f"webdav_server: 401 {environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')} "
            f"({why})",
            flush=True,
        )
        body = b"401 Unauthorized: a macaroon is needed\n"
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", 'Bearer realm="gridlrt-test-webdav"'),
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    return guarded


def build_server(args: argparse.Namespace) -> wsgi.Server:
    app: WsgiApp = make_app(args.root)
    if args.bearer_file:
        app = require_bearer(app, args.bearer_file.read_text(encoding="utf-8").strip())
    server = wsgi.Server(
        bind_addr=("127.0.0.1", args.port),
        wsgi_app=app,
        numthreads=args.threads,
        server_name="gridlrt-test-webdav",
        shutdown_timeout=args.shutdown_timeout,
    )
    if args.cert:
        server.ssl_adapter = BuiltinSSLAdapter(str(args.cert), str(args.key))
    return server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="directory to serve")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, help="PEM certificate: serve HTTPS")
    parser.add_argument("--key", type=Path, help="PEM private key for --cert")
    parser.add_argument(
        "--bearer-file", type=Path, help="file with the bearer token (macaroon) to require"
    )
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--shutdown-timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # wsgidav and cheroot stay quiet: errors only.
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("wsgidav").setLevel(logging.ERROR)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # A parent that has created a gfal2 context (its gridftp/srm plugins initialise globus)
    # has almost all signals blocked, and a child inherits that mask: unblock ours.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    server = build_server(args)
    scheme = "https" if args.cert else "http"
    try:
        server.prepare()
        print(
            f"webdav_server: serving {args.root} on {scheme}://127.0.0.1:{args.port}/", flush=True
        )
        server.serve()
    except _Stop as stop:
        print(f"webdav_server: {stop}, stopping", flush=True)
    finally:
        server.stop()
    sys.stdout.flush()
    sys.stderr.flush()
    # Worker threads stuck in a half-finished transfer must not keep the process alive.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
