"""``gridlrt dashboard``: serve the read-only web dashboard of a pool (gridlrt.dashboard).

Bound to 127.0.0.1 by default: open it through an ssh tunnel. Any other address needs the
access token this command makes (``secrets.token_urlsafe``) and prints once.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Annotated

import typer

from gridlrt.cli.common import PoolOption, console, settings
from gridlrt.dashboard.snapshots import safe_url
from gridlrt.durations import parse_duration
from gridlrt.errors import InputError
from gridlrt.extras import needs_extra
from gridlrt.tokens import open_pool


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dashboard_command(
    ctx: typer.Context,
    pool: PoolOption = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Another than 127.0.0.1/localhost requires the access "
            "token printed at start.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    refresh: Annotated[
        str, typer.Option("--refresh", help="Live parts of the pages refresh this often.")
    ] = "3s",
) -> None:
    """A read-only web dashboard of the run: every pipeline's stages and every step with
    progress bars, throughput and ETA; the DAG; tokens (filter by stage, status, subband,
    host) and each token's attempts, errors and log tail; pilots and their heartbeats; plots;
    a stage's products. Pages refresh their live parts every --refresh without reloading.
    Never writes to the pool and never shows a secret.

    On the UI node it listens on 127.0.0.1; from your laptop open a tunnel and browse to
    http://localhost:8080/:

        ssh -L 8080:127.0.0.1:8080 ui-node      # then on ui-node: gridlrt dashboard

    Binding to another address (--host 0.0.0.0) prints an access token once: open the URL
    with ?token=... once, the browser then keeps a session cookie.
    """
    every = parse_duration(refresh)
    if every < 0.5:
        raise InputError(f"--refresh {refresh!r}: at least 0.5 s")
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: must be 0..65535")
    with needs_extra("gridlrt dashboard"):
        import uvicorn

        from gridlrt.dashboard.app import create_app
    chosen = settings(ctx, pool)
    opened = open_pool(chosen)
    opened.overview()  # a pool that cannot be read fails here, in one line
    token = None if is_loopback(host) else secrets.token_urlsafe(24)
    app = create_app(opened, access_token=token, refresh=every)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'localhost' if host in ('127.0.0.1', 'localhost') else shown}:{port}/"
    console.print(
        f"gridlrt dashboard of {safe_url(opened.url)} (read-only) at {url}\n"
        + (
            f"from another machine: ssh -L {port}:127.0.0.1:{port} <this node>, "
            f"then open http://localhost:{port}/"
            if token is None
            else f"access token (shown only now): open {url}?token={token} once"
        )
        + "\nCtrl-C stops it",
        highlight=False,
        soft_wrap=True,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        opened.close()
