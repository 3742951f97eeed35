"""The ``webdav`` fixture: real WebDAV storage (dCache-like) over http and https.

Two server processes (``tests/services/webdav_server.py``: wsgidav on cheroot, anonymous
read/write) serve the same directory: one plain HTTP (``dav://``, ``http://``) and one HTTPS
with a self-signed certificate (``davs://``, ``https://``). They run as separate processes so
tests can :meth:`WebDAV.stop`, :meth:`WebDAV.start` or :meth:`WebDAV.restart` them (on the same
ports), e.g. in the middle of a transfer.

TLS trust (verifying, not ``INSECURE``): the certificate goes into a CA directory with its
``openssl rehash`` link, and the fixture exports, for the whole session,

* ``X509_CERT_DIR=<ca_dir>`` - davix/gfal2's CA directory; read when a gfal2 context is
  *created* (contexts created before the fixture do not see it);
* ``SSL_CERT_DIR=<ca_dir>:<system CA dir>`` - OpenSSL's default CA path; read at each TLS
  connection, so it also covers earlier gfal2 contexts and Python's ``ssl`` module;
* ``SSL_CERT_FILE=<the certificate>`` - OpenSSL's default CA *file*. davix reads it at every
  request: left at the system bundle (~140 CAs, 220 kB) that costs ~17 ms a request, so a
  ``davs://`` stat took ~40 ms against ~2 ms with this one-certificate file. The system CAs
  are still found through the system CA dir in ``SSL_CERT_DIR``.

Without them gfal2 fails with "Server certificate verification failed: issuer is not
trusted". :meth:`WebDAV.client_env` gives the same variables for child processes (e.g. the
``gfal-copy`` CLI); :meth:`WebDAV.gfal2_context` returns a fresh, ready gfal2 context.

wsgidav answers no checksum queries: ``ctx.checksum()`` and copies with checksum
verification on the WebDAV side fail with ENOSYS ("checksum calculation for ADLER32 not
supported").
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.services.process import ServiceProcess, free_port, log_tail

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def make_self_signed_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1: (cert, key, CA directory with hash link)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("webdav: the openssl command is needed for the TLS certificate", pytrace=False)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca_dir = directory / "cert.pem", directory / "key.pem", directory / "ca"
    argv = [
        openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"webdav: openssl req failed:\n{result.stderr}", pytrace=False)
    ca_dir.mkdir(exist_ok=True)
    shutil.copyfile(cert, ca_dir / "gridlrt-test-webdav.pem")
    result = subprocess.run(
        [openssl, "rehash", str(ca_dir)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not any(ca_dir.glob("*.0")):
        pytest.fail(f"webdav: openssl rehash failed:\n{result.stderr}", pytrace=False)
    return cert, key, ca_dir


@dataclass
class WebDAV:
    """Two running WebDAV servers (http on ``port``, https on ``tls_port``) over ``root``."""

    root: Path
    port: int
    tls_port: int
    cert: Path
    key: Path
    ca_dir: Path
    log_dir: Path
    host: str = HOST
    bearer_file: Path | None = None
    """When set, the servers require ``Authorization: Bearer <its token>`` (or ``?authz=``)
    and answer 401 without it, like a dCache door taking macaroons (default: anonymous)."""
    http_process: ServiceProcess = field(init=False, repr=False)
    https_process: ServiceProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        base = [sys.executable, "-m", "tests.services.webdav_server", "--root", str(self.root)]
        if self.bearer_file is not None:
            base += ["--bearer-file", str(self.bearer_file)]
        self.http_process = ServiceProcess(
            "webdav (http)",
            [*base, "--port", str(self.port)],
            self.log_dir / "webdav-http.log",
            cwd=REPO_ROOT,
        )
        self.https_process = ServiceProcess(
            "webdav (https)",
            [*base, "--port", str(self.tls_port), "--cert", str(self.cert), "--key", str(self.key)],
            self.log_dir / "webdav-https.log",
            cwd=REPO_ROOT,
        )

    # -- URLs and files ---------------------------------------------------------------------

    def _url(self, scheme: str, port: int, rel: str) -> str:
        return f"{scheme}://{self.host}:{port}/{rel.lstrip('/')}"

    def dav_url(self, rel: str = "") -> str:
        """``dav://127.0.0.1:PORT/rel`` (plain HTTP WebDAV)."""
        return self._url("dav", self.port, rel)

    def davs_url(self, rel: str = "") -> str:
        """``davs://127.0.0.1:TLS_PORT/rel`` (WebDAV over TLS)."""
        return self._url("davs", self.tls_port, rel)

    def http_url(self, rel: str = "") -> str:
        return self._url("http", self.port, rel)

    def https_url(self, rel: str = "") -> str:
        return self._url("https", self.tls_port, rel)

    def path(self, rel_or_url: str = "") -> Path:
        """The local file behind a relative path or a URL of these servers."""
        rel = rel_or_url
        if "://" in rel_or_url:
            parts = urlsplit(rel_or_url)
            if parts.hostname != self.host or parts.port not in (self.port, self.tls_port):
                raise ValueError(f"{rel_or_url} is not served by this WebDAV fixture")
            rel = unquote(parts.path)
        return self.root / rel.lstrip("/")

    # -- TLS trust for clients --------------------------------------------------------------

    def client_env(self) -> dict[str, str]:
        """Environment variables that make gfal2/davix (and OpenSSL) trust the https server."""
        system_capath = ssl.get_default_verify_paths().openssl_capath
        return {
            "X509_CERT_DIR": str(self.ca_dir),
            "SSL_CERT_DIR": os.pathsep.join([str(self.ca_dir), system_capath]),
            "SSL_CERT_FILE": str(self.cert),
        }

    def gfal2_context(self) -> Any:
        """A new gfal2 context that verifies the https server against :attr:`ca_dir`."""
        import gfal2  # the Debian binding; imported late so the module loads without it

        os.environ.update(self.client_env())  # X509_CERT_DIR is read at context creation
        return gfal2.creat_context()

    # -- process control --------------------------------------------------------------------

    def _processes(self, http: bool, https: bool) -> list[tuple[ServiceProcess, int, bool]]:
        chosen = []
        if http:
            chosen.append((self.http_process, self.port, False))
        if https:
            chosen.append((self.https_process, self.tls_port, True))
        return chosen

    def _answers(self, port: int, tls: bool) -> bool:
        if tls:
            context = ssl.create_default_context(cafile=str(self.cert))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, port, timeout=2, context=context
            )
        else:
            conn = http.client.HTTPConnection(self.host, port, timeout=2)
        headers = {}
        if self.bearer_file is not None:
            headers["Authorization"] = f"Bearer {self.bearer_file.read_text().strip()}"
        try:
            conn.request("OPTIONS", "/", headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status == 200 and "PROPFIND" in (response.getheader("Allow") or "")
        finally:
            conn.close()

    @property
    def running(self) -> bool:
        return self.http_process.alive and self.https_process.alive

    def start(self, *, http: bool = True, https: bool = True, timeout: float = 30.0) -> None:
        """Start the (stopped) servers on their ports; fail the test if they do not come up."""
        for process, port, tls in self._processes(http, https):
            if process.alive:
                continue
            # cheroot binds with SO_REUSEADDR: the same port is free again right after a stop.
            process.start()
            process.wait_ready(functools.partial(self._answers, port, tls), timeout)

    def stop(self, *, http: bool = True, https: bool = True, kill: bool = False) -> None:
        """Stop the servers.

        Default: SIGTERM, a graceful stop in which requests in progress get about a second to
        finish (a fast local transfer usually completes). ``kill=True``: SIGKILL, which cuts
        every transfer in progress at once, like a crashed storage node.
        """
        for process, _port, _tls in self._processes(http, https):
            if kill and process.proc is not None and process.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.proc.pid, signal.SIGKILL)
                process.proc.wait(10)
            process.stop()

    def restart(self, *, http: bool = True, https: bool = True, kill: bool = False) -> None:
        self.stop(http=http, https=https, kill=kill)
        self.start(http=http, https=https)

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {p.log}:\n{log_tail(p.log)}" for p in (self.http_process, self.https_process)
        )


@pytest.fixture(scope="session")
def webdav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDAV]:
    """Real WebDAV servers (http + https, same root) for the whole test session.

    ``X509_CERT_DIR`` and ``SSL_CERT_DIR`` are set in ``os.environ`` for the session so that
    gfal2 contexts in the test process trust the https server (see the module docstring).
    """
    workdir = tmp_path_factory.mktemp("webdav")
    root = workdir / "root"
    root.mkdir()
    cert, key, ca_dir = make_self_signed_cert(workdir / "tls")
    server = WebDAV(
        root=root,
        port=free_port(),
        tls_port=free_port(),
        cert=cert,
        key=key,
        ca_dir=ca_dir,
        log_dir=workdir,
    )
    saved = {name: os.environ.get(name) for name in server.client_env()}
    os.environ.update(server.client_env())
    started = time.monotonic()
    try:
        server.start()
        print(
            f"webdav ready on {server.dav_url()} and {server.davs_url()} "
            f"in {time.monotonic() - started:.1f} s"
        )
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class MacaroonWebDAV:
    """A :class:`WebDAV` pair that wants a macaroon, and that macaroon."""

    server: WebDAV
    macaroon: str

    def refusals(self) -> list[str]:
        """The 401 lines both servers logged (method, path and why; never a token)."""
        lines: list[str] = []
        for process in (self.server.http_process, self.server.https_process):
            if process.log.exists():
                lines += [ln for ln in process.log.read_text().splitlines() if " 401 " in ln]
        return lines


@pytest.fixture(scope="module")
def macaroon_webdav(
    webdav: WebDAV, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MacaroonWebDAV]:
    """WebDAV servers (http + https, with the ``webdav`` fixture's certificate, so its TLS
    trust applies) that refuse every request without ``Authorization: Bearer <macaroon>``
    or ``?authz=<macaroon>`` (401). The macaroon is a fresh random one per module, read by
    the servers from a 0600 file."""
    import secrets

    workdir = tmp_path_factory.mktemp("webdav-macaroon")
    root = workdir / "root"
    root.mkdir()
    macaroon = "MDAxY2xvY2F0aW9uIGRDYWNoZQ" + secrets.token_urlsafe(24)
    bearer_file = workdir / "macaroon"
    bearer_file.write_text(macaroon + "\n")
    bearer_file.chmod(0o600)
    server = WebDAV(
        root=root,
        port=free_port(),
        tls_port=free_port(),
        cert=webdav.cert,
        key=webdav.key,
        ca_dir=webdav.ca_dir,
        log_dir=workdir,
        bearer_file=bearer_file,
    )
    try:
        server.start()
        yield MacaroonWebDAV(server, macaroon)
    finally:
        server.stop()
