"""What every command shares: consoles, the settings, and the ``--pool`` option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gridlrt.config import Settings, load_settings

console = Console()
err_console = Console(stderr=True)

PoolOption = Annotated[
    str | None,
    typer.Option(
        "--pool",
        help="Token pool URL: sqlite:///PATH (embedded, the default) or "
        "http(s)://HOST:PORT/DB (CouchDB). Default from GRIDLRT_POOL or the config file.",
        show_default=False,
    ),
]


def settings(ctx: typer.Context, pool: str | None = None) -> Settings:
    """The settings for this invocation: config file (root ``--config``), env, then options."""
    root = ctx.find_root()
    config: Path | None = root.params.get("config") if root.params else None
    return load_settings(config_file=config, pool=pool)
