"""Planning tokens that depend on tokens: extra inputs (``token.extra_inputs``), the pipeline
fields, and gathers whose input is several of the worker's own packed ``.MS.tar`` outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.errors import InputError
from gridlrt.tokens import Token, new_token
from gridlrt.tokens.model import Depends, ParentGroup
from gridlrt.worker.plan import is_ms_archive, plan_token, validate_step
from gridlrt.worker.steps import StepConfig

WORK = Path("/scratch/work")
ROOT = "file:///root/run"
TARGET = "file:///root/run/target_prep/L456_SB004_uv.target_prep.MS.tar"
SOLUTIONS = "file:///root/run/cal_solve/L123_solve/solutions.h5"


def command_step(*args: str, kind: str = "ms-tarball", **extra: object) -> StepConfig:
    return StepConfig.model_validate(
        {
            "name": "apply",
            "kind": "command",
            "command": ["run", *args],
            "inputs": {"kind": kind},
            "outputs": {"keep": [], "url": "{root}/{pipeline}/{stage}/{name}"},
            **extra,
        }
    )


def token_with(extra: dict[str, list[str]], inputs: list[str] | str | None = TARGET) -> Token:
    token = new_token("apply_L456_SB004", inputs=inputs, step="apply")
    return token.model_copy(
        update={
            "extra_inputs": extra,
            "pipeline": "lba",
            "stage": "target_apply",
            "group": {"label": "SB004", "subbands": [4]},
        }
    )


def plan(step: StepConfig, token: Token) -> object:
    return plan_token(step, token, workdir=WORK, storage_root=ROOT)


def test_an_extra_file_is_downloaded_under_extra_name_and_filled_in() -> None:
    step = command_step("--h5parm", "{cal_solve}", "{msin}")
    made = plan_token(step, token_with({"cal_solve": [SOLUTIONS]}), workdir=WORK, storage_root=ROOT)
    local = WORK / "extra" / "cal_solve" / "solutions.h5"
    assert made.argv == ["run", "--h5parm", str(local), str(WORK / "L456_SB004_uv.target_prep.MS")]
    extra = [d for d in made.downloads if d.url == SOLUTIONS]
    assert len(extra) == 1 and extra[0].path == local and extra[0].extract_to is None
    assert made.fields["cal_solve"] == str(local)
    assert made.extra_inputs == {"cal_solve": [local]}
    assert len(made.downloads) == 2  # the main input is still there


def test_extra_measurement_sets_are_unpacked_and_several_files_space_joined() -> None:
    packed = "file:///root/run/cal_prep/L123_SB000_uv.cal_prep.MS.tar"  # the worker's own packing
    lta = "srm://lta.example/L123_SB001_uv.dppp.MS_3d78b8f1.tar"  # an LTA archive
    step = command_step("{cal}")
    made = plan_token(step, token_with({"cal": [packed, lta]}), workdir=WORK, storage_root=ROOT)
    first = WORK / "extra" / "cal" / "L123_SB000_uv.cal_prep.MS"
    second = WORK / "extra" / "cal" / "L123_SB001_uv.dppp.MS"
    assert made.fields["cal"] == f"{first} {second}"
    assert made.argv == ["run", f"{first} {second}"]
    by_url = {d.url: d for d in made.downloads}
    assert by_url[packed].extract_to == first and by_url[lta].extract_to == second
    # the archive lands apart from the unpacked sets and from every extra input's name
    assert by_url[packed].path == WORK / "extra" / ".download" / "cal" / Path(packed).name
    assert made.extra_inputs["cal"] == [first, second]


def test_files_of_one_name_sharing_a_file_name_get_a_directory_each() -> None:
    urls = [f"file:///root/run/cal_solve/L{i}/solutions.h5" for i in (1, 2)]
    made = plan_token(
        command_step("{cal_solve}"),
        token_with({"cal_solve": urls}),
        workdir=WORK,
        storage_root=ROOT,
    )
    expected = [WORK / "extra" / "cal_solve" / str(i) / "solutions.h5" for i in (0, 1)]
    assert made.extra_inputs["cal_solve"] == expected
    assert [d.path for d in made.downloads if d.url in urls] == expected


def test_pipeline_fields_fill_output_urls() -> None:
    step = StepConfig.model_validate(
        {
            "name": "apply",
            "kind": "command",
            "command": ["run", "{group_label}"],
            "inputs": {"kind": "none"},
            "outputs": {"keep": ["out.h5"], "url": "{root}/{pipeline}/{stage}/{name}"},
        }
    )
    made = plan_token(step, token_with({}, inputs=None), workdir=WORK, storage_root=ROOT)
    assert made.uploads[0].url == f"{ROOT}/lba/target_apply/out.h5"
    assert made.argv == ["run", "SB004"]
    assert made.log_url == f"{ROOT}/lba/target_apply/apply_L456_SB004.log"


def test_pipeline_fields_are_empty_for_a_plain_token() -> None:
    token = new_token("t1", inputs=None, step="apply")
    step = command_step("{pipeline}|{stage}|{group_label}", kind="none")
    step.outputs.url = "{root}/{step}/{token_id}/{name}"
    made = plan_token(
        step,
        token,
        workdir=WORK,
        storage_root=ROOT,
    )
    assert made.argv == ["run", "||"]
    assert made.extra_inputs == {}


@pytest.mark.parametrize("name", ["msin", "token_id", "name", "stage", "obsid", "sky", "threshold"])
def test_an_extra_input_named_like_a_field_is_refused(name: str) -> None:
    step = command_step("{msin}", files=["sky.skymodel"], parameters={"threshold": 3})
    with pytest.raises(InputError, match=rf"extra input '{name}'.*\{{{name}\}}"):
        plan_token(step, token_with({name: [SOLUTIONS]}), workdir=WORK, storage_root=ROOT)


@pytest.mark.parametrize("name", ["../up", "cal-solve", "1st", ""])
def test_an_extra_input_name_must_be_a_placeholder_name(name: str) -> None:
    with pytest.raises(InputError, match="not a usable field name"):
        plan_token(
            command_step("{msin}"), token_with({name: [SOLUTIONS]}), workdir=WORK, storage_root=ROOT
        )


def test_an_extra_input_url_without_a_file_name_is_refused() -> None:
    with pytest.raises(InputError, match="names no file"):
        plan_token(
            command_step("{cal}"),
            token_with({"cal": ["file:///data/.."]}),
            workdir=WORK,
            storage_root=ROOT,
        )


def test_an_extra_input_with_no_urls_is_an_empty_field() -> None:
    made = plan_token(
        command_step("x{cal}x"), token_with({"cal": []}), workdir=WORK, storage_root=ROOT
    )
    assert made.argv == ["run", "xx"]


def test_a_gather_of_packed_outputs_is_a_dp3_list() -> None:
    urls = [f"file:///root/run/cal_prep/L123_SB{i:03d}_uv.cal_prep.MS.tar" for i in (4, 5, 6)]
    step = StepConfig.model_validate(
        {"name": "concat", "kind": "dp3", "parset": "msin={msin}\nmsout={msout}\nsteps=[]\n"}
    )
    made = plan_token(
        step,
        new_token("concat_L123", inputs=urls, step="concat"),
        workdir=WORK,
        storage_root=ROOT,
        dp3=Path("/opt/DP3"),
    )
    sets = [WORK / f"L123_SB{i:03d}_uv.cal_prep.MS" for i in (4, 5, 6)]
    assert made.msin == sets
    assert [(d.url, d.extract_to) for d in made.downloads] == list(zip(urls, sets, strict=True))
    assert made.fields["msin"] == "[" + ",".join(map(str, sets)) + "]"
    assert made.msout == WORK / "L123_SB004_uv.concat.MS"
    assert made.parset is not None and f"msin={made.fields['msin']}\n" in made.parset
    assert made.fields["subband"] == "004"  # the first input's


def test_two_inputs_that_would_land_on_one_path_are_refused() -> None:
    urls = [f"file:///root/run/{stage}/L123_SB004_uv.x.MS.tar" for stage in ("a", "b")]
    with pytest.raises(InputError, match=r"would both be L123_SB004_uv\.x\.MS"):
        plan(command_step("{msin}"), new_token("t", inputs=urls, step="apply"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///r/L1_SB000_uv.cal.MS.tar", True),
        ("srm://lta/L1_SB000_uv.dppp.MS_3d78b8f1.tar", True),
        ("https://x/L1_SB000_uv.ms.tar?a=b", True),
        ("file:///r/solutions.h5", False),
        ("file:///r/images.tar", False),
        ("file:///r/L1_SB000_uv.MS", False),
    ],
)
def test_is_ms_archive(url: str, expected: bool) -> None:
    assert is_ms_archive(url) is expected


def test_validate_step_with_extra_inputs() -> None:
    step = command_step("--h5parm", "{cal_solve}", "{msin}")
    checked = validate_step(step, token_with({"cal_solve": [SOLUTIONS]}), storage_root=ROOT)
    assert checked.argv[2].endswith("/extra/cal_solve/solutions.h5")
    with pytest.raises(InputError, match=r"unknown placeholder \{cal_solve\}"):
        validate_step(step, token_with({}), storage_root=ROOT)


def test_validate_step_of_a_waiting_token_stands_in_for_its_parents() -> None:
    depends = Depends(
        groups=[
            ParentGroup(name="input", ids=["target_prep_L456_SB004"]),
            ParentGroup(name="cal_solve", ids=["cal_solve_L123"]),
        ]
    )
    waiting = new_token(
        "apply_L456_SB004",
        inputs=None,
        step="apply",
        depends=depends,
        fields={"pipeline": "lba", "stage": "target_apply"},
    )
    step = command_step("--h5parm", "{cal_solve}", "{msin}")
    checked = validate_step(step, waiting, storage_root=ROOT)
    assert checked.argv[2].endswith("/extra/cal_solve/cal_solve_L123.MS")
    assert checked.msin[0].name == "target_prep_L456_SB004.MS"
    assert waiting.extra_inputs == {} and waiting.input is None  # the token is not changed


def test_gathered_files_of_one_name_each_get_a_numbered_directory() -> None:
    parts = [f"file:///root/run/scatter/L1_SB{sb:03d}/part.txt" for sb in (3, 1, 2)]
    made = plan_token(
        command_step("cat", "{local_inputs}", kind="file"),
        token_with({}, inputs=parts),
        workdir=WORK,
        storage_root=ROOT,
    )
    local = [WORK / "inputs" / str(i) / "part.txt" for i in range(3)]
    assert [(d.url, d.path) for d in made.downloads] == list(zip(parts, local, strict=True))
    assert made.argv == ["run", "cat", " ".join(map(str, local))]  # in the token's order
    single = plan_token(
        command_step("cat", "{local_inputs}", kind="file"),
        token_with({}, inputs=parts[:1]),
        workdir=WORK,
        storage_root=ROOT,
    )
    assert [d.path for d in single.downloads] == [WORK / "part.txt"]
