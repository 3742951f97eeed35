"""Byte sizes as people read them: one formatter for the command line and the dashboard."""

from __future__ import annotations


def format_bytes(value: float | None) -> str:
    """``512 B``, ``1.5 MB``, ``2.3 TB`` (decimal units, as storage systems count); ``?`` when
    unknown."""
    if value is None:
        return "?"
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"  # not reached
