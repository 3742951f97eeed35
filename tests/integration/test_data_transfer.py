"""``gridlrt data get`` / ``data put`` (issue 16, part 4) on real storage: the WebDAV server
fixture and file://, through real gfal2 and the real command line.

A 20-file dataset from WebDAV arrives whole and byte-identical, with DIR/dataset.jsonl; a
rerun copies nothing (the same inodes); a ``data get`` SIGKILLed mid-transfer leaves no file
under its final name that is not complete, and its rerun finishes without copying again what
was complete and leaves no ``.part`` file; a missing source is one line and exit 1 while the
others arrive; a dataset checksum that does not match removes the copy; ``data put`` uploads
the local copy to another WebDAV directory (sizes compared, a rerun skips all); LTA tarballs
unpack; bad input is one line and exit 3.

Measurement sets stored as directories (real casacore tables from
:func:`gridlrt.demo.synthetic_ms.make_synthetic_ms`): a storage directory of three (WebDAV and
file://) arrives byte-identical and casacore opens each copy; a rerun copies nothing, and one
that lost a file is fetched again whole; a size that is not the dataset's is one line; a get
SIGKILLed in the middle of a tree leaves no partial measurement set under its final name and
its rerun finishes; ``data put`` uploads them as trees to WebDAV, ``data list`` shows them with
their sizes, a rerun skips them and a remote one that lost a file is replaced whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from uuid import uuid4

import pytest

from gridlrt.datasets.model import Dataset, entry_for_url, read_dataset, write_dataset
from gridlrt.storage.urls import is_temp_name
from tests.gridlrt_cli import cli_env, gridlrt
from tests.services.webdav import WebDAV


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def subband_files(
    webdav: WebDAV, n: int, size: int, *, first: int = 100, area: str | None = None
) -> tuple[str, list[Path]]:
    """``n`` LTA-named files of about ``size`` random bytes in a new directory served by
    WebDAV (written on the server's disk); returns (directory rel path, paths)."""
    rel = area or f"obs-{uuid4().hex[:8]}"
    directory = webdav.root / rel
    directory.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = directory / f"L700701_SB{first + i:03d}_uv.MS_3d78b8f1.tar"
        path.write_bytes(os.urandom(size + 997 * i))
        paths.append(path)
    return rel, paths


def dataset_file(
    path: Path, webdav: WebDAV, rel: str, files: list[Path], *, known: bool = True
) -> Path:
    """A dataset file of ``files`` as dav:// entries (with sizes and adler32 if ``known``)."""
    entries = []
    for f in files:
        data = f.read_bytes()
        extra = {"size": len(data), "checksum": f"adler32:{adler32(data)}"} if known else {}
        entries.append(entry_for_url(webdav.dav_url(f"{rel}/{f.name}"), **extra))
    write_dataset(path, Dataset(name="L700701", source="test", entries=entries))
    return path


def leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name for p in directory.iterdir() if is_temp_name(p.name) or ".unpack-" in p.name
    )


def inodes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in directory.glob("L700701_*")}


def test_get_20_files_from_webdav_then_rerun_copies_nothing(webdav: WebDAV, tmp_path: Path) -> None:
    rel, files = subband_files(webdav, 20, 64 * 1024)
    source = dataset_file(tmp_path / "L700701.jsonl", webdav, rel, files)
    env = cli_env(tmp_path)
    out = tmp_path / "raw"

    dry = gridlrt(env, "data", "get", str(source), "--to", str(out), "--dry-run", "--json")
    plan = json.loads(dry.stdout)
    assert len(plan["copy"]) == 20 and plan["skip"] == []
    assert plan["bytes_to_copy"] == sum(f.stat().st_size for f in files)
    assert not out.exists()  # a dry run changes nothing

    first = json.loads(
        gridlrt(env, "data", "get", str(source), "--to", str(out), "-j", "4", "--json").stdout
    )
    assert len(first["copied"]) == 20 and first["failed"] == [] and first["skipped"] == []
    assert first["bytes_copied"] == sum(f.stat().st_size for f in files)
    for f in files:
        assert sha256(out / f.name) == sha256(f)
    assert leftovers(out) == []
    local = read_dataset(out / "dataset.jsonl")
    assert [e.name for e in local.entries] == [f.name for f in files]
    assert all(e.url == (out / e.name).as_uri() for e in local.entries)
    assert [e.subband for e in local.entries] == list(range(100, 120))
    assert all(e.size == (out / e.name).stat().st_size for e in local.entries)
    # the local copy is itself a dataset
    listed = gridlrt(env, "data", "list", str(out / "dataset.jsonl"), "--json")
    assert json.loads(listed.stdout)["summary"]["files"] == 20

    before = inodes(out)
    again = gridlrt(env, "data", "get", str(source), "--to", str(out), "--json")
    second = json.loads(again.stdout)
    assert second["copied"] == [] and len(second["skipped"]) == 20
    assert second["bytes_copied"] == 0
    assert inodes(out) == before  # nothing was written again

    # --no-resume copies everything again
    forced = json.loads(
        gridlrt(env, "data", "get", str(source), "--to", str(out), "--no-resume", "--json").stdout
    )
    assert len(forced["copied"]) == 20
    assert inodes(out) != before


def test_rerun_replaces_a_local_file_of_the_wrong_size_or_checksum(
    webdav: WebDAV, tmp_path: Path
) -> None:
    rel, files = subband_files(webdav, 4, 32 * 1024)
    source = dataset_file(tmp_path / "ds.jsonl", webdav, rel, files)
    env = cli_env(tmp_path)
    out = tmp_path / "raw"
    gridlrt(env, "data", "get", str(source), "--to", str(out))
    (out / files[0].name).write_bytes(b"short")
    damaged = bytearray((out / files[1].name).read_bytes())
    damaged[100] ^= 0xFF  # same size, other adler32
    (out / files[1].name).write_bytes(bytes(damaged))

    dry = gridlrt(env, "data", "get", str(source), "--to", str(out), "--dry-run").stdout
    assert f"would get {files[0].name}" in dry and "there with 5 of" in dry
    assert f"would get {files[1].name}" in dry and "adler32" in dry
    assert "2 file(s) to get" in dry and "2 already there" in dry

    report = json.loads(gridlrt(env, "data", "get", str(source), "--to", str(out), "--json").stdout)
    assert sorted(report["copied"]) == sorted([files[0].name, files[1].name])
    assert all(sha256(out / f.name) == sha256(f) for f in files)


def wait_for(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.002)


def test_get_killed_midway_leaves_no_partial_file_and_the_rerun_finishes(
    webdav: WebDAV, tmp_path: Path
) -> None:
    n = 16
    rel, files = subband_files(webdav, n, 24 * 1024 * 1024)
    source = dataset_file(tmp_path / "ds.jsonl", webdav, rel, files, known=False)
    env = cli_env(tmp_path)
    out = tmp_path / "raw"
    names = {f.name for f in files}

    size = files[0].stat().st_size

    def written() -> int:  # bytes in the directory, under any name
        if not out.is_dir():
            return 0
        total = 0
        for p in out.iterdir():
            with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                total += p.stat().st_size
        return total

    child = subprocess.Popen(
        [sys.executable, "-m", "gridlrt", "data", "get", str(source), "--to", str(out), "-j", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: written() >= 4.5 * size)  # in the middle of the fifth file
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL

    final = [p for p in out.iterdir() if p.name in names]
    assert 4 <= len(final) < n, "killed before the end"
    assert any(is_temp_name(p.name) for p in out.iterdir()), "killed midway through a copy"
    by_name = {f.name: f for f in files}
    for path in final:  # every file under its final name is complete
        assert sha256(path) == sha256(by_name[path.name])
    complete = {p.name: p.stat().st_ino for p in final}

    rerun = json.loads(gridlrt(env, "data", "get", str(source), "--to", str(out), "--json").stdout)
    assert sorted(rerun["skipped"]) == sorted(complete)  # nothing complete copied twice
    assert sorted(rerun["copied"]) == sorted(names - set(complete))
    assert rerun["failed"] == [] and rerun["stale_parts_removed"] >= 1
    assert {p.name: p.stat().st_ino for p in out.iterdir() if p.name in complete} == complete
    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "dataset.jsonl"])
    for f in files:
        assert sha256(out / f.name) == sha256(f)
    assert len(read_dataset(out / "dataset.jsonl").entries) == n


def test_a_missing_source_is_one_line_the_others_arrive_exit_1(
    webdav: WebDAV, tmp_path: Path
) -> None:
    rel, files = subband_files(webdav, 5, 16 * 1024)
    source = dataset_file(tmp_path / "ds.jsonl", webdav, rel, files, known=False)
    files[2].unlink()  # listed, but gone from storage
    env = cli_env(tmp_path)
    out = tmp_path / "raw"

    result = gridlrt(env, "data", "get", str(source), "--to", str(out), check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    failed = [line for line in lines if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith(f"failed: {files[2].name}: ")
    assert "no such file" in failed[0]
    assert lines[-1].startswith("error: 1 of 5 file(s) failed")
    assert len(lines) == 2, result.stderr  # one line for the file, one for the outcome
    assert "got 4 file(s)" in result.stdout
    arrived = sorted(p.name for p in out.iterdir() if p.name.startswith("L700701"))
    assert arrived == sorted(f.name for f in files if f != files[2])
    assert [e.name for e in read_dataset(out / "dataset.jsonl").entries] == arrived
    assert leftovers(out) == []


def test_a_copy_that_differs_from_the_dataset_checksum_is_removed(
    webdav: WebDAV, tmp_path: Path
) -> None:
    rel, files = subband_files(webdav, 3, 16 * 1024)
    source = dataset_file(tmp_path / "ds.jsonl", webdav, rel, files)
    dataset = read_dataset(source)
    dataset.entries[1].checksum = "adler32:00000001"  # the LTA says otherwise
    write_dataset(source, dataset)
    env = cli_env(tmp_path)
    out = tmp_path / "raw"

    result = gridlrt(env, "data", "get", str(source), "--to", str(out), check=False)
    assert result.returncode == 1
    [line] = [x for x in result.stderr.splitlines() if x.startswith("failed: ")]
    assert files[1].name in line and "the dataset says 00000001" in line
    assert not (out / files[1].name).exists()
    assert (out / files[0].name).is_file() and (out / files[2].name).is_file()
    # --no-checksums: sizes only, so the file is taken
    gridlrt(env, "data", "get", str(source), "--to", str(out), "--no-checksums")
    assert sha256(out / files[1].name) == sha256(files[1])


def test_put_the_local_copy_to_another_webdav_directory(webdav: WebDAV, tmp_path: Path) -> None:
    rel, files = subband_files(webdav, 20, 48 * 1024)
    source = dataset_file(tmp_path / "ds.jsonl", webdav, rel, files)
    env = cli_env(tmp_path)
    out = tmp_path / "raw"
    gridlrt(env, "data", "get", str(source), "--to", str(out))

    target_rel = f"back-{uuid4().hex[:8]}"
    target = webdav.davs_url(target_rel)
    dry = gridlrt(env, "data", "put", str(out), "--to", target, "--dry-run").stdout
    assert "20 file(s) to put" in dry
    up = tmp_path / "up.jsonl"
    report = json.loads(
        gridlrt(env, "data", "put", str(out), "--to", target, "-o", str(up), "--json").stdout
    )
    assert len(report["copied"]) == 20 and report["failed"] == []

    # compared by subband and size, as data compare does
    uploaded = read_dataset(up)
    original = read_dataset(source)
    assert {e.subband: e.size for e in uploaded.entries} == {
        e.subband: e.size for e in original.entries
    }
    assert all(e.url.startswith(target + "/") for e in uploaded.entries)
    for f in files:  # and byte for byte on the server's disk
        assert sha256(webdav.root / target_rel / f.name) == sha256(f)
    assert leftovers(webdav.root / target_rel) == []

    again = json.loads(gridlrt(env, "data", "put", str(out), "--to", target, "--json").stdout)
    assert again["copied"] == [] and len(again["skipped"]) == 20

    # a dataset file of local entries works as well (to file:// here)
    local_target = tmp_path / "mirror"
    gridlrt(env, "data", "put", str(out / "dataset.jsonl"), "--to", local_target.as_uri())
    assert sorted(p.name for p in local_target.iterdir()) == sorted(f.name for f in files)


def lta_tarball(directory: Path, subband: int) -> Path:
    """An LTA-style tarball holding one (fake) measurement set directory."""
    ms = f"L700701_SB{subband:03d}_uv.MS"
    path = directory / f"{ms}_3d78b8f1.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("table.dat", b"table"), ("table.f0", os.urandom(4096))):
            info = tarfile.TarInfo(f"{ms}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_get_unpack_gives_measurement_sets(webdav: WebDAV, tmp_path: Path) -> None:
    rel = f"lta-{uuid4().hex[:8]}"
    (webdav.root / rel).mkdir()
    tarballs = [lta_tarball(webdav.root / rel, sb) for sb in (100, 101, 102)]
    source = dataset_file(tmp_path / "ds.jsonl", webdav, rel, tarballs)
    env = cli_env(tmp_path)
    out = tmp_path / "raw"

    report = json.loads(
        gridlrt(env, "data", "get", str(source), "--to", str(out), "--unpack", "--json").stdout
    )
    assert len(report["copied"]) == 3 and len(report["unpacked"]) == 3
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "L700701_SB100_uv.MS", "L700701_SB101_uv.MS", "L700701_SB102_uv.MS", "dataset.jsonl"
    ]  # fmt: skip
    assert (out / "L700701_SB101_uv.MS" / "table.dat").read_bytes() == b"table"
    local = read_dataset(out / "dataset.jsonl")
    assert [e.kind for e in local.entries] == ["ms"] * 3
    assert [e.subband for e in local.entries] == [100, 101, 102]

    again = json.loads(
        gridlrt(env, "data", "get", str(source), "--to", str(out), "--unpack", "--json").stdout
    )
    assert again["copied"] == [] and len(again["skipped"]) == 3
    assert len(read_dataset(out / "dataset.jsonl").entries) == 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["data", "get", "{tmp}/nothing.jsonl", "--to", "{tmp}/out"], "no such dataset"),
        (["data", "get", "{ds}", "--to", "{tmp}/afile"], "a file, not a directory"),
        (["data", "get", "{ds}", "--to", "dav://127.0.0.1:1/x"], "copies into a local"),
        (["data", "get", "{ds}", "--to", "{tmp}/out", "--subbands", "7"], "no files to get"),
        (["data", "get", "{dup}", "--to", "{tmp}/out"], "two entries are named"),
        (["data", "put", "{ds}", "--to", "{tmp}/up"], "not a local file"),
        (["data", "put", "{tmp}/empty", "--to", "{tmp}/up"], "no files to put"),
        (["data", "put", "{tmp}/nothing", "--to", "{tmp}/up"], "no such dataset"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    ds = tmp_path / "ds.jsonl"
    urls = [f"dav://127.0.0.1:1/obs/L700701_SB{sb}_uv.MS_3d78b8f1.tar" for sb in (100, 101)]
    write_dataset(ds, Dataset(entries=[entry_for_url(u) for u in urls]))
    dup = tmp_path / "dup.jsonl"
    write_dataset(
        dup,
        Dataset(entries=[entry_for_url(urls[0]), entry_for_url(urls[0].replace("obs", "other"))]),
    )
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    shown = [a.format(tmp=tmp_path, ds=ds, dup=dup) for a in args]

    result = gridlrt(cli_env(tmp_path), *shown, check=False)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "up").exists()


# --- measurement sets stored as directories (casacore table trees) --------------------------


def make_ms_dir(directory: Path, subband: int, **spec: int) -> Path:
    """A real (synthetic) LOFAR measurement set ``directory/L700701_SAP000_SB<nnn>_uv.MS``."""
    from gridlrt.demo.synthetic_ms import SyntheticMSSpec, make_synthetic_ms

    made = SyntheticMSSpec(obsid=700701, subband=subband, **spec)
    return make_synthetic_ms(directory / made.ms_name, made)


def ms_area(webdav: WebDAV, subbands: tuple[int, ...], **spec: int) -> tuple[str, list[Path]]:
    """A new directory served by WebDAV holding a measurement set per subband."""
    rel = f"L700701-{uuid4().hex[:8]}"
    (webdav.root / rel).mkdir()
    return rel, [make_ms_dir(webdav.root / rel, sb, **spec) for sb in subbands]


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (empty directories as "dir")."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            if not any(path.iterdir()):
                found[rel] = "dir"
        else:
            found[rel] = sha256(path)
    return found


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def tree_inodes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_ino for p in root.rglob("*")}


def assert_same_ms(copy: Path, original: Path) -> None:
    """Byte for byte the same files, and casacore opens the copy: same rows, same DATA."""
    from casacore import tables as ct

    assert tree_digest(copy) == tree_digest(original)
    with ct.table(str(copy), readonly=True, ack=False) as got:
        with ct.table(str(original), readonly=True, ack=False) as want:
            assert got.nrows() == want.nrows() > 0
            assert (got.getcol("DATA") == want.getcol("DATA")).all()
        with ct.table(str(copy / "SPECTRAL_WINDOW"), readonly=True, ack=False) as spw:
            assert spw.nrows() == 1


def ms_parts(directory: Path) -> list[str]:
    """The temporary twins (``.<name>.part-<hex>``) of measurement sets being fetched."""
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and is_temp_name(p.name))


@pytest.mark.parametrize("scheme", ["davs", "file"])
def test_get_a_directory_of_measurement_sets_then_rerun_copies_nothing(
    webdav: WebDAV, tmp_path: Path, scheme: str
) -> None:
    rel = f"L700701-{uuid4().hex[:8]}"
    where = webdav.root / rel if scheme == "davs" else tmp_path / "store" / rel
    where.mkdir(parents=True)
    originals = [make_ms_dir(where, sb) for sb in (100, 101, 102)]
    url = webdav.davs_url(rel) + "/" if scheme == "davs" else where.as_uri()
    env = cli_env(tmp_path)
    out = tmp_path / "got"

    listed = json.loads(gridlrt(env, "data", "list", url, "--json").stdout)["dataset"]["entries"]
    assert [(e["name"], e["kind"], e["size"]) for e in listed] == [
        (ms.name, "ms", tree_bytes(ms)) for ms in originals
    ]
    files = sum(1 for ms in originals for p in ms.rglob("*") if p.is_file())

    dry = json.loads(
        gridlrt(env, "data", "get", url, "--to", str(out), "--dry-run", "--json").stdout
    )
    assert [(f["name"], f["kind"], f["tree_files"]) for f in dry["copy"]] == [
        (ms.name, "tree", sum(1 for p in ms.rglob("*") if p.is_file())) for ms in originals
    ]
    assert dry["bytes_to_copy"] == sum(tree_bytes(ms) for ms in originals)
    assert not out.exists()

    report = json.loads(
        gridlrt(env, "data", "get", url, "--to", str(out), "-j", "4", "--json").stdout
    )
    assert report["copied"] == [ms.name for ms in originals] and report["failed"] == []
    assert report["bytes_copied"] == sum(tree_bytes(ms) for ms in originals)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(ms.name for ms in originals), "dataset.jsonl"]
    )  # no twin left behind
    for ms in originals:
        assert_same_ms(out / ms.name, ms)
    local = read_dataset(out / "dataset.jsonl")
    assert [(e.name, e.kind, e.url, e.size, e.subband) for e in local.entries] == [
        (ms.name, "ms", (out / ms.name).as_uri(), tree_bytes(ms), sb)
        for ms, sb in zip(originals, (100, 101, 102), strict=True)
    ]
    assert files > 3 * 20  # real casacore trees: subtables and their files

    before = {ms.name: tree_inodes(out / ms.name) for ms in originals}
    again = json.loads(gridlrt(env, "data", "get", url, "--to", str(out), "--json").stdout)
    assert again["copied"] == [] and again["skipped"] == [ms.name for ms in originals]
    assert again["bytes_copied"] == 0
    assert {ms.name: tree_inodes(out / ms.name) for ms in originals} == before

    # an MS that lost a file is fetched again, whole; the others are left alone
    damaged = out / originals[1].name / "table.f1"
    damaged.unlink()
    third = json.loads(gridlrt(env, "data", "get", url, "--to", str(out), "--json").stdout)
    assert third["copied"] == [originals[1].name] and len(third["skipped"]) == 2
    assert_same_ms(out / originals[1].name, originals[1])
    assert tree_inodes(out / originals[0].name) == before[originals[0].name]
    assert ms_parts(out) == []


def test_get_of_an_ms_whose_size_is_not_the_dataset_s_fails_in_one_line(
    webdav: WebDAV, tmp_path: Path
) -> None:
    rel, originals = ms_area(webdav, (100, 101))
    env = cli_env(tmp_path)
    ds = tmp_path / "ds.jsonl"
    gridlrt(env, "data", "list", webdav.dav_url(rel), "-o", str(ds))
    dataset = read_dataset(ds)
    dataset.entries[0].size = (dataset.entries[0].size or 0) + 1  # not what is stored
    write_dataset(ds, dataset)
    out = tmp_path / "got"

    result = gridlrt(env, "data", "get", str(ds), "--to", str(out), check=False)
    assert result.returncode == 1
    [line] = [x for x in result.stderr.splitlines() if x.startswith("failed: ")]
    assert line.startswith(f"failed: {originals[0].name}: the measurement set holds ")
    assert "but the dataset says" in line
    assert not (out / originals[0].name).exists()
    assert_same_ms(out / originals[1].name, originals[1])
    assert ms_parts(out) == []


def test_get_killed_during_a_tree_leaves_no_partial_ms_and_the_rerun_finishes(
    webdav: WebDAV, tmp_path: Path
) -> None:
    big = {"stations": 6, "channels": 256, "timeslots": 300}  # about 80 MB, 67 files each
    rel, originals = ms_area(webdav, (100, 101, 102), **big)
    size = tree_bytes(originals[0])
    names = {ms.name for ms in originals}
    env = cli_env(tmp_path)
    out = tmp_path / "got"
    url = webdav.dav_url(rel)

    def twin_bytes() -> int:  # bytes in the temporary twins being written
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for twin in ms_parts(out):
                for p in (out / twin).rglob("*"):
                    with contextlib.suppress(FileNotFoundError):
                        total += p.stat().st_size if p.is_file() else 0
        return total

    child = subprocess.Popen(
        [sys.executable, "-m", "gridlrt", "data", "get", url, "--to", str(out), "-j", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: out.is_dir() and twin_bytes() >= 0.3 * size)  # in the middle of a tree
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL

    assert ms_parts(out), "killed while a measurement set was being copied"
    final = [p for p in out.iterdir() if p.name in names]
    assert len(final) < 3, "killed before the end"
    by_name = {ms.name: ms for ms in originals}
    for path in final:  # a measurement set under its final name is whole
        assert_same_ms(path, by_name[path.name])
    complete = {p.name: tree_inodes(p) for p in final}

    rerun = json.loads(gridlrt(env, "data", "get", url, "--to", str(out), "--json").stdout)
    assert sorted(rerun["skipped"]) == sorted(complete)
    assert sorted(rerun["copied"]) == sorted(names - set(complete))
    assert rerun["failed"] == [] and rerun["stale_parts_removed"] >= 1
    assert {name: tree_inodes(out / name) for name in complete} == complete
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "dataset.jsonl"])
    for ms in originals:
        assert_same_ms(out / ms.name, ms)
    assert [e.kind for e in read_dataset(out / "dataset.jsonl").entries] == ["ms"] * 3


def test_put_measurement_set_directories_to_webdav_then_list_them(
    webdav: WebDAV, tmp_path: Path
) -> None:
    local = tmp_path / "L700701"
    local.mkdir()
    originals = [make_ms_dir(local, sb) for sb in (100, 101, 102)]
    tarball = local / "L700701_SB103_uv.MS_3d78b8f1.tar"
    tarball.write_bytes(os.urandom(20_000))
    env = cli_env(tmp_path)
    target_rel = f"up-{uuid4().hex[:8]}"
    target = webdav.davs_url(target_rel)
    stale = webdav.root / target_rel / f"{originals[0].name}.part-0123abcd" / "SPECTRAL_WINDOW"
    stale.mkdir(parents=True)  # the twin a killed put left
    (stale / "table.f0").write_bytes(b"half")

    dry = gridlrt(env, "data", "put", str(local), "--to", target, "--dry-run").stdout
    assert "4 file(s) to put" in dry
    report = json.loads(gridlrt(env, "data", "put", str(local), "--to", target, "--json").stdout)
    assert report["failed"] == [] and report["stale_parts_removed"] == 1
    assert report["copied"] == [*(ms.name for ms in originals), tarball.name]
    assert report["bytes_copied"] == sum(map(tree_bytes, originals)) + 20_000

    remote = webdav.root / target_rel
    assert sorted(p.name for p in remote.iterdir()) == sorted(
        [*(ms.name for ms in originals), tarball.name]
    )  # no twin (*.part-*) left on the server
    for ms in originals:
        assert_same_ms(remote / ms.name, ms)

    listed = json.loads(gridlrt(env, "data", "list", target, "--json").stdout)
    entries = {e["name"]: (e["kind"], e["size"]) for e in listed["dataset"]["entries"]}
    assert entries == {
        **{ms.name: ("ms", tree_bytes(ms)) for ms in originals},
        tarball.name: ("ms-tarball", 20_000),
    }

    again = json.loads(gridlrt(env, "data", "put", str(local), "--to", target, "--json").stdout)
    assert again["copied"] == [] and len(again["skipped"]) == 4

    # a remote MS that lost a file is uploaded again, whole, in its place
    (remote / originals[2].name / "table.f1").unlink()
    third = json.loads(gridlrt(env, "data", "put", str(local), "--to", target, "--json").stdout)
    assert third["copied"] == [originals[2].name] and len(third["skipped"]) == 3
    assert_same_ms(remote / originals[2].name, originals[2])
    assert [p.name for p in remote.iterdir() if is_temp_name(p.name)] == []
