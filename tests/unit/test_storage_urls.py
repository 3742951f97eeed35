"""Storage without gfal2: how gfal2's errors become gridlrt's (the errno and message table)
and how output URLs are rendered from templates. Neither needs gfal2 to import."""

from __future__ import annotations

import errno

import pytest

from gridlrt.errors import (
    InputError,
    StorageError,
    StorageExists,
    StorageNotFound,
    StorageNotSupported,
    StoragePermissionDenied,
    StorageTimeout,
    StorageUnavailable,
)
from gridlrt.storage import render_url, template_fields
from gridlrt.storage.errors import describe, is_transient, storage_error


def test_error_mapping_table() -> None:
    cases = {
        errno.ENOENT: StorageNotFound,
        errno.EACCES: StoragePermissionDenied,
        errno.EPERM: StoragePermissionDenied,
        errno.ETIMEDOUT: StorageTimeout,
        errno.EHOSTDOWN: StorageUnavailable,
        errno.ECONNREFUSED: StorageUnavailable,
        errno.ENXIO: StorageUnavailable,
        errno.ENOSYS: StorageNotSupported,
        errno.EEXIST: StorageExists,
        errno.EISDIR: StorageError,
    }
    for code, cls in cases.items():
        assert describe(code, "whatever")[0] is cls, code
    # gfal2 reports a transfer timeout as EBADF "timeout of 2s"
    assert describe(errno.EBADF, "TRANSFER ERROR: Copy failed (streamed). timeout of 2s")[0] is (
        StorageTimeout
    )
    # an HTTP 5xx is the server's fault and worth a retry; a 4xx is not
    assert describe(errno.EIO, "MAKE_PARENT HTTP 500 : Unexpected server error")[0] is (
        StorageUnavailable
    )
    assert describe(errno.EIO, "HTTP 400 : Bad request")[0] is StorageError
    err = storage_error("copy", ("file:///a", "dav://u:pw@h/b"), errno.ENXIO, "reset\\n by peer")
    assert str(err) == (
        "copy file:///a -> dav://u:***@h/b: connection lost during the transfer "
        "(gfal2: reset by peer)"
    )
    assert is_transient(err) and not is_transient(storage_error("x", "u", errno.ENOENT, ""))


# --- URL templates ------------------------------------------------------------------


def test_render_url() -> None:
    fields = {"root": "dav://host:8080/lofar/", "obsid": "L229507", "step": "average",
              "name": "L229507_SB100_uv.MS.tar", "sub": "a/b", "n": 7}  # fmt: skip
    assert render_url("{root}/{obsid}/{step}/{name}", fields) == (
        "dav://host:8080/lofar/L229507/average/L229507_SB100_uv.MS.tar"
    )
    assert render_url("{root}/{sub:path}/{n}.log", fields) == "dav://host:8080/lofar/a/b/7.log"
    assert render_url("{root}/{x}", {"root": "file:///d", "x": "a b#"[:3]}) == "file:///d/a%20b"
    assert template_fields("{root}/{obsid}/{obsid}/{name:path}") == ["root", "obsid", "name"]

    with pytest.raises(InputError) as unknown:
        render_url("{root}/{obsid}/{subband}", fields)
    message = str(unknown.value)
    assert "{subband}" in message and "known fields: n, name, obsid, root, step, sub" in message
    for bad in ("..", "../etc", "a/../b", "/abs", "", "x?y=1"):
        with pytest.raises(InputError):
            render_url("{root}/{v:path}", {"root": "dav://h", "v": bad})
    with pytest.raises(InputError, match="contains '/'"):
        render_url("{root}/{v}", {"root": "dav://h", "v": "a/b"})
    for bad_template in ("{root}/{}", "{root}/{0}", "{root}/{v!r}", "{root}/{v:>10}", "{root"):
        with pytest.raises(InputError):
            render_url(bad_template, {"root": "dav://h", "v": "x"})
