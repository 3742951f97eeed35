"""dCache locality through the storage layer: real gfal2 against the WebDAV fixture and
file:// (a file that exists is ONLINE); the user.status rules and the bounded pool with a
stand-in storage for srm:// (no SRM endpoint is reachable here: URL handling only)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import uuid4

import pytest

from gridlrt.errors import ExitCode, StagingError, StorageError, StorageNotFound
from gridlrt.staging.locality import (
    Locality,
    bring_online,
    check_locality,
    is_lta_archive,
    locality_of,
    parse_status,
    summarize_locality,
)
from gridlrt.storage import BringOnlineResult, Storage
from tests.services.webdav import WebDAV

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
LTA = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"
USER_SPACE = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/user/sksp/L229507"


def put(webdav: WebDAV, rel: str, data: bytes = b"ms") -> str:
    path = webdav.path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return webdav.dav_url(rel)


class StandInStorage:
    """Answers ``user.status`` like a dCache would, per URL; counts concurrent calls."""

    def __init__(self, answers: dict[str, str | Exception], delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.calls: list[tuple[str, str]] = []
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def getxattr(self, url: str, name: str) -> str:
        with self.lock:
            self.calls.append((url, name))
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.delay)
            answer = self.answers[url]
            if isinstance(answer, Exception):
                raise answer
            return answer
        finally:
            with self.lock:
                self.active -= 1

    def exists(self, url: str) -> bool:
        raise AssertionError(f"exists() must not be used for {url}")

    def bring_online(
        self, urls: list[str], pin_time: int, timeout: int, *, asynchronous: bool = True
    ) -> BringOnlineResult:
        self.calls.append((",".join(urls), f"bring_online {pin_time} {timeout} {asynchronous}"))
        return BringOnlineResult(token="tok-1", online=dict.fromkeys(urls, False))


def test_webdav_and_file_urls_exist_means_online(webdav: WebDAV, tmp_path: Path) -> None:
    base = f"locality/{uuid4().hex[:8]}"
    there = put(webdav, f"{base}/L229507_SB100_uv.dppp.MS_3d78b8f1.tar")
    also = webdav.davs_url(f"{base}/L229507_SB100_uv.dppp.MS_3d78b8f1.tar")
    gone = webdav.dav_url(f"{base}/L229507_SB101_uv.dppp.MS_3d78b8f1.tar")
    local = tmp_path / "L229507_SB102_uv.MS.tar"
    local.write_bytes(b"x")
    missing_local = (tmp_path / "nope.tar").as_uri()
    urls = [there, also, gone, local.as_uri(), missing_local]
    results = check_locality(urls, workers=3, storage=Storage(retries=0))
    assert [r.url for r in results] == urls
    assert [r.locality for r in results] == [
        Locality.ONLINE, Locality.ONLINE, Locality.MISSING, Locality.ONLINE, Locality.MISSING,
    ]  # fmt: skip
    summary = summarize_locality(results)
    assert (summary["ONLINE"], summary["MISSING"], summary["online"], summary["total"]) == (
        3, 2, 3, 5,
    )  # fmt: skip


def test_webdav_server_down_is_unknown_not_missing(webdav: WebDAV) -> None:
    url = put(webdav, f"locality/{uuid4().hex[:8]}/x.tar")
    webdav.stop(https=False)
    try:
        (result,) = check_locality([url], storage=Storage(retries=0))
    finally:
        webdav.start(https=False)
    assert result.locality is Locality.UNKNOWN
    assert result.detail and "\n" not in result.detail


@pytest.mark.parametrize(
    ("status", "locality"),
    [
        ("ONLINE", Locality.ONLINE),
        ("NEARLINE ", Locality.NEARLINE),
        ("online_and_nearline", Locality.ONLINE_AND_NEARLINE),
        ("ONLINE_AND_NEARLINE\x00", Locality.ONLINE_AND_NEARLINE),
        ("UNAVAILABLE", Locality.UNKNOWN),
        ("", Locality.UNKNOWN),
    ],
)
def test_user_status_values(status: str, locality: Locality) -> None:
    assert parse_status(status) is locality


def test_srm_urls_ask_user_status_in_a_bounded_pool() -> None:
    urls = [f"{LTA}/L229507_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar" for sb in range(12)]
    answers: dict[str, str | Exception] = {u: "NEARLINE" for u in urls}
    answers[urls[0]] = "ONLINE"
    answers[urls[1]] = "ONLINE_AND_NEARLINE"
    answers[urls[2]] = StorageNotFound(f"stat {urls[2]}: no such file")
    answers[urls[3]] = StorageError(f"getxattr {urls[3]}: no proxy\nsecond line")
    answers[urls[4]] = "BROKEN"
    storage = StandInStorage(answers, delay=0.05)
    results = check_locality(urls, workers=3, storage=storage)  # type: ignore[arg-type]
    assert [r.url for r in results] == urls
    assert [r.locality for r in results[:6]] == [
        Locality.ONLINE, Locality.ONLINE_AND_NEARLINE, Locality.MISSING, Locality.UNKNOWN,
        Locality.UNKNOWN, Locality.NEARLINE,
    ]  # fmt: skip
    assert results[3].detail == f"getxattr {urls[3]}: no proxy"
    assert results[4].detail == "user.status='BROKEN'"
    assert {name for _, name in storage.calls} == {"user.status"}
    assert 1 < storage.peak <= 3
    assert [r.online for r in results[:2]] == [True, True]


def test_gsiftp_goes_through_user_status_too() -> None:
    url = "gsiftp://gridftp.grid.sara.nl:2811/pnfs/grid.sara.nl/data/lofar/x.tar"
    storage = StandInStorage({url: "ONLINE"})
    assert locality_of(url, storage).locality is Locality.ONLINE  # type: ignore[arg-type]


def test_bring_online_only_outside_the_lta() -> None:
    assert is_lta_archive(f"{LTA}/L229507_SB000_uv.MS.tar")
    assert not is_lta_archive(f"{USER_SPACE}/L229507_SB000_uv.MS.tar")
    assert not is_lta_archive("srm://dcache.example.org:8443/lofar/ops/x.tar")
    assert not is_lta_archive("dav://127.0.0.1:1/lofar/ops/x.tar")
    storage = StandInStorage({})
    with pytest.raises(StagingError, match="is in the LTA archive: stage it with gridlrt stage"):
        bring_online(
            [f"{USER_SPACE}/a.tar", f"{LTA}/b.tar"],
            storage=storage,  # type: ignore[arg-type]
        )
    assert storage.calls == []
    mine = [f"{USER_SPACE}/a.tar", f"{USER_SPACE}/b.tar"]
    result = bring_online(mine, pin_time=600, timeout=60, storage=storage)  # type: ignore[arg-type]
    assert result.token == "tok-1" and not result.all_online
    assert storage.calls == [(",".join(mine), "bring_online 600 60 True")]


def test_cli_check_table_summary_and_json(webdav: WebDAV, tmp_path: Path) -> None:
    base = f"locality/{uuid4().hex[:8]}"
    urls = [put(webdav, f"{base}/L1_SB{sb:03d}_uv.MS.tar") for sb in range(3)]
    urls.append(webdav.dav_url(f"{base}/L1_SB003_uv.MS.tar"))  # missing
    listing = tmp_path / "files.txt"
    listing.write_text("# dav URLs\n" + "\n".join(urls) + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "250"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GRIDLRT, "stage", "check", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )

    result = run(str(listing))
    assert result.returncode == 1, result.stderr  # one file is missing
    assert "summary: 3 of 4 file(s) online (3 ONLINE, 1 MISSING)" in result.stdout
    assert result.stdout.count("ONLINE") >= 4
    data = json.loads(run(str(listing), "--json").stdout)
    assert [f["locality"] for f in data["files"]] == ["ONLINE"] * 3 + ["MISSING"]
    assert data["summary"]["online"] == 3

    webdav.path(f"{base}/L1_SB003_uv.MS.tar").write_bytes(b"now here")
    assert run(str(listing)).returncode == 0

    bad = tmp_path / "bad.txt"
    bad.write_text(urls[0] + "\njust words\n")
    failed = run(str(bad))
    assert failed.returncode == ExitCode.INPUT
    assert failed.stderr.strip() == f"error: {bad}:2: not a URL: just words"
