"""The runtime bundle: gridlrt and its pure-Python dependencies as sandbox files, so that
``python3 -m gridlrt worker run`` works on a worker node that has nothing but python3 and the
site's LOFAR software (the gfal2 binding, numpy, python-casacore, DP3).

Owns choosing those files and describing them:

* the files come from the distributions *installed in the running environment* (each one's
  ``RECORD``; no network, no pip): gridlrt itself (its package directory, since it may be
  installed editable) and the closure of its ``Requires-Dist`` (environment markers evaluated
  for this interpreter with :mod:`packaging`, extras ignored: ``gridlrt[worker]`` and
  ``gridlrt[demo]`` are not shipped), minus :data:`SITE_PROVIDED` and :data:`UI_ONLY`;
* everything goes under :data:`LIB_PREFIX` (the directory the pilot bootstrap puts on
  ``PYTHONPATH``); console scripts, byte-code caches, ``.pth`` files and the ``.dist-info``
  files other than ``METADATA`` and licences are left out;
* :data:`BUNDLE_JSON` describes the bundle (:class:`BundleInfo`: Python ``major.minor``,
  implementation, platform, the distributions and their versions) in deterministic bytes, so
  the same environment always gives the same sandbox id.

:func:`build_pilot_sandbox` builds a step directory plus the bundle; ``jdl_templates/pilot.sh``
unpacks and checks it on the worker node.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path, PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel, Field

import gridlrt
from gridlrt.errors import ConfigError, InputError
from gridlrt.sandbox.build import EXCLUDED, EXCLUDED_SUFFIXES, Sandbox, build_sandbox

log = logging.getLogger(__name__)

ROOT_DISTRIBUTION = "gridlrt"
PREFIX = "_gridlrt"
LIB_PREFIX = f"{PREFIX}/lib"
BUNDLE_JSON = f"{PREFIX}/bundle.json"
BUNDLE_FORMAT = 1

# The site's LOFAR software, and whatever only it needs: worker nodes provide these, built
# against the site's own libraries (Debian python3-numpy and python3-casacore, DP3 from the
# LOFAR software module, python3-gfal2 for the gfal2 binding). Shipping our copies would shadow
# them (PYTHONPATH comes first) with builds for another system, so they are neither bundled
# nor followed: their own requirements are the site's business too. gridlrt asks for them only
# through its extras (gridlrt[worker], gridlrt[demo]), which the closure never follows; this
# list also keeps them out when a bundled distribution requires one.
SITE_PROVIDED = frozenset(
    {"numpy", "python-casacore", "dp3", "gfal2-python", "losoto", "astropy", "h5py", "tables"}
)
# What gridlrt needs only on the submitting side, never in a pilot: matplotlib draws the demo's
# progress plot (about 30 MB with its own dependencies).
UI_ONLY = frozenset({"matplotlib"})
NOT_BUNDLED = SITE_PROVIDED | UI_ONLY
# gridlrt's own submitting-side packages: the demo (synthetic observations, the demo run and
# its plots) is for the UI node; the worker never imports it.
UI_ONLY_PACKAGES = ("gridlrt/demo/",)

# ``.dist-info``/``.egg-info`` files worth shipping: the metadata (so importlib.metadata.version
# works) and the licences that must accompany copies of most open-source packages.
_KEPT_METADATA = frozenset({"METADATA", "PKG-INFO"})
_LICENCE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)


class BundledDistribution(BaseModel):
    """One distribution in the bundle."""

    name: str = Field(description="normalised name (PEP 503)")
    version: str
    tags: list[str] = Field(description="wheel tags; empty when not installed from a wheel")
    files: int


class BundleInfo(BaseModel):
    """``_gridlrt/bundle.json``: what the bundle holds and which interpreter it needs."""

    format: int = BUNDLE_FORMAT
    python: str = Field(description="major.minor of the Python that must run the bundle")
    implementation: str = Field(description="sys.implementation.name, e.g. cpython")
    platform: str = Field(description="sysconfig.get_platform(), e.g. linux-x86_64")
    gridlrt: str = Field(description="gridlrt version")
    distributions: list[BundledDistribution]
    site_provided: list[str] = Field(description="what the worker node must provide itself")
    files: int = Field(description="files under _gridlrt/lib")

    def to_bytes(self) -> bytes:
        """Deterministic JSON: sorted keys, fixed indentation, no timestamps."""
        return (json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n").encode()


# --- requirements ---------------------------------------------------------------------------


def requirement_closure(
    root: str = ROOT_DISTRIBUTION, *, exclude: frozenset[str] = NOT_BUNDLED
) -> dict[str, metadata.Distribution]:
    """The installed distributions ``root`` needs here, by normalised name (PEP 503),
    ``root`` included: its ``Requires-Dist`` followed recursively (environment markers
    evaluated for this interpreter by :mod:`packaging`, extras not selected, so
    ``gridlrt[worker]`` and ``gridlrt[demo]`` are never followed), without ``exclude`` and
    what is reached only through it."""
    found: dict[str, metadata.Distribution] = {}
    wanted, needed_by = [canonicalize_name(root)], {canonicalize_name(root): "this environment"}
    while wanted:
        name = wanted.pop()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ConfigError(
                f"{needed_by[name]} needs {name}, which is not installed in {sys.prefix}; "
                f"install it (pip install {name}) before building the runtime bundle"
            ) from None
        found[name] = dist
        for text in dist.requires or []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                raise ConfigError(
                    f"{name} {dist.version} has a requirement pip cannot read ({text!r}); "
                    f"reinstall it (pip install --force-reinstall {name})"
                ) from None
            dep = canonicalize_name(requirement.name)
            if dep in exclude or dep in found:
                continue
            marker = requirement.marker
            if marker is not None and not marker.evaluate({"extra": ""}):
                continue
            needed_by.setdefault(dep, name)
            wanted.append(dep)
    return found


# --- files -------------------------------------------------------------------------------


def _skipped(parts: tuple[str, ...]) -> bool:
    if any(part in EXCLUDED for part in parts) or parts[-1].endswith(EXCLUDED_SUFFIXES):
        return True
    if parts[0] == ".." or parts[0].endswith(".data") or parts[-1].endswith(".pth"):
        return True  # console scripts and data outside site-packages; .pth does nothing here
    if parts[0].endswith((".dist-info", ".egg-info")):
        inside = parts[1:]
        if len(inside) == 1 and inside[0] in _KEPT_METADATA:
            return False
        return not (inside and (inside[0] == "licenses" or _LICENCE.match(inside[-1])))
    return False


def _absolute(path: object) -> str:
    """Absolute and normalised (``..`` folded), but symlinks not resolved."""
    return os.path.normpath(Path(str(path)).absolute())


def distribution_files(dist: metadata.Distribution) -> dict[str, Path]:
    """``{path relative to site-packages: file}`` of one installed distribution, from its
    ``RECORD`` (or ``installed-files.txt``), without what a runtime bundle leaves out."""
    name = dist.metadata["Name"]
    listed = dist.files
    if listed is None:
        raise ConfigError(
            f"{name} {dist.version} has no list of installed files (RECORD); reinstall it "
            f"with pip (pip install --force-reinstall {name})"
        )
    site = _absolute(dist.locate_file(""))
    files: dict[str, Path] = {}
    for entry in listed:
        parts = PurePosixPath(str(entry).replace("\\", "/")).parts
        if not parts or _skipped(parts):
            continue
        # normalised, not resolved: a symlink inside site-packages stays where it is listed
        relative = Path(os.path.relpath(_absolute(dist.locate_file(entry)), site))
        if relative.parts[0] == "..":
            continue  # installed outside site-packages (absolute RECORD paths)
        if not (Path(site) / relative).is_file():
            raise ConfigError(
                f"{name} {dist.version}: {relative} is listed as installed but missing; "
                f"reinstall it (pip install --force-reinstall {name})"
            )
        files[relative.as_posix()] = Path(site) / relative
    return files


def package_files(package_dir: Path) -> dict[str, Path]:
    """``{path relative to the package's parent: file}`` of a package directory, following
    symlinked directories (``gridlrt/data/jdl_templates``) as files, caches left out."""
    files: dict[str, Path] = {}
    base = package_dir.parent
    for current, dirs, names in os.walk(package_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED)
        for name in names:
            if name in EXCLUDED or name.endswith(EXCLUDED_SUFFIXES):
                continue
            path = Path(current) / name
            if path.is_file():
                files[path.relative_to(base).as_posix()] = path
    return files


def _wheel_tags(dist: metadata.Distribution) -> list[str]:
    text = dist.read_text("WHEEL") or ""
    return sorted(
        line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("Tag:")
    )


def _gridlrt_metadata(version: str) -> bytes:
    """A minimal, deterministic METADATA for gridlrt (it may be installed editable, and its
    installed metadata then depends on how it was installed)."""
    return (
        f"Metadata-Version: 2.1\nName: {ROOT_DISTRIBUTION}\nVersion: {version}\n"
        "Summary: LOFAR Reduction Tools for the grid (runtime bundle)\n"
    ).encode()


def runtime_files(cache_dir: Path) -> dict[str, Path]:
    """The runtime bundle as ``{arcname: file}``: the ``extra`` of
    :func:`~gridlrt.sandbox.build.build_sandbox`. ``bundle.json`` and gridlrt's METADATA are
    written into ``cache_dir``, which must outlive the build."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    closure = requirement_closure()
    version = gridlrt.__version__
    lib: dict[str, Path] = {}
    owner: dict[str, str] = {}
    described: list[BundledDistribution] = []

    gridlrt_files = {
        relative: path
        for relative, path in package_files(Path(gridlrt.__file__).resolve().parent).items()
        if not relative.startswith(UI_ONLY_PACKAGES)
    }
    meta = cache_dir / f"{ROOT_DISTRIBUTION}-{version}.dist-info" / "METADATA"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_bytes(_gridlrt_metadata(version))
    gridlrt_files[f"{meta.parent.name}/METADATA"] = meta
    lib.update(gridlrt_files)
    described.append(
        BundledDistribution(
            name=ROOT_DISTRIBUTION, version=version, tags=[], files=len(gridlrt_files)
        )
    )

    for name in sorted(closure):
        if name == canonicalize_name(ROOT_DISTRIBUTION):
            continue
        dist = closure[name]
        files = distribution_files(dist)
        for relative, path in files.items():
            if relative in lib:
                log.warning(
                    "%s is in both %s and %s; keeping the first",
                    relative, owner.get(relative, ROOT_DISTRIBUTION), name,
                )  # fmt: skip
                continue
            lib[relative] = path
            owner[relative] = name
        described.append(
            BundledDistribution(
                name=name, version=dist.version, tags=_wheel_tags(dist), files=len(files)
            )
        )

    info = BundleInfo(
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        implementation=sys.implementation.name,
        platform=sysconfig.get_platform(),
        gridlrt=version,
        distributions=described,
        site_provided=sorted(SITE_PROVIDED),
        files=len(lib),
    )
    manifest = cache_dir / "bundle.json"
    manifest.write_bytes(info.to_bytes())
    log.info(
        "runtime bundle: %d distributions, %d files, Python %s on %s",
        len(described), len(lib), info.python, info.platform,
    )  # fmt: skip
    extra = {f"{LIB_PREFIX}/{relative}": path for relative, path in lib.items()}
    extra[BUNDLE_JSON] = manifest
    return extra


@contextmanager
def runtime_bundle() -> Iterator[dict[str, Path]]:
    """:func:`runtime_files` in a temporary cache directory that lives as long as the block."""
    with tempfile.TemporaryDirectory(prefix="gridlrt-bundle-") as tmp:
        yield runtime_files(Path(tmp))


def read_bundle_info(path: Path) -> BundleInfo:
    """The :class:`BundleInfo` of an unpacked sandbox directory or a ``bundle.json`` file."""
    manifest = path / BUNDLE_JSON if path.is_dir() else path
    try:
        return BundleInfo.model_validate_json(manifest.read_bytes())
    except FileNotFoundError:
        raise InputError(
            f"{path}: no {BUNDLE_JSON}; build the sandbox with the runtime bundle "
            "(gridlrt sandbox build --with-gridlrt)"
        ) from None
    except ValueError as exc:
        raise InputError(f"{manifest}: not a valid runtime bundle description") from exc


def build_pilot_sandbox(steps_dir: Path | None, output: Path | None = None) -> Sandbox:
    """A sandbox for ``jdl_templates/pilot.sh``: the step directory's content at the top level
    (``<step>.toml`` and the files it names, as ``gridlrt worker run --steps-dir`` expects) plus
    the runtime bundle under ``_gridlrt/``. Without ``steps_dir``, just the bundle.

    ``output`` as for :func:`~gridlrt.sandbox.build.build_sandbox`: a file, or a directory for
    ``<id>.tar.gz`` (default: the current directory).
    """
    with tempfile.TemporaryDirectory(prefix="gridlrt-pilot-sandbox-") as tmp:
        extra = runtime_files(Path(tmp) / "bundle")
        directory = steps_dir
        if directory is None:
            directory = Path(tmp) / "steps"
            directory.mkdir()
        return build_sandbox(directory, output, extra=extra)
