"""What every command shares: consoles, the settings, and the ``--pool`` option."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gridlrt.config import Settings, load_settings
from gridlrt.durations import format_duration, parse_duration
from gridlrt.errors import InputError

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

#: ``--json`` of every command that prints a table
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
#: ``--subbands`` of every command that selects subbands (LEDAMA's range syntax)
SubbandsOption = Annotated[
    str | None,
    typer.Option(
        "--subbands",
        help="Only these subbands, LEDAMA ranges: 0..243, 0..243..2 (every second), 1-3,7.",
        show_default=False,
    ),
]


def settings(ctx: typer.Context, pool: str | None = None) -> Settings:
    """The settings for this invocation: config file (root ``--config``), env, then options."""
    root = ctx.find_root()
    config: Path | None = root.params.get("config") if root.params else None
    return load_settings(config_file=config, pool=pool)


def duration(
    text: str, option: str, *, minimum: float = 0.0, zero: bool = False, example: str = "30s"
) -> float:
    """Seconds in ``text`` for ``option``: a finite duration, more than 0 (or 0 when ``zero``
    allows it) and at least ``minimum``; else :class:`InputError` naming the option."""
    try:
        seconds = parse_duration(text)
    except InputError as exc:
        raise InputError(f"{option} {text!r}: {exc}") from None
    if not math.isfinite(seconds):
        raise InputError(f"{option} {text!r}: give a finite duration, e.g. {example}")
    if seconds < 0 or (seconds == 0 and not zero):
        least = "0 or more" if zero else "more than 0"
        raise InputError(f"{option} {text!r}: must be {least}, e.g. {example}")
    if seconds < minimum and not (zero and seconds == 0):
        least = f"{minimum:g}s" if minimum < 60 else format_duration(minimum)
        raise InputError(f"{option} {text!r}: must be at least {least}, e.g. {example}")
    return seconds


def output_directory(path: Path, option: str, *, create: bool = True) -> Path:
    """``path`` as a directory to write into: an existing directory, or one that can be made
    (made now when ``create``); :class:`InputError` naming ``option`` otherwise."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a directory; give a directory")
    if not path.exists():
        parent = next((p for p in path.absolute().parents if p.exists()), Path("/"))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{option} {path}: cannot create a directory under {parent}")
        if create:
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise InputError(
                    f"{option} {path}: cannot create the directory ({exc.strerror})"
                ) from None
    elif not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: the directory is not writable by you")
    return path
