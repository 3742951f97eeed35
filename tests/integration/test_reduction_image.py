"""The ``image`` step on real WSClean (Debian's ``wsclean``): a synthetic 12-station band of
4 subbands with a 10 Jy point source off the phase centre is imaged through the step as a
pilot plans it, and the source is measured where it should be, as bright as it should be."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits  # type: ignore[import-untyped]
from PIL import Image

from gridlrt.demo.synthetic_ms import SyntheticMSSpec
from gridlrt.errors import WSCleanError
from gridlrt.reduction.image import ImageProducts, image_band, imaging_settings, main
from gridlrt.reduction.measure import ExpectedSource, ImageMeasurement, measure_sources
from gridlrt.reduction.wsclean import find_wsclean, read_uv_extent, wsclean_version
from gridlrt.tokens import new_token
from gridlrt.worker.plan import plan_token
from gridlrt.worker.steps import load_step


@pytest.fixture(autouse=True)
def _wsclean() -> None:
    """WSClean is a required component here (make setup installs Debian's): fail, never skip."""
    assert find_wsclean() is not None, "wsclean is not on PATH; run make setup"


BAND = dict(stations=12, channels=16, timeslots=60)
SUBBANDS = (100, 101, 102, 103)
SPEC = SyntheticMSSpec(**BAND)  # type: ignore[arg-type]


def make_band(make_ms: Callable[..., Path], directory: Path) -> list[Path]:
    return [make_ms(subband=sb, directory=directory, **BAND) for sb in SUBBANDS]


def expected_source() -> ExpectedSource:
    ra, dec = SPEC.source_direction()
    return ExpectedSource(name="src", ra_deg=math.degrees(ra), dec_deg=math.degrees(dec))


def measure(made: ImageProducts | Path, residual: Path | None = None) -> ImageMeasurement:
    if isinstance(made, ImageProducts):
        made, residual = made.image, made.residual
    return measure_sources(made, [expected_source()], residual=residual)


def test_wsclean_version() -> None:
    assert wsclean_version().split(".")[0].isdigit()


def test_image_a_band_and_measure_the_source(make_ms: Callable[..., Path], tmp_path: Path) -> None:
    band = make_band(make_ms, tmp_path / "in")
    extent = read_uv_extent(band)
    assert 1250 < extent.max_baseline_m < 1330  # CS001-CS021 projected
    assert extent.max_freq_hz == pytest.approx(100e6 + 103.5 * 200e6 / 1024, abs=10e3)
    settings, _ = imaging_settings(band, threads=2)
    assert settings.scale_arcsec == 78.0 and settings.size == 288

    made = image_band(band, tmp_path / "out" / "band", settings, extent=extent)
    assert made.wsclean_seconds < 30
    result = measure(made)
    src = result.sources[0]
    assert src.detected and src.snr > 50
    assert src.peak_jy_beam == pytest.approx(SPEC.source_flux_jy, rel=0.05)
    assert src.offset_px < 1.0
    assert result.pixel_arcsec == pytest.approx(78.0)
    assert result.beam is not None and 4 * 60 < result.beam.minor_arcsec < 10 * 60  # minutes
    # the preview decodes, is the image's size, and its brightest spot is the source
    preview = np.asarray(Image.open(made.png))
    assert preview.shape == (288, 288) and preview.max() == 255
    ys, xs = np.nonzero(preview == 255)
    assert math.hypot(xs.mean() - src.x, (287 - ys.mean()) - src.y) < 2
    assert fits.getheader(made.image)["BUNIT"].upper() == "JY/BEAM"
    # inputs untouched: no MODEL_DATA written back
    assert not (band[0] / "MODEL_DATA").exists()


def test_a_wrong_truth_fails(make_ms: Callable[..., Path], tmp_path: Path) -> None:
    """The accuracy asserts above can fail: an image of a 9 Jy source is not 10 Jy within 5 %,
    and 2 pixels away from the source is not within 1 pixel of it."""
    spec = SyntheticMSSpec(source_flux_jy=9.0, **BAND)  # type: ignore[arg-type]
    band = [make_ms(subband=sb, source_flux_jy=9.0, directory=tmp_path, **BAND) for sb in SUBBANDS]
    settings, extent = imaging_settings(band, threads=2)
    made = image_band(band, tmp_path / "nine", settings, extent=extent)
    src = measure(made).sources[0]
    assert src.peak_jy_beam == pytest.approx(spec.source_flux_jy, rel=0.05)
    assert src.peak_jy_beam != pytest.approx(10.0, rel=0.05)
    ra, dec = spec.source_direction()
    away = ExpectedSource(
        name="away", ra_deg=math.degrees(ra) + 2 * 78 / 3600 / math.cos(dec), dec_deg=src.dec_deg
    )
    moved = measure_sources(made.image, [away]).sources[0]
    assert moved.detected and moved.offset_px > 1.5


def test_the_image_step_as_a_pilot_runs_it(make_ms: Callable[..., Path], tmp_path: Path) -> None:
    """plan_token renders the built-in step for a token of 4 subband archives; the planned argv
    (``{local_inputs}`` as one element) runs, and every output to upload exists."""
    work = tmp_path / "work"
    band = make_band(make_ms, work)  # where the pilot unpacks the inputs
    token = new_token(
        "run_image_L123456_SB100-103",
        inputs=[f"file:///lta/{ms.name}.tar" for ms in band],
        step="image",
    ).model_copy(update={"pipeline": "run", "stage": "image", "parameters": {"field_deg": 4}})
    plan = plan_token(load_step("image"), token, workdir=work, storage_root="file:///out")
    assert plan.msin == band
    run = subprocess.run(plan.argv, capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'run_image_L123456_SB100-103-image.fits: 192x192 px of 78"' in run.stdout
    for upload in plan.uploads:
        assert upload.path.is_file() and upload.path.stat().st_size > 0, upload.path
    assert plan.uploads[0].url == "file:///out/run/image/run_image_L123456_SB100-103-image.fits"
    src = measure(plan.uploads[0].path, plan.uploads[1].path).sources[0]
    assert src.detected and src.offset_px < 1.0
    assert src.peak_jy_beam == pytest.approx(SPEC.source_flux_jy, rel=0.05)


def test_a_wsclean_failure_names_its_log(
    make_ms: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ms = make_ms(**BAND)
    settings, extent = imaging_settings([ms], extra_args=["-no-such-option"])
    with pytest.raises(WSCleanError, match=r"wsclean failed \(exit \d+\); log: .*bad-wsclean.log"):
        image_band([ms], tmp_path / "bad", settings, extent=extent)
    code = main([str(ms), "--name", str(tmp_path / "cli"), "--weight", "briggs 0 -no-such"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cli-wsclean.log" in err and "end of the wsclean log" in err
    assert main([str(tmp_path / "missing.MS"), "--name", str(tmp_path / "m")]) == 3
