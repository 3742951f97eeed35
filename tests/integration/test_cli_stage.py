"""``gridlrt stage ...`` as a user runs it: the real executable, against the fake stagers
(in threads of this process, over loopback HTTP) and a private HOME and data directory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridlrt.errors import ExitCode
from tests.fakes.archive import FakeArchive
from tests.fakes.lta_stager_v1 import FakeLtaStagerV1
from tests.fakes.stageit import FakeStageIT
from tests.services.process import free_port

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
TOKEN = "tok-4f1c9e2a77"
PASSWORD = "v1-secret-pw"
SARA = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"
JUELICH = (
    "srm://lofar-srm.fz-juelich.de:8443/pnfs/fz-juelich.de/data/lofar/ops/projects/lc7_012/583127"
)
POZNAN = "srm://lta-head.lofar.psnc.pl:8443/lofar/ops/projects/lc6_004/555005"


def sara(sb: int) -> str:
    return f"{SARA}/L229507_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar"


@dataclass
class User:
    """A private HOME with ~/.stagingrc, its own data directory, and both fake stagers."""

    home: Path
    data: Path
    stageit: FakeStageIT
    v1: FakeLtaStagerV1
    extra_env: dict[str, str]

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_DATA_HOME": str(self.data),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "COLUMNS": "250",
            "GRIDLRT_STAGEIT_URL": self.stageit.url,
            "GRIDLRT_STAGER_URL": self.v1.url,
            **self.extra_env,
        }

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GRIDLRT, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env(),
        )

    @property
    def records(self) -> Path:
        return self.data / "gridlrt" / "staging-requests.json"

    def stagingrc(self, text: str, mode: int = 0o600) -> None:
        rc = self.home / ".stagingrc"
        rc.write_text(text)
        rc.chmod(mode)


@pytest.fixture
def user(tmp_path: Path) -> Iterator[User]:
    home = tmp_path / "home"
    home.mkdir()
    archive = FakeArchive(step=0.2, files_per_step=3)
    with (
        FakeStageIT({TOKEN: "ann"}, archive) as stageit,
        FakeLtaStagerV1({"ann": PASSWORD}, archive) as v1,
    ):
        person = User(home, tmp_path / "data", stageit, v1, {})
        person.stagingrc(f"api_token={TOKEN}\nuser=ann\npassword={PASSWORD}\n")
        yield person


@pytest.fixture
def srm_txt(tmp_path: Path) -> Path:
    path = tmp_path / "srm.txt"
    lines = ["# L229507 from the LTA catalogue", ""] + [sara(sb) for sb in range(100, 106)]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def one_error_line(result: subprocess.CompletedProcess[str], code: ExitCode) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text and PASSWORD not in text


# --- help and list -----------------------------------------------------------------------------


def test_help_teaches_with_examples(user: User) -> None:
    top = user.run("stage", "--help")
    assert top.returncode == 0
    for word in ("list", "submit", "status", "abort", "check", "download", "~/.stagingrc"):
        assert word in top.stdout
    assert "legacy v1" in " ".join(top.stdout.split())
    for command, example in [
        ("download", "gridlrt stage download 40001 --to /data/L229507 --dry-run"),
        ("macaroons", "gridlrt stage macaroons 40001 -o"),
        ("list", "gridlrt stage list srm.txt --print gsiftp"),
        ("submit", "gridlrt stage submit srm.txt --dry-run"),
        ("status", "gridlrt stage status 40001 --json"),
        ("abort", "gridlrt stage abort 40001"),
        ("check", "gridlrt stage check srm.txt"),
    ]:
        result = user.run("stage", command, "--help")
        assert result.returncode == 0 and example in result.stdout, command


def test_list_table_groups_and_forms(user: User, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.txt"
    lines = [
        sara(101), sara(100),
        f"{JUELICH}/L583127_SB010_uv.MS_c0a9adfa.tar",
        f"{POZNAN}/L555005_SAP001_SB302_uv.MS_805a38ae.tar",
        sara(100),
    ]  # fmt: skip
    mixed.write_text("\n".join(lines))
    result = user.run("stage", "list", str(mixed), "--form", "gsiftp")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 file(s) in" in out
    for word in ("obs", "SAP", "SB", "site", "gsiftp", "L229507", "Jülich", "Poznań", "SARA"):
        assert word in out
    assert "gsiftp://gridftp.lofar.psnc.pl:2811/lofar/ops/projects/lc6_004/555005/" in out
    assert "L229507 at SARA: 2 file(s), subbands 100,101" in out
    assert "L583127 at Jülich: 1 file(s), subbands 10" in out
    assert "duplicate of line 2, dropped" in result.stderr

    printed = user.run("stage", "list", str(mixed), "--print", "https", "--subbands", "100")
    assert printed.stdout.splitlines() == [
        "https://lofar-download.grid.surfsara.nl/lofigrid/SRMFifoGet.py?surl=" + sara(100)
    ]
    data = json.loads(user.run("stage", "list", str(mixed), "--json").stdout)
    assert [(d["site"], d["subband"]) for d in data] == [
        ("sara", 100), ("sara", 101), ("juelich", 10), ("poznan", 302),
    ]  # fmt: skip
    assert data[3]["sap"] == 1 and data[3]["urls"]["gfal"].endswith(
        "?SFN=/lofar/ops/projects/lc6_004/555005/L555005_SAP001_SB302_uv.MS_805a38ae.tar"
    )


def test_bad_line_is_one_line_with_its_number(user: User, tmp_path: Path) -> None:
    path = tmp_path / "srm.txt"
    lines = [sara(sb) for sb in range(16)] + ["L229507_SB016_uv.dppp.MS_3d78b8f1.tar"]
    path.write_text("\n".join(lines) + "\n")
    for command in ("list", "submit"):
        line = one_error_line(user.run("stage", command, str(path)), ExitCode.INPUT)
        assert line == f"error: {path}:17: not an SRM URL: L229507_SB016_uv.dppp.MS_3d78b8f1.tar"


def test_empty_list_and_bad_ranges(user: User, tmp_path: Path, srm_txt: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    assert "no SRM URLs" in one_error_line(user.run("stage", "list", str(empty)), ExitCode.INPUT)
    line = one_error_line(
        user.run("stage", "list", str(srm_txt), "--subbands", "5..3"), ExitCode.INPUT
    )
    assert "runs backwards" in line
    line = one_error_line(
        user.run("stage", "list", str(srm_txt), "--subbands", "0..9"), ExitCode.INPUT
    )
    assert line.endswith("(its subbands: 100..105)")


# --- submit -----------------------------------------------------------------------------------


def test_dry_run_shows_exactly_the_requests(user: User, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text(
        "\n".join(f"{SARA}/L229507_SB{i:04d}_uv.MS_{i:08x}.tar" for i in range(2345))
        + f"\n{JUELICH}/L583127_SB010_uv.MS_c0a9adfa.tar\n"
    )
    result = user.run("stage", "submit", str(big), "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"would send 4 request(s) for 2346 file(s) to {user.stageit.url} (stageit)" in out
    rows = [line for line in out.splitlines() if "srm://" in line]
    assert len(rows) == 4
    assert "SARA" in rows[0] and " 1000 " in rows[0] and "0..999" in rows[0]
    assert " 345 " in rows[2] and "2000..2344" in rows[2]
    assert "Jülich" in rows[3] and " 1 " in rows[3]
    as_json = json.loads(user.run("stage", "submit", str(big), "--dry-run", "--json").stdout)
    assert [len(r["surls"]) for r in as_json["requests"]] == [1000, 1000, 345, 1]
    limited = user.run("stage", "submit", str(big), "--dry-run", "--max-files", "2000")
    assert "would send 3 request(s)" in limited.stdout
    assert user.stageit.http_requests == 0 and user.v1.http_requests == 0
    assert not user.records.exists()


def test_dry_run_without_credentials_still_plans(user: User, srm_txt: Path) -> None:
    (user.home / ".stagingrc").unlink()
    result = user.run("stage", "submit", str(srm_txt), "--dry-run", "--protocol", "v1")
    assert result.returncode == 0, result.stderr
    assert f"would send 1 request(s) for 6 file(s) to {user.v1.url} (v1; note: no LTA user" in (
        " ".join(result.stdout.split())
    )


def test_submit_wait_shows_progress_and_records(user: User, srm_txt: Path) -> None:
    result = user.run("stage", "submit", str(srm_txt), "--wait", "--poll", "0.1")
    assert result.returncode == 0, result.stderr
    (request_id,) = user.stageit.archive.requests
    out = result.stdout
    assert f"submitted staging request {request_id}: 6 file(s) at sara (stageit" in out
    assert f"request {request_id} (sara)" in out and "6/6" in out and "success" in out
    records = json.loads(user.records.read_text())["requests"]
    assert [(r["id"], r["state"], r["files_done"]) for r in records] == [(request_id, "success", 6)]
    assert_no_secrets(out, result.stderr, user.records.read_text())


def test_partial_success_exits_1_listing_failed(user: User, srm_txt: Path) -> None:
    user.stageit.archive.failing = {sara(102), sara(104)}
    result = user.run("stage", "submit", str(srm_txt), "--wait", "--poll", "0.1")
    assert result.returncode == 1
    assert "2 file(s) did not stage:" in result.stderr
    assert sara(102) in result.stderr and sara(104) in result.stderr
    assert "partial success" in result.stderr and "Traceback" not in result.stderr


def test_status_shows_all_recorded_requests_of_both_protocols(
    user: User, srm_txt: Path, tmp_path: Path
) -> None:
    first = user.run("stage", "submit", str(srm_txt), "--subbands", "100..102")
    second = user.run("stage", "submit", str(srm_txt), "--subbands", "103-105", "--protocol", "v1")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    ids = sorted(user.stageit.archive.requests)
    assert len(ids) == 2
    assert "follow with: gridlrt stage status" in first.stdout

    offline = json.loads(user.run("stage", "status", "--offline", "--json").stdout)
    assert [(r["id"], r["protocol"], r["state"]) for r in offline] == [
        (ids[0], "stageit", "new"), (ids[1], "v1", "new"),
    ]  # fmt: skip
    user.stageit.archive.step = 0.001  # both finish now
    table = user.run("stage", "status")
    assert table.returncode == 0, table.stderr
    assert "2 staging request(s)" in table.stdout
    assert table.stdout.count("success") == 2
    for request_id in ids:
        assert str(request_id) in table.stdout
    refreshed = json.loads(user.records.read_text())["requests"]
    assert [r["state"] for r in refreshed] == ["success", "success"]

    one = json.loads(user.run("stage", "status", str(ids[1]), "--json").stdout)
    assert one["protocol"] == "v1" and one["state"] == "success"
    assert one["progress"] == {"total": 3, "done": 3, "failed": 0}  # v1 quirk handled
    shown = user.run("stage", "status", str(ids[0]))
    assert "3/3 online" in shown.stdout and "sara" in shown.stdout


def test_status_with_nothing_recorded(user: User) -> None:
    result = user.run("stage", "status")
    assert result.returncode == 0
    assert "no staging requests recorded in" in result.stdout


def test_status_of_one_failed_request_lists_failed_surls(user: User, srm_txt: Path) -> None:
    user.stageit.archive.failing = {sara(100)}
    user.stageit.archive.step = 0.001
    assert user.run("stage", "submit", str(srm_txt)).returncode == 0
    (request_id,) = user.stageit.archive.requests
    result = user.run("stage", "status", str(request_id))
    assert "partial success" in result.stdout and "5/6 online, 1 failed" in result.stdout
    assert f"1 file(s) did not stage:\n  {sara(100)}" in result.stdout


def test_abort_and_dry_run(user: User, srm_txt: Path) -> None:
    user.stageit.archive.step = 3600
    assert user.run("stage", "submit", str(srm_txt)).returncode == 0
    (request_id,) = user.stageit.archive.requests
    dry = user.run("stage", "abort", str(request_id), "--dry-run")
    assert f"would abort staging request {request_id} (6 file(s) at sara," in dry.stdout
    assert user.stageit.archive.view(request_id).state == "new"
    done = user.run("stage", "abort", str(request_id))
    assert done.returncode == 0, done.stderr
    assert f"aborted staging request {request_id}: now aborted" in done.stdout
    assert user.stageit.archive.view(request_id).state == "aborted"
    records = json.loads(user.records.read_text())["requests"]
    assert records[0]["state"] == "aborted"
    line = one_error_line(user.run("stage", "abort", "777"), ExitCode.INPUT)
    assert line == "error: StageIT knows no staging request 777"


# --- errors the user can fix ---------------------------------------------------------------


def test_bad_token_is_one_clear_line(user: User, srm_txt: Path) -> None:
    user.stagingrc("api_token=expired-token-xyz\n")
    result = user.run("stage", "submit", str(srm_txt))
    line = one_error_line(result, ExitCode.CREDENTIALS)
    assert line == (
        f"error: StageIT {user.stageit.url} rejected the API token from "
        f"{user.home / '.stagingrc'} (HTTP 401: Invalid token.); check the api_token= line"
    )
    assert "expired-token-xyz" not in result.stdout + result.stderr
    assert not user.records.exists()


def test_v1_credentials_alone_say_v1_is_legacy_and_how_to_choose_it(
    user: User, srm_txt: Path
) -> None:
    user.stagingrc(f"user=ann\npassword={PASSWORD}\n")
    result = user.run("stage", "submit", str(srm_txt))
    line = one_error_line(result, ExitCode.CREDENTIALS)
    assert line.startswith(f"error: {user.home / '.stagingrc'} has only v1 credentials")
    assert "API token" in line and "--protocol v1" in line
    assert user.stageit.http_requests == 0 and user.v1.http_requests == 0
    assert_no_secrets(result.stdout, result.stderr)
    chosen = user.run("stage", "submit", str(srm_txt), "--protocol", "v1")
    assert chosen.returncode == 0, chosen.stderr
    assert "(v1, " in chosen.stdout and user.v1.http_requests > 0
    by_env = subprocess.run(
        [GRIDLRT, "stage", "submit", str(srm_txt), "--subbands", "100"],
        capture_output=True, text=True, check=False, timeout=120,
        env={**user.env(), "GRIDLRT_LTA_PROTOCOL": "v1"},
    )  # fmt: skip
    assert by_env.returncode == 0 and "(v1, " in by_env.stdout, by_env.stderr


def test_stageit_is_the_default_even_with_v1_credentials_too(user: User, srm_txt: Path) -> None:
    result = user.run("stage", "submit", str(srm_txt))  # the rc has a token and user/password
    assert result.returncode == 0, result.stderr
    assert "(stageit, " in result.stdout
    assert user.stageit.submitted() == 1 and user.v1.http_requests == 0


def test_bad_v1_password_is_one_clear_line(user: User, srm_txt: Path) -> None:
    user.stagingrc("user=ann\npassword=wrong-pw-123\n")
    result = user.run("stage", "submit", str(srm_txt), "--protocol", "v1")
    line = one_error_line(result, ExitCode.CREDENTIALS)
    assert line.startswith(f"error: LTA stager {user.v1.url} rejected the user and password")
    assert "wrong-pw-123" not in result.stdout + result.stderr


def test_unsafe_credentials_file(user: User, srm_txt: Path) -> None:
    user.stagingrc(f"api_token={TOKEN}\n", mode=0o644)
    line = one_error_line(user.run("stage", "submit", str(srm_txt)), ExitCode.CREDENTIALS)
    assert "is accessible by others (mode 0644); run: chmod 600" in line


def test_server_down_is_one_line(user: User, srm_txt: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/stageit/api/staging/"
    result = user.run("stage", "submit", str(srm_txt), "--stager-url", down)
    line = one_error_line(result, ExitCode.UNAVAILABLE)
    assert line.startswith(
        f"error: LTA stager {down} unreachable after 5 attempts (connection refused)"
    )
    assert not user.records.exists()
