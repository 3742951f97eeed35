"""gridlrt.submit.service.worker_arguments: the options every pilot of a submission gets, and
the output-root checks made before any pilot starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.config import Settings, load_settings
from gridlrt.errors import InputError
from gridlrt.submit.service import check_output_root, worker_arguments


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GRIDLRT_CONFIG", str(tmp_path / "none.toml"))
    return load_settings(storage_root="file:///scratch/results")


def test_arguments_in_order_with_the_storage_root_as_default(settings: Settings) -> None:
    plain = worker_arguments(settings, "local")
    assert plain.output_root == "file:///scratch/results"
    assert plain.argv == ["--output-root", "file:///scratch/results"]
    full = worker_arguments(
        settings, "slurm", output_root="davs://dav.example.org/out", max_tokens=3,
        idle_timeout=599.6,
    )  # fmt: skip
    assert full.output_root == "davs://dav.example.org/out"
    assert full.argv == [
        "--max-tokens", "3", "--idle-timeout", "600s", "--output-root", "davs://dav.example.org/out",
    ]  # fmt: skip
    assert worker_arguments(settings, "local", idle_timeout=0).argv[:2] == ["--idle-timeout", "0s"]


@pytest.mark.parametrize("backend", ["dirac", "glite"])
def test_grid_pilots_refuse_a_file_root(settings: Settings, backend: str) -> None:
    with pytest.raises(InputError) as err:
        worker_arguments(settings, backend)
    assert str(err.value) == (
        "outputs would go to file:///scratch/results on each worker node; give --output-root "
        "davs://... or srm://... (or set storage_root) so results land on grid storage"
    )
    assert worker_arguments(settings, backend, output_root="srm://srm.example.org/x").argv == [
        "--output-root", "srm://srm.example.org/x",
    ]  # fmt: skip
    check_output_root("slurm", "file:///scratch/results")  # a shared file system: fine


@pytest.mark.parametrize("backend", ["local", "slurm", "dirac"])
def test_a_root_with_a_password_is_refused_and_not_shown(settings: Settings, backend: str) -> None:
    root = "davs://ann:s3cr#t@dav.example.org/out"
    with pytest.raises(InputError) as err:
        worker_arguments(settings, backend, output_root=root)
    message = str(err.value)
    assert "s3cr#t" not in message
    assert message.startswith("the output root davs://ann:***@dav.example.org/out holds a password")
    check_output_root(backend, "davs://ann@dav.example.org/out")  # a user name alone is fine
