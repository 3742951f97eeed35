"""gridlrt.pipelines.definition: the shipped example parses, and every kind of mistake in a
pipeline file is one line naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.errors import InputError
from gridlrt.pipelines.definition import Gather, load_pipeline, parse_width

EXAMPLE = Path(__file__).parents[2] / "gridlrt" / "data" / "pipelines" / "cal-target.toml"

GOOD = """\
name = "cal-target"
clock_mhz = 200

[inputs]
calibrator = "the calibrator's srm.txt"
target = "the target's srm.txt"

[[stage]]
name = "cal_prep"
step = "flag-average"
over = "calibrator"

[[stage]]
name = "cal_solve"
step = "cal-solve"
over = "cal_prep"
gather = "all"
min_done = 0.9

[[stage]]
name = "target_prep"
step = "apply-flag-average"
over = "target"
after = ["cal_solve"]

[[stage]]
name = "band"
step = "concat"
over = "target_prep"
gather = "subbands:10"

[[stage]]
name = "image"
step = "image"
over = "band"
"""


def write(tmp_path: Path, text: str, name: str = "cal-target.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problem(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_pipeline(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


def test_the_shipped_example_parses() -> None:
    pipeline = load_pipeline(EXAMPLE)
    assert pipeline.source == EXAMPLE
    assert [s.name for s in pipeline.stages] == [
        "cal_prep", "cal_solve", "target_prep", "band", "image",
    ]  # fmt: skip
    assert set(pipeline.inputs) == {"calibrator", "target"}
    kinds = {s.name: pipeline.kind(s) for s in pipeline.stages}
    assert kinds == {
        "cal_prep": "scatter", "cal_solve": "gather", "target_prep": "scatter",
        "band": "gather", "image": "one-to-one",
    }  # fmt: skip
    by_name = pipeline.by_name
    assert pipeline.parents(by_name["target_prep"]) == ["cal_solve"]
    assert pipeline.parents(by_name["band"]) == ["target_prep"]
    assert by_name["cal_solve"].min_done == 0.9


def test_priorities_default_to_depth_and_can_be_set(tmp_path: Path) -> None:
    pipeline = load_pipeline(write(tmp_path, GOOD))
    depths = [pipeline.priority(s) for s in pipeline.stages]
    assert depths == [0, 1, 2, 3, 4]
    text = GOOD.replace('name = "band"\n', 'name = "band"\npriority = 10\n')
    changed = load_pipeline(write(tmp_path, text))
    assert [changed.priority(s) for s in changed.stages] == [0, 1, 2, 10, 4]


def test_gather_with_one_after_and_no_over_gathers_over_that_stage(tmp_path: Path) -> None:
    text = GOOD.replace('over = "target_prep"\ngather', 'after = ["target_prep"]\ngather')
    pipeline = load_pipeline(write(tmp_path, text))
    band = pipeline.by_name["band"]
    assert band.over == "target_prep" and band.after == []
    one = load_pipeline(write(tmp_path, GOOD.replace('["cal_solve"]', '"cal_solve"')))
    assert one.by_name["target_prep"].after == ["cal_solve"]


def test_round_trip_through_a_dict(tmp_path: Path) -> None:
    from gridlrt.pipelines.definition import validate_pipeline

    pipeline = load_pipeline(write(tmp_path, GOOD))
    again = validate_pipeline(pipeline.as_dict())
    assert again.as_dict() == pipeline.as_dict()
    assert again.stages == pipeline.stages


@pytest.mark.parametrize(
    ("text", "hz"),
    [("5 MHz", 5e6), ("2MHz", 2e6), ("1.95 MHz", 1.95e6), ("500kHz", 5e5), ("0.2 GHz", 2e8)],
)
def test_widths(text: str, hz: float) -> None:
    assert parse_width(text) == pytest.approx(hz)


def test_gather_rules() -> None:
    assert Gather.parse("all").kind == "all"
    assert Gather.parse("subbands:10").size == 10
    assert Gather.parse(" key : obsid ").key == "obsid"
    assert Gather.parse("width:2MHz").subbands_per_group(200) == 10  # 195.3125 kHz each
    assert Gather.parse("width:2MHz").subbands_per_group(160) == 12  # 156.25 kHz each
    assert Gather.parse("width:100kHz").subbands_per_group(200) == 1  # never 0


def test_unknown_after_stage_names_file_stage_and_known_stages(tmp_path: Path) -> None:
    message = problem(tmp_path, GOOD.replace('after = ["cal_solve"]', 'after = ["cal_sovle"]'))
    assert message == (
        "stage[2] (target_prep).after: unknown stage 'cal_sovle' (stages: cal_prep, cal_solve)"
    )


def test_unknown_over(tmp_path: Path) -> None:
    message = problem(tmp_path, GOOD.replace('over = "band"', 'over = "bands"'))
    assert message.startswith("stage[4] (image).over: unknown input or stage 'bands'")
    assert "inputs: calibrator, target" in message and "band" in message


def test_forward_reference_and_cycle_say_parents_come_first(tmp_path: Path) -> None:
    forward = GOOD.replace('after = ["cal_solve"]', 'after = ["cal_solve", "image"]')
    message = problem(tmp_path, forward)
    assert message.startswith("stage[2] (target_prep).after: stage 'image' comes later")
    assert "only use stages listed before it" in message
    # a cycle cal_solve -> band -> ... -> cal_solve needs a forward reference somewhere
    cycle = GOOD.replace('over = "cal_prep"', 'over = "cal_prep"\nafter = ["band"]')
    assert problem(tmp_path, cycle).startswith("stage[1] (cal_solve).after: stage 'band' comes")
    itself = GOOD.replace('after = ["cal_solve"]', 'after = ["target_prep"]')
    assert "cannot use itself" in problem(tmp_path, itself)


@pytest.mark.parametrize(
    ("gather", "words"),
    [
        ("some", "'some' is not a gather rule; use all, subbands:N"),
        ("subbands:0", "subbands:N needs a whole number N of 1 or more"),
        ("subbands:ten", "subbands:N needs a whole number"),
        ("key:", "key:FIELD needs a field name"),
    ],
)
def test_bad_gather(tmp_path: Path, gather: str, words: str) -> None:
    message = problem(tmp_path, GOOD.replace('gather = "subbands:10"', f'gather = "{gather}"'))
    assert message.startswith("stage[3] (band).gather: "), message
    assert words in message


@pytest.mark.parametrize("width", ["2", "2 MB", "-1MHz", "MHz", "0MHz"])
def test_bad_width(tmp_path: Path, width: str) -> None:
    message = problem(tmp_path, GOOD.replace('"subbands:10"', f'"width:{width}"'))
    assert message.startswith("stage[3] (band).gather: width "), message


def test_width_needs_the_clock(tmp_path: Path) -> None:
    text = GOOD.replace("clock_mhz = 200\n", "").replace('"subbands:10"', '"width:2MHz"')
    assert problem(tmp_path, text).startswith("stage[3] (band).gather: width needs the clock")


def test_duplicate_stage(tmp_path: Path) -> None:
    text = GOOD.replace('name = "image"', 'name = "band"').replace('over = "band"', 'over = "x"')
    message = problem(tmp_path, text)
    assert message == "stage[4] (band).name: duplicate stage name (also stage[3])"


def test_unused_input(tmp_path: Path) -> None:
    text = GOOD.replace("[inputs]\n", '[inputs]\nextra = "never used"\n')
    assert problem(tmp_path, text) == "inputs.extra: declared but no stage runs over it"


@pytest.mark.parametrize("value", ["1.5", "-0.1", '"most"'])
def test_bad_min_done(tmp_path: Path, value: str) -> None:
    message = problem(tmp_path, GOOD.replace("min_done = 0.9", f"min_done = {value}"))
    assert message.startswith("stage[1] (cal_solve).min_done: "), message


def test_min_done_on_a_stage_without_parents(tmp_path: Path) -> None:
    text = GOOD.replace('over = "calibrator"', 'over = "calibrator"\nmin_done = 0.5')
    assert problem(tmp_path, text).startswith("stage[0] (cal_prep).min_done: the stage waits")


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = problem(tmp_path, GOOD.replace('step = "concat"', "step = concat"))
    line = GOOD.splitlines().index('step = "concat"') + 1
    assert message.startswith("not valid TOML: ") and f"line {line}" in message


@pytest.mark.parametrize(
    ("change", "start"),
    [
        (('name = "cal_prep"', 'name = "cal-prep"'), "stage[0] (cal-prep).name: 'cal-prep': use a"),
        (('name = "cal_prep"', 'name = "input"'), "stage[0] (input).name: 'input' is a field"),
        (('step = "concat"', 'step = "con cat"'), "stage[3] (band).step: 'con cat'"),
        (
            ('step = "concat"', 'stepp = "concat"'),
            "stage[3] (band).stepp: unknown field (did you mean step? fields: name, step,",
        ),
        (('step = "concat"\n', ""), "stage[3] (band).step: required"),
        (('name = "cal-target"', 'name = "cal target"'), "name: 'cal target': use letters"),
        (('name = "image"', 'name = "calibrator"'), "stage[4] (calibrator).name: 'calibrator' is"),
        (('after = ["cal_solve"]', 'after = ["target"]'), "stage[2] (target_prep).after: 'target'"),
        (('over = "band"', ""), "stage[4] (image).over: required"),
        (('after = ["cal_solve"]', 'after = ["cal_solve", "cal_solve"]'), "stage[2] (target_p"),
    ],
)
def test_one_line_per_mistake(tmp_path: Path, change: tuple[str, str], start: str) -> None:
    old, new = change
    assert old in GOOD
    assert problem(tmp_path, GOOD.replace(old, new, 1)).startswith(start)


def test_no_stages(tmp_path: Path) -> None:
    assert problem(tmp_path, 'name = "empty"\n').startswith("stage: required")
    message = problem(tmp_path, 'name = "empty"\nstage = []\n')
    assert message.startswith("stage: List should have at least 1 item")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.toml: no such pipeline file"):
        load_pipeline(tmp_path / "nope.toml")


def test_builtin_pipeline_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cal-target`` names the shipped calibrator → target pipeline (its real steps) unless a
    file of that name is there; an unknown name lists the built-in ones."""
    monkeypatch.chdir(tmp_path)
    pipeline = load_pipeline(Path("cal-target"))
    assert pipeline.source is not None and pipeline.source.name == "cal-target.toml"
    assert [s.step for s in pipeline.stages] == [
        "flag-average",
        "cal-solve",
        "apply-flag-average",
        "concat",
        "image",
    ]
    (tmp_path / "cal-target").write_text(
        'name = "mine"\n[[stage]]\nname = "a"\nstep = "s"\nover = "x"\n[inputs]\nx = "x"\n'
    )
    assert load_pipeline(Path("cal-target")).name == "mine"
    with pytest.raises(
        InputError, match=r"nope: no such pipeline file \(built-in pipelines: cal-target\)"
    ):
        load_pipeline(Path("nope"))
