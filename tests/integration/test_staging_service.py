"""gridlrt.staging.service: what ``gridlrt stage`` does, as library calls, against the fake
stagers (StageIT and v1 over loopback HTTP, one simulated archive with a hand-driven clock)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridlrt.config import Settings, load_settings
from gridlrt.errors import ConfigError, InputError, StagerAuthError
from gridlrt.staging import open_stager
from gridlrt.staging.lta_v1 import LtaV1Stager
from gridlrt.staging.records import RequestStore
from gridlrt.staging.service import (
    abort_request,
    dry_run_target,
    is_srm_list,
    latest_record,
    locality_targets,
    plan_submission,
    refresh,
    request_status,
    select_surls,
    stager_for,
    submit_requests,
    wait_for,
)
from gridlrt.staging.stageit import StageITStager
from gridlrt.staging.stager import StagingReport, StagingRequest, StagingState
from gridlrt.staging.surl import SURL, parse_surl
from tests.fakes.archive import FakeArchive
from tests.fakes.lta_stager_v1 import FakeLtaStagerV1
from tests.fakes.stageit import FakeStageIT
from tests.integration.test_stageit import home, secret

__all__ = ["home"]  # the fixture: a private HOME, no LTA credentials in the environment

TOKEN = "tok-5e0d11aa42"
PASSWORD = "v1-pw-93"
POZNAN = "srm://lta-head.lofar.psnc.pl:8443/lofar/ops/projects/lc6_004/555005"
SARA = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"


def poznan_url(sb: int) -> str:
    return f"{POZNAN}/L555005_SAP000_SB{sb:03d}_uv.MS_805a38ae.tar"


def poznan(*subbands: int) -> list[SURL]:
    return [parse_surl(poznan_url(sb)) for sb in subbands]


def never() -> Settings:
    raise AssertionError("the settings were read, but nothing needed a stager")


class Clock:
    """The archive's time, moved by hand: requests advance only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Lta:
    archive: FakeArchive
    clock: Clock
    stageit: FakeStageIT
    v1: FakeLtaStagerV1
    settings: Settings
    store: RequestStore

    def open(self, protocol: str) -> StageITStager | LtaV1Stager:
        url = self.stageit.url if protocol == "stageit" else self.v1.url
        stager = open_stager(self.settings, protocol, url, retries=2, backoff=0.01)
        assert isinstance(stager, StageITStager | LtaV1Stager)
        return stager

    def finish(self) -> None:
        """Time enough for every request to be over."""
        self.clock.now += 1000 * self.archive.step


def stagingrc(home: Path, text: str) -> None:
    secret(home / ".stagingrc", text)


@pytest.fixture
def lta(home: Path) -> Iterator[Lta]:
    stagingrc(home, f"api_token={TOKEN}\nuser=ann\npassword={PASSWORD}\n")
    clock = Clock()
    archive = FakeArchive(step=1.0, files_per_step=1, clock=clock)
    with (
        FakeStageIT({TOKEN: "ann"}, archive) as stageit,
        FakeLtaStagerV1({"ann": PASSWORD}, archive) as v1,
    ):
        yield Lta(archive, clock, stageit, v1, load_settings(), RequestStore(home / "req.json"))


# --- lists -------------------------------------------------------------------------------------


def test_is_srm_list_looks_for_an_srm_url_anywhere(tmp_path: Path) -> None:
    srm = tmp_path / "srm.txt"
    srm.write_text("# from the LTA\n\nSRM://SRM.GRID.SARA.NL:8443/pnfs/x/L1_SB000_uv.MS.tar\n")
    plain = tmp_path / "urls.txt"
    plain.write_text("file:///data/L1_SB000_uv.MS\ndavs://webdav.example.org/x\n")
    assert is_srm_list(srm) is True
    assert is_srm_list(plain) is False
    # unreadable: an SRM list, so that reading it gives read_srm_list's one-line error
    assert is_srm_list(tmp_path / "missing.txt") is True
    assert is_srm_list(tmp_path) is True


def test_select_surls_keeps_the_subbands_asked_for_and_names_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "srm.txt"
    lines = [poznan_url(sb) for sb in (300, 301, 302, 303)] + [poznan_url(301)]
    path.write_text("\n".join(lines) + "\n")
    everything = select_surls(path)
    assert [s.subband for s in everything.surls] == [300, 301, 302, 303]
    assert everything.urls == [poznan_url(sb) for sb in (300, 301, 302, 303)]
    assert [(d.line, d.first_line) for d in everything.duplicates] == [(5, 2)]
    some = select_surls(path, "301..303..2")
    assert [s.subband for s in some.surls] == [301, 303]
    assert some.urls == [poznan_url(301), poznan_url(303)]
    with pytest.raises(InputError) as err:
        select_surls(path, "0..9")
    assert str(err.value) == f"--subbands 0..9 matches no file in {path} (its subbands: 300..303)"


def test_locality_targets_takes_srm_lists_and_plain_url_lists(tmp_path: Path) -> None:
    srm = tmp_path / "srm.txt"
    srm.write_text(f"{poznan_url(300)}\n{poznan_url(301)}\n")
    assert locality_targets(srm, "301").urls == [poznan_url(301)]
    plain = tmp_path / "urls.txt"
    plain.write_text("# local copies\nfile:///data/a.MS\n\nfile:///data/b.MS\n")
    targets = locality_targets(plain)
    assert targets.urls == ["file:///data/a.MS", "file:///data/b.MS"]
    assert targets.surls == [] and targets.duplicates == []
    with pytest.raises(InputError, match=r"^--subbands needs an SRM list; .* has no srm:// URL$"):
        locality_targets(plain, "0..3")


# --- submitting --------------------------------------------------------------------------------


def test_plan_counts_what_the_records_have_in_flight(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "req.json")
    running = StagingRequest(
        id=1, protocol="stageit", service="https://x/", site="poznan",
        surls=[poznan_url(sb) for sb in range(4990)], state=StagingState.IN_PROGRESS,
    )  # fmt: skip
    finished = running.model_copy(update={"id": 2, "state": StagingState.SUCCESS})
    store.save(running)
    store.save(finished)
    plan = plan_submission(poznan(*range(300, 320)), 8, store=store)
    assert [len(r.surls) for r in plan.requests] == [8, 8, 4]
    assert plan.in_flight_before == 4990  # the finished request does not count
    assert plan.over_in_flight_limit
    empty = RequestStore(tmp_path / "none.json")
    assert not plan_submission(poznan(300), store=empty).over_in_flight_limit


def test_dry_run_target_without_credentials_still_names_the_service(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    target = dry_run_target(settings)
    assert (target.protocol, target.service) == (
        "stageit", "https://sdc.astron.nl/stageit/api/staging/",
    )  # fmt: skip
    assert target.problem is not None and ".stagingrc" in target.problem
    assert dry_run_target(settings, "v1", "http://127.0.0.1:9/x").service == "http://127.0.0.1:9/x"
    stagingrc(home, "user=ann\npassword=pw\n")
    target = dry_run_target(lambda: load_settings())  # v1 only when chosen
    assert target.protocol == "stageit" and "has only v1 credentials" in str(target.problem)
    target = dry_run_target(lambda: load_settings(), "v1")
    assert (target.protocol, target.problem) == ("v1", None)
    assert target.service == "https://webportal.astron.nl/service-public/xmlrpc"


def test_submit_and_wait_record_every_round(lta: Lta) -> None:
    surls = poznan(300, 301, 302)
    rounds: list[list[StagingReport]] = []
    with lta.open("stageit") as stager:
        sent = submit_requests(stager, surls, max_files=2, store=lta.store)
        assert [r.files_total for r in sent] == [2, 1]
        assert [r.id for r in lta.store.all()] == [r.id for r in sent]  # recorded at once
        assert all(r.state is StagingState.NEW for r in lta.store.all())

        def seen(reports: list[StagingReport]) -> None:
            rounds.append(reports)
            # saved before the callback sees the round
            recorded = {r.id: r.state for r in lta.store.all()}
            assert recorded == {r.request_id: r.state for r in reports}
            lta.clock.now += 1.5 * lta.archive.step

        reports = wait_for(stager, sent, poll=0, timeout=30, store=lta.store, on_progress=seen)
    assert [r.state for r in reports] == [StagingState.SUCCESS, StagingState.SUCCESS]
    assert len(rounds) > 2
    final = {r.id: r for r in lta.store.all()}
    assert [final[r.id].state for r in sent] == [StagingState.SUCCESS] * 2
    assert [final[r.id].files_done for r in sent] == [2, 1]


# --- following requests ------------------------------------------------------------------------


def test_stager_for_uses_the_records_service_unless_told_otherwise(lta: Lta) -> None:
    record = StagingRequest(
        id=5, protocol="v1", service=lta.v1.url, site="poznan", surls=[poznan_url(300)]
    )
    with stager_for(lta.settings, record) as stager:
        assert isinstance(stager, LtaV1Stager) and stager.service == lta.v1.url
    with stager_for(lta.settings, record, stager_url=lta.stageit.url) as stager:
        assert isinstance(stager, StageITStager) and stager.service == lta.stageit.url
    with stager_for(lta.settings, record, protocol="v1") as stager:  # v1, the default URL
        assert isinstance(stager, LtaV1Stager) and stager.service != lta.v1.url
    with stager_for(lambda: lta.settings, None, "stageit", lta.stageit.url) as stager:
        assert isinstance(stager, StageITStager)


def test_refresh_asks_each_service_once_and_tolerates_one_that_fails(lta: Lta) -> None:
    with lta.open("stageit") as stageit:
        (a,) = submit_requests(stageit, poznan(300, 301), store=lta.store)
    with lta.open("v1") as v1:
        (b,) = submit_requests(v1, poznan(302), store=lta.store)
    # a v1 record the service has never heard of: that service fails, after b was saved
    lost = StagingRequest(
        id=99999, protocol="v1", service=lta.v1.url, site="poznan", surls=[poznan_url(303)]
    )
    lta.store.save(lost)
    done = StagingRequest(
        id=88888, protocol="stageit", service=lta.stageit.url, site="poznan",
        surls=[poznan_url(304)], state=StagingState.SUCCESS,
    )  # fmt: skip
    lta.store.save(done)
    lta.finish()
    asked_before = len(lta.stageit.calls)

    result = refresh(lta.settings, lta.store)

    assert [r.id for r in result.records] == [a.id, b.id, 99999, 88888]  # the order given
    states = {r.id: r.state for r in result.records}
    assert states == {
        a.id: StagingState.SUCCESS,
        b.id: StagingState.SUCCESS,  # asked before the unknown id failed: kept
        99999: StagingState.NEW,  # its service failed: the recorded state
        88888: StagingState.SUCCESS,
    }
    assert [(p.protocol, p.service) for p in result.problems] == [("v1", lta.v1.url)]
    assert "99999" in result.problems[0].message
    saved = {r.id: r for r in lta.store.all()}
    assert saved[a.id].state is StagingState.SUCCESS and saved[a.id].checked is not None
    assert saved[b.id].state is StagingState.SUCCESS
    assert saved[99999].checked is None
    # the finished record was not asked about (StageIT knows no 88888: asking would have
    # been a problem for StageIT too); request a's questions did reach StageIT
    asked = [route for _, _, route in lta.stageit.calls[asked_before:]]
    assert asked and all(route == "graphql/" for route in asked)


def test_refresh_with_nothing_unfinished_reads_no_settings(tmp_path: Path) -> None:
    store = RequestStore(tmp_path / "req.json")
    assert refresh(never, store).records == []
    done = StagingRequest(
        id=1, protocol="v1", service="http://127.0.0.1:9/", site="sara",
        surls=[f"{SARA}/L229507_SB000_uv.dppp.MS_3d78b8f1.tar"], state=StagingState.FAILED,
    )  # fmt: skip
    store.save(done)
    result = refresh(never, store)
    assert result.records == [done] and result.problems == []


def test_refresh_with_refused_credentials_keeps_the_records(home: Path) -> None:
    stagingrc(home, "user=ann\npassword=wrong\n")
    with FakeLtaStagerV1({"ann": PASSWORD}) as v1:
        store = RequestStore(home / "req.json")
        record = StagingRequest(
            id=40001, protocol="v1", service=v1.url, site="poznan", surls=[poznan_url(300)]
        )
        store.save(record)
        result = refresh(load_settings(), store, [record])
    assert result.records == [record]
    (problem,) = result.problems
    assert problem.service == v1.url and "rejected the user and password" in problem.message
    assert store.all() == [record]


def test_request_status_updates_the_record_of_the_service_asked(lta: Lta) -> None:
    with lta.open("stageit") as stager:
        (sent,) = submit_requests(stager, poznan(300, 301), store=lta.store)
    lta.finish()
    status = request_status(lta.settings, lta.store, sent.id)
    assert status.service == lta.stageit.url and status.record == sent
    assert status.report.state is StagingState.SUCCESS and status.report.progress.done == 2
    assert latest_record(lta.store, sent.id).state is StagingState.SUCCESS  # type: ignore[union-attr]


def test_request_status_elsewhere_or_unrecorded_saves_nothing(lta: Lta) -> None:
    with lta.open("stageit") as stager:
        (sent,) = submit_requests(stager, poznan(300), store=lta.store)
    lta.finish()
    # the same id asked of the v1 service (same archive): answered, but not this record's
    status = request_status(lta.settings, lta.store, sent.id, protocol="v1", stager_url=lta.v1.url)
    assert status.service == lta.v1.url and status.report.state is StagingState.SUCCESS
    assert lta.store.get(sent.id).state is StagingState.NEW
    other = lta.archive.add("ann", [poznan_url(305)])
    unrecorded = request_status(lta.settings, lta.store, other, stager_url=lta.stageit.url)
    assert unrecorded.record is None and unrecorded.report.request_id == other
    assert latest_record(lta.store, other) is None


def test_abort_records_the_state_after_and_dry_run_touches_nothing(lta: Lta) -> None:
    with lta.open("v1") as stager:
        (sent,) = submit_requests(stager, poznan(300, 301, 302), store=lta.store)
    calls = len(lta.v1.calls)
    dry = abort_request(never, lta.store, sent.id, dry_run=True)
    assert (dry.record, dry.state) == (sent, None)
    assert len(lta.v1.calls) == calls and lta.archive.view(sent.id).state == "new"
    assert abort_request(never, lta.store, 12345, dry_run=True).record is None

    aborted = abort_request(lambda: lta.settings, lta.store, sent.id)
    assert aborted.state is StagingState.ABORTED
    assert lta.archive.view(sent.id).state == "aborted"
    assert lta.store.get(sent.id).state is StagingState.ABORTED


def test_settings_problems_surface_only_when_a_stager_is_opened(lta: Lta) -> None:
    def broken() -> Settings:
        raise ConfigError("none.toml: pool: broken")

    with lta.open("stageit") as stager:
        (sent,) = submit_requests(stager, poznan(300), store=lta.store)
    with pytest.raises(ConfigError):
        request_status(broken, lta.store, sent.id)
    with pytest.raises(ConfigError):
        abort_request(broken, lta.store, sent.id)
    stagingrc(lta.store.path.parent, f"api_token=wrong\nuser=ann\npassword={PASSWORD}\n")
    with pytest.raises(StagerAuthError):  # refused credentials are an error for one request
        request_status(load_settings(), lta.store, sent.id)
    assert lta.archive.view(sent.id).state == "new"
