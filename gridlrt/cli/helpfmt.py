"""How option values are named in ``--help``: as Python command-line users expect.

Newer typer versions (0.2x) label every option in the rich help panel with its Python type in
angle brackets, flags included: ``--dry-run <bool>``, ``--help <bool>``, ``--status
<list[str]>``. That reads as if a flag wanted a value. :func:`use_plain_metavars` makes the
panel say what click and argparse users know: nothing after a flag or a counter (``-v``),
``TEXT``, ``INTEGER``, ``FLOAT``, ``PATH`` after an option that takes a value, the choices
as ``[a|b|c]``, and an explicit ``metavar=`` wins. It is called by
:func:`gridlrt.cli.app.main` before the command line is parsed, never at import.
"""

from __future__ import annotations

from typing import Any

import typer.core

_installed = False


_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}


def plain_label(typed: str) -> str:
    """``<int>`` -> ``INTEGER``, ``<list[str]>`` -> ``TEXT``, ``<a|b>`` -> ``[a|b]``,
    ``<file>``/``<directory>``/``<path>`` -> ``PATH``: typer's label as click would print it."""
    label = typed.strip("<>").removesuffix(" range")  # the range itself is shown beside it
    while label.startswith("list[") and label.endswith("]"):  # repeatable: one value each
        label = label[5:-1]
    if label in ("file", "directory", "path", "Path"):
        return "PATH"
    if "|" in label:
        return f"[{label}]"
    return _NAMES.get(label, label.upper())


def option_metavar(option: Any, ctx: Any, typed: Any) -> str | None:
    """The label shown after ``option`` in help, or None for flags and counters; ``typed`` is
    typer's own ``display_type`` (bound to the option)."""
    if option.metavar is not None:
        return str(option.metavar)
    if getattr(option, "is_flag", False) or getattr(option, "count", False):
        return None
    return plain_label(str(typed(ctx)))


def use_plain_metavars() -> None:
    """Make typer's help panels use :func:`option_metavar` (idempotent)."""
    global _installed
    if _installed:
        return

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        return option_metavar(self, ctx, self.display_type)

    typer.core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    _installed = True
