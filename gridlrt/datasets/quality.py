"""Quality at a glance: the flagged fraction per subband, from the catalogue (or any dataset
whose entries know theirs), as rows for a table and as a PNG, so a user sees bad subbands
before gathering them into bands.

:func:`quality_rows` is pure; :func:`plot_quality` draws with matplotlib's Figure API (a
UI-node dependency, ``gridlrt[demo]``; imported only when asked).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel

from gridlrt.datasets.model import Dataset
from gridlrt.errors import InputError
from gridlrt.extras import needs_extra

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: flagged above this fraction: a bad subband, unless told otherwise
DEFAULT_THRESHOLD: Final = 0.5
BAR_WIDTH: Final = 20


class QualityRow(BaseModel):
    """One entry of the dataset: which subband, and how much of it is flagged."""

    label: str
    subband: int | None
    frequency_hz: float | None
    flagged_fraction: float | None
    bad: bool
    url: str


def parse_threshold(text: str) -> float:
    """``50%`` or ``0.5`` -> 0.5; :class:`InputError` unless within 0..1 (0..100 %)."""
    raw = text.strip()
    try:
        value = float(raw.removesuffix("%")) / (100 if raw.endswith("%") else 1)
    except ValueError:
        raise InputError(
            f"--threshold {text!r}: give a fraction (0.5) or a percentage (50%)"
        ) from None
    if not 0 <= value <= 1:
        raise InputError(f"--threshold {text!r}: must lie within 0..1 (or 0..100%)")
    return value


def quality_rows(dataset: Dataset, threshold: float = DEFAULT_THRESHOLD) -> list[QualityRow]:
    """One row per entry, in frequency order (then subband, label); ``bad``: flagged above
    ``threshold``. Entries that do not know their flagged fraction are kept (None), never
    bad."""
    rows = [
        QualityRow(
            label=entry.label,
            subband=entry.subband,
            frequency_hz=entry.frequency_hz,
            flagged_fraction=entry.flagged_fraction,
            bad=entry.flagged_fraction is not None and entry.flagged_fraction > threshold,
            url=entry.url,
        )
        for entry in dataset.entries
    ]
    return sorted(
        rows,
        key=lambda r: (
            r.frequency_hz if r.frequency_hz is not None else float("inf"),
            r.subband if r.subband is not None else -1,
            r.label,
        ),
    )


def bar(fraction: float | None, width: int = BAR_WIDTH) -> str:
    """``fraction`` as a text bar of ``width`` cells (eighths for the last one)."""
    if fraction is None:
        return ""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)


def quality_figure(rows: list[QualityRow], threshold: float, title: str = "") -> Figure:
    """Flagged fraction per subband as bars (above ``threshold`` in red), the threshold as a
    dashed line; x is the frequency in MHz when every row knows it, else the row's label."""
    with needs_extra("the quality plot"):  # matplotlib: gridlrt[demo]
        from matplotlib.figure import Figure  # no pyplot: no global backend state is touched

    known = [r for r in rows if r.flagged_fraction is not None]
    fig = Figure(figsize=(max(6.0, min(18.0, 0.25 * len(known) + 4)), 4), layout="constrained")
    ax = fig.subplots()
    by_frequency = bool(known) and all(r.frequency_hz is not None for r in known)
    values = [100 * (r.flagged_fraction or 0.0) for r in known]
    colours = ["tab:red" if r.bad else "tab:blue" for r in known]
    if by_frequency:
        xs = [(r.frequency_hz or 0.0) / 1e6 for r in known]
        spacing = min((b - a for a, b in pairwise(xs) if b > a), default=0.2)
        ax.bar(xs, values, width=0.8 * spacing, color=colours)
        ax.set_xlabel("frequency (MHz)")
    else:
        positions = list(range(len(known)))
        ax.bar(positions, values, color=colours)
        ax.set_xticks(positions, [r.label for r in known], rotation=90, fontsize="small")
    ax.axhline(100 * threshold, color="tab:red", linestyle="--", linewidth=1)
    ax.set_ylim(0, 105)
    ax.set_ylabel("flagged (%)")
    bad = sum(r.bad for r in known)
    ax.set_title(
        title or f"{len(known)} subband(s), {bad} flagged above {100 * threshold:g} %",
        fontsize="medium",
    )
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_quality(rows: list[QualityRow], path: Path, threshold: float, title: str = "") -> Path:
    """:func:`quality_figure` written to ``path`` as a PNG."""
    fig = quality_figure(rows, threshold, title)
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the plot ({exc.strerror})") from None
    return path
