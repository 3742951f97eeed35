"""From an inputs file to tokens in the pool.

The pure part (no pool access): :func:`read_inputs`, :func:`parse_fields`, :func:`make_tokens`.
:func:`create_tokens` is ``gridlrt tokens create`` as a library call: read and check the
inputs, make the tokens, check the first against its step (through a caller's
:data:`TokenCheck`: the tokens room does not know how a step runs), read the attachments,
then create the tokens and attach the files to the new ones - or only say what it would do.

An inputs file has one input per line (an SRM URL, any URL, or a path); blank lines and ``#``
comments are ignored. Token ids are readable and stable — ``<step>_<name>`` where the name
comes from the LOFAR file name (``L229507_SB100`` from
``.../L229507_SB100_uv.dppp.MS_3d78b8f1.tar``) or else from the file name — so creating the
same tokens twice is a no-op.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gridlrt.config import Settings
from gridlrt.errors import InputError
from gridlrt.lofar_names import basename, short_name
from gridlrt.staging.lists import check_list_file
from gridlrt.tokens import open_pool
from gridlrt.tokens.model import STEP_NAME, Token, new_token

log = logging.getLogger(__name__)

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
    if not STEP_NAME.fullmatch(step):
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


TokenCheck = Callable[[Token, Settings], None]
"""Checks a new token against its step before anything is created (e.g. fills the step's
templates from it); raises :class:`InputError` naming the problem."""


class CreatedTokens(BaseModel):
    """What :func:`create_tokens` made (or, for a dry run, would make)."""

    step: str
    tokens: list[Token]
    """Every token made from the inputs (new or not)."""
    attachments: list[Path] = []
    """Files attached to every new token."""
    dry_run: bool = False
    pool_url: str | None = None
    """The pool written to; None for a dry run."""
    created: list[str] = []
    """Ids of the tokens that are new in the pool."""
    duplicates: list[str] = []
    """Ids that were already there (left as they are, no attachment added)."""


def read_attachment(path: Path) -> bytes:
    """The bytes of an ``--attach`` file; :class:`InputError` naming it when unreadable."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"--attach {path}: {exc.strerror}") from exc


def create_tokens(
    settings: Settings | Callable[[], Settings],
    inputs: Path,
    *,
    step: str,
    per_token: int = 1,
    fields: Sequence[str] = (),
    priority: int = 0,
    attach: Sequence[Path] = (),
    check: TokenCheck | None = None,
    dry_run: bool = False,
) -> CreatedTokens:
    """Make one todo token of ``step`` per ``per_token`` inputs of the file ``inputs`` and
    create them in the pool of ``settings``; then attach every file of ``attach`` to each
    token that is new. Idempotent: tokens already there are reported as duplicates.

    ``fields`` are ``KEY=VALUE`` pairs as ``--field`` takes them (see :func:`parse_fields`).
    ``settings`` may be a function giving them: it is called after the inputs were read and
    checked, so a problem with the inputs is reported first. ``check`` sees the first token
    and the settings before anything is read or written. ``dry_run``: do everything but
    touch the pool (attachments are still read, so an unreadable one fails now).
    """
    tokens = make_tokens(
        read_inputs(inputs),
        step=step,
        per_token=per_token,
        fields=parse_fields(fields),
        priority=priority,
    )
    check_list_file(inputs)
    chosen = settings if isinstance(settings, Settings) else settings()
    if tokens and check is not None:
        check(tokens[0], chosen)
    attachments = [(path, read_attachment(path)) for path in attach]
    planned = CreatedTokens(step=step, tokens=tokens, attachments=[p for p, _ in attachments])
    if dry_run:
        return planned.model_copy(update={"dry_run": True})
    with open_pool(chosen) as pool:
        if chosen.pool_kind == "embedded":
            pool.init()  # the default pool needs no separate set-up step
        result = pool.create(tokens)
        for token_id in result.created:
            for path, data in attachments:
                pool.attach(token_id, path.name, data)
        url = pool.url
    log.info("created %d token(s) for step %s in %s", len(result.created), step, url)
    return planned.model_copy(
        update={"pool_url": url, "created": result.created, "duplicates": result.duplicates}
    )
