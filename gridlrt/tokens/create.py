"""From an inputs file to tokens: pure functions, no pool access.

An inputs file has one input per line (an SRM URL, any URL, or a path); blank lines and ``#``
comments are ignored. Token ids are readable and stable — ``<step>_<name>`` where the name
comes from the LOFAR file name (``L229507_SB100`` from
``.../L229507_SB100_uv.dppp.MS_3d78b8f1.tar``) or else from the file name — so creating the
same tokens twice is a no-op.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gridlrt.errors import InputError
from gridlrt.lofar_names import basename, short_name
from gridlrt.tokens.model import Token, new_token

RESERVED_FIELDS = frozenset(Token.model_fields) | {"_id", "_rev", "_attachments"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def read_inputs(path: Path) -> list[str]:
    """Inputs from a file; :class:`InputError` naming the file if it is unreadable or empty."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read inputs ({exc})") from exc
    inputs = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            inputs.append(line)
    if not inputs:
        raise InputError(f"{path}: no inputs (one URL or path per line)")
    return inputs


def input_name(item: str) -> str:
    """A short readable name for one input: ``L229507_SB100`` or the sanitised file name."""
    base = basename(item) or item
    return short_name(item) or _UNSAFE.sub("_", base).strip("_") or "input"


def parse_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` options; VALUE is JSON when it parses (numbers, lists), else a string."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--field {pair!r}: expected KEY=VALUE, e.g. --field calibrator=3C196")
        if key in RESERVED_FIELDS:
            raise InputError(f"--field {key}: reserved token field; choose another name")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return fields


def make_tokens(
    inputs: Sequence[str],
    *,
    step: str,
    per_token: int = 1,
    fields: dict[str, Any] | None = None,
    priority: int = 0,
) -> list[Token]:
    """Group ``inputs`` ``per_token`` at a time into todo tokens for ``step``."""
    if per_token < 1:
        raise InputError(f"--per-token must be at least 1, not {per_token}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", step):
        raise InputError(f"step name {step!r}: use letters, digits, '.', '_' or '-'")
    tokens: list[Token] = []
    seen: dict[str, int] = {}
    for start in range(0, len(inputs), per_token):
        group = list(inputs[start : start + per_token])
        first, last = input_name(group[0]), input_name(group[-1])
        name = first if len(group) == 1 or first == last else f"{first}..{last}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        tokens.append(
            new_token(
                f"{step}_{name}",
                inputs=group[0] if per_token == 1 else group,
                step=step,
                priority=priority,
                fields=fields,
            )
        )
    return tokens
