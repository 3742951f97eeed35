"""A pipeline as a picture: stages as boxes in columns by depth, edges from parents to children.

:func:`dag_layout` is pure (where each box goes, which edges join them); :func:`draw_dag`
renders it to a PNG with matplotlib (``gridlrt[demo]``), for ``gridlrt pipeline show --png``
and the notebook. Input lists are boxes too, in the first column, so the picture reads from
the archive files on the left to the images on the right.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from gridlrt.extras import needs_extra
from gridlrt.pipelines.definition import Pipeline
from gridlrt.pipelines.expand import StagePlan


class Box(BaseModel):
    name: str
    label: str
    column: int
    row: float
    kind: str  # input, scatter, one-to-one, gather


class Edge(BaseModel):
    parent: str
    child: str
    style: str  # over (the token's input) or after (an extra input)


def dag_layout(
    pipeline: Pipeline, plan: Sequence[StagePlan] | None = None
) -> tuple[list[Box], list[Edge]]:
    """Boxes (each stage at column 1 + its depth, an input list just left of the first stage
    that reads it, rows centred per column) and the edges between them."""
    counts = {p.name: p.tokens for p in plan or []}
    columns: dict[int, list[tuple[str, str, str]]] = {}
    for name in pipeline.inputs:  # just left of the first stage that reads it
        readers = [1 + pipeline.depth(s) for s in pipeline.stages if s.over == name]
        column = min(readers, default=1) - 1
        columns.setdefault(column, []).append((name, f"{name}\n(input list)", "input"))
    edges: list[Edge] = []
    for stage in pipeline.stages:
        kind = pipeline.kind(stage)
        how = {"scatter": "per file", "one-to-one": "one per token"}.get(
            kind, f"gather {stage.gather}"
        )
        tokens = f", {counts[stage.name]} tokens" if stage.name in counts else ""
        label = f"{stage.name}\n[{stage.step}]\n{how}{tokens}"
        columns.setdefault(1 + pipeline.depth(stage), []).append((stage.name, label, kind))
        if stage.over is not None:
            edges.append(Edge(parent=stage.over, child=stage.name, style="over"))
        for parent in stage.after:
            if parent != stage.over:
                edges.append(Edge(parent=parent, child=stage.name, style="after"))
    tallest = max(len(items) for items in columns.values())
    boxes = [
        Box(name=name, label=label, column=column, row=(tallest - len(items)) / 2 + i, kind=kind)
        for column, items in sorted(columns.items())
        for i, (name, label, kind) in enumerate(items)
    ]
    return boxes, edges


COLOURS = {"input": "#dddddd", "scatter": "#cfe2f3", "one-to-one": "#d9ead3", "gather": "#fce5cd"}


def draw_dag(pipeline: Pipeline, path: Path, plan: Sequence[StagePlan] | None = None) -> Path:
    """The pipeline's DAG as a PNG at ``path``."""
    boxes, edges = dag_layout(pipeline, plan)
    with needs_extra("gridlrt pipeline show --png"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import FancyBboxPatch

    width = max(b.column for b in boxes) + 1
    height = max(b.row for b in boxes) + 1
    fig, ax = plt.subplots(figsize=(2.6 * width + 0.5, 1.3 * height + 0.8))
    where = {b.name: (b.column * 2.6, -b.row * 1.3) for b in boxes}
    for edge in edges:
        (x0, y0), (x1, y1) = where[edge.parent], where[edge.child]
        ax.annotate(
            "",
            xy=(x1 - 1.0, y1),
            xytext=(x0 + 1.0, y0),
            arrowprops={
                "arrowstyle": "-|>",
                "color": "black" if edge.style == "over" else "#888888",
                "linestyle": "-" if edge.style == "over" else "--",
                "connectionstyle": "arc3,rad=0.0",
            },
            zorder=1,
        )
    for box in boxes:
        x, y = where[box.name]
        ax.add_patch(
            FancyBboxPatch(
                (x - 1.0, y - 0.45),
                2.0,
                0.9,
                boxstyle="round,pad=0.02",
                facecolor=COLOURS.get(box.kind, "white"),
                edgecolor="black",
                zorder=2,
            )
        )
        ax.text(x, y, box.label, ha="center", va="center", fontsize=8, zorder=3)
    ax.set_xlim(-1.2, 2.6 * (width - 1) + 1.2)
    ax.set_ylim(-1.3 * (height - 1) - 0.7, 0.7)
    ax.axis("off")
    title = pipeline.name + (f": {pipeline.description}" if pipeline.description else "")
    ax.set_title(f"{title}   (solid: runs over; dashed: waits for, extra input)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
