"""The dataset model and its file format: entries from LOFAR names, summaries (missing,
duplicate subbands, totals), subband selection, JSON lines and CSV round trips, one-line
errors for broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridlrt.datasets.model import (
    Dataset,
    entry_for_url,
    is_dataset_file,
    read_dataset,
    select_subbands,
    subband_frequency_hz,
    summarize,
    write_dataset,
)
from gridlrt.errors import InputError

SARA = "srm://srm.grid.sara.nl:8443/pnfs/grid.sara.nl/data/lofar/ops/projects/lc0_000/700701"


def dataset(subbands: list[int], **known: object) -> Dataset:
    entries = [
        entry_for_url(f"{SARA}/L700701_SAP000_SB{sb:03d}_uv.MS_3d78b8f1.tar", **known)
        for sb in subbands
    ]
    return Dataset(name="raw", source="srm.txt", entries=entries)


def test_entries_know_their_observation_subband_kind_and_site() -> None:
    entry = entry_for_url(f"{SARA}/L700701_SAP000_SB104_uv.MS_3d78b8f1.tar", size=10)
    assert (entry.obsid, entry.sap, entry.subband) == (700701, 0, 104)
    assert entry.kind == "ms-tarball" and entry.site == "sara" and entry.size == 10
    assert entry.label == "L700701_SAP000_SB104"
    ms = entry_for_url("file:///data/L1_SB002_uv.dppp.MS")
    assert ms.kind == "ms" and ms.site is None and ms.label == "L1_SB002"
    other = entry_for_url("davs://webdav.example.org:2880/x/notes.txt")
    assert other.kind == "file" and other.subband is None and other.label == "notes.txt"


def test_summary_counts_bytes_missing_and_duplicate_subbands() -> None:
    data = dataset([100, 101, 103, 103, 106], size=1000)
    summary = summarize(data)
    assert summary.files == 5 and summary.bytes == 5000 and summary.unknown_sizes == 0
    assert summary.subbands == "100,101,103,106"
    assert summary.missing == "102,104,105"
    assert summary.duplicates == ["L700701_SAP000_SB103"]
    assert summary.observations == [700701]
    expected = summarize(data, expected=range(98, 108))
    assert expected.missing == "98,99,102,104,105,107"
    assert summarize(dataset([100, 101])).unknown_sizes == 2


def test_selecting_subbands_by_ranges() -> None:
    data = dataset(list(range(100, 110)))
    assert [e.subband for e in select_subbands(data, "100..104..2,109").entries] == [
        100,
        102,
        104,
        109,
    ]
    with pytest.raises(InputError):
        select_subbands(data, "104..100")


def test_frequencies_of_subbands() -> None:
    assert subband_frequency_hz(100) == pytest.approx(100e6 + 100 * 195312.5)
    assert subband_frequency_hz(300, zone=1) == pytest.approx(300 * 195312.5)
    assert subband_frequency_hz(0, clock_mhz=160, zone=3) == pytest.approx(160e6)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_round_trip_keeps_every_field(tmp_path: Path, suffix: str) -> None:
    data = dataset([100, 102], size=2048, checksum="adler32:0a1b2c3d")
    data.entries[0] = data.entries[0].model_copy(
        update={"flagged_fraction": 0.25, "parents": ["a", "b"], "frequency_hz": 119.5e6}
    )
    path = write_dataset(tmp_path / f"raw{suffix}", data)
    assert is_dataset_file(path)
    back = read_dataset(path)
    assert back.name == "raw" and back.source == "srm.txt"
    assert [e.model_dump() for e in back.entries] == [e.model_dump() for e in data.entries]
    assert not list(tmp_path.glob(".*part*"))  # written atomically, nothing left over


def test_unknown_fields_survive_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    path.write_text(
        '{"format": "gridlrt-dataset/1", "name": "n"}\n'
        '{"url": "file:///a/L1_SB001_uv.MS", "future_field": 7}\n'
    )
    again = write_dataset(tmp_path / "again.jsonl", read_dataset(path))
    assert '"future_field": 7' in again.read_text()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("not json\n", "not JSON"),
        ('{"name": "x"}\n', "gridlrt-dataset/1"),
        ('{"format": "gridlrt-dataset/1"}\n{"size": 3}\n', ":2: url"),
        ('{"format": "gridlrt-dataset/1"}\n{"url": "x", "size": -1}\n', ":2: size"),
    ],
)
def test_broken_files_are_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_dataset(path)
    assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="no such dataset file"):
        read_dataset(tmp_path / "missing.jsonl")


def test_files_of_one_name_in_several_directories_are_not_duplicates() -> None:
    bands = Dataset(
        entries=[
            entry_for_url(f"file:///r/band/{g}/band.MS.tar") for g in ("SB000-009", "SB010-019")
        ]
    )
    assert summarize(bands).duplicates == []
    twice = Dataset(entries=bands.entries + bands.entries[:1])
    assert summarize(twice).duplicates == ["file:///r/band/SB000-009/band.MS.tar"]
