"""Facts about processes on this node, read from Linux's ``/proc`` (worker nodes and login
nodes alike): used to tell a live pilot from a dead one whose pid was reused."""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or
    None when no such process runs (gone, or a zombie). With the pid it names one process:
    a recycled pid has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]
