"""Test inputs as the LTA delivers them: measurement sets packed as ``<name>.MS_<hash>.tar``
and uploaded to the WebDAV fixture."""

from __future__ import annotations

import tarfile
from pathlib import Path

from gridlrt.storage import Storage
from tests.services.webdav import WebDAV


def lta_tarball(ms: Path, into: Path, suffix: str = "_3d78b8f1") -> Path:
    """The measurement set packed as the LTA ships it: ``<name>.MS<_hash>.tar``."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{ms.name}{suffix}.tar"
    with tarfile.open(target, "w") as tar:
        tar.add(ms, arcname=ms.name)
    return target


def put_input(webdav: WebDAV, area: str, ms: Path, tmp_path: Path) -> str:
    """Upload ``ms`` as an LTA tarball to ``<area>/lta/`` on WebDAV; return its dav:// URL."""
    return put_tarball(webdav, area, lta_tarball(ms, tmp_path / "lta"))


def put_tarball(webdav: WebDAV, area: str, tarball: Path) -> str:
    """Upload an LTA tarball as it is to ``<area>/lta/`` on WebDAV; return its dav:// URL."""
    url = webdav.dav_url(f"{area}/lta/{tarball.name}")
    Storage().copy(tarball.as_uri(), url)
    return url
