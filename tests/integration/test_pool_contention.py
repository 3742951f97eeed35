"""Claims are exclusive: 16 processes race for 2,000 tokens; each is processed exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from gridlrt.config import load_settings
from gridlrt.tokens import TokenStatus, new_token, open_pool
from tests.services.couchdb import CouchDB

CLAIMERS = 16
TOKENS = 2000


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "couchdb"])
def test_sixteen_claimers_process_every_token_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    else:
        server: CouchDB = request.getfixturevalue("couchdb")
        url = f"{server.url}/contention_{time.time_ns()}"
    pool = open_pool(load_settings(pool=url))
    pool.init()
    pool.create(new_token(f"tok{i:05d}", inputs=f"in{i}") for i in range(TOKENS))
    pool.overview()  # build the views once, as `gridlrt pool init` + status would

    outs = [tmp_path / f"claimer{i}.txt" for i in range(CLAIMERS)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.pool_claimer", url, f"pilot{i}", str(out)],
            cwd=Path(__file__).resolve().parents[2],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]

    claimed = Counter(line for out in outs for line in out.read_text().split())
    twice = {token_id: n for token_id, n in claimed.items() if n > 1}
    assert twice == {}, f"{len(twice)} tokens processed more than once"
    assert len(claimed) == TOKENS
    busy = sum(1 for out in outs if out.read_text())
    assert busy > 1, "only one claimer ever got a token: no contention was tested"

    assert pool.overview().by_status() == {
        **{s.value: 0 for s in TokenStatus},
        "done": TOKENS,
    }
    for token in pool.tokens(TokenStatus.DONE):
        assert len(token.attempts) == 1, token.id
        assert token.output == token.attempts[0].pilot
    pool.close()
