"""A pool on two CouchDB-protocol servers that replicate both ways (issue 19).

Each server accepts a claim of the same todo revision, and replication keeps both as
conflicting leaves: without ``replicas`` named, both pilots finish the token (reproduced
here). With them, a claim is confirmed on every copy before anything is published, the
loser stops and publishes nothing, and the losing revisions are deleted.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import requests

from gridlrt.errors import LostClaim, PoolUnavailable
from gridlrt.storage import Storage
from gridlrt.tokens import PilotInfo, TokenStatus, new_token
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.worker.pilot import Pilot, PilotOptions
from gridlrt.worker.steps import StepConfig
from tests.services.couchdb import ReplicatedCouchDB


def conflicted(db_url: str) -> dict[str, list[str]]:
    """Documents of ``db_url`` that have conflicting revisions: id -> the losing revisions."""
    rows = requests.get(
        f"{db_url}/_all_docs", params={"include_docs": "true", "conflicts": "true"}, timeout=30
    ).json()["rows"]
    return {r["id"]: r["doc"]["_conflicts"] for r in rows if r["doc"].get("_conflicts")}


def doc(db_url: str, token_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{db_url}/{token_id}", timeout=30).json())


def settle(pair: tuple[str, str], check: Any, timeout: float = 30.0) -> None:
    """Wait until ``check(url)`` holds on both copies (replication carries changes across)."""
    deadline = time.monotonic() + timeout
    while not all(check(url) for url in pair):
        assert time.monotonic() < deadline, "replication did not settle"
        time.sleep(0.1)


def two_claims(replicated: ReplicatedCouchDB, *, replicas: bool) -> Any:
    """One todo token on two copies that do not replicate yet, claimed once on each."""
    a, b = replicated.new_pair(continuous=False)
    pool_a = CouchDBPool(a, replicas=[b] if replicas else [], confirm_timeout=5)
    pool_b = CouchDBPool(b, replicas=[a] if replicas else [], confirm_timeout=5)
    pool_a.init()
    pool_a.create([new_token("sb_001", inputs="L1_SB001")])
    replicated.replicate(a, b)
    token_a = pool_a.claim(PilotInfo(pilot="pilot-a", host="wn1"))
    token_b = pool_b.claim(PilotInfo(pilot="pilot-b", host="wn2"))
    assert token_a is not None and token_b is not None
    assert token_a.id == token_b.id == "sb_001"
    return a, b, pool_a, pool_b


def test_without_replicas_named_two_pilots_both_finish_one_token(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """Today's failure, reproduced: each copy accepts a claim and a finish, and replication
    keeps both as conflicting revisions; nothing notices."""
    a, b, pool_a, pool_b = two_claims(replicated_couchdb, replicas=False)
    pool_a.finish("sb_001", "pilot-a", output="from-a")
    pool_b.finish("sb_001", "pilot-b", output="from-b")
    replicated_couchdb.replicate(a, b)
    replicated_couchdb.replicate(b, a)
    assert len(conflicted(a)["sb_001"]) == 1
    assert conflicted(a) == conflicted(b)


def test_the_same_claim_wins_on_every_copy_and_the_loser_is_told(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    a, b, pool_a, pool_b = two_claims(replicated_couchdb, replicas=True)
    replicated_couchdb.replicate(a, b)
    replicated_couchdb.replicate(b, a)
    outcomes: dict[str, str] = {}
    for name, pool in (("pilot-a", pool_a), ("pilot-b", pool_b)):
        try:
            pool.confirm("sb_001", name)
            outcomes[name] = "won"
        except LostClaim:
            outcomes[name] = "lost"
    assert sorted(outcomes.values()) == ["lost", "won"]
    winner = next(n for n, o in outcomes.items() if o == "won")
    loser = next(n for n, o in outcomes.items() if o == "lost")
    pools = {"pilot-a": pool_a, "pilot-b": pool_b}
    # the loser's revision is deleted where it was found; replication carries that across
    replicated_couchdb.replicate(a, b)
    replicated_couchdb.replicate(b, a)
    assert conflicted(a) == {} and conflicted(b) == {}
    for url in (a, b):
        assert doc(url, "sb_001")["attempts"][-1]["pilot"] == winner
    with pytest.raises(LostClaim):  # the loser's next heartbeat says so too
        pools[loser].heartbeat("sb_001", loser)
    with pytest.raises(LostClaim):  # and it cannot finish
        pools[loser].finish("sb_001", loser, output="loser")
    done = pools[winner].finish("sb_001", winner, output="winner")
    assert done.status is TokenStatus.DONE
    replicated_couchdb.replicate(a, b)
    replicated_couchdb.replicate(b, a)
    for url in (a, b):
        token = doc(url, "sb_001")
        assert (token["output"], token["status"]) == ("winner", "done")
        assert [attempt["pilot"] for attempt in token["attempts"]] == [winner]
    assert conflicted(a) == {} and conflicted(b) == {}


def test_a_heartbeat_tells_the_losing_pilot(replicated_couchdb: ReplicatedCouchDB) -> None:
    """Both copies hold both claims: the heartbeat of exactly one pilot raises LostClaim,
    whichever heartbeats first, and the winner's heartbeats go on."""
    a, b, pool_a, pool_b = two_claims(replicated_couchdb, replicas=True)
    replicated_couchdb.replicate(a, b)
    replicated_couchdb.replicate(b, a)
    order = [("pilot-a", pool_a), ("pilot-b", pool_b)]
    random.shuffle(order)
    lost = []
    for name, pool in order * 2:
        try:
            pool.heartbeat("sb_001", name)
        except LostClaim:
            lost.append(name)
    assert len(set(lost)) == 1


def test_confirm_waits_for_the_claim_to_reach_every_copy(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    a, b = replicated_couchdb.new_pair(continuous=False)
    pool = CouchDBPool(a, replicas=[b], confirm_timeout=1.0)
    pool.init()
    pool.create([new_token("sb_002", inputs="L1_SB002")])
    claimed = pool.claim(PilotInfo(pilot="pilot-a", host="wn1"))
    assert claimed is not None
    with pytest.raises(PoolUnavailable, match=r"has not reached .* replication runs"):
        pool.confirm("sb_002", "pilot-a")  # the other copy has never heard of the claim
    replicated_couchdb.replicate(a, b)
    pool.confirm("sb_002", "pilot-a")
    pool.finish("sb_002", "pilot-a", output="ok")


def test_many_claimers_on_two_copies_publish_every_token_once(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """16 claimers, 8 on each copy, replicating continuously: some tokens are claimed on
    both copies (work wasted, counted), none is published twice, and none is lost."""
    a, b = replicated_couchdb.new_pair()
    CouchDBPool(a).init()
    n = 120
    CouchDBPool(a).create([new_token(f"sb_{i:03d}", inputs=f"L1_SB{i:03d}") for i in range(n)])
    settle((a, b), lambda url: CouchDBPool(url).status_counts().get("todo") == n)
    published: dict[str, list[str]] = defaultdict(list)
    claimed: dict[str, list[str]] = defaultdict(list)
    lock = threading.Lock()
    start = threading.Barrier(16)

    def claimer(k: int) -> None:
        own, other = (a, b) if k % 2 else (b, a)
        pool = CouchDBPool(own, replicas=[other], confirm_timeout=60)
        name = f"pilot-{k}"
        start.wait()
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3.0:
            token = pool.claim(PilotInfo(pilot=name, host="wn"))
            if token is None:
                time.sleep(0.1)
                continue
            idle_since = time.monotonic()
            with lock:
                claimed[token.id].append(name)
            time.sleep(random.uniform(0, 0.05))  # the payload
            try:
                pool.confirm(token.id, name)
            except LostClaim:
                continue  # discarded: nothing published
            with lock:
                published[token.id].append(name)
            pool.finish(token.id, name, output=name)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    twice = {t: names for t, names in published.items() if len(names) > 1}
    assert twice == {}, f"published more than once: {twice}"
    assert len(published) == n, f"never published: {n - len(published)}"
    settle((a, b), lambda url: CouchDBPool(url).status_counts().get("done") == n)
    settle((a, b), lambda url: conflicted(url) == {})
    for url in (a, b):
        pool = CouchDBPool(url)
        for token in pool.tokens():
            assert token.output == published[token.id][0]
            assert [attempt.pilot for attempt in token.attempts] == [token.output]
    wasted = sum(len(names) - 1 for names in claimed.values())
    print(f"{wasted} of {n} tokens claimed on both copies (work discarded), none published twice")


def test_a_losing_pilot_stops_its_payload_and_uploads_nothing(
    replicated_couchdb: ReplicatedCouchDB, tmp_path: Path
) -> None:
    """Two real pilots, each on its copy, both claim the one token while replication is off;
    once it runs, the loser's heartbeat finds the winner's claim: its payload is stopped and
    nothing of it reaches the output URL. The winner confirms, uploads and finishes."""
    a, b = replicated_couchdb.new_pair(continuous=False)
    setup = CouchDBPool(a)
    setup.init()
    setup.create([new_token("sb_003", inputs="L1_SB003", step="publish")])
    replicated_couchdb.replicate(a, b)
    out = tmp_path / "out"
    out.mkdir()
    step = StepConfig(
        name="publish",
        kind="command",
        command=["sh", "-c", "sleep 4; pwd > where.txt"],
        inputs={"kind": "none"},
        outputs={"keep": ["where.txt"], "log": False, "url": "{root}/{token_id}/{name}"},
    )
    pilots = [
        Pilot(
            CouchDBPool(own, replicas=[other], confirm_timeout=60),
            lambda name: step,
            Storage(),
            storage_root=out.as_uri(),
            options=PilotOptions(
                workroot=tmp_path / f"work-{k}",
                heartbeat_interval=0.3,
                max_tokens=1,
                idle_timeout=0,
                keep_workdirs=True,
            ),
        )
        for k, (own, other) in enumerate(((a, b), (b, a)))
    ]
    threads = [threading.Thread(target=pilot.run) for pilot in pilots]
    for thread in threads:
        thread.start()
    settle((a, b), lambda url: doc(url, "sb_003")["lock"] > 0)  # claimed on each copy
    for source, target in ((a, b), (b, a)):
        requests.post(
            f"{replicated_couchdb.first.url}/_replicate",
            json={"source": source, "target": target, "continuous": True},
            timeout=30,
        ).raise_for_status()
    for thread in threads:
        thread.join(120)
    summaries = sorted((p.summary.done, p.summary.lost) for p in pilots)
    assert summaries == [(0, 1), (1, 0)]
    winner = next(p for p in pilots if p.summary.done)
    loser = next(p for p in pilots if p.summary.lost)
    published = (out / "sb_003" / "where.txt").read_text().strip()
    assert Path(published).parent == winner.options.workroot
    assert not list(loser.options.workroot.glob("sb_003.*/where.txt")), "the loser ran to the end"
    settle((a, b), lambda url: doc(url, "sb_003")["status"] == "done" and conflicted(url) == {})
    for url in (a, b):
        assert [x["pilot"] for x in doc(url, "sb_003")["attempts"]] == [winner.who.pilot]
