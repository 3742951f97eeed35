"""Output locations from URL templates: ``{root}/{obsid}/{step}/{name}`` filled from fields.

The renderer is strict: a placeholder without a field is an error that lists the known
fields (never a silently empty path component), and a value cannot smuggle in ``..``, an
absolute path, a query or control characters. A value may contain ``/`` only when its
placeholder says so (``{root}`` always may: it is a base URL; ``{name:path}`` allows a
relative sub-path). Values are percent-encoded where a URL path needs it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from urllib.parse import quote

from gridlrt.errors import InputError

#: Placeholders whose value is a base URL or path and is inserted as is.
URL_FIELDS = frozenset({"root", "storage_root", "sandbox_root"})
_FORMATTER = string.Formatter()


def template_fields(template: str) -> list[str]:
    """The placeholder names in ``template``, in order, without duplicates."""
    names: list[str] = []
    for name, spec in _parse(template):
        del spec
        if name not in names:
            names.append(name)
    return names


def _parse(template: str) -> list[tuple[str, str]]:
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise InputError(f"URL template {template!r}: {exc}") from exc
    found: list[tuple[str, str]] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise InputError(
                f"URL template {template!r}: placeholder {{{name}}} must be a plain name "
                "such as {obsid}"
            )
        if conversion:
            raise InputError(f"URL template {template!r}: {{{name}!{conversion}}} not allowed")
        if spec not in ("", "path"):
            raise InputError(
                f"URL template {template!r}: {{{name}:{spec}}}: the only format is ':path' "
                "(allow '/' in the value)"
            )
        found.append((name, spec))
    return found


def _safe_value(template: str, name: str, value: object, allow_slash: bool) -> str:
    text = str(value)
    where = f"URL template {template!r}: field {name}={text!r}"
    if not text:
        raise InputError(f"{where} is empty")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in text):
        raise InputError(f"{where} contains control characters")
    if name in URL_FIELDS:
        return text.rstrip("/")
    if "?" in text or "#" in text:
        raise InputError(f"{where} may not contain '?' or '#'")
    parts = text.split("/")
    if "/" in text and not allow_slash:
        raise InputError(f"{where} contains '/'; use {{{name}:path}} to allow sub-directories")
    if text.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InputError(f"{where} must be a relative path without '.', '..' or empty parts")
    return quote(text, safe="/@:+,=~-._")


def render_url(template: str, fields: Mapping[str, object]) -> str:
    """Fill ``template`` from ``fields``; every placeholder must have a non-empty value.

    >>> render_url("{root}/{obsid}/{step}/{name}",
    ...            {"root": "dav://host/lofar", "obsid": "L229507", "step": "avg",
    ...             "name": "L229507_SB100.MS.tar"})
    'dav://host/lofar/L229507/avg/L229507_SB100.MS.tar'
    """
    placeholders = _parse(template)
    missing = sorted({name for name, _ in placeholders if name not in fields})
    if missing:
        known = ", ".join(sorted(fields)) or "none"
        raise InputError(
            f"URL template {template!r}: no value for {', '.join('{' + m + '}' for m in missing)}"
            f" (known fields: {known})"
        )
    values = {
        name: _safe_value(template, name, fields[name], allow_slash=spec == "path")
        for name, spec in placeholders
    }
    out: list[str] = []
    for literal, name, _spec, _conversion in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return "".join(out)
