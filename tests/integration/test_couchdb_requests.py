"""What a pilot's writes ask a CouchDB pool (pouchdb-server): attaching the log tail on the
revision the pool last wrote, then finishing, is two PUTs — no GET, no conflict — and the
attachment survives the finish; when somebody else wrote the token meanwhile, both still land
(a 409, a read, a retry) and nothing is lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gridlrt.errors import PoolNotInitialised
from gridlrt.tokens import PilotInfo, TokenStatus, new_token
from gridlrt.tokens import couchdb as couchdb_module
from gridlrt.tokens.couchdb import CouchDBPool
from tests.services.couchdb import CouchDB

ANN = PilotInfo(pilot="pilot-ann", host="wn1")
BOB = PilotInfo(pilot="pilot-bob", host="wn2")


class Counted:
    """A pool's requests by method and answer status, from now on."""

    def __init__(self, pool: CouchDBPool) -> None:
        self.pool = pool
        self.before = Counter(pool.sent)

    @property
    def seen(self) -> Counter[str]:
        """``"PUT 201"``: how many such requests since this was made."""
        counted: Counter[str] = Counter()
        for kind, n in (self.pool.sent - self.before).items():
            method, *_what, status = kind.split()
            counted[f"{method} {status}"] += n
        return counted


@pytest.fixture
def pool(couchdb: CouchDB) -> Iterator[CouchDBPool]:
    made = CouchDBPool(couchdb.new_database("requests"))
    made.init()
    made.create([new_token("t1", inputs="x", step="s")])
    yield made
    made.close()


def test_attach_then_finish_is_two_puts_and_keeps_the_attachment(pool: CouchDBPool) -> None:
    token = pool.claim(ANN)
    assert token is not None
    counted = Counted(pool)

    pool.attach("t1", "log.txt", b"DP3 finished\n")
    pool.finish("t1", ANN.pilot)

    writes = {k: n for k, n in counted.seen.items() if not k.startswith("GET")}
    assert writes == {"PUT 201": 2}
    assert not any(k.startswith("GET") for k in counted.seen)
    fresh = CouchDBPool(pool.db_url)
    try:
        assert fresh.attachment("t1", "log.txt") == b"DP3 finished\n"
        assert fresh.get("t1").status.value == "done"
    finally:
        fresh.close()


def test_a_write_by_somebody_else_in_between_costs_a_retry_not_the_attachment(
    pool: CouchDBPool,
) -> None:
    token = pool.claim(ANN)
    assert token is not None
    pool.attach("t1", "log.txt", b"first\n")
    other = CouchDBPool(pool.db_url)
    try:
        other.attach("t1", "extra.txt", b"by another pool\n")
    finally:
        other.close()
    counted = Counted(pool)

    pool.attach("t1", "log.txt", b"second\n")
    pool.finish("t1", ANN.pilot)

    assert counted.seen["PUT 409"] >= 1
    fresh = CouchDBPool(pool.db_url)
    try:
        assert fresh.attachment("t1", "log.txt") == b"second\n"
        assert fresh.attachment("t1", "extra.txt") == b"by another pool\n"
        assert fresh.get("t1").status.value == "done"
    finally:
        fresh.close()


# --- contended claims: the ring and the claim view read from the last head -----------------


def lose_a_race(couchdb: CouchDB, name: str, n: int) -> tuple[CouchDBPool, CouchDBPool]:
    """Pools ``mine`` and ``other`` on ``n`` todo tokens; ``mine`` has lost a race (its next
    candidate was taken by ``other``), so it claims the contended way from now on."""
    url = couchdb.new_database(name)
    mine, other = CouchDBPool(url), CouchDBPool(url)
    mine.init()
    mine.create([new_token(f"t{i:02d}", inputs="x") for i in range(n)])
    first = mine.claim(ANN)  # alone: the head, and the rest of the read is kept
    assert first is not None and first.id == "t00"
    assert other.claim(BOB) is not None  # takes t01, the next on mine's list
    assert mine.claim(ANN) is not None  # tries t01: taken, so it goes elsewhere
    assert mine._contended_until > 0
    return mine, other


def test_a_contended_claimer_reads_the_claim_view_from_its_last_head(couchdb: CouchDB) -> None:
    mine, other = lose_a_race(couchdb, "heads", 30)
    reads: list[dict[str, Any]] = []
    view = mine._view

    def spy(name: str, **params: Any) -> list[dict[str, Any]]:
        reads.append({"view": name, **params})
        return view(name, **params)

    mine._view = spy  # type: ignore[method-assign]
    mine._pending.clear()  # the kept rest of the last read is used up
    assert mine.claim(ANN) is not None
    (read,) = [r for r in reads if r["view"] == "gridlrt_next" and r["startkey"][0] == 0]
    head = read["startkey"]  # the head of its first read: t00's key (JSON may round the float)
    assert head[:2] == [0, 0] and head[2] == pytest.approx(mine.get("t00").created, abs=1e-3)
    mine.close()
    other.close()


def test_a_token_before_the_head_is_claimed_all_the_same(couchdb: CouchDB) -> None:
    mine, other = lose_a_race(couchdb, "urgent", 12)
    other.create([new_token("urgent", inputs="x", priority=5)])  # sorts before every head
    taken = []
    while (token := mine.claim(ANN)) is not None:
        taken.append(token.id)
        mine.finish(token.id, ANN.pilot)
    assert "urgent" in taken  # at the latest when a read from the head finds nothing
    assert other.overview().total(TokenStatus.TODO) == 0
    mine.close()
    other.close()


def test_a_full_read_at_least_every_full_read_every(
    couchdb: CouchDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = lose_a_race(couchdb, "full", 12)
    monkeypatch.setattr(couchdb_module, "FULL_READ_EVERY", 0.0)
    other.create([new_token("urgent", inputs="x", priority=5)])
    mine._pending.clear()
    token = mine.claim(ANN)
    assert token is not None and token.id == "urgent"
    mine.close()
    other.close()


def test_contended_candidates_are_a_rotation_of_one_ring() -> None:
    ids = [f"SB{i:03d}" for i in range(50)]
    ring = sorted(ids, key=couchdb_module._ring)
    for _ in range(20):
        walked = couchdb_module._elsewhere(ring)
        start = ring.index(walked[0])
        assert walked == ring[start:] + ring[:start]
    assert couchdb_module._elsewhere([]) == []


def test_a_pool_with_older_views_says_to_run_pool_init(couchdb: CouchDB) -> None:
    url = couchdb.new_database("older")
    pool = CouchDBPool(url)
    pool.init()
    pool.create([new_token("t1", inputs="x")])
    design = requests.get(f"{url}/_design/Monitor", timeout=10).json()
    del design["views"]["gridlrt_next"]  # as gridlrt's design version 6 had it
    design["gridlrt_version"] = 6
    assert requests.put(f"{url}/_design/Monitor", json=design, timeout=10).status_code == 201
    with pytest.raises(PoolNotInitialised, match=r"gridlrt_next .*run `gridlrt pool init`"):
        pool.claim(ANN)
    pool.init()  # upgrades the design in place
    token = pool.claim(ANN)
    assert token is not None and token.id == "t1"
    pool.close()
