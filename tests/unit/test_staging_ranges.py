"""LEDAMA-style ranges: ``1..3`` = ``1-3`` = ``1,2,3``; ``0..6..2`` = ``0,2,4,6``."""

from __future__ import annotations

import pytest

from gridlrt.errors import InputError
from gridlrt.staging.ranges import format_ranges, parse_ranges


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", [7]),
        ("1..3", [1, 2, 3]),
        ("1-3", [1, 2, 3]),
        ("1,2,3", [1, 2, 3]),
        ("0..6..2", [0, 2, 4, 6]),
        ("0..7..2", [0, 2, 4, 6]),
        ("1-3,7", [1, 2, 3, 7]),
        (" 1-3 , 7 ", [1, 2, 3, 7]),
        ("5,1..2,2", [1, 2, 5]),
        ("3..3", [3]),
    ],
)
def test_parse(text: str, expected: list[int]) -> None:
    assert parse_ranges(text) == expected


def test_full_lofar_band_every_second_subband() -> None:
    values = parse_ranges("0..243..2")
    assert len(values) == 122
    assert values[:3] == [0, 2, 4] and values[-1] == 242


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty range"),
        ("  ", "empty range"),
        ("a", "'a' is not N"),
        ("1..", "'1..' is not N"),
        ("1,,2", "'' is not N"),
        ("-3", "'-3' is not N"),
        ("1...3", "is not N"),
        ("5..3", "runs backwards; write 3..5"),
        ("0..6..0", "step of at least 1"),
        ("0..100000000", "more than 1,000,000 numbers"),
    ],
)
def test_garbage_is_refused_naming_the_item(text: str, fragment: str) -> None:
    with pytest.raises(InputError) as err:
        parse_ranges(text)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ([], ""),
        ([4], "4"),
        ([1, 2], "1,2"),
        ([0, 1, 2, 3, 7], "0..3,7"),
        ([10, 3, 2, 1, 11, 12, 20], "1..3,10..12,20"),
    ],
)
def test_format_round_trips(values: list[int], text: str) -> None:
    assert format_ranges(values) == text
    if values:
        assert parse_ranges(text) == sorted(set(values))
