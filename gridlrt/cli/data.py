"""``gridlrt data``: datasets, LEDAMA style — list what you have, check it, compare it, fetch
it, clean it.

Thin: :mod:`gridlrt.datasets` makes and acts on datasets. Each concern's commands live in a
module of their own (``data_*.py`` beside this one) as plain functions, registered on
:data:`data_app` below, so the group reads as one list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gridlrt.cli.common import console
from gridlrt.datasets.model import (
    Dataset,
    DatasetSummary,
    select_subbands,
    summarize,
    write_dataset,
)
from gridlrt.datasets.sources import load_dataset

data_app = typer.Typer(
    help="Datasets: the subbands of an observation or of a pipeline stage, with sizes, "
    "frequencies and locations — list, check, compare, get, remove (LEDAMA's data tools).",
    no_args_is_help=True,
)

SourceArgument = Annotated[
    str,
    typer.Argument(
        help="A dataset file (.jsonl/.csv, as -o writes), or a list file (an srm.txt from "
        "the LTA, or any URLs one per line).",
        show_default=False,
    ),
]
SubbandsOption = Annotated[
    str | None,
    typer.Option(
        "--subbands",
        help="Only these subbands, as ranges: 100..107,110 or 0..243..2.",
        show_default=False,
    ),
]


def selected(source: str, subbands: str | None) -> Dataset:
    """The dataset ``source`` names, narrowed to ``subbands`` when given."""
    dataset = load_dataset(source)
    return select_subbands(dataset, subbands) if subbands else dataset


def _size(value: int | None) -> str:
    if value is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1000  # type: ignore[assignment]
    return str(value)


def dataset_table(dataset: Dataset, summary: DatasetSummary, shown: int = 400) -> Table:
    """One row per entry (the first ``shown``), totals in the caption."""
    freq = (
        f"{summary.frequency_low_hz / 1e6:.2f}-{summary.frequency_high_hz / 1e6:.2f} MHz"
        if summary.frequency_low_hz is not None and summary.frequency_high_hz is not None
        else "frequencies unknown"
    )
    caption = (
        f"{summary.files} file(s), {_size(summary.bytes)}"
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
        table.add_row(
            entry.label if entry.subband is None else f"{entry.subband}",
            f"{entry.frequency_hz / 1e6:.3f}" if entry.frequency_hz else "",
            _size(entry.size),
            entry.site or "",
            entry.name,
        )
    if len(dataset.entries) > shown:
        table.add_row("...", "", "", "", f"{len(dataset.entries) - shown} more (--json: all)")
    return table


@data_app.command("list")
def list_command(
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
    as_json: Annotated[
        bool, typer.Option("--json", help="The dataset and totals as JSON.")
    ] = False,
) -> None:
    """Show a dataset as a table with totals: files, bytes, subbands present and missing,
    frequency coverage.

    Examples:

        gridlrt data list srm.txt --subbands 100..107

        gridlrt data list srm.txt -o L700701.jsonl

        gridlrt data list L700701.jsonl --json
    """
    dataset = selected(source, subbands)
    summary = summarize(dataset)
    if output is not None:
        write_dataset(output, dataset)
    if as_json:
        typer.echo(
            '{"dataset": '
            + dataset.model_dump_json()
            + ', "summary": '
            + summary.model_dump_json()
            + "}"
        )
        return
    console.print(dataset_table(dataset, summary))
    if output is not None:
        console.print(f"written: {output}")
