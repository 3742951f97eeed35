"""The pipeline picture's layout (pure): columns follow the DAG, every edge joins two boxes."""

from __future__ import annotations

from pathlib import Path

from gridlrt.pipelines.definition import load_pipeline
from gridlrt.pipelines.draw import dag_layout

EXAMPLE = Path(__file__).parents[2] / "gridlrt" / "data" / "pipelines" / "cal-target.toml"


def test_boxes_sit_right_of_their_parents_and_inputs_next_to_their_readers() -> None:
    pipeline = load_pipeline(EXAMPLE)
    boxes, edges = dag_layout(pipeline)
    column = {b.name: b.column for b in boxes}
    assert set(column) == {*pipeline.inputs, *(s.name for s in pipeline.stages)}
    for edge in edges:
        assert column[edge.parent] < column[edge.child], edge
    assert column["target"] == column["target_prep"] - 1  # not dragged across the picture
    assert {(e.parent, e.child, e.style) for e in edges} >= {
        ("cal_solve", "target_prep", "after"),
        ("target", "target_prep", "over"),
        ("target_prep", "band", "over"),
    }
    rows = [(b.column, b.row) for b in boxes]
    assert len(set(rows)) == len(rows)  # no two boxes on one spot
