"""``gridlrt data``: datasets, LEDAMA style — list what you have, check it, compare it, fetch
it, clean it.

Thin: :mod:`gridlrt.datasets` makes and acts on datasets. Each concern's commands live in a
module of their own (``data_*.py`` beside this one) as plain functions, registered on
:data:`data_app` below, so the group reads as one list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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
from gridlrt.datasets.bands import DEFAULT_BAND, parse_band, with_estimated_frequencies
from gridlrt.datasets.check import check_dataset, compare_datasets
from gridlrt.datasets.model import (
    Dataset,
    DatasetSummary,
    select_subbands,
    summarize,
    write_dataset,
)
from gridlrt.datasets.sources import DEFAULT_JOBS, SourceContext, load_dataset
from gridlrt.sizes import format_bytes
from gridlrt.staging.ranges import parse_ranges

if TYPE_CHECKING:
    from gridlrt.storage import Storage
    from gridlrt.tokens import TokenPool

data_app = typer.Typer(
    help="Datasets: the subbands of an observation or of a pipeline stage, with sizes, "
    "frequencies and locations — list, check, compare, get, remove (LEDAMA's data tools).",
    no_args_is_help=True,
)

SOURCE_HELP = (
    "A dataset file (.jsonl/.csv, as -o writes), a list file (an srm.txt from the LTA, or any "
    "URLs one per line), a storage directory URL (file:///..., davs://..., srm://..., "
    "gsiftp://...; listed with sizes), or a pipeline stage's outputs: pool:RUN/STAGE."
)
SourceArgument = Annotated[str, typer.Argument(help=SOURCE_HELP, show_default=False)]
ChecksumsOption = Annotated[
    bool,
    typer.Option(
        "--checksums",
        help="Storage directories: also ask the endpoint for each file's adler32 (one request "
        "per file; endpoints without checksums are asked once).",
    ),
]
RecursiveOption = Annotated[
    bool,
    typer.Option(
        "--recursive",
        "-r",
        help="Storage directories: also list subdirectories that are not measurement sets.",
    ),
]
JobsOption = Annotated[
    int, typer.Option("--jobs", "-j", min=1, help="Storage requests in flight at once.")
]


def source_context(
    ctx: typer.Context | None = None,
    pool: str | None = None,
    *,
    checksums: bool = False,
    recursive: bool = False,
    jobs: int = DEFAULT_JOBS,
    retries: int | None = None,
) -> SourceContext:
    """What ``load_dataset`` needs for URL and ``pool:`` sources, as this invocation's
    settings (root ``--config``, ``--pool``) say; storage and pool are made only if used."""

    def make_storage() -> Storage:
        from gridlrt.cli.storage import open_storage

        return open_storage() if retries is None else open_storage(retries=retries)

    def make_pool() -> TokenPool:
        from gridlrt.config import load_settings
        from gridlrt.tokens import open_pool

        chosen = settings(ctx, pool) if ctx is not None else load_settings(pool=pool)
        return open_pool(chosen)

    return SourceContext(
        storage=make_storage, pool=make_pool, checksums=checksums, recursive=recursive,
        jobs=jobs,
    )  # fmt: skip


def selected(source: str, subbands: str | None, context: SourceContext | None = None) -> Dataset:
    """The dataset ``source`` names, narrowed to ``subbands`` when given."""
    dataset = load_dataset(source, context if context is not None else source_context())
    return select_subbands(dataset, subbands) if subbands else dataset


def print_notes(context: SourceContext) -> None:
    """What the loaders noted (left-out subdirectories, stage tokens not done), on stderr."""
    for note in dict.fromkeys(context.notes):
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


def dataset_table(
    dataset: Dataset, summary: DatasetSummary, shown: int = 400, *, estimated: str = ""
) -> Table:
    """One row per entry (the first ``shown``), totals in the caption; ``estimated``: the
    band the frequencies were estimated from (said in the caption)."""
    freq = (
        f"{summary.frequency_low_hz / 1e6:.2f}-{summary.frequency_high_hz / 1e6:.2f} MHz"
        if summary.frequency_low_hz is not None and summary.frequency_high_hz is not None
        else "frequencies unknown"
    )
    if estimated and summary.frequency_low_hz is not None:
        freq += f" (estimated from subband numbers: {estimated}; --band to change)"
    caption = (
        f"{summary.files} file(s), {format_bytes(summary.bytes)}"
        + (f" ({summary.unknown_sizes} of unknown size)" if summary.unknown_sizes else "")
        + f"; subbands {summary.subbands or '-'}; {freq}"
        + (f"; missing {summary.missing}" if summary.missing else "")
        + (f"; duplicates {', '.join(summary.duplicates)}" if summary.duplicates else "")
    )
    table = Table(title=dataset.name or dataset.source, caption=caption, caption_justify="left")
    for column in ("subband", "MHz", "size", "site", "name"):
        table.add_column(
            column, justify="right" if column in ("subband", "MHz", "size") else "left"
        )
    for entry in dataset.entries[:shown]:
        mhz = f"{entry.frequency_hz / 1e6:.3f}" if entry.frequency_hz else ""
        if mhz and (entry.model_extra or {}).get("frequency_estimated"):
            mhz = f"~{mhz}"
        table.add_row(
            entry.label if entry.subband is None else f"{entry.subband}",
            mhz,
            format_bytes(entry.size),
            entry.site or "",
            entry.name,
        )
    if len(dataset.entries) > shown:
        table.add_row("...", "", "", "", f"{len(dataset.entries) - shown} more (--json: all)")
    return table


@data_app.command("list")
def list_command(
    ctx: typer.Context,
    source: SourceArgument,
    subbands: SubbandsOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Also write the dataset here (.jsonl or .csv).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    band: Annotated[
        str,
        typer.Option(
            "--band",
            help="The band filter the subband numbers belong to, for frequencies not known "
            "otherwise (marked ~ and written with frequency_estimated): HBA_110_190 (HBA), "
            "HBA_170_230, HBA_210_250 (HBA-high), LBA_10_90 (LBA), LBA_30_90, LBA_10_70, "
            "LBA_30_70; none: only known frequencies.",
        ),
    ] = DEFAULT_BAND,
    checksums: ChecksumsOption = False,
    recursive: RecursiveOption = False,
    jobs: JobsOption = DEFAULT_JOBS,
    pool: PoolOption = None,
) -> None:
    """Show a dataset as a table with totals: files, bytes, subbands present and missing,
    frequency coverage. Read-only.

    Examples:

        gridlrt data list srm.txt --subbands 100..107

        gridlrt data list davs://webdav.grid.surfsara.nl/pnfs/.../L700701/ -o L700701.jsonl

        gridlrt data list file:///data/L700701 --checksums --band LBA

        gridlrt data list pool:L700701/target_prep --json
    """
    chosen_band = parse_band(band)
    context = source_context(ctx, pool, checksums=checksums, recursive=recursive, jobs=jobs)
    dataset = selected(source, subbands, context)
    dataset, estimated = with_estimated_frequencies(dataset, chosen_band)
    summary = summarize(dataset)
    if output is not None:
        write_dataset(output, dataset)
    print_notes(context)
    band_note = chosen_band.describe() if estimated and chosen_band else ""
    if as_json:
        typer.echo(
            '{"dataset": '
            + dataset.model_dump_json()
            + ', "summary": '
            + summary.model_dump_json()
            + ', "frequencies_estimated": '
            + json.dumps(band_note or None)
            + ', "notes": '
            + json.dumps(list(dict.fromkeys(context.notes)))
            + "}"
        )
        return
    console.print(dataset_table(dataset, summary, estimated=band_note))
    if output is not None:
        console.print(f"written: {output}")


@data_app.command("check")
def check_command(
    ctx: typer.Context,
    source: SourceArgument,
    expected: Annotated[
        str | None,
        typer.Option(
            "--expected",
            help="The subbands that should be there, as ranges (0..243); default: those of "
            "--subbands, else every one between the lowest and the highest present (per "
            "observation and SAP).",
            show_default=False,
        ),
    ] = None,
    subbands: SubbandsOption = None,
    checksums: Annotated[
        bool,
        typer.Option(
            "--checksums",
            help="Also compare each file's checksum with the one the dataset records, where "
            "the endpoint computes checksums (one request per file).",
        ),
    ] = False,
    as_json: JsonOption = False,
    jobs: JobsOption = DEFAULT_JOBS,
    retries: Annotated[
        int,
        typer.Option("--retries", min=0, help="Extra attempts per file after a transient failure."),
    ] = 1,
    pool: PoolOption = None,
) -> None:
    """Check a dataset: every expected subband present, every file on storage with the
    recorded size (and checksum with --checksums), no subband twice. One line per problem —
    MISSING, SHORT, SIZE, CORRUPT, DUPLICATE, UNREACHABLE — then a summary line. Read-only.

    Exit code: 0 when there is no problem, 1 when problems were found (other codes: the
    dataset could not be read, see gridlrt --help).

    Examples:

        gridlrt data check L700701.jsonl --expected 0..243

        gridlrt data check L700701.jsonl --checksums --json

        gridlrt data check davs://webdav.grid.surfsara.nl/pnfs/.../L700701/ --expected 0..243

        gridlrt data check pool:L700701/target_prep && gridlrt data get ... --to out/
    """
    # --subbands alone: those are the subbands expected
    wanted_text = expected if expected is not None else subbands
    wanted = parse_ranges(wanted_text) if wanted_text is not None else None
    context = source_context(ctx, pool, jobs=jobs, retries=retries)
    dataset = selected(source, subbands, context)
    print_notes(context)
    report = check_dataset(
        dataset, context.get_storage(), expected=wanted, checksums=checksums, jobs=jobs
    )
    if as_json:
        typer.echo(report.model_dump_json())
    else:
        for problem in report.problems:
            typer.echo(problem.line())
        for note in report.notes:
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        typer.echo(report.summary_line())
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("compare")
def compare_command(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(metavar="A", help="The first dataset. " + SOURCE_HELP)],
    b: Annotated[str, typer.Argument(metavar="B", help="The second dataset (same forms).")],
    subbands: SubbandsOption = None,
    as_json: JsonOption = False,
    jobs: JobsOption = DEFAULT_JOBS,
    pool: PoolOption = None,
) -> None:
    """Compare two datasets by subband and size (LEDAMA's CompareData): one line per
    subband only in A, only in B, or of another size, then a summary line. Read-only.

    Exit code: 0 when both hold the same subbands with the same sizes, 1 otherwise.

    Examples:

        gridlrt data compare srm.txt file:///data/L700701/

        gridlrt data compare L700701.jsonl davs://webdav.grid.surfsara.nl/pnfs/.../L700701/

        gridlrt data compare pool:run1/target_prep pool:run2/target_prep --json
    """
    context = source_context(ctx, pool, jobs=jobs)
    first = selected(a, subbands, context)
    second = selected(b, subbands, context)
    print_notes(context)
    comparison = compare_datasets(first, second)
    if as_json:
        typer.echo(comparison.model_dump_json())
    else:
        for difference in comparison.differences:
            typer.echo(difference.line())
        typer.echo(comparison.summary_line())
    if not comparison.equal:
        raise typer.Exit(1)


from gridlrt.cli import data_transfer  # noqa: E402  (its commands use selected() above)

data_app.command("get")(data_transfer.get_command)
data_app.command("put")(data_transfer.put_command)

from gridlrt.cli import data_clean  # noqa: E402  (its commands use selected() above)

data_app.command("rm")(data_clean.rm_command)
data_app.command("clean")(data_clean.clean_command)

from gridlrt.cli import data_catalogue  # noqa: E402  (the catalogue: find, quality)

data_app.command("find")(data_catalogue.find_command)
data_app.command("quality")(data_catalogue.quality_command)
