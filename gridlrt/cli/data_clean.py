"""``gridlrt data rm`` and ``gridlrt data clean``: remove a dataset, or a finished pipeline
run's intermediates, and the empty directories left behind. Dry run by default; ``--yes``
acts. Thin over :mod:`gridlrt.datasets.cleanup` (the plan, the safety rule, the removal)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.filesize import decimal
from rich.markup import escape
from rich.table import Table

from gridlrt.cli.common import (
    JsonOption,
    PoolOption,
    SubbandsOption,
    console,
    err_console,
    settings,
)
from gridlrt.cli.data import JobsOption, SourceArgument, print_notes, selected
from gridlrt.cli.storage import open_storage, transfer_progress
from gridlrt.datasets.cleanup import (
    DEFAULT_JOBS,
    RemovalPlan,
    RemovalResult,
    carry_out,
    plan_clean,
    plan_rm,
)
from gridlrt.datasets.sources import SourceContext
from gridlrt.errors import ExitCode, InputError
from gridlrt.storage import Storage
from gridlrt.tokens import TokenPool, open_pool

YesOption = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Remove for real (without it: a dry run that lists)."),
]
SHOWN = 40  # rows per list in the tables; --json gives all


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _size(n: int | None) -> str:
    return "?" if n is None else decimal(n)


def plan_table(plan: RemovalPlan, shown: int = SHOWN) -> Table:
    """The files that would go, with their stage and size; totals in the caption."""
    caption = f"{len(plan.files)} file(s), {_size(plan.bytes)}"
    if plan.kept_stages:
        caption += f"; kept stages: {', '.join(plan.kept_stages)}"
    table = Table(title=f"would remove: {plan.what}", caption=caption, caption_justify="left")
    table.add_column("stage" if plan.run else "kind")
    table.add_column("size", justify="right")
    table.add_column("url")
    for item in plan.files[:shown]:
        table.add_row(item.stage or item.kind, _size(item.size), escape(item.url))
    if len(plan.files) > shown:
        table.add_row("...", "", f"{len(plan.files) - shown} more (--json: all)")
    return table


def _print_list(title: str, lines: list[str], shown: int = SHOWN) -> None:
    if not lines:
        return
    console.print(f"{title}:")
    for line in lines[:shown]:
        console.print(f"  {escape(line)}", soft_wrap=True)
    if len(lines) > shown:
        console.print(f"  ... {len(lines) - shown} more (--json: all)")


def show_plan(plan: RemovalPlan) -> None:
    if plan.files:
        console.print(plan_table(plan))
    else:
        console.print(f"nothing to remove: {plan.what}")
    _print_list(
        f"refused ({len(plan.refused)}, {_size(plan.refused_bytes)} kept)",
        [f"{f.url}: {f.reason}" for f in plan.refused],
    )
    _print_list(f"already gone ({len(plan.missing)})", [f.url for f in plan.missing])
    _print_list(
        f"directories left empty, removed too ({len(plan.directories)}; never "
        f"{', '.join(plan.roots) or 'a top directory'} or above)",
        plan.directories,
    )


def show_result(result: RemovalResult) -> None:
    _print_list("failed", [f"{f.url}: {f.error}" for f in result.failed])
    _print_list("refused", [f"{f.url}: {f.reason}" for f in result.refused])
    _print_list("directories not removed (not empty)", result.directories_kept)
    console.print(
        f"{result.what}: removed {len(result.removed)} file(s), {_size(result.bytes_freed)} "
        f"freed; {len(result.missing)} already gone; {len(result.failed)} failed; "
        f"{len(result.refused)} refused; "
        f"{_n(len(result.directories_removed), 'directory', 'directories')} removed"
    )


def _open(ctx: typer.Context, pool: str | None) -> TokenPool:
    chosen = settings(ctx, pool)
    opened = open_pool(chosen)
    if chosen.pool_kind == "embedded":
        opened.init()  # a user without any token yet: nothing can need the files
    return opened


def _finish(
    plan: RemovalPlan,
    opened: TokenPool,
    storage: Storage,
    *,
    yes: bool,
    as_json: bool,
    jobs: int,
    by: str,
) -> None:
    """Show the plan (dry run), or carry it out with a progress bar and a summary; exit 1
    when something planned was not removed (failed, refused, a directory not empty)."""
    if not yes:
        if as_json:
            typer.echo(
                '{"dry_run": true, "bytes": ' + str(plan.bytes) + ', "plan": '
                + plan.model_dump_json() + "}"
            )  # fmt: skip
            return
        show_plan(plan)
        if plan.refusal:
            console.print(f"--yes would remove nothing: {escape(plan.refusal)}")
        else:
            console.print(
                f"dry run: nothing removed; --yes removes {len(plan.files)} file(s) "
                f"({_size(plan.bytes)}) and "
                f"{_n(len(plan.directories), 'empty directory', 'empty directories')}"
            )
        return
    if plan.refusal:
        raise InputError(plan.refusal)
    with transfer_progress("removing", enabled=not as_json) as progress:
        result = carry_out(plan, opened, storage=storage, jobs=jobs, progress=progress, by=by)
    if as_json:
        typer.echo(
            '{"dry_run": false, "bytes_freed": ' + str(result.bytes_freed) + ', "plan": '
            + plan.model_dump_json() + ', "result": ' + result.model_dump_json() + "}"
        )  # fmt: skip
    else:
        show_result(result)
    if not result.complete:
        if not as_json:
            err_console.print(
                "error: not everything planned was removed (see above); rerun to retry"
            )
        raise typer.Exit(ExitCode.FAILED)


def rm_command(
    ctx: typer.Context,
    source: SourceArgument,
    subbands: SubbandsOption = None,
    yes: YesOption = False,
    jobs: JobsOption = DEFAULT_JOBS,
    pool: PoolOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove every file of a dataset, then the directories left empty below the dataset's
    top directory. DRY RUN unless --yes: lists what would go, the bytes freed, files already
    gone, and files refused because a token still needs them (any waiting, blocked, todo or
    running token with the file as an input, or a waiting child whose parent made it).
    Exit 1 when something planned was not removed.

    Examples:

        gridlrt data rm L700701.jsonl                     # what would go (dry run)

        gridlrt data rm L700701.jsonl --subbands 100..107 --yes

        gridlrt data rm pool:cal-target/target_prep --yes

        gridlrt data rm davs://webdav.example.org/lofar/me/L700701/ --json
    """
    storage = open_storage()
    with _open(ctx, pool) as opened:
        context = SourceContext(storage=storage, pool=opened, jobs=jobs)
        dataset = selected(source, subbands, context)
        print_notes(context)
        plan = plan_rm(dataset, opened, storage=storage, jobs=jobs)
        _finish(plan, opened, storage, yes=yes, as_json=as_json, jobs=jobs, by="gridlrt data rm")


def _stages(values: list[str]) -> list[str]:
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    if not names:
        raise InputError("--keep: name the stages to keep, e.g. --keep image,cal_solve")
    return list(dict.fromkeys(names))


def clean_command(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="The pipeline run (gridlrt pipeline status).")],
    keep: Annotated[
        list[str],
        typer.Option(
            "--keep",
            "-k",
            help="Stages whose files stay (comma-separated or repeated), e.g. image,cal_solve.",
            show_default=False,
        ),
    ],
    yes: YesOption = False,
    jobs: JobsOption = DEFAULT_JOBS,
    pool: PoolOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a finished pipeline run's intermediates: the outputs (and payload logs) of
    every stage not kept, per the tokens' outputs, then the directories left empty (never a
    directory that is not empty, never the run's top directory). DRY RUN unless --yes. A
    file a token still needs is refused; a run with tokens still to run is cleaned only when
    none of its files is needed. Each token whose files went is marked (outputs_removed).
    Safe to rerun: files already gone are reported, the rest is finished.

    Examples:

        gridlrt data clean cal-target --keep image,cal_solve          # what would go

        gridlrt data clean cal-target --keep image --keep cal_solve --yes

        gridlrt data clean cal-target --keep image --json | jq .plan.directories
    """
    stages = _stages(keep)
    with _open(ctx, pool) as opened:
        storage = open_storage()
        plan = plan_clean(opened, run, stages, storage=storage, jobs=jobs)
        by = "gridlrt data clean"
        _finish(plan, opened, storage, yes=yes, as_json=as_json, jobs=jobs, by=by)
