"""The job templates shipped in ``jdl_templates/`` (package data ``gridlrt/data/jdl_templates``),
filled strictly: every ``{placeholder}`` must be given, values are quoted by the caller."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from gridlrt import templating

TEMPLATES = ("dirac.jdl", "glite.jdl", "slurm.sh", "pilot.sh")


def template_path(name: str) -> Path:
    """The installed file of template ``name`` (e.g. ``pilot.sh``)."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(TEMPLATES)}")
    return Path(str(resources.files("gridlrt") / "data" / "jdl_templates" / name))


def render_template(name: str, fields: Mapping[str, Any]) -> str:
    """Template ``name`` with its placeholders filled from ``fields`` (strictly)."""
    return templating.render(template_path(name).read_text(), fields, where=name)
