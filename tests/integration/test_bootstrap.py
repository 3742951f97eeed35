"""The pilot bootstrap on a worker node without gridlrt: the runtime bundle
(``gridlrt.sandbox.bundle``) and ``jdl_templates/pilot.sh``, with real components only.

"The site" is Debian's own Python (``/usr/bin/python3``) with its dist-packages (python3-gfal2,
python3-numpy, python3-casacore), reached from a fresh virtual environment that has no gridlrt
and no pydantic; the pilot gets everything else from the sandbox.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from uuid import uuid4

import pytest

import gridlrt
from gridlrt.config import load_settings
from gridlrt.errors import ConfigError, ExitCode
from gridlrt.sandbox import (
    SITE_PROVIDED,
    BundleInfo,
    Sandbox,
    build_pilot_sandbox,
    build_sandbox,
    push_sandbox,
    read_bundle_info,
)
from gridlrt.sandbox.bundle import requirement_closure
from gridlrt.storage import Storage
from gridlrt.tokens import TokenPool, TokenStatus, new_token, open_pool
from tests.services.process import free_port
from tests.services.webdav import WebDAV

PILOT_SH = Path(__file__).resolve().parents[2] / "jdl_templates" / "pilot.sh"
SITE_PYTHON = Path("/usr/bin/python3")  # Debian's python3, with the site's LOFAR software
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

# A command step: copies nothing, measures its input and reports where gridlrt and pydantic
# were imported from by the Python the pilot runs on ($GRIDLRT_PYTHON).
PROBE_STEP = """\
name = "probe"
kind = "command"
timeout = "5m"
max_attempts = 1
command = [
    "sh", "-c", "wc -c < \\"$0\\" > size.txt && \\"$GRIDLRT_PYTHON\\" -c \\"$1\\" > where.txt",
    "{msin}", "import gridlrt, pydantic; print(gridlrt.__file__); print(pydantic.__file__)",
]

[inputs]
kind = "file"

[outputs]
keep = ["size.txt", "where.txt"]
url = "{root}/{step}/{token_id}/{name}"
"""


def make_venv(where: Path, *, site_packages: bool) -> Path:
    args = [str(SITE_PYTHON), "-m", "venv", "--without-pip", str(where)]
    if site_packages:
        args.insert(4, "--system-site-packages")
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return where / "bin" / "python"


def python_says(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` away from this checkout (``-c`` puts the working directory first
    on sys.path) and without this project's environment."""
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, cwd=python.parent,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv of Debian's Python with the system site-packages: gfal2, numpy and
    casacore (the site's software), but neither gridlrt nor its pure-Python dependencies."""
    python = make_venv(tmp_path_factory.mktemp("site") / "venv", site_packages=True)
    site = python_says(python, "import gfal2, numpy, casacore.tables")
    assert site.returncode == 0, f"Debian's python3 lacks the site's software: {site.stderr}"
    gridlrt_there = python_says(python, "import gridlrt")
    assert gridlrt_there.returncode != 0 and "No module named 'gridlrt'" in gridlrt_there.stderr
    pydantic_there = python_says(python, "import pydantic; print(pydantic.VERSION)")
    if pydantic_there.returncode == 0:  # Debian's, if any, is not the one we ship
        import pydantic

        assert pydantic_there.stdout.strip() != str(pydantic.VERSION)
    return python


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("steps")
    (directory / "probe.toml").write_text(PROBE_STEP)
    return directory


@pytest.fixture(scope="module")
def sandbox(steps: Path, tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return build_pilot_sandbox(steps, tmp_path_factory.mktemp("built"))


def members(sandbox: Sandbox) -> list[str]:
    """The regular files in a sandbox."""
    with tarfile.open(sandbox.path) as tar:
        return [m.name for m in tar.getmembers() if m.isfile()]


def job_dir(tmp_path: Path, sandbox: Sandbox | None = None) -> Path:
    """A fresh job working directory with pilot.sh (and the tarball, as an input sandbox)."""
    job = tmp_path / f"job-{uuid4().hex[:6]}"
    job.mkdir()
    (job / "pilot.sh").write_bytes(PILOT_SH.read_bytes())
    if sandbox is not None:
        (job / sandbox.name).write_bytes(sandbox.path.read_bytes())
    return job


def run_pilot(
    job: Path, *args: str, python: str | Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``sh pilot.sh ARGS`` in ``job``, as a batch system starts it: a plain environment
    without this project's venv (no VIRTUAL_ENV, no PYTHONPATH, PATH /usr/bin:/bin)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(job / "home"),
        "GRIDLRT_PYTHON": str(python),
        **(extra_env or {}),
    }
    return subprocess.run(
        ["sh", "pilot.sh", *args], cwd=job, env=env, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip


def failed(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The pilot's one error line (stderr), after checking the exit code."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if " error: " in line]
    assert len(errors) == 1 and errors[0].startswith("pilot.sh: "), result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


# --- the bundle ------------------------------------------------------------------------------


def test_bundle_is_deterministic_and_holds_gridlrt_but_not_the_site_software(
    sandbox: Sandbox, steps: Path, tmp_path: Path
) -> None:
    again = build_pilot_sandbox(steps, tmp_path / "again.tar.gz")
    assert again.id == sandbox.id
    assert again.path.read_bytes() == sandbox.path.read_bytes()

    names = members(sandbox)
    assert "probe.toml" in names  # the steps directory at the top level
    lib = "_gridlrt/lib/"
    for wanted in (
        "gridlrt/__init__.py", "gridlrt/__main__.py", "gridlrt/data/steps/average.toml",
        "gridlrt/data/jdl_templates/pilot.sh",  # the symlinked package data, as files
        f"gridlrt-{gridlrt.__version__}.dist-info/METADATA",
        "pydantic/__init__.py", "pydantic_settings/__init__.py", "typer/__init__.py",
        "rich/__init__.py", "requests/__init__.py", "yaml/__init__.py",
    ):  # fmt: skip
        assert lib + wanted in names, wanted
    assert any(n.startswith(f"{lib}pydantic_core/_pydantic_core.") for n in names)
    for unwanted in ("numpy/", "casacore/", "dp3/", "DP3.libs/", "numpy.libs/", "gfal2"):
        assert not [n for n in names if n.startswith(lib + unwanted)], unwanted
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pth"))]
    assert not [n for n in names if n.startswith((f"{lib}bin/", f"{lib}../"))]
    dist_info = [n for n in names if ".dist-info/" in n]
    assert dist_info and all(
        n.endswith("/METADATA") or "/licenses/" in n or "LICENSE" in n for n in dist_info
    ), dist_info
    with tarfile.open(sandbox.path) as tar:
        manifest = tar.extractfile("_gridlrt/bundle.json")
        assert manifest is not None
        info = BundleInfo.model_validate_json(manifest.read())
    assert info.python == PYTHON and info.implementation == sys.implementation.name
    assert info.gridlrt == gridlrt.__version__
    shipped = {d.name for d in info.distributions}
    assert {"gridlrt", "pydantic", "pydantic-core", "typer", "requests", "pyyaml"} <= shipped
    assert "packaging" in shipped  # the bundle module reads requirements with it
    assert not shipped & SITE_PROVIDED
    assert "matplotlib" not in shipped  # the demo's plots are drawn on the UI node only
    assert info.files == sum(1 for n in names if n.startswith(lib))

    bare = build_pilot_sandbox(None, tmp_path)  # no steps: just the bundle
    assert bare.id != sandbox.id and "probe.toml" not in members(bare)
    assert "_gridlrt/bundle.json" in members(bare)


def fake_distribution(where: Path, name: str, *requires: str) -> None:
    """An installed distribution as importlib.metadata finds it: a .dist-info directory."""
    info = where / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    (info / "METADATA").write_text("\n".join([*lines, *(f"Requires-Dist: {r}" for r in requires)]))


def test_closure_follows_markers_for_this_python_and_never_extras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_distribution(
        tmp_path, "Root_Pkg",
        "needed-one>=1", 'Needed.Two ; python_version >= "3"', 'never ; python_version < "3"',
        'heavy ; extra == "worker"',
        'other ; (os_name == "nt" or sys_platform == "darwin") and extra == "x"',
        "site-thing",
    )  # fmt: skip
    fake_distribution(tmp_path, "needed-one", 'deep ; implementation_name != "nonesuch"')
    fake_distribution(tmp_path, "needed_two")
    fake_distribution(tmp_path, "deep")
    fake_distribution(tmp_path, "site-thing", "site-dep")
    monkeypatch.syspath_prepend(str(tmp_path))

    closure = requirement_closure("root-pkg", exclude=frozenset({"site-thing"}))
    assert sorted(closure) == ["deep", "needed-one", "needed-two", "root-pkg"]

    fake_distribution(tmp_path, "broken", "needed-one", "not a requirement!")
    with pytest.raises(ConfigError, match=r"^broken 1.0 has a requirement pip cannot read"):
        requirement_closure("broken")
    fake_distribution(tmp_path, "wants-more", "absent-dist")
    with pytest.raises(ConfigError, match=r"^wants-more needs absent-dist, which is not installed"):
        requirement_closure("wants-more")

    # gridlrt itself: its extras (worker: numpy, python-casacore, dp3; demo: matplotlib) are
    # installed here, but the bundle follows only the core requirements
    ours = requirement_closure()
    assert {"gridlrt", "pydantic", "typer", "requests", "packaging"} <= set(ours)
    assert not {"numpy", "python-casacore", "dp3", "matplotlib", "pillow"} & set(ours)


# --- pilot.sh ----------------------------------------------------------------------------------


def test_pilot_sh_in_a_fresh_venv_processes_tokens(
    site_python: Path, sandbox: Sandbox, webdav: WebDAV, tmp_path: Path
) -> None:
    pool_url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    pool: TokenPool = open_pool(load_settings(pool=pool_url))
    pool.init()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for n in (1, 2):
        (inputs / f"in{n}.txt").write_text("x" * (100 * n))
    pool.create(
        [new_token(f"probe_{n}", inputs=(inputs / f"in{n}.txt").as_uri(), step="probe")
         for n in (1, 2)]
    )  # fmt: skip
    results = tmp_path / "results"
    options = ["--pool", pool_url, "--step", "probe", "--output-root", results.as_uri(),
               "--workdir", str(tmp_path / "scratch")]  # fmt: skip

    # 1. the tarball arrived in the job's input sandbox
    job = job_dir(tmp_path, sandbox)
    first = run_pilot(
        job, sandbox.name, sandbox.id, *options, "--max-tokens", "1", python=site_python
    )
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert all(line.startswith("pilot.sh: 20") for line in lines[:8]), first.stdout
    assert f"sandbox {sandbox.id} ({sandbox.size} bytes)" in first.stdout
    assert f"python {PYTHON}." in first.stdout and "sha256 verified" in first.stdout
    sandbox_lib = job / "gridlrt-sandbox" / "_gridlrt" / "lib"
    assert f"gridlrt {gridlrt.__version__} from {sandbox_lib / 'gridlrt'}" in first.stdout
    assert "1 done" in first.stdout

    done = [t for t in (pool.get("probe_1"), pool.get("probe_2")) if t.status is TokenStatus.DONE]
    assert len(done) == 1 and done[0].exit_code == 0
    token = done[0]
    out = results / "probe" / token.id
    size = 100 if token.id == "probe_1" else 200
    assert (out / "size.txt").read_text().strip() == str(size)
    where = (out / "where.txt").read_text().splitlines()
    assert where == [str(sandbox_lib / "gridlrt" / "__init__.py"),
                     str(sandbox_lib / "pydantic" / "__init__.py")]  # fmt: skip
    assert token.output == [(out / "size.txt").as_uri(), (out / "where.txt").as_uri()]
    assert token.attempts[-1].sandbox == sandbox.id  # provenance: which sandbox ran it

    # 2. the tarball pushed to WebDAV storage, fetched by URL (gfal2), pool credentials present
    pushed = push_sandbox(Storage(), sandbox.path, webdav.dav_url(f"sb-{uuid4().hex[:8]}"))
    job = job_dir(tmp_path)
    secret = f"s3cret-{uuid4().hex}"
    (job / "pool.cred").write_text(f"username=pilot\npassword={secret}\n")
    (job / "pool.cred").chmod(0o644)
    second = run_pilot(
        job, pushed.url, sandbox.id.upper(), *options, python=site_python,
        extra_env=webdav.client_env(),
    )  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"downloading sandbox {pushed.url}" in second.stdout
    assert "1 done" in second.stdout and secret not in second.stdout + second.stderr
    assert f"pool credentials: {job / 'pool.cred'} (content not shown)" in second.stdout
    assert (job / "pool.cred").stat().st_mode & 0o777 == 0o600
    assert not list(job.glob("*.tar.gz*"))  # the downloaded tarball is gone once unpacked
    assert pool.get("probe_1").status is pool.get("probe_2").status is TokenStatus.DONE


def test_wrong_sha256_unpacks_nothing(
    site_python: Path, sandbox: Sandbox, webdav: WebDAV, tmp_path: Path
) -> None:
    wrong = ("0" if sandbox.id[0] != "0" else "1") + sandbox.id[1:]
    job = job_dir(tmp_path, sandbox)
    line = failed(run_pilot(job, sandbox.name, wrong, python=site_python), 67)
    assert f"sha256 is {sandbox.id}, expected {wrong}" in line and "nothing unpacked" in line
    assert not (job / "gridlrt-sandbox").exists()
    assert (job / sandbox.name).exists()  # the job's own file is left alone

    pushed = push_sandbox(Storage(), sandbox.path, webdav.dav_url(f"sb-{uuid4().hex[:8]}"))
    job = job_dir(tmp_path)
    line = failed(run_pilot(job, pushed.url, wrong, python=site_python), 67)
    assert pushed.url in line
    assert sorted(p.name for p in job.iterdir()) == ["pilot.sh"]  # download removed too


def test_python_that_does_not_match_the_bundle(site_python: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    fake = tmp_path / "bundle.json"
    fake.write_bytes(
        BundleInfo(
            python="3.9", implementation="cpython", platform="linux-x86_64", gridlrt="0.1.0",
            distributions=[], site_provided=sorted(SITE_PROVIDED), files=0,
        ).to_bytes()
    )  # fmt: skip
    old = build_sandbox(empty, tmp_path, extra={"_gridlrt/bundle.json": fake})
    job = job_dir(tmp_path, old)
    line = failed(run_pilot(job, old.name, old.id, python=site_python), 69)
    assert "for Python 3.9" in line and f"is Python {PYTHON}" in line
    assert "GRIDLRT_PYTHON=python3.9" in line
    assert read_bundle_info(job / "gridlrt-sandbox").python == "3.9"

    no_bundle = build_sandbox(
        empty, tmp_path / "plain.tar.gz", extra={"probe.toml": Path(__file__)}
    )
    job = job_dir(tmp_path, no_bundle)
    line = failed(run_pilot(job, no_bundle.name, no_bundle.id, python=site_python), 68)
    assert "no gridlrt runtime bundle" in line and "--with-gridlrt" in line


def test_node_without_gfal2_binding(sandbox: Sandbox, webdav: WebDAV, tmp_path: Path) -> None:
    bare = make_venv(tmp_path / "bare", site_packages=False)  # Python 3.11, no site software
    job = job_dir(tmp_path, sandbox)
    line = failed(run_pilot(job, sandbox.name, sandbox.id, python=bare), 70)
    assert "gfal2's Python binding does not import" in line and "python3-gfal2" in line

    job = job_dir(tmp_path)
    url = webdav.dav_url(f"nothing/{sandbox.name}")
    # without gfal-copy the download needs the binding too
    code = 66 if shutil.which("gfal-copy", path="/usr/bin:/bin") else 70
    failed(run_pilot(job, url, sandbox.id, python=bare), code)


def test_usage_missing_python_and_missing_sandbox(
    site_python: Path, sandbox: Sandbox, webdav: WebDAV, tmp_path: Path
) -> None:
    job = job_dir(tmp_path, sandbox)
    helped = run_pilot(job, "--help", python=site_python)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: pilot.sh SANDBOX SHA256")
    assert "GRIDLRT_PYTHON" in helped.stdout and "67 sha256" in helped.stdout
    bare = run_pilot(job, python=site_python)
    assert bare.returncode == 64 and bare.stderr.startswith("usage: pilot.sh") and not bare.stdout

    line = failed(run_pilot(job, sandbox.name, "abc", python=site_python), 64)
    assert "64 hexadecimal characters" in line
    line = failed(run_pilot(job, "ftp://host/x.tar.gz", sandbox.id, python=site_python), 64)
    assert "ftp:// is not supported" in line

    line = failed(run_pilot(job, sandbox.name, sandbox.id, python=tmp_path / "no" / "python3"), 65)
    assert f"no Python '{tmp_path / 'no' / 'python3'}'" in line and "GRIDLRT_PYTHON" in line
    line = failed(run_pilot(job, sandbox.name, sandbox.id, python="python2.7-nowhere"), 65)
    assert "python2.7-nowhere" in line

    line = failed(run_pilot(job, "elsewhere.tar.gz", sandbox.id, python=site_python), 66)
    assert "elsewhere.tar.gz: no such file" in line
    url = webdav.dav_url(f"nothing-{uuid4().hex[:6]}/{sandbox.name}")
    missing = run_pilot(job, url, sandbox.id, python=site_python)
    line = failed(missing, 66)
    assert f"could not download the sandbox {url}" in line
    assert not (job / "gridlrt-sandbox").exists()


def test_pilot_sh_is_package_data_and_posix_sh() -> None:
    shipped = Path(gridlrt.__file__).parent / "data" / "jdl_templates" / "pilot.sh"
    assert shipped.read_bytes() == PILOT_SH.read_bytes()
    assert PILOT_SH.stat().st_mode & 0o111
    text = PILOT_SH.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
    for shell in (["dash"], ["bash", "--posix"]):  # parses as POSIX sh
        checked = subprocess.run(
            [*shell, "-n", str(PILOT_SH)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stderr


def test_pilot_sh_restarts_gridlrt_when_the_pool_does_not_answer(
    site_python: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    """gridlrt exits 5 (service unavailable) when the pool stays away: pilot.sh waits and
    starts it again (with --max-time shortened), then reports exit 5 in one error line."""
    port = free_port()
    job = job_dir(tmp_path, sandbox)
    result = run_pilot(
        job, sandbox.name, sandbox.id, "--pool", f"http://127.0.0.1:{port}/lofar",
        "--step", "probe", "--pool-patience", "0s", "--max-time", "3600s",
        python=site_python,
        extra_env={"GRIDLRT_PILOT_RETRIES": "1", "GRIDLRT_PILOT_RETRY_WAIT": "0"},
    )  # fmt: skip
    line = failed(result, ExitCode.UNAVAILABLE)
    assert "gridlrt exited 5: a service (the pool?) did not answer" in line
    assert "after 1 restart(s)" in line
    runs = [ln for ln in result.stdout.splitlines() if " run: " in ln]
    assert len(runs) == 2, result.stdout
    assert runs[1].endswith("s") and " --max-time 3" in runs[1]  # what is left of the hour
    assert "starting it again in 0 s (retry 1 of 1)" in result.stdout
    assert result.stderr.count(f"token pool http://127.0.0.1:{port}/lofar unreachable") == 2


def test_pilot_sh_reports_gridlrt_exit_codes(
    site_python: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A credentials problem is not retried: one line says which kind of failure it was."""
    job = job_dir(tmp_path, sandbox)
    (job / "pool.cred").write_text("no key-value pairs here\n")
    result = run_pilot(
        job, sandbox.name, sandbox.id, "--pool", f"http://127.0.0.1:{free_port()}/lofar",
        "--step", "probe", python=site_python,
    )  # fmt: skip
    line = failed(result, ExitCode.CREDENTIALS)
    assert "gridlrt exited 4: pool or storage credentials missing or refused" in line
    assert sum(" run: " in ln for ln in result.stdout.splitlines()) == 1
