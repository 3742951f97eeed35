"""A watcher's counts of a CouchDB pool follow its ``_changes`` feed (pouchdb-server).

After every kind of write (create, claim, heartbeat, finish, fail, reset, delete, promotion,
a malformed document put behind the pool's back and then repaired, records and the design
document, which are no tokens), a following pool's overview and stage counts equal a fresh
pool object's (the views' reduce). A repeated reading with nothing changed applies no change;
one after k writes applies about k; a change seen twice is not counted twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from gridlrt.monitor import Monitor
from gridlrt.tokens import PilotInfo, Token, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.model import Depends, ParentGroup
from tests.services.couchdb import CouchDB

ANN = PilotInfo(pilot="pilot-ann", host="wn1")


@pytest.fixture
def pools(couchdb: CouchDB) -> Iterator[tuple[CouchDBPool, str]]:
    url = couchdb.new_database("follow")
    pool = CouchDBPool(url)
    pool.init()
    pool.follow()
    yield pool, url
    pool.close()


def staged(n: int, stage: str, step: str = "average") -> list[Token]:
    made = []
    for i in range(n):
        token = new_token(f"{stage}_SB{i:03d}", inputs=f"L1_SB{i:03d}", step=step)
        made.append(token.model_copy(update={"pipeline": "run1", "stage": stage}))
    return made


def same_as_fresh(pool: CouchDBPool, url: str) -> None:
    fresh = CouchDBPool(url)
    try:
        expected, expected_stages = fresh.overview(), fresh.stage_counts()
    finally:
        fresh.close()
    seen = pool.overview()
    assert seen.counts == expected.counts
    assert set(seen.malformed) == set(expected.malformed)
    assert pool.stage_counts() == expected_stages


def test_following_counts_equal_the_views_after_every_kind_of_write(
    pools: tuple[CouchDBPool, str],
) -> None:
    pool, url = pools
    same_as_fresh(pool, url)  # empty
    prep = staged(6, "prep")
    # claimed first; its child is promoted when it finishes
    prep[0] = prep[0].model_copy(update={"priority": 10, "children": ["band_0"]})
    waits = Depends(groups=[ParentGroup(ids=[prep[0].id])])
    child = new_token("band_0", inputs=None, step="concat", depends=waits)
    pool.create([*prep, child.model_copy(update={"pipeline": "run1", "stage": "band"})])
    same_as_fresh(pool, url)
    assert pool.overview().counts["concat"] == {"waiting": 1}
    first = pool.claim(ANN)
    assert first is not None and first.id == prep[0].id
    pool.heartbeat(first.id, ANN.pilot)
    same_as_fresh(pool, url)
    pool.finish(first.id, ANN.pilot)  # promotes its child
    second = pool.claim(ANN, "average")
    assert second is not None
    pool.fail(second.id, ANN.pilot, "boom")
    same_as_fresh(pool, url)
    assert pool.overview().counts["concat"] == {"todo": 1}

    pool.reset(ids=[second.id])
    pool.delete(["prep_SB005"])
    pool.put_record("job", "j1", {"backend": "local"})
    same_as_fresh(pool, url)

    bad = {"_id": "raw", "type": "token", "lock": "soon", "done": 0, "step": "average"}
    put = requests.put(f"{url}/raw", json=bad, timeout=10)
    put.raise_for_status()
    same_as_fresh(pool, url)
    assert "raw" in pool.overview().malformed
    fixed = {**bad, "_rev": put.json()["rev"], "lock": 0}
    requests.put(f"{url}/raw", json=fixed, timeout=10).raise_for_status()
    same_as_fresh(pool, url)
    assert "raw" not in pool.overview().malformed
    assert pool.overview().counts["average"]["todo"] == 5  # 4 never claimed, the reset one


def test_a_repeated_reading_applies_only_what_changed(pools: tuple[CouchDBPool, str]) -> None:
    pool, _url = pools
    pool.create(staged(50, "prep"))
    follower = pool._follower
    assert follower is not None
    pool.overview()  # the load
    loaded = follower.changes_applied
    pool.overview()
    pool.stage_counts()
    assert follower.changes_applied == loaded  # nothing changed: no document read

    for _ in range(3):
        token = pool.claim(ANN)
        assert token is not None
        pool.finish(token.id, ANN.pilot)
    pool.overview()
    applied = follower.changes_applied - loaded
    assert 3 <= applied <= 3 * 2  # each token's latest revision, once or twice (claim, finish)
    assert pool.stage_counts()[("run1", "prep")] == {"todo": 47, "done": 3}


def test_a_change_seen_twice_is_counted_once(pools: tuple[CouchDBPool, str]) -> None:
    pool, url = pools
    pool.create(staged(10, "prep"))
    follower = pool._follower
    assert follower is not None
    pool.overview()
    start = follower.seq
    token = pool.claim(ANN)
    assert token is not None
    pool.finish(token.id, ANN.pilot)
    once = pool.overview()
    follower.seq = start  # as if the feed reported these changes again
    again = pool.overview()
    assert again.counts == once.counts == {"average": {"todo": 9, "done": 1}}
    same_as_fresh(pool, url)


def test_a_monitor_of_a_following_pool_sees_the_run(pools: tuple[CouchDBPool, str]) -> None:
    pool, url = pools
    pool.create(staged(8, "prep"))
    monitor = Monitor(pool)
    before = monitor.snapshot()
    for _ in range(2):
        token = pool.claim(ANN)
        assert token is not None
        pool.finish(token.id, ANN.pilot)
    time.sleep(0.01)
    after = monitor.snapshot()
    assert before.step("average").counts.get("todo") == 8
    assert after.step("average").counts.get("done") == 2
    assert after.step("average").counts.get("todo") == 6
    same_as_fresh(pool, url)


def test_readers_in_threads_while_changes_apply(pools: tuple[CouchDBPool, str]) -> None:
    """The dashboard reads counts from several threads while one of them applies changes."""
    pool, url = pools
    pool.create(staged(60, "prep"))
    writer = CouchDBPool(url)
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(40):
                pool.overview()
                pool.stage_counts()
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for _ in range(30):
        token = writer.claim(ANN)
        assert token is not None
        writer.finish(token.id, ANN.pilot)
    for thread in readers:
        thread.join()
    writer.close()

    assert failures == []
    same_as_fresh(pool, url)
    assert pool.stage_counts()[("run1", "prep")] == {"todo": 30, "done": 30}
