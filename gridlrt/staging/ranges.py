"""LEDAMA-style integer ranges, as LOFAR users write subband selections.

Owns parsing and formatting only (pure functions). Grammar, items separated by commas::

    7          one number
    1..3       1, 2, 3            (end inclusive)
    1-3        the same
    0..6..2    0, 2, 4, 6         (start..end..step; the end is included when the step hits it)
    1-3,7      1, 2, 3, 7

Whitespace around items is ignored. Numbers are non-negative; a range must not run backwards
and a step must be positive. Anything else is an :class:`~gridlrt.errors.InputError` that
names the offending item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gridlrt.errors import InputError

_ITEM = re.compile(r"(\d+)(?:(?:\.\.|-)(\d+)(?:\.\.(\d+))?)?")
#: The largest range a user can write (guards against ``0..999999999`` eating memory).
MAX_VALUES = 1_000_000


def parse_ranges(text: str) -> list[int]:
    """The sorted, distinct numbers ``text`` names, e.g. ``"0..6..2,9"`` -> ``[0, 2, 4, 6, 9]``."""
    if not text or not text.strip():
        raise InputError("empty range: write e.g. 0..243, 1-3,7 or 0..243..2")
    values: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        match = _ITEM.fullmatch(item)
        if not match:
            raise InputError(
                f"range {text!r}: {item!r} is not N, A..B, A-B or A..B..STEP "
                "(e.g. 0..243..2 or 1-3,7)"
            )
        start_text, end_text, step_text = match.groups()
        start = int(start_text)
        end = int(end_text) if end_text is not None else start
        step = int(step_text) if step_text is not None else 1
        if end < start:
            raise InputError(f"range {text!r}: {item!r} runs backwards; write {end}..{start}")
        if step < 1:
            raise InputError(f"range {text!r}: {item!r} needs a step of at least 1")
        if (end - start) // step + 1 + len(values) > MAX_VALUES:
            raise InputError(f"range {text!r}: more than {MAX_VALUES:,} numbers")
        values.update(range(start, end + 1, step))
    return sorted(values)


def format_ranges(values: Iterable[int]) -> str:
    """Compact text for numbers: ``[0, 1, 2, 3, 7]`` -> ``"0..3,7"``; ``[]`` -> ``""``.

    Runs of consecutive numbers become ``A..B``; the result parses back with
    :func:`parse_ranges` to the same set.
    """
    ordered = sorted(set(values))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{ordered[i]}..{ordered[j]}")
        else:
            parts.extend(str(v) for v in ordered[i : j + 1])
        i = j + 1
    return ",".join(parts)
