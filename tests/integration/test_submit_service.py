"""gridlrt.submit.service.submit_pilots: `gridlrt submit` as one library call (what a notebook
uses), on an embedded pool with the local backend: -n auto, the caller's step check on the
first todo token, a dry run that writes nothing, a refused step that submits nothing (real
submissions through the same call: tests/integration/test_submit_local.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.config import Settings, load_settings
from gridlrt.errors import InputError
from gridlrt.submit.model import Resources
from gridlrt.submit.service import get_submitter, job_records, submit_pilots
from gridlrt.tokens import Token, new_token, open_pool


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GRIDLRT_CONFIG", str(tmp_path / "none.toml"))
    made = load_settings(pool=f"sqlite:///{tmp_path / 'pool.sqlite'}", runs_dir=tmp_path / "runs")
    with open_pool(made) as pool:
        pool.init()
    return made


def test_auto_count_step_check_and_dry_run(settings: Settings, tmp_path: Path) -> None:
    submitter = get_submitter("local")
    args = dict(step="noop", resources=Resources(), worker_args=["--max-tokens", "1"])
    nothing = submit_pilots(settings, submitter, count=None, **args)  # type: ignore[arg-type]
    assert (nothing.count, nothing.submission, nothing.record) == (0, None, None)

    with open_pool(settings) as pool:
        pool.create([new_token(f"noop_{i}", inputs="x", step="noop") for i in range(5)])
    seen: list[str] = []

    def check(first: Token) -> None:
        seen.append(first.id)

    planned = submit_pilots(
        settings, submitter, count=None, maximum=3, check=check, dry_run=True,
        **args,  # type: ignore[arg-type]
    )  # fmt: skip
    assert (planned.count, planned.auto_cap, planned.record) == (3, 3, None)
    assert planned.submission is not None and seen == ["noop_0"]
    assert not planned.submission.request.run_dir.exists()  # a dry run writes nothing
    with open_pool(settings) as pool:
        assert job_records(pool) == []

    def refuse(first: Token) -> None:
        raise InputError(f"step noop: unknown placeholder (checked with token {first.id})")

    with pytest.raises(InputError, match="checked with token noop_0"):
        submit_pilots(settings, submitter, count=2, check=refuse, **args)  # type: ignore[arg-type]
    with open_pool(settings) as pool:
        assert job_records(pool) == []  # a refused step submits nothing
