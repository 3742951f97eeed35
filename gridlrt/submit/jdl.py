"""JDL (ClassAd) text for DIRAC and gLite: quoting values on the way in, parsing and checking
the rendered description on the way out, before anything is submitted.

Pure functions. Values are quoted by :func:`jdl_string` / :func:`jdl_list`, which refuse what
JDL strings cannot hold safely (quotes, backslashes, control characters). :func:`check_jdl`
parses the rendered text back and checks the attributes each flavour requires, the parametric
fields, and that every input-sandbox file exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from gridlrt.errors import InputError

Flavour = Literal["dirac", "glite"]

REQUIRED: dict[str, tuple[str, ...]] = {
    "dirac": ("Executable", "Arguments", "StdOutput", "StdError", "InputSandbox", "JobName"),
    "glite": ("Executable", "Arguments", "StdOutput", "StdError", "InputSandbox", "JobType"),
}
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>(?://|\#)[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*")
      | (?P<open>[\[{])
      | (?P<close>[\]}])
      | (?P<comma>,)
      | (?P<semi>;)
      | (?P<eq>=(?!=))
      | (?P<word>[^\s"\[\]{},;=]+|==|=)
    )""",
    re.VERBOSE,
)


def jdl_string(value: str) -> str:
    """``value`` as a JDL string literal; InputError for quotes, backslashes, control chars."""
    if _UNSAFE.search(value):
        raise InputError(
            f"{value!r} cannot go into a JDL string (no quotes, backslashes or newlines)"
        )
    return f'"{value}"'


def jdl_list(values: Iterable[str]) -> str:
    """A JDL list of strings: ``{"a", "b"}``."""
    return "{" + ", ".join(jdl_string(v) for v in values) + "}"


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            line = text.count("\n", 0, pos) + 1
            raise InputError(f"JDL line {line}: cannot parse {text[pos : pos + 20].strip()!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind != "comment":
            out.append((kind, match.group(kind)))
    return out


def _value(tokens: list[tuple[str, str]]) -> Any:
    """A statement's value: string, int, bool, list of those, or an expression (raw text)."""
    if len(tokens) == 1:
        kind, text = tokens[0]
        if kind == "string":
            return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
    if tokens and tokens[0] == ("open", "{") and tokens[-1] == ("close", "}"):
        items: list[Any] = []
        inner = tokens[1:-1]
        for i, token in enumerate(inner):
            if i % 2 == 1:
                if token[0] != "comma":
                    raise InputError("JDL list items must be separated by commas")
                continue
            items.append(_value([token]))
        return items
    if not tokens:
        raise InputError("JDL attribute without a value")
    return " ".join(text for _, text in tokens)  # an expression, e.g. Requirements


def parse_jdl(text: str) -> dict[str, Any]:
    """``{attribute: value}`` of a JDL text (``[ ... ]`` optional); InputError if malformed.

    Keys keep their spelling; lookups should go through :func:`attribute`.
    """
    tokens = _tokens(text)
    if tokens and tokens[0] == ("open", "["):
        if tokens[-1] != ("close", "]"):
            raise InputError("JDL starts with '[' but does not end with ']'")
        tokens = tokens[1:-1]
    result: dict[str, Any] = {}
    seen: set[str] = set()
    statement: list[tuple[str, str]] = []
    depth = 0
    for token in tokens:
        if token[0] == "open":
            depth += 1
        elif token[0] == "close":
            depth -= 1
            if depth < 0:
                raise InputError(f"JDL: unbalanced {token[1]!r}")
        if token[0] == "semi" and depth == 0:
            if len(statement) < 3 or statement[0][0] != "word" or statement[1][0] != "eq":
                shown = " ".join(t for _, t in statement)[:40]
                raise InputError(f"JDL: expected 'Name = value;' but found {shown!r}")
            name = statement[0][1]
            if name.lower() in seen:
                raise InputError(f"JDL: attribute {name} given twice")
            seen.add(name.lower())
            result[name] = _value(statement[2:])
            statement = []
        else:
            statement.append(token)
    if depth != 0:
        raise InputError("JDL: unbalanced braces")
    if statement:
        shown = " ".join(t for _, t in statement)[:40]
        raise InputError(f"JDL: statement {shown!r} does not end with ';'")
    return result


def attribute(jdl: dict[str, Any], name: str) -> Any:
    """A JDL attribute, case-insensitively; None when absent."""
    lowered = name.lower()
    return next((v for k, v in jdl.items() if k.lower() == lowered), None)


def check_jdl(
    text: str, flavour: Flavour, *, base: Path | None = None, check_files: bool = True
) -> dict[str, Any]:
    """Parse ``text`` and check it for ``flavour``; return the attributes.

    Checks: required attributes present; parametric fields consistent; Arguments a string;
    every InputSandbox entry an existing file (relative entries resolved against ``base``;
    skipped with ``check_files=False``, e.g. for a dry run before the files are written);
    the Executable shipped in the InputSandbox.
    """
    jdl = parse_jdl(text)
    missing = [name for name in REQUIRED[flavour] if attribute(jdl, name) is None]
    if missing:
        raise InputError(f"{flavour} JDL lacks {', '.join(missing)}")
    if not isinstance(attribute(jdl, "Arguments"), str):
        raise InputError(f"{flavour} JDL: Arguments must be one string")
    parameters = attribute(jdl, "Parameters")
    parametric = str(attribute(jdl, "JobType")).lower() == "parametric"
    if flavour == "glite" and parametric and (not isinstance(parameters, int) or parameters < 1):
        raise InputError("gLite parametric JDL needs Parameters = N (N >= 1)")
    if isinstance(parameters, int):
        for name in ("ParameterStart", "ParameterStep"):
            if not isinstance(attribute(jdl, name), int):
                raise InputError(f"{flavour} JDL: Parameters = {parameters} needs {name} = N")
    sandbox = attribute(jdl, "InputSandbox")
    if not isinstance(sandbox, list) or not all(isinstance(s, str) for s in sandbox):
        raise InputError(f"{flavour} JDL: InputSandbox must be a list of strings")
    for entry in sandbox if check_files else []:
        path = Path(entry) if base is None or Path(entry).is_absolute() else base / entry
        if not path.is_file():
            raise InputError(f"{flavour} JDL: input sandbox file {entry} does not exist")
    executable = str(attribute(jdl, "Executable"))
    if "/" not in executable and executable not in {Path(s).name for s in sandbox}:
        raise InputError(f"{flavour} JDL: Executable {executable} is not in the InputSandbox")
    return jdl
