"""The ``image`` step: one band's measurement sets to a FITS image with WSClean, plus a PNG.

``python -m gridlrt.reduction.image MS [MS ...] --name PREFIX`` images all sets together
(Stokes I, multi-frequency synthesis over the band) and leaves:

* ``PREFIX-image.fits``: the restored image (Jy/beam), what an astronomer looks at;
* ``PREFIX-residual.fits``: what cleaning left, for the noise and for checking the clean;
* ``PREFIX.png``: a greyscale preview of the restored image (asinh stretch between
  percentiles; north up, east left, no axes);
* ``PREFIX-wsclean.log``: WSClean's own log;

and WSClean's ``-model``, ``-dirty`` and ``-psf`` images beside them. The pixel scale is chosen
from the data by default (:func:`gridlrt.reduction.wsclean.choose_pixel_scale`: 5 pixels across
λ_min / B_max; the restoring beam's minor axis is then
~4-5 pixels) and the size to cover ``--field-deg`` degrees (±3 by default).

A positional argument may hold several paths separated by spaces: a step's ``{local_inputs}``
renders as one argv element (so the sets' paths must not contain spaces).

This module also owns the preview (:func:`preview_pixels`) and a PNG writer that needs only
numpy and zlib (:func:`png_bytes`; worker nodes need not have matplotlib).
"""

from __future__ import annotations

import argparse
import logging
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ValidationError

from gridlrt.errors import GridlrtError, InputError, WSCleanError
from gridlrt.extras import needs_extra
from gridlrt.reduction.measure import image_plane
from gridlrt.reduction.wsclean import (
    DEFAULT_FIELD_DEG,
    DEFAULT_OVERSAMPLE,
    ImagingSettings,
    UVExtent,
    choose_image_size,
    choose_pixel_scale,
    read_uv_extent,
    require_wsclean,
    run_wsclean,
    wsclean_argv,
)

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_bytes(pixels: npt.ArrayLike) -> bytes:
    """An 8-bit PNG of ``pixels``: shape (height, width) greyscale or (height, width, 3) RGB,
    values 0-255 (row 0 is the top of the picture)."""
    array = np.asarray(pixels)
    if array.ndim == 2:
        colour_type = 0
    elif array.ndim == 3 and array.shape[2] == 3:
        colour_type = 2
    else:
        raise InputError(f"a PNG needs (h, w) or (h, w, 3) pixels, not shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError("a PNG needs at least one pixel")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputError("PNG pixels must be finite")
    if array.min() < 0 or array.max() > 255:
        raise InputError("PNG pixels must be 0-255")
    rows = np.ascontiguousarray(array.astype(np.uint8)).reshape(array.shape[0], -1)
    raw = np.hstack([np.zeros((rows.shape[0], 1), dtype=np.uint8), rows])  # filter 0 per row
    height, width = array.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def write_png(path: Path, pixels: npt.ArrayLike) -> Path:
    """Write :func:`png_bytes` of ``pixels`` to ``path``; returns ``path``."""
    path.write_bytes(png_bytes(pixels))
    return path


def preview_pixels(
    plane: npt.ArrayLike, *, low: float = 1.0, high: float = 99.9, softening: float = 0.05
) -> npt.NDArray[np.uint8]:
    """8-bit greyscale of a FITS image plane (``plane[y, x]``, y increasing north): the values
    between the ``low`` and ``high`` percentiles, asinh-stretched (``softening``: where the
    stretch turns from linear to logarithmic, as a fraction of the range), flipped so north is
    up. NaNs (blanked pixels) are black."""
    data = np.asarray(plane, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    lo, hi = np.percentile(data[finite], [low, high])
    span = hi - lo if hi > lo else 1.0
    scaled = np.clip((np.where(finite, data, lo) - lo) / span, 0.0, 1.0)
    stretched = np.arcsinh(scaled / softening) / np.arcsinh(1.0 / softening)
    return np.asarray(np.round(stretched[::-1] * 255), dtype=np.uint8)


class ImageProducts(BaseModel):
    """What :func:`image_band` made."""

    image: Path
    residual: Path
    png: Path
    log: Path
    settings: ImagingSettings
    extent: UVExtent | None
    wsclean_seconds: float


def imaging_settings(
    ms: Sequence[Path],
    *,
    size: int | None = None,
    scale_arcsec: float | None = None,
    field_deg: float = DEFAULT_FIELD_DEG,
    oversample: float = DEFAULT_OVERSAMPLE,
    **options: object,
) -> tuple[ImagingSettings, UVExtent | None]:
    """Settings for imaging ``ms``: the given pixel scale, or one from the sets' longest
    baseline and highest frequency; the given size, or one covering ``field_deg`` degrees.
    ``options`` are the other :class:`ImagingSettings` fields."""
    extent: UVExtent | None = None
    if scale_arcsec is None:
        extent = read_uv_extent(ms)
        scale_arcsec = choose_pixel_scale(extent.max_baseline_m, extent.max_freq_hz, oversample)
    if size is None:
        size = choose_image_size(scale_arcsec, field_deg)
    try:
        settings = ImagingSettings.model_validate(
            {"size": size, "scale_arcsec": scale_arcsec, **options}
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"imaging setting {where}: {err['msg']}") from exc
    return settings, extent


def image_band(
    ms: Sequence[Path],
    name: Path,
    settings: ImagingSettings,
    *,
    extent: UVExtent | None = None,
    timeout: float | None = None,
) -> ImageProducts:
    """Image ``ms`` with WSClean into ``<name>-image.fits`` (and the rest, see the module) and
    write the PNG preview of the restored image."""
    with needs_extra("the image step"):
        from astropy.io import fits  # type: ignore[import-untyped]  # imported on use: heavy

    missing = [str(p) for p in ms if not p.is_dir()]
    if missing:
        raise InputError(f"no such measurement set: {', '.join(missing)}")
    exe = require_wsclean()
    name.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(f"{name}-wsclean.log")
    seconds = run_wsclean(
        wsclean_argv(ms, name, settings, executable=exe), log_path, timeout=timeout
    )
    image = Path(f"{name}-image.fits")
    residual = Path(f"{name}-residual.fits")
    for made in (image, residual):
        if not made.is_file():
            raise GridlrtError(f"wsclean did not write {made}; log: {log_path}")
    png = write_png(Path(f"{name}.png"), preview_pixels(image_plane(fits.getdata(image))))
    return ImageProducts(
        image=image,
        residual=residual,
        png=png,
        log=log_path,
        settings=settings,
        extent=extent,
        wsclean_seconds=seconds,
    )


def _auto_or(kind: type[int] | type[float]) -> Callable[[str], int | float | None]:
    def parse(text: str) -> int | float | None:
        if text in ("auto", "none"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: a number or 'auto'") from None

    return parse


def _optional(text: str) -> str | None:
    return None if text in ("", "auto", "none") else text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gridlrt.reduction.image",
        description="Image measurement sets with WSClean: PREFIX-image.fits, "
        "PREFIX-residual.fits and a PREFIX.png preview.",
    )
    p.add_argument("ms", nargs="+", help="measurement sets (one argument may hold several)")
    p.add_argument("--name", required=True, type=Path, help="output prefix (WSClean's -name)")
    p.add_argument("--size", type=_auto_or(int), default=None, help="pixels, or auto")
    p.add_argument("--scale", type=_auto_or(float), default=None, help="arcsec, or auto")
    p.add_argument("--field-deg", type=float, default=DEFAULT_FIELD_DEG, help="for auto size")
    p.add_argument("--oversample", type=float, default=DEFAULT_OVERSAMPLE, help="for auto scale")
    p.add_argument("--niter", type=int, default=10000)
    p.add_argument("--mgain", type=float, default=0.8)
    p.add_argument("--auto-threshold", type=float, default=1.0)
    p.add_argument("--auto-mask", type=_auto_or(float), default=5.0, help="sigma, or none")
    p.add_argument("--clean-border", type=float, default=5.0, help="%% of the image per edge")
    p.add_argument("--weight", default="briggs 0", help="'briggs R', uniform or natural")
    p.add_argument("--threads", type=_auto_or(int), default=None)
    p.add_argument("--data-column", type=_optional, default=None, help="default: WSClean's")
    p.add_argument("--timeout", type=float, default=None, help="seconds for WSClean")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ms = [Path(part) for arg in args.ms for part in arg.split()]
    try:
        settings, extent = imaging_settings(
            ms,
            size=args.size,
            scale_arcsec=args.scale,
            field_deg=args.field_deg,
            oversample=args.oversample,
            niter=args.niter,
            mgain=args.mgain,
            auto_threshold=args.auto_threshold,
            auto_mask=args.auto_mask,
            clean_border=args.clean_border,
            weighting=args.weight,
            threads=args.threads,
            data_column=args.data_column,
        )
        made = image_band(ms, args.name, settings, extent=extent, timeout=args.timeout)
    except GridlrtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        log_path = Path(f"{args.name}-wsclean.log")
        if isinstance(exc, WSCleanError) and log_path.is_file():  # the payload log reaches users
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
            print("\n".join(["--- end of the wsclean log:", *tail]), file=sys.stderr)
        return int(exc.exit_code)
    print(
        f'{made.image}: {settings.size}x{settings.size} px of {settings.scale_arcsec:g}", '
        f"wsclean {made.wsclean_seconds:.1f} s; preview {made.png}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
