"""Measurement-set inspection with python-casacore: LEDAMA's MSInfo as a typed model.

:func:`ms_info` reads what a LOFAR user asks of a measurement set — observation id, UTC time
range, stations and baselines, channels, bandwidth and central frequency, integration time,
which data columns exist, processing history — without loading visibilities. ``gridlrt ms
info`` prints it, and the worker validates step outputs with the same code.

The flagged fraction (:func:`flagged_fraction`; ``ms_info(path, flags=True)``) is the one
figure that reads visibility-sized data: the ``FLAG`` column, in chunks of rows (bounded
memory), and past a budget of cells only evenly spaced chunks across the observation (a
sample), so it stays cheap next to the DP3 step that wrote the set. The worker records it
with the rest in the dataset catalogue (:func:`catalogue_fields`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from gridlrt.errors import InputError
from gridlrt.extras import needs_extra

MJD_EPOCH = datetime(1858, 11, 17, tzinfo=UTC)
DATA_COLUMNS = ("DATA", "CORRECTED_DATA", "MODEL_DATA")
CORR_NAMES = {5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX", 10: "XY", 11: "YX", 12: "YY"}
#: FLAG cells read at once (one byte each in memory), and at most per measurement set: beyond
#: that, evenly spaced chunks are a sample (a 16-channel LOFAR subband of 8 h at 1 s and
#: 60 stations holds some 2e9 cells)
FLAG_CHUNK_CELLS = 8 * 2**20
FLAG_BUDGET_CELLS = 128 * 2**20


class HistoryEntry(BaseModel):
    time_utc: datetime | None
    application: str
    message: str


class MSInfo(BaseModel):
    """What :func:`ms_info` reports about one measurement set."""

    path: str
    telescope: str
    observation_id: str | None
    target: str | None
    start_utc: datetime
    end_utc: datetime
    timeslots: int
    integration_s: float
    stations: list[str]
    baselines: int  # cross-correlations
    autocorrelations: bool
    rows: int
    channels: int
    channel_width_hz: float
    bandwidth_hz: float
    central_frequency_hz: float
    subband: str | None
    correlations: list[str]
    data_columns: list[str]
    history: list[HistoryEntry]
    flagged_fraction: float | None = None  # read only when asked (flags=True)

    @property
    def duration_s(self) -> float:
        return (self.end_utc - self.start_utc).total_seconds()


def mjd_seconds_to_utc(seconds: float) -> datetime:
    return MJD_EPOCH + timedelta(seconds=float(seconds))


def _tables() -> Any:
    with needs_extra("reading a measurement set"):
        from casacore import tables  # imported on use: python-casacore is heavy

    return tables


def _open(path: Path, sub: str | None = None) -> Any:
    name = str(path) if sub is None else f"{path}::{sub}"
    return _tables().table(name, readonly=True, ack=False)


def ms_info(path: Path, *, history_limit: int = 50, flags: bool = False) -> MSInfo:
    """Read the summary of the measurement set at ``path``; with ``flags``, also the flagged
    fraction (reads the FLAG column, see :func:`flagged_fraction`)."""
    if not (path / "table.dat").is_file():
        raise InputError(f"{path}: not a measurement set (no table.dat in it)")
    try:
        info = _read(path, history_limit)
        if flags:
            info.flagged_fraction = _flagged_fraction(path)
    except RuntimeError as exc:  # casacore's errors
        raise InputError(f"{path}: cannot read measurement set ({exc})") from exc
    return info


def flagged_fraction(
    path: Path, *, budget_cells: int = FLAG_BUDGET_CELLS, chunk_cells: int = FLAG_CHUNK_CELLS
) -> float | None:
    """The fraction of the ``FLAG`` column that is set (None when the set has no FLAG column
    or no rows). Read ``chunk_cells`` at a time; when the column holds more than
    ``budget_cells``, only evenly spaced chunks of about that many cells in all are read: a
    sample over the whole time range (rows are in time order)."""
    if not (path / "table.dat").is_file():
        raise InputError(f"{path}: not a measurement set (no table.dat in it)")
    try:
        return _flagged_fraction(path, budget_cells, chunk_cells)
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read the flags ({exc})") from exc


def flag_chunks(rows: int, cells_per_row: int, budget_cells: int, chunk_cells: int) -> list[int]:
    """First rows of the chunks :func:`flagged_fraction` reads (each ``chunk_cells //
    cells_per_row`` rows): all of them within the budget, else evenly spaced ones."""
    chunk = max(1, chunk_cells // max(1, cells_per_row))
    starts = list(range(0, rows, chunk))
    wanted = max(1, budget_cells // (chunk * max(1, cells_per_row)))
    if len(starts) <= wanted:
        return starts
    step = len(starts) / wanted
    return [starts[int(i * step)] for i in range(wanted)]


def _flagged_fraction(
    path: Path, budget_cells: int = FLAG_BUDGET_CELLS, chunk_cells: int = FLAG_CHUNK_CELLS
) -> float | None:
    with _open(path) as main:
        rows = main.nrows()
        if "FLAG" not in main.colnames() or rows == 0:
            return None
        per_row = int(np.prod(np.shape(main.getcell("FLAG", 0)))) or 1
        chunk = max(1, chunk_cells // per_row)
        flagged = cells = 0
        for start in flag_chunks(rows, per_row, budget_cells, chunk_cells):
            block = main.getcol("FLAG", startrow=start, nrow=min(chunk, rows - start))
            flagged += int(np.count_nonzero(block))
            cells += int(block.size)
    return flagged / cells if cells else None


def catalogue_fields(path: Path) -> dict[str, Any]:
    """What the dataset catalogue records of a measurement set (the fields of
    :class:`gridlrt.datasets.model.DatasetEntry` of the same names): centre frequency,
    bandwidth, channels, time range (MJD seconds), stations, flagged fraction, and the
    observation id when the set names it. :class:`InputError` when it cannot be read."""
    info = ms_info(path, history_limit=0, flags=True)
    fields: dict[str, Any] = {
        "frequency_hz": info.central_frequency_hz,
        "bandwidth_hz": info.bandwidth_hz,
        "channels": info.channels,
        "start_time": (info.start_utc - MJD_EPOCH).total_seconds(),
        "end_time": (info.end_utc - MJD_EPOCH).total_seconds(),
        "stations": len(info.stations),
        "flagged_fraction": info.flagged_fraction,
    }
    if info.observation_id and info.observation_id.isdigit():
        fields["obsid"] = int(info.observation_id)
    return fields


def _read(path: Path, history_limit: int) -> MSInfo:
    with _open(path) as main:
        columns = set(main.colnames())
        rows = main.nrows()
        times = np.unique(main.getcol("TIME")) if rows else np.array([0.0])
        interval = float(np.median(main.getcol("INTERVAL"))) if rows else 0.0
        ant1 = main.getcol("ANTENNA1") if rows else np.array([], dtype=int)
        ant2 = main.getcol("ANTENNA2") if rows else np.array([], dtype=int)
    pairs = {(int(a), int(b)) for a, b in zip(ant1, ant2, strict=True)}
    with _open(path, "ANTENNA") as antenna:
        stations = [str(n) for n in antenna.getcol("NAME")]
    with _open(path, "SPECTRAL_WINDOW") as spw:
        freqs = np.asarray(spw.getcol("CHAN_FREQ")[0], dtype=float)
        widths = np.asarray(spw.getcol("CHAN_WIDTH")[0], dtype=float)
        name = str(spw.getcol("NAME")[0]) if "NAME" in spw.colnames() else None
    with _open(path, "POLARIZATION") as pol:
        corr = [CORR_NAMES.get(int(c), str(c)) for c in pol.getcol("CORR_TYPE")[0]]
    with _open(path, "OBSERVATION") as obs:
        telescope = str(obs.getcol("TELESCOPE_NAME")[0])
        obs_id = (
            str(obs.getcol("LOFAR_OBSERVATION_ID")[0])
            if "LOFAR_OBSERVATION_ID" in obs.colnames()
            else None
        )
    target = None
    field_table = path / "FIELD"
    if field_table.is_dir():
        with _open(path, "FIELD") as fields:
            target = str(fields.getcol("NAME")[0]) if fields.nrows() else None
    half = interval / 2
    return MSInfo(
        path=str(path),
        telescope=telescope,
        observation_id=obs_id or None,
        target=target,
        start_utc=mjd_seconds_to_utc(float(times.min()) - half),
        end_utc=mjd_seconds_to_utc(float(times.max()) + half),
        timeslots=len(times),
        integration_s=interval,
        stations=stations,
        baselines=sum(1 for a, b in pairs if a != b),
        autocorrelations=any(a == b for a, b in pairs),
        rows=rows,
        channels=len(freqs),
        channel_width_hz=float(np.median(np.abs(widths))) if len(widths) else 0.0,
        bandwidth_hz=float(np.sum(np.abs(widths))),
        central_frequency_hz=float(np.mean(freqs)) if len(freqs) else 0.0,
        subband=name,
        correlations=corr,
        data_columns=[c for c in DATA_COLUMNS if c in columns],
        history=_history(path, history_limit),
    )


def _history(path: Path, limit: int) -> list[HistoryEntry]:
    if limit <= 0 or not (path / "HISTORY").is_dir():
        return []
    with _open(path, "HISTORY") as history:
        n = history.nrows()
        if n == 0:
            return []
        start = max(0, n - limit)
        times = history.getcol("TIME", startrow=start)
        apps = history.getcol("APPLICATION", startrow=start)
        messages = history.getcol("MESSAGE", startrow=start)
    return [
        HistoryEntry(
            time_utc=mjd_seconds_to_utc(t) if t > 0 else None,
            application=str(app),
            message=str(msg),
        )
        for t, app, msg in zip(times, apps, messages, strict=True)
    ]
