"""``gridlrt demo``: the main job end to end on the embedded default pool, as a new user runs
it (``make demo``), and rerun."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from casacore import tables

from gridlrt.config import load_settings
from gridlrt.tokens import TokenStatus, open_pool
from tests.gridlrt_cli import cli_env, gridlrt

PNG = b"\x89PNG\r\n\x1a\n"


def test_demo_runs_end_to_end_and_rerun_does_no_work(tmp_path: Path) -> None:
    env = cli_env(tmp_path)  # nothing set: the embedded default pool and storage root
    first = gridlrt(env, "demo", "--subbands", "4", "--json")
    result = json.loads(first.stdout)

    assert result["step"] == "flag-average" and result["created"] == 4
    assert result["record"]["backend"] == "local"
    rows = result["rows"]
    assert [r["subband"] for r in rows] == [100, 101, 102, 103]
    assert {r["status"] for r in rows} == {"done"}, rows
    data = tmp_path / "xdg-data" / "gridlrt"
    listed = (data / "demo" / "srm.txt").read_text().split()
    assert [line for line in listed if line.startswith("file://")] == result["observation"][
        "inputs"
    ]
    assert Path(result["observation"]["tarballs"][0]).name.startswith("L700700_SB100_uv.MS_")
    plot = Path(result["plot"])
    assert plot.read_bytes()[:8] == PNG and plot.stat().st_size > 20_000
    # the outputs are flagged, averaged measurement sets in the default storage root
    output = rows[0]["outputs"][0]
    assert output.startswith((data / "storage").as_uri())
    assert output.endswith("L700700_SB100_uv.flag-average.MS.tar")
    pool = open_pool(load_settings(pool=f"sqlite:///{data / 'pool.sqlite'}"))
    tokens = list(pool.tokens(step="flag-average"))
    attempts = {t.id: len(t.attempts) for t in tokens}
    assert {t.status for t in tokens} == {TokenStatus.DONE}

    again = gridlrt(env, "demo", "--subbands", "4", "--json")
    second = json.loads(again.stdout)
    assert second["created"] == 0 and second["record"] is None
    assert second["observation"]["made"] == 0
    assert [r["outputs"] for r in second["rows"]] == [r["outputs"] for r in rows]
    assert {t.id: len(t.attempts) for t in pool.tokens(step="flag-average")} == attempts
    assert len(pool.records("job")) == 1  # no second submission


def test_demo_table_and_where_things_are(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    out = gridlrt(env, "demo", "--subbands", "2", "--step", "average").stdout
    assert "average: 2 of 2 subbands done" in out
    assert "L700700_SB100_uv.average.MS.tar" in out
    assert "results: file://" in out and "plot:" in out and "progress.png" in out
    # the output is a real measurement set: averaged 64 -> 16 channels by DP3
    storage = tmp_path / "xdg-data" / "gridlrt" / "storage" / "L700700" / "average"
    [tarball] = [p for p in storage.iterdir() if p.name.startswith("L700700_SB100")]
    import tarfile

    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "check", filter="data")
    [ms] = list((tmp_path / "check").iterdir())
    with tables.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as spw:
        assert spw.getcol("NUM_CHAN")[0] == 16


def test_status_watch_during_the_demo_shows_progress_moving(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    data = tmp_path / "xdg-data" / "gridlrt"
    demo_out = (tmp_path / "demo.txt").open("w")
    demo = subprocess.Popen(
        [sys.executable, "-m", "gridlrt", "demo", "--subbands", "6", "--pilots", "1"],
        env=env, stdout=demo_out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        pool = None
        while pool is None or not list(pool.tokens(step="flag-average")):
            assert demo.poll() is None, (tmp_path / "demo.txt").read_text()
            assert time.monotonic() < deadline, "the demo never made its tokens"
            if (data / "pool.sqlite").exists():
                pool = open_pool(load_settings(pool=f"sqlite:///{data / 'pool.sqlite'}"))
            time.sleep(0.05)
        watch = gridlrt(env, "status", "--step", "flag-average", "--watch", "--until-done",
                        "--interval", "0.2s", "--json")  # fmt: skip
        assert demo.wait(timeout=120) == 0, (tmp_path / "demo.txt").read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo_out.close()
    done = [json.loads(line)["steps"][0]["done"] for line in watch.stdout.splitlines()]
    assert done == sorted(done) and done[-1] == 6, done
    assert len(set(done)) >= 2, f"no progress seen between frames: {done}"


def test_demo_dry_run_changes_nothing_and_bad_options_are_one_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    dry = gridlrt(env, "demo", "--subbands", "3", "--dry-run")
    assert "would make 3 of 3 archive tarballs" in dry.stdout
    assert "create 3 flag-average token(s)" in dry.stdout and "start 2 local pilot(s)" in dry.stdout
    assert not (tmp_path / "xdg-data").exists()  # no data, no pool, no run directory

    gridlrt(env, "demo", "--subbands", "2")
    planned = json.loads(gridlrt(env, "demo", "--subbands", "3", "--dry-run", "--json").stdout)
    assert planned["tarballs_to_make"] == 1 and planned["tokens_to_create"] == [
        "flag-average_L700700_SB102"
    ]
    assert planned["tokens_to_process"] == 1 and planned["pilots"] == 1

    for args, expected in [
        (("demo", "--subbands", "0"), "--subbands"),
        (("submit", "-b", "local", "--step", "x", "-n", "1", "--walltime", "0", "--dry-run"),
         "walltime: Input should be greater than 0"),
        (("submit", "-b", "nope", "--step", "x"), "unknown backend 'nope'"),
    ]:  # fmt: skip
        bad = gridlrt(env, *args, check=False)
        assert bad.returncode != 0 and expected in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
