"""Building a sandbox: a step directory as a reproducible, content-addressed ``tar.gz``.

The same content always gives the same bytes, so the sha256 of the tarball is its id:

* members sorted by path, directories included (empty ones survive);
* every mtime :data:`MTIME`, uid/gid 0, no user or group names;
* modes normalised: directories and files with any executable bit 0755, other files 0644;
* gzip header without a file name and with mtime 0, compression level 9.

(The bytes also depend on zlib's deflate; every zlib release since 1.2 produces the same
stream for the same input and level, zlib-ng may not.)

Only regular files, directories and symlinks that stay inside the tree are accepted: a
symlink that leaves the tree, an absolute symlink, a device, a FIFO or a socket makes the
build fail. Byte-code caches and VCS directories (:data:`EXCLUDED`) are left out so that
running a script does not change the id.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from gridlrt.errors import InputError

MTIME = 0
EXCLUDED = frozenset({"__pycache__", ".git", ".svn", ".hg", ".DS_Store", ".ipynb_checkpoints"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".swp")
SUFFIX = ".tar.gz"
_CHUNK = 1 << 20


class Sandbox(BaseModel):
    """A built sandbox tarball."""

    id: str = Field(description="sha256 (hex) of the tarball bytes")
    path: Path
    size: int
    files: int = Field(description="regular files inside")

    @property
    def name(self) -> str:
        """``<id>.tar.gz``: the name it is pushed under."""
        return f"{self.id}{SUFFIX}"


def sha256_file(path: Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _excluded(name: str) -> bool:
    return name in EXCLUDED or name.endswith(EXCLUDED_SUFFIXES)


def _check_arcname(arcname: str) -> str:
    pure = PurePosixPath(arcname)
    if not arcname or pure.is_absolute() or any(p in ("", ".", "..") for p in arcname.split("/")):
        raise InputError(f"sandbox member name {arcname!r} must be a relative path without '..'")
    return str(pure)


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(arcname, path) for everything under ``root``, unsorted, exclusions dropped."""
    for current, dirs, files in os.walk(root, followlinks=False):
        base = Path(current)
        dirs[:] = [d for d in dirs if not _excluded(d)]
        for name in [*dirs, *files]:
            if _excluded(name):
                continue
            path = base / name
            yield path.relative_to(root).as_posix(), path


def _tarinfo(arcname: str, path: Path, root: Path | None) -> tarfile.TarInfo:
    """A normalised member for ``path``; raises InputError for what a sandbox may not hold."""
    st = path.lstat()
    info = tarfile.TarInfo(arcname)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        target = str(path.readlink())
        if Path(target).is_absolute():
            raise InputError(
                f"{path}: symlink to the absolute path {target!r}; a sandbox may only hold "
                "relative links that stay inside it"
            )
        base = root if root is not None else path.parent
        resolved = (path.parent / target).resolve()
        if root is None or not resolved.is_relative_to(base.resolve()):
            raise InputError(f"{path}: symlink {target!r} leaves the sandbox directory")
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        return info
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        return info
    if stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
        return info
    kind = "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else (
        "FIFO" if stat.S_ISFIFO(st.st_mode) else "socket or special file"
    )  # fmt: skip
    raise InputError(f"{path}: a {kind} cannot go into a sandbox; remove it")


def collect(
    directory: Path, extra: Mapping[str, Path] | None = None
) -> list[tuple[tarfile.TarInfo, Path]]:
    """The sorted, checked members of a sandbox of ``directory`` plus ``extra`` files
    (``{arcname: path}``, e.g. the pilot bootstrap)."""
    root = directory.expanduser()
    if not root.is_dir():
        raise InputError(f"{directory}: not a directory (a sandbox is built from a step directory)")
    members: dict[str, tuple[tarfile.TarInfo, Path]] = {}
    for arcname, path in _walk(root):
        members[arcname] = (_tarinfo(arcname, path, root), path)
    for arcname, path in (extra or {}).items():
        name = _check_arcname(arcname)
        if not path.is_file():
            raise InputError(f"{path}: extra sandbox file not found (wanted as {name})")
        if name in members:
            raise InputError(f"{name}: given as an extra file but also in {directory}")
        members[name] = (_tarinfo(name, path.resolve(), None), path.resolve())
        # parent directories of an extra file become members too
        for parent in PurePosixPath(name).parents:
            key = str(parent)
            if key != "." and key not in members:
                info = tarfile.TarInfo(key)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
                members[key] = (info, root)
    if not any(info.isfile() for info, _ in members.values()):
        raise InputError(f"{directory}: no files to put into a sandbox")
    return [members[name] for name in sorted(members)]


def write_tarball(members: list[tuple[tarfile.TarInfo, Path]], out: io.BufferedIOBase) -> int:
    """Write the deterministic tar.gz of ``members`` to ``out``; returns the file count."""
    files = 0
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info, path in members:
            if info.isfile():
                with path.open("rb") as fh:
                    if os.fstat(fh.fileno()).st_size != info.size:
                        raise InputError(f"{path}: changed while the sandbox was being built")
                    tar.addfile(info, fh)
                files += 1
            else:
                tar.addfile(info)
    return files


def output_path(text: str | None) -> Path | None:
    """Where ``gridlrt sandbox build -o TEXT`` writes, checked before anything is built: an
    existing directory (for ``<id>.tar.gz``), or a file name in an existing directory.
    A trailing ``/`` means a directory, which must exist. :class:`InputError` otherwise."""
    if text is None:
        return None
    path = Path(text)
    if text.endswith("/") and not path.is_dir():
        raise InputError(
            f"-o {text}: no such directory; create it first (or drop the '/' to name a file)"
        )
    if path.is_dir():
        return path
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"-o {text}: no such directory {parent}; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"-o {text}: the directory {parent} is not writable by you")
    return path


def build_sandbox(
    directory: Path,
    output: Path | None = None,
    *,
    extra: Mapping[str, Path] | None = None,
) -> Sandbox:
    """Build the sandbox of ``directory`` (plus ``extra`` files) and return it.

    ``output``: a file name to write, or an existing directory to write ``<id>.tar.gz`` into
    (default: the current directory). The file appears only when complete.
    """
    members = collect(directory, extra)
    if output is None or output.is_dir():
        write_dir, name = output or Path.cwd(), None
    else:
        write_dir, name = output.parent, output.name
    write_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".sandbox-", suffix=".part", dir=write_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            files = write_tarball(members, fh)
        digest = sha256_file(tmp)
        final = write_dir / (name or f"{digest}{SUFFIX}")
        tmp.chmod(0o644)
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Sandbox(id=digest, path=final, size=final.stat().st_size, files=files)
