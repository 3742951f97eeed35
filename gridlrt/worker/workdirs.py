"""Work directories of the pilots on one node: one per attempt, owned, and cleaned after death.

Every attempt at a token works in ``<workroot>/<token id>.<attempt id>/``, so a retry never
shares a directory with an earlier attempt (whose payload, should it somehow still run, could
otherwise write into the retry's outputs). The directory holds an owner file naming the host,
the pilot's pid and that pid's start time: a pilot starting on a node removes the directories
whose owner process is gone (killed pilots leave gigabytes of measurement sets behind), and
never touches one whose owner still runs or that belongs to another host sharing the disk.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

from gridlrt.procfs import start_time

log = logging.getLogger(__name__)

OWNER_FILE = ".gridlrt-owner.json"


def attempt_dir(workroot: Path, token_id: str, attempt_id: str) -> Path:
    """A new, empty work directory for one attempt, owned by this process."""
    workdir = workroot / f"{token_id}.{attempt_id}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "start": start_time(os.getpid())}
    (workdir / OWNER_FILE).write_text(json.dumps(owner))
    return workdir


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
    """Remove the work directories under ``workroot`` whose owner process on this host is gone;
    returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(workroot.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink() and owner_alive(entry) is False:
            shutil.rmtree(entry, ignore_errors=True)
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
