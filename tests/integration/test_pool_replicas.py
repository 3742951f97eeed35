"""A pool on two CouchDB-protocol servers that replicate both ways (issue 19).

Each server accepts a claim of the same todo revision, and replication keeps both as
conflicting leaves: without ``replicas`` named, both pilots finish the token (reproduced
here). With them, a claim is confirmed on every copy before anything is published, the
loser stops and publishes nothing, and the losing revisions are deleted.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from gridlrt.errors import LostClaim, PoolNotInitialised, PoolUnavailable
from gridlrt.storage import Storage
from gridlrt.tokens import PilotInfo, TokenStatus, new_token, transitions
from gridlrt.tokens.conflicts import winner
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.model import Depends, ParentGroup
from gridlrt.worker.pilot import Pilot, PilotOptions
from gridlrt.worker.steps import StepConfig
from tests.gridlrt_cli import cli_env, gridlrt
from tests.services.couchdb import ReplicatedCouchDB
from tests.services.process import free_port


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

    def holds(url: str) -> bool:
        try:
            return bool(check(url))
        except PoolNotInitialised:  # the design document has not arrived yet
            return False

    while not all(holds(url) for url in pair):
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


def test_gathers_whose_parents_finish_on_different_copies_are_promoted_once(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """Gathers of two parents each, the parents finished at the same moment on different
    copies: every gather is promoted (neither copy may mark its parent settled having seen
    only its own parent done), by one revision (the same parents give the same document on
    either copy, hence the same revision: no conflict), and then published by one pilot."""
    a, b = replicated_couchdb.new_pair()
    pools = (CouchDBPool(a, replicas=[b]), CouchDBPool(b, replicas=[a]))
    pools[0].init()
    n = 6
    tokens = []
    for g in range(n):
        parents = [f"g{g}_p{k}" for k in range(2)]
        tokens += [new_token(p, inputs=f"L1_{p}", fields={"children": [f"g{g}"]}) for p in parents]
        tokens.append(
            new_token(f"g{g}", inputs=None, depends=Depends(groups=[ParentGroup(ids=parents)]))
        )
    pools[0].create(tokens)
    settle((a, b), lambda url: CouchDBPool(url).status_counts().get("todo") == 2 * n)
    for g in range(n):  # each copy's pilot holds one parent of every gather
        for k, pool in enumerate(pools):
            pool._update(
                f"g{g}_p{k}",
                lambda t, k=k: transitions.claim(t, PilotInfo(pilot=f"p{k}", host="wn"), 1.0),
            )
    settle((a, b), lambda url: CouchDBPool(url).status_counts().get("locked") == 2 * n)
    barrier = threading.Barrier(2)

    def finish_all(k: int) -> None:
        barrier.wait()
        for g in range(n):
            pools[k].finish(f"g{g}_p{k}", f"p{k}", output=f"file:///out/g{g}_p{k}")

    threads = [threading.Thread(target=finish_all, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    settle((a, b), lambda url: CouchDBPool(url).status_counts().get("todo") == n)
    for g in range(n):
        assert {doc(url, f"g{g}")["_rev"] for url in (a, b)} == {doc(a, f"g{g}")["_rev"]}
        assert doc(a, f"g{g}")["_rev"].startswith("2-")  # one promotion after its creation
        assert doc(a, f"g{g}")["input"] == [f"file:///out/g{g}_p0", f"file:///out/g{g}_p1"]
    assert conflicted(a) == {} and conflicted(b) == {}
    published: dict[str, list[str]] = defaultdict(list)

    def gatherer(k: int) -> None:
        barrier.wait()
        while (token := pools[k].claim(PilotInfo(pilot=f"gather-{k}", host="wn"))) is not None:
            try:
                pools[k].confirm(token.id, f"gather-{k}")
            except LostClaim:
                continue
            published[token.id].append(f"gather-{k}")
            pools[k].finish(token.id, f"gather-{k}", output=f"gather-{k}")

    threads = [threading.Thread(target=gatherer, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(published) == [f"g{g}" for g in range(n)]
    assert all(len(names) == 1 for names in published.values()), published
    settle((a, b), lambda url: CouchDBPool(url).status_counts() == {"done": 3 * n})
    settle((a, b), lambda url: conflicted(url) == {})


def test_conflicts_nobody_was_there_to_see_are_swept_by_pool_users(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """Two pilots of a gridlrt that did not know of the replicas each finished a token:
    the next pool user that looks for pending promotions settles the conflict too."""
    a, b, pool_a, pool_b = two_claims(replicated_couchdb, replicas=False)
    pool_a.finish("sb_001", "pilot-a", output="from-a")
    pool_b.finish("sb_001", "pilot-b", output="from-b")
    replicated_couchdb.replicate(a, b)
    replicated_couchdb.replicate(b, a)
    assert conflicted(a)
    aware = CouchDBPool(a, replicas=[b])
    aware.settle_pending()
    assert aware.resolved == 1
    replicated_couchdb.replicate(a, b)
    assert conflicted(a) == {} and conflicted(b) == {}
    assert doc(a, "sb_001")["output"] == doc(b, "sb_001")["output"]
    assert CouchDBPool(b).status_counts() == {"done": 1}


def test_pool_resolve_shows_then_settles_conflicts(
    replicated_couchdb: ReplicatedCouchDB, tmp_path: Path
) -> None:
    a, b, pool_a, pool_b = two_claims(replicated_couchdb, replicas=False)
    pool_a.finish("sb_001", "pilot-a", output="from-a")
    pool_b.finish("sb_001", "pilot-b", output="from-b")
    replicated_couchdb.replicate(b, a)
    losing = conflicted(a)["sb_001"]
    env = cli_env(tmp_path, GRIDLRT_POOL=a)
    shown = gridlrt(env, "pool", "resolve", "--dry-run").stdout
    assert "sb_001" in shown and "would be deleted" in shown and losing[0] in shown
    assert "dry run: nothing changed" in shown
    assert conflicted(a) == {"sb_001": losing}
    done = gridlrt(env, "pool", "resolve").stdout
    assert "settled 1 token(s)" in done
    assert conflicted(a) == {}
    kept = doc(a, "sb_001")["_rev"]
    assert f"sb_001 │ {kept}" in done.replace("┃", "│")  # the revision the table said it kept
    assert "no token of" in gridlrt(env, "pool", "resolve").stdout


class _ClusterGate(BaseHTTPRequestHandler):
    """A fake of what only a CouchDB cluster says (none can run here): forwards to the
    pouchdb-server, adds a 3-copy ``cluster`` to the database's info, and answers writes
    202 (stored on fewer copies than the write quorum) the way a degraded cluster does.
    Records every request line, to see what gridlrt asks."""

    protocol_version = "HTTP/1.1"
    server: Any

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self.server.seen.append(f"{self.command} {self.path}")
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
        answer = requests.request(
            self.command, self.server.upstream + self.path, headers=headers, data=body, timeout=60
        )
        content, status = answer.content, answer.status_code
        path = self.path.split("?")[0].strip("/")
        if self.command == "GET" and "/" not in path and status == 200:
            content = json.dumps(
                {**answer.json(), "cluster": {"q": 2, "n": 3, "w": 2, "r": 2}}
            ).encode()
        if self.command in ("PUT", "POST") and status == 201:
            status = 202
        self.send_response(status)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_PUT = do_POST = do_DELETE = _forward

    def log_message(self, *args: Any) -> None:
        pass


def test_on_a_couchdb_cluster_claims_are_confirmed_on_all_its_copies(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """One cluster URL, no replicas named: gridlrt learns from the database's info that
    every document has 3 copies, reads a token's revisions from all of them (r=3) to
    confirm a claim, and takes a 202 (stored, below the write quorum) as a write done."""
    upstream, _ = replicated_couchdb.new_pair(continuous=False)
    origin, name = upstream.rsplit("/", 1)
    gate = ThreadingHTTPServer(("127.0.0.1", 0), _ClusterGate)
    gate.upstream, gate.seen = origin, []  # type: ignore[attr-defined]
    threading.Thread(target=gate.serve_forever, daemon=True).start()
    try:
        pool = CouchDBPool(f"http://127.0.0.1:{gate.server_address[1]}/{name}")
        pool.init()
        pool.create([new_token("sb_004", inputs="L1_SB004")])
        assert pool.clustered
        token = pool.claim(PilotInfo(pilot="p", host="wn"))
        assert token is not None and token.status is TokenStatus.LOCKED
        pool.heartbeat("sb_004", "p")
        done = pool.finish("sb_004", "p", output="x")
        assert done.status is TokenStatus.DONE
        reads = [line for line in gate.seen if "open_revs=all" in line]  # type: ignore[attr-defined]
        assert reads and all("r=3" in line for line in reads)
        assert doc(upstream, "sb_004")["status"] == "done"
    finally:
        gate.shutdown()
        gate.server_close()


def graft(db_url: str, token_id: str, base_rev: str, body: dict[str, Any], length: int) -> str:
    """Put a branch of ``length`` revisions on ``base_rev`` into ``db_url`` the way
    replication brings one (``new_edits: false``); its first revision id is the largest
    there is, so it loses to any other branch from ``base_rev``. Returns its leaf revision."""
    generation, base_id = base_rev.split("-", 1)
    ids = [f"{'f' * 31}{k}" for k in range(length)]
    top = int(generation) + length
    leaf = {
        **body,
        "_id": token_id,
        "_rev": f"{top}-{ids[-1]}",
        "_revisions": {"start": top, "ids": [*ids[::-1], base_id]},
    }
    answer = requests.post(
        f"{db_url}/_bulk_docs", json={"docs": [leaf], "new_edits": False}, timeout=30
    )
    answer.raise_for_status()
    return str(leaf["_rev"])


def test_a_promotion_reads_the_winning_revision_of_a_parent_not_the_longest(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """A parent finished by its confirmed pilot, and a losing branch of it, longer (a loser
    that kept heartbeating), arrives before the children are told: CouchDB shows the longest
    branch, a locked token; the promotion settles the conflict first and sees it done."""
    a, b = replicated_couchdb.new_pair()
    pool = CouchDBPool(a, replicas=[b])
    pool.init()
    pool.create(
        [
            new_token("p", inputs="L1_SB001", fields={"children": ["c"]}),
            new_token("c", inputs=None, depends=Depends(groups=[ParentGroup(ids=["p"])])),
        ]
    )
    todo_rev = doc(a, "p")["_rev"]
    settle((a, b), lambda url: doc(url, "p").get("_rev") == todo_rev)
    claimed = pool.claim(PilotInfo(pilot="winner", host="wn1"))
    assert claimed is not None and claimed.id == "p"
    pool.confirm("p", "winner")
    done = pool._update(
        "p", lambda t: transitions.finish(t, "winner", 2.0, output="file:///out/p")
    )  # finished, children not told yet
    ghost = {k: v for k, v in claimed.to_doc().items() if not k.startswith("_")}
    ghost["attempts"][-1]["pilot"] = "ghost"
    graft(a, "p", todo_rev, ghost, length=6)
    assert doc(a, "p")["status"] == "locked"  # what CouchDB shows: the longest branch
    pool.settle(done)
    assert doc(a, "c")["status"] == "todo"
    assert doc(a, "c")["input"] == ["file:///out/p"]
    assert doc(a, "p")["status"] == "done" and conflicted(a) == {}


def claimed_on_a(replicated: ReplicatedCouchDB, token_id: str) -> tuple[str, str, CouchDBPool]:
    """One token claimed by pilot "p" on the first of two copies, the claim replicated to the
    second (which replicates only when told)."""
    a, b = replicated.new_pair(continuous=False)
    pool_a = CouchDBPool(a, replicas=[b])
    pool_a.init()
    pool_a.create([new_token(token_id, inputs=f"L1_{token_id}")])
    assert pool_a.claim(PilotInfo(pilot="p", host="wn", heartbeat_interval=0.3)) is not None
    replicated.replicate(a, b)
    return a, b, pool_a


def test_recover_leaves_a_token_whose_pilot_heartbeats_on_another_copy(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """The copy `tokens recover` runs on has not heard from the pilot lately (replication
    lags, or is down); the pilot's own copy has: the token stays with its pilot. A copy that
    does not answer keeps it too. Without the other copies named, it would be taken."""
    a, b, pool_a = claimed_on_a(replicated_couchdb, "sb_005")
    time.sleep(1.0)
    beat = pool_a.heartbeat("sb_005", "p").heartbeat  # on the pilot's copy only
    when = {"stale_after": 0.7, "now": beat + 0.2, "force": True}
    assert CouchDBPool(b, replicas=[a]).recover(**when) == []
    assert doc(b, "sb_005")["status"] == "locked"
    down = CouchDBPool(b, replicas=[f"http://127.0.0.1:{free_port()}/x"], retries=1)
    assert down.recover(**when) == []
    assert CouchDBPool(b).recover(**when) == ["sb_005"]  # a pool that knows no other copy
    assert doc(b, "sb_005")["status"] == "todo"


def test_recover_leaves_a_token_finished_on_another_copy(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """The pilot finished on its copy, and the finish has not reached the copy recover runs
    on: recovering there would make a todo revision that may win over the finish and throw
    a published result away. The token is left alone."""
    a, b, _ = claimed_on_a(replicated_couchdb, "sb_006")
    CouchDBPool(a)._update("sb_006", lambda t: transitions.finish(t, "p", time.time()))
    when = {"stale_after": 0.5, "now": time.time() + 5, "force": True}
    assert CouchDBPool(b, replicas=[a]).recover(**when) == []
    assert doc(b, "sb_006")["status"] == "locked"
    assert CouchDBPool(b).recover(**when) == ["sb_006"]  # a pool that knows no other copy


def test_the_winning_pilot_is_not_fooled_by_a_longer_losing_branch(
    replicated_couchdb: ReplicatedCouchDB,
) -> None:
    """The loser heartbeated more, so CouchDB shows its branch; a pilot that reads its token
    afresh (its last write unknown, or answered 409) must see its own, the rule's winner."""
    a, b, pool_a, pool_b = two_claims(replicated_couchdb, replicas=False)
    replicated_couchdb.replicate(a, b)
    leaves_a = CouchDBPool(b, replicas=[a])._leaves("sb_001")  # both claims are on b
    won = winner(leaves_a).doc["attempts"][-1]["pilot"]  # type: ignore[union-attr]
    lost = "pilot-b" if won == "pilot-a" else "pilot-a"
    loser_pool = {"pilot-a": pool_a, "pilot-b": pool_b}[lost]
    for _ in range(3):
        loser_pool.heartbeat("sb_001", lost)  # on a pool that knows no other copy
    replicated_couchdb.replicate(b, a)
    replicated_couchdb.replicate(a, b)
    shown = doc(a, "sb_001")
    assert shown["attempts"][-1]["pilot"] == lost  # CouchDB's choice: the longest branch
    url = {"pilot-a": (a, b), "pilot-b": (b, a)}[won]
    fresh = CouchDBPool(url[0], replicas=[url[1]])  # knows nothing it wrote: reads afresh
    beat = fresh.heartbeat("sb_001", won)
    assert beat.attempts[-1].pilot == won
    assert conflicted(url[0]) == {}
