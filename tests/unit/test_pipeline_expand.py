"""gridlrt.pipelines.expand: a pipeline and its input lists become tokens that know their
parents and children, with stable ids, children before parents, and bands that keep their
boundaries when a subband is missing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gridlrt.errors import InputError
from gridlrt.pipelines.definition import Pipeline, load_pipeline, validate_pipeline
from gridlrt.pipelines.expand import Expansion, dag_text, expand
from gridlrt.tokens import Token, TokenStatus
from gridlrt.tokens.model import WAITING_LOCK

EXAMPLE = Path(__file__).parents[2] / "gridlrt" / "data" / "pipelines" / "cal-target.toml"
LTA = "srm://srm.grid.sara.nl/pnfs/grid.sara.nl/data/lofar/ops/projects/lc0_012"


def srm(obsid: int, sb: int, sap: int | None = None) -> str:
    part = f"_SAP{sap:03d}" if sap is not None else ""
    return f"{LTA}/{obsid}/L{obsid}{part}_SB{sb:03d}_uv.MS_abcdef12.tar"


def example() -> Pipeline:
    return load_pipeline(EXAMPLE)


def cal_target(target_subbands: list[int] | None = None, n_cal: int = 20) -> Expansion:
    subbands = range(25) if target_subbands is None else target_subbands
    return expand(
        example(),
        {
            "calibrator": [srm(123, sb) for sb in range(n_cal)],
            "target": [srm(124, sb) for sb in subbands],
        },
    )


def by_stage(expansion: Expansion) -> dict[str, list[Token]]:
    found: dict[str, list[Token]] = {}
    for token in expansion.tokens:
        assert token.stage is not None
        found.setdefault(token.stage, []).append(token)
    return found


def pipeline_of(text: str) -> Pipeline:
    import tomllib

    return validate_pipeline(tomllib.loads(text), "test.toml")


def test_counts_per_stage_and_plan() -> None:
    expansion = cal_target()
    counts = {stage: len(tokens) for stage, tokens in by_stage(expansion).items()}
    # 20 calibrator subbands, 1 solve, 25 target subbands, 10 subbands per band (2 MHz at a
    # 200 MHz clock: 25 subbands -> 3 bands), one image per band
    assert counts == {"cal_prep": 20, "cal_solve": 1, "target_prep": 25, "band": 3, "image": 3}
    assert [p.name for p in expansion.plan] == [
        "cal_prep", "cal_solve", "target_prep", "band", "image",
    ]  # fmt: skip
    assert {p.name: p.tokens for p in expansion.plan} == counts
    band = next(p for p in expansion.plan if p.name == "band")
    assert band.subbands_per_group == 10
    assert [(g.label, g.members) for g in band.groups] == [
        ("L124_SB000-009", 10), ("L124_SB010-019", 10), ("L124_SB020-029", 5),
    ]  # fmt: skip
    solve = next(p for p in expansion.plan if p.name == "cal_solve")
    assert solve.min_done == 0.9 and solve.parents == ["cal_prep"]
    assert [(g.label, g.members, g.subbands) for g in solve.groups] == [
        ("all", 20, list(range(20)))
    ]
    assert len(expansion.tokens) == sum(counts.values())
    assert len({t.id for t in expansion.tokens}) == len(expansion.tokens)


def test_scatter_tokens_carry_their_file_and_what_it_stands_for() -> None:
    tokens = by_stage(cal_target())["cal_prep"]
    first = tokens[0]
    assert first.id == "cal-target.cal_prep.L123_SB000"
    assert first.input == srm(123, 0)  # a string: one file
    assert first.group == {"label": "L123_SB000", "obsid": "123", "subbands": [0]}
    assert first.step == "flag-average" and first.parameters == {"freqstep": 4, "timestep": 2}
    assert first.pipeline == "cal-target" and first.stage == "cal_prep"
    sap = expand(
        pipeline_of(ONE_STAGE), {"files": [srm(7, 3, sap=2), srm(7, 3, sap=2), "file:///x/a.txt"]}
    )
    assert [t.id for t in sap.tokens] == [
        "one.prep.L7_SAP002_SB003", "one.prep.L7_SAP002_SB003_2", "one.prep.a.txt",
    ]  # fmt: skip
    assert sap.tokens[0].group == {
        "label": "L7_SAP002_SB003", "obsid": "7", "sap": "002", "subbands": [3],
    }  # fmt: skip
    assert sap.tokens[2].group == {"label": "a.txt"}


ONE_STAGE = """
name = "one"
[inputs]
files = "anything"
[[stage]]
name = "prep"
step = "command"
over = "files"
"""


@pytest.mark.parametrize("missing", [[13], [13, 20], [0], [9, 10, 11]])
def test_bands_keep_their_boundaries_when_subbands_are_missing(missing: list[int]) -> None:
    present = [sb for sb in range(25) if sb not in missing]
    stages = by_stage(cal_target(present))
    first = min(present)
    bands = stages["band"]
    # independent of the code under test: band k holds the present subbands of slot k
    expected: dict[int, list[int]] = {}
    for sb in present:
        expected.setdefault((sb - first) // 10, []).append(sb)
    assert [b.group["subbands"] for b in bands] == [expected[k] for k in sorted(expected)]
    for band, slot in zip(bands, sorted(expected), strict=True):
        low = first + slot * 10
        assert band.id == f"cal-target.band.L124_SB{low:03d}-{low + 9:03d}"
        assert band.depends is not None
        parents = band.depends.groups[0].ids
        assert parents == [f"cal-target.target_prep.L124_SB{sb:03d}" for sb in expected[slot]]
    assert len(stages["target_prep"]) == len(present)


def test_children_and_parents_agree_both_ways() -> None:
    expansion = cal_target([sb for sb in range(25) if sb != 13])
    tokens = {t.id: t for t in expansion.tokens}
    edges_down = {(p, t.id) for t in tokens.values() if t.depends for p in t.depends.parent_ids}
    edges_up = {(t.id, c) for t in tokens.values() for c in t.children}
    assert edges_down == edges_up
    assert all(p in tokens and c in tokens for p, c in edges_down)
    for token in tokens.values():
        assert len(token.children) == len(set(token.children))
    solve = tokens["cal-target.cal_solve.all"]
    # the solve feeds every target subband (its outputs: the extra input {cal_solve})
    assert solve.children == [t.id for t in by_stage(expansion)["target_prep"]]
    target = tokens["cal-target.target_prep.L124_SB000"]
    assert target.depends is not None
    assert [(g.name, g.ids) for g in target.depends.groups] == [
        ("cal_solve", ["cal-target.cal_solve.all"])
    ]
    assert target.depends.base_input == srm(124, 0)  # its own input, kept for promotion
    assert tokens["cal-target.image.L124_SB010-019"].depends.groups[0].ids == [  # type: ignore[union-attr]
        "cal-target.band.L124_SB010-019"
    ]


def test_every_child_comes_before_its_parents() -> None:
    expansion = cal_target()
    position = {t.id: i for i, t in enumerate(expansion.tokens)}
    pairs = [(c, t.id) for t in expansion.tokens for c in t.children]
    assert pairs  # there are edges to check
    assert all(position[child] < position[parent] for child, parent in pairs)


def test_roots_are_todo_and_the_rest_waits() -> None:
    expansion = cal_target()
    for token in expansion.tokens:
        if token.stage == "cal_prep":
            assert token.status is TokenStatus.TODO and token.lock == 0
            assert token.depends is None
        else:
            assert token.status is TokenStatus.WAITING and token.lock == WAITING_LOCK
            assert token.depends is not None and token.depends.parent_ids
    solve = by_stage(expansion)["cal_solve"][0]
    assert solve.depends is not None and solve.depends.groups[0].min_done == 0.9
    assert solve.input is None and solve.depends.base_input is None


def test_priorities_increase_with_depth() -> None:
    expansion = cal_target()
    tokens = {t.id: t for t in expansion.tokens}
    for token in tokens.values():
        for child in token.children:
            assert tokens[child].priority > token.priority
    assert [p.priority for p in expansion.plan] == [p.depth for p in expansion.plan]
    assert sorted({t.priority for t in tokens.values()}) == [0, 1, 2, 3, 4]


def test_ids_are_stable_across_expansions() -> None:
    shuffled = [srm(124, sb) for sb in range(25)]
    random.Random(7).shuffle(shuffled)
    one = cal_target()
    two = expand(
        example(),
        {"calibrator": [srm(123, sb) for sb in range(20)], "target": shuffled},
    )
    assert sorted(t.id for t in one.tokens) == sorted(t.id for t in two.tokens)
    again = cal_target()
    assert [t.id for t in one.tokens] == [t.id for t in again.tokens]
    docs = [{**t.to_doc(), "created": 0} for t in one.tokens]
    assert docs == [{**t.to_doc(), "created": 0} for t in again.tokens]
    # a gather lists its parents in (obsid, subband) order whatever the input order
    band = next(t for t in two.tokens if t.id == "cal-target.band.L124_SB000-009")
    assert band.depends is not None
    assert band.depends.groups[0].ids == [
        f"cal-target.target_prep.L124_SB{sb:03d}" for sb in range(10)
    ]


def test_run_name_prefixes_ids() -> None:
    expansion = expand(
        example(),
        {"calibrator": [srm(1, 0)], "target": [srm(2, 0)]},
        run="cal-target.2026-11-30",
    )
    assert expansion.run == "cal-target.2026-11-30"
    assert all(t.id.startswith("cal-target.2026-11-30.") for t in expansion.tokens)
    assert {t.pipeline for t in expansion.tokens} == {"cal-target.2026-11-30"}
    with pytest.raises(InputError, match="run name 'a b'"):
        expand(example(), {"calibrator": [srm(1, 0)], "target": [srm(2, 0)]}, run="a b")


KEYED = """
name = "keyed"
clock_mhz = 200
[inputs]
target = "two observations"
[[stage]]
name = "prep"
step = "flag-average"
over = "target"
[[stage]]
name = "per_obs"
step = "concat"
over = "prep"
gather = "key:obsid"
[[stage]]
name = "band"
step = "concat"
over = "prep"
gather = "width:2MHz"
"""


def test_gather_by_obsid_with_two_observations() -> None:
    files = [srm(456, sb) for sb in range(5)] + [srm(123, sb) for sb in range(3)]
    expansion = expand(pipeline_of(KEYED), {"target": files})
    per_obs = by_stage(expansion)["per_obs"]
    assert [t.id for t in per_obs] == ["keyed.per_obs.456", "keyed.per_obs.123"]
    assert [t.group for t in per_obs] == [
        {"label": "456", "obsid": "456", "subbands": [0, 1, 2, 3, 4]},
        {"label": "123", "obsid": "123", "subbands": [0, 1, 2]},
    ]
    assert [len(t.depends.parent_ids) for t in per_obs] == [5, 3]  # type: ignore[union-attr]
    # both observations' subbands 0-4 share a band: no L<obsid> prefix, parents by obsid
    bands = by_stage(expansion)["band"]
    assert [t.id for t in bands] == ["keyed.band.SB000-009"]
    assert bands[0].depends is not None
    assert bands[0].depends.parent_ids[:4] == [
        "keyed.prep.L123_SB000", "keyed.prep.L123_SB001", "keyed.prep.L123_SB002",
        "keyed.prep.L456_SB000",
    ]  # fmt: skip


def test_width_is_whole_subbands_at_the_clock() -> None:
    files = [srm(1, sb) for sb in range(40)]
    at_200 = expand(pipeline_of(KEYED), {"target": files})
    assert [len(t.depends.parent_ids) for t in by_stage(at_200)["band"]] == [10, 10, 10, 10]  # type: ignore[union-attr]
    at_160 = expand(
        pipeline_of(KEYED.replace("clock_mhz = 200", "clock_mhz = 160")), {"target": files}
    )
    plan = next(p for p in at_160.plan if p.name == "band")
    assert plan.subbands_per_group == 12  # 2 MHz / 156.25 kHz = 12.8
    assert [g.members for g in plan.groups] == [12, 12, 12, 4]


def test_gather_of_files_without_subbands_is_one_line() -> None:
    files = [srm(1, 0), "https://example.org/data/notes.txt"]
    with pytest.raises(InputError) as caught:
        expand(pipeline_of(KEYED), {"target": files})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("pipeline keyed: stage per_obs (gather key:obsid): ")
    assert "keyed.prep.notes.txt has no 'obsid'" in message
    only_bands = KEYED.replace('gather = "key:obsid"', 'gather = "all"')
    with pytest.raises(InputError, match=r"stage band \(gather width:2MHz\): keyed.prep.notes"):
        expand(pipeline_of(only_bands), {"target": files})


GATHER_FILES = """
name = "direct"
[inputs]
cal = "calibrator"
target = "target"
[[stage]]
name = "solve"
step = "cal-solve"
over = "cal"
gather = "all"
[[stage]]
name = "bands"
step = "concat"
over = "target"
gather = "subbands:2"
after = ["solve"]
"""


def test_gather_over_an_input_list_makes_list_inputs() -> None:
    expansion = expand(
        pipeline_of(GATHER_FILES),
        {"cal": [srm(5, 1), srm(5, 0)], "target": [srm(6, sb) for sb in (4, 5, 6)]},
    )
    (solve,) = by_stage(expansion)["solve"]
    assert solve.status is TokenStatus.TODO and solve.depends is None
    assert solve.input == [srm(5, 0), srm(5, 1)]  # in subband order
    bands = by_stage(expansion)["bands"]
    assert [t.id for t in bands] == ["direct.bands.L6_SB004-005", "direct.bands.L6_SB006-007"]
    assert [t.status for t in bands] == [TokenStatus.WAITING] * 2
    assert bands[0].depends is not None
    assert bands[0].depends.base_input == [srm(6, 4), srm(6, 5)]
    assert [(g.name, g.ids) for g in bands[0].depends.groups] == [("solve", [solve.id])]
    assert solve.children == [t.id for t in bands]


def test_inputs_must_match_the_definition() -> None:
    with pytest.raises(InputError, match=r"input 'target' not given \(inputs: calibrator, target"):
        expand(example(), {"calibrator": [srm(1, 0)]})
    with pytest.raises(InputError, match=r"unknown input 'extra'"):
        expand(example(), {"calibrator": [srm(1, 0)], "target": [srm(1, 0)], "extra": ["x"]})
    with pytest.raises(InputError, match=r"input 'target' is an empty list"):
        expand(example(), {"calibrator": [srm(1, 0)], "target": []})


def test_dag_text_shows_every_stage_and_edge() -> None:
    expansion = cal_target()
    text = dag_text(example(), expansion.plan)
    lines = text.splitlines()
    assert lines[0] == "cal-target: calibrator then target"
    stage_lines = {line.split()[0]: line for line in lines[2:]}
    assert list(stage_lines) == ["cal_prep", "cal_solve", "target_prep", "band", "image"]
    assert "scatter calibrator" in stage_lines["cal_prep"]
    assert "20 token(s)" in stage_lines["cal_prep"]
    assert "-> cal_solve" in stage_lines["cal_prep"]
    assert "gather all of cal_prep (min_done 0.9)" in stage_lines["cal_solve"]
    assert "scatter target; after cal_solve" in stage_lines["target_prep"]
    assert "gather width:2MHz = 10 subbands of target_prep" in stage_lines["band"]
    assert "one per band" in stage_lines["image"]
    # indented by depth
    indents = [len(line) - len(line.lstrip()) for line in lines[2:]]
    assert indents == [2, 4, 6, 8, 10]
    assert "token(s)" not in dag_text(example())
