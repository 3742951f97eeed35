"""gridlrt's optional dependencies, and the one-line error when one is missing.

``pip install gridlrt`` is the light core: the CLI, token pools, staging, storage, submission.
The heavy packages come with extras (``pyproject.toml``):

* ``gridlrt[worker]``: numpy, python-casacore and DP3, to run and check DP3 steps and to read
  measurement sets (``gridlrt ms info``). Worker nodes usually have the site's own builds;
  the pilot's runtime bundle never ships them (:data:`gridlrt.sandbox.bundle.SITE_PROVIDED`).
* ``gridlrt[reduction]``: the worker extra plus LOSOTO (H5parm solutions) and astropy (FITS
  images), for the ``cal-solve`` and ``image`` steps (WSClean itself is a system package).
* ``gridlrt[demo]``: the reduction extra plus matplotlib, for ``gridlrt demo`` and its plots.
* ``gridlrt[dashboard]``: starlette, jinja2 and uvicorn, for ``gridlrt dashboard``.

Code that needs one imports it where it is used, inside :func:`needs_extra`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gridlrt.errors import ConfigError

#: importable top-level module -> (distribution, the extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "numpy": ("numpy", "worker"),
    "casacore": ("python-casacore", "worker"),
    "dp3": ("dp3", "worker"),
    "losoto": ("losoto", "reduction"),
    "astropy": ("astropy", "reduction"),
    "matplotlib": ("matplotlib", "demo"),
    "starlette": ("starlette", "dashboard"),
    "jinja2": ("jinja2", "dashboard"),
    "uvicorn": ("uvicorn", "dashboard"),
}


@contextmanager
def needs_extra(purpose: str) -> Iterator[None]:
    """Turn the :class:`ImportError` of an optional dependency raised in the block into a
    :class:`~gridlrt.errors.ConfigError` that names the extra to install, e.g. ``gridlrt ms
    info needs python-casacore, which is not installed: pip install 'gridlrt[worker]'``.
    Any other :class:`ImportError` (a bug) propagates unchanged."""
    try:
        yield
    except ImportError as exc:
        module = (exc.name or "").partition(".")[0]
        if module not in EXTRAS:
            raise
        distribution, extra = EXTRAS[module]
        raise ConfigError(
            f"{purpose} needs {distribution}, which is not installed: "
            f"pip install 'gridlrt[{extra}]'"
        ) from exc
