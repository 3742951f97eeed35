"""A pipeline's tokens in a real pool (SQLite file and pouchdb-server), driven as pilots drive
them: roots claimable, waiting tokens never; finishing parents promotes children with their
outputs in subband order; min_done thresholds, blocked children, reset and cascade; and the
service calls (create twice, dry run, status)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gridlrt.config import Settings, load_settings
from gridlrt.errors import InputError
from gridlrt.pipelines.definition import load_pipeline
from gridlrt.pipelines.expand import Expansion, expand
from gridlrt.pipelines.service import (
    PipelineStatus,
    create_pipeline,
    pipeline_record,
    pipeline_status,
)
from gridlrt.tokens import PilotInfo, Token, TokenPool, TokenStatus
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.model import UploadResult
from gridlrt.tokens.sqlite import SQLitePool

EXAMPLE = Path(__file__).parents[2] / "gridlrt" / "data" / "pipelines" / "cal-target.toml"
LTA = "srm://srm.grid.sara.nl/pnfs/grid.sara.nl/data/lofar/ops/projects/lc0_012"
WHO = PilotInfo(pilot="pilot-1", host="wn1.grid.sara.nl")
N_CAL = 10
N_TARGET = 12


def srm(obsid: int, sb: int) -> str:
    return f"{LTA}/{obsid}/L{obsid}_SB{sb:03d}_uv.MS_abcdef12.tar"


def calibrator(n: int = N_CAL) -> list[str]:
    return [srm(123, sb) for sb in range(n)]


def target(n: int = N_TARGET) -> list[str]:
    return [srm(124, sb) for sb in range(n)]


def created(pool: TokenPool, cal: list[str] | None = None) -> Expansion:
    expansion = expand(
        load_pipeline(EXAMPLE), {"calibrator": cal or calibrator(), "target": target()}
    )
    result = pool.create(expansion.tokens)
    assert len(result.created) == len(expansion.tokens)
    return expansion


def ids(expansion: Expansion, stage: str) -> list[str]:
    return [t.id for t in expansion.tokens if t.stage == stage]


def out_url(token: Token) -> str:
    return f"file:///data/out/{token.stage}/{token.group['label']}.MS.tar"


def claim_all(pool: TokenPool, step: str | None = None) -> list[Token]:
    claimed = []
    while (token := pool.claim(WHO, step=step)) is not None:
        claimed.append(token)
    return claimed


def finish(pool: TokenPool, token: Token) -> Token:
    upload = UploadResult(url=out_url(token), size=1024, checksum="adler32:0badcafe")
    return pool.finish(token.id, WHO.pilot, uploads=[upload])


def fail(pool: TokenPool, token: Token) -> Token:
    return pool.fail(token.id, WHO.pilot, "DP3 exited with 1", retry=False)


def status_of(pool: TokenPool, token_id: str) -> TokenStatus:
    return pool.get(token_id).status


def test_roots_are_claimable_and_waiting_tokens_never(pool: TokenPool) -> None:
    expansion = created(pool)
    claimed = claim_all(pool)  # any step
    assert sorted(t.id for t in claimed) == sorted(ids(expansion, "cal_prep"))
    waiting = [t.id for t in expansion.tokens if t.stage != "cal_prep"]
    assert {status_of(pool, i) for i in waiting} == {TokenStatus.WAITING}
    for step in ("cal-solve", "apply-flag-average", "concat", "image"):
        assert pool.claim(WHO, step=step) is None
    assert pool.settle_pending() == 0  # nothing finished: nothing to promote
    assert {p.value for p in (pool.get(i).status for i in waiting)} == {"waiting"}


def test_finishing_every_parent_promotes_with_outputs_in_subband_order(pool: TokenPool) -> None:
    expansion = created(pool)
    solve_id = ids(expansion, "cal_solve")[0]
    prep = claim_all(pool, "flag-average")
    random.Random(3).shuffle(prep)  # parents finish in any order
    for token in prep[:-1]:
        finish(pool, token)
    assert status_of(pool, solve_id) is TokenStatus.WAITING
    finish(pool, prep[-1])
    solve = pool.get(solve_id)
    assert solve.status is TokenStatus.TODO and solve.lock == 0
    in_order = sorted(prep, key=lambda t: t.group["subbands"])
    assert solve.input == [out_url(t) for t in in_order]
    assert [r.id for r in solve.provenance] == [t.id for t in in_order]
    assert {(r.step, r.status, r.group) for r in solve.provenance} == {
        ("flag-average", "done", "input")
    }
    assert solve.provenance[0].outputs[0].checksum == "adler32:0badcafe"
    assert all(pool.get(t.id).settled is True for t in prep)

    # the solve's outputs become every target subband's extra input {cal_solve}
    (claimed,) = claim_all(pool, "cal-solve")
    assert claimed.id == solve_id
    for token_id in ids(expansion, "target_prep"):
        assert status_of(pool, token_id) is TokenStatus.WAITING
    finish(pool, claimed)
    targets = claim_all(pool, "apply-flag-average")
    assert sorted(t.id for t in targets) == sorted(ids(expansion, "target_prep"))
    for token in targets:
        assert token.extra_inputs == {"cal_solve": [out_url(claimed)]}
        assert token.input == srm(124, token.group["subbands"][0])  # its own file, a string
        assert [(r.id, r.group) for r in token.provenance] == [(solve_id, "cal_solve")]

    # bands of 10 subbands, then one image per band: the whole run to the end
    for token in reversed(targets):
        finish(pool, token)
    bands = claim_all(pool, "concat")
    assert [t.id for t in bands] == ids(expansion, "band")
    first = bands[0]
    assert first.input == [
        f"file:///data/out/target_prep/L124_SB{sb:03d}.MS.tar" for sb in range(10)
    ]
    for band in bands:
        finish(pool, band)
    images = claim_all(pool, "image")
    assert [t.input for t in images] == [[out_url(b)] for b in bands]
    for image in images:
        finish(pool, image)
    counts = pool.stage_counts()
    assert {stage: n for (run, stage), n in counts.items() if run == "cal-target"} == {
        "cal_prep": {"done": N_CAL},
        "cal_solve": {"done": 1},
        "target_prep": {"done": N_TARGET},
        "band": {"done": 2},
        "image": {"done": 2},
    }


def test_min_done_lets_one_failure_of_ten_through(pool: TokenPool) -> None:
    expansion = created(pool)
    solve_id = ids(expansion, "cal_solve")[0]
    prep = sorted(claim_all(pool, "flag-average"), key=lambda t: t.id)
    failed = prep[3]
    fail(pool, failed)
    assert status_of(pool, solve_id) is TokenStatus.WAITING  # 9 may still finish
    rest = [t for t in prep if t.id != failed.id]
    for token in rest[:-1]:
        finish(pool, token)
    assert status_of(pool, solve_id) is TokenStatus.WAITING
    finish(pool, rest[-1])
    solve = pool.get(solve_id)
    assert solve.status is TokenStatus.TODO
    assert solve.input == [out_url(t) for t in rest]
    assert failed.id not in [r.id for r in solve.provenance]

    # its output was taken: resetting the failed parent is refused unless cascading
    with pytest.raises(InputError, match=f"token {failed.id} was already used by {solve_id}"):
        pool.reset(ids=[failed.id])
    assert status_of(pool, failed.id) is TokenStatus.ERROR
    assert pool.reset(ids=[failed.id], cascade=True) == [failed.id, solve_id]
    solve = pool.get(solve_id)
    assert solve.status is TokenStatus.WAITING  # waits for the redone parent now
    assert solve.input is None and solve.provenance == [] and solve.lock == -1
    (again,) = claim_all(pool, "flag-average")
    assert again.id == failed.id
    finish(pool, again)
    solve = pool.get(solve_id)
    assert solve.status is TokenStatus.TODO
    assert solve.input == [out_url(t) for t in prep]  # all ten now


def test_two_failures_of_ten_block_until_reset(pool: TokenPool) -> None:
    expansion = created(pool)
    solve_id = ids(expansion, "cal_solve")[0]
    prep = sorted(claim_all(pool, "flag-average"), key=lambda t: t.id)
    failed = [prep[2], prep[7]]
    fail(pool, failed[0])
    assert status_of(pool, solve_id) is TokenStatus.WAITING
    fail(pool, failed[1])
    solve = pool.get(solve_id)
    assert solve.status is TokenStatus.BLOCKED and solve.lock == -1
    assert "needs 9 of 10 parents done" in solve.blocked_reason
    assert all(t.id in solve.blocked_reason for t in failed)
    for token in prep:
        if token not in failed:
            finish(pool, token)
    assert status_of(pool, solve_id) is TokenStatus.BLOCKED
    assert pool.claim(WHO, step="cal-solve") is None

    # the child never started: resetting the failed parents is allowed, and it waits again
    assert sorted(pool.reset(ids=[t.id for t in failed])) == sorted(t.id for t in failed)
    solve = pool.get(solve_id)
    assert solve.status is TokenStatus.WAITING and solve.blocked_reason == ""
    for token in claim_all(pool, "flag-average"):
        finish(pool, token)
    solve = pool.get(solve_id)
    assert solve.status is TokenStatus.TODO
    assert solve.input == [out_url(t) for t in prep]


def test_cascade_reset_of_a_consumed_parent_sends_the_running_child_back(
    pool: TokenPool,
) -> None:
    expansion = created(pool)
    solve_id = ids(expansion, "cal_solve")[0]
    prep = claim_all(pool, "flag-average")
    for token in prep:
        finish(pool, token)
    running = pool.claim(WHO, step="cal-solve")
    assert running is not None and running.id == solve_id
    parent = prep[0].id
    with pytest.raises(InputError, match="--cascade"):
        pool.reset(ids=[parent])
    assert pool.reset(ids=[parent], cascade=True) == [parent, solve_id]
    solve = pool.get(solve_id)
    assert solve.status is TokenStatus.WAITING and solve.extra_inputs == {}
    assert solve.attempts[-1].outcome == "reset"
    assert status_of(pool, parent) is TokenStatus.TODO
    # the pilot that held the solve lost it
    with pytest.raises(Exception, match="no longer held"):
        pool.finish(solve_id, WHO.pilot, uploads=[])
    (redo,) = claim_all(pool, "flag-average")
    finish(pool, redo)
    assert status_of(pool, solve_id) is TokenStatus.TODO


# --- the service ---------------------------------------------------------------------------


@pytest.fixture
def settings(pool: TokenPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings naming the ``pool`` fixture's pool (SQLite file or CouchDB database)."""
    monkeypatch.setenv("GRIDLRT_CONFIG", str(tmp_path / "none.toml"))
    for name in ("POOL", "POOL_CREDENTIALS", "POOL_USERNAME", "POOL_PASSWORD"):
        monkeypatch.delenv(f"GRIDLRT_{name}", raising=False)
    if isinstance(pool, CouchDBPool):
        url = pool.db_url
    else:
        assert isinstance(pool, SQLitePool)
        url = f"sqlite:///{pool.path}"
    return load_settings(
        pool=url, pool_credentials=tmp_path / "no-credentials", storage_root="file:///data/out"
    )


@pytest.fixture
def lists(tmp_path: Path) -> dict[str, Path]:
    cal, tgt = tmp_path / "cal_srm.txt", tmp_path / "target_srm.txt"
    cal.write_text("# calibrator 3C196\n" + "\n".join(calibrator()) + "\n")
    tgt.write_text("\n".join(target()) + "\n\n")
    return {"calibrator": cal, "target": tgt}


def test_dry_run_checks_every_stage_and_touches_nothing(
    pool: TokenPool, settings: Settings, lists: dict[str, Path]
) -> None:
    seen: list[Token] = []
    result = create_pipeline(
        lambda: settings, EXAMPLE, lists, check=lambda t, s: seen.append(t), dry_run=True
    )
    assert result.dry_run and result.pool_url is None and result.created == []
    assert len(result.tokens) == N_CAL + 1 + N_TARGET + 2 + 2
    assert pool.overview().total() == 0 and pool.records("pipeline") == []
    # the first token of each stage, dependent ones as if their parents had run
    assert [t.stage for t in seen] == ["cal_prep", "cal_solve", "target_prep", "band", "image"]
    assert all(t.status is TokenStatus.TODO for t in seen)
    solve = seen[1]
    assert solve.input == [
        f"file:///gridlrt-check/cal_prep/L123_SB{sb:03d}.MS.tar" for sb in range(N_CAL)
    ]
    prep = seen[2]
    assert prep.input == srm(124, 0)
    assert prep.extra_inputs == {"cal_solve": ["file:///gridlrt-check/cal_solve/all.MS.tar"]}
    assert seen[4].inputs == ["file:///gridlrt-check/band/L124_SB000-009.MS.tar"]


def test_a_failing_check_names_the_stage_and_creates_nothing(
    pool: TokenPool, settings: Settings, lists: dict[str, Path]
) -> None:
    def check(token: Token, chosen: Settings) -> None:
        if token.stage == "band":
            raise InputError(f"concat.toml: command: unknown placeholder {{x}} ({token.id})")

    with pytest.raises(InputError, match=r"^stage band: concat.toml: command: unknown"):
        create_pipeline(settings, EXAMPLE, lists, check=check)
    assert pool.overview().total() == 0 and pool.records("pipeline") == []


def test_create_twice_is_idempotent_and_status_counts_match(
    pool: TokenPool, settings: Settings, lists: dict[str, Path], tmp_path: Path
) -> None:
    first = create_pipeline(settings, EXAMPLE, lists, run="night1")
    everything = [t.id for t in first.tokens]
    assert sorted(first.created) == sorted(everything) and first.duplicates == []
    assert first.pool_url == pool.url
    again = create_pipeline(settings, EXAMPLE, lists, run="night1")
    assert again.created == [] and sorted(again.duplicates) == sorted(everything)

    record = pipeline_record(pool, "night1")
    assert record.pipeline.name == "cal-target" and record.plan == first.plan
    assert record.inputs == {k: str(v) for k, v in lists.items()}
    assert record.input_counts == {"calibrator": N_CAL, "target": N_TARGET}

    # other inputs under the same run name: refused before anything is written
    longer = tmp_path / "more.txt"
    longer.write_text("\n".join(target(N_TARGET + 1)) + "\n")
    with pytest.raises(InputError, match=r"run 'night1' already exists .* another inputs"):
        create_pipeline(settings, EXAMPLE, {**lists, "target": longer}, run="night1")
    assert pool.overview().total() == len(everything)

    # drive it a little: 8 of 10 calibrator subbands done, 2 failed -> the solve is blocked
    prep = sorted(claim_all(pool, "flag-average"), key=lambda t: t.id)
    for token in prep[:8]:
        finish(pool, token)
    for token in prep[8:]:
        fail(pool, token)
    (status,) = pipeline_status(pool, "night1")
    assert isinstance(status, PipelineStatus) and status.pipeline == "cal-target"
    recount: dict[str, dict[str, int]] = {}
    for token in pool.tokens():
        if token.pipeline == "night1":
            stage = recount.setdefault(str(token.stage), {})
            stage[token.status.value] = stage.get(token.status.value, 0) + 1
    assert [s.name for s in status.stages] == [p.name for p in first.plan]
    for stage in status.stages:
        assert {k: n for k, n in stage.counts.items() if n} == recount[stage.name]
        assert stage.present == stage.planned and stage.missing == 0
    by_name = {s.name: s for s in status.stages}
    assert by_name["cal_prep"].counts["done"] == 8 and by_name["cal_prep"].counts["error"] == 2
    assert by_name["cal_prep"].finished
    solve = by_name["cal_solve"]
    assert solve.counts["blocked"] == 1
    assert [b.id for b in solve.blocked] == ["night1.cal_solve.all"]
    assert all(t.id in solve.blocked[0].reason for t in prep[8:])
    # a blocked parent blocks its children too, all the way down, with the reason
    tprep = by_name["target_prep"]
    assert tprep.counts["blocked"] == tprep.planned and tprep.counts["waiting"] == 0
    assert "night1.cal_solve.all" in tprep.blocked[0].reason
    assert by_name["band"].counts["blocked"] == by_name["band"].planned
    assert status.counts["waiting"] == 0  # everything below the blocked solve is blocked
    assert status.counts["blocked"] == 1 + N_TARGET + 2 + 2
    assert json_round_trip(status)

    with pytest.raises(InputError, match=r"no pipeline run 'night2' in .* \(runs: night1\)"):
        pipeline_status(pool, "night2")
    with pytest.raises(InputError, match=r"\(runs: night1\)"):
        pipeline_record(pool, "nope")
    # tokens created without the service show up too, unrecorded
    created(pool)
    runs = {s.run: s for s in pipeline_status(pool)}
    assert list(runs) == ["night1", "cal-target"]
    assert not runs["cal-target"].recorded
    assert runs["cal-target"].counts["todo"] == N_CAL


def json_round_trip(status: PipelineStatus) -> bool:
    return PipelineStatus.model_validate_json(status.model_dump_json()) == status
