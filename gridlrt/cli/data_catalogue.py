"""``gridlrt data find`` and ``gridlrt data quality``: the dataset catalogue the pilots write
(:mod:`gridlrt.datasets.catalogue`) — what every uploaded measurement set holds, with no file
access — and the flagged fraction per subband at a glance.

Plain functions, registered on ``data_app`` in :mod:`gridlrt.cli.data`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

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
from gridlrt.datasets import catalogue
from gridlrt.datasets.model import Dataset, select_subbands, summarize, write_dataset
from gridlrt.datasets.quality import (
    DEFAULT_THRESHOLD,
    bar,
    parse_threshold,
    plot_quality,
    quality_rows,
)
from gridlrt.errors import InputError
from gridlrt.lofar_names import name_fields
from gridlrt.tokens import open_pool

ObsidOption = Annotated[
    str | None,
    typer.Option("--obsid", help="Observation: L700701 or 700701.", show_default=False),
]
StepOption = Annotated[
    str | None,
    typer.Option("--step", help="Made by this step (e.g. average).", show_default=False),
]
PipelineOption = Annotated[
    str | None,
    typer.Option("--pipeline", help="Made by this pipeline run.", show_default=False),
]
StageOption = Annotated[
    str | None,
    typer.Option("--stage", help="Made by this stage of the run.", show_default=False),
]
FreqOption = Annotated[
    str | None,
    typer.Option(
        "--freq",
        help="Centre frequency within this range: 110..130MHz, 120MHz, 150.. (MHz when no unit).",
        show_default=False,
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "-o", "--output", help="Also write the dataset here (.jsonl or .csv).", show_default=False
    ),
]


def _obsid(text: str | None) -> int | None:
    if text is None:
        return None
    raw = text.strip()
    digits = raw[1:] if raw[:1] in ("L", "l") else raw
    if not digits.isdigit():
        found = name_fields(raw).get("obsid")
        if found is None:
            raise InputError(f"--obsid {text!r}: give an observation such as L700701")
        digits = found
    return int(digits)


def make_query(
    obsid: str | None,
    step: str | None,
    pipeline: str | None,
    stage: str | None,
    freq: str | None,
) -> catalogue.Query:
    """The catalogue query the options ask for (``--stage`` needs ``--pipeline``)."""
    if stage is not None and pipeline is None:
        raise InputError("--stage needs --pipeline RUN (stage names repeat across runs)")
    low, high = catalogue.parse_frequency_range(freq) if freq is not None else (None, None)
    return catalogue.Query(
        obsid=_obsid(obsid),
        step=step,
        pipeline=pipeline,
        stage=stage,
        freq_low_hz=low,
        freq_high_hz=high,
    )


def _catalogued(ctx: typer.Context, pool: str | None, query: catalogue.Query) -> Dataset:
    with open_pool(settings(ctx, pool)) as opened:
        return catalogue.find(opened, query)


def find_command(
    ctx: typer.Context,
    obsid: ObsidOption = None,
    step: StepOption = None,
    pipeline: PipelineOption = None,
    stage: StageOption = None,
    freq: FreqOption = None,
    subbands: SubbandsOption = None,
    output: OutputOption = None,
    as_json: JsonOption = False,
    pool: PoolOption = None,
) -> None:
    """Find catalogued measurement sets: what the pilots recorded of every output they
    uploaded (frequency, channels, time range, stations, flagged fraction, size, checksum,
    the step, run and stage that made it, its parents). No storage is touched. Shown as
    ``data list`` shows a dataset; -o writes it for ``data get``, ``check``, ``rm``.

    Examples:

        gridlrt data find --pipeline run1 --stage average

        gridlrt data find --obsid L700701 --step flag-average --freq 110..130MHz

        gridlrt data find --obsid L700701 -o L700701-averaged.jsonl

        gridlrt data find --pipeline run1 --json
    """
    query = make_query(obsid, step, pipeline, stage, freq)
    dataset = _catalogued(ctx, pool, query)
    if subbands:
        dataset = select_subbands(dataset, subbands)
    summary = summarize(dataset)
    if output is not None:
        write_dataset(output, dataset)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "dataset": dataset.model_dump(mode="json"),
                    "summary": summary.model_dump(mode="json"),
                }
            )
        )
        return
    if not dataset.entries:
        err_console.print(f"nothing catalogued matches {escape(query.describe())}")
    from gridlrt.cli.data import dataset_table  # data.py registers this module at its end

    console.print(dataset_table(dataset, summary))
    if output is not None:
        console.print(f"written: {output}")


def quality_table(dataset: Dataset, threshold: float) -> Table:
    """One row per entry: subband, frequency, flagged fraction with a bar (red above the
    threshold); totals in the caption."""
    rows = quality_rows(dataset, threshold)
    known = [r for r in rows if r.flagged_fraction is not None]
    bad = [r for r in known if r.bad]
    caption = (
        f"{len(rows)} file(s), {len(known)} with a flagged fraction; "
        f"{len(bad)} flagged above {100 * threshold:g} %"
        + (f": {', '.join(r.label for r in bad[:12])}" if bad else "")
        + (" ..." if len(bad) > 12 else "")
        + (f"; mean {100 * sum(r.flagged_fraction or 0 for r in known) / len(known):.1f} %"
           if known else "")
    )  # fmt: skip
    table = Table(title=dataset.name or dataset.source, caption=caption, caption_justify="left")
    for column in ("subband", "MHz", "flagged", "", "name"):
        table.add_column(
            column, justify="right" if column in ("subband", "MHz", "flagged") else "left"
        )
    for row in rows:
        style = "red" if row.bad else None
        table.add_row(
            row.label if row.subband is None else str(row.subband),
            f"{row.frequency_hz / 1e6:.3f}" if row.frequency_hz else "",
            "?" if row.flagged_fraction is None else f"{100 * row.flagged_fraction:.1f} %",
            bar(row.flagged_fraction),
            escape(row.url.rsplit("/", 1)[-1]),
            style=style,
        )
    return table


def quality_command(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Argument(
            help="A dataset (a file data find -o wrote, or any data list source); without it, "
            "the catalogue entries the options select.",
            show_default=False,
        ),
    ] = None,
    pipeline: PipelineOption = None,
    stage: StageOption = None,
    obsid: ObsidOption = None,
    step: StepOption = None,
    freq: FreqOption = None,
    threshold: Annotated[
        str,
        typer.Option(
            "--threshold",
            help="Flagged above this is bad (highlighted in red): 0.5 or 50%.",
        ),
    ] = f"{100 * DEFAULT_THRESHOLD:g}%",
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also draw the plot into this PNG file.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
    pool: PoolOption = None,
) -> None:
    """The flagged fraction per subband, from the catalogue (or a dataset that records it), as
    a table with a bar per subband and optionally a PNG: see bad subbands before gathering
    them into bands. Subbands flagged above --threshold are marked.

    Examples:

        gridlrt data quality --pipeline run1 --stage flag-average

        gridlrt data quality --pipeline run1 --stage flag-average --png flags.png --threshold 30%

        gridlrt data quality L700701-averaged.jsonl --json
    """
    limit = parse_threshold(threshold)
    if source is not None:
        if any(v is not None for v in (pipeline, stage, obsid, step, freq)):
            raise InputError(
                "give a SOURCE or catalogue options (--pipeline, --stage, ...), not both"
            )
        from gridlrt.cli.data import selected, source_context  # data.py registers this module

        dataset = selected(source, None, source_context(ctx, pool))
    else:
        query = make_query(obsid, step, pipeline, stage, freq)
        if query.key() is None and query.freq_low_hz is None and query.freq_high_hz is None:
            raise InputError(
                "say which measurement sets: a SOURCE, or --pipeline RUN --stage STAGE "
                "(or --obsid, --step, --freq)"
            )
        dataset = _catalogued(ctx, pool, query)
    rows = quality_rows(dataset, limit)
    if png is not None:
        plot_quality(rows, png, limit, title=dataset.name or dataset.source)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "name": dataset.name,
                    "threshold": limit,
                    "rows": [r.model_dump(mode="json") for r in rows],
                    "bad": [r.label for r in rows if r.bad],
                }
            )
        )
        return
    if not rows:
        err_console.print("no measurement sets to show")
    console.print(quality_table(dataset, limit))
    if png is not None:
        console.print(f"plot: {png}")
