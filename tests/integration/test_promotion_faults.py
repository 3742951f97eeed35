"""Promotions under faults, on both pool backends (real SQLite file, real pouchdb-server).

A parent's pilot finishes it (one write) and then promotes its children (more writes). These
tests break that sequence and check the promise of the architecture: whatever dies in between,
no child is stranded (any pool user — another pilot's claim, ``gridlrt status``,
``gridlrt tokens recover`` — completes the promotion), and no child is promoted twice, even
when two parents finish at the same moment through two different pool objects.

"Promoted once" is read from the pool's own storage: every status a child went through (an
audit trigger on SQLite, every revision on CouchDB; see ``tests/chaos.py``), so a second
promotion could not hide behind an idempotent result.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridlrt.tokens import (
    PilotInfo,
    Token,
    TokenPool,
    TokenStatus,
    dependencies,
    new_token,
    transitions,
)
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.model import Depends, ParentGroup, UploadResult
from gridlrt.tokens.sqlite import SQLitePool
from tests.chaos import promotions, record_history, status_history
from tests.gridlrt_cli import cli_env, gridlrt

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
DEAD = PilotInfo(pilot="pilot-dead", host="wn1.example.org", job_id="dead-1")
OTHER = PilotInfo(pilot="pilot-other", host="wn2.example.org", job_id="other-1")


@pytest.fixture
def pool(pool: TokenPool) -> TokenPool:
    """The shared two-backend pool, recording every status change (see tests/chaos.py)."""
    record_history(pool)
    return pool


def twin(pool: TokenPool) -> TokenPool:
    """Another pool object on the same storage: what a second pilot or command has."""
    if isinstance(pool, SQLitePool):
        return SQLitePool(pool.path)
    assert isinstance(pool, CouchDBPool)
    return CouchDBPool(pool.db_url)


def pool_url(pool: TokenPool) -> str:
    """The URL a command or a pilot process opens the pool with."""
    if isinstance(pool, SQLitePool):
        return pool.url
    assert isinstance(pool, CouchDBPool)
    return pool.db_url


def out_url(token_id: str) -> str:
    return f"file:///results/{token_id}/out.txt"


def finished(token_id: str) -> dict[str, Any]:
    """What a pilot finishes a token with: its output, and the upload records of the output
    and of the payload's log (which is not an output: children do not get it)."""
    log = f"file:///results/{token_id}/{token_id}.log"
    return {
        "output": [out_url(token_id)],
        "uploads": [UploadResult(url=out_url(token_id), size=3), UploadResult(url=log)],
    }


def family(
    pool: TokenPool,
    prefix: str,
    *,
    parents: int = 2,
    children: int = 1,
    min_done: float = 1.0,
    parent_step: str = "scatter",
    child_step: str = "gather",
) -> tuple[list[str], list[str]]:
    """``children`` waiting tokens that each gather ``parents`` todo parents (children first,
    as a pipeline creates them). Returns (parent ids, child ids)."""
    parent_ids = [f"{prefix}_p{i}" for i in range(parents)]
    child_ids = [f"{prefix}_c{j}" for j in range(children)]
    rule = Depends(groups=[ParentGroup(name="input", ids=parent_ids, min_done=min_done)])
    pool.create([new_token(c, inputs=None, step=child_step, depends=rule) for c in child_ids])
    pool.create(
        [
            new_token(p, inputs=f"file:///in/{p}", step=parent_step).model_copy(
                update={"children": child_ids}
            )
            for p in parent_ids
        ]
    )
    return parent_ids, child_ids


def claim_all(pool: TokenPool, who: PilotInfo, step: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        token = pool.claim(who, step)
        assert token is not None
        ids.append(token.id)
    return ids


def check_promoted_once(
    pool: TokenPool, child: Token, parents: list[Token], inputs: list[str]
) -> None:
    """``child`` was promoted from ``parents`` (the done ones) exactly once, with ``inputs``."""
    done = [p for p in parents if p.status is TokenStatus.DONE]
    assert child.input == inputs, (child.input, inputs)
    assert [r.id for r in child.provenance] == [p.id for p in done]
    assert child.scrub_count == 0
    history = status_history(pool, child.id)
    assert promotions(history) == 1, history
    assert history[:2] == ["waiting", "todo"], history


# --- 1. the pool exactly as a SIGKILL between finish and settle leaves it ---------------------


def dead_after_last_parent(pool: TokenPool) -> tuple[list[str], str]:
    """Two parents claimed by one pilot; the first finished properly, the last one finished by
    the pool's write primitive alone, as a pilot killed right after that write leaves it."""
    parent_ids, [child_id] = family(pool, "dead", parents=2)
    first, last = claim_all(pool, DEAD, "scatter", 2)
    pool.finish(first, DEAD.pilot, **finished(first))
    assert pool.get(child_id).status is TokenStatus.WAITING  # one parent still running
    pool._update(last, lambda t: transitions.finish(t, DEAD.pilot, time.time(), **finished(last)))
    child = pool.get(child_id)
    assert child.status is TokenStatus.WAITING and child.lock == -1
    assert pool.get(last).settled is False and pool.get(first).settled is True
    assert pool._unsettled_ids() == [last]
    return parent_ids, child_id


def complete_by(
    how: str, pool: TokenPool, env: dict[str, str], step: str | None = None
) -> Token | None:
    """Let one pool user other than the dead pilot come along (a pilot of ``step``, or of any
    step); the token it claimed, if any."""
    if how == "claim":
        other = twin(pool)
        try:
            return other.claim(OTHER, step)  # nothing is todo: the claim settles first
        finally:
            other.close()
    if how == "status":
        gridlrt(env, "status", "--pool", pool_url(pool))
    elif how == "recover":
        out = gridlrt(env, "tokens", "recover", "--stale-after", "1h", "--pool", pool_url(pool))
        assert "recovered 0 token(s)" in out.stdout
    return None


@pytest.mark.parametrize("how", ["claim", "status", "recover"])
def test_a_pilot_dead_after_its_last_parent_strands_no_child(
    how: str, pool: TokenPool, tmp_path: Path
) -> None:
    env = cli_env(tmp_path)
    parent_ids, child_id = dead_after_last_parent(pool)

    claimed = complete_by(how, pool, env)

    if how == "claim":
        assert claimed is not None and claimed.id == child_id
        assert claimed.status is TokenStatus.LOCKED
    else:
        assert pool.get(child_id).status is TokenStatus.TODO
    assert pool._unsettled_ids() == []
    assert all(pool.get(p).settled is True for p in parent_ids)
    before = pool.document(child_id)
    # promotion is idempotent: every other pool user coming along changes nothing (the
    # claim is a pilot of the parents' step, which finds nothing to do)
    for again in ("claim", "status", "recover"):
        assert complete_by(again, pool, env, "scatter") is None
    assert pool.settle_pending() == 0 and pool.settle_child(child_id) is False
    assert pool.document(child_id) == before  # not even a new revision on CouchDB

    if how != "claim":
        assert pool.overview().by_status("gather")["todo"] == 1
        claimed = pool.claim(OTHER)
        assert claimed is not None and claimed.id == child_id
    assert pool.claim(OTHER) is None
    child = pool.get(child_id)
    check_promoted_once(
        pool, child, [pool.get(p) for p in parent_ids], list(map(out_url, parent_ids))
    )
    assert child.scrub_count == 0 and len(child.attempts) == 1


def dead_while_blocking_down_a_chain(pool: TokenPool) -> tuple[str, str, str, str]:
    """scatter P -> C (all of P) -> G (half of C and Q). Q is done; P fails for good, and the
    pilot dies after writing C blocked and before telling G (what ``settle_child`` writes and
    then passes on to the grandchildren): G, whose rule still holds with Q, must run."""
    half = Depends(groups=[ParentGroup(ids=["chain_c", "chain_q"], min_done=0.5)])
    pool.create([new_token("chain_g", inputs=None, step="gather", depends=half)])
    all_of_p = Depends(groups=[ParentGroup(ids=["chain_p"])])
    chained = new_token("chain_c", inputs=None, step="gather", depends=all_of_p)
    pool.create([chained.model_copy(update={"children": ["chain_g"]})])
    pool.create(
        [
            new_token(i, inputs=f"file:///in/{i}", step="scatter").model_copy(
                update={"children": [child]}
            )
            for i, child in (("chain_q", "chain_g"), ("chain_p", "chain_c"))
        ]
    )
    claimed = claim_all(pool, DEAD, "scatter", 2)
    pool.finish("chain_q", DEAD.pilot, **finished("chain_q"))
    assert pool.get("chain_g").status is TokenStatus.WAITING  # C may still be done
    pool._update(
        "chain_p", lambda t: transitions.fail(t, DEAD.pilot, time.time(), message="broken")
    )
    parents = pool.by_id(["chain_p"])
    pool._update("chain_c", lambda t: dependencies.settled_child(t, parents) or t)
    assert pool.get("chain_c").status is TokenStatus.BLOCKED
    assert pool.get("chain_g").status is TokenStatus.WAITING
    # the blocked C owes G the news as much as the failed P owes it to C: both are unsettled
    assert sorted(pool._unsettled_ids()) == ["chain_c", "chain_p"]
    assert sorted(claimed) == ["chain_p", "chain_q"]
    return "chain_p", "chain_c", "chain_q", "chain_g"


@pytest.mark.parametrize("how", ["claim", "status", "recover"])
def test_a_pilot_dead_while_blocking_down_a_chain_strands_no_grandchild(
    how: str, pool: TokenPool, tmp_path: Path
) -> None:
    failed, blocked, done, grandchild = dead_while_blocking_down_a_chain(pool)

    claimed = complete_by(how, pool, cli_env(tmp_path), "gather")

    assert pool._unsettled_ids() == []
    token = claimed or pool.get(grandchild)
    assert token.id == grandchild and token.status is not TokenStatus.WAITING, (
        f"{grandchild} stranded: waiting although its rule holds ({blocked} failed for good, "
        f"{done} done, min_done 0.5)"
    )
    check_promoted_once(pool, pool.get(grandchild), [pool.get(done)], [out_url(done)])
    assert pool.get(blocked).status is TokenStatus.BLOCKED and pool.get(failed).settled is True


# --- 2. a real pilot, really SIGKILLed right after its parent is done --------------------------

SCATTER_STEP = """name = "scatter"
kind = "command"
command = ["sh", "-c", "echo {token_id} > out.txt"]
[inputs]
kind = "none"
[outputs]
keep = ["out.txt"]
url = "{root}/{token_id}/{name}"
"""

GATHER_STEP = """name = "gather"
kind = "command"
command = ["sh", "-c", "echo {token_id} >> RUNS; for u in {inputs}; do echo $u >> seen.txt; done"]
[inputs]
kind = "none"
[outputs]
keep = ["seen.txt"]
url = "{root}/{token_id}/{name}"
"""


def write_steps(tmp_path: Path) -> tuple[Path, Path]:
    """The two steps; the gather step appends its token id to the returned runs file on every
    run (so a child that ran twice shows twice)."""
    steps = tmp_path / "steps"
    steps.mkdir()
    runs = tmp_path / "runs.txt"
    runs.touch()
    (steps / "scatter.toml").write_text(SCATTER_STEP)
    (steps / "gather.toml").write_text(GATHER_STEP.replace("RUNS", str(runs)))
    return steps, runs


def start_pilot(
    pool: TokenPool, tmp_path: Path, steps: Path, name: str, *extra: str
) -> subprocess.Popen[bytes]:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    with (logs / f"{name}.log").open("wb") as out:
        return subprocess.Popen(
            [
                GRIDLRT, "worker", "run", "--pool", pool_url(pool), "--steps-dir", str(steps),
                "--heartbeat", "1s", "--workdir", str(tmp_path / "scratch"),
                "--output-root", (tmp_path / "results").as_uri(), *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRIDLRT_JOB_ID": name},
            start_new_session=True,
        )  # fmt: skip


def kill_when_done(
    pool: TokenPool, proc: subprocess.Popen[bytes], token_id: str, delay: float
) -> None:
    """Watch ``token_id`` as fast as the pool answers; ``delay`` s after it is done, SIGKILL."""
    deadline = time.monotonic() + 120
    while pool.get(token_id).status is not TokenStatus.DONE:
        if proc.poll() is not None:
            raise AssertionError(f"pilot ended (exit {proc.returncode}) before {token_id} was done")
        if time.monotonic() > deadline:
            raise AssertionError(f"{token_id} not done after 120 s")
    if delay:
        time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


CHILDREN_PER_PARENT = 6  # settling takes one read-modify-write per child: a wider window


def test_sigkill_right_after_the_last_parent_strands_and_repeats_nothing(
    pool: TokenPool, tmp_path: Path
) -> None:
    steps, runs = write_steps(tmp_path)
    rng = random.Random(20261130)
    rounds = 10
    landed: Counter[str] = Counter()
    families: list[tuple[list[str], list[str], str]] = []  # parents, children, first parent
    for r in range(rounds):
        # the first parent was done long ago; the pilot runs the last one
        parent_ids, child_ids = family(pool, f"kill{r}", children=CHILDREN_PER_PARENT)
        [first] = claim_all(pool, DEAD, "scatter", 1)
        pool.finish(first, DEAD.pilot, **finished(first))
        [last] = [p for p in parent_ids if p != first]
        pilot = start_pilot(pool, tmp_path, steps, f"scatter-{r}", "--step", "scatter",
                            "--idle-timeout", "60s")  # fmt: skip
        # half the kills at once (mostly between the finish and the last promotion), the rest
        # after a random small delay (mostly after it, while the pilot idles)
        kill_when_done(pool, pilot, last, 0.0 if r % 2 == 0 else rng.uniform(0.0, 0.3))
        waiting = sum(1 for c in child_ids if pool.get(c).status is TokenStatus.WAITING)
        if pool.get(last).settled is False:
            landed["before settle" if waiting == len(child_ids) else "mid settle"] += 1
        else:
            landed["after settle"] += 1
        families.append((parent_ids, child_ids, first))
    print(f"\n{type(pool).__name__}: kills landed {dict(landed)}")
    assert landed["before settle"] + landed["mid settle"] >= 1, landed  # the window was hit

    second = start_pilot(pool, tmp_path, steps, "gather", "--idle-timeout", "2s")
    assert second.wait(300) == 0, (tmp_path / "logs" / "gather.log").read_text()[-3000:]

    all_children = [c for _, children, _ in families for c in children]
    ran = Counter(runs.read_text().split())
    stranded = [c for c in all_children if pool.get(c).status is not TokenStatus.DONE]
    twice = [c for c in all_children if ran[c] > 1 or len(pool.get(c).attempts) > 1]
    print(f"children {len(all_children)}: stranded {len(stranded)}, run twice {len(twice)}")
    assert stranded == [] and twice == []
    results = (tmp_path / "results").as_uri()
    for parent_ids, child_ids, first in families:
        parents = [pool.get(p) for p in parent_ids]
        assert all(p.status is TokenStatus.DONE and p.settled is True for p in parents)
        # the first parent's output is made up; the last one's is what the pilot uploaded
        inputs = [out_url(p) if p == first else f"{results}/{p}/out.txt" for p in parent_ids]
        for child_id in child_ids:
            child = pool.get(child_id)
            check_promoted_once(pool, child, parents, inputs)
            seen = (tmp_path / "results" / child_id / "seen.txt").read_text().split()
            assert seen == child.input
    assert pool._unsettled_ids() == []


# --- 3. two parents finishing at the same moment, through two pool objects ---------------------


def finish_together(
    pools: list[TokenPool], prefix: str, min_done: float, fails: int
) -> tuple[list[str], str]:
    """One child, two parents; a thread per pool claims one parent, then both finish (the
    first ``fails`` of them fail for good instead) at the same moment."""
    parent_ids, [child_id] = family(pools[0], prefix, min_done=min_done)
    barrier = threading.Barrier(len(pools))
    errors: list[BaseException] = []

    def pilot(i: int, pool: TokenPool) -> None:
        who = PilotInfo(pilot=f"pilot-{i}", host=f"wn{i}.example.org")
        try:
            token = pool.claim(who, "scatter")
            assert token is not None
            barrier.wait(30)
            if i < fails:
                pool.fail(token.id, who.pilot, "broken", retry=False)
            else:
                pool.finish(token.id, who.pilot, **finished(token.id))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=pilot, args=(i, p)) for i, p in enumerate(pools)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return parent_ids, child_id


@pytest.fixture
def two_pools(pool: TokenPool) -> Iterator[list[TokenPool]]:
    other = twin(pool)
    yield [pool, other]
    other.close()


@pytest.mark.parametrize(
    ("min_done", "fails", "expected"),
    [(1.0, 0, "todo"), (0.5, 1, "todo"), (0.5, 2, "blocked")],
    ids=["both-finish", "one-fails", "both-fail"],
)
def test_parents_finishing_at_the_same_moment_promote_once(
    two_pools: list[TokenPool], min_done: float, fails: int, expected: str
) -> None:
    pool = two_pools[0]
    rounds = 30
    outcomes: Counter[str] = Counter()
    gaps: list[float] = []  # between the two parents' final writes' clocks
    for r in range(rounds):
        parent_ids, child_id = finish_together(two_pools, f"race{r}", min_done, fails)
        child = pool.get(child_id)
        parents = [pool.get(p) for p in parent_ids]
        history = status_history(pool, child_id)
        if child.status is TokenStatus.WAITING:
            outcomes["lost (still waiting)"] += 1
        elif history.count(expected) > 1 or promotions(history) > 1:
            outcomes["twice"] += 1
        elif child.status.value == expected:
            outcomes["once"] += 1
        else:
            outcomes[f"{child.status.value}?"] += 1
        ended = [p.attempts[-1].ended or 0.0 for p in parents]
        gaps.append(abs(ended[0] - ended[1]))
        assert history == ["waiting", expected], (r, history)
        assert all(p.settled is True for p in parents), [p.settled for p in parents]
        if expected == "todo":
            done = [p.id for p in parents if p.status is TokenStatus.DONE]
            assert len(done) == 2 - fails
            check_promoted_once(pool, child, parents, list(map(out_url, done)))
        else:
            assert child.provenance == [] and child.input is None
            assert "2 failed" in child.blocked_reason
    gaps.sort()
    print(
        f"\n{type(pool).__name__} {rounds} rounds: {dict(outcomes)}; parents finished "
        f"{gaps[len(gaps) // 2] * 1000:.1f} ms apart (median), {gaps[-1] * 1000:.1f} ms at most"
    )
    assert outcomes == Counter(once=rounds)
    assert pool._unsettled_ids() == []
