"""Checking and unpacking a sandbox tarball safely.

A tarball from storage is not trusted: before anything is written, every member is checked
and the whole archive is refused if one of them has an absolute path, a ``..`` component,
is a device, FIFO or other special file, or is a symlink or hard link that points outside
the sandbox. Extraction then also runs through tarfile's ``data`` filter (Python >= 3.11.4)
and into a temporary directory that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from gridlrt.errors import InputError

ALLOWED_TYPES = (
    tarfile.REGTYPE,
    tarfile.AREGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
)


class UnsafeSandbox(InputError):
    """A sandbox tarball holds a member that could write outside its directory."""


def _inside(name: str) -> bool:
    """True when ``name`` (a normalised relative POSIX path) does not climb out."""
    depth = 0
    for part in PurePosixPath(name).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part != ".":
            depth += 1
    return True


def check_member(member: tarfile.TarInfo, where: str) -> None:
    """Raise :class:`UnsafeSandbox` unless ``member`` is safe to extract."""
    name = member.name
    if not name or name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        raise UnsafeSandbox(f"{where}: member {name!r} has an absolute path; refusing to extract")
    if (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise UnsafeSandbox(f"{where}: member {name!r} is not a POSIX relative path; refusing")
    if ".." in PurePosixPath(name).parts:
        raise UnsafeSandbox(f"{where}: member {name!r} contains '..'; refusing to extract")
    if member.type not in ALLOWED_TYPES:
        kind = (
            "a device file" if member.ischr() or member.isblk()
            else "a FIFO" if member.isfifo()
            else f"of tar type {member.type!r}"
        )  # fmt: skip
        raise UnsafeSandbox(f"{where}: member {name!r} is {kind}; refusing to extract")
    if member.issym():
        target = member.linkname
        if target.startswith("/") or not _inside(str(PurePosixPath(name).parent / target)):
            raise UnsafeSandbox(
                f"{where}: symlink {name!r} -> {target!r} points outside the sandbox; refusing"
            )
    if member.islnk():
        target = member.linkname
        if target.startswith("/") or not _inside(target):
            raise UnsafeSandbox(
                f"{where}: hard link {name!r} -> {target!r} points outside the sandbox; refusing"
            )
    if member.mode & 0o6000:
        raise UnsafeSandbox(f"{where}: member {name!r} is setuid/setgid; refusing to extract")


def check_tarball(path: Path) -> list[tarfile.TarInfo]:
    """All members of the tarball at ``path``, each checked; raises on the first unsafe one."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable tar archive ({exc})") from exc
    for member in members:
        check_member(member, str(path))
    return members


def extract_tarball(path: Path, dest: Path) -> int:
    """Unpack the checked tarball ``path`` into ``dest`` (which must not exist or be empty);
    returns the number of regular files. ``dest`` appears only when complete."""
    members = check_tarball(path)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest}: exists and is not an empty directory; choose a new one")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.part-", dir=dest.parent))
    try:
        with tarfile.open(path, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.11.4: our own checks above are all there is
                tar.extractall(staging, members=members)  # members checked above
        staging.chmod(0o755)
        if dest.exists():
            dest.rmdir()
        staging.replace(dest)
    except tarfile.TarError as exc:  # the data filter refused a member
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise UnsafeSandbox(f"{path}: {exc}; refusing to extract") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return sum(1 for m in members if m.isfile())
