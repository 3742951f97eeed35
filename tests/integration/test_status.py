"""``gridlrt status``: snapshots of real pools, the command on the embedded pool and on
CouchDB, and ``--watch`` while a real pilot drains a pool (the arithmetic on tokens made by
hand is in tests/unit/test_monitor.py)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridlrt.config import load_settings
from gridlrt.errors import ExitCode
from gridlrt.monitor import (
    Monitor,
    snapshot,
)
from gridlrt.tokens import TokenPool, TokenStatus, new_token, open_pool
from tests.gridlrt_cli import cli_env, gridlrt
from tests.token_factories import NODE, who

# --- reading a pool ---------------------------------------------------------------------------


def embedded(tmp_path: Path) -> tuple[str, TokenPool]:
    url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    pool = open_pool(load_settings(pool=url))
    pool.init()
    return url, pool


def fill(pool: TokenPool, now: float) -> None:
    """A run in progress: 10 todo, 3 done, 1 error, 2 running (one of them silent)."""
    pool.create(new_token(f"avg_{i}", inputs=f"L1_SB{i:03d}", step="avg") for i in range(16))
    for i in range(6):
        token = pool.claim(who(i), step="avg")
        assert token is not None
        if i < 3:
            pool.finish(token.id, who(i).pilot)
        elif i == 3:
            pool.fail(token.id, who(i).pilot, "DP3 exited 1\nStd exception: no DATA column")
        else:
            pool.set_status(token.id, who(i).pilot, TokenStatus.RUNNING)
            pool.heartbeat(token.id, who(i).pilot, NODE)
    # pilot-5 went silent two minutes ago
    silent = pool.get("avg_5")
    assert silent.status is TokenStatus.RUNNING
    pool._update(
        "avg_5", lambda t: t.model_copy(update={"heartbeat": now - 120, "lock": int(now - 130)})
    )


def test_snapshot_of_an_embedded_pool(tmp_path: Path) -> None:
    _, pool = embedded(tmp_path)
    now = time.time()
    fill(pool, now)
    snap = snapshot(pool, now=now + 1)
    step = snap.step("avg")
    assert step.counts["todo"] == 10 and step.counts["running"] == 2
    assert (step.done, step.failing_total, step.remaining) == (3, 1, 12)
    assert step.throughput.done_in_window == 3 and step.throughput.per_minute > 0
    assert step.eta_seconds is not None and step.eta_seconds > 0
    assert [f.message for f in step.failing] == ["DP3 exited 1"]
    assert [(r.token_id, r.stale) for r in step.pilots] == [("avg_5", True), ("avg_4", False)]
    assert step.pilots[1].mem_total_mb == 64000


def test_monitor_lists_done_tokens_again_only_when_their_number_changed(tmp_path: Path) -> None:
    _, pool = embedded(tmp_path)
    pool.create(new_token(f"avg_{i}", inputs=f"L1_SB{i:03d}", step="avg") for i in range(4))
    listed: list[TokenStatus | None] = []
    original = pool.tokens

    def counting(status: TokenStatus | None = None, step: str | None = None) -> Any:
        listed.append(status)
        return original(status, step)

    pool.tokens = counting  # type: ignore[method-assign]

    def finish_one(i: int) -> None:
        token = pool.claim(who(i), step="avg")
        assert token is not None
        pool.finish(token.id, who(i).pilot)

    finish_one(0)
    monitor = Monitor(pool, budget=0.1)
    assert monitor.snapshot().step("avg").done == 1
    assert listed.count(TokenStatus.DONE) == 1
    monitor.snapshot()
    assert listed.count(TokenStatus.DONE) == 1  # nothing new was done: the old listing serves
    finish_one(1)
    time.sleep(0.05)
    assert monitor.snapshot().step("avg").throughput.done_in_window == 2
    assert listed.count(TokenStatus.DONE) == 2
    # a listing is repeated at most once per cost/budget: with a tiny budget, not yet
    stingy = Monitor(pool, budget=1e-9)
    first = stingy.snapshot()
    finish_one(2)
    later = stingy.snapshot()
    assert later.step("avg").done == 3  # counts are always fresh
    assert later.step("avg").throughput.done_in_window == 2  # the rate as listed then
    assert later.step("avg").throughput.measured_at == first.taken
    assert listed.count(TokenStatus.ERROR) == 0  # none in error: nothing to list
    assert listed.count(TokenStatus.RUNNING) == 0  # nor active ones, with none active


# --- the command --------------------------------------------------------------------------------


def test_status_command_on_the_embedded_pool(tmp_path: Path) -> None:
    url, pool = embedded(tmp_path)
    fill(pool, time.time())
    env = cli_env(tmp_path)
    out = gridlrt(env, "status", "--pool", url).stdout
    assert re.search(r"avg\s.*3/16 \(19%\).*10 todo\s+2 running\s+3 done\s+1 error", out), out
    assert "failing: 1 token(s) in error" in out
    assert re.search(r"avg_3\s.*DP3 exited 1", out)
    assert "Std exception" not in out  # the first line only
    assert re.search(
        r"wn4\.grid\.sara\.nl\s.*job-4\s.*avg_4\s.*running\s.*ago\s.*2\.50\s.*38% of 62\.5G", out
    ), out
    assert re.search(r"wn5\.grid\.sara\.nl\s.*avg_5\s.*probably lost", out)
    assert "gridlrt tokens recover --stale-after 1m30s" in out
    data = json.loads(gridlrt(env, "status", "--pool", url, "--json", "--stale-after", "5m").stdout)
    [step] = data["steps"]
    assert step["counts"]["todo"] == 10 and data["stale_pilots"] == 0 and data["hint"] is None
    assert {row["token_id"]: row["load"] for row in step["pilots"]} == {"avg_4": 2.5, "avg_5": 2.5}
    assert not data["finished"]


def test_status_command_user_errors_and_help(tmp_path: Path) -> None:
    url, pool = embedded(tmp_path)
    pool.create([new_token("avg_1", inputs="L1_SB001", step="avg")])
    env = cli_env(tmp_path)
    for args, message in [
        (("--step", "average"), "error: no tokens of step 'average' in sqlite:///"),
        (("--interval", "0"), "error: --interval '0': must be longer than 0 s"),
        (("--window", "soon"), "error: not a duration: 'soon'"),
    ]:
        result = gridlrt(env, "status", "--pool", url, *args, check=False)
        assert result.returncode == ExitCode.INPUT
        assert result.stderr.startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    missing = gridlrt(env, "status", "--pool", f"sqlite:///{tmp_path / 'nope.sqlite'}", check=False)
    # not "retry later": waiting does not make the pool file; `gridlrt pool init` does
    assert missing.returncode == ExitCode.INPUT and "does not exist" in missing.stderr
    helptext = gridlrt(env, "status", "--help").stdout
    assert "--watch" in helptext and "--until-done" in helptext and "Examples" in helptext
    assert "status" in gridlrt(env, "--help").stdout


def test_status_command_over_couchdb(tmp_path: Path, couchdb_database: str) -> None:
    env = cli_env(tmp_path)
    gridlrt(env, "pool", "init", "--pool", couchdb_database)
    pool = open_pool(load_settings(pool=couchdb_database))
    now = time.time()
    fill(pool, now)
    data = json.loads(gridlrt(env, "status", "--pool", couchdb_database, "--json").stdout)
    [step] = data["steps"]
    assert step["counts"] == {
        "waiting": 0, "blocked": 0, "todo": 10, "locked": 0, "downloading": 0, "running": 2,
        "uploading": 0, "done": 3, "error": 1,
    }  # fmt: skip
    assert step["throughput"]["done_in_window"] == 3
    assert [f["message"] for f in step["failing"]] == ["DP3 exited 1"]
    assert [(r["token_id"], r["stale"], r["mem_used_pct"]) for r in step["pilots"]] == [
        ("avg_5", True, 37.5), ("avg_4", False, 37.5),
    ]  # fmt: skip
    out = gridlrt(env, "status", "--pool", couchdb_database, "--step", "avg").stdout
    assert "3/16" in out and "probably lost" in out and couchdb_database in out


# --- watching ---------------------------------------------------------------------------------

NAP_STEP = (
    'name = "nap"\nkind = "command"\ncommand = ["sleep", "0.5"]\n'
    '[inputs]\nkind = "none"\n'
    '[outputs]\nkeep = []\nurl = "{root}/{step}/{token_id}/{name}"\n'
)


def start(env: dict[str, str], out: Path, *args: str) -> subprocess.Popen[bytes]:
    with out.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "gridlrt", *args], env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def frames(text: str) -> list[str]:
    return [f for f in re.split(r"(?m)^(?=gridlrt status · )", text) if f.startswith("gridlrt")]


def test_watch_until_done_while_a_pilot_works(tmp_path: Path) -> None:
    url, pool = embedded(tmp_path)
    pool.create(new_token(f"nap_{i}", inputs=f"L1_SB{i:03d}", step="nap") for i in range(6))
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "nap.toml").write_text(NAP_STEP)
    env = cli_env(tmp_path, GRIDLRT_STORAGE_ROOT=f"file://{tmp_path / 'storage'}")
    plain_out, json_out = tmp_path / "plain.txt", tmp_path / "frames.jsonl"
    watch = ("status", "--pool", url, "--watch", "--interval", "0.2s", "--until-done")
    plain = start(env, plain_out, *watch, "--step", "nap")
    lines = start(env, json_out, *watch, "--json")
    wait_until(lambda: "gridlrt status" in plain_out.read_text(), "the first plain frame")
    wait_until(lambda: json_out.read_text().count("\n") >= 1, "the first JSON frame")
    pilot = start(
        env, tmp_path / "pilot.txt",
        "worker", "run", "--pool", url, "--step", "nap", "--steps-dir", str(steps),
        "--heartbeat", "0.2s", "--workdir", str(tmp_path / "work"),
    )  # fmt: skip
    try:
        assert pilot.wait(timeout=120) == 0, (tmp_path / "pilot.txt").read_text()
        assert plain.wait(timeout=60) == 0
        assert lines.wait(timeout=60) == 0
    finally:
        for proc in (pilot, plain, lines):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # plain frames: progress moves, and the watch ends on the frame where all are done
    text = plain_out.read_text()
    done = [int(m.group(1)) for f in frames(text) if (m := re.search(r"nap .* (\d)/6 \(", f))]
    assert len(done) == len(frames(text)) >= 3, text
    assert done == sorted(done) and done[0] < 6 and done[-1] == 6
    assert len(set(done)) >= 3, done
    assert "nothing left to do" in frames(text)[-1]
    assert "nothing left to do" not in "".join(frames(text)[:-1])

    # JSON lines: the same story, and the pilots' heartbeats carry the node's load and memory
    snaps = [json.loads(line) for line in json_out.read_text().splitlines()]
    counts = [s["steps"][0]["done"] for s in snaps]
    assert counts == sorted(counts) and counts[-1] == 6 and snaps[-1]["finished"]
    assert not any(s["finished"] for s in snaps[:-1])
    last = snaps[-1]["steps"][0]
    assert last["throughput"]["done_in_window"] == 6 and last["eta_seconds"] == 0
    rows = [row for s in snaps for row in s["steps"][0]["pilots"]]
    assert rows, "no frame caught the pilot at work"
    assert {row["host"] for row in rows} == {socket.gethostname()}
    for row in rows:
        if row["load"] is not None:
            assert row["mem_used_pct"] is not None and row["mem_total_mb"] > 0
    for token in pool.tokens(TokenStatus.DONE, "nap"):
        assert {"load", "mem_used_pct", "mem_total_mb"} <= set(token.progress), token.progress
        assert 0 <= token.progress["mem_used_pct"] <= 100


def test_ctrl_c_ends_a_plain_watch_with_exit_0(tmp_path: Path) -> None:
    url, pool = embedded(tmp_path)
    pool.create([new_token("avg_1", inputs="L1_SB001", step="avg")])
    out = tmp_path / "watch.txt"
    proc = start(cli_env(tmp_path), out, "status", "--pool", url, "--watch", "--interval", "0.2s")
    try:
        wait_until(lambda: len(frames(out.read_text())) >= 2, "two frames")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert text.rstrip().endswith("stopped watching")
    assert all("0/1 (0%)" in f for f in frames(text))
    assert "Traceback" not in text


def run_in_terminal(
    args: list[str], env: dict[str, str], stop_after: float | None
) -> tuple[int, str]:
    """Run gridlrt with a pseudo-terminal as stdout; SIGINT after ``stop_after`` seconds."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridlrt", *args],
        env={**env, "TERM": "xterm-256color"},
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    output = b""
    started = time.monotonic()
    signalled = False
    try:
        while True:
            if stop_after is not None and not signalled and time.monotonic() - started > stop_after:
                proc.send_signal(signal.SIGINT)
                signalled = True
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
            if time.monotonic() - started > 60:
                raise AssertionError("gridlrt status --watch did not end in a terminal")
        return proc.wait(timeout=30), output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_live_watch_in_a_terminal(tmp_path: Path) -> None:
    url, pool = embedded(tmp_path)
    pool.create([new_token(f"avg_{i}", inputs=f"L1_SB{i:03d}", step="avg") for i in range(2)])
    env = cli_env(tmp_path)
    watch = ["status", "--pool", url, "--watch", "--interval", "0.2s"]
    code, screen = run_in_terminal(watch, env, stop_after=3.0)
    assert code == 0, screen
    assert "0/2 (0%)" in screen and "Traceback" not in screen
    assert "\x1b[" in screen  # drawn for a terminal
    for i in range(2):
        token = pool.claim(who(i), step="avg")
        assert token is not None
        pool.finish(token.id, who(i).pilot)
    code, screen = run_in_terminal([*watch, "--until-done"], env, stop_after=None)
    assert code == 0 and "2/2 (100%)" in screen and "nothing left to do" in screen
