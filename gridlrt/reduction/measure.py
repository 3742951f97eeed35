"""Where sources are in a FITS image and how bright: pure numpy and astropy.wcs.

Owns measuring expected sources in an image (:func:`measure_sources`): for each source, the
brightest pixel within a search radius of where it should be (default 3 beams), a sub-pixel fit
of its position and peak (a 2D quadratic on the log of the 3x3 pixels around the peak, exact for
a Gaussian beam of any shape and angle; :func:`fit_peak`), RA/Dec from the image's WCS, the
offset from the expected position, and whether it is a detection (at least ``min_snr`` times the
image rms and a true local maximum inside the search circle). Also the image's restoring beam
(:func:`image_beam`), its rms (:func:`robust_rms`: MAD, clipped), its pixel size
(:func:`pixel_size_arcsec`) and the 2D plane of a WSClean image (:func:`image_plane`: 4 axes,
RA, DEC, FREQ, STOKES, in SIN projection).

Coordinates are J2000 RA and Dec in **degrees**, as in FITS headers (convert radians with
``math.degrees``). Pixel positions are 0-based (numpy order is ``plane[y, x]``). Fluxes are the
image's unit, Jy/beam for WSClean's restored image.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from gridlrt.errors import InputError
from gridlrt.extras import needs_extra

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
#: MAD of a normal distribution times this is its standard deviation.
MAD_TO_SIGMA = 1.482602218505602


class ExpectedSource(BaseModel):
    """A source to look for: J2000 RA and Dec in degrees."""

    name: str
    ra_deg: float
    dec_deg: float


class Beam(BaseModel):
    """The restoring beam of an image (FWHM)."""

    major_arcsec: float
    minor_arcsec: float
    pa_deg: float


class SourceMeasurement(BaseModel):
    """One expected source as found in the image."""

    name: str
    detected: bool
    """peak >= min_snr x rms, and a local maximum strictly inside the search circle"""
    peak_jy_beam: float
    snr: float
    ra_deg: float
    dec_deg: float
    x: float
    y: float
    """fitted position, 0-based pixels"""
    expected_x: float
    expected_y: float
    offset_px: float
    """distance from the expected position, pixels"""
    offset_arcsec: float


class ImageMeasurement(BaseModel):
    """What :func:`measure_sources` found in one image."""

    image: str | None
    beam: Beam | None
    pixel_arcsec: float
    rms_jy_beam: float
    frequency_hz: float | None
    search_radius_px: float
    sources: list[SourceMeasurement]


def _fits() -> Any:
    with needs_extra("measuring sources in FITS images"):
        from astropy.io import fits  # type: ignore[import-untyped]  # imported on use: heavy

    return fits


def image_plane(data: npt.ArrayLike) -> FloatArray:
    """The 2D (y, x) plane of an image: the first FREQ and STOKES plane of a 4-axis one."""
    array = np.asarray(data, dtype=np.float64)
    while array.ndim > 2:
        array = array[0]
    if array.ndim != 2:
        raise InputError(f"an image needs 2 axes or more, this one has {array.ndim}")
    return array


def load_image(path: Path) -> tuple[FloatArray, Any]:
    """The 2D plane (:func:`image_plane`) and the header of the FITS image ``path``."""
    try:
        with _fits().open(path) as hdus:
            return image_plane(hdus[0].data), hdus[0].header.copy()
    except (OSError, TypeError) as exc:
        raise InputError(f"{path}: cannot read a FITS image ({exc})") from exc


def celestial_wcs(header: Any) -> Any:
    """The RA/Dec part of the header's WCS (FREQ and STOKES axes dropped)."""
    with needs_extra("measuring sources in FITS images"):
        from astropy.wcs import WCS, FITSFixedWarning  # type: ignore[import-untyped]

    with warnings.catch_warnings():  # WSClean's DATE-OBS without MJD-OBS: astropy fills it in
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header).celestial
    if wcs.naxis != 2:
        raise InputError("the image has no RA/Dec axes in its header")
    return wcs


def pixel_size_arcsec(header: Any) -> float:
    """The pixel size in arcseconds (of the Dec axis; WSClean's pixels are square)."""
    with needs_extra("measuring sources in FITS images"):
        from astropy.wcs.utils import proj_plane_pixel_scales  # type: ignore[import-untyped]

    scales = proj_plane_pixel_scales(celestial_wcs(header))
    return float(abs(scales[1])) * 3600.0


def image_beam(header: Any) -> Beam | None:
    """BMAJ/BMIN/BPA of the header (WSClean writes them in degrees), or None."""
    if "BMAJ" not in header or "BMIN" not in header:
        return None
    return Beam(
        major_arcsec=float(header["BMAJ"]) * 3600.0,
        minor_arcsec=float(header["BMIN"]) * 3600.0,
        pa_deg=float(header.get("BPA", 0.0)),
    )


def image_frequency(header: Any) -> float | None:
    """The FREQ axis' reference value (Hz), or None when the image has no FREQ axis."""
    for axis in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{axis}", "")).startswith("FREQ"):
            return float(header[f"CRVAL{axis}"])
    return None


def robust_rms(values: npt.ArrayLike, *, clip: float = 5.0, rounds: int = 5) -> float:
    """The standard deviation of the noise in ``values`` (NaNs ignored): 1.4826 x MAD, with
    values beyond ``clip`` sigma (sources) dropped and the MAD taken again, ``rounds`` times."""
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise InputError("no finite pixel to estimate the noise from")
    sigma = 0.0
    for _ in range(rounds):
        centre = float(np.median(data))
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(data - centre)))
        if sigma == 0.0:
            break
        kept = data[np.abs(data - centre) <= clip * sigma]
        if kept.size == data.size or kept.size == 0:
            break
        data = kept
    return sigma


# Least-squares fit of a + b x + c y + d x² + e x y + f y² to a 3x3 patch (x, y in -1, 0, 1).
_DY, _DX = np.mgrid[-1:2, -1:2]
_DESIGN = np.stack(
    [np.ones(9), _DX.ravel(), _DY.ravel(), _DX.ravel() ** 2, (_DX * _DY).ravel(), _DY.ravel() ** 2],
    axis=1,
).astype(np.float64)
_SOLVE = np.linalg.pinv(_DESIGN)


def fit_peak(plane: FloatArray, y: int, x: int) -> tuple[float, float, float]:
    """Sub-pixel ``(y, x, peak)`` of the maximum at pixel ``(y, x)``: a 2D quadratic through
    the log of its 3x3 pixels (exact for a Gaussian), or through the values themselves when
    one of them is not positive. The pixel itself when the fit has no maximum within a pixel
    of it (or the pixel is on the image's edge)."""
    height, width = plane.shape
    value = float(plane[y, x])
    if not (0 < y < height - 1 and 0 < x < width - 1):
        return float(y), float(x), value
    patch = plane[y - 1 : y + 2, x - 1 : x + 2]
    logs = bool(np.all(patch > 0))
    a, b, c, d, e, f = _SOLVE @ (np.log(patch) if logs else patch).ravel()
    hessian = np.array([[2 * d, e], [e, 2 * f]])
    if np.linalg.det(hessian) <= 0 or hessian[0, 0] >= 0:  # no maximum
        return float(y), float(x), value
    dx, dy = np.linalg.solve(hessian, [-b, -c])
    if abs(dx) > 1 or abs(dy) > 1:
        return float(y), float(x), value
    top = a + b * dx + c * dy + d * dx * dx + e * dx * dy + f * dy * dy
    return float(y + dy), float(x + dx), float(np.exp(top) if logs else top)


def angular_distance_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance between two directions (degrees in, degrees out; Vincenty)."""
    l1, b1, l2, b2 = map(math.radians, (ra1, dec1, ra2, dec2))
    dl = l2 - l1
    num = math.hypot(
        math.cos(b2) * math.sin(dl),
        math.cos(b1) * math.sin(b2) - math.sin(b1) * math.cos(b2) * math.cos(dl),
    )
    den = math.sin(b1) * math.sin(b2) + math.cos(b1) * math.cos(b2) * math.cos(dl)
    return math.degrees(math.atan2(num, den))


def measure_sources(
    image: Path | tuple[npt.ArrayLike, Any],
    sources: Sequence[ExpectedSource],
    *,
    residual: Path | npt.ArrayLike | None = None,
    search_beams: float = 3.0,
    search_radius_px: float | None = None,
    min_snr: float = 5.0,
) -> ImageMeasurement:
    """Measure each of ``sources`` in ``image`` (a FITS path, or ``(data, header)``).

    The search radius is ``search_radius_px``, else ``search_beams`` beam majors (BMAJ), else
    10 pixels. The rms is :func:`robust_rms` of ``residual`` (a FITS path or array, e.g.
    WSClean's ``-residual.fits``) when given, else of the image outside the search circles.
    """
    if isinstance(image, Path):
        plane, header = load_image(image)
        where: str | None = str(image)
    else:
        plane, header = image_plane(image[0]), image[1]
        where = None
    wcs = celestial_wcs(header)
    pixel_arcsec = pixel_size_arcsec(header)
    beam = image_beam(header)
    if search_radius_px is not None:
        radius = float(search_radius_px)
    elif beam is not None:
        radius = search_beams * beam.major_arcsec / pixel_arcsec
    else:
        radius = 10.0
    yy, xx = np.indices(plane.shape, dtype=np.float64)
    expected = [wcs.world_to_pixel_values(s.ra_deg, s.dec_deg) for s in sources]
    circles = [np.hypot(xx - float(ex), yy - float(ey)) <= radius for ex, ey in expected]

    if residual is not None:
        noise = load_image(residual)[0] if isinstance(residual, Path) else image_plane(residual)
        rms = robust_rms(noise)
    else:
        outside = np.ones(plane.shape, dtype=bool)
        for circle in circles:
            outside &= ~circle
        rms = robust_rms(plane[outside] if outside.any() else plane)

    found = []
    for source, (ex, ey), circle in zip(sources, expected, circles, strict=True):
        found.append(
            _measure_one(plane, wcs, source, float(ex), float(ey), circle, radius, rms, min_snr)
        )
        log.debug("%s: %s", source.name, found[-1])
    return ImageMeasurement(
        image=where,
        beam=beam,
        pixel_arcsec=pixel_arcsec,
        rms_jy_beam=rms,
        frequency_hz=image_frequency(header),
        search_radius_px=radius,
        sources=found,
    )


def _measure_one(
    plane: FloatArray,
    wcs: Any,
    source: ExpectedSource,
    ex: float,
    ey: float,
    circle: npt.NDArray[np.bool_],
    radius: float,
    rms: float,
    min_snr: float,
) -> SourceMeasurement:
    if not circle.any():
        raise InputError(
            f"source {source.name} (RA {source.ra_deg:.4f}, Dec {source.dec_deg:.4f} deg) is "
            f"more than {radius:.1f} pixels outside the image"
        )
    masked = np.where(circle, plane, -np.inf)
    py, px = (int(i) for i in np.unravel_index(int(np.argmax(masked)), plane.shape))
    y, x, peak = fit_peak(plane, py, px)
    window = plane[max(py - 1, 0) : py + 2, max(px - 1, 0) : px + 2]
    local_max = bool(plane[py, px] >= window.max())
    inside = math.hypot(px - ex, py - ey) <= radius - 1.0
    snr = peak / rms if rms > 0 else math.inf
    ra, dec = (float(v) for v in wcs.pixel_to_world_values(x, y))
    ra %= 360.0
    return SourceMeasurement(
        name=source.name,
        detected=bool(local_max and inside and snr >= min_snr),
        peak_jy_beam=peak,
        snr=snr,
        ra_deg=ra,
        dec_deg=dec,
        x=x,
        y=y,
        expected_x=ex,
        expected_y=ey,
        offset_px=math.hypot(x - ex, y - ey),
        offset_arcsec=angular_distance_deg(source.ra_deg, source.dec_deg, ra, dec) * 3600.0,
    )
