"""``gridlrt ms ...``: look inside measurement sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gridlrt.cli.common import console
from gridlrt.extras import needs_extra

ms_app = typer.Typer(help="Inspect LOFAR measurement sets (python-casacore).", no_args_is_help=True)


@ms_app.command("info")
def info(
    path: Annotated[
        Path, typer.Argument(help="Measurement set directory (e.g. L229507_SB100_uv.MS).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    history: Annotated[
        int, typer.Option("--history", min=0, help="History entries to show (0: none).")
    ] = 5,
) -> None:
    """Observation id, UTC time range, stations and baselines, channels, bandwidth, central
    frequency, integration time, data columns (DATA, CORRECTED_DATA, MODEL_DATA) and
    processing history of a measurement set.

    Example: gridlrt ms info L229507_SB100_uv.dppp.MS --json
    """
    with needs_extra("gridlrt ms info"):  # numpy + casacore only when asked
        from gridlrt.worker.msinfo import ms_info

        summary = ms_info(path)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    mhz = 1e6
    rows = {
        "measurement set": summary.path,
        "telescope": summary.telescope,
        "observation": f"L{summary.observation_id}" if summary.observation_id else "unknown",
        "target": summary.target or "",
        "time (UTC)": f"{summary.start_utc:%Y-%m-%d %H:%M:%S} - {summary.end_utc:%H:%M:%S} "
        f"({summary.duration_s:.0f} s)",
        "timeslots": f"{summary.timeslots} x {summary.integration_s:.3f} s",
        "stations": f"{len(summary.stations)}: {', '.join(summary.stations)}",
        "baselines": f"{summary.baselines}"
        + (" + autocorrelations" if summary.autocorrelations else ""),
        "channels": f"{summary.channels} x {summary.channel_width_hz / 1e3:.3f} kHz",
        "bandwidth": f"{summary.bandwidth_hz / mhz:.6f} MHz"
        + (f" ({summary.subband})" if summary.subband else ""),
        "central frequency": f"{summary.central_frequency_hz / mhz:.6f} MHz",
        "correlations": " ".join(summary.correlations),
        "data columns": ", ".join(summary.data_columns) or "none",
        "rows": str(summary.rows),
    }
    for key, value in rows.items():
        grid.add_row(key, value)
    console.print(grid)
    for entry in summary.history[-history:] if history else []:
        when = f"{entry.time_utc:%Y-%m-%d %H:%M:%S}" if entry.time_utc else ""
        console.print(f"  [dim]{when}[/] {entry.application}: {entry.message}", highlight=False)
