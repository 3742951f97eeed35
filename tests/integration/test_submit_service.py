"""gridlrt.submit.service.submit_pilots: `gridlrt submit` as one library call (what a notebook
uses), on an embedded pool with the local backend: -n auto, the caller's step check on the
first todo token, a dry run that writes nothing, a refused step that submits nothing; pilots
for any step (every step among the todo tokens checked) and for a pipeline run (sized by its
widest remaining stage, every stage left checked, a misspelt stage step refused) (real
submissions through the same call: tests/integration/test_submit_local.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.config import Settings, load_settings
from gridlrt.errors import InputError
from gridlrt.pipelines.service import create_pipeline
from gridlrt.submit.model import Resources
from gridlrt.submit.service import get_submitter, job_records, submit_pilots
from gridlrt.tokens import Token, new_token, open_pool
from gridlrt.tokens.model import PilotInfo


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


def test_without_a_step_pilots_take_any_step_and_every_step_is_checked(
    settings: Settings,
) -> None:
    submitter = get_submitter("local")
    with open_pool(settings) as pool:
        pool.create(
            [new_token(f"noop_{i}", inputs="x", step="noop") for i in range(3)]
            + [new_token(f"other_{i}", inputs="x", step="other") for i in range(2)]
            + [new_token("done_0", inputs="x", step="finished")]
        )
        pool.claim(PilotInfo(pilot="p", host="h"), "finished")
    seen: list[str] = []
    planned = submit_pilots(
        settings, submitter, count=None, resources=Resources(), worker_args=[],
        check=lambda token: seen.append(token.id), dry_run=True,
    )  # fmt: skip
    assert planned.count == 5  # todo tokens of every step
    assert seen == ["noop_0", "other_0"]  # the first todo token of each step, nothing else
    assert planned.submission is not None
    request = planned.submission.request
    assert request.step is None and request.job_name == "gridlrt-any"
    assert "-local-any-" in request.run_dir.name
    assert "--step" not in planned.submission.command


PIPELINE = """
name = "three"
[inputs]
files = "any files"
[[stage]]
name = "prep"
step = "{prep}"
over = "files"
[[stage]]
name = "combine"
step = "{combine}"
over = "prep"
gather = "all"
[[stage]]
name = "report"
step = "{report}"
over = "combine"
"""


def make_run(settings: Settings, tmp_path: Path, run: str, **steps: str) -> None:
    chosen = {"prep": "command", "combine": "command", "report": "command", **steps}
    path = tmp_path / f"{run}.toml"
    path.write_text(PIPELINE.format(**chosen))
    files = tmp_path / "files.txt"
    files.write_text("".join(f"file:///data/L1_SB{sb:03d}_uv.MS\n" for sb in range(4)))
    create_pipeline(settings, path, {"files": files}, run=run)


def test_pilots_for_a_pipeline_run(settings: Settings, tmp_path: Path) -> None:
    """--pipeline: -n auto is the widest remaining stage (todo + waiting + active), one token
    of every stage left is checked (waiting ones too), the submission is named after the run;
    a misspelt step of a later stage fails before anything is submitted."""
    submitter = get_submitter("local")
    make_run(settings, tmp_path, "three")
    seen: list[tuple[str | None, str]] = []

    def check(token: Token) -> None:
        seen.append((token.stage, token.status.value))

    args = dict(resources=Resources(), worker_args=[], check=check)
    planned = submit_pilots(
        settings, submitter, pipeline="three", count=None, dry_run=True,
        **args,  # type: ignore[arg-type]
    )  # fmt: skip
    assert planned.count == 4  # prep: 4 todo; combine and report: 1 waiting each
    assert sorted(seen) == [("combine", "waiting"), ("prep", "todo"), ("report", "waiting")]
    assert planned.submission is not None
    request = planned.submission.request
    assert (request.step, request.pipeline, request.job_name) == (None, "three", "gridlrt-three")
    assert "-local-three-" in request.run_dir.name

    # two prep tokens done, one running: the widest stage left is prep with 2 (1 todo, 1 active)
    with open_pool(settings) as pool:
        who = PilotInfo(pilot="p", host="h")
        for _ in range(2):
            token = pool.claim(who, "command")
            assert token is not None and token.stage == "prep"
            pool.finish(token.id, "p", output=[f"file:///out/{token.id}"])
        assert pool.claim(who, "command") is not None
    seen.clear()
    planned = submit_pilots(
        settings, submitter, pipeline="three", count=None, maximum=10, dry_run=True,
        **args,  # type: ignore[arg-type]
    )  # fmt: skip
    assert (planned.count, planned.auto_cap) == (2, 10)
    assert sorted(seen) == [("combine", "waiting"), ("prep", "todo"), ("report", "waiting")]

    make_run(settings, tmp_path, "typo", report="reprot")

    def resolve(token: Token) -> None:
        if token.step not in ("command",):
            raise InputError(f"step {token.step!r}: no {token.step}.toml")

    with pytest.raises(InputError, match=r"^pipeline typo, stage report: step 'reprot'"):
        submit_pilots(
            settings, submitter, pipeline="typo", count=2, resources=Resources(),
            worker_args=[], check=resolve,
        )  # fmt: skip
    with pytest.raises(InputError, match=r"no tokens of pipeline run 'thre' .*three, typo"):
        submit_pilots(settings, submitter, pipeline="thre", count=2, **args)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="give step or pipeline"):
        submit_pilots(
            settings, submitter, step="command", pipeline="three", count=2,
            **args,  # type: ignore[arg-type]
        )  # fmt: skip
    with open_pool(settings) as pool:
        assert job_records(pool) == []  # nothing refused was submitted
