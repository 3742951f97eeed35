"""bench/million_bench.py --quick at tiny sizes: it runs end to end (create, the read paths at
three moments, claimer processes with and without a step at two levels, bulk done, ``gridlrt
tokens archive``) and its figures add up - against its own JSON and against the pool file and
the archive it leaves in --workdir. Speed is never checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gridlrt.tokens.sqlite import SQLitePool

BENCH = Path(__file__).resolve().parents[2] / "bench" / "million_bench.py"
TOKENS, CLAIMS, ANY_CLAIMS, DONE, LEVELS = 1500, 200, 40, 300, (1, 3)


@pytest.mark.slow
def test_million_bench_quick_figures_add_up(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "figures.json"
    argv = [
        sys.executable, str(BENCH), "--quick", "--tokens", str(TOKENS), "--claims", str(CLAIMS),
        "--any-claims", str(ANY_CLAIMS), "--done", str(DONE),
        "--claimers", ",".join(map(str, LEVELS)), "--warm", "0",
        "--workdir", str(work), "--json-out", str(out),
    ]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for header in ("| tokens | read inputs", "| call |", "| claim | claimers |", "| done tokens |"):
        assert header in run.stdout, header
    figures = json.loads(out.read_text())
    assert figures["create"]["tokens"] == TOKENS

    # every claim run: each claimer's claims distinct tokens, all of them done afterwards
    runs = figures["claims"]
    assert sorted((r["mode"], r["claimers"]) for r in runs) == sorted(
        (mode, n) for mode in ("any", "step") for n in LEVELS
    )
    for r in runs:
        wanted = CLAIMS if r["mode"] == "step" else ANY_CLAIMS
        assert r["cycles"] == r["distinct"] == r["tokens"] == wanted, r
        assert (r["doubled"], r["extra"], r["not_done"], r["lost"], r["errors"]) == (
            0, 0, 0, 0, []
        ), r  # fmt: skip
    claimed = len(LEVELS) * (CLAIMS + ANY_CLAIMS)

    # the pool at the three moments, and the archive of every done token
    todo, done, with_done = TOKENS - claimed - DONE, claimed + DONE, figures["reads"][1]
    assert [r["counts"] for r in figures["reads"]] == [
        {"todo": TOKENS},
        {"done": done, "todo": todo},
        {"todo": todo},
    ]
    assert set(with_done["figures"]) >= {"`overview()`", "`gridlrt.monitor.snapshot(pool)`"}
    archive = figures["archive"]
    assert archive["archived"] == archive["distinct"] == done
    assert archive["after"] == {"todo": todo}
    assert all(ok for _, ok in figures["checks"]), figures["checks"]

    # what the bench left behind says the same
    pool = SQLitePool(work / "pool.sqlite")
    assert pool.status_counts() == {"todo": todo}
    overview = pool.overview()
    assert overview.counts == {"bench": {"todo": todo}} and not overview.malformed
    pool.close()
    (archived,) = (work / "archive").glob("tokens-done-*.jsonl")
    docs = [json.loads(line) for line in archived.read_text().splitlines()]
    assert len(docs) == len({d["_id"] for d in docs}) == done
    assert {d["status"] for d in docs} == {"done"}
