"""The demo's picture: a PNG of a run, drawn with matplotlib (a UI-node dependency only)."""

from __future__ import annotations

import time
from pathlib import Path

from gridlrt.extras import needs_extra
from gridlrt.lofar_names import name_fields
from gridlrt.tokens import Token, TokenStatus


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
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    fig.savefig(part, dpi=110, format="png")
    part.replace(path)
    return path
