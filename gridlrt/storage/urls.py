"""URL handling for storage: which schemes gridlrt passes to gfal2, local paths as file://
URLs, joining, parents and the temporary names atomic uploads are written under.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gridlrt.config import redact_url
from gridlrt.errors import UnsupportedProtocol

#: Schemes gridlrt hands to gfal2 unchanged (the plugin does the rest).
SCHEMES = frozenset({"file", "dav", "davs", "http", "https", "srm", "gsiftp", "root", "xroot"})
#: Schemes the local test set-up can really exercise; the others are passed through.
TESTED_SCHEMES = frozenset({"file", "dav", "davs", "http", "https"})
TEMP_MARKER = ".part-"


def to_url(location: str | os.PathLike[str]) -> str:
    """``location`` as a URL gfal2 takes: a local path becomes ``file:///abs``.

    gfal2's file plugin takes the path literally (``%20`` is not a space), so ``file://``
    URLs are percent-decoded (``Path.as_uri()`` encodes) and ``file://localhost/`` loses
    its host. Other URLs pass unchanged.
    """
    text = os.fspath(location)
    if "://" not in text:
        return "file://" + str(Path(text).expanduser().absolute())
    if text[:7].lower() == "file://":
        rest = text[7:]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest.startswith("/"):
            raise UnsupportedProtocol(f"{text}: a file:// URL needs an absolute path (file:///...)")
        return "file://" + (unquote(rest) if "%" in rest else rest)
    return text


def scheme_of(location: str | os.PathLike[str]) -> str:
    """The scheme of ``location`` as :func:`to_url` makes it (a local path is ``file``),
    checked against :data:`SCHEMES`: anything else raises :class:`UnsupportedProtocol`."""
    url = to_url(location)
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        shown = f"{scheme}://" if scheme else "no scheme"
        raise UnsupportedProtocol(f"{redact_url(url)}: {shown} is not supported (use {known})")
    return scheme


def local_path(url: str) -> Path | None:
    """The local path of a ``file://`` URL (or a plain path), else None."""
    text = to_url(url)
    return Path(text[7:]) if text.startswith("file://") else None


def endpoint(url: str) -> str:
    """``scheme://host:port``: what checksum support and rename support are remembered by."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}"


def join(base: str, *names: str) -> str:
    """``base`` with path components appended (``/`` between, never doubled)."""
    out = base.rstrip("/")
    for name in names:
        out = f"{out}/{name.strip('/')}"
    return out


def basename(url: str) -> str:
    """The last path component of ``url``."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def temp_url(url: str) -> str | None:
    """A fresh temporary name next to ``url`` (``<url>.part-<hex>``), or None when the URL's
    shape does not allow one (a query string that is not the SRM ``?SFN=`` form)."""
    parts = urlsplit(url)
    if parts.fragment or (parts.query and "SFN=" not in parts.query):
        return None
    return f"{url}{TEMP_MARKER}{secrets.token_hex(4)}"


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_url` (a half-written upload, never a result)."""
    head, marker, tail = name.rpartition(TEMP_MARKER)
    return (
        bool(head)
        and bool(marker)
        and len(tail) == 8
        and all(c in "0123456789abcdef" for c in tail)
    )
