"""Tests of the fake DIRAC and gLite WMS command-line tools (tests/fakes/grid_cli.py)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakes.grid_cli import Expr, FakeGrid, JdlSyntaxError, dirac_light_read, parse_jdl

JOB_SH = """#!/bin/sh
# $1: a label, $2: the exit code
echo "label=$1 dirac=$DIRACJOBID glite=$GLITE_WMS_JOBID marker=$FAKE_MARKER" > result.txt
echo "to stdout $1"
echo "to stderr $1" >&2
exit "$2"
"""
SLEEPER_SH = "#!/bin/sh\nsleep 300\n"


def run(
    fake: FakeGrid, *argv: str, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        env=fake.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# ---- the JDL parser ----------------------------------------------------------------------------


def test_parser_values_comments_and_case() -> None:
    jdl = parse_jdl(
        """# a comment
        // another
        [
          Executable = "a \\"quoted\\" \\\\ name";
          cpuTime = 3600;
          Ratio = -1.5;
          Flag = TRUE;
          InputSandbox = { "x", "y" };
          Numbers = {1, 2};
          Requirements = other.GlueCEPolicyMaxCPUTime > 60 && Member("lofar", other.Tags);
          Last = "no semicolon needed before ]"
        ]"""
    )
    assert jdl.get("executable") == 'a "quoted" \\ name'
    assert jdl.get("CPUTIME") == 3600
    assert jdl.get("Ratio") == -1.5
    assert jdl.get("flag") is True
    assert jdl.get("InputSandbox") == ["x", "y"]
    assert jdl.get("Numbers") == [1, 2]
    assert jdl.get("Requirements") == Expr(
        'other.GlueCEPolicyMaxCPUTime > 60 && Member("lofar", other.Tags)'
    )
    assert jdl.get("Last") == "no semicolon needed before ]"
    assert jdl.as_dict()["cpuTime"] == 3600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('A = "x"\nB = "y";', "missing ';'"),
        ('A = "x;\n', "unterminated string"),
        ('A = {"x", "y";', "unbalanced '{'"),
        ('[ A = "x";', "unbalanced '['"),
        ('A = "x"; ]', "unbalanced ']'"),
        ("A = @x;", "unexpected character '@'"),
        ('A = "x"; # trailing comment', "unexpected character '#'"),
        ('A = "\\q";', "unknown escape"),
        ("A = ;", "expected a value"),
    ],
)
def test_parser_rejects_malformed_jdl(text: str, message: str) -> None:
    with pytest.raises(JdlSyntaxError, match=re.escape(message)):
        parse_jdl(text)


def test_dirac_light_read_mirrors_classadlight() -> None:
    assert dirac_light_read('[ Executable = "a";\n Arguments = "b" ]') == {
        "Executable": '"a"',
        "Arguments": '"b"',
    }
    # '//' lines are not comments for DIRAC: they become part of the next attribute name
    assert dirac_light_read('// note\nExecutable = "a";') == {"// note\nExecutable": '"a"'}
    # a ';' inside a string ends the value
    assert dirac_light_read('Arguments = "a;b";') == {"Arguments": '"a'}


# ---- DIRAC -------------------------------------------------------------------------------------


def test_dirac_simple_job(fake_dirac: FakeGrid, tmp_path: Path) -> None:
    fake_dirac.site_env["FAKE_MARKER"] = "site-env-works"
    write(tmp_path / "job.sh", JOB_SH)
    jdl = write(
        tmp_path / "simple.jdl",
        '# a DIRAC job\n[\n  JobName = "simple";\n  Executable = "job.sh";\n'
        "  Arguments = \"'hello world' 0\";\n"
        '  StdOutput = "std.out";\n  StdError = "std.err";\n  InputSandbox = {"job.sh"};\n]\n',
    )
    result = run(fake_dirac, "dirac-wms-job-submit", str(jdl), cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout == "JobID = 1001\n"
    (job,) = fake_dirac.wait(["1001"], timeout=30)
    assert (job.state, job.exit_code) == ("Done", 0)
    assert job.argv == ["./job.sh", "hello world", "0"]
    assert job.stdout() == "to stdout hello world\n"
    assert job.stderr() == "to stderr hello world\n"
    assert (job.job_dir / "result.txt").read_text() == (
        "label=hello world dirac=1001 glite= marker=site-env-works\n"
    )
    assert job.jdl["JobName"] == "simple"
    assert job.jdl_text == jdl.read_text()
    status = run(fake_dirac, "dirac-wms-job-status", "1001", cwd=tmp_path)
    assert status.returncode == 0
    assert status.stdout == (
        "JobID=1001 Status=Done; MinorStatus=Execution Complete; ApplicationStatus=Unknown; "
        "Site=GRID.FAKE.nl; \n"
    )


def test_dirac_parametric_job(fake_dirac: FakeGrid, tmp_path: Path) -> None:
    write(tmp_path / "job.sh", JOB_SH.replace('exit "$2"', '[ "$1" = 1 ] && exit 3; exit 0'))
    jdl = write(
        tmp_path / "param.jdl",
        '[\n  JobName = "p_%s";\n  Executable = "job.sh";\n  Arguments = "%s %j";\n'
        '  StdOutput = "out_%n.txt";\n  StdError = "err_%n.txt";\n  InputSandbox = {"job.sh"};\n'
        "  Parameters = 3;\n  ParameterStart = 0;\n  ParameterStep = 1;\n]\n",
    )
    ids_file = tmp_path / "ids"
    result = run(fake_dirac, "dirac-wms-job-submit", "-f", str(ids_file), str(jdl), cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stdout == "JobID = [1001, 1002, 1003]\n"
    assert ids_file.read_text() == "1001\n1002\n1003\n"
    jobs = fake_dirac.wait(timeout=30)
    assert [(j.id, j.parameter, j.state, j.exit_code) for j in jobs] == [
        ("1001", 0, "Done", 0),
        ("1002", 1, "Failed", 3),
        ("1003", 2, "Done", 0),
    ]
    assert jobs[1].argv == ["./job.sh", "1", "1002"]
    assert jobs[1].jdl["JobName"] == "p_1"
    assert jobs[1].jdl["ParameterNumber"] == 1
    assert jobs[1].stdout_path == jobs[1].job_dir / "out_1.txt"
    assert (jobs[2].job_dir / "result.txt").read_text().startswith("label=2 dirac=1003 ")
    status = run(fake_dirac, "dirac-wms-job-status", "1002", cwd=tmp_path)
    assert status.stdout == (
        "JobID=1002 Status=Failed; MinorStatus=Application Finished With Errors; "
        "ApplicationStatus=Unknown; Site=GRID.FAKE.nl; \n"
    )
    # a second submission appends to the ids file and gets the next ids
    again = run(fake_dirac, "dirac-wms-job-submit", "-f", str(ids_file), str(jdl), cwd=tmp_path)
    assert again.stdout == (
        f"Appending job ids to existing logfile: {ids_file}\nJobID = [1004, 1005, 1006]\n"
    )
    assert ids_file.read_text().split() == [str(i) for i in range(1001, 1007)]


def test_dirac_kill(fake_dirac: FakeGrid, tmp_path: Path) -> None:
    write(tmp_path / "sleeper.sh", SLEEPER_SH)
    jdl = write(
        tmp_path / "sleep.jdl",
        'Executable = "sleeper.sh";\nInputSandbox = {"sleeper.sh"};\n',
    )
    assert run(fake_dirac, "dirac-wms-job-submit", str(jdl), cwd=tmp_path).returncode == 0
    wait_for(lambda: fake_dirac.job(1001).pid is not None)
    pgid = fake_dirac.job(1001).pid
    assert pgid is not None
    status = run(fake_dirac, "dirac-wms-job-status", "1001", cwd=tmp_path)
    assert "Status=Running; MinorStatus=Application;" in status.stdout
    killed = run(fake_dirac, "dirac-wms-job-kill", "1001", cwd=tmp_path)
    assert (killed.returncode, killed.stdout) == (0, "Killed jobs 1001\n")
    (job,) = fake_dirac.wait(timeout=15)
    assert job.state == "Killed"
    assert job.exit_code == 128 + 15
    wait_for(lambda: group_gone(pgid))
    status = run(fake_dirac, "dirac-wms-job-status", "1001", cwd=tmp_path)
    assert status.stdout.startswith("JobID=1001 Status=Killed; MinorStatus=Marked for termination;")
    # a finished (or unknown) job cannot move to Killed: nothing left to kill
    again = run(fake_dirac, "dirac-wms-job-kill", "1001", "4242", cwd=tmp_path)
    assert (again.returncode, again.stdout) == (2, "ERROR Invalid job specification: []\n")


def test_dirac_waiting_jobs_and_max_running(fake_dirac: FakeGrid, tmp_path: Path) -> None:
    fake_dirac.max_running = 1
    jdl = write(
        tmp_path / "two.jdl",
        'Executable = "/bin/sleep";\nArguments = "0.5";\n'
        "Parameters = 2;\nParameterStart = 0;\nParameterStep = 1;\n",
    )
    assert run(fake_dirac, "dirac-wms-job-submit", str(jdl), cwd=tmp_path).returncode == 0
    status = run(fake_dirac, "dirac-wms-job-status", "1001", "1002", cwd=tmp_path).stdout
    assert "JobID=1001 Status=Running;" in status
    assert "JobID=1002 Status=Waiting; MinorStatus=Pilot Agent Submission; " in status
    assert "Site=ANY;" in status
    # DIRAC's state machine does not let a Waiting job become Killed
    refused = run(fake_dirac, "dirac-wms-job-kill", "1002", cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (2, "ERROR Invalid job specification: []\n")
    first, second = fake_dirac.wait(timeout=30)
    assert first.state == second.state == "Done"
    assert second.started is not None and first.finished is not None
    assert second.started >= first.finished


def test_dirac_status_of_unknown_and_malformed_ids(fake_dirac: FakeGrid, tmp_path: Path) -> None:
    unknown = run(fake_dirac, "dirac-wms-job-status", "4242", cwd=tmp_path)
    assert (unknown.returncode, unknown.stdout) == (0, "")
    bad = run(fake_dirac, "dirac-wms-job-status", "abc", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stdout == "ERROR: Expected (list of)  integer or string for existing jobID\n"
    bad_kill = run(fake_dirac, "dirac-wms-job-kill", "abc", cwd=tmp_path)
    assert bad_kill.returncode == 2
    assert bad_kill.stdout == "ERROR Expected (list of)  integer or string for existing jobID\n"


def test_dirac_sandbox_paths_are_relative_to_the_current_directory(
    fake_dirac: FakeGrid, tmp_path: Path
) -> None:
    sub = tmp_path / "run"
    sub.mkdir()
    write(sub / "job.sh", JOB_SH)
    jdl = write(
        sub / "a.jdl", 'Executable = "job.sh";\nArguments = "x 0";\nInputSandbox = "job.sh";'
    )
    elsewhere = run(fake_dirac, "dirac-wms-job-submit", str(jdl), cwd=tmp_path)
    assert elsewhere.returncode == 2
    assert elsewhere.stdout == (
        f"ERROR {jdl}: Invalid job description ( 1501 : Input Sandbox is not valid)\n"
    )
    assert run(fake_dirac, "dirac-wms-job-submit", str(jdl), cwd=sub).stdout == "JobID = 1001\n"
    assert fake_dirac.wait(timeout=30)[0].state == "Done"


def test_dirac_jdl_text_argument_and_missing_program(fake_dirac: FakeGrid, tmp_path: Path) -> None:
    # Dirac.submitJob reads an argument that is not a file as the JDL itself
    result = run(fake_dirac, "dirac-wms-job-submit", 'Executable = "/no/such/prog";', cwd=tmp_path)
    assert result.stdout == "JobID = 1001\n"
    (job,) = fake_dirac.wait(timeout=30)
    assert (job.state, job.exit_code) == ("Failed", 127)
    assert "cannot run the job" in job.stderr()
    assert job.stderr_path == job.job_dir / "std.err"


def test_close_kills_running_and_waiting_jobs(tmp_path: Path) -> None:
    fake = FakeGrid("glite", tmp_path / "grid")
    try:
        fake.max_running = 1
        write(tmp_path / "sleeper.sh", SLEEPER_SH)
        jdl = write(
            tmp_path / "p.jdl",
            'JobType = "Parametric";\nParameters = 2;\nExecutable = "sleeper.sh";\n'
            'InputSandbox = "sleeper.sh";\n',
        )
        assert run(fake, "glite-wms-job-submit", "-a", str(jdl), cwd=tmp_path).returncode == 0
        wait_for(lambda: fake.jobs()[0].pid is not None)
        first, second = fake.jobs()
        assert (first.state, second.state) == ("Running", "Scheduled")
    finally:
        fake.close()
    assert first.pid is not None
    wait_for(lambda: group_gone(first.pid))  # type: ignore[arg-type]
    time.sleep(0.3)  # the held job must not start after close()
    assert [j.state for j in fake.jobs()] == ["Cancelled", "Cancelled"]
    assert fake.jobs()[1].pid is None


_GOOD = 'Executable = "job.sh";\nInputSandbox = {"job.sh"};\n'
_PARAMS = "Parameters = 3;\nParameterStart = 0;\nParameterStep = 1;\n"
_INVALID_JDL = "Invalid job description ( 1501 : Invalid job JDL)"


@pytest.mark.parametrize(
    ("jdl", "message"),
    [
        pytest.param(
            'Executable = "job.sh"\nArguments = "x";', _INVALID_JDL, id="missing-semicolon"
        ),
        pytest.param('Executable = "job.sh;\n', _INVALID_JDL, id="unterminated-string"),
        pytest.param('Executable = "job.sh";\nInputSandbox = {"job.sh";', _INVALID_JDL, id="brace"),
        pytest.param("[\n" + _GOOD, _INVALID_JDL, id="unbalanced-bracket"),
        pytest.param(_GOOD + "Arguments = $x;", _INVALID_JDL, id="unknown-token"),
        pytest.param('Arguments = "x";\nInputSandbox = {"job.sh"};', _INVALID_JDL, id="no-exe"),
        pytest.param(_GOOD + 'Executable = "other.sh";', _INVALID_JDL, id="duplicate"),
        pytest.param('executable = "job.sh";', _INVALID_JDL, id="wrong-case"),
        pytest.param("// comment\n" + _GOOD, _INVALID_JDL, id="slash-comment"),
        pytest.param(_GOOD + 'Arguments = "a;b";', _INVALID_JDL, id="semicolon-in-string"),
        pytest.param(_GOOD + "Arguments = 3;", _INVALID_JDL, id="unquoted-arguments"),
        pytest.param(
            'Executable = "job.sh";\nInputSandbox = {"job.sh", "missing.txt"};',
            "Invalid job description ( 1501 : Input Sandbox is not valid)",
            id="missing-sandbox-file",
        ),
        pytest.param(
            _GOOD + "Parameters = 3;\nParameterStep = 1;",
            "Invalid job description ( 1501 : Inconsistent parametric job description)",
            id="no-parameter-start",
        ),
        pytest.param(
            _GOOD + "Parameters = 3;\nParameterStart = 0;",
            "Invalid job description ( 1501 : Inconsistent parametric job description)",
            id="no-parameter-step",
        ),
        pytest.param(
            _GOOD + "Parameters = 0;\nParameterStart = 0;\nParameterStep = 1;",
            "Invalid job description ( 1501 : Illegal number of job parameters 0)",
            id="zero-parameters",
        ),
        pytest.param(
            _GOOD + "Parameters = 21;\nParameterStart = 0;\nParameterStep = 1;",
            "Invalid job description ( 1501 : Number of parametric jobs exceeds the limit of 20)",
            id="too-many-parameters",
        ),
        pytest.param(
            _GOOD + 'JobType = "Parametric";\n' + _PARAMS,
            "Parametric is not a valid value for JobType",
            id="glite-jobtype",
        ),
    ],
)
def test_dirac_rejects_bad_jdl(
    fake_dirac: FakeGrid, tmp_path: Path, jdl: str, message: str
) -> None:
    write(tmp_path / "job.sh", JOB_SH)
    path = write(tmp_path / "bad.jdl", jdl)
    result = run(fake_dirac, "dirac-wms-job-submit", "-f", "ids", str(path), cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stdout == f"ERROR {path}: {message}\n"
    assert fake_dirac.jobs() == []
    assert not (tmp_path / "ids").exists()


def test_dirac_not_strict_follows_real_leniency(fake_dirac: FakeGrid, tmp_path: Path) -> None:
    fake_dirac.strict = False
    jdl = write(
        tmp_path / "lenient.jdl",
        'Executable = "/bin/true";\nExecutable = "/bin/false";\nParameters = 2;\n',
    )
    assert run(fake_dirac, "dirac-wms-job-submit", str(jdl), cwd=tmp_path).returncode == 0
    jobs = fake_dirac.wait(timeout=30)
    # the last duplicate wins; ParameterStart/Step default to 1 and 0
    assert [(j.parameter, j.state, j.argv) for j in jobs] == [
        (1, "Failed", ["/bin/false"]),
        (1, "Failed", ["/bin/false"]),
    ]


# ---- gLite -------------------------------------------------------------------------------------

_ID = r"https://wms\.fake-grid\.example:9000/[A-Za-z0-9_-]{22}"
_SUBMIT_OK = (
    "\nConnecting to the service https://wms.fake-grid.example:7443/glite_wms_wmproxy_server\n\n"
    "\n====================== glite-wms-job-submit Success ======================\n\n"
    "The job has been successfully submitted to the WMProxy\nYour job identifier is:\n\n"
    "{id}\n{saved}\n==========================================================================\n\n\n"
)


def test_glite_simple_job(fake_glite: FakeGrid, tmp_path: Path) -> None:
    fake_glite.site_env["FAKE_MARKER"] = "m"
    write(tmp_path / "job.sh", JOB_SH)
    jdl = write(
        tmp_path / "simple.jdl",
        '[\n  Executable = "job.sh";\n  Arguments = "one 0";\n  StdOutput = "std.out";\n'
        '  StdError = "std.err";\n  InputSandbox = {"job.sh"};\n  OutputSandbox = {"std.out"};\n'
        "  Requirements = other.GlueCEPolicyMaxCPUTime > 60;\n]\n",
    )
    result = run(fake_glite, "glite-wms-job-submit", "-a", "-o", "ids", str(jdl), cwd=tmp_path)
    assert result.returncode == 0, result
    job_id = re.search(_ID, result.stdout).group()  # type: ignore[union-attr]
    saved = f"\nThe job identifier has been saved in the following file:\n{tmp_path / 'ids'}\n"
    assert result.stdout == _SUBMIT_OK.format(id=job_id, saved=saved)
    assert (tmp_path / "ids").read_text() == f"###Submitted Job Ids###\n{job_id}"
    (job,) = fake_glite.wait([job_id], timeout=30)
    assert (job.id, job.state, job.exit_code, job.parent) == (job_id, "Done(Success)", 0, None)
    assert (job.job_dir / "result.txt").read_text() == f"label=one dirac= glite={job_id} marker=m\n"
    status = run(fake_glite, "glite-wms-job-status", "--noint", "-i", "ids", cwd=tmp_path)
    assert status.returncode == 0, status
    assert re.fullmatch(
        r"\n======================= glite-wms-job-status Success =====================\n"
        r"BOOKKEEPING INFORMATION:\n\n"
        rf"Status info for the Job : {re.escape(job_id)}\n"
        r"Current Status:     Done\(Success\)\n"
        r"Exit code:          0\n"
        r"Status Reason:      Job Terminated Successfully\n"
        r"Destination:        ce\.fake-grid\.example:8443/cream-pbs-fake\n"
        r"Submitted:          \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} \S+\n"
        r"={74}\n\n",
        status.stdout,
    ), status.stdout
    fake_glite.status_style = "legacy"
    legacy = run(fake_glite, "glite-wms-job-status", job_id, cwd=tmp_path)
    assert "\nCurrent Status:     Done (Success)\n" in legacy.stdout
    assert "*" * 61 + "\nBOOKKEEPING INFORMATION:" in legacy.stdout


def test_glite_parametric_job(fake_glite: FakeGrid, tmp_path: Path) -> None:
    write(tmp_path / "job.sh", JOB_SH.replace('exit "$2"', '[ "$1" = 3 ] && exit 3; exit 0'))
    jdl = write(
        tmp_path / "param.jdl",
        '// a gLite parametric job\nJobType = "Parametric";\nParameters = 4;\n'
        'ParameterStart = 1;\nParameterStep = 2;\nExecutable = "job.sh";\n'
        'Arguments = "_PARAM_";\nStdOutput = "out__PARAM_.txt";\nStdError = "err__PARAM_.txt";\n'
        'InputSandbox = {"job.sh"};\n',
    )
    result = run(fake_glite, "glite-wms-job-submit", "-d", "me", str(jdl), cwd=tmp_path)
    assert result.returncode == 0, result
    parent = re.search(_ID, result.stdout).group()  # type: ignore[union-attr]
    assert result.stdout == _SUBMIT_OK.format(id=parent, saved="")
    jobs = fake_glite.wait([parent], timeout=30)  # a parent id means its nodes
    # Parameters is the exclusive upper bound: values 1 and 3
    assert [(j.parameter, j.node_name, j.state, j.exit_code) for j in jobs] == [
        (1, "Node_1", "Done(Success)", 0),
        (3, "Node_3", "Done(Exit Code !=0)", 3),
    ]
    assert all(j.parent == parent for j in jobs)
    assert jobs[1].argv == ["./job.sh", "3"]
    assert jobs[1].stdout() == "to stdout 3\n"
    assert jobs[1].stdout_path == jobs[1].job_dir / "out_3.txt"
    status = run(fake_glite, "glite-wms-job-status", parent, cwd=tmp_path)
    assert status.returncode == 0, status
    text = status.stdout
    assert text.startswith(
        "\n======================= glite-wms-job-status Success =====================\n"
        f"BOOKKEEPING INFORMATION:\n\nStatus info for the Job : {parent}\nCurrent Status:     Done"
    )
    nodes = text.split("\n- Nodes information for: \n", 1)[1]
    assert nodes.count("    Status info for the Job : ") == 2
    assert (
        f"    Status info for the Job : {jobs[0].id}\n    Current Status:     Done(Success)\n"
        in nodes
    )
    assert (
        f"    Status info for the Job : {jobs[1].id}\n    Current Status:     Done(Exit Code !=0)\n"
        "    Exit code:          3\n"
    ) in nodes
    one_node = run(fake_glite, "glite-wms-job-status", jobs[0].id, cwd=tmp_path)
    assert f"\nParent Job:         {parent}\n" in one_node.stdout
    no_nodes = run(fake_glite, "glite-wms-job-status", "--nonodes", parent, cwd=tmp_path)
    assert "Nodes information" not in no_nodes.stdout


def test_glite_cancel(fake_glite: FakeGrid, tmp_path: Path) -> None:
    write(tmp_path / "sleeper.sh", SLEEPER_SH)
    jdl = write(
        tmp_path / "sleep.jdl", '[ Executable = "sleeper.sh"; InputSandbox = "sleeper.sh" ]'
    )
    result = run(fake_glite, "glite-wms-job-submit", "-a", "--nomsg", str(jdl), cwd=tmp_path)
    assert result.returncode == 0, result
    assert re.fullmatch(_ID + "\n", result.stdout)
    job_id = result.stdout.strip()
    wait_for(lambda: fake_glite.job(job_id).pid is not None)
    pgid = fake_glite.job(job_id).pid
    assert pgid is not None
    running = run(fake_glite, "glite-wms-job-status", job_id, cwd=tmp_path)
    assert "\nCurrent Status:     Running\nStatus Reason:      unavailable\n" in running.stdout
    cancel = run(fake_glite, "glite-wms-job-cancel", "--noint", job_id, cwd=tmp_path)
    assert cancel.returncode == 0, cancel
    assert cancel.stdout == (
        f"\n{'=' * 29} glite-wms-job-cancel Success {'=' * 29}\n"
        "\nThe cancellation request has been successfully submitted for the following job(s):\n\n"
        f"- {job_id}\n\n{'=' * 88}\n\n\n"
    )
    (job,) = fake_glite.wait(timeout=15)
    assert job.state == "Cancelled"
    wait_for(lambda: group_gone(pgid))
    again = run(fake_glite, "glite-wms-job-cancel", "--noint", job_id, cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr == "\nError - Cancel not allowed\nCurrent Job Status is Cancelled\n\n"


def test_glite_submit_needs_a_delegation(fake_glite: FakeGrid, tmp_path: Path) -> None:
    jdl = write(tmp_path / "a.jdl", 'Executable = "/bin/true";')
    result = run(fake_glite, "glite-wms-job-submit", str(jdl), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "\nError - Missing Information\nNo delegationId found, please use one of the following "
        "methods: \n--delegationid, -d <id_string>\n"
    )
    assert fake_glite.jobs() == []


def test_glite_status_errors(fake_glite: FakeGrid, tmp_path: Path) -> None:
    unknown = f"https://wms.fake-grid.example:9000/{'x' * 22}"
    result = run(fake_glite, "glite-wms-job-status", unknown, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        '**** Error: API_NATIVE_ERROR ****  \nError while calling the "Job:getStatus" native api \n'
    )
    bad = run(fake_glite, "glite-wms-job-status", "not-a-job-id", cwd=tmp_path)
    assert bad.returncode == 1
    assert "UI_WRONG_JOBID_FORMAT" in bad.stderr
    assert bad.stderr.endswith(
        "**** Error: UI_WRONG_JOBID_ALL ****  \nAll jobID are in wrong format\n"
    )
    # several ids from a file without --noint: the real script asks, and dies at EOF
    write(tmp_path / "ids", f"###Submitted Job Ids###\n{unknown}\n{unknown[:-1]}y\n")
    menu = run(fake_glite, "glite-wms-job-status", "-i", "ids", cwd=tmp_path)
    assert menu.returncode == 1
    assert "Choose one or more jobId(s) in the list - [1-2]all:" in menu.stdout
    assert "EOFError" in menu.stderr


_GLITE_JOB = 'Executable = "job.sh";\nInputSandbox = {"job.sh"};\n'


@pytest.mark.parametrize(
    ("jdl", "name", "message"),
    [
        pytest.param(
            'Executable = "job.sh"\nArguments = "x";',
            "AdSyntaxException",
            "The following parsing error(s) have been found:\nmissing ';'",
            id="missing-semicolon",
        ),
        pytest.param(
            'Executable = "job.sh;', "AdSyntaxException", "unterminated string", id="string"
        ),
        pytest.param(
            'Executable = "job.sh";\nInputSandbox = {"job.sh";',
            "AdSyntaxException",
            "unbalanced '{'",
            id="brace",
        ),
        pytest.param("[" + _GLITE_JOB, "AdSyntaxException", "unbalanced '['", id="bracket"),
        pytest.param(_GLITE_JOB + "Rank = `x`;", "AdSyntaxException", "unexpected", id="token"),
        pytest.param(
            _GLITE_JOB + 'Executable = "x";', "AdSyntaxException", "given twice", id="duplicate"
        ),
        pytest.param(
            'Arguments = "x";',
            "AdSemanticMandatoryException",
            "Executable: Jdl mandatory attribute is missing",
            id="no-executable",
        ),
        pytest.param(
            "Executable = job.sh;",
            "AdMismatchException",
            "Executable: wrong type caught for attribute",
            id="unquoted-executable",
        ),
        pytest.param(
            'Executable = "job.sh";\nInputSandbox = {"job.sh", "missing.txt"};',
            "AdSemanticPathException",
            "InputSandbox: Specified path '{tmp}/missing.txt' is missing",
            id="missing-sandbox-file",
        ),
        pytest.param(
            _GLITE_JOB + 'JobType = "Parametric";\nParameterStart = 0;\nParameterStep = 1;',
            "AdSemanticMandatoryException",
            "Parameters: Jdl mandatory attribute is missing",
            id="no-parameters",
        ),
        pytest.param(
            _GLITE_JOB + 'JobType = "Parametric";\nParameters = 0;',
            "AdMismatchException",
            "Parameters: wrong value caught for attribute",
            id="zero-parameters",
        ),
    ],
)
def test_glite_rejects_bad_jdl(
    fake_glite: FakeGrid, tmp_path: Path, jdl: str, name: str, message: str
) -> None:
    write(tmp_path / "job.sh", JOB_SH)
    path = write(tmp_path / "bad.jdl", jdl)
    result = run(fake_glite, "glite-wms-job-submit", "-a", "-o", "ids", str(path), cwd=tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(f"\nError - {name}\n"), result.stderr
    assert message.replace("{tmp}", str(tmp_path)) in result.stderr
    assert "glite-wms-job-submit Success" not in result.stdout
    assert fake_glite.jobs() == []
    assert not (tmp_path / "ids").exists()


def test_glite_parametric_sandbox_uses_param(fake_glite: FakeGrid, tmp_path: Path) -> None:
    write(tmp_path / "job.sh", "#!/bin/sh\ncat in_$1.txt\n")
    write(tmp_path / "in_0.txt", "zero\n")
    jdl = write(
        tmp_path / "p.jdl",
        'JobType = "Parametric";\nParameters = 2;\nExecutable = "job.sh";\nArguments = "_PARAM_";\n'
        'StdOutput = "out";\nInputSandbox = {"job.sh", "in__PARAM_.txt"};\n',
    )
    missing = run(fake_glite, "glite-wms-job-submit", "-a", str(jdl), cwd=tmp_path)
    assert missing.returncode == 1
    assert f"InputSandbox: Specified path '{tmp_path}/in_1.txt' is missing" in missing.stderr
    write(tmp_path / "in_1.txt", "one\n")
    assert run(fake_glite, "glite-wms-job-submit", "-a", str(jdl), cwd=tmp_path).returncode == 0
    assert [j.stdout() for j in fake_glite.wait(timeout=30)] == ["zero\n", "one\n"]


def test_start_delay_and_cancel_before_start(fake_glite: FakeGrid, tmp_path: Path) -> None:
    fake_glite.start_delay = 30
    jdl = write(tmp_path / "a.jdl", 'Executable = "/bin/true";')
    job_id = run(fake_glite, "glite-wms-job-submit", "-a", "--nomsg", str(jdl), cwd=tmp_path)
    status = run(fake_glite, "glite-wms-job-status", job_id.stdout.strip(), cwd=tmp_path)
    assert "\nCurrent Status:     Submitted\nSubmitted:" in status.stdout
    cancel = run(fake_glite, "glite-wms-job-cancel", "--noint", job_id.stdout.strip(), cwd=tmp_path)
    assert cancel.returncode == 0, cancel
    (job,) = fake_glite.wait(timeout=10)
    assert (job.state, job.pid, job.argv) == ("Cancelled", None, None)
