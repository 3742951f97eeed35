"""Work directories of the pilots on one node: one per attempt, owned, and cleaned after death.

Every attempt at a token works in ``<workroot>/<token id>.<attempt id>/``, so a retry never
shares a directory with an earlier attempt (whose payload, should it somehow still run, could
otherwise write into the retry's outputs). The directory holds an owner file naming the host,
the pilot's pid and that pid's start time: a pilot starting on a node removes the directories
whose owner process is gone (killed pilots leave gigabytes of measurement sets behind), and
never touches one whose owner still runs or that belongs to another host sharing the disk.
A directory is made under a name that says who makes it
(``.gridlrt-new-<random>-<pid>-<start time>-<host>``), given its owner file, then renamed
into place, so a pilot killed while making one leaves nothing unowned. A directory is
removed by first renaming it to ``.gridlrt-trash-<name>-<random>`` (atomic),
then deleting that: a pilot killed half-way through a removal leaves a trash directory,
which the next pilot on the node deletes, never an unowned half-deleted work directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path

from gridlrt.procfs import start_time

log = logging.getLogger(__name__)

OWNER_FILE = ".gridlrt-owner.json"
TRASH_PREFIX = ".gridlrt-trash-"
NEW_PREFIX = ".gridlrt-new-"


def remove_workdir(workdir: Path) -> None:
    """Delete a work directory so that no kill can leave part of it unowned: rename it into
    the trash (one atomic step), then delete the trash."""
    trash = workdir.with_name(f"{TRASH_PREFIX}{workdir.name}-{uuid.uuid4().hex[:8]}")
    try:
        workdir.rename(trash)
    except FileNotFoundError:
        return
    except OSError:
        trash = workdir  # e.g. not allowed to rename here: delete in place
    shutil.rmtree(trash, ignore_errors=True)


def attempt_dir(workroot: Path, token_id: str, attempt_id: str) -> Path:
    """A new, empty work directory for one attempt, owned by this process."""
    workdir = workroot / f"{token_id}.{attempt_id}"
    remove_workdir(workdir)
    pid, start = os.getpid(), start_time(os.getpid())
    host = socket.gethostname()
    making = workroot / f"{NEW_PREFIX}{uuid.uuid4().hex[:8]}-{pid}-{start}-{host}"
    making.mkdir(parents=True)
    owner = {"host": host, "pid": pid, "start": start}
    (making / OWNER_FILE).write_text(json.dumps(owner))
    making.rename(workdir)
    return workdir


def _maker_alive(name: str) -> bool | None:
    """Whether the process named in a ``.gridlrt-new-<random>-<pid>-<start>-<host>`` directory
    runs; None when the name does not say, or names another host."""
    try:
        _, pid_text, start, host = name.removeprefix(NEW_PREFIX).split("-", 3)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    now = start_time(pid)
    return now is not None and (start == "None" or now == start)


def owner_alive(workdir: Path) -> bool | None:
    """Whether the pilot that made ``workdir`` still runs: None when that cannot be told here
    (no owner file, another host, unreadable)."""
    try:
        owner = json.loads((workdir / OWNER_FILE).read_text())
        host, pid, start = str(owner["host"]), int(owner["pid"]), owner.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None
    now = start_time(pid)
    return now is not None and (start is None or now == str(start))


def clean_dead(workroot: Path) -> list[Path]:
    """Remove the work directories under ``workroot`` whose owner process on this host is gone,
    and the trash a killed removal left; returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(workroot.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.is_dir() or entry.is_symlink():
            continue
        if entry.name.startswith(TRASH_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)  # another pilot may be at it: harmless
            removed.append(entry)
        elif entry.name.startswith(NEW_PREFIX) and _maker_alive(entry.name) is False:
            shutil.rmtree(entry, ignore_errors=True)  # its maker died making it
            removed.append(entry)
        elif owner_alive(entry) is False:
            remove_workdir(entry)
            if not entry.exists():
                removed.append(entry)
    if removed:
        log.info(
            "removed %d work director%s left by dead pilots under %s",
            len(removed),
            "y" if len(removed) == 1 else "ies",
            workroot,
        )
    return removed
