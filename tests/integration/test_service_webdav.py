"""Smoke tests of the ``webdav`` fixture, all through the real gfal2 (http plugin / davix)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from uuid import uuid4

import gfal2
import pytest

from tests.services.webdav import WebDAV

SIZE = 4 * 1024 * 1024 + 123  # a few MB, not a multiple of any buffer size


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, size: int = SIZE) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def copy(ctx: gfal2.Gfal2Context, src: str, dst: str) -> None:
    params = ctx.transfer_parameters()
    params.overwrite = True
    params.create_parent = True
    ctx.filecopy(params, src, dst)


def remote_url(webdav: WebDAV, scheme: str, rel: str) -> str:
    return {"dav": webdav.dav_url, "davs": webdav.davs_url}[scheme](rel)


@pytest.mark.parametrize("scheme", ["dav", "davs"])
def test_round_trip(webdav: WebDAV, tmp_path: Path, scheme: str) -> None:
    ctx = webdav.gfal2_context()
    source = random_file(tmp_path / "source.bin")
    rel = f"smoke/{scheme}-{uuid4().hex[:8]}/deeper/data.bin"  # parents do not exist yet
    url = remote_url(webdav, scheme, rel)

    copy(ctx, source.as_uri(), url)
    assert webdav.path(url) == webdav.path(rel)
    assert sha256(webdav.path(rel)) == sha256(source)
    assert ctx.stat(url).st_size == SIZE
    assert ctx.listdir(url.rsplit("/", 1)[0]) == ["data.bin"]

    back = tmp_path / "back.bin"
    copy(ctx, url, back.as_uri())
    assert sha256(back) == sha256(source)

    # overwrite=True replaces an existing remote file with different content
    other = random_file(tmp_path / "other.bin", SIZE // 2)
    copy(ctx, other.as_uri(), url)
    assert ctx.stat(url).st_size == SIZE // 2
    assert sha256(webdav.path(rel)) == sha256(other)


def test_davs_verifies_the_certificate(
    webdav: WebDAV, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the fixture's CA directory the https server is *not* trusted (no INSECURE)."""
    empty = tmp_path / "no-ca"
    empty.mkdir()
    monkeypatch.setenv("X509_CERT_DIR", str(empty))
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    monkeypatch.delenv("SSL_CERT_FILE")  # the system bundle, without the fixture's certificate
    ctx = gfal2.creat_context()
    assert ctx.get_opt_boolean("HTTP PLUGIN", "INSECURE") is False
    with pytest.raises(gfal2.GError, match="certificate verification failed"):
        ctx.stat(webdav.davs_url())


def test_missing_file_is_enoent(webdav: WebDAV, tmp_path: Path) -> None:
    ctx = webdav.gfal2_context()
    url = webdav.dav_url(f"smoke/missing-{uuid4().hex[:8]}.bin")
    with pytest.raises(gfal2.GError) as stat_error:
        ctx.stat(url)
    assert stat_error.value.code == errno.ENOENT
    with pytest.raises(gfal2.GError) as copy_error:
        copy(ctx, url, (tmp_path / "never.bin").as_uri())
    assert copy_error.value.code == errno.ENOENT
    assert not (tmp_path / "never.bin").exists()


def test_restart_keeps_files(webdav: WebDAV, tmp_path: Path) -> None:
    ctx = webdav.gfal2_context()
    source = random_file(tmp_path / "source.bin")
    rel = f"smoke/restart-{uuid4().hex[:8]}/data.bin"
    copy(ctx, source.as_uri(), webdav.dav_url(rel))
    old_ports = (webdav.port, webdav.tls_port)

    webdav.stop()
    assert not webdav.running
    with pytest.raises(gfal2.GError):
        ctx.stat(webdav.dav_url(rel))
    webdav.start()
    assert webdav.running
    assert (webdav.port, webdav.tls_port) == old_ports

    webdav.restart(kill=True)  # SIGKILL, like a crash
    webdav.restart()
    assert webdav.running
    for url in (webdav.dav_url(rel), webdav.davs_url(rel)):
        assert ctx.stat(url).st_size == SIZE
        back = tmp_path / f"back-{url.split(':', 1)[0]}.bin"
        copy(ctx, url, back.as_uri())
        assert sha256(back) == sha256(source)

    again = random_file(tmp_path / "again.bin")
    copy(ctx, again.as_uri(), webdav.davs_url(rel))
    assert sha256(webdav.path(rel)) == sha256(again)
