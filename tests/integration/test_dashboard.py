"""The dashboard's pages on real pools (both backends) through Starlette's TestClient: the
counts are those of ``gridlrt status --json`` and ``pipeline_status``, a token page shows its
error and log tail, the DAG links stages to their tokens, filters work, images of file://
outputs are proxied and nothing else is, no page shows a secret, nothing is written to the
pool, and a guarded app refuses requests without its access token."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gridlrt.config import Settings
from gridlrt.dashboard import app as dashboard_app
from gridlrt.dashboard.app import create_app
from gridlrt.monitor import Monitor, Snapshot, snapshot
from gridlrt.pipelines.service import PipelineStatus, create_pipeline, pipeline_status
from gridlrt.tokens import PilotInfo, TokenPool, TokenStatus, new_token
from gridlrt.tokens.model import UploadResult
from tests.gridlrt_cli import cli_env, gridlrt

PASSWORD = "s3cr3t-Pa55word"
MACAROON = "MDAxY2xvY2F0aW9uIGRjYWNoZS1tYWNhcm9vbi1zZWNyZXQ"

PIPELINE = """
name = "demo"
description = "prep then image"
[inputs]
target = "target subbands"

[[stage]]
name = "prep"
step = "prep"
over = "target"

[[stage]]
name = "image"
step = "image"
over = "prep"
gather = "all"
"""

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00"
    b"\x00\x00IEND\xaeB`\x82"
)


def pilot(i: int) -> PilotInfo:
    return PilotInfo(pilot=f"pilot-{i}", host=f"wn{i}.grid.surf.nl", job_id=f"job-{i}")


def mid_run(pool: TokenPool, tmp_path: Path) -> None:
    """A pipeline run mid-way: of 6 prep tokens 2 done (one with a PNG output), 1 error (with
    a log tail), 1 running; the image stage waits. And 3 plain tokens of step "avg"."""
    definition = tmp_path / "demo.toml"
    definition.write_text(PIPELINE)
    listed = tmp_path / "target_srm.txt"
    listed.write_text("\n".join(f"file:///lta/L500_SB{sb:03d}_uv.MS.tar" for sb in range(6)) + "\n")
    create_pipeline(Settings(pool=pool_url(pool)), definition, {"target": listed})
    pool.create(new_token(f"avg_{i}", inputs=f"L1_SB{i:03d}", step="avg") for i in range(3))
    images = tmp_path / "results"
    images.mkdir()
    (images / "SB000.png").write_bytes(PNG)
    (images / "secret.txt").write_text("not an image")
    for i in range(4):
        token = pool.claim(pilot(i), step="prep")
        assert token is not None
        if i == 0:
            pool.finish(
                token.id,
                pilot(i).pilot,
                uploads=[
                    UploadResult(url=(images / "SB000.png").as_uri(), size=len(PNG)),
                    UploadResult(url=f"davs://alice:{PASSWORD}@webdav.example/x?authz={MACAROON}"),
                ],
                timings={"claim": 0.1, "download": 0.5, "run": 1.0, "upload": 0.2},
            )
        elif i == 1:
            pool.finish(
                token.id,
                pilot(i).pilot,
                uploads=[UploadResult(url=(images / "secret.txt").as_uri())],
            )
        elif i == 2:
            pool.fail(
                token.id,
                pilot(i).pilot,
                "DP3 exited 1",
                exception="Std exception: no DATA column",
                log_tail="reading L500_SB002\nDP3 exited 1 (no DATA column)",
            )
        else:
            pool.set_status(token.id, pilot(i).pilot, TokenStatus.RUNNING)
            pool.heartbeat(token.id, pilot(i).pilot, {"load": 1.5, "mem_used_pct": 40.0})


def pool_url(pool: TokenPool) -> str:
    return getattr(pool, "db_url", pool.url)


def revisions(pool: TokenPool) -> dict[str, Any]:
    return {t.id: (t.rev, t.status, t.heartbeat, len(t.attempts)) for t in pool.tokens()}


@pytest.fixture
def client(pool: TokenPool, tmp_path: Path) -> TestClient:
    mid_run(pool, tmp_path)
    return TestClient(create_app(pool, ttl=0.0, slow_ttl=0.0))


def test_overview_counts_match_the_status_snapshot_and_pipeline_status(
    client: TestClient, pool: TokenPool
) -> None:
    page = client.get("/")
    assert page.status_code == 200, page.text
    html = page.text
    snap = snapshot(pool)
    prep = next(s for s in pipeline_status(pool)[0].stages if s.name == "prep")
    assert prep.counts["done"] == 2 and prep.counts["error"] == 1
    row = re.search(r'<tr data-stage="prep">.*?</tr>', html, re.S)
    assert row is not None
    assert 'data-done="2">2/6</td>' in row.group(0)
    assert '<span class="tag s-running" data-count="running">1 running</span>' in row.group(0)
    assert '<span class="tag s-todo" data-count="todo">2 todo</span>' in row.group(0)
    image = re.search(r'<tr data-stage="image">.*?</tr>', html, re.S)
    assert image is not None and "1 blocked" in image.group(0)
    for step in snap.steps:
        assert f'data-done="{step.done}">{step.done}/{step.total}' in html
    assert "DP3 exited 1" in html  # the failing list
    api = client.get("/api/status").json()
    assert [s["counts"] for s in api["steps"]] == [s.counts for s in snap.steps]
    assert api["pipelines"][0]["stages"][0]["counts"] == prep.counts


def test_pipeline_page_draws_the_dag_with_links_to_the_tokens(client: TestClient) -> None:
    html = client.get("/pipeline/demo").text
    assert "<svg" in html and 'data-stage="prep"' in html
    assert 'href="/tokens?run=demo&amp;stage=image"' in html
    assert "2/6 done" in html
    assert client.get("/pipeline/nope").status_code == 404
    tokens = client.get("/tokens?run=demo&stage=prep").text
    assert 'id="matching" data-n="6"' in tokens
    errors = client.get("/tokens?status=error").text
    assert 'data-n="1"' in errors and "demo.prep.L500_SB002" in errors
    assert 'data-n="1"' in client.get("/tokens?status=running").text
    assert 'data-n="1"' in client.get("/tokens?subband=3&run=demo").text
    assert 'data-n="1"' in client.get("/tokens?host=wn0").text
    assert client.get("/tokens?status=bogus").status_code == 400


def test_token_page_shows_attempts_error_and_log_tail(client: TestClient) -> None:
    html = client.get("/token/demo.prep.L500_SB002").text
    assert "DP3 exited 1" in html and "no DATA column" in html
    assert "reading L500_SB002" in html  # the log tail
    assert "pilot-2" in html and "wn2.grid.surf.nl" in html and "job-2" in html
    done = client.get("/token/demo.prep.L500_SB000").text
    assert "download 0.50 s" in done
    assert '<img src="/image/demo.prep.L500_SB000?n=0"' in done
    assert client.get("/token/nope").status_code == 404


def test_images_of_file_outputs_are_proxied_and_nothing_else(client: TestClient) -> None:
    shown = client.get("/image/demo.prep.L500_SB000?n=0")
    assert shown.status_code == 200 and shown.content == PNG
    assert shown.headers["content-type"] == "image/png"
    assert client.get("/image/demo.prep.L500_SB000?n=1").status_code == 404  # davs://
    assert client.get("/image/demo.prep.L500_SB001?n=0").status_code == 404  # not an image
    assert client.get("/image/demo.prep.L500_SB000?n=7").status_code == 404
    data = client.get("/data?run=demo&stage=prep").text
    assert "SB000.png" in data


def test_no_page_shows_a_secret_and_nothing_is_written(client: TestClient, pool: TokenPool) -> None:
    before = revisions(pool)
    urls = ["/", "/pipeline/demo", "/tokens", "/tokens?status=done", "/pilots", "/plots",
            "/data", "/data?run=demo&stage=prep", "/api/status"]  # fmt: skip
    urls += [f"/token/{t}" for t in before]
    urls += [u.replace("/", "/fragment/", 1) for u in urls if u not in ("/", "/api/status")]
    urls.append("/fragment/overview")
    for url in urls:
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.text[:500])
        assert PASSWORD not in answer.text, url
        assert MACAROON not in answer.text, url
        assert "alice" not in answer.text, url
    assert revisions(pool) == before
    assert client.post("/").status_code == 405


def test_pilots_and_plots_pages(client: TestClient) -> None:
    pilots = client.get("/pilots").text
    assert 'id="pilot-count" data-n="1"' in pilots
    assert "wn3.grid.surf.nl" in pilots and "job-3" in pilots and "1.50" in pilots
    plots = client.get("/plots").text
    assert plots.count("<svg") == 2 and "tokens done over time" in plots
    assert "pilot-0" in plots  # a row of the timeline


def test_a_guarded_app_needs_its_token(pool: TokenPool, tmp_path: Path) -> None:
    mid_run(pool, tmp_path)
    client = TestClient(create_app(pool, access_token="letmein-123"))
    for url in ("/", "/api/status", "/static/live.js", "/token/avg_0", "/?token=wrong"):
        answer = client.get(url, follow_redirects=False)
        assert answer.status_code == 401, url
        assert "demo" not in answer.text
    entry = client.get("/tokens?token=letmein-123&status=todo", follow_redirects=False)
    assert entry.status_code == 303
    assert entry.headers["location"] == "/tokens?status=todo"
    assert "letmein" not in entry.headers["set-cookie"]
    assert "httponly" in entry.headers["set-cookie"].lower()
    assert client.get("/").status_code == 200  # the session cookie
    client.cookies.clear()
    assert client.get("/").status_code == 401


def test_the_cli_refuses_a_non_loopback_bind_without_printing_secrets(tmp_path: Path) -> None:
    env = cli_env(tmp_path, GRIDLRT_POOL=f"sqlite:///{tmp_path / 'none.sqlite'}")
    missing = gridlrt(env, "dashboard", "--port", "0", check=False)
    assert missing.returncode != 0
    assert "does not exist" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    helped = gridlrt(env, "dashboard", "--help").stdout
    assert "ssh -L 8080:127.0.0.1:8080" in helped


def test_status_json_and_dashboard_agree(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    env = cli_env(tmp_path, GRIDLRT_POOL=url)
    gridlrt(env, "pool", "init")
    from gridlrt.tokens import open_pool

    pool = open_pool(Settings(pool=url))
    mid_run(pool, tmp_path)
    status = json.loads(gridlrt(env, "status", "--json").stdout)
    api = TestClient(create_app(pool)).get("/api/status").json()
    assert [s["counts"] for s in api["steps"]] == [s["counts"] for s in status["steps"]]
    assert [s["counts"] for s in api["pipelines"][0]["stages"]] == [
        s["counts"] for s in status["pipelines"][0]["stages"]
    ]


def test_a_page_pays_for_one_reading_of_the_snapshot_and_of_the_runs(
    pool: TokenPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncached (``ttl=0``): the header's pool name is no reading, and a page built from the
    snapshot and the runs reads each of them once."""
    mid_run(pool, tmp_path)
    readings: list[str] = []
    snapshot_of = Monitor.snapshot

    def counted_snapshot(self: Monitor, now: float | None = None) -> Snapshot:
        readings.append("snapshot")
        return snapshot_of(self, now)

    def counted_runs(pool: TokenPool) -> list[PipelineStatus]:
        readings.append("runs")
        return pipeline_status(pool)

    monkeypatch.setattr(Monitor, "snapshot", counted_snapshot)
    monkeypatch.setattr(dashboard_app, "pipeline_status", counted_runs)
    client = TestClient(create_app(pool, ttl=0.0, slow_ttl=0.0))
    for url in ("/", "/fragment/overview", "/pipeline/demo", "/pilots", "/api/status",
                "/tokens", "/plots", "/data", "/token/avg_0"):  # fmt: skip
        readings.clear()
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert readings.count("snapshot") <= 1 and readings.count("runs") <= 1, (url, readings)
        if url in ("/", "/fragment/overview", "/api/status", "/pipeline/demo"):
            assert sorted(readings) == ["runs", "snapshot"], (url, readings)


def test_an_expired_page_is_served_at_once_and_read_again_in_the_background(
    pool: TokenPool, tmp_path: Path
) -> None:
    """With the cache on, the request that finds the overview expired gets the old one (and
    says how old it is); a background reading brings the new count a moment later."""
    mid_run(pool, tmp_path)
    ttl = 0.3
    with TestClient(create_app(pool, ttl=ttl)) as client:
        began = time.monotonic()
        first = client.get("/fragment/overview").text
        took = time.monotonic() - began  # at least the reading: it is kept max(ttl, 5 x that)
        assert 'data-n="2"' in first and 'id="read-age"' in first and "read 0s ago" in first
        token = pool.claim(pilot(7), step="prep")
        assert token is not None
        pool.finish(token.id, pilot(7).pilot)
        time.sleep(max(ttl, 5 * took) + 0.2)
        stale = client.get("/fragment/overview").text  # expired: the old reading, at once
        assert 'id="total-done" data-n="2"' in stale
        assert re.search(r"read [1-9]\d*s ago", stale), stale[:300]

        def refreshed() -> bool:
            return 'id="total-done" data-n="3"' in client.get("/fragment/overview").text

        deadline = time.monotonic() + 30
        while not refreshed():
            assert time.monotonic() < deadline, "the background reading never landed"
            time.sleep(0.05)
    refreshing = [t.name for t in threading.enumerate() if t.name.startswith("dashboard-refresh")]
    assert refreshing == []  # the app's shutdown waited for its readings
