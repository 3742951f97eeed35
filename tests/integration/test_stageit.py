"""The StageIT (v2) client against a fake REST + GraphQL StageIT over real HTTP; and how
``open_stager`` picks protocol, credentials and URL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlrt.config import load_settings
from gridlrt.errors import (
    CredentialsError,
    InputError,
    StagerAuthError,
    StagerUnavailable,
    StagingError,
    StagingRequestNotFound,
)
from gridlrt.staging import open_stager, service_url
from gridlrt.staging.credentials import load_lta_credentials
from gridlrt.staging.lta_v1 import LtaV1Stager
from gridlrt.staging.stageit import StageITStager, url_for_hostname
from gridlrt.staging.stager import StagingReport, StagingState
from gridlrt.staging.surl import SURL, parse_surl
from tests.fakes.archive import FakeArchive
from tests.fakes.stageit import FakeStageIT
from tests.services.process import free_port

TOKEN = "0123456789abcdef"
POZNAN = "srm://lta-head.lofar.psnc.pl:8443/lofar/ops/projects/lc6_004/555005"


def poznan(n: int, start: int = 300) -> list[SURL]:
    return [
        parse_surl(f"{POZNAN}/L555005_SAP000_SB{sb:03d}_uv.MS_805a38ae.tar")
        for sb in range(start, start + n)
    ]


@pytest.fixture
def fake() -> Iterator[FakeStageIT]:
    with FakeStageIT({TOKEN: "ann"}, FakeArchive(step=0.1, files_per_step=2)) as server:
        yield server


def client(fake: FakeStageIT, token: str = TOKEN, retries: int = 3) -> StageITStager:
    return StageITStager(
        token, fake.url, credentials_source="/home/ann/.stagingrc", retries=retries, backoff=0.01
    )


def test_submit_sends_the_documented_payload(fake: FakeStageIT) -> None:
    surls = poznan(3)
    with client(fake) as stager:
        (request,) = stager.submit(surls)
    assert fake.posted == [
        {"surls": [s.url for s in surls], "notify": False, "request_type": "stage"}
    ]
    assert request.protocol == "stageit" and request.service == fake.url
    assert request.site == "poznan"


def test_wait_reports_progress_then_success(fake: FakeStageIT) -> None:
    surls = poznan(6)
    rounds: list[list[StagingReport]] = []
    with client(fake) as stager:
        (request,) = stager.submit(surls)
        (final,) = stager.wait([request], poll=0.02, timeout=10, on_progress=rounds.append)
        webdav = stager.webdav_urls(request.id)
    assert final.state is StagingState.SUCCESS
    assert (final.progress.total, final.progress.done, final.progress.failed) == (6, 6, 0)
    assert sorted(final.staged) == sorted(s.url for s in surls)
    in_progress = [r[0].progress.done for r in rounds if r[0].state is StagingState.IN_PROGRESS]
    assert in_progress and in_progress == sorted(in_progress)
    assert any(0 < (d or 0) < 6 for d in in_progress), in_progress
    assert len(webdav) == 6 and all(u.startswith("https://") for u in webdav)


def test_batching_2345_files(fake: FakeStageIT) -> None:
    fake.archive.step = 3600
    big = [parse_surl(f"{POZNAN}/L555005_SB{i:04d}_uv.MS.tar") for i in range(2345)]
    with client(fake) as stager:
        requests = stager.submit(big)
    assert [len(r.surls) for r in requests] == [1000, 1000, 345]
    assert fake.submitted() == 3
    assert [len(p["surls"]) for p in fake.posted] == [1000, 1000, 345]


def test_partial_success_lists_failed_surls(fake: FakeStageIT) -> None:
    surls = poznan(4)
    fake.archive.failing = {surls[0].url}
    with client(fake) as stager:
        (request,) = stager.submit(surls)
        (final,) = stager.wait([request], poll=0.02, timeout=10)
    assert final.state is StagingState.PARTIAL_SUCCESS
    assert final.failed == [surls[0].url]
    assert (final.progress.done, final.progress.failed) == (3, 1)


def test_abort(fake: FakeStageIT) -> None:
    fake.archive.step = 3600
    with client(fake) as stager:
        (request,) = stager.submit(poznan(2))
        stager.abort(request.id)
        assert stager.state(request.id) is StagingState.ABORTED
        with pytest.raises(StagingRequestNotFound, match="no staging request 4242"):
            stager.abort(4242)


def test_unknown_request(fake: FakeStageIT) -> None:
    with client(fake) as stager, pytest.raises(StagingRequestNotFound) as err:
        stager.report(31337)
    assert str(err.value) == "StageIT knows no staging request 31337"


def test_bad_token_one_clear_line(fake: FakeStageIT) -> None:
    with client(fake, token="not-my-token") as stager, pytest.raises(StagerAuthError) as err:
        stager.submit(poznan(1))
    assert str(err.value) == (
        f"StageIT {fake.url} rejected the API token from /home/ann/.stagingrc "
        "(HTTP 401: Invalid token.); check the api_token= line"
    )
    assert fake.archive.requests == {}


def test_bad_payload_is_reported(fake: FakeStageIT) -> None:
    with client(fake) as stager, pytest.raises(StagingError, match=r"HTTP 400 surls: \[\"Not a"):
        stager.submit_one(["gsiftp://x/y"])


def test_server_down_one_line_after_bounded_retries(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/stageit/api/staging/"
    stager = StageITStager(TOKEN, url, retries=3, backoff=0.01)
    started = time.monotonic()
    with caplog.at_level(logging.INFO), pytest.raises(StagerUnavailable) as err:
        stager.submit(poznan(1))
    assert time.monotonic() - started < 5
    assert str(err.value).startswith(
        f"LTA stager {url} unreachable after 3 attempts (connection refused)"
    )
    assert caplog.text.count("retrying in") == 2
    assert TOKEN not in caplog.text


def test_503_retried_for_queries_not_for_a_post_that_may_have_arrived(fake: FakeStageIT) -> None:
    with client(fake) as stager:
        (request,) = stager.submit(poznan(1))
        fake.fail_next = 2
        assert stager.state(request.id) in (StagingState.NEW, StagingState.SCHEDULED)
        fake.fail_next = 1  # 503 means "not processed": a submit is retried too
        stager.submit(poznan(1, start=10))
    assert len(fake.archive.requests) == 2


# --- choosing protocol, credentials and URL -----------------------------------------------------


def secret(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (
        "GRIDLRT_LTA_TOKEN", "GRIDLRT_LTA_USER", "GRIDLRT_LTA_PASSWORD", "GRIDLRT_LTA_PROTOCOL",
        "GRIDLRT_STAGER_URL", "GRIDLRT_STAGEIT_URL",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRIDLRT_LTA_CREDENTIALS", str(tmp_path / ".stagingrc"))
    monkeypatch.setenv("GRIDLRT_AWE_CONFIG", str(tmp_path / ".awe" / "Environment.cfg"))
    monkeypatch.setenv("GRIDLRT_CONFIG", str(tmp_path / "none.toml"))
    return tmp_path


def test_token_in_stagingrc_means_stageit(home: Path, fake: FakeStageIT) -> None:
    secret(home / ".stagingrc", f"api_token={TOKEN}\nhostname=sdc-dev.astron.nl\n")
    creds = load_lta_credentials(load_settings())
    assert (creds.protocol, creds.hostname, creds.source) == (
        "stageit", "sdc-dev.astron.nl", str(home / ".stagingrc"),
    )  # fmt: skip
    assert TOKEN not in repr(creds)
    assert service_url("stageit", hostname=creds.hostname) == (
        "https://sdc-dev.astron.nl/stageit/api/staging/"
    )
    stager = open_stager(load_settings(), url=fake.url)
    assert isinstance(stager, StageITStager) and stager.service == fake.url
    stager.submit(poznan(1))
    assert fake.submitted() == 1


def test_v1_credentials_are_used_only_when_v1_is_chosen(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret(home / ".stagingrc", "user=bob\npassword=pw2\n")
    with pytest.raises(CredentialsError) as refused:
        load_lta_credentials(load_settings())  # StageIT is the default: no silent v1
    message = str(refused.value)
    assert "\n" not in message and "pw2" not in message
    assert message.startswith(f"{home / '.stagingrc'} has only v1 credentials")
    assert "put api_token=..." in message and "--protocol v1" in message
    assert "GRIDLRT_LTA_PROTOCOL=v1" in message
    (home / ".stagingrc").unlink()
    with pytest.raises(CredentialsError, match="no StageIT API token"):
        open_stager(load_settings(), "stageit")

    secret(home / ".awe" / "Environment.cfg", "database_user : ann\ndatabase_password : pw\n")
    creds = load_lta_credentials(load_settings(), "v1")
    assert (creds.protocol, creds.user, creds.source) == (
        "v1", "ann", str(home / ".awe" / "Environment.cfg"),
    )  # fmt: skip
    secret(home / ".stagingrc", "user=bob\npassword=pw2\n")
    assert load_lta_credentials(load_settings(), "v1").user == "bob"
    monkeypatch.setenv("GRIDLRT_STAGER_URL", "http://127.0.0.1:9/xmlrpc")
    stager = open_stager(load_settings(), "v1")
    assert isinstance(stager, LtaV1Stager) and stager.service == "http://127.0.0.1:9/xmlrpc"
    # chosen in the settings file
    (home / "v1.toml").write_text('lta_protocol = "v1"\n')
    monkeypatch.setenv("GRIDLRT_CONFIG", str(home / "v1.toml"))
    assert isinstance(open_stager(load_settings()), LtaV1Stager)
    with pytest.raises(CredentialsError, match="has only v1 credentials"):
        open_stager(load_settings(), "stageit")  # the option wins over the setting


def test_environment_wins_and_protocol_can_be_forced(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret(home / ".stagingrc", f"api_token={TOKEN}\nuser=bob\npassword=pw2\n")
    assert load_lta_credentials(load_settings()).protocol == "stageit"
    assert load_lta_credentials(load_settings(), "v1").user == "bob"
    monkeypatch.setenv("GRIDLRT_LTA_PROTOCOL", "v1")
    assert load_lta_credentials(load_settings()).protocol == "v1"
    assert load_lta_credentials(load_settings(), "stageit").protocol == "stageit"
    monkeypatch.delenv("GRIDLRT_LTA_PROTOCOL")
    assert load_lta_credentials(load_settings(), "auto").protocol == "stageit"
    monkeypatch.setenv("GRIDLRT_LTA_TOKEN", "from-env")
    creds = load_lta_credentials(load_settings())
    assert creds.source == "GRIDLRT_LTA_TOKEN" and creds.token is not None
    assert creds.token.get_secret_value() == "from-env"
    monkeypatch.setenv("GRIDLRT_STAGEIT_URL", "http://127.0.0.1:9/stageit/api/staging/")
    assert open_stager(load_settings()).service == "http://127.0.0.1:9/stageit/api/staging/"
    with pytest.raises(InputError, match=r"choose stageit \(the default\) or v1"):
        load_lta_credentials(load_settings(), "v3")


def test_missing_or_unsafe_credentials(home: Path) -> None:
    with pytest.raises(CredentialsError, match="no StageIT API token for the LTA stager: put api_"):
        open_stager(load_settings())
    rc = secret(home / ".stagingrc", f"api_token={TOKEN}\n")
    rc.chmod(0o644)
    with pytest.raises(CredentialsError, match="run: chmod 600"):
        open_stager(load_settings())


def test_hostname_forms() -> None:
    assert url_for_hostname("sdc.astron.nl") == "https://sdc.astron.nl/stageit/api/staging/"
    assert url_for_hostname("http://127.0.0.1:8000/") == (
        "http://127.0.0.1:8000/stageit/api/staging/"
    )
