"""Step configuration files: the shipped steps load; mistakes are one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.errors import InputError
from gridlrt.worker.steps import BUILTIN_STEPS, load_step


@pytest.mark.parametrize("name", BUILTIN_STEPS)
def test_builtin_steps_load(name: str) -> None:
    step = load_step(name)
    assert step.name == name
    assert step.timeout > 0 and step.max_attempts >= 1
    if step.kind == "dp3":
        assert step.parset is not None and "checkparset=1" in step.parset


def test_toml_and_yaml_files(tmp_path: Path) -> None:
    toml = tmp_path / "mine.toml"
    toml.write_text(
        'name = "mine"\nkind = "command"\ncommand = ["./run.sh", "{input}"]\n'
        'timeout = "90m"\n[inputs]\nkind = "none"\n'
    )
    step = load_step(toml)
    assert step.timeout == 5400 and step.inputs.kind == "none" and step.directory == tmp_path
    yaml_file = tmp_path / "avg.yaml"
    yaml_file.write_text(
        "name: avg8\nkind: dp3\nparset: |\n  msin={msin}\n  steps=[avg]\n"
        "parameters:\n  freqstep: 8\nexpect:\n  freqstep: 8\n"
    )
    loaded = load_step(yaml_file)
    assert loaded.parameters == {"freqstep": 8}
    assert loaded.expect is not None and loaded.expect.freqstep == "8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nkind = "dp3"\n', "a dp3 step needs a parset template"),
        ('name = "x"\nkind = "command"\n', "a command step needs command ="),
        ('name = "x"\nkind = "spark"\n', "kind: Input should be 'dp3' or 'command'"),
        ('name = "x"\nkind = "command"\ncommand = ["a"]\ntimout = "1h"\n', "timout: Extra inputs"),
        ('name = "x"\nkind = "command"\ncommand = ["a"]\ntimeout = "soon"\n', "not a duration"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_mistakes_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "step.toml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_step(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_step() -> None:
    with pytest.raises(InputError, match=r"no such step file .*built-in step: average"):
        load_step("averge")


def test_lofar_names() -> None:
    from gridlrt.lofar_names import ms_name_in_archive, name_fields, short_name

    lta = "srm://srm.grid.sara.nl:8443/pnfs/x/229507/L229507_SAP000_SB100_uv.dppp.MS_3d78b8f1.tar"
    assert short_name(lta) == "L229507_SAP000_SB100"
    assert name_fields(lta) == {"obsid": "229507", "sap": "000", "subband": "100"}
    assert name_fields("dav://h/L229507_SB007_uv.MS.tar") == {"obsid": "229507", "subband": "007"}
    assert ms_name_in_archive(lta) == "L229507_SAP000_SB100_uv.dppp.MS"
    assert ms_name_in_archive("/data/L1_SB000_uv.MS.tar") == "L1_SB000_uv.MS"
    assert short_name("/data/my_file.ms") is None and name_fields("x") == {}
