"""Bad input from a user gets one line saying what is wrong and how to fix it, a non-zero
exit, no traceback and nothing half-written (issue 12, items 7-10).

Every case runs the real ``gridlrt`` command in a subprocess with an isolated environment.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridlrt.config import load_settings
from gridlrt.errors import InputError
from gridlrt.tokens import new_token, open_pool
from gridlrt.worker.steps import load_step
from tests.gridlrt_cli import cli_env

SRM = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc2_035/229507"


def gridlrt(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``gridlrt ARGS`` in the test's own directory (relative paths stay in tmp_path)."""
    result = subprocess.run(
        [sys.executable, "-m", "gridlrt", *args], env=env, cwd=env["TEST_CWD"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"gridlrt {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        )
    return result


def one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The one ``error: ...`` line of a failed command; every fragment must be in it."""
    assert result.returncode != 0, f"exit 0; stdout: {result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path, TEST_CWD=str(tmp_path))


@pytest.fixture
def srm_txt(tmp_path: Path) -> Path:
    path = tmp_path / "srm.txt"
    path.write_text("".join(f"{SRM}/L229507_SB{sb:03d}_uv.dppp.MS_3d78b8f1.tar\n" for sb in (1, 2)))
    return path


@pytest.fixture
def pool_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pool.sqlite'}"


# --- item 7: counts and durations that make no sense -----------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["worker", "run", "--heartbeat", "0"], "--heartbeat"),
        (["worker", "run", "--heartbeat", "-5"], "--heartbeat"),
        (["worker", "run", "--heartbeat", "0.05s"], "--heartbeat"),
        (["worker", "run", "--heartbeat", "inf"], "--heartbeat"),
        (["worker", "run", "--heartbeat", "nan"], "--heartbeat"),
        (["worker", "run", "--idle-timeout=-5"], "--idle-timeout"),
        (["worker", "run", "--max-time", "0"], "--max-time"),
        (["worker", "run", "--max-tokens", "-1"], "--max-tokens"),
        (["worker", "run", "--max-tokens", "0"], "--max-tokens"),
        (["tokens", "list", "--limit", "-1"], "--limit"),
        (["tokens", "show", "x", "--tail", "-1"], "--tail"),
        (["tokens", "reset", "--older-than", "-2h"], "--older-than"),
        (["tokens", "create", "--step", "average", "--inputs", "x", "--per-token", "0"],
         "--per-token"),
        (["submit", "-b", "local", "--step", "average", "--walltime", "inf"], "--walltime"),
        (["submit", "-b", "local", "--step", "average", "--walltime", "-1h"], "--walltime"),
        (["submit", "-b", "local", "--step", "average", "--idle-timeout", "-5"], "--idle-timeout"),
        (["storage", "copy", "a", "b", "--jobs", "0"], "--jobs"),
        (["storage", "copy", "a", "b", "--retries", "-1"], "--retries"),
        (["storage", "copy", "a", "b", "--timeout", "0"], "--timeout"),
        (["stage", "submit", "srm.txt", "--poll", "0"], "--poll"),
        (["stage", "submit", "srm.txt", "--timeout", "-1m"], "--timeout"),
        (["ms", "info", "x.MS", "--history", "-1"], "--history"),
    ],
)  # fmt: skip
def test_nonsensical_counts_and_durations_are_refused(
    env: dict[str, str], args: list[str], fragment: str
) -> None:
    one_error_line(gridlrt(env, *args, check=False), fragment)


def test_a_heartbeat_below_the_minimum_is_refused_naming_it(env: dict[str, str]) -> None:
    line = one_error_line(gridlrt(env, "worker", "run", "--heartbeat", "0.01", check=False))
    assert "at least 0.1s" in line


def test_usage_errors_are_one_line_too(env: dict[str, str]) -> None:
    line = one_error_line(gridlrt(env, "tokens", "list", "--limit", "many", check=False))
    assert "--limit" in line and "gridlrt tokens list --help" in line
    missing = gridlrt(env, "tokens", "create", "--inputs", "x", check=False)
    assert missing.returncode == 2
    one_error_line(missing, "--step")
    bare = gridlrt(env, "tokens", check=False)  # no sub-command: the help, as before
    assert bare.returncode == 2 and "create" in bare.stdout + bare.stderr


# --- item 8: steps are checked when tokens are made and pilots submitted -------------------


def write_step(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


GOOD_HEAD = (
    'name = "mine"\nkind = "command"\ncommand = ["echo", "{input}"]\n[inputs]\nkind = "none"\n'
)
GOOD = GOOD_HEAD + "[outputs]\nkeep = []\n"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('name = "mine"\nkind = "command\n', ["mine.toml", "not valid TOML"]),
        ('name = "mine"\ncommand = ["echo"]\n', ["mine.toml", "kind"]),
        ('name = "mine"\nkind = "command"\ncores = "four"\ncommand = ["echo"]\n',
         ["mine.toml", "cores"]),
        ('name = "mine"\nkind = "command"\ncommand = ["echo", "{inptu}"]\n',
         ["mine.toml", "command", "{inptu}"]),
        ('name = "mine"\nkind = "dp3"\nparset = "msin={msin}\\nmsout={msuot}"\n',
         ["mine.toml", "parset", "{msuot}"]),
        ('name = "mine"\nkind = "command"\ncommand = ["echo"]\n[outputs]\nkeep = ["{nope}"]\n',
         ["mine.toml", "outputs.keep", "{nope}"]),
        ('name = "other"\nkind = "command"\ncommand = ["echo"]\n', ["mine.toml", "name"]),
    ],
)  # fmt: skip
def test_broken_step_is_refused_by_tokens_create(
    env: dict[str, str], tmp_path: Path, srm_txt: Path, pool_url: str, text: str,
    fragments: list[str],
) -> None:  # fmt: skip
    steps = tmp_path / "steps"
    write_step(steps, "mine", text)
    args = ["tokens", "create", "--step", "mine", "--inputs", str(srm_txt), "--pool", pool_url]
    one_error_line(gridlrt(env, *args, "--steps-dir", str(steps), check=False), *fragments)
    one_error_line(gridlrt(env, *args, "--steps-dir", str(steps), "--dry-run", check=False))
    assert not (tmp_path / "pool.sqlite").exists()  # nothing half-written


def test_unknown_step_and_missing_steps_dir(
    env: dict[str, str], tmp_path: Path, srm_txt: Path, pool_url: str
) -> None:
    create = ["tokens", "create", "--inputs", str(srm_txt), "--pool", pool_url]
    line = one_error_line(gridlrt(env, *create, "--step", "typo-step", check=False), "typo-step")
    assert "built-in" in line and "--steps-dir" in line
    line = one_error_line(
        gridlrt(env, *create, "--step", "average", "--steps-dir", str(tmp_path / "nope"),
                check=False),
        "--steps-dir", "nope",
    )  # fmt: skip
    worker = ["worker", "run", "--pool", pool_url, "--steps-dir", str(tmp_path / "nope")]
    one_error_line(gridlrt(env, *worker, check=False), "--steps-dir")
    assert not (tmp_path / "pool.sqlite").exists()
    # a step found in --steps-dir works, and the built-in ones need no --steps-dir
    steps = tmp_path / "steps"
    write_step(steps, "mine", GOOD)
    made = gridlrt(env, *create, "--step", "mine", "--steps-dir", str(steps))
    assert "created 2 token(s)" in made.stdout
    assert "created 2 token(s)" in gridlrt(env, *create, "--step", "average").stdout


def test_command_step_without_output_url_needs_lofar_names(
    env: dict[str, str], tmp_path: Path, pool_url: str
) -> None:
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("file:///data/run1.dat\nfile:///data/run2.dat\n")
    steps = tmp_path / "steps"
    write_step(steps, "mine", GOOD)  # keeps the default url {root}/{obsid}/{step}/{name}
    line = one_error_line(
        gridlrt(env, "tokens", "create", "--step", "mine", "--steps-dir", str(steps),
                "--inputs", str(inputs), "--pool", pool_url, check=False),
        "mine.toml", "outputs.url", "{obsid}",
    )  # fmt: skip
    assert "[outputs]" in line


def test_non_utf8_step_file(env: dict[str, str], tmp_path: Path, srm_txt: Path) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "mine.toml").write_bytes(b'name = "mine\xff"\nkind = "command"\n')
    one_error_line(
        gridlrt(env, "tokens", "create", "--step", "mine", "--steps-dir", str(steps),
                "--inputs", str(srm_txt), check=False),
        "mine.toml", "UTF-8",
    )  # fmt: skip


def test_submit_checks_the_step_against_the_first_todo_token(
    env: dict[str, str], tmp_path: Path, pool_url: str
) -> None:
    steps = tmp_path / "steps"
    write_step(
        steps, "mine", GOOD_HEAD.replace('"{input}"', '"{calibrator}"')
        + '[outputs]\nkeep = []\nurl = "{root}/{step}/{token_id}/{name}"\n',
    )  # fmt: skip
    with open_pool(load_settings(pool=pool_url)) as pool:
        pool.init()
        pool.create([new_token("mine_1", inputs="file:///x/a.dat", step="mine")])
    submit = ["submit", "-b", "local", "--step", "mine", "-n", "1", "--pool", pool_url,
              "--steps-dir", str(steps), "--dry-run"]  # fmt: skip
    one_error_line(gridlrt(env, *submit, check=False), "mine.toml", "{calibrator}", "mine_1")
    one_error_line(
        gridlrt(env, *[a.replace("mine", "typo-step") if a == "mine" else a for a in submit],
                check=False),
        "typo-step",
    )  # fmt: skip
    with open_pool(load_settings(pool=pool_url)) as pool:  # a token field fills the placeholder
        pool.create(
            [
                new_token(
                    "mine_2", inputs="file:///x/b.dat", step="mine", fields={"calibrator": "3C196"}
                )
            ]
        )
        pool.delete(["mine_1"])
    assert "nothing submitted" in gridlrt(env, *submit).stdout


def test_validate_step_in_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gridlrt.worker import plan
    from gridlrt.worker.plan import validate_step
    from gridlrt.worker.steps import resolve_step

    path = write_step(tmp_path, "mine", GOOD.replace("{input}", "{nothing}"))
    step = load_step(path)
    token = new_token("mine_1", inputs=f"{SRM}/L229507_SB001_uv.dppp.MS_3d78b8f1.tar", step="mine")
    with pytest.raises(InputError, match=r"mine\.toml: command: unknown placeholder \{nothing\}"):
        validate_step(step, token, storage_root="file:///out")
    assert resolve_step("average", None).name == "average"
    # a machine without DP3 (a UI node) can still check a step that uses its flagging strategy
    monkeypatch.setattr(plan, "find_aoflagger_strategy", lambda name="": None)
    flagging = validate_step(resolve_step("flag-average", None), token, storage_root="file:///o")
    assert flagging.uploads[0].url.startswith("file:///o/L229507/flag-average/")
    with pytest.raises(InputError, match="--steps-dir"):
        resolve_step("average", tmp_path / "missing")


# --- item 9: inputs that printed a traceback or were accepted silently -----------------------


def test_pool_url_mistakes(env: dict[str, str]) -> None:
    one_error_line(
        gridlrt(env, "tokens", "status", "--pool", "http://127.0.0.1:abc/db", check=False),
        "--pool",
        "port",
    )
    one_error_line(
        gridlrt(env, "pool", "init", "--pool", "http://127.0.0.1:5984/a/../../b", check=False),
        "--pool",
        "..",
    )
    one_error_line(
        gridlrt(env, "pool", "init", "--pool", "http://127.0.0.1:5984/My Tokens", check=False),
        "--pool",
        "database name",
    )


def test_walltime_inf_on_submit(env: dict[str, str]) -> None:
    one_error_line(
        gridlrt(env, "submit", "-b", "local", "--step", "average", "--walltime", "inf",
                "--dry-run", check=False),
        "--walltime",
    )  # fmt: skip


def test_archive_to_a_bad_place(env: dict[str, str], tmp_path: Path, pool_url: str) -> None:
    with open_pool(load_settings(pool=pool_url)) as pool:
        pool.init()
    one_error_line(
        gridlrt(env, "tokens", "archive", "--to", "/proc/x", "--pool", pool_url, check=False),
        "--to",
        "/proc/x",
    )
    existing = tmp_path / "existing"
    existing.write_text("keep me")
    one_error_line(
        gridlrt(env, "tokens", "archive", "--to", str(existing), "--pool", pool_url, check=False),
        "--to",
        "not a directory",
    )
    assert existing.read_text() == "keep me"


def test_credentials_file_mistakes(env: dict[str, str], tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/lofar_tokens"  # never reached: the credentials fail first
    cred = tmp_path / "couchdb.cred"
    cred.write_bytes(b"username=ann\npassword=s\xe9cret\n")
    cred.chmod(0o600)
    line = one_error_line(
        gridlrt({**env, "GRIDLRT_POOL_CREDENTIALS": str(cred)}, "tokens", "status",
                "--pool", url, check=False),
        str(cred), "UTF-8",
    )  # fmt: skip
    assert "cret" not in line
    one_error_line(
        gridlrt({**env, "GRIDLRT_POOL_CREDENTIALS": "/nonexistent"}, "tokens", "status",
                "--pool", url, check=False),
        "/nonexistent", "GRIDLRT_POOL_CREDENTIALS",
    )  # fmt: skip


def test_nul_byte_in_srm_list(env: dict[str, str], tmp_path: Path, pool_url: str) -> None:
    srm = tmp_path / "srm.txt"
    srm.write_text(f"{SRM}/L229507_SB001_uv.dppp.MS_3d78b8f1.tar\n{SRM}/L229507_SB0\x0002.tar\n")
    one_error_line(gridlrt(env, "stage", "submit", str(srm), "--dry-run", check=False), "srm.txt:2")
    one_error_line(
        gridlrt(env, "tokens", "create", "--step", "average", "--inputs", str(srm),
                "--pool", pool_url, check=False),
        "srm.txt:2",
    )  # fmt: skip
    assert not (tmp_path / "pool.sqlite").exists()


class _NotCouch(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[str]:
    """A plain web server (not CouchDB): 404 pages in HTML, 501 to PUT."""
    handler = lambda *a: _NotCouch(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_web_server_that_is_not_couchdb(env: dict[str, str], web_server: str) -> None:
    for command in (["tokens", "status"], ["pool", "init"], ["tokens", "list"]):
        line = one_error_line(
            gridlrt(env, *command, "--pool", f"{web_server}/lofar", check=False),
            "not a CouchDB server",
        )
        assert "not initialised" not in line


def test_sandbox_build_into_a_missing_directory(env: dict[str, str], tmp_path: Path) -> None:
    step = tmp_path / "step"
    step.mkdir()
    (step / "run.sh").write_text("echo hi\n")
    missing = tmp_path / "missing"
    one_error_line(
        gridlrt(env, "sandbox", "build", str(step), "-o", f"{missing}/", check=False),
        str(missing),
        "no such directory",
    )
    assert not missing.exists()
    one_error_line(
        gridlrt(env, "sandbox", "build", str(step), "-o", f"{missing}/s.tar.gz", check=False),
        str(missing),
        "no such directory",
    )
    assert not missing.exists()
    built = gridlrt(env, "sandbox", "build", str(step), "-o", f"{tmp_path}/")
    assert (tmp_path / f"{built.stdout.strip()}.tar.gz").is_file()


# --- item 10: Ctrl-C -------------------------------------------------------------------------


def test_ctrl_c_is_one_line_and_exit_130(env: dict[str, str]) -> None:
    """A command waiting for a pool that accepted the connection but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridlrt", "tokens", "status", "--pool",
         f"http://127.0.0.1:{port}/lofar_tokens"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        listener.settimeout(60)
        conn, _ = listener.accept()  # the command now waits for an answer
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        conn.close()
    finally:
        listener.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted", err
