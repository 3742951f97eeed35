"""The dataset catalogue's pure parts: entries of uploaded outputs, index keys, queries and
frequency ranges, quality rows and bars, and which FLAG chunks are read."""

from __future__ import annotations

import pytest

from gridlrt.datasets.catalogue import (
    Query,
    index_keys,
    output_entry,
    parse_frequency_range,
)
from gridlrt.datasets.model import Dataset, DatasetEntry
from gridlrt.datasets.quality import bar, parse_threshold, quality_rows
from gridlrt.errors import InputError
from gridlrt.tokens import new_token
from gridlrt.worker.msinfo import flag_chunks

URL = "davs://host/results/L700701/average/L700701_SAP000_SB101_uv.average.MS.tar"


def test_output_entry_joins_name_set_upload_and_token() -> None:
    token = new_token(
        "avg_SB101",
        inputs="srm://lta/L700701_SAP000_SB101_uv.MS_1a2b3c4d.tar",
        step="average",
        fields={"pipeline": "run1", "stage": "avg"},
    )
    fields = {
        "frequency_hz": 139.6e6,
        "bandwidth_hz": 195312.5,
        "channels": 16,
        "start_time": 5.0e9,
        "end_time": 5.0e9 + 20,
        "stations": 4,
        "flagged_fraction": 0.25,
        "obsid": 999,  # the set's own idea: the file name wins
    }
    entry = output_entry(URL, token=token, fields=fields, size=1234, checksum="adler32:0a0b0c0d")
    assert (entry.obsid, entry.sap, entry.subband) == (700701, 0, 101)
    assert entry.kind == "ms-tarball" and entry.site
    assert entry.channels == 16 and entry.flagged_fraction == 0.25 and entry.stations == 4
    assert (entry.size, entry.checksum) == (1234, "adler32:0a0b0c0d")
    assert (entry.step, entry.pipeline, entry.stage, entry.token) == (
        "average",
        "run1",
        "avg",
        "avg_SB101",
    )
    assert entry.parents == ["srm://lta/L700701_SAP000_SB101_uv.MS_1a2b3c4d.tar"]
    assert index_keys(entry) == ["obsid:700701", "step:average", "run:run1", "stage:run1/avg"]
    # an unnamed output takes the observation from the set
    plain = output_entry("file:///x/out.MS.tar", token=token, fields=fields)
    assert plain.obsid == 999 and plain.subband is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("110..130MHz", (110e6, 130e6)),
        ("110-130 MHz", (110e6, 130e6)),
        ("110..130", (110e6, 130e6)),
        ("120MHz", (120e6, 120e6)),
        ("150..", (150e6, None)),
        ("..130", (None, 130e6)),
        ("0.11..0.13GHz", (110e6, 130e6)),
        ("139648437.5..139843750hz", (139648437.5, 139843750.0)),
    ],
)
def test_frequency_ranges(text: str, expected: tuple[float | None, float | None]) -> None:
    assert parse_frequency_range(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "..", "abc", "130..110MHz", "110..130 parsecs"])
def test_frequency_range_mistakes_are_one_line(text: str) -> None:
    with pytest.raises(InputError, match="--freq"):
        parse_frequency_range(text)


def entry(**fields: object) -> DatasetEntry:
    return DatasetEntry.model_validate({"url": "file:///x", **fields})


def test_query_keys_pick_the_most_selective_index() -> None:
    assert Query().key() is None
    assert Query(freq_low_hz=1.0).key() is None
    assert Query(step="avg").key() == "step:avg"
    assert Query(step="avg", pipeline="r").key() == "run:r"
    assert Query(step="avg", pipeline="r", obsid=7).key() == "obsid:7"
    assert Query(pipeline="r", stage="s", obsid=7).key() == "stage:r/s"


def test_query_matches_every_given_field() -> None:
    sb = entry(obsid=7, step="avg", pipeline="r", stage="s", frequency_hz=120e6)
    assert Query().matches(sb)
    assert Query(obsid=7, step="avg", pipeline="r", stage="s").matches(sb)
    assert not Query(obsid=8).matches(sb)
    assert not Query(stage="t").matches(sb)
    assert Query(freq_low_hz=120e6, freq_high_hz=120e6).matches(sb)  # ends included
    assert not Query(freq_low_hz=121e6).matches(sb)
    assert not Query(freq_high_hz=119e6).matches(sb)
    assert not Query(freq_low_hz=1.0).matches(entry(obsid=7))  # frequency unknown
    assert Query(obsid=7, freq_low_hz=110e6, freq_high_hz=130e6).describe() == (
        "obsid=7 110..130 MHz"
    )


def test_quality_rows_in_frequency_order_with_bad_ones_marked() -> None:
    dataset = Dataset(
        entries=[
            entry(obsid=1, subband=102, frequency_hz=102.0, flagged_fraction=0.9),
            entry(obsid=1, subband=100, frequency_hz=100.0, flagged_fraction=0.1),
            entry(obsid=1, subband=101, frequency_hz=101.0),
            entry(obsid=1, subband=103, frequency_hz=103.0, flagged_fraction=0.5),
        ]
    )
    rows = quality_rows(dataset, threshold=0.5)
    assert [r.subband for r in rows] == [100, 101, 102, 103]
    assert [r.bad for r in rows] == [False, False, True, False]  # 0.5 is not above 0.5
    assert [r.bad for r in quality_rows(dataset, threshold=0.05)] == [True, False, True, True]


def test_bars_and_thresholds() -> None:
    assert bar(None) == ""
    assert bar(0.0) == " " * 20
    assert bar(1.0) == "█" * 20
    assert bar(0.5, width=4) == "██  "
    assert bar(0.5 + 1 / 32, width=4) == "██▏ "
    assert parse_threshold("50%") == 0.5 and parse_threshold("0.3") == 0.3
    for bad in ("150%", "-1", "lots"):
        with pytest.raises(InputError, match="--threshold"):
            parse_threshold(bad)


def test_flag_chunks_all_within_the_budget_else_evenly_spaced() -> None:
    # 100 rows of 64 cells, chunks of 10 rows: all ten when the budget holds the column
    assert flag_chunks(100, 64, budget_cells=6400, chunk_cells=640) == list(range(0, 100, 10))
    sample = flag_chunks(100, 64, budget_cells=3 * 640, chunk_cells=640)
    assert sample == [0, 30, 60]  # three chunks, spread over the rows (the time range)
    assert flag_chunks(5, 64, budget_cells=1, chunk_cells=1) == [0]  # at least one row
