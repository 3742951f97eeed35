"""``gridlrt storage ...``: copy, list, stat, mkdir, rm and checksum any gfal2 URL, and try
out URL templates. Also the rich progress bar that every long transfer shows."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from gridlrt.cli.common import JsonOption, console, err_console
from gridlrt.errors import InputError
from gridlrt.storage import Storage, TransferProgress, render_url, template_fields
from gridlrt.storage.gfal import DEFAULT_RETRIES, DEFAULT_TRANSFER_TIMEOUT, ProgressCallback
from gridlrt.storage.urls import basename, join, to_url

storage_app = typer.Typer(
    help="Look at and move files on any storage gfal2 reaches: file://, dav(s)://, https://, "
    "srm://, gsiftp://, root://. Local paths work as file:// URLs.",
    no_args_is_help=True,
)

RetriesOption = Annotated[
    int, typer.Option("--retries", min=0, help="Extra attempts after a transient failure.")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds one file transfer may take (more than 0).")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")
]


def open_storage(
    retries: int = DEFAULT_RETRIES, timeout: float = DEFAULT_TRANSFER_TIMEOUT
) -> Storage:
    """The storage layer as the CLI uses it."""
    if not math.isfinite(timeout) or timeout <= 0:
        raise InputError(f"--timeout {timeout}: give the seconds a transfer may take, e.g. 3600")
    return Storage(retries=retries, transfer_timeout=timeout)


def transfer_bar(label: str) -> tuple[Progress, TaskID]:
    """The bar every transfer shows on stderr (drawn on a terminal only): percentage, bytes,
    speed, ETA and a ``files`` text field for the caller to fill."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[files]}"),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    return progress, progress.add_task(label, total=None, files="")


@contextlib.contextmanager
def transfer_progress(label: str, *, enabled: bool = True) -> Iterator[ProgressCallback | None]:
    """A rich progress bar (files, bytes, speed, ETA) on stderr, fed by copy_many's callback.

    Yields the callback to pass as ``progress=`` (None when disabled). The bar is drawn
    only on a terminal; elsewhere nothing is printed.
    """
    if not enabled:
        yield None
        return
    progress, task = transfer_bar(label)

    def update(report: TransferProgress) -> None:
        progress.update(
            task,
            total=report.bytes_total or None,
            completed=report.bytes_done,
            files=f"{report.files_done}/{report.files_total} files",
        )

    with progress:
        yield update


def _rate(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:.1f} MB/s" if seconds > 0 else "-"


@storage_app.command("copy")
def copy(
    sources: Annotated[
        list[str],
        typer.Argument(metavar="SRC... DST", help="Source URL(s) or paths, then the destination."),
    ],
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Transfers in flight at once.")
    ] = 4,
    overwrite: Annotated[
        bool, typer.Option("--overwrite/--no-overwrite", help="Replace existing destinations.")
    ] = True,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify", help="Compare size (and adler32 where both ends answer)."
        ),
    ] = True,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TRANSFER_TIMEOUT,
    dry_run: DryRunOption = False,
) -> None:
    """Copy files, verified, through a temporary name renamed into place when complete.

    With one SRC, DST is the new file's URL. With several, DST is a directory URL and each
    file keeps its name. Missing parent directories are created; transient failures
    (timeouts, lost connections) are retried with backoff.

    Examples:

      gridlrt storage copy result.tar davs://webdav.grid.surfsara.nl/pnfs/.../L1_SB100.tar

      gridlrt storage copy a.MS.tar b.MS.tar dav://host/lofar/out/ --jobs 2
    """
    if len(sources) < 2:
        raise InputError("storage copy: give at least one SRC and a DST")
    *srcs, dst = sources
    if len(srcs) == 1 and not dst.endswith("/"):
        pairs = [(to_url(srcs[0]), to_url(dst))]
    else:
        pairs = [(to_url(s), join(to_url(dst), basename(to_url(s)))) for s in srcs]
    if dry_run:
        for s, d in pairs:
            console.print(f"would copy {s} -> {d}", highlight=False, soft_wrap=True)
        return
    store = open_storage(retries, timeout)
    with transfer_progress("copying") as progress:
        results = store.copy_many(
            pairs, max_in_flight=jobs, progress=progress, overwrite=overwrite, verify=verify
        )
    for r in results:
        extra = f", {r.attempts} attempts" if r.attempts > 1 else ""
        note = f"; {r.note}" if r.note else ""
        console.print(
            f"copied {r.src} -> {r.dst} ({r.size} bytes, {_rate(r.size, r.seconds)}, "
            f"verified {r.verified}{extra}{note})",
            highlight=False,
            soft_wrap=True,
        )


@storage_app.command("ls")
def ls(
    url: Annotated[str, typer.Argument(help="Directory URL or path.")],
    long: Annotated[bool, typer.Option("--long", "-l", help="Size and time of each entry.")] = (
        False
    ),
) -> None:
    """List a directory (names sorted). Example: gridlrt storage ls dav://host/lofar/ -l"""
    store = open_storage()
    target = to_url(url)
    names = store.listdir(target)
    if not long:
        for name in names:
            console.print(name, highlight=False, soft_wrap=True, markup=False)
        return
    table = Table(show_header=True, box=None)
    for column in ("name", "size", "type"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for name in names:
        info = store.stat(join(target, name))
        table.add_row(name, "" if info.is_dir else str(info.size), "dir" if info.is_dir else "file")
    console.print(table)


@storage_app.command("stat")
def stat(
    url: Annotated[str, typer.Argument(help="URL or path.")],
    as_json: JsonOption = False,
) -> None:
    """Size, type and modification time of one file or directory."""
    info = open_storage().stat(url)
    if as_json:
        typer.echo(json.dumps(info.model_dump()))
        return
    kind = "directory" if info.is_dir else f"file, {info.size} bytes"
    console.print(f"{to_url(url)}: {kind}, mtime {info.mtime:.0f}", highlight=False, soft_wrap=True)


@storage_app.command("mkdir")
def mkdir(
    url: Annotated[str, typer.Argument(help="Directory URL or path.")],
    dry_run: DryRunOption = False,
) -> None:
    """Create a directory and its missing parents (fine if it exists)."""
    if dry_run:
        console.print(f"would create {to_url(url)}", highlight=False, soft_wrap=True)
        return
    open_storage().mkdir(url, parents=True)
    console.print(f"created {to_url(url)}", highlight=False, soft_wrap=True)


@storage_app.command("rm")
def rm(
    url: Annotated[str, typer.Argument(help="File or directory URL or path.")],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Also a non-empty directory.")
    ] = False,
    dry_run: DryRunOption = False,
) -> None:
    """Delete a file, or a directory (empty unless --recursive)."""
    store = open_storage()
    info = store.stat(url)
    if dry_run:
        what = "directory" if info.is_dir else "file"
        console.print(f"would delete {what} {to_url(url)}", highlight=False, soft_wrap=True)
        return
    store.delete(url, recursive=recursive)
    console.print(f"deleted {to_url(url)}", highlight=False, soft_wrap=True)


@storage_app.command("checksum")
def checksum(url: Annotated[str, typer.Argument(help="File URL or path.")]) -> None:
    """The adler32 of a file as the endpoint computes it (exit 1 if it cannot)."""
    value = open_storage().checksum(url)
    if value is None:
        raise InputError(f"{to_url(url)}: the endpoint does not compute adler32 checksums")
    typer.echo(value)


@storage_app.command("url")
def url(
    template: Annotated[
        str, typer.Argument(metavar="TEMPLATE", help="e.g. '{root}/{obsid}/{step}/{name}'.")
    ],
    field: Annotated[
        list[str] | None,
        typer.Option("--field", "-f", help="KEY=VALUE for one placeholder (repeatable)."),
    ] = None,
) -> None:
    """Fill a URL template, the way output locations are made from token fields.

    Placeholders are {name}; a value may not be empty, contain '..', or contain '/' unless
    the placeholder is {name:path}. {root} takes a base URL as is. A placeholder without a
    value is an error listing the fields that were given.

    Example: gridlrt storage url '{root}/{obsid}/{name}' -f root=dav://h/lofar -f obsid=L1
    -f name=L1_SB100.tar
    """
    fields: dict[str, str] = {}
    for item in field or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--field {item!r}: expected KEY=VALUE")
        fields[key] = value
    if not template_fields(template):
        err_console.print("[yellow]warning:[/] the template has no placeholders")
    typer.echo(render_url(template, fields))
