"""Rendering and parsing for the submit backends: pure functions, no batch system needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.errors import InputError
from gridlrt.submit.dirac import DiracSubmitter, parse_submitted
from gridlrt.submit.dirac import parse_status as dirac_status
from gridlrt.submit.glite import GliteSubmitter, parse_ids_file
from gridlrt.submit.glite import parse_status as glite_status
from gridlrt.submit.jdl import attribute, check_jdl, jdl_string, parse_jdl
from gridlrt.submit.model import JobRecord, JobState, PilotRequest, Resources
from gridlrt.submit.pilot_args import pilot_max_time, slurm_time
from gridlrt.submit.slurm import SlurmSubmitter, slurm_state

SHA = "ab" * 32


def request(tmp_path: Path, **kw: object) -> PilotRequest:
    sandbox = tmp_path / "cache" / f"{SHA}.tar.gz"
    sandbox.parent.mkdir(parents=True, exist_ok=True)
    sandbox.write_bytes(b"x")
    fields: dict[str, object] = {
        "step": "average",
        "count": 4,
        "pool_url": "https://couch.example.org:6984/lofar_tokens",
        "run_dir": tmp_path / "run",
        "resources": Resources(cpus=2, walltime=4 * 3600, max_running=3, partition="normal"),
        "worker_args": ["--output-root", "davs://webdav.example.org/pnfs/lofar/user/results"],
        "credentials_file": tmp_path / "run" / "pool.cred",
        "sandbox": sandbox,
        "sandbox_id": SHA,
    }
    fields.update(kw)
    return PilotRequest.model_validate(fields)


def test_slurm_script_has_array_cap_resources_and_no_secret(tmp_path: Path) -> None:
    sub = SlurmSubmitter(python="/opt/venv/bin/python").prepare(request(tmp_path))
    script = sub.files["slurm.sh"]
    assert "#SBATCH --array=0-3%3" in script
    assert "#SBATCH --cpus-per-task=2" in script
    assert "#SBATCH --time=0-04:00:00" in script
    assert "#SBATCH --partition=normal" in script
    assert f"#SBATCH --output={tmp_path / 'run'}/slurm-%A_%a.out" in script
    assert f"export GRIDLRT_POOL_CREDENTIALS={tmp_path / 'run' / 'pool.cred'}" in script
    last = script.strip().splitlines()[-1]
    assert last.startswith("exec /opt/venv/bin/python -m gridlrt worker run --pool https://couch")
    assert "--step average --max-time 12960s" in last  # 4 h minus 10 %
    assert sub.command == ["sbatch", "--parsable", str(tmp_path / "run" / "slurm.sh")]


def test_slurm_refuses_a_run_dir_with_spaces(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="spaces"):
        SlurmSubmitter().prepare(request(tmp_path, run_dir=tmp_path / "my runs"))


def test_dirac_jdl_is_parametric_ships_the_sandbox_and_checks(tmp_path: Path) -> None:
    req = request(tmp_path, resources=Resources(sites=["LCG.SARA.nl"], tags=["2Processors"]))
    sub = DiracSubmitter().prepare(req)
    jdl = parse_jdl(sub.files["pilot-0.jdl"])
    assert attribute(jdl, "Executable") == "pilot.sh"
    assert attribute(jdl, "Parameters") == 4
    assert attribute(jdl, "ParameterStart") == 0 and attribute(jdl, "ParameterStep") == 1
    assert attribute(jdl, "JobName") == "gridlrt_%s"
    assert attribute(jdl, "Site") == ["LCG.SARA.nl"]
    assert attribute(jdl, "Tags") == ["2Processors"]
    assert attribute(jdl, "InputSandbox") == [
        str(tmp_path / "run" / "pilot.sh"),
        str(req.sandbox),
        str(tmp_path / "run" / "pool.cred"),
    ]
    args = attribute(jdl, "Arguments").split()
    assert args[:2] == [f"{SHA}.tar.gz", SHA]
    assert args[2:6] == [
        "--pool",
        "https://couch.example.org:6984/lofar_tokens",
        "--step",
        "average",
    ]
    assert "pilot.sh" in sub.files and sub.files["pilot.sh"].startswith("#!/bin/sh")
    # before the files exist the full check fails; after writing them it passes
    with pytest.raises(InputError, match="does not exist"):
        check_jdl(sub.files["pilot-0.jdl"], "dirac")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "pilot.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run" / "pool.cred").write_text("username=a\npassword=b\n")
    check_jdl(sub.files["pilot-0.jdl"], "dirac")


def test_dirac_splits_big_submissions_into_parametric_jobs_of_twenty(tmp_path: Path) -> None:
    sub = DiracSubmitter().prepare(request(tmp_path, count=45))
    sizes = [attribute(parse_jdl(sub.files[f"pilot-{k}.jdl"]), "Parameters") for k in range(3)]
    assert sizes == [20, 20, 5]
    assert sub.command[-3:] == [str(tmp_path / "run" / f"pilot-{k}.jdl") for k in range(3)]


def test_glite_jdl_uses_param_placeholder_and_requirements(tmp_path: Path) -> None:
    req = request(tmp_path, resources=Resources(walltime=7200, banned_sites=["ce.bad.nl"]))
    sub = GliteSubmitter(env={"USER": "astro"}).prepare(req)
    jdl = parse_jdl(sub.files["pilot.jdl"])
    assert attribute(jdl, "JobType") == "Parametric"
    assert attribute(jdl, "StdOutput") == "pilot__PARAM_.out"
    assert attribute(jdl, "VirtualOrganisation") == "lofar"
    assert "GlueCEPolicyMaxWallClockTime >" in attribute(jdl, "Requirements")
    assert "ce.bad.nl" in attribute(jdl, "Requirements")
    assert sub.command[:3] == ["glite-wms-job-submit", "-d", "astro"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[ Executable = "a" ]', "does not end with ';'"),
        ('[ Executable = "a; ]', "cannot parse"),
        ('[ Executable = "a"; Executable = "b"; ]', "given twice"),
        ('[ InputSandbox = {"a", "b"; ]', "unbalanced"),
        ('Executable "a";', "expected 'Name = value;'"),
        ('[ Executable = "a";', "does not end with ']'"),
    ],
)
def test_jdl_parser_rejects_malformed_text(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_jdl(text)


def test_jdl_checks_required_and_parametric_fields(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"lacks .*StdOutput"):
        check_jdl('Executable = "x"; Arguments = "";', "dirac", check_files=False)
    base = (
        'Executable = "pilot.sh"; Arguments = "a"; StdOutput = "o"; StdError = "e"; '
        'InputSandbox = {"pilot.sh"}; JobName = "j"; '
    )
    with pytest.raises(InputError, match="needs ParameterStart"):
        check_jdl(base + "Parameters = 3;", "dirac", check_files=False)
    with pytest.raises(InputError, match=r"Executable other\.sh is not in the InputSandbox"):
        check_jdl(base.replace('"pilot.sh";', '"other.sh";', 1), "dirac", check_files=False)
    glite = base.replace("JobName", "JobType").replace('"j"', '"Parametric"')
    with pytest.raises(InputError, match="Parameters = N"):
        check_jdl(glite, "glite", check_files=False)


def test_values_that_would_break_quoting_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no quotes"):
        jdl_string('evil"; Executable = "/bin/rm')
    with pytest.raises(InputError, match="no spaces or quotes"):
        request(tmp_path, worker_args=["--output-root", "davs://x/a b"])
    with pytest.raises(InputError, match="carries credentials"):
        request(tmp_path, pool_url="https://user:secret@couch.example.org/db")


def test_client_outputs_are_parsed() -> None:
    assert parse_submitted("JobID = 1234\n") == ["1234"]
    assert parse_submitted("JobID = [1235, 1236, 1237]\n") == ["1235", "1236", "1237"]
    states = dirac_status(
        "JobID=1235 Status=Running; MinorStatus=Application; Site=LCG.SARA.nl; \n"
        "JobID=1236 Status=Done; MinorStatus=Execution Complete; Site=LCG.SARA.nl; \n"
        "JobID=1237 Status=Stalled; MinorStatus=Job stalled: pilot not running; Site=X; \n"
    )
    assert {job: status.state for job, status in states.items()} == {
        "1235": JobState.RUNNING,
        "1236": JobState.COMPLETED,
        "1237": JobState.UNKNOWN,  # Stalled: DIRAC may bring it back to Running
    }
    url = "https://wms.grid.sara.nl:9000/Abc_dEF123"
    assert parse_ids_file(f"###Submitted Job Ids###\n{url}\n") == [url]
    status = (
        f"Status info for the Job : {url}\nCurrent Status:     Running\n"
        "- Nodes information for:\n"
        f"    Status info for the Job : {url}1\n    Current Status:     Done (Success)\n"
        f"    Status info for the Job : {url}2\n    Current Status:     Done (Exit Code !=0)\n"
    )
    assert [(job, job_status.state) for job, job_status in glite_status(status)] == [
        (url, JobState.RUNNING),
        (url + "1", JobState.COMPLETED),
        (url + "2", JobState.FAILED),
    ]
    assert slurm_state("CANCELLED by 0") is JobState.CANCELLED
    assert slurm_state("PENDING") is JobState.PENDING
    assert slurm_state("whatever") is JobState.UNKNOWN


def test_times_and_record_counts() -> None:
    assert slurm_time(90) == "0-00:02:00"
    assert slurm_time(36 * 3600) == "1-12:00:00"
    assert pilot_max_time(12 * 3600) == int(12 * 3600 * 0.9)
    assert pilot_max_time(600) == 300  # never more than half the job as margin
    record = JobRecord(
        id="r", backend="slurm", step="s", count=3, submitted=0, run_dir="/x", host="h",
        job_ids=["1_0", "1_1", "1_2"], command=[], states={"1_0": JobState.COMPLETED},
    )  # fmt: skip
    assert record.counts()["completed"] == 1 and record.counts()["pending"] == 2
    assert record.active


def test_pilots_are_told_of_the_pool_s_other_copies_without_their_credentials(
    tmp_path: Path,
) -> None:
    copies = ["https://couch2.example.org:6984/lofar_tokens", "https://couch3.example.org/t"]
    sub = SlurmSubmitter(python="/opt/venv/bin/python").prepare(
        request(tmp_path, pool_replicas=copies)
    )
    last = sub.files["slurm.sh"].strip().splitlines()[-1]
    assert f"--pool-replicas {','.join(copies)}" in last
    for grid, name in ((DiracSubmitter(), "pilot-0.jdl"), (GliteSubmitter(), "pilot.jdl")):
        jdl = parse_jdl(grid.prepare(request(tmp_path, pool_replicas=copies)).files[name])
        assert f"--pool-replicas {','.join(copies)}" in str(attribute(jdl, "Arguments"))
    plain = SlurmSubmitter(python="/opt/venv/bin/python").prepare(request(tmp_path))
    assert "--pool-replicas" not in plain.files["slurm.sh"]
    with pytest.raises(InputError, match="carries credentials"):
        request(tmp_path, pool_replicas=["https://u:secret@couch2.example.org/lofar_tokens"])
