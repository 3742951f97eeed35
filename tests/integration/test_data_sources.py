"""``gridlrt data list / check / compare`` on real storage and real pools: storage
directories over file:// and the WebDAV server (dav:// and davs://, one PROPFIND per
directory, measurement set directories summed, half-written uploads left out), a pipeline
stage's outputs from the pool (SQLite and CouchDB), and check finding every problem kind."""

from __future__ import annotations

import json
import shutil
import time
import zlib
from pathlib import Path

import pytest

from gridlrt.datasets.model import entry_for_url, read_dataset
from gridlrt.datasets.sources import SourceContext, load_dataset
from gridlrt.storage import Storage
from gridlrt.tokens import TokenPool, TokenStatus, new_token
from gridlrt.tokens.model import Depends, ParentGroup, PilotInfo, UploadResult
from tests.gridlrt_cli import cli_env, gridlrt
from tests.services.webdav import WebDAV

OBS = "L700701"
TARBALLS = [0, 1, 3, 4]  # SB002 is missing


def tarball(sb: int, suffix: str = "3d78b8f1") -> str:
    return f"{OBS}_SAP000_SB{sb:03d}_uv.MS_{suffix}.tar"


def make_observation(root: Path) -> dict[str, int]:
    """Tarballs of SB000..004 but SB002, a measurement set directory SB005 (nested tables),
    a half-written upload and a logs/ subdirectory. Returns name -> size."""
    root.mkdir(parents=True)
    sizes = {}
    for sb in TARBALLS:
        data = bytes([sb]) * (1000 + sb * 100) + b"end"
        (root / tarball(sb)).write_bytes(data)
        sizes[tarball(sb)] = len(data)
    ms = root / f"{OBS}_SAP000_SB005_uv.MS"
    (ms / "ANTENNA").mkdir(parents=True)
    (ms / "table.f0").write_bytes(b"x" * 500)
    (ms / "ANTENNA" / "table.f0").write_bytes(b"y" * 70)
    sizes[ms.name] = 570
    (root / f"{tarball(1)}.part-0123abcd").write_bytes(b"half")
    (root / "logs").mkdir()
    (root / "logs" / "stage.log").write_text("log\n")
    return sizes


@pytest.fixture(scope="module")
def storage() -> Storage:
    return Storage(retries=0)


def test_storage_directories_over_file_dav_and_davs(
    webdav: WebDAV, tmp_path: Path, storage: Storage
) -> None:
    name = f"obs-{time.time_ns()}"
    sizes = make_observation(webdav.path(name))
    local = f"file://{webdav.path(name)}"
    for url in (local, webdav.dav_url(name), webdav.davs_url(name) + "/"):
        context = SourceContext(storage=storage, checksums=True)
        found = load_dataset(url, context)
        assert [e.name for e in found.entries] == list(sizes), url
        assert [e.size for e in found.entries] == list(sizes.values()), url
        assert [e.subband for e in found.entries] == [0, 1, 3, 4, 5]
        assert [e.kind for e in found.entries] == ["ms-tarball"] * 4 + ["ms"]
        assert all(e.url.startswith(url.rstrip("/") + "/") for e in found.entries)
        assert any("1 subdirectory(ies) that are not measurement sets left out" in n
                   for n in context.notes), context.notes  # fmt: skip
        assert any("1 half-written upload(s)" in n for n in context.notes)
        if url.startswith("file://"):  # gfal2 computes adler32 for local files
            first = (webdav.path(name) / tarball(0)).read_bytes()
            assert found.entries[0].checksum == f"adler32:{zlib.adler32(first):08x}"
            assert found.entries[4].checksum is None  # a directory has none
        else:  # wsgidav answers no checksum queries: said once, not per file
            assert all(e.checksum is None for e in found.entries)
            assert any("gives no adler32 checksums" in n for n in context.notes)
    recursive = load_dataset(webdav.dav_url(name), SourceContext(storage=storage, recursive=True))
    assert recursive.entries[-1].url == webdav.dav_url(f"{name}/logs/stage.log")
    one = load_dataset(webdav.dav_url(f"{name}/{tarball(3)}"), SourceContext(storage=storage))
    assert [(e.subband, e.size) for e in one.entries] == [(3, sizes[tarball(3)])]


def test_data_list_cli_of_a_webdav_directory(webdav: WebDAV, tmp_path: Path) -> None:
    name = f"obs-{time.time_ns()}"
    make_observation(webdav.path(name))
    env = cli_env(tmp_path)
    out = tmp_path / "L700701.jsonl"
    shown = gridlrt(env, "data", "list", webdav.davs_url(name), "-o", str(out))
    text = " ".join(shown.stdout.split())  # the caption is wrapped to the table's width
    assert (
        "5 file(s), 5.4 kB; subbands 0,1,3..5; 100.00-100.98 MHz (estimated from subband "
        "numbers: HBA_110_190, 200 MHz clock; --band to change); missing 2" in text
    )
    assert "~100.000" in text and "~100.977" in text  # SB000, SB005
    assert "left out (--recursive lists them)" in shown.stderr
    written = read_dataset(out)
    assert len(written.entries) == 5 and written.entries[0].frequency_hz == 100e6
    assert written.entries[0].model_extra == {"frequency_estimated": True}
    as_json = json.loads(
        gridlrt(env, "data", "list", webdav.dav_url(name), "--json", "--band", "none").stdout
    )
    assert as_json["summary"]["missing"] == "2" and as_json["summary"]["bytes"] == 5382
    assert as_json["frequencies_estimated"] is None
    assert all(e["frequency_hz"] is None for e in as_json["dataset"]["entries"])
    bad = gridlrt(env, "data", "list", webdav.dav_url(f"{name}-nothing"), check=False)
    assert bad.returncode == 3 and len(bad.stderr.strip().splitlines()) == 1
    assert "error:" in bad.stderr and f"{name}-nothing" in bad.stderr


def _lines(result_stdout: str) -> list[str]:
    """The output's lines without the URL in brackets at the end of problem lines."""
    lines = []
    for line in result_stdout.strip().splitlines():
        head, _, where = line.rpartition(" (")
        lines.append(head if head and "://" in where and where.endswith(")") else line)
    return lines


def test_check_finds_every_problem_kind_on_file_storage(tmp_path: Path) -> None:
    root = tmp_path / "obs"
    make_observation(root)
    # a second copy of SB004 under another name: a duplicate subband
    shutil.copyfile(root / tarball(4), root / tarball(4, "aaaaaaaa"))
    env = cli_env(tmp_path)
    dataset = tmp_path / "obs.jsonl"
    gridlrt(env, "data", "list", f"file://{root}", "--checksums", "-o", str(dataset))
    ok = gridlrt(env, "data", "check", str(dataset), "--checksums", "--subbands", "0..1,3,5")
    assert ok.stdout.strip().splitlines() == [
        "OK: 4 file(s); 4 checked on storage, 3 by checksum; no problems"
    ]
    (root / tarball(0)).unlink()  # gone
    with (root / tarball(1)).open("r+b") as handle:  # truncated
        handle.truncate(500)
    data = bytearray((root / tarball(3)).read_bytes())  # one byte flipped: same size
    data[10] ^= 0xFF
    (root / tarball(3)).write_bytes(bytes(data))
    (root / f"{OBS}_SAP000_SB005_uv.MS" / "table.f0").write_bytes(b"x" * 600)  # grown
    with dataset.open("a") as handle:  # an endpoint nobody answers on
        gone = entry_for_url(f"dav://127.0.0.1:9/obs/{tarball(6)}", size=5)
        handle.write(gone.model_dump_json() + "\n")
    found = gridlrt(env, "data", "check", str(dataset), "--checksums", "--retries", "0",
                    "--expected", "0..6", check=False)  # fmt: skip
    assert found.returncode == 1, found.stderr
    lines = _lines(found.stdout)
    assert lines[:-3] == [
        "MISSING     L700701_SAP000_SB002: no entry for this subband",
        "DUPLICATE   L700701_SAP000_SB004: 2 entries: "
        f"file://{root}/{tarball(4)}, file://{root}/{tarball(4, 'aaaaaaaa')}",
        "MISSING     L700701_SAP000_SB000: not on storage",
        "SHORT       L700701_SAP000_SB001: 500 bytes on storage, 1103 recorded",
        "CORRUPT     L700701_SAP000_SB003: adler32 "
        f"{zlib.adler32(bytes(data)):08x} on storage, "
        f"{zlib.adler32(bytes([3]) * 1300 + b'end'):08x} recorded",
    ]
    assert lines[-3] == "SIZE        L700701_SAP000_SB005: 670 bytes on storage, 570 recorded"
    assert lines[-2].startswith("UNREACHABLE L700701_SAP000_SB006: ")
    summary = lines[-1]
    assert summary.startswith(
        "PROBLEMS: 7 (2 missing, 1 short, 1 size, 1 corrupt, 1 duplicate, 1 unreachable)"
    )
    report = json.loads(
        gridlrt(env, "data", "check", str(dataset), "--json", "--retries", "0", check=False).stdout
    )
    kinds = sorted(p["kind"] for p in report["problems"])
    # without --checksums the flipped byte goes unnoticed (same size)
    assert kinds == ["duplicate", "missing", "missing", "short", "size", "unreachable"]
    assert report["checksum_checked"] == 0


def test_check_on_webdav_by_size_where_it_gives_no_checksums(
    webdav: WebDAV, tmp_path: Path
) -> None:
    name = f"obs-{time.time_ns()}"
    root = webdav.path(name)
    make_observation(root)
    env = cli_env(tmp_path)
    dataset = tmp_path / "obs.jsonl"
    gridlrt(env, "data", "list", f"file://{root}", "--checksums", "-o", str(dataset))
    # the same files, as the WebDAV server serves them, with the checksums file:// gave
    text = dataset.read_text().replace(f"file://{root}", webdav.dav_url(name))
    dataset.write_text(text)
    clean = gridlrt(env, "data", "check", str(dataset), "--expected", "0,1,3..5", "--checksums")
    assert clean.stdout.strip().splitlines() == [
        "OK: 5 file(s); 5 checked on storage; no problems"  # none by checksum
    ]
    (root / tarball(4)).unlink()
    (root / tarball(1)).write_bytes(b"short")
    data = bytearray((root / tarball(3)).read_bytes())
    data[0] ^= 0xFF
    (root / tarball(3)).write_bytes(bytes(data))
    found = gridlrt(env, "data", "check", str(dataset), "--checksums", check=False)
    assert found.returncode == 1
    assert _lines(found.stdout)[:-1] == [
        "MISSING     L700701_SAP000_SB002: no entry for this subband",
        "SHORT       L700701_SAP000_SB001: 5 bytes on storage, 1103 recorded",
        "MISSING     L700701_SAP000_SB004: not on storage",
    ]  # the flipped byte in SB003: same size, and the server cannot say its checksum
    assert f"no checksums at dav://127.0.0.1:{webdav.port}" in found.stderr


def test_compare_two_storage_copies(webdav: WebDAV, tmp_path: Path) -> None:
    name = f"obs-{time.time_ns()}"
    make_observation(webdav.path(name))
    local = tmp_path / "copy"
    shutil.copytree(webdav.path(name), local)
    env = cli_env(tmp_path)
    same = gridlrt(env, "data", "compare", webdav.davs_url(name), f"file://{local}")
    assert same.stdout.strip().splitlines() == [
        "EQUAL: 5 the same, 0 only in A, 0 only in B, 0 of another size (A 5 file(s), B 5)"
    ]
    (local / tarball(0)).unlink()
    (local / tarball(3)).write_bytes(b"x")
    (local / tarball(7)).write_bytes(b"new")
    differ = gridlrt(env, "data", "compare", webdav.davs_url(name), f"file://{local}",
                     check=False)  # fmt: skip
    assert differ.returncode == 1
    assert _lines(differ.stdout) == [
        "ONLY IN A  L700701_SAP000_SB000",
        "SIZE DIFFERS L700701_SAP000_SB003: 1303 bytes in A, 1 in B",
        "ONLY IN B  L700701_SAP000_SB007",
        "DIFFERENT: 3 the same, 1 only in A, 1 only in B, 1 of another size (A 5 file(s), B 5)",
    ]
    as_json = json.loads(
        gridlrt(env, "data", "compare", webdav.dav_url(name), f"file://{local}", "--json",
                "--subbands", "3", check=False).stdout
    )  # fmt: skip
    assert [d["kind"] for d in as_json["differences"]] == ["size"]


def _finish_stage(pool: TokenPool, root: str) -> None:
    """Run "prep" (SB000..003; SB002 fails) and its gathering "band" by hand, as pilots
    would: claim, then finish with the uploads' sizes and checksums."""
    prep = [
        new_token(f"run1.prep.{sb}", inputs=f"srm://x/{OBS}_SB{sb:03d}_uv.MS.tar", step="prep",
                  fields={"pipeline": "run1", "stage": "prep",
                          "group": {"label": f"{OBS}_SB{sb:03d}", "obsid": "700701",
                                    "subbands": [sb]}})
        for sb in range(4)
    ]  # fmt: skip
    band = new_token(
        "run1.band.0", inputs=None, step="concat",
        fields={"pipeline": "run1", "stage": "band",
                "group": {"label": "L700701_SB000-003", "obsid": "700701",
                          "subbands": [0, 1, 2, 3]}},
        depends=Depends(groups=[ParentGroup(ids=[t.id for t in prep], min_done=0.5)]),
    )  # fmt: skip
    for token in prep:
        token.children = [band.id]
    pool.create([*prep, band])
    who = PilotInfo(pilot="p1", host="test")
    while (token := pool.claim(who)) is not None:
        if token.id == "run1.prep.2":
            pool.fail(token.id, "p1", message="bad subband")
            continue
        name = (
            "band.MS.tar"
            if token.stage == "band"
            else f"{OBS}_SB{token.group['subbands'][0]:03d}_uv.dppp.MS.tar"
        )
        url = f"{root}/run1/{token.stage}/{name}"
        log = f"{root}/run1/{token.stage}/{token.id}.log"
        pool.finish(token.id, "p1", output=[url], uploads=[
            UploadResult(url=url, size=1000 + len(token.id), checksum="0a0b0c0d"),
            UploadResult(url=log, size=10)])  # fmt: skip


def test_a_pipeline_stage_from_the_pool(pool: TokenPool, tmp_path: Path) -> None:
    _finish_stage(pool, "davs://storage.example.org/lofar")
    context = SourceContext(pool=pool)
    prep = load_dataset("pool:run1/prep", context)
    assert [e.subband for e in prep.entries] == [0, 1, 3]
    assert [e.size for e in prep.entries] == [1011, 1011, 1011]
    assert {e.checksum for e in prep.entries} == {"adler32:0a0b0c0d"}
    assert {(e.pipeline, e.stage, e.step) for e in prep.entries} == {("run1", "prep", "prep")}
    assert [e.token for e in prep.entries] == ["run1.prep.0", "run1.prep.1", "run1.prep.3"]
    assert context.notes == [
        "pool:run1/prep: 1 of 4 token(s) not done (1 error): their outputs are not listed"
    ]
    [band] = load_dataset("pool:run1/band", SourceContext(pool=pool)).entries
    assert band.parents == ["run1.prep.0", "run1.prep.1", "run1.prep.3"]
    assert band.obsid == 700701 and (band.model_extra or {})["subbands"] == "0..3"
    assert pool.get("run1.band.0").status is TokenStatus.DONE
    # the command line, on the same pool
    env = cli_env(tmp_path)
    listed = json.loads(gridlrt(env, "data", "list", "pool:run1/prep", "--pool", pool.url,
                                "--json").stdout)  # fmt: skip
    assert listed["summary"]["missing"] == "2" and listed["summary"]["bytes"] == 3033
    assert "1 of 4 token(s) not done" in listed["notes"][0]
    compared = gridlrt(env, "data", "compare", "pool:run1/prep", "pool:run1/prep",
                       "--pool", pool.url)  # fmt: skip
    assert compared.stdout.startswith("EQUAL: 3 the same")
    wrong = gridlrt(env, "data", "list", "pool:run1/image", "--pool", pool.url, check=False)
    assert wrong.returncode == 3
    assert "run 'run1' has no stage 'image' (stages: band, prep)" in wrong.stderr
    nothing = gridlrt(env, "data", "list", "pool:run9/prep", "--pool", pool.url, check=False)
    assert "no pipeline run 'run9'" in nothing.stderr and "(runs: run1)" in nothing.stderr
