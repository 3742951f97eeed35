"""``gridlrt sandbox`` and ``gridlrt storage`` as a user runs them: the real executable,
real gfal2, the ``webdav`` fixture."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest

from gridlrt.errors import ExitCode
from tests.services.webdav import WebDAV

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
ID = re.compile(r"^[0-9a-f]{64}$")


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(webdav: WebDAV, tmp_path: Path) -> Run:
    """``run(*args)``: the real gridlrt executable, HOME in tmp_path, trusting the https CA."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(home), **webdav.client_env()}

    def gridlrt(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GRIDLRT, *args], capture_output=True, text=True, timeout=timeout, check=False,
            env=env, cwd=tmp_path,
        )  # fmt: skip

    return gridlrt


@pytest.fixture
def step(tmp_path: Path) -> Path:
    step = tmp_path / "steps" / "average"
    step.mkdir(parents=True)
    (step / "run.sh").write_text("#!/bin/sh\necho averaging\n")
    (step / "run.sh").chmod(0o755)
    (step / "avg.parset").write_text("steps=[avg]\navg.type=averager\navg.freqstep=4\n")
    return step


def one_line_error(result: subprocess.CompletedProcess[str], code: ExitCode) -> str:
    """An error: exit ``code``, one line on stderr starting with 'error:', no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def test_build_prints_the_id(run: Run, step: Path, tmp_path: Path) -> None:
    first = run("sandbox", "build", str(step))
    assert first.returncode == 0, first.stderr
    sandbox_id = first.stdout.strip()
    assert ID.match(sandbox_id)
    tarball = tmp_path / f"{sandbox_id}.tar.gz"  # default: current directory
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == sandbox_id
    assert "2 files" in first.stderr

    second = run("sandbox", "build", str(step), "-o", str(tmp_path / "named.tar.gz"))
    assert second.stdout.strip() == sandbox_id
    assert (tmp_path / "named.tar.gz").read_bytes() == tarball.read_bytes()

    extra = tmp_path / "bootstrap.sh"
    extra.write_text("#!/bin/sh\n")
    third = run("sandbox", "build", str(step), "--include", f"bin/boot.sh={extra}", "-o", ".")
    assert third.returncode == 0, third.stderr
    assert third.stdout.strip() != sandbox_id and "3 files" in third.stderr


def test_help_teaches(run: Run) -> None:
    for command in ("build", "push", "fetch"):
        result = run("sandbox", command, "--help")
        assert result.returncode == 0
        assert "Example" in result.stdout
    assert "--dry-run" in run("sandbox", "push", "--help").stdout
    assert "--dry-run" in run("sandbox", "fetch", "--help").stdout
    top = run("--help").stdout
    assert "sandbox" in top and "storage" in top


def test_push_once_then_fetch(run: Run, webdav: WebDAV, step: Path, tmp_path: Path) -> None:
    base = webdav.dav_url(f"cli-{uuid4().hex[:8]}")
    sandbox_id = run("sandbox", "build", str(step), "-o", str(tmp_path / "x.tar.gz")).stdout.strip()
    url = f"{base}/{sandbox_id}.tar.gz"

    dry = run("sandbox", "push", str(step), "--to", base, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would upload {url}" in dry.stdout
    assert not webdav.path(base).exists()

    pushed = run("sandbox", "push", str(step), "--to", base)
    assert pushed.returncode == 0, pushed.stderr
    assert f"uploaded sandbox {sandbox_id} to {url}" in pushed.stdout
    server_file = webdav.path(url)
    assert hashlib.sha256(server_file.read_bytes()).hexdigest() == sandbox_id
    mtime = server_file.stat().st_mtime_ns

    again = run("sandbox", "push", str(step), "--to", base)
    assert again.returncode == 0, again.stderr
    assert "already at" in again.stdout and "nothing uploaded" in again.stdout
    assert server_file.stat().st_mtime_ns == mtime
    assert (
        "already there, would skip"
        in run("sandbox", "push", str(step), "--to", base, "--dry-run").stdout
    )

    dest = tmp_path / "work" / "average"
    dry_fetch = run("sandbox", "fetch", url, "--to", str(dest), "--dry-run")
    assert dry_fetch.returncode == 0, dry_fetch.stderr
    assert f"would download {url}" in dry_fetch.stdout and sandbox_id in dry_fetch.stdout
    assert not dest.exists() and not (tmp_path / "work").exists()

    fetched = run("sandbox", "fetch", url, "--to", str(dest))
    assert fetched.returncode == 0, fetched.stderr
    assert "sha256 verified" in fetched.stdout
    assert (dest / "avg.parset").read_text() == (step / "avg.parset").read_text()
    assert (dest / "run.sh").stat().st_mode & 0o111

    # the default destination is the sandbox_root setting
    default = run("sandbox", "push", str(step))
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "home" / ".local/share/gridlrt/sandboxes" / f"{sandbox_id}.tar.gz").exists()


def test_tampered_and_bad_input_are_one_line_errors(
    run: Run, webdav: WebDAV, step: Path, tmp_path: Path
) -> None:
    base = webdav.dav_url(f"cli-{uuid4().hex[:8]}")
    assert run("sandbox", "push", str(step), "--to", base).returncode == 0
    [name] = [p.name for p in webdav.path(base).iterdir()]
    url = f"{base}/{name}"
    with webdav.path(url).open("r+b") as fh:  # flip one byte on the server
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))

    line = one_line_error(
        run("sandbox", "fetch", url, "--to", str(tmp_path / "w")), ExitCode.FAILED
    )
    assert "sha256" in line and "refusing to extract" in line and url in line
    assert not (tmp_path / "w").exists()

    line = one_line_error(run("sandbox", "build", str(tmp_path / "missing")), ExitCode.INPUT)
    assert "not a directory" in line
    line = one_line_error(
        run("sandbox", "fetch", f"{base}/plain.tar.gz", "--to", "w2"), ExitCode.INPUT
    )
    assert "--sha256" in line
    line = one_line_error(
        run("sandbox", "push", str(step), "--to", "ftp://example.org/sb"), ExitCode.INPUT
    )
    assert "ftp:// is not supported" in line
    missing = webdav.dav_url(f"nothing/{'a' * 64}.tar.gz")
    line = one_line_error(run("sandbox", "fetch", missing, "--to", "w3"), ExitCode.INPUT)
    assert "no such file" in line and missing in line
    line = one_line_error(
        run("sandbox", "fetch", "--retries", "0", f"dav://127.0.0.1:1/{'b' * 64}.tar.gz",
            "--to", "w4"),
        ExitCode.UNAVAILABLE,
    )  # fmt: skip
    assert "cannot connect" in line


def test_build_and_push_with_gridlrt(run: Run, webdav: WebDAV, step: Path, tmp_path: Path) -> None:
    """--with-gridlrt adds the runtime bundle (gridlrt.sandbox.bundle; pilot.sh runs it, see
    tests/integration/test_bootstrap.py): the same bytes as the library builds here."""
    from gridlrt.sandbox import build_pilot_sandbox

    assert "--with-gridlrt" in run("sandbox", "build", "--help").stdout
    assert "--with-gridlrt" in run("sandbox", "push", "--help").stdout
    built = run("sandbox", "build", str(step), "--with-gridlrt", "-o", ".")
    assert built.returncode == 0, built.stderr
    sandbox_id = built.stdout.strip()
    assert ID.match(sandbox_id)
    files = int(re.search(r"\((\d+) files", built.stderr).group(1))  # type: ignore[union-attr]
    assert files > 100  # gridlrt, pydantic, typer, rich, requests, ...
    with tarfile.open(tmp_path / f"{sandbox_id}.tar.gz") as tar:
        names = tar.getnames()
    assert {"run.sh", "avg.parset", "_gridlrt/bundle.json"} <= set(names)
    assert "_gridlrt/lib/gridlrt/__main__.py" in names
    assert not [n for n in names if n.startswith("_gridlrt/lib/numpy/")]
    assert build_pilot_sandbox(step, tmp_path / "lib.tar.gz").id == sandbox_id

    base = webdav.dav_url(f"cli-{uuid4().hex[:8]}")
    dry = run("sandbox", "push", str(step), "--with-gridlrt", "--to", base, "--dry-run")
    assert f"would upload {base}/{sandbox_id}.tar.gz" in dry.stdout, dry.stderr
    pushed = run("sandbox", "push", str(step), "--with-gridlrt", "--to", base)
    assert f"uploaded sandbox {sandbox_id}" in pushed.stdout, pushed.stderr
    server_file = webdav.path(f"{base}/{sandbox_id}.tar.gz")
    assert hashlib.sha256(server_file.read_bytes()).hexdigest() == sandbox_id

    line = one_line_error(
        run("sandbox", "push", f"{sandbox_id}.tar.gz", "--with-gridlrt", "--to", base),
        ExitCode.INPUT,
    )
    assert "--with-gridlrt adds files while building" in line
    clash = f"_gridlrt/bundle.json={step / 'run.sh'}"
    line = one_line_error(
        run("sandbox", "build", str(step), "--with-gridlrt", "--include", clash), ExitCode.INPUT
    )
    assert "belongs to the runtime bundle" in line


def test_storage_commands(run: Run, webdav: WebDAV, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("hello storage\n")
    base = webdav.dav_url(f"cli-st-{uuid4().hex[:8]}")

    dry = run("storage", "copy", str(src), f"{base}/x/a.txt", "--dry-run")
    assert dry.returncode == 0 and not webdav.path(base).exists()
    copied = run("storage", "copy", str(src), f"{base}/x/a.txt")
    assert copied.returncode == 0, copied.stderr
    assert "verified size" in copied.stdout
    assert webdav.path(f"{base}/x/a.txt").read_text() == "hello storage\n"

    other = tmp_path / "b.txt"
    other.write_text("second\n")
    two = run("storage", "copy", str(src), str(other), f"{base}/y/", "-j", "2")
    assert two.returncode == 0, two.stderr
    assert run("storage", "ls", f"{base}/y").stdout.split() == ["a.txt", "b.txt"]
    listing = run("storage", "ls", f"{base}/x")
    assert listing.stdout.split() == ["a.txt"]
    stat = run("storage", "stat", f"{base}/x/a.txt", "--json")
    assert '"size": 14' in stat.stdout
    expected = f"{zlib.adler32(src.read_bytes()):08x}"
    assert run("storage", "checksum", str(src)).stdout.strip() == expected
    line = one_line_error(run("storage", "checksum", f"{base}/x/a.txt"), ExitCode.INPUT)
    assert "does not compute adler32" in line
    line = one_line_error(run("storage", "stat", f"{base}/nope"), ExitCode.INPUT)
    assert f"{base}/nope" in line and "no such file" in line

    rendered = run(
        "storage", "url", "{root}/{obsid}/{step}/{name}", "-f", f"root={base}",
        "-f", "obsid=L229507", "-f", "step=average", "-f", "name=L229507_SB100.MS.tar",
    )  # fmt: skip
    assert rendered.stdout.strip() == f"{base}/L229507/average/L229507_SB100.MS.tar"
    line = one_line_error(
        run("storage", "url", "{root}/{obsid}", "-f", "root=dav://h"), ExitCode.INPUT
    )
    assert "{obsid}" in line and "known fields: root" in line

    assert run("storage", "rm", f"{base}/x", "--dry-run").returncode == 0
    assert webdav.path(f"{base}/x/a.txt").exists()
    line = one_line_error(run("storage", "rm", f"{base}/x"), ExitCode.FAILED)
    assert "not empty" in line
    assert run("storage", "rm", f"{base}/x", "-r").returncode == 0
    assert not webdav.path(f"{base}/x").exists()
