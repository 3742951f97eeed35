"""The v1 LTA stager client against a fake XML-RPC ``LtaStager`` over real HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from gridlrt.errors import (
    StagerAuthError,
    StagerUnavailable,
    StagingError,
    StagingRequestNotFound,
    StagingTimeout,
)
from gridlrt.staging.lta_v1 import LtaV1Stager
from gridlrt.staging.stager import StagingReport, StagingRequest, StagingState
from gridlrt.staging.surl import SURL, parse_surl
from tests.fakes.archive import FakeArchive
from tests.fakes.lta_stager_v1 import FakeLtaStagerV1
from tests.services.process import free_port

PASSWORD = "p@ss:w/rd"
SARA = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"
JUELICH = (
    "srm://lofar-srm.fz-juelich.de:8443/pnfs/fz-juelich.de/data/lofar/ops/projects/lc7_012/583127"
)


def sara(n: int) -> list[SURL]:
    return [parse_surl(f"{SARA}/L229507_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar") for sb in range(n)]


@pytest.fixture
def fake() -> Iterator[FakeLtaStagerV1]:
    with FakeLtaStagerV1({"ann": PASSWORD}, FakeArchive(step=0.1, files_per_step=2)) as server:
        yield server


def client(fake: FakeLtaStagerV1, password: str = PASSWORD, **kw: float) -> LtaV1Stager:
    options = {"retries": 3, "backoff": 0.01, "timeout": 5.0, **kw}
    return LtaV1Stager(
        "ann",
        password,
        fake.url,
        credentials_source="/home/ann/.stagingrc",
        retries=int(options["retries"]),
        backoff=options["backoff"],
        timeout=options["timeout"],
    )


def test_states_map_to_one_enum() -> None:
    words = {
        "new": StagingState.NEW,
        "scheduled": StagingState.SCHEDULED,
        "in progress": StagingState.IN_PROGRESS,
        "success": StagingState.SUCCESS,
        "partial success": StagingState.PARTIAL_SUCCESS,
        "failed": StagingState.FAILED,
        "aborted": StagingState.ABORTED,
        "on hold": StagingState.ON_HOLD,
        "In Progress": StagingState.IN_PROGRESS,
        "partial_success": StagingState.PARTIAL_SUCCESS,
    }
    for word, state in words.items():
        assert StagingState.parse(word) is state
    assert [s for s in StagingState if s.finished] == [
        StagingState.SUCCESS, StagingState.PARTIAL_SUCCESS, StagingState.FAILED,
        StagingState.ABORTED,
    ]  # fmt: skip
    with pytest.raises(StagingError, match="unknown state 'exploded'"):
        StagingState.parse("exploded")


def test_submit_wait_progress_success(fake: FakeLtaStagerV1) -> None:
    surls = sara(6)
    seen: list[list[StagingReport]] = []
    with client(fake) as stager:
        (request,) = stager.submit(surls)
        assert request.protocol == "v1" and request.service == fake.url
        assert request.surls == [s.url for s in surls] and request.site == "sara"
        assert stager.state(request.id) is StagingState.NEW
        reports = stager.wait([request], poll=0.02, timeout=10, on_progress=seen.append)
    (final,) = reports
    assert final.state is StagingState.SUCCESS
    assert sorted(final.staged) == sorted(s.url for s in surls)
    assert final.failed == []
    assert (final.progress.total, final.progress.done) == (6, 6)
    states = [round_[0].state for round_ in seen]
    assert states[0] in (StagingState.NEW, StagingState.SCHEDULED)
    assert StagingState.IN_PROGRESS in states and states[-1] is StagingState.SUCCESS
    dones = [r[0].progress.done for r in seen if r[0].state is StagingState.IN_PROGRESS]
    assert dones == sorted(dones) and any(0 < (d or 0) < 6 for d in dones), dones
    assert all(r[0].progress.total == 6 for r in seen if r[0].state is StagingState.IN_PROGRESS)


def test_progress_entry_vanishes_after_success_quirk(fake: FakeLtaStagerV1) -> None:
    with client(fake) as stager:
        (request,) = stager.submit(sara(3))
        stager.wait([request], poll=0.02, timeout=10)
        # the fake, like the real service, no longer lists the finished request ...
        assert stager._call("getprogress") == {}
        # ... but progress still says every requested file is done
        progress = stager.progress(request.id, requested=3)
        assert (progress.total, progress.done) == (3, 3)
        assert stager.progress(request.id).total == 3  # from getstagedurls when not told
        assert stager.report(request.id, request.surls).progress.done == 3


def test_batches_of_at_most_max_files(fake: FakeLtaStagerV1) -> None:
    fake.archive.step = 3600  # keep them new
    big = [parse_surl(f"{SARA}/L229507_SB{i:04d}_uv.MS_0000{i:04x}.tar") for i in range(2345)]
    recorded: list[StagingRequest] = []
    with client(fake) as stager:
        requests = stager.submit(big, on_submitted=recorded.append)
    assert [len(r.surls) for r in requests] == [1000, 1000, 345]
    assert recorded == requests
    assert len({r.id for r in requests}) == 3
    assert fake.methods_called("add_getid") == 3
    sent = [fake.archive.requests[r.id].surls for r in requests]
    assert [url for chunk in sent for url in chunk] == [s.url for s in big]
    with client(fake) as stager:
        assert [len(r.surls) for r in stager.submit(big[:10], max_files=4)] == [4, 4, 2]


def test_mixed_sites_are_split_per_site(fake: FakeLtaStagerV1) -> None:
    fake.archive.step = 3600
    mixed = [*sara(3), parse_surl(f"{JUELICH}/L583127_SB010_uv.MS_c0a9adfa.tar"), *sara(5)[3:]]
    with client(fake) as stager:
        requests = stager.submit(mixed)
    assert [(r.site, len(r.surls)) for r in requests] == [("sara", 5), ("juelich", 1)]


def test_partial_success_lists_failed_surls(fake: FakeLtaStagerV1) -> None:
    surls = sara(5)
    bad = {surls[1].url, surls[3].url}
    fake.archive.failing = bad
    with client(fake) as stager:
        (request,) = stager.submit(surls)
        (final,) = stager.wait([request], poll=0.02, timeout=10)
    assert final.state is StagingState.PARTIAL_SUCCESS
    assert set(final.failed) == bad
    assert sorted(final.staged) == sorted({s.url for s in surls} - bad)
    assert (final.progress.total, final.progress.done, final.progress.failed) == (5, 3, 2)


def test_all_files_failing_is_failed(fake: FakeLtaStagerV1) -> None:
    surls = sara(2)
    fake.archive.failing = {s.url for s in surls}
    with client(fake) as stager:
        (request,) = stager.submit(surls)
        (final,) = stager.wait([request], poll=0.02, timeout=10)
    assert final.state is StagingState.FAILED
    assert sorted(final.failed) == sorted(s.url for s in surls)


def test_abort_and_reschedule(fake: FakeLtaStagerV1) -> None:
    fake.archive.step = 3600
    with client(fake) as stager:
        (request,) = stager.submit(sara(4))
        stager.abort(request.id)
        assert stager.state(request.id) is StagingState.ABORTED
        (report,) = stager.wait([request], poll=0.01, timeout=5)
        assert report.state is StagingState.ABORTED and report.staged == []
        stager.reschedule(request.id)
        assert stager.state(request.id) is StagingState.NEW


def test_on_hold_is_not_finished(fake: FakeLtaStagerV1) -> None:
    with client(fake) as stager:
        (request,) = stager.submit(sara(2))
        fake.archive.hold(request.id)
        assert stager.state(request.id) is StagingState.ON_HOLD
        with pytest.raises(StagingTimeout, match=rf"request\(s\) {request.id} still running"):
            stager.wait([request], poll=0.01, timeout=0.1)


def test_bad_credentials_one_clear_line(fake: FakeLtaStagerV1) -> None:
    with client(fake, password="wrong-secret") as stager, pytest.raises(StagerAuthError) as err:
        stager.submit(sara(1))
    message = str(err.value)
    assert message == (
        f"LTA stager {fake.url} rejected the user and password from /home/ann/.stagingrc "
        "(HTTP 401); check the user=/password= lines"
    )
    assert "wrong-secret" not in message and err.value.__cause__ is None
    assert err.value.__suppress_context__
    assert fake.archive.requests == {}


def test_unknown_request(fake: FakeLtaStagerV1) -> None:
    with client(fake) as stager, pytest.raises(StagingRequestNotFound) as err:
        stager.state(99999)
    assert "knows no staging request 99999" in str(err.value)


def test_server_down_one_line_after_bounded_retries(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/service-public/xmlrpc"
    stager = LtaV1Stager("ann", PASSWORD, url, retries=4, backoff=0.01)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(StagerUnavailable) as err:
        stager.submit(sara(2))
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert message.startswith(f"LTA stager {url} unreachable after 4 attempts (connection refused)")
    assert "\n" not in message
    assert caplog.text.count("retrying in") == 3
    assert PASSWORD not in caplog.text and "p%40ss" not in caplog.text


def test_transient_503_is_retried_without_duplicates(fake: FakeLtaStagerV1) -> None:
    fake.fail_next = 2
    with client(fake) as stager:
        (request,) = stager.submit(sara(2))  # 503 on add_getid is retried: nothing was made
        assert len(fake.archive.requests) == 1
        fake.fail_next = 2
        assert stager.state(request.id) in (StagingState.NEW, StagingState.SCHEDULED)
    fake.fail_next = 10
    with client(fake) as stager, pytest.raises(StagerUnavailable, match=r"HTTP 503"):
        stager.state(request.id)


def test_secrets_never_in_logs_or_messages(
    fake: FakeLtaStagerV1, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        with client(fake) as stager:
            (request,) = stager.submit(sara(2))
            stager.wait([request], poll=0.02, timeout=10)
            assert PASSWORD not in repr(stager.__dict__.get("_service"))
            assert PASSWORD not in stager.service
            assert PASSWORD not in request.model_dump_json()
        fake.fail_next = 5
        with client(fake) as stager, pytest.raises(StagingError) as err:
            stager.state(request.id)
    for text in (caplog.text, str(err.value)):
        assert PASSWORD not in text and "p%40ss%3Aw%2Frd" not in text


def test_not_an_xmlrpc_endpoint(fake: FakeLtaStagerV1) -> None:
    wrong = LtaV1Stager("ann", PASSWORD, fake.url.replace("/xmlrpc", "/nothing"), retries=1)
    with pytest.raises(StagingError, match="has no XML-RPC service"):
        wrong.state(1)
    with pytest.raises(StagingError, match="must be http"):
        LtaV1Stager("ann", PASSWORD, "ftp://example.org/x")
