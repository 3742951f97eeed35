"""``gridlrt doctor``: what this node has, what it lacks, and how to fix it.

Each check is a small function returning :class:`Check` rows; :func:`run_checks` runs them all
for a :class:`~gridlrt.config.Settings`. Checks never print, never write, and never show a
secret: credential files are inspected for presence, permissions and key names only.
A row is *required* when the configured use cannot work without it; the doctor's verdict
(:func:`healthy`) is that no required row failed.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from pathlib import Path

import requests
from pydantic import BaseModel

from gridlrt.config import Settings, redact_url, url_credentials
from gridlrt.credentials import read_key_value_file
from gridlrt.worker.dp3 import dp3_version, find_dp3

MIN_PYTHON = (3, 11)
MEASURES_DEFAULT = Path("/usr/share/casacore/data")
# gfal2 plugin name prefix -> (protocols it serves, required, Debian package)
GFAL2_PLUGINS: tuple[tuple[str, str, bool, str], ...] = (
    ("file", "file://", True, "gfal2-plugin-file"),
    ("http", "http(s)://, dav(s)://", True, "gfal2-plugin-http"),
    ("srm", "srm:// (LTA sites)", False, "gfal2-plugin-srm"),
    ("gridftp", "gsiftp://", False, "gfal2-plugin-gridftp"),
    ("xrootd", "root://", False, "gfal2-plugin-xrootd"),
)
BATCH_CLIENTS: tuple[tuple[str, str], ...] = (
    ("sbatch", "Slurm (e.g. SURF Spider)"),
    ("dirac-wms-job-submit", "DIRAC grid submission"),
    ("glite-wms-job-submit", "gLite WMS (retired)"),
)


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    INFO = "info"


class Check(BaseModel):
    """One row of the doctor's table."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    required: bool = True


def healthy(checks: Iterable[Check]) -> bool:
    """True when no required check failed."""
    return not any(c.required and c.status is Status.FAIL for c in checks)


# --- Python -------------------------------------------------------------------------------


def check_python(version: Sequence[int] = sys.version_info[:3]) -> Check:
    shown = ".".join(str(v) for v in version)
    if tuple(version[:2]) >= MIN_PYTHON:
        return Check(name="python", status=Status.OK, detail=f"Python {shown}")
    need = ".".join(str(v) for v in MIN_PYTHON)
    return Check(
        name="python",
        status=Status.FAIL,
        detail=f"Python {shown} is too old",
        fix=f"use Python >= {need} (e.g. `module load python/{need}` or a newer venv)",
    )


# --- gfal2 --------------------------------------------------------------------------------


def gfal2_plugin_names(importer: Callable[[str], object] = importlib.import_module) -> list[str]:
    """Names (without versions) of the gfal2 plugins that load; raises ImportError without gfal2."""
    gfal2 = importer("gfal2")
    ctx = gfal2.creat_context()  # type: ignore[attr-defined]
    return [str(name).rsplit("-", 1)[0] for name in ctx.get_plugin_names()]


def check_gfal2(
    importer: Callable[[str], object] = importlib.import_module,
) -> list[Check]:
    try:
        loaded = gfal2_plugin_names(importer)
    except ImportError as exc:
        return [
            Check(
                name="gfal2",
                status=Status.FAIL,
                detail=f"Python binding not importable ({exc})",
                fix="apt-get install python3-gfal2 gfal2-plugin-file gfal2-plugin-http, then "
                "`make setup` (links the binding into .venv)",
            )
        ]
    except Exception as exc:  # gfal2.GError and friends: the library is there but broken
        return [Check(name="gfal2", status=Status.FAIL, detail=f"cannot create context: {exc}")]
    rows = [Check(name="gfal2", status=Status.OK, detail=f"plugins: {', '.join(sorted(loaded))}")]
    for plugin, protocols, required, package in GFAL2_PLUGINS:
        present = plugin in loaded
        rows.append(
            Check(
                name=f"gfal2 {plugin}",
                status=Status.OK if present else (Status.FAIL if required else Status.WARN),
                detail=protocols + ("" if present else ": plugin not loaded"),
                fix=None if present else f"apt-get install {package}",
                required=required,
            )
        )
    return rows


# --- DP3 and casacore ---------------------------------------------------------------------


def check_dp3() -> list[Check]:
    exe = find_dp3()
    if exe is None:
        return [
            Check(
                name="DP3",
                status=Status.FAIL,
                detail="no DP3.py, DP3 or NDPPP found",
                fix="pip install dp3 (in gridlrt's environment), or load the LOFAR software module",
            )
        ]
    try:
        version = dp3_version(exe)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check(name="DP3", status=Status.FAIL, detail=f"{exe} does not run: {exc}")]
    rows = [
        Check(
            name="DP3",
            status=Status.OK if version.ok else Status.FAIL,
            detail=f"{exe}: {version.line or 'no output'}",
            fix=None if version.ok else "reinstall dp3; run it by hand to see why",
        )
    ]
    own = os.environ.get("OPENBLAS_NUM_THREADS")
    rows.append(
        Check(
            name="OPENBLAS_NUM_THREADS",
            status=Status.INFO,
            detail=(
                f"set to {own} here; gridlrt always runs DP3 with 1"
                if own
                else "unset here; gridlrt runs DP3 with OPENBLAS_NUM_THREADS=1"
            ),
            fix=None if own == "1" else "export OPENBLAS_NUM_THREADS=1 to run DP3 by hand",
            required=False,
        )
    )
    return rows


def check_casacore(importer: Callable[[str], object] = importlib.import_module) -> Check:
    try:
        module = importer("casacore")
        importer("casacore.tables")
    except ImportError as exc:
        return Check(
            name="python-casacore",
            status=Status.FAIL,
            detail=f"not importable ({exc})",
            fix="pip install 'gridlrt[worker]' (python-casacore, numpy, dp3)",
        )
    version = getattr(module, "__version__", "?")
    return Check(name="python-casacore", status=Status.OK, detail=f"version {version}")


def check_reduction(
    importer: Callable[[str], object] = importlib.import_module,
    find_wsclean: Callable[[], Path | None] | None = None,
) -> list[Check]:
    """What the reduction steps (cal-solve, image) need: LOSOTO, astropy and WSClean. Not
    required: flag-average and average run without them."""
    rows = []
    for module, purpose in (("losoto", "H5parm solutions"), ("astropy", "FITS images")):
        try:
            found = importer(module)
        except ImportError:
            rows.append(
                Check(
                    name=module,
                    status=Status.WARN,
                    detail=f"not importable: the cal-solve and image steps need it ({purpose})",
                    fix="pip install 'gridlrt[reduction]' (losoto, astropy)",
                    required=False,
                )
            )
            continue
        version = getattr(found, "__version__", "?")
        rows.append(Check(name=module, status=Status.OK, detail=f"version {version}"))
    from gridlrt.reduction.wsclean import find_wsclean as on_path

    exe = (find_wsclean or on_path)()
    rows.append(
        Check(
            name="wsclean",
            status=Status.OK if exe else Status.WARN,
            detail=str(exe) if exe else "not on PATH: the image step needs it",
            fix=None if exe else "apt-get install wsclean (Debian), or load the LOFAR module",
            required=False,
        )
    )
    return rows


def measures_candidates(home: Path | None = None) -> list[Path]:
    """Where DP3's casacore looks for measures data: ``measures.directory`` in ~/.casarc, then
    the compiled-in default /usr/share/casacore/data."""
    candidates: list[Path] = []
    rc_files = [Path(p) for p in os.environ.get("CASARCFILES", "").split(":") if p]
    rc_files.append((home or Path.home()) / ".casarc")
    for rc in rc_files:
        try:
            lines = rc.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, sep, value = line.partition(":")
            if sep and key.strip() == "measures.directory" and value.strip():
                candidates.append(Path(value.strip()).expanduser())
    candidates.append(MEASURES_DEFAULT)
    return candidates


def check_measures_data(candidates: Sequence[Path] | None = None) -> Check:
    """The IERS/observatory tables DP3 needs to open a LOFAR measurement set."""
    for directory in candidates if candidates is not None else measures_candidates():
        if (directory / "geodetic" / "Observatories" / "table.dat").exists():
            return Check(name="casacore measures data", status=Status.OK, detail=str(directory))
    return Check(
        name="casacore measures data",
        status=Status.FAIL,
        detail=f"no geodetic/Observatories table in {MEASURES_DEFAULT} (DP3 would die with "
        "'Cannot read table of Observatories')",
        fix="apt-get install casacore-data (or set measures.directory in ~/.casarc)",
    )


# --- the token pool -----------------------------------------------------------------------


def check_pool(settings: Settings) -> list[Check]:
    shown = redact_url(settings.pool)
    rows: list[Check] = []
    if url_credentials(settings.pool).password:
        rows.append(
            Check(
                name="pool URL",
                status=Status.WARN,
                detail="the pool URL carries credentials; they may end up in shell history",
                fix=f"put username=/password= in {settings.pool_credentials} (chmod 600) instead",
                required=False,
            )
        )
    if settings.pool_kind == "embedded":
        rows.append(_check_sqlite_pool(settings.sqlite_path, shown))
    else:
        rows.append(_check_couchdb_pool(settings, settings.pool, shown))
        for k, replica in enumerate(settings.pool_replica_urls, 1):  # claims wait on each
            rows.append(
                _check_couchdb_pool(
                    settings, replica, redact_url(replica), name=f"pool replica {k}"
                )
            )
    return rows


def _check_sqlite_pool(path: Path, shown: str) -> Check:
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return Check(
                name="token pool",
                status=Status.OK,
                detail=f"embedded {shown} (not created yet; `gridlrt pool init` creates it)",
            )
        return Check(
            name="token pool",
            status=Status.FAIL,
            detail=f"embedded {shown}: {parent} is not writable",
            fix="choose another location with --pool sqlite:///PATH or GRIDLRT_POOL",
        )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        return Check(
            name="token pool",
            status=Status.FAIL,
            detail=f"embedded {shown}: not a readable SQLite database ({exc})",
            fix="move the file away and run `gridlrt pool init`",
        )
    return Check(name="token pool", status=Status.OK, detail=f"embedded {shown}")


def _check_couchdb_pool(
    settings: Settings, url: str, shown: str, *, name: str = "token pool"
) -> Check:
    from gridlrt.credentials import couchdb_auth  # local: only CouchDB users need it

    try:
        auth = couchdb_auth(settings)
        response = requests.get(url, auth=auth, timeout=10)
    except requests.RequestException as exc:
        return Check(
            name=name,
            status=Status.FAIL,
            detail=f"CouchDB {shown} unreachable ({type(exc).__name__})",
            fix="check the host/port, your network, and that the server runs",
        )
    except Exception as exc:  # CredentialsError etc.: already a one-line message
        return Check(name=name, status=Status.FAIL, detail=str(exc))
    if response.status_code == 200:
        count = response.json().get("doc_count", "?")
        return Check(name=name, status=Status.OK, detail=f"CouchDB {shown} ({count} docs)")
    fixes = {
        401: f"wrong or missing credentials: fill {settings.pool_credentials}",
        403: "the CouchDB user may not read this database: ask its admin",
        404: "database does not exist: run `gridlrt pool init`",
    }
    return Check(
        name=name,
        status=Status.FAIL,
        detail=f"CouchDB {shown} answered HTTP {response.status_code}",
        fix=fixes.get(response.status_code, "check the URL"),
    )


# --- credentials and batch clients --------------------------------------------------------


def check_credentials_file(
    name: str, path: Path, *, required: bool, keys: Sequence[str] = ()
) -> Check:
    """Presence and 0600 permissions of a secret file; names of missing keys, never values."""
    if not path.exists():
        return Check(
            name=name,
            status=Status.FAIL if required else Status.INFO,
            detail=f"{path} not present",
            fix=f"create {path} and chmod 600 it" if required else None,
            required=required,
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(
            name=name,
            status=Status.FAIL,
            detail=f"{path} is readable by others (mode {mode:04o})",
            fix=f"chmod 600 {path}",
            required=True,
        )
    if keys:
        try:
            present = read_key_value_file(path)
        except Exception as exc:
            return Check(name=name, status=Status.FAIL, detail=str(exc), required=required)
        missing = [k for k in keys if not present.get(k)]
        if missing:
            return Check(
                name=name,
                status=Status.FAIL,
                detail=f"{path} lacks {', '.join(missing)}",
                fix=f"add {'=... and '.join(missing)}=... lines to {path}",
                required=required,
            )
    return Check(name=name, status=Status.OK, detail=f"{path} (mode {mode:04o})", required=required)


def check_credentials(settings: Settings) -> list[Check]:
    couch = settings.pool_kind == "couchdb"
    return [
        check_credentials_file(
            "pool credentials",
            settings.pool_credentials,
            required=couch and settings.pool_credentials.exists(),
            keys=("username", "password") if couch else (),
        ),
        check_credentials_file("LTA credentials", settings.lta_credentials, required=False),
        check_credentials_file("LTA (awe) credentials", settings.awe_config, required=False),
        check_credentials_file("grid proxy", settings.x509_proxy, required=False),
    ]


def check_batch_clients(which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    rows = []
    for command, purpose in BATCH_CLIENTS:
        found = which(command)
        rows.append(
            Check(
                name=command,
                status=Status.INFO,
                detail=f"{purpose}: {found or 'not on PATH'}",
                required=False,
            )
        )
    return rows


def run_checks(settings: Settings) -> list[Check]:
    """All checks, in the order a user reads them."""
    return [
        check_python(),
        *check_gfal2(),
        *check_dp3(),
        check_casacore(),
        *check_reduction(),
        check_measures_data(),
        *check_pool(settings),
        *check_credentials(settings),
        *check_batch_clients(),
    ]
