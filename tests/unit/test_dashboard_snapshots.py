"""The dashboard's page models (gridlrt.dashboard.snapshots): pure functions of snapshots and
tokens made by hand — no pool, no server, no browser."""

from __future__ import annotations

from gridlrt.dashboard import snapshots as pages
from gridlrt.monitor import build_snapshot
from gridlrt.pipelines.definition import Pipeline
from gridlrt.pipelines.service import StageStatus
from gridlrt.tokens import TokenStatus, new_token
from gridlrt.tokens.model import UploadResult
from tests.token_factories import NOW, done_token, error_token, overview_of, running_token


def test_safe_url_drops_credentials_queries_and_fragments() -> None:
    assert pages.safe_url("https://ann:pw@couch.example:6984/db") == "https://couch.example:6984/db"
    assert (
        pages.safe_url("davs://webdav.example/x/a.tar?authz=MDAxY2xvY2F0aW9u#frag")
        == "davs://webdav.example/x/a.tar"
    )
    assert pages.safe_url("http://ann:p#ss?w@host:5984/db") == "http://host:5984/db"
    assert pages.safe_url("sqlite:////tmp/pool.sqlite") == "sqlite:////tmp/pool.sqlite"
    assert pages.safe_parameters({"LTA_TOKEN": "x", "avg_freqstep": 4}) == {
        "LTA_TOKEN": "***",
        "avg_freqstep": "4",
    }


def test_segments_group_the_active_statuses_as_running() -> None:
    counts = {s.value: 0 for s in TokenStatus} | {"locked": 1, "uploading": 1, "done": 2}
    assert pages.categorize(counts) == {
        "waiting": 0, "todo": 0, "running": 2, "done": 2, "error": 0, "blocked": 0
    }  # fmt: skip
    bar = pages.segments(counts)
    assert [(s.status, s.count, s.percent) for s in bar] == [
        ("running", 2, 50.0),
        ("done", 2, 50.0),
    ]
    assert pages.segments({}) == []


def test_overview_page_from_a_snapshot() -> None:
    done = [done_token(i, NOW - 300, NOW - 200 + 10 * i) for i in range(4)]
    failed = [error_token(10, NOW - 30, "DP3 exited 1\nmore")]
    active = [running_token(20, NOW - 200)]  # silent for 200 s: stale
    tokens = done + failed + active
    snap = build_snapshot(
        overview_of(tokens, todo={"avg": 5}), active=active, done=done, failed=failed, now=NOW,
        pool_url="https://ann:pw@couch.example/db",
    )  # fmt: skip
    page = pages.overview_page(snap, [])
    assert page.pool == "https://couch.example/db"
    [step] = page.steps
    assert (step.done, step.total) == (4, 11)
    assert step.counts == {"waiting": 0, "todo": 5, "running": 1, "done": 4, "error": 1,
                           "blocked": 0}  # fmt: skip
    assert step.throughput.endswith("/min") and step.eta not in ("", "-")
    assert [f.message for f in page.failing] == ["DP3 exited 1"]
    assert page.stale_pilots == 1 and page.hint
    [pilot] = pages.pilot_views(snap)
    assert pilot.stale and pilot.load == "2.50" and pilot.memory == "38% of 62.5 GB"


def test_token_filter_and_rows() -> None:
    tokens = [
        done_token(1, NOW - 100, NOW - 50),
        error_token(2, NOW - 10, "boom"),
        running_token(3, NOW - 5),
        new_token("avg_L1_SB004", inputs="srm://x/L1_SB004_uv.MS.tar", step="avg"),
    ]
    listing = pages.token_list(tokens, pages.TokenFilter(status="running"), now=NOW)
    assert [r.id for r in listing.rows] == ["avg_3"] and listing.rows[0].category == "running"
    assert pages.token_list(tokens, pages.TokenFilter(subband=4), now=NOW).matching == 1
    assert pages.token_list(tokens, pages.TokenFilter(host="WN2"), now=NOW).rows[0].error == "boom"
    assert pages.token_list(tokens, pages.TokenFilter(), now=NOW, limit=2).matching == 4
    wanted = pages.TokenFilter(run="r 1", status="done")
    assert wanted.query() == "run=r%201&status=done"
    assert wanted.statuses() == [TokenStatus.DONE]
    assert len(pages.TokenFilter(status="running").statuses() or []) == 4


def test_token_page_masks_secrets_and_finds_images() -> None:
    token = done_token(1, NOW - 100, NOW - 50)
    token = token.model_copy(
        update={
            "uploads": [
                UploadResult(url="file:///results/SB001.png", size=2048),
                UploadResult(url="davs://bob:pw@dav.example/SB001.MS.tar?authz=SECRET"),
                UploadResult(url="file:///results/notes.txt"),
            ],
            "parameters": {"macaroon": "SECRET", "freqstep": 4},
        }
    )
    page = pages.token_page(token, now=NOW)
    assert [o.image for o in page.outputs] == [0, None, None]
    assert page.outputs[1].url == "davs://dav.example/SB001.MS.tar"
    assert page.parameters == {"macaroon": "***", "freqstep": "4"}
    assert "SECRET" not in page.model_dump_json() and "pw" not in page.outputs[1].url
    assert page.attempts[0].outcome == "done" and page.attempts[0].duration
    assert pages.image_index(token, 0) == "/results/SB001.png"
    assert pages.image_index(token, 5) is None


def test_dag_svg_draws_stages_with_counts_and_links() -> None:
    pipeline = Pipeline.model_validate(
        {
            "name": "p",
            "inputs": {"target": "subbands"},
            "stage": [
                {"name": "prep", "step": "avg", "over": "target"},
                {"name": "img", "step": "image", "over": "prep", "gather": "all"},
            ],
        }
    )
    counts = {s.value: 0 for s in TokenStatus} | {"done": 3, "error": 1}
    svg = pages.dag_svg(
        pipeline,
        None,
        [StageStatus(name="prep", counts=counts, present=4)],
        link=lambda stage: f"/tokens?stage={stage}",
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert '<a href="/tokens?stage=prep">' in svg and "3/4 done, 1 error" in svg
    assert "/tokens?stage=img" not in svg  # no status: no link
    assert svg.count("marker-end=") == 2  # target -> prep -> img


def test_plots_are_svg_and_empty_ones_say_so() -> None:
    done = [done_token(i, NOW - 100 + i, NOW - 50 + 5 * i) for i in range(3)]
    series = pages.done_series(done)
    assert list(series) == ["avg"] and len(series["avg"]) == 3
    assert "avg (3)" in pages.done_over_time_svg(series)
    bars = pages.timeline_bars(done)
    assert {b.pilot for b in bars} == {"pilot-0", "pilot-1", "pilot-2"}
    assert "<rect" in pages.timeline_svg(bars)
    assert "no token is done yet" in pages.done_over_time_svg({})
    assert "no attempt yet" in pages.timeline_svg([])


def test_sizes_and_data_page() -> None:
    assert pages.size_text(None) == "" and pages.size_text(999) == "999 B"
    assert pages.size_text(1_500_000) == "1.5 MB"
    from gridlrt.datasets.model import entry_for_url

    entries = [
        entry_for_url("file:///r/L1_SB001_uv.MS.tar", size=1000, flagged_fraction=0.7,
                      frequency_hz=120e6, token="t1"),
        entry_for_url("file:///r/L1_SB000_uv.MS.tar", size=500, flagged_fraction=0.1,
                      frequency_hz=119.8e6, token="t0"),
    ]  # fmt: skip
    page = pages.data_page(entries, [], run="r", stage="s", stages=[("r", "s")])
    assert [p.subband for p in page.products] == [0, 1]
    assert page.bad == 1 and page.products[1].bad and page.total_size == "1.5 kB"
