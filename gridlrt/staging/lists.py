"""SRM lists: reading the ``srm.txt`` a user downloads from the LTA web catalogue.

Owns the line rules and their line-numbered errors; parsing is a pure function of the text
(:func:`parse_srm_text`), reading adds only the file access (:func:`read_srm_list`).

Rules, per line (``\\n`` or Windows ``\\r\\n`` endings, an optional UTF-8 BOM):

* blank lines and lines starting with ``#`` are ignored;
* otherwise the first ``srm://`` URL on the line is taken; junk around it (quotes, an HTML
  ``href``, a leading number, a trailing comma) is tolerated;
* a line without any ``srm://`` URL, or with a broken one, is a problem reported as
  ``srm.txt:17: not an SRM URL: <the line>``; so is a line with a NUL byte or another
  control character (a damaged download);
* a file already listed (same canonical SRM URL, whichever form) is dropped with a warning.

:func:`read_srm_list` refuses a file with problems (one line naming the first bad line and
how many more there are) or without any SRM URL; :func:`parse_srm_text` returns the problems
for callers that want to show them all.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import BaseModel

from gridlrt.errors import InputError
from gridlrt.staging.surl import SURL, parse_surl

log = logging.getLogger(__name__)

_SRM_IN_LINE = re.compile(r"srm://[^\s\"'<>|,;()\[\]{}`]*", re.IGNORECASE)
_ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>|,;()\[\]{}`]+")


class LineProblem(BaseModel):
    """A line that is not blank, not a comment, and holds no usable SRM URL."""

    line: int
    message: str

    def render(self, source: str) -> str:
        return f"{source}:{self.line}: {self.message}"


class Duplicate(BaseModel):
    """A line naming a file an earlier line already named."""

    line: int
    first_line: int
    url: str


class SrmList(BaseModel):
    """The SURLs of one list, in file order, with the line each came from."""

    source: str
    surls: list[SURL]
    lines: list[int]
    duplicates: list[Duplicate] = []
    problems: list[LineProblem] = []

    def raise_for_problems(self) -> None:
        """:class:`InputError` naming the first bad line (and how many more there are)."""
        if self.problems:
            first = self.problems[0].render(self.source)
            more = len(self.problems) - 1
            raise InputError(first + (f" (and {more} more bad line(s))" if more else ""))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def control_character(line: str) -> str | None:
    """``'NUL byte (\\x00) at column 12'`` when ``line`` holds a control character (not a tab),
    else None. Such a line is a damaged download, never a file name."""
    found = _CONTROL.search(line)
    if found is None:
        return None
    char = found.group(0)
    name = "NUL byte" if char == "\x00" else "control character"
    return f"{name} ({char!r}) at column {found.start() + 1}"


def check_list_file(path: Path) -> None:
    """:class:`InputError` ``path:N: ...`` naming the first line of a list file (srm.txt or
    any list of inputs) that holds a NUL byte or another control character."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        problem = control_character(line)
        if problem is not None:
            raise InputError(
                f"{path}:{number}: {problem}; the file is damaged, download it again "
                "or remove that line"
            )


def parse_srm_text(text: str, source: str = "srm.txt") -> SrmList:
    """Parse the text of an SRM list; ``source`` names it in messages (``srm.txt:17: ...``)."""
    surls: list[SURL] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    duplicates: list[Duplicate] = []
    problems: list[LineProblem] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        damaged = control_character(line)
        if damaged is not None:
            problems.append(LineProblem(line=number, message=f"{damaged}: damaged line"))
            continue
        found = _SRM_IN_LINE.search(line)
        try:
            if found is None:
                raise InputError(f"not an SRM URL: {_shown(line)}")
            surl = parse_surl(found.group(0).rstrip(".:"))
        except InputError as exc:
            problems.append(LineProblem(line=number, message=str(exc)))
            continue
        if surl.url in seen:
            duplicates.append(Duplicate(line=number, first_line=seen[surl.url], url=surl.url))
            log.warning(
                "%s:%d: duplicate of line %d, dropped: %s", source, number, seen[surl.url], surl.url
            )
            continue
        seen[surl.url] = number
        surls.append(surl)
        lines.append(number)
    return SrmList(
        source=source, surls=surls, lines=lines, duplicates=duplicates, problems=problems
    )


def _shown(line: str) -> str:
    return line if len(line) <= 160 else line[:157] + "..."


def read_srm_list(path: Path, *, strict: bool = True) -> SrmList:
    """Read an SRM list file. Strict (the default): any bad line or no SRM URL at all is an
    :class:`InputError`; otherwise problems are returned in :attr:`SrmList.problems`."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{source}: is a directory, not an SRM list") from None
    except UnicodeDecodeError:
        raise InputError(f"{source}: not a text file (expected one srm:// URL per line)") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read ({exc.strerror})") from None
    result = parse_srm_text(text, source)
    if strict:
        result.raise_for_problems()
        if not result.surls:
            raise InputError(
                f"{source}: no SRM URLs (expected one srm:// URL per line, as the LTA "
                "catalogue writes them)"
            )
    return result


def read_url_list(path: Path) -> list[str]:
    """A list of URLs of any scheme (``file://``, ``dav://``, ``gsiftp://`` ...), one per line,
    with the same comment, blank-line and duplicate rules; ``path:N: not a URL: ...`` for a
    line without ``scheme://``. For local and test data that is not on an SRM site."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot read ({exc})") from None
    urls: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = _ANY_URL.search(line)
        if found is None:
            raise InputError(f"{source}:{number}: not a URL: {_shown(line)}")
        url = found.group(0)
        if url in seen:
            log.warning("%s:%d: duplicate, dropped: %s", source, number, url)
            continue
        seen.add(url)
        urls.append(url)
    if not urls:
        raise InputError(f"{source}: no URLs (expected one URL per line)")
    return urls
