"""Strict step templates: unknown placeholders, attribute/index access and conversions are
refused with a message naming what is known."""

from __future__ import annotations

import pytest

from gridlrt.errors import InputError
from gridlrt.templating import placeholders, render


def test_strict_templates() -> None:
    fields = {"msin": "in.MS", "subband": 7}
    assert (
        render("msin={msin}\nsb={subband:03d}\nlit={{x}}", fields) == "msin=in.MS\nsb=007\nlit={x}"
    )
    assert placeholders("{a} {b} {a}") == ["a", "b"]
    with pytest.raises(InputError, match=r"unknown placeholder \{msout\} \(known: msin, subband\)"):
        render("msout={msout}", fields, where="average.parset")
    for bad in ("{msin.__class__}", "{msin[0]}", "{msin!r}"):
        with pytest.raises(InputError, match="not allowed"):
            render(bad, fields)
    with pytest.raises(InputError, match="literal braces"):
        render("steps=[avg] {", fields)


# A payload whose tree leaves its process group and session: a setsid'd grandchild that
# keeps appending to a file, plus an ordinary background child.
