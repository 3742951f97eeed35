"""``gridlrt sandbox ...``: build a step directory into a content-addressed tarball, push it
to storage once, and fetch it back verified."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from gridlrt.cli.common import console, err_console, settings
from gridlrt.cli.storage import (
    DryRunOption,
    RetriesOption,
    TimeoutOption,
    open_storage,
    transfer_progress,
)
from gridlrt.errors import InputError
from gridlrt.sandbox import (
    build_sandbox,
    fetch_sandbox,
    output_path,
    plan_fetch,
    plan_push,
    push_sandbox,
    runtime_bundle,
)
from gridlrt.sizes import format_bytes
from gridlrt.storage.gfal import DEFAULT_RETRIES, DEFAULT_TRANSFER_TIMEOUT

sandbox_app = typer.Typer(
    help="Pack a step (scripts, parset templates, step config) into a reproducible tar.gz "
    "whose sha256 is its id; push it to storage once; fetch it back verified on a worker.",
    no_args_is_help=True,
)

IncludeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        help="Extra file to add, as FILE (at the top, under its own name) or NAME=FILE "
        "(under NAME, e.g. bin/bootstrap.sh=./bootstrap.sh). Repeatable.",
        show_default=False,
    ),
]

WithGridlrtOption = Annotated[
    bool,
    typer.Option(
        "--with-gridlrt",
        help="Add the runtime bundle under _gridlrt/: gridlrt and its pure-Python dependencies "
        "as installed here (not numpy, python-casacore or DP3: the site provides those), so "
        "jdl_templates/pilot.sh runs `python3 -m gridlrt worker run` from the sandbox on a "
        "worker node without gridlrt. The workers' python3 must have this Python's major.minor.",
    ),
]


def _extra(items: list[str] | None) -> dict[str, Path]:
    extra: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        if not name or not path:
            raise InputError(f"--include {item!r}: expected FILE or NAME=FILE")
        extra[name] = Path(path)
    return extra


def _with_bundle(stack: ExitStack, extra: dict[str, Path], with_gridlrt: bool) -> dict[str, Path]:
    """``extra`` plus the runtime bundle (alive until ``stack`` closes) when asked for."""
    if not with_gridlrt:
        return extra
    bundle = stack.enter_context(runtime_bundle())
    clash = sorted(set(extra) & set(bundle))
    if clash:
        raise InputError(f"--include {clash[0]}: that name belongs to the runtime bundle")
    return {**extra, **bundle}


@sandbox_app.command("build")
def build(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="The step directory.", show_default=False)
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (in an existing directory), or an existing directory for "
            "ID.tar.gz (a trailing / says it is a directory). "
            "Default: ID.tar.gz in the current directory (ID: the sha256).",
            show_default=False,
        ),
    ] = None,
    include: IncludeOption = None,
    with_gridlrt: WithGridlrtOption = False,
) -> None:
    """Build DIR into a reproducible tar.gz and print its id (the sha256 of the bytes).

    Same content, same bytes, same id: members are sorted, times and owners fixed, modes
    normalised (0755 if executable, else 0644); Python byte-code caches and .git are left out.
    Symlinks must stay inside DIR; devices and FIFOs are refused.

    For grid worker nodes without gridlrt, add --with-gridlrt: DIR holds the step configs
    (STEP.toml and the files they name) and the sandbox also carries gridlrt itself, to be
    started by jdl_templates/pilot.sh SANDBOX ID --pool URL --step STEP.

    Example: ID=$(gridlrt sandbox build steps/average)
    Example: ID=$(gridlrt sandbox build steps/ --with-gridlrt -o pilot-sandboxes/)
    """  # fmt: skip
    target = output_path(output)
    with ExitStack() as stack:
        extra = _with_bundle(stack, _extra(include), with_gridlrt)
        sandbox = build_sandbox(directory, target, extra=extra)
    typer.echo(sandbox.id)
    err_console.print(
        f"wrote {sandbox.path} ({sandbox.files} files, {format_bytes(sandbox.size)})",
        highlight=False,
        soft_wrap=True,
    )


@sandbox_app.command("push")
def push(
    ctx: typer.Context,
    source: Annotated[
        Path,
        typer.Argument(
            metavar="DIR|FILE",
            help="Step directory (built now) or a built ID.tar.gz.",
            show_default=False,
        ),
    ],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Base URL; the sandbox goes to URL/ID.tar.gz. Default: the sandbox_root setting.",
            show_default=False,
        ),
    ] = None,
    include: IncludeOption = None,
    with_gridlrt: WithGridlrtOption = False,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TRANSFER_TIMEOUT,
    dry_run: DryRunOption = False,
) -> None:
    """Upload a sandbox to URL/ID.tar.gz, once: if that id is already there, nothing is
    sent. The upload is verified and renamed into place only when complete.

    --with-gridlrt builds DIR with the runtime bundle (see `gridlrt sandbox build --help`), for
    jdl_templates/pilot.sh to fetch on worker nodes without gridlrt.

    Example: gridlrt sandbox push steps/average --to davs://webdav.grid.surfsara.nl/pnfs/.../sandboxes
    Example: gridlrt sandbox push steps/ --with-gridlrt
    """  # fmt: skip
    if with_gridlrt and source.is_file():
        raise InputError(
            f"{source}: --with-gridlrt adds files while building; give the step directory "
            "(a tarball built with --with-gridlrt already has the bundle)"
        )
    with ExitStack() as stack:
        extra = _with_bundle(stack, _extra(include), with_gridlrt)
        base = to or settings(ctx).sandbox_root
        store = open_storage(retries, timeout)
        if dry_run:
            plan = plan_push(store, source, base, extra=extra)
            verb = "already there, would skip" if plan.present else "would upload"
            console.print(
                f"sandbox {plan.id} ({plan.files} files, {format_bytes(plan.size)}): "
                f"{verb} {plan.url}",
                highlight=False,
                soft_wrap=True,
            )
            return
        with transfer_progress("pushing sandbox") as progress:
            result = push_sandbox(store, source, base, extra=extra, progress=progress)
        if result.uploaded:
            rate = format_bytes(int(result.transfer.rate)) if result.transfer else "-"
            how = result.transfer.verified if result.transfer else "none"
            console.print(
                f"uploaded sandbox {result.id} to {result.url} ({format_bytes(result.size)}, "
                f"{rate}/s, verified {how})",
                highlight=False,
                soft_wrap=True,
            )
        else:
            console.print(
                f"sandbox {result.id} already at {result.url}; nothing uploaded",
                highlight=False,
                soft_wrap=True,
            )


@sandbox_app.command("fetch")
def fetch(
    url: Annotated[
        str,
        typer.Argument(help="URL (or path) of a SHA256.tar.gz sandbox.", show_default=False),
    ],
    to: Annotated[
        Path,
        typer.Option(
            "--to", help="Directory to unpack into (must be new or empty).", show_default=False
        ),
    ],
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256",
            help="Expected sha256, when the file name is not SHA256.tar.gz.",
            show_default=False,
        ),
    ] = None,
    retries: RetriesOption = DEFAULT_RETRIES,
    timeout: TimeoutOption = DEFAULT_TRANSFER_TIMEOUT,
    dry_run: DryRunOption = False,
) -> None:
    """Download a sandbox, check its sha256, and unpack it into --to.

    Nothing is unpacked when the hash differs (a corrupted or tampered file) or when a
    member is unsafe: an absolute path, '..', a device or FIFO, or a link out of the tree.

    Example: gridlrt sandbox fetch dav://host/sandboxes/ID.tar.gz --to ./step
    """  # fmt: skip
    store = open_storage(retries, timeout)
    if dry_run:
        plan = plan_fetch(store, url, to, sha256=sha256)
        console.print(
            f"would download {plan.url} ({format_bytes(plan.size)}), check sha256 {plan.sha256} "
            f"and unpack into {plan.dest}",
            highlight=False,
            soft_wrap=True,
        )
        return
    with transfer_progress("fetching sandbox") as progress:
        result = fetch_sandbox(store, url, to, sha256=sha256, progress=progress)
    console.print(
        f"fetched sandbox {result.sha256} ({result.files} files, sha256 verified) into "
        f"{result.dest}",
        highlight=False,
        soft_wrap=True,
    )
