"""Downloading staged files with StageIT's macaroons: the fake StageIT (speaking the real
API: ``convert2webdav`` and GraphQL ``macaroons { content, validUntil, ltaSite { name } }``)
hands out WebDAV URLs on a real WebDAV server that refuses every request without
``Authorization: Bearer <macaroon>`` (401), and ``gridlrt stage download`` fetches them
through gfal2 with the macaroon as a bearer credential: never in argv, logs or files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from gridlrt.errors import CredentialsError, ExitCode, InputError, StoragePermissionDenied
from gridlrt.staging.download import (
    plan_download,
    read_macaroon_file,
    storage_bearers,
    write_macaroon_file,
)
from gridlrt.staging.stageit import StageITStager
from gridlrt.staging.surl import parse_surl
from gridlrt.storage import Storage
from gridlrt.storage.gfal import bearer_prefixes
from tests.fakes.archive import FakeArchive
from tests.fakes.lta_stager_v1 import FakeLtaStagerV1
from tests.fakes.stageit import FakeStageIT
from tests.secrets_watch import ProcWatcher, files_containing
from tests.services.webdav import MacaroonWebDAV

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
TOKEN = "tok-9d2e51c0aa"
PASSWORD = "v1-pw-77e1"
SARA = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"


def sara(sb: int) -> str:
    return f"{SARA}/L229507_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar"


@dataclass
class Lta:
    """A staged request on the fake StageIT whose files are on the macaroon WebDAV server."""

    stageit: FakeStageIT
    v1: FakeLtaStagerV1
    dav: MacaroonWebDAV
    home: Path
    request_id: int
    contents: dict[str, bytes]  # file name -> bytes

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "COLUMNS": "250",
            "GRIDLRT_STAGEIT_URL": self.stageit.url,
            "GRIDLRT_STAGER_URL": self.v1.url,
            **self.dav.server.client_env(),
            **extra,
        }

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GRIDLRT, *args], capture_output=True, text=True, timeout=120, check=False,
            env=self.env(**extra),
        )  # fmt: skip

    def client(self) -> StageITStager:
        return StageITStager(TOKEN, self.stageit.url, retries=2, backoff=0.01)


@pytest.fixture
def lta(macaroon_webdav: MacaroonWebDAV, tmp_path: Path) -> Iterator[Lta]:
    home = tmp_path / "home"
    home.mkdir()
    rc = home / ".stagingrc"
    rc.write_text(f"api_token={TOKEN}\n")
    rc.chmod(0o600)
    contents: dict[str, bytes] = {}
    for sb in (100, 101, 102):
        surl = parse_surl(sara(sb))
        data = hashlib.sha256(f"{tmp_path}{sb}".encode()).digest() * (4000 + sb)
        target = macaroon_webdav.server.path(surl.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        contents[surl.filename] = data
    archive = FakeArchive(step=0.01, files_per_step=100)
    with (
        FakeStageIT(
            {TOKEN: "ann"},
            archive,
            webdav_door=macaroon_webdav.server.https_url(),
            macaroon=macaroon_webdav.macaroon,
        ) as stageit,
        FakeLtaStagerV1({"ann": PASSWORD}, archive) as v1,
    ):
        with StageITStager(TOKEN, stageit.url) as stager:
            (request,) = stager.submit([parse_surl(sara(sb)) for sb in (100, 101, 102)])
        deadline = time.monotonic() + 10
        while archive.view(request.id).state != "success":
            assert time.monotonic() < deadline, archive.view(request.id)
            time.sleep(0.02)
        yield Lta(stageit, v1, macaroon_webdav, home, request.id, contents)


# --- the client speaks the real API ---------------------------------------------------------


def test_client_gets_macaroons_and_webdav_urls_as_the_lta_client_does(lta: Lta) -> None:
    with lta.client() as stager:
        urls = stager.webdav_urls(lta.request_id)
        (macaroon,) = stager.macaroons(lta.request_id)
    door = lta.dav.server.https_url().rstrip("/")
    assert urls == [door + sara(sb).split(":8443", 1)[1] for sb in (100, 101, 102)]
    assert macaroon.site == "SURF"
    assert macaroon.token.get_secret_value() == lta.dav.macaroon
    assert macaroon.valid_until is not None and lta.dav.macaroon not in repr(macaroon)
    queries = [r for _user, method, r in lta.stageit.calls if (method, r) == ("POST", "graphql/")]
    assert queries, "macaroons come from GraphQL"
    plan = plan_download(lta.client(), lta.request_id, Path("/x"))
    assert [f.destination.name for f in plan.files] == sorted(lta.contents)
    assert plan.bearers() == {lta.dav.server.https_url(): lta.dav.macaroon}
    assert lta.dav.macaroon not in repr(plan)


def test_macaroons_only_from_stageit_and_only_once_staged(lta: Lta) -> None:
    from gridlrt.errors import StagingError
    from gridlrt.staging.lta_v1 import LtaV1Stager

    with (
        LtaV1Stager("ann", PASSWORD, lta.v1.url) as v1,
        pytest.raises(StagingError, match="the v1 stager gives no WebDAV URLs or macaroons"),
    ):
        v1.macaroons(lta.request_id)
    lta.stageit.archive.step = 3600
    with lta.client() as stager:
        (fresh,) = stager.submit([parse_surl(sara(200))])
        assert stager.macaroons(fresh.id) == []
        with pytest.raises(StagingError, match="has no staged files to download yet"):
            plan_download(stager, fresh.id, Path("/x"))


# --- storage with a bearer token -------------------------------------------------------------


def test_storage_downloads_with_the_macaroon_and_is_refused_without(
    lta: Lta, tmp_path: Path
) -> None:
    name = sorted(lta.contents)[0]
    url = lta.dav.server.https_url(parse_surl(sara(100)).path)
    before = len(lta.dav.refusals())
    with pytest.raises(StoragePermissionDenied) as refused:
        Storage(retries=0).copy(url, tmp_path / "without" / name, checksum=False)
    message = str(refused.value)
    assert "\n" not in message and "permission denied" in message and "401" in message
    assert not (tmp_path / "without" / name).exists()
    assert len(lta.dav.refusals()) > before
    assert any("(no macaroon)" in line for line in lta.dav.refusals())

    store = Storage(retries=0, bearer={lta.dav.server.https_url(): lta.dav.macaroon})
    assert store.bearer_prefixes == sorted(bearer_prefixes(lta.dav.server.https_url()))
    result = store.copy(url, tmp_path / "with" / name)
    assert (tmp_path / "with" / name).read_bytes() == lta.contents[name]
    assert result.verified == "size" and result.size == len(lta.contents[name])
    assert lta.dav.macaroon not in repr(result) and lta.dav.macaroon not in url
    # davs:// spelling of the same door gets it too; another door never does
    davs = lta.dav.server.davs_url(parse_surl(sara(101)).path)
    assert store.stat(davs).size == len(lta.contents[sorted(lta.contents)[1]])
    with pytest.raises(StoragePermissionDenied):
        store.stat(lta.dav.server.http_url(parse_surl(sara(101)).path))
    # a wrong macaroon is refused as such
    wrong = Storage(retries=0, bearer={lta.dav.server.https_url(): "MDAwrongmacaroon"})
    with pytest.raises(StoragePermissionDenied, match="401"):
        wrong.stat(url)
    assert any("(wrong macaroon)" in line for line in lta.dav.refusals())
    with pytest.raises(InputError, match="http\\(s\\):// or dav\\(s\\)://"):
        Storage(retries=0, bearer={"srm://srm.grid.sara.nl/": "x"})
    for line in lta.dav.refusals():
        assert lta.dav.macaroon not in line and "MDAwrongmacaroon" not in line


def test_server_takes_authz_in_the_query_too(lta: Lta) -> None:
    url = lta.dav.server.https_url(parse_surl(sara(102)).path)
    ca = str(lta.dav.server.cert)
    assert requests.get(url, verify=ca, timeout=10).status_code == 401
    answer = requests.get(url, params={"authz": lta.dav.macaroon}, verify=ca, timeout=10)
    assert answer.status_code == 200 and answer.content == lta.contents[sorted(lta.contents)[2]]


# --- gridlrt stage download ----------------------------------------------------------------


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_stage_download_verifies_and_never_shows_the_macaroon(lta: Lta, tmp_path: Path) -> None:
    out = tmp_path / "L229507"
    dry = lta.run("stage", "download", str(lta.request_id), "--to", str(out), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    flat = " ".join(dry.stdout.split())
    assert f"would download 3 file(s) of staging request {lta.request_id} into {out}" in flat
    assert "macaroon for SURF" in flat and "valid until" in flat
    assert not out.exists()

    with ProcWatcher(lta.dav.macaroon) as watcher:
        result = lta.run(
            "-vv", "stage", "download", str(lta.request_id), "--to", str(out), "--parallel", "2"
        )
    assert result.returncode == 0, result.stderr
    assert watcher.scans > 0 and watcher.hits == []
    assert f"downloaded 3 file(s) of staging request {lta.request_id}" in result.stdout
    assert "verified: size" in result.stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == lta.contents
    for text in (dry.stdout, dry.stderr, result.stdout, result.stderr):
        assert lta.dav.macaroon not in text
    assert "INFO" in result.stderr  # -vv logged, and the logs hold no macaroon
    assert files_containing(lta.dav.macaroon, lta.home, out) == []

    again = lta.run("stage", "download", str(lta.request_id), "--to", str(out))
    assert again.returncode == 0, again.stderr
    assert "downloaded 0 file(s)" in again.stdout and "3 already there" in again.stdout


def test_stage_download_with_a_refused_macaroon_is_one_line(lta: Lta, tmp_path: Path) -> None:
    lta.stageit.macaroon = "MDAexpiredmacaroon0000"
    out = tmp_path / "out"
    result = lta.run("stage", "download", str(lta.request_id), "--to", str(out))
    line = one_error_line(result, ExitCode.CREDENTIALS)
    assert line.startswith(f"error: 3 of 3 download(s) of request {lta.request_id} failed")
    assert "permission denied" in line and "HTTP 401" in line
    assert "the WebDAV door refused StageIT's macaroon for SURF (valid until" in line
    assert "MDAexpiredmacaroon0000" not in result.stdout + result.stderr
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_stage_download_of_a_v1_request_or_unknown_request(lta: Lta, tmp_path: Path) -> None:
    line = one_error_line(
        lta.run("stage", "download", "777", "--to", str(tmp_path)), ExitCode.INPUT
    )
    assert line == "error: StageIT knows no staging request 777"
    (lta.home / ".stagingrc").write_text(f"user=ann\npassword={PASSWORD}\n")
    result = lta.run("stage", "download", str(lta.request_id), "--to", str(tmp_path))
    assert "has only v1 credentials" in one_error_line(result, ExitCode.CREDENTIALS)
    result = lta.run(
        "stage", "download", str(lta.request_id), "--to", str(tmp_path), "--protocol", "v1"
    )
    line = one_error_line(result, ExitCode.FAILED)
    assert "the v1 stager gives no WebDAV URLs or macaroons" in line
    assert PASSWORD not in result.stdout + result.stderr


# --- a macaroon file for pilots --------------------------------------------------------------


def test_macaroon_file_is_0600_and_gives_a_storage_the_macaroon(lta: Lta, tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "request.macaroons"
    with ProcWatcher(lta.dav.macaroon) as watcher:
        result = lta.run("stage", "macaroons", str(lta.request_id), "-o", str(path))
    assert result.returncode == 0, result.stderr
    assert watcher.hits == []
    assert "wrote 1 macaroon(s)" in result.stdout and "(mode 0600)" in result.stdout
    assert lta.dav.macaroon not in result.stdout + result.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_macaroon_file(path) == {lta.dav.server.https_url(): lta.dav.macaroon}

    name = sorted(lta.contents)[1]
    url = lta.dav.server.https_url(parse_surl(sara(101)).path)
    store = storage_bearers(Storage(retries=0), path)
    store.copy(url, tmp_path / "got" / name)
    assert (tmp_path / "got" / name).read_bytes() == lta.contents[name]

    # `gridlrt storage copy` of the same URL without one: refused, in one line
    plain = lta.run("storage", "copy", url, str(tmp_path / "plain" / name))
    line = one_error_line(plain, ExitCode.FAILED)
    assert "permission denied" in line and "HTTP 401" in line

    path.chmod(0o644)
    with pytest.raises(CredentialsError, match="run: chmod 600"):
        read_macaroon_file(path)
    bad = write_macaroon_file(tmp_path / "bad", {"https://x/": "y"})
    bad.write_text("https://x/ y z\n")
    with pytest.raises(CredentialsError, match=r"bad:1: expected .* \(value not shown\)"):
        read_macaroon_file(bad)
    assert os.stat(bad).st_mode & 0o777 == 0o600
