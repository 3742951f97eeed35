"""Strict templates: ``{name}`` placeholders filled from a mapping, or an error before anything
runs — never a silently empty value.

Used for DP3 parset templates, command templates and output URL templates. Placeholders are
plain names with an optional format spec (``{subband:03d}``); attribute and index access
(``{a.b}``, ``{a[0]}``) is refused, so a template cannot reach into Python objects. Literal
braces are written ``{{`` and ``}}``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from gridlrt.errors import InputError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Fields every token's plan defines (gridlrt.worker.plan): an extra input or a pipeline stage
# may not take one of these names, or its ``{name}`` would be ambiguous.
PLAN_FIELDS = frozenset(
    {
        "token_id",
        "step",
        "input",
        "inputs",
        "local_inputs",
        "obsid",
        "sap",
        "subband",
        "msin",
        "msout",
        "workdir",
        "cores",
        "root",
        "pipeline",
        "stage",
        "group_label",
        "aoflagger_strategy",
        "python",
        "name",
    }
)


def placeholders(template: str, *, where: str = "template") -> list[str]:
    """The placeholder names in ``template``, in order, each once."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(f"{where}: {exc} (write literal braces as {{{{ and }}}})") from exc
    for _, name, _, conversion in parsed:
        if name is None:
            continue
        if not _NAME.fullmatch(name) or conversion:
            raise InputError(
                f"{where}: placeholder {{{name}}} is not allowed; use plain names like {{msin}}"
            )
        if name not in names:
            names.append(name)
    return names


def check(template: str, known: set[str] | Mapping[str, Any], *, where: str = "template") -> None:
    """Raise :class:`InputError` naming every unknown placeholder and the known ones."""
    unknown = [n for n in placeholders(template, where=where) if n not in known]
    if unknown:
        names = ", ".join(f"{{{n}}}" for n in unknown)
        available = ", ".join(sorted(known)) or "none"
        raise InputError(f"{where}: unknown placeholder {names} (known: {available})")


def render(template: str, fields: Mapping[str, Any], *, where: str = "template") -> str:
    """``template`` with its placeholders replaced from ``fields`` (strictly)."""
    check(template, fields, where=where)
    try:
        return template.format_map(dict(fields))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where}: {exc}") from exc
