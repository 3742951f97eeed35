"""The ``image`` step's pure parts: WSClean's argv, the pixel scale and image size, the PNG
writer and preview, and measuring sources in a synthetic image with a hand-made WCS."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits  # type: ignore[import-untyped]
from PIL import Image

from gridlrt.errors import InputError
from gridlrt.reduction.image import parser, png_bytes, preview_pixels, write_png
from gridlrt.reduction.measure import (
    ExpectedSource,
    angular_distance_deg,
    fit_peak,
    image_beam,
    measure_sources,
    pixel_size_arcsec,
    robust_rms,
)
from gridlrt.reduction.wsclean import (
    ImagingSettings,
    choose_image_size,
    choose_pixel_scale,
    wsclean_argv,
)
from gridlrt.tokens import new_token
from gridlrt.worker.plan import validate_step
from gridlrt.worker.steps import load_step

# --- WSClean's argv, pixel scale, image size --------------------------------------------------


def test_argv_has_every_setting_and_the_sets_last() -> None:
    settings = ImagingSettings(size=256, scale_arcsec=78, threads=2, extra_args=["-pol", "I"])
    argv = wsclean_argv([Path("a.MS"), Path("b.MS")], Path("out/band"), settings)
    assert argv[0] == "wsclean" and argv[-2:] == ["a.MS", "b.MS"]
    text = " ".join(argv)
    for expected in (
        "-name out/band",
        "-size 256 256",
        "-scale 78asec",
        "-niter 10000",
        "-mgain 0.8",
        "-auto-threshold 1",
        "-auto-mask 5",
        "-clean-border 5",
        "-weight briggs 0",
        "-j 2",
        "-no-update-model-required -pol I a.MS",
    ):
        assert expected in text
    assert "-data-column" not in argv


def test_argv_without_mask_with_data_column_and_natural_weighting() -> None:
    settings = ImagingSettings(
        size=64,
        scale_arcsec=1.5,
        auto_mask=None,
        clean_border=0,
        weighting="natural",
        data_column="CORRECTED_DATA",
    )
    argv = wsclean_argv([Path("x.MS")], Path("n"), settings, executable="/usr/bin/wsclean")
    assert argv[0] == "/usr/bin/wsclean"
    assert "-auto-mask" not in argv and "-clean-border" not in argv and "-j" not in argv
    assert argv[argv.index("-weight") + 1] == "natural"
    assert argv[argv.index("-data-column") + 1] == "CORRECTED_DATA"
    assert argv[argv.index("-scale") + 1] == "1.5asec"
    with pytest.raises(InputError, match="at least one"):
        wsclean_argv([], Path("n"), settings)


def test_pixel_scale_from_the_longest_baseline() -> None:
    # 12 core stations (1320 m) at 120 MHz: lambda/B = 2.498 m / 1320 m = 390", 5 px: 78"
    assert choose_pixel_scale(1320.0, 120e6) == 78.0
    assert choose_pixel_scale(1320.0, 120e6, oversample=4) == 97.0
    # 8 stations (530 m) at 150 MHz: beam ~13', so minutes of arc per pixel, not arcseconds
    assert 150 < choose_pixel_scale(530.0, 150e6) < 160
    # the full Dutch array (120 km) is where arcseconds come from: kept to 3 decimals
    assert choose_pixel_scale(120e3, 150e6) == pytest.approx(0.687, abs=1e-3)
    with pytest.raises(InputError, match="all baselines flagged"):
        choose_pixel_scale(0.0, 150e6)


def test_image_size_covers_the_field() -> None:
    assert choose_image_size(78.0) == 288  # 6 deg / 78" = 277 -> 288
    assert choose_image_size(78.0, 3.0) == 160
    assert choose_image_size(600.0, 1.0) == 64  # at least two multiples
    assert choose_image_size(0.5, 10.0) == 8192  # at most the maximum
    assert choose_image_size(78.0) % 2 == 0


def test_step_parameters_parse_in_the_module() -> None:
    step = load_step("image")
    token = new_token("image_L1_SB100-109", inputs=["file:///in/L1_SB100-109.MS.tar"])
    token = token.model_copy(update={"pipeline": "run", "stage": "image", "step": "image"})
    plan = validate_step(step, token, storage_root="file:///out")
    assert plan.argv[1:3] == ["-m", "gridlrt.reduction.image"]
    args = parser().parse_args(plan.argv[3:])
    assert args.size is None and args.scale is None and args.data_column is None
    assert args.weight == "briggs 0" and args.auto_mask == 5.0 and args.threads == 1
    assert [u.url.rsplit("/", 1)[1] for u in plan.uploads] == [
        "image_L1_SB100-109-image.fits",
        "image_L1_SB100-109-residual.fits",
        "image_L1_SB100-109.png",
        "image_L1_SB100-109-wsclean.log",
    ]
    assert plan.uploads[0].url == "file:///out/run/image/image_L1_SB100-109-image.fits"
    assert parser().parse_args(["a", "--name", "n", "--auto-mask", "none"]).auto_mask is None


# --- the PNG ------------------------------------------------------------------------------


def test_png_round_trip_greyscale_and_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(37, 53), dtype=np.uint8)
    decoded = np.asarray(Image.open(write_png(tmp_path / "g.png", grey)))
    assert decoded.shape == (37, 53) and np.array_equal(decoded, grey)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    decoded_rgb = np.asarray(Image.open(io.BytesIO(png_bytes(rgb))).convert("RGB"))
    assert np.array_equal(decoded_rgb, rgb)


def test_png_refuses_what_it_cannot_write() -> None:
    for bad in (np.zeros((2, 2, 4)), np.zeros((0, 3)), np.full((2, 2), 300), np.full((1, 1), -1)):
        with pytest.raises(InputError):
            png_bytes(bad)
    with pytest.raises(InputError, match="finite"):
        png_bytes(np.array([[np.nan, 1.0]]))


def test_preview_puts_north_up_and_stretches() -> None:
    plane = np.zeros((20, 30))
    plane[15, 3] = 100.0  # a bright pixel near the top (north) of the FITS plane
    plane[0, 0] = np.nan
    pixels = preview_pixels(plane)
    assert pixels.dtype == np.uint8 and pixels.shape == (20, 30)
    assert pixels[20 - 1 - 15, 3] == 255 and pixels[19, 0] == 0  # flipped; NaN black
    assert preview_pixels(np.full((3, 3), np.nan)).max() == 0


# --- measuring sources --------------------------------------------------------------------

PIXEL_DEG = 78.0 / 3600.0
CENTRE = (123.4, 48.2)  # deg: 3C196's field
BEAM = (0.30, 0.10, 56.0)  # BMAJ, BMIN (deg), BPA: a 12-station snapshot's elongated beam


def wsclean_like_header(size: int) -> fits.Header:
    """A WSClean header: SIN projection, RA, DEC, FREQ and STOKES axes, a restoring beam."""
    header = fits.Header()
    header["NAXIS"] = 4
    for axis, n in enumerate((size, size, 1, 1), start=1):
        header[f"NAXIS{axis}"] = n
    header["BUNIT"] = "JY/BEAM"
    header["BMAJ"], header["BMIN"], header["BPA"] = BEAM
    axes = [
        ("RA---SIN", size // 2 + 1, CENTRE[0], -PIXEL_DEG, "deg"),
        ("DEC--SIN", size // 2 + 1, CENTRE[1], PIXEL_DEG, "deg"),
        ("FREQ", 1, 120e6, 781250.0, "Hz"),
        ("STOKES", 1, 1.0, 1.0, ""),
    ]
    for axis, (ctype, crpix, crval, cdelt, cunit) in enumerate(axes, start=1):
        header[f"CTYPE{axis}"] = ctype
        header[f"CRPIX{axis}"] = crpix
        header[f"CRVAL{axis}"] = crval
        header[f"CDELT{axis}"] = cdelt
        header[f"CUNIT{axis}"] = cunit
    return header


def gaussian_image(size: int, x0: float, y0: float, peak: float, noise: float) -> np.ndarray:
    """The restoring beam (rotated elliptical Gaussian) at (x0, y0) plus white noise, 4D."""
    fwhm_to_sigma = 1 / (2 * math.sqrt(2 * math.log(2)))
    major = BEAM[0] / PIXEL_DEG * fwhm_to_sigma
    minor = BEAM[1] / PIXEL_DEG * fwhm_to_sigma
    pa = math.radians(BEAM[2])  # east of north: +y towards -x
    yy, xx = np.indices((size, size), dtype=np.float64)
    dx, dy = xx - x0, yy - y0
    along = -dx * math.sin(pa) + dy * math.cos(pa)
    across = dx * math.cos(pa) + dy * math.sin(pa)
    beam = peak * np.exp(-0.5 * ((along / major) ** 2 + (across / minor) ** 2))
    rng = np.random.default_rng(7)
    return (beam + rng.normal(0, noise, beam.shape))[None, None, :, :]


def test_fit_peak_is_exact_for_a_gaussian() -> None:
    plane = gaussian_image(64, 30.37, 33.81, 10.0, 0.0)[0, 0]
    y, x, peak = fit_peak(plane, 34, 30)
    assert (y, x, peak) == pytest.approx((33.81, 30.37, 10.0), abs=1e-9)
    assert fit_peak(plane, 0, 5)[:2] == (0.0, 5.0)  # on the edge: the pixel itself


def test_measure_a_source_at_a_sub_pixel_position() -> None:
    size = 128
    header = wsclean_like_header(size)
    from astropy.wcs import WCS  # type: ignore[import-untyped]

    truth_x, truth_y = 52.37, 70.62
    ra, dec = WCS(header).celestial.pixel_to_world_values(truth_x, truth_y)
    data = gaussian_image(size, truth_x, truth_y, 10.0, 0.01)
    # expected 2 px off (as a calibration error would put it), plus one source that is not there
    expected = [
        ExpectedSource(name="src", ra_deg=float(ra) + 2 * PIXEL_DEG, dec_deg=float(dec)),
        ExpectedSource(name="ghost", ra_deg=CENTRE[0] - 1.0, dec_deg=CENTRE[1] + 0.8),
    ]
    result = measure_sources((data, header), expected)
    src, ghost = result.sources
    assert src.detected and src.snr > 500
    assert src.peak_jy_beam == pytest.approx(10.0, rel=0.01)
    assert math.hypot(src.x - truth_x, src.y - truth_y) < 0.1
    assert angular_distance_deg(src.ra_deg, src.dec_deg, float(ra), float(dec)) * 3600 < 0.1 * 78
    assert src.offset_px == pytest.approx(2 * math.cos(math.radians(dec)), abs=0.15)
    assert not ghost.detected and ghost.snr < 5
    assert result.rms_jy_beam == pytest.approx(0.01, rel=0.1)
    assert result.pixel_arcsec == pytest.approx(78.0)
    assert result.frequency_hz == 120e6
    assert result.beam is not None and result.beam.major_arcsec == pytest.approx(1080.0)
    assert result.search_radius_px == pytest.approx(3 * 1080 / 78)


def test_a_wrong_flux_or_position_is_noticed() -> None:
    """The test above can fail: an image of a 9 Jy source at another place is not 10 Jy there."""
    header = wsclean_like_header(128)
    data = gaussian_image(128, 52.37, 70.62, 9.0, 0.01)
    from astropy.wcs import WCS  # type: ignore[import-untyped]

    ra, dec = WCS(header).celestial.pixel_to_world_values(52.37 + 0.5, 70.62)
    src = measure_sources((data, header), [ExpectedSource(name="s", ra_deg=ra, dec_deg=dec)])
    assert src.sources[0].peak_jy_beam != pytest.approx(10.0, rel=0.01)
    assert src.sources[0].offset_px > 0.4


def test_a_source_beyond_the_search_radius_is_not_detected() -> None:
    """The brightest pixel of the search circle is on its rim (a slope): not a detection."""
    header = wsclean_like_header(128)
    data = gaussian_image(128, 64.0, 64.0, 10.0, 0.01)
    from astropy.wcs import WCS  # type: ignore[import-untyped]

    ra, dec = WCS(header).celestial.pixel_to_world_values(64.0, 64.0 + 12)
    far = ExpectedSource(name="s", ra_deg=float(ra), dec_deg=float(dec))
    result = measure_sources((data, header), [far], search_radius_px=8)
    assert not result.sources[0].detected and result.sources[0].snr > 5
    with pytest.raises(InputError, match="outside the image"):
        measure_sources((data, header), [ExpectedSource(name="x", ra_deg=150.0, dec_deg=10.0)])


def test_measure_reads_fits_and_a_residual(tmp_path: Path) -> None:
    header = wsclean_like_header(64)
    image = tmp_path / "band-image.fits"
    fits.PrimaryHDU(gaussian_image(64, 30.2, 31.7, 5.0, 0.02).astype(np.float32), header).writeto(
        image
    )
    residual = np.random.default_rng(3).normal(0, 0.05, (1, 1, 64, 64))
    from astropy.wcs import WCS  # type: ignore[import-untyped]

    ra, dec = WCS(header).celestial.pixel_to_world_values(30.2, 31.7)
    result = measure_sources(
        image, [ExpectedSource(name="s", ra_deg=ra, dec_deg=dec)], residual=residual
    )
    assert result.image == str(image) and result.rms_jy_beam == pytest.approx(0.05, rel=0.05)
    assert result.sources[0].peak_jy_beam == pytest.approx(5.0, rel=0.01)
    assert pixel_size_arcsec(header) == pytest.approx(78.0)
    assert image_beam(fits.Header()) is None


def test_robust_rms_ignores_sources() -> None:
    noise = np.random.default_rng(5).normal(0, 2.0, 100_000)
    noise[:200] = 1000.0  # a bright source
    assert robust_rms(noise) == pytest.approx(2.0, rel=0.02)
    with pytest.raises(InputError):
        robust_rms(np.array([np.nan]))
