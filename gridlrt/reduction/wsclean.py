"""WSClean on this node: the one adapter gridlrt reaches the imager through.

Owns finding the executable (:func:`find_wsclean`, Debian's ``wsclean`` on PATH), asking its
version (:func:`wsclean_version`), the imaging settings (:class:`ImagingSettings`) and the argv
they make (:func:`wsclean_argv`, pure), choosing the pixel scale and image size from the
longest baseline and highest frequency (:func:`choose_pixel_scale`, :func:`choose_image_size`,
pure; :func:`read_uv_extent` reads both from measurement sets) and running WSClean with its log
in a file (:func:`run_wsclean`). :mod:`gridlrt.reduction.image` is the step that uses them.

LOFAR core stations are at most a few kilometres apart: with 8-16 of them the synthesised beam
at HBA frequencies is minutes of arc (~3'-15'), not LOFAR's usual arcseconds, so the pixel scale
must come from the data, not from a LOFAR habit.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gridlrt.errors import ConfigError, InputError, WSCleanError
from gridlrt.extras import needs_extra

log = logging.getLogger(__name__)

EXECUTABLE = "wsclean"
SPEED_OF_LIGHT = 299_792_458.0
ARCSEC_PER_RADIAN = 180.0 / math.pi * 3600.0
#: Pixels across the synthesised beam's width (λ_min / B_max) that :func:`choose_pixel_scale`
#: aims for; 3-5 is the usual range.
DEFAULT_OVERSAMPLE = 5.0
#: The field :func:`choose_image_size` covers by default: ±3 degrees, a little more than the
#: HBA core station beam's main lobe (FWHM ~4-5 degrees at 120-150 MHz).
DEFAULT_FIELD_DEG = 6.0


class ImagingSettings(BaseModel):
    """What WSClean is asked for (one image of Stokes I over the whole band).

    The defaults clean a point-source field deeply and safely: auto-masking at 5 sigma, then
    cleaning inside the mask down to 1 sigma, never within 5 % of the edges. Measured on a
    12-station, 2-minute synthetic band: plain ``-auto-threshold 3`` stops after a few dozen
    iterations (the dirty image is sidelobe-limited) with the source 35 % low; cleaning deep
    without a mask diverges; without the clean border a few tenths of a Jy go into spurious
    components on the image's edge and the source comes out ~5 % low.
    """

    model_config = ConfigDict(extra="forbid")

    size: int = Field(ge=16, le=32768, description="image width and height, pixels")
    scale_arcsec: float = Field(gt=0, description="pixel size, arcseconds")
    niter: int = Field(default=10000, ge=0, description="maximum minor clean iterations")
    mgain: float = Field(default=0.8, gt=0, le=1, description="major-cycle gain")
    auto_threshold: float = Field(default=1.0, gt=0, description="stop at this many sigma")
    auto_mask: float | None = Field(
        default=5.0, gt=0, description="clean unmasked to this many sigma first (None: no mask)"
    )
    clean_border: float = Field(
        default=5.0, ge=0, lt=50, description="no cleaning in this % of the image at each edge"
    )
    weighting: str = Field(default="briggs 0", description="'briggs R', 'uniform' or 'natural'")
    threads: int | None = Field(default=None, ge=1, description="-j (None: all cores)")
    data_column: str | None = Field(
        default=None, description="None: WSClean's choice (CORRECTED_DATA if present, else DATA)"
    )
    extra_args: list[str] = Field(default_factory=list, description="passed on before the sets")


def find_wsclean() -> Path | None:
    """The ``wsclean`` executable on PATH (Debian's package installs ``/usr/bin/wsclean``)."""
    found = shutil.which(EXECUTABLE)
    return Path(found) if found else None


def require_wsclean() -> Path:
    """:func:`find_wsclean`, or :class:`ConfigError` saying how to install it."""
    exe = find_wsclean()
    if exe is None:
        raise ConfigError(
            "wsclean is not on PATH: install it (Debian/Ubuntu: apt-get install wsclean; "
            "the PyPI package named wsclean is something else)"
        )
    return exe


def wsclean_version(exe: Path | None = None, *, timeout: float = 60) -> str:
    """WSClean's version (``3.1.0``), from ``wsclean --version``; :class:`WSCleanError` when it
    does not start or answer."""
    exe = exe or require_wsclean()
    try:
        run = subprocess.run(  # noqa: S603 - fixed argv, no user data
            [str(exe), "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WSCleanError(f"{exe} --version did not answer: {exc}") from exc
    found = re.search(r"WSClean version (\S+)", run.stdout + run.stderr)
    if run.returncode != 0 or found is None:
        raise WSCleanError(f"{exe} --version failed (exit {run.returncode}): is it WSClean?")
    return found.group(1)


def wsclean_argv(
    ms: Sequence[Path],
    name: Path,
    settings: ImagingSettings,
    *,
    executable: Path | str = EXECUTABLE,
) -> list[str]:
    """The argv imaging every set of ``ms`` together into ``<name>-image.fits`` (restored),
    ``-residual``, ``-model``, ``-dirty`` and ``-psf``. Pure. WSClean does not write the model
    back into the sets (``-no-update-model-required``): the inputs stay as they were."""
    if not ms:
        raise InputError("wsclean needs at least one measurement set")
    s = settings
    argv = [
        str(executable),
        "-name",
        str(name),
        "-size",
        str(s.size),
        str(s.size),
        "-scale",
        f"{s.scale_arcsec:g}asec",
        "-niter",
        str(s.niter),
        "-mgain",
        f"{s.mgain:g}",
        "-auto-threshold",
        f"{s.auto_threshold:g}",
    ]
    if s.auto_mask is not None:
        argv += ["-auto-mask", f"{s.auto_mask:g}"]
    if s.clean_border:
        argv += ["-clean-border", f"{s.clean_border:g}"]
    argv += ["-weight", *s.weighting.split()]
    if s.threads is not None:
        argv += ["-j", str(s.threads)]
    if s.data_column:
        argv += ["-data-column", s.data_column]
    argv += ["-no-update-model-required", *s.extra_args, *map(str, ms)]
    return argv


def choose_pixel_scale(
    max_baseline_m: float, max_freq_hz: float, oversample: float = DEFAULT_OVERSAMPLE
) -> float:
    """Pixel size in arcseconds: the resolution at the highest frequency (λ_min / B_max)
    divided by ``oversample`` pixels, rounded down to a whole arcsecond above 10".

    12 LOFAR core stations (1.3 km) at 120 MHz: λ/B = 6.5', so 78" pixels.
    """
    if max_baseline_m <= 0 or max_freq_hz <= 0 or oversample <= 0:
        raise InputError(
            f"pixel scale from baseline {max_baseline_m} m, frequency {max_freq_hz} Hz, "
            f"oversample {oversample}: all must be positive (are all baselines flagged?)"
        )
    resolution = SPEED_OF_LIGHT / max_freq_hz / max_baseline_m * ARCSEC_PER_RADIAN
    scale = resolution / oversample
    return float(math.floor(scale)) if scale >= 10 else round(scale, 3)


def choose_image_size(
    scale_arcsec: float,
    field_deg: float = DEFAULT_FIELD_DEG,
    *,
    multiple: int = 32,
    maximum: int = 8192,
) -> int:
    """Pixels across an image of ``field_deg`` degrees at ``scale_arcsec``: rounded up to a
    ``multiple`` (FFT-friendly, even), at least 2 multiples, at most ``maximum``."""
    if scale_arcsec <= 0 or field_deg <= 0:
        raise InputError(f'image size for {field_deg} deg at {scale_arcsec}": both must be > 0')
    pixels = math.ceil(field_deg * 3600.0 / scale_arcsec / multiple) * multiple
    return int(min(max(pixels, 2 * multiple), maximum))


class UVExtent(BaseModel):
    """The longest projected baseline and highest channel frequency of some sets."""

    max_baseline_m: float
    max_freq_hz: float


def read_uv_extent(ms: Sequence[Path]) -> UVExtent:
    """The longest projected baseline (sqrt(u²+v²) over unflagged rows) and the highest channel
    frequency of the sets ``ms``, with python-casacore."""
    with needs_extra("reading a measurement set"):
        from casacore import tables

    longest = 0.0
    highest = 0.0
    for path in ms:
        if not (path / "table.dat").is_file():
            raise InputError(f"{path}: not a measurement set (no table.dat in it)")
        try:
            with tables.table(str(path), readonly=True, ack=False) as main:
                uvw = main.getcol("UVW")
                flagged = main.getcol("FLAG_ROW") if "FLAG_ROW" in main.colnames() else None
            with tables.table(f"{path}::SPECTRAL_WINDOW", readonly=True, ack=False) as spw:
                freqs = spw.getcol("CHAN_FREQ")
        except RuntimeError as exc:  # casacore's errors
            raise InputError(f"{path}: cannot read measurement set ({exc})") from exc
        if flagged is not None:
            uvw = uvw[~flagged]
        if len(uvw):
            longest = max(longest, float(((uvw[:, 0] ** 2 + uvw[:, 1] ** 2) ** 0.5).max()))
        if freqs.size:
            highest = max(highest, float(freqs.max()))
    return UVExtent(max_baseline_m=longest, max_freq_hz=highest)


def run_wsclean(argv: Sequence[str], log_path: Path, *, timeout: float | None = None) -> float:
    """Run ``argv`` (from :func:`wsclean_argv`) with its output in ``log_path``; the seconds it
    took. :class:`WSCleanError`, naming the log, when it cannot start, fails or times out."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("running %s (log: %s)", " ".join(argv), log_path)
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as out:
        try:
            run = subprocess.run(  # noqa: S603 - an argv list, no shell
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except OSError as exc:
            raise WSCleanError(
                f"{argv[0]} could not start ({exc.strerror}); log: {log_path}"
            ) from exc
        except subprocess.TimeoutExpired:
            raise WSCleanError(
                f"wsclean did not finish in {timeout:g} s and was stopped; log: {log_path}"
            ) from None
    seconds = time.monotonic() - started
    if run.returncode != 0:
        raise WSCleanError(f"wsclean failed (exit {run.returncode}); log: {log_path}")
    log.info("wsclean took %.2f s", seconds)
    return seconds
