"""The demo's pictures, drawn with matplotlib's Figure API (a UI-node dependency only).

* :func:`plot_progress` - the single-step demo: tokens done over time and each token's phases;
* :func:`plot_stage_progress` - a pipeline run: tokens done over time, one line per stage;
* :func:`plot_solutions` - the calibrator's solutions: phase against frequency per station
  with the fitted (and the injected) clock, and amplitudes;
* :func:`plot_images` - the band images, the injected sources marked.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridlrt.extras import needs_extra
from gridlrt.lofar_names import name_fields
from gridlrt.tokens import Token, TokenStatus

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gridlrt.demo.observations import Truth
    from gridlrt.reduction.measure import ImageMeasurement


def subband_of(token: Token) -> int | None:
    """The subband number in the LOFAR name of the token's input, if it has one."""
    fields = name_fields(str(token.input)) or {}
    value = fields.get("subband")
    return int(value) if value is not None else None


def plot_progress(tokens: list[Token], path: Path, title: str = "") -> Path:
    """A PNG of the run: tokens done over time (top) and each token's last attempt as a bar
    split into download, processing and upload, one row per subband (bottom)."""
    with needs_extra("the demo's plot"):  # matplotlib: gridlrt[demo]
        from matplotlib.figure import Figure  # no pyplot: no global backend state is touched
        from matplotlib.ticker import MaxNLocator

    attempts = [(t, t.attempts[-1]) for t in tokens if t.attempts and t.attempts[-1].ended]
    start = min((a.started for _, a in attempts), default=time.time())
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 1.6])
    ends = sorted(a.ended - start for t, a in attempts if t.status is TokenStatus.DONE and a.ended)
    top.step([0.0, *ends], list(range(len(ends) + 1)), where="post", color="tab:blue")
    top.set_ylim(0, max(len(tokens), 1) + 0.5)
    top.set_xlim(left=0)
    top.set_ylabel("tokens done")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_title(title or f"{len(ends)} of {len(tokens)} tokens done")
    top.grid(alpha=0.3)
    colours = {"download": "tab:cyan", "run": "tab:orange", "upload": "tab:green"}
    pilots = sorted({a.pilot for _, a in attempts})
    labels = []
    for row, (token, attempt) in enumerate(attempts):
        left = attempt.started - start + attempt.timings.get("claim", 0.0)
        for phase, colour in colours.items():
            width = attempt.timings.get(phase, 0.0)
            if phase == "run":
                width += attempt.timings.get("validate", 0.0)
            bottom.barh(row, width, left=left, color=colour, label=phase if row == 0 else None)
            left += width
        pilot = pilots.index(attempt.pilot) + 1 if attempt.pilot in pilots else 0
        subband = subband_of(token)
        labels.append(f"SB{subband:03d} (p{pilot})" if subband is not None else token.id)
    bottom.set_yticks(range(len(labels)), labels, fontsize=8)
    bottom.invert_yaxis()
    bottom.set_xlabel("seconds since the first token was claimed")
    bottom.set_xlim(left=0)
    bottom.grid(axis="x", alpha=0.3)
    if attempts:
        bottom.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    fig.savefig(part, dpi=110, format="png")
    part.replace(path)
    return path


def plot_stage_progress(
    tokens: list[Token], stages: list[str], path: Path, title: str = ""
) -> Path:
    """A PNG of a pipeline run: tokens done over time, one line per stage (in ``stages``'
    order), from each token's last attempt, in seconds since the run's first claim."""
    with needs_extra("the demo's plot"):
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

    last = {t.id: t.attempts[-1] for t in tokens if t.attempts}
    start = min((a.started for a in last.values()), default=time.time())
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    axes = fig.subplots()
    most = 1
    for stage in stages:
        mine = [t for t in tokens if t.stage == stage]
        most = max(most, len(mine))
        ends = sorted(
            last[t.id].ended - start  # type: ignore[operator]  # ended is set: filtered below
            for t in mine
            if t.status is TokenStatus.DONE and t.id in last and last[t.id].ended is not None
        )
        first = min((last[t.id].started - start for t in mine if t.id in last), default=0.0)
        axes.step(
            [first, *ends],
            list(range(len(ends) + 1)),
            where="post",
            label=f"{stage} ({len(ends)}/{len(mine)})",
            linewidth=2,
        )
    axes.set_ylim(0, most + 0.5)
    axes.set_xlim(left=0)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("seconds since the first token was claimed")
    axes.set_ylabel("tokens done")
    axes.set_title(title or "tokens done over time, per stage")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _wrap(phase: float) -> float:
    """An angle in (-pi, pi]."""
    wrapped = math.remainder(phase, 2 * math.pi)
    return math.pi if wrapped == -math.pi else wrapped


def _wrapped_line(phases: list[float]) -> list[float]:
    """Wrapped phases with a gap (NaN) where they jump by a turn: no vertical line drawn."""
    line: list[float] = []
    for phase in phases:
        if line and abs(phase - line[-1]) > math.pi:
            line.append(math.nan)
        line.append(phase)
    return line


def _frequencies(nu: Any, line: list[float]) -> list[float]:
    """MHz for a :func:`_wrapped_line` of phases at ``nu`` (Hz): a NaN gap repeats its
    neighbour's frequency."""
    found: list[float] = []
    values = iter(float(f) / 1e6 for f in nu)
    for phase in line:
        found.append(found[-1] if math.isnan(phase) else next(values))
    return found


def plot_solutions(summary: Path, truth: Truth, path: Path) -> Path:
    """A PNG of cal-solve's solutions (its ``solutions.json``): per station, the phase of each
    calibrator subband against frequency with the fitted clock's line (solid) and the injected
    one (dashed), both relative to the reference station; below, each station's amplitude
    against frequency with the injected amplitude (dashed)."""
    with needs_extra("the demo's plot"):
        import numpy as np
        from matplotlib.figure import Figure

        from gridlrt.reduction.solve import CalibrationSummary

    solved = CalibrationSummary.model_validate_json(summary.read_text())
    stations = solved.stations
    columns = 4
    rows = math.ceil(len(stations) / columns)
    fig = Figure(figsize=(12, 2.1 * rows + 3.2), layout="constrained")
    grid = fig.add_gridspec(rows + 2, columns)
    nu = np.linspace(solved.freq_min_hz, solved.freq_max_hz, 200)
    reference = truth.station(solved.reference_station)
    ref_clock = reference.clock_s if reference is not None else 0.0
    ref_phase = reference.phase_rad if reference is not None else 0.0
    ref_solved = next((s for s in stations if s.name == solved.reference_station), None)
    ref_solved_clock = ref_solved.clock_s or 0.0 if ref_solved is not None else 0.0
    colours = [f"C{i % 10}" for i in range(len(stations))]
    for index, station in enumerate(stations):
        axes = fig.add_subplot(grid[index // columns, index % columns])
        freqs = [p.freq_hz / 1e6 for p in station.points]
        phases = [p.phase_rad[0] for p in station.points]
        axes.plot(
            [f for f, ph in zip(freqs, phases, strict=True) if ph is not None],
            [ph for ph in phases if ph is not None],
            "o",
            color=colours[index],
            markersize=4,
        )
        injected = truth.station(station.name)
        if injected is not None:
            relative = injected.clock_s - ref_clock
            model = [_wrap(injected.phase_rad - ref_phase + 2 * math.pi * f * relative) for f in nu]
            line = _wrapped_line(model)
            axes.plot(_frequencies(nu, line), line, "--", color="grey", linewidth=1)
        label = "no clock"
        if station.clock_s is not None and station.phase_offset_rad[0] is not None:
            offset = station.phase_offset_rad[0]
            clock = station.clock_s - ref_solved_clock
            fitted = _wrapped_line([_wrap(offset + 2 * math.pi * f * clock) for f in nu])
            axes.plot(_frequencies(nu, fitted), fitted, "-", color=colours[index], linewidth=1)
            label = f"clock {clock * 1e9:+.1f} ns"
        axes.set_ylim(-math.pi - 0.3, math.pi + 0.3)
        axes.set_title(f"{station.name}: {label}", fontsize=8)
        axes.tick_params(labelsize=7)
        if index % columns == 0:
            axes.set_ylabel("phase (rad)", fontsize=8)
    amplitudes = fig.add_subplot(grid[rows:, :])
    for index, station in enumerate(stations):
        points = [(p.freq_hz / 1e6, p.amplitude[0]) for p in station.points if p.amplitude[0]]
        amplitudes.plot(
            [f for f, _ in points],
            [a for _, a in points],
            "o-",
            color=colours[index],
            markersize=3,
            linewidth=1,
            label=station.name,
        )
        injected = truth.station(station.name)
        if injected is not None:
            amplitudes.axhline(injected.mean_amplitude, color=colours[index], ls="--", lw=0.8)
    amplitudes.set_xlabel("frequency (MHz)")
    amplitudes.set_ylabel("amplitude")
    amplitudes.set_title("amplitudes per subband (dashed: injected)", fontsize=9)
    amplitudes.legend(fontsize=7, ncol=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    amplitudes.grid(alpha=0.3)
    fig.suptitle(
        f"calibrator solutions: phase against frequency relative to {solved.reference_station} "
        "with the fitted clock (solid) and the injected one (dashed)",
        fontsize=10,
    )
    return _save(fig, path)


def plot_images(
    bands: list[tuple[str, Path]],
    truth: Truth,
    path: Path,
    measured: dict[str, ImageMeasurement] | None = None,
) -> Path:
    """A PNG of the band images, one panel per band (FITS ``(label, path)``), with the injected
    sources circled and named, and where they were measured marked ``+``."""
    with needs_extra("the demo's plot"):
        import numpy as np
        from matplotlib.figure import Figure

        from gridlrt.reduction.measure import celestial_wcs, load_image

    fig = Figure(figsize=(5.2 * len(bands), 5.4), layout="constrained")
    panels = fig.subplots(1, len(bands), squeeze=False)[0]
    for axes, (band, fits) in zip(panels, bands, strict=True):
        plane, header = load_image(fits)
        wcs = celestial_wcs(header)
        low, high = np.nanpercentile(plane, [1.0, 99.9])
        axes.imshow(plane, origin="lower", cmap="inferno", vmin=low, vmax=high)
        for source in truth.target.sources:
            x, y = (float(v) for v in wcs.world_to_pixel_values(source.ra_deg, source.dec_deg))
            axes.plot(x, y, "o", mfc="none", mec="cyan", ms=14, mew=1.2)
            axes.annotate(source.name, (x, y), xytext=(9, 9), textcoords="offset points",
                          color="cyan", fontsize=8)  # fmt: skip
        found = measured.get(band) if measured is not None else None
        for seen in found.sources if found is not None else []:
            axes.plot(seen.x, seen.y, "+", color="lime", ms=8, mew=1.2)
        frequency = next(
            (
                str(header[f"CRVAL{i}"])
                for i in range(3, 5)
                if str(header.get(f"CTYPE{i}", "")).startswith("FREQ")
            ),
            "",
        )
        mhz = f", {float(frequency) / 1e6:.2f} MHz" if frequency else ""
        axes.set_title(f"{band}{mhz}", fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
    fig.suptitle(
        f"{truth.target.name}: band images (circles: injected sources, +: measured)", fontsize=10
    )
    return _save(fig, path)
