"""The pure parts of datasets' sources, check and compare: completeness and duplicates,
compare by subband and size, band frequencies, ``pool:RUN/STAGE`` parsing and a done token's
entries (sizes, checksums, provenance from its upload records)."""

from __future__ import annotations

import pytest

from gridlrt.datasets.bands import BANDS, parse_band, with_estimated_frequencies
from gridlrt.datasets.check import (
    CheckReport,
    Problem,
    check_dataset,
    compare_datasets,
    completeness,
    duplicates,
)
from gridlrt.datasets.model import Dataset, entry_for_url
from gridlrt.datasets.sources import (
    is_measurement_set,
    is_url_source,
    load_dataset,
    parse_pool_source,
    stage_entries,
)
from gridlrt.errors import InputError
from gridlrt.tokens import Token
from gridlrt.tokens.model import ParentRecord, UploadResult

ROOT = "davs://webdav.example.org/pnfs/lofar/L700701"


def dataset(subbands: list[int], obsid: int = 700701, size: int | None = 100) -> Dataset:
    entries = [
        entry_for_url(f"{ROOT}/L{obsid}_SAP000_SB{sb:03d}_uv.MS_3d78b8f1.tar", size=size)
        for sb in subbands
    ]
    return Dataset(name="raw", entries=entries)


def kinds(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.kind, p.label) for p in problems]


def test_completeness_between_lowest_and_highest_or_against_expected() -> None:
    data = dataset([100, 101, 104])
    assert kinds(completeness(data)) == [
        ("missing", "L700701_SAP000_SB102"),
        ("missing", "L700701_SAP000_SB103"),
    ]
    assert [p.label for p in completeness(data, [99, 100, 101, 104, 105])] == [
        "L700701_SAP000_SB099",
        "L700701_SAP000_SB105",
    ]
    assert completeness(dataset([7])) == []
    # two observations: each is complete on its own
    both = Dataset(entries=[*dataset([0, 1]).entries, *dataset([5, 6], obsid=700702).entries])
    assert completeness(both) == []
    # nothing at all, but subbands expected: every one is missing
    assert [p.label for p in completeness(Dataset(), [0, 1])] == ["SB000", "SB001"]


def test_duplicates_by_subband_and_by_url() -> None:
    data = dataset([1, 2])
    data.entries.append(entry_for_url("file:///copy/L700701_SAP000_SB002_uv.MS"))
    data.entries.append(data.entries[0])
    found = duplicates(data)
    assert kinds(found) == [  # the same URL twice is one file listed twice, not two copies
        ("duplicate", "L700701_SAP000_SB002"),
        ("duplicate", "L700701_SAP000_SB001_uv.MS_3d78b8f1.tar"),
    ]
    assert "file:///copy/L700701_SAP000_SB002_uv.MS" in found[0].detail
    assert found[1].detail == "the same URL 2 times"
    # without storage, check is completeness and duplicates only
    report = check_dataset(data, None)
    assert not report.ok and report.stat_checked == 0
    assert report.summary_line().startswith("PROBLEMS: 2 (2 duplicate)")


def test_problem_lines_and_summary() -> None:
    problem = Problem(kind="short", label="L1_SB001", url="file:///x", detail="1 bytes")
    assert problem.line() == "SHORT       L1_SB001: 1 bytes (file:///x)"
    clean = CheckReport(dataset="d", files=3, expected="0..2", stat_checked=3,
                        checksum_checked=3, problems=[])  # fmt: skip
    assert clean.ok
    assert clean.summary_line() == "OK: 3 file(s); 3 checked on storage, 3 by checksum; no problems"


def test_compare_by_subband_and_size() -> None:
    a = dataset([1, 2, 3, 4])
    b = dataset([2, 3, 4, 5])
    b.entries[1] = b.entries[1].model_copy(update={"size": 99})  # SB003
    b.entries[2] = b.entries[2].model_copy(update={"size": None})  # SB004: unknown size
    result = compare_datasets(a, b)
    assert [(d.kind, d.label) for d in result.differences] == [
        ("only_a", "L700701_SAP000_SB001"),
        ("size", "L700701_SAP000_SB003"),
        ("only_b", "L700701_SAP000_SB005"),
    ]
    assert (result.same, result.unknown_size, result.equal) == (2, 1, False)
    assert result.differences[1].line() == (
        "SIZE DIFFERS L700701_SAP000_SB003: 100 bytes in A, 99 in B"
    )
    assert result.summary_line().startswith("DIFFERENT: 2 the same (1 of unknown size)")
    # another location and another tarball suffix: still the same subbands
    moved = Dataset(entries=[entry_for_url(f"file:///data/L700701_SAP000_SB{sb:03d}_uv.MS_00000000.tar",
                                           size=100) for sb in [1, 2, 3, 4]])  # fmt: skip
    assert compare_datasets(a, moved).equal
    # files without subbands compare by name
    plain = Dataset(entries=[entry_for_url("file:///a/image.fits", size=5)])
    other = Dataset(entries=[entry_for_url("davs://h/b/image.fits", size=6)])
    assert [d.kind for d in compare_datasets(plain, other).differences] == ["size"]


def test_bands_give_centre_frequencies_marked_as_estimates() -> None:
    hba = parse_band("HBA")
    assert hba is not None and hba.name == "HBA_110_190"
    assert hba.frequency_hz(256) == pytest.approx(150e6)
    high = parse_band("hba-high")
    assert high is not None and high.frequency_hz(100) == pytest.approx(200e6 + 100 * 195312.5)
    assert BANDS["HBA_170_230"].frequency_hz(0) == pytest.approx(160e6)
    assert BANDS["LBA_10_70"].subband_width_hz == pytest.approx(156250)
    assert parse_band("none") is None
    with pytest.raises(InputError, match="--band 'HBA_110_250': not a LOFAR band filter"):
        parse_band("HBA_110_250")
    data = dataset([100, 101])
    data.entries.append(entry_for_url("file:///x/notes.txt"))
    data.entries[1] = data.entries[1].model_copy(update={"frequency_hz": 1.5e8})  # known
    estimated, n = with_estimated_frequencies(data, hba)
    assert n == 1
    first, second, third = estimated.entries
    assert first.frequency_hz == pytest.approx(100e6 + 100 * 195312.5)
    assert first.model_extra == {"frequency_estimated": True}
    assert second.frequency_hz == 1.5e8 and not second.model_extra
    assert third.frequency_hz is None
    assert data.entries[0].frequency_hz is None  # the input is not changed
    assert with_estimated_frequencies(data, None) == (data, 0)


def test_source_forms() -> None:
    assert parse_pool_source("pool:L700701/target_prep") == ("L700701", "target_prep")
    for bad in ("pool:L700701", "pool:/prep", "pool:run/", "pool:a/b/c"):
        with pytest.raises(InputError, match="pool:RUN/STAGE"):
            parse_pool_source(bad)
    for url in ("file:///d", "davs://h/p", "dav://h/p", "https://h/p", "srm://h:8443/p",
                "gsiftp://h/p", "root://h//p"):  # fmt: skip
        assert is_url_source(url), url
    assert not is_url_source("srm.txt") and not is_url_source("ftp://h/p")
    assert is_measurement_set("L1_SB000_uv.MS") and is_measurement_set("x.ms/")
    assert not is_measurement_set("L1_SB000_uv.MS_3d78b8f1.tar")
    with pytest.raises(InputError, match="no such dataset file or list"):
        load_dataset("/nonexistent/srm.txt")


def test_a_done_tokens_entries_carry_sizes_checksums_and_provenance() -> None:
    out = "file:///out/run1/band/L700701_SB000-003/band.MS.tar"
    token = Token.model_validate(
        {
            "_id": "run1.band.0", "lock": 1, "done": 2, "exit_code": 0, "step": "concat",
            "pipeline": "run1", "stage": "band",
            "group": {"label": "L700701_SB000-003", "obsid": "700701", "subbands": [0, 1, 2, 3]},
            "output": [out],
            "uploads": [UploadResult(url=out, size=42, checksum="0A1B2C3D").model_dump(),
                        UploadResult(url="file:///out/run1/band/log.txt", size=3).model_dump()],
            "provenance": [ParentRecord(id="run1.prep.0").model_dump(),
                           ParentRecord(id="run1.prep.1").model_dump()],
        }
    )  # fmt: skip
    [entry] = stage_entries(token)
    assert (entry.url, entry.size, entry.checksum) == (out, 42, "adler32:0a1b2c3d")
    assert (entry.pipeline, entry.stage, entry.step, entry.token) == (
        "run1",
        "band",
        "concat",
        "run1.band.0",
    )
    assert entry.parents == ["run1.prep.0", "run1.prep.1"]
    assert entry.obsid == 700701 and entry.subband is None
    assert entry.model_extra == {"subbands": "0..3", "group": "L700701_SB000-003"}
    # a token that recorded only uploads: those are its outputs; a one-subband group
    single = token.model_copy(
        update={"output": None, "group": {"obsid": 1, "subbands": [7]}, "provenance": []}
    )
    entries = stage_entries(single)
    assert [e.url for e in entries] == [out, "file:///out/run1/band/log.txt"]
    assert all(e.subband == 7 and e.obsid == 1 for e in entries)
    assert entries[1].checksum is None
