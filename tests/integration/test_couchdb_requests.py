"""What a pilot's writes ask a CouchDB pool (pouchdb-server): attaching the log tail on the
revision the pool last wrote, then finishing, is two PUTs — no GET, no conflict — and the
attachment survives the finish; when somebody else wrote the token meanwhile, both still land
(a 409, a read, a retry) and nothing is lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from gridlrt.tokens import PilotInfo, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from tests.services.couchdb import CouchDB

ANN = PilotInfo(pilot="pilot-ann", host="wn1")


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
