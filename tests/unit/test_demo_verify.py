"""The demo's verification tells a right answer from a wrong one: the truth itself passes; a 3 %
amplitude error, a clock 1 us off, a source 2 pixels away, a flux 10 % low, a missing image or
no calibration at all each fail, and only the rows they touch."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gridlrt.demo.observations import ReductionSpec, Truth, make_truth
from gridlrt.demo.verify import (
    CLOCK_TOLERANCE_S,
    Verification,
    band_frequency_hz,
    verify,
)
from gridlrt.reduction.measure import ImageMeasurement, SourceMeasurement
from gridlrt.reduction.solve import CalibrationSummary, SolutionPoint, StationSolution

PIXEL_ARCSEC = 90.0
CLOCK_OFFSET_S = 37e-9  # DP3 knows no absolute clock: every station's may be shifted alike


@pytest.fixture(scope="module")
def truth() -> Truth:
    return make_truth(ReductionSpec(stations=6, seed=3))


def summary(
    truth: Truth, change: Callable[[StationSolution], StationSolution] | None = None
) -> CalibrationSummary:
    """What cal-solve would write for a perfect solve (clocks shifted by a common offset)."""
    stations = []
    for s in truth.stations:
        solution = StationSolution(
            name=s.name,
            ok=True,
            clock_s=s.clock_s + CLOCK_OFFSET_S,
            phase_offset_rad=[s.phase_rad, s.phase_rad],
            mean_amplitude=[s.mean_amplitude, s.mean_amplitude],
            amplitude_rms=[0.001, 0.001],
            n_points=16,
            points=[SolutionPoint(freq_hz=120e6, phase_rad=[0.0, 0.0], amplitude=[1.0, 1.0])],
        )
        stations.append(change(solution) if change is not None else solution)
    return CalibrationSummary(
        h5parm="cal_solutions.h5",
        reference_station=truth.reference_station,
        pols=["XX", "YY"],
        subbands=8,
        freq_min_hz=119e6,
        freq_max_hz=121e6,
        amplitude_degree=2,
        stations=stations,
    )


def images(
    truth: Truth, change: Callable[[str, SourceMeasurement], SourceMeasurement] | None = None
) -> dict[str, ImageMeasurement]:
    """Each band image measuring every source where and as bright as it was injected."""
    found = {}
    for band, subbands in truth.bands.items():
        frequency = band_frequency_hz(subbands)
        sources = []
        for s in truth.target.sources:
            measured = SourceMeasurement(
                name=s.name,
                detected=True,
                peak_jy_beam=s.flux_at(frequency) * 1.01,
                snr=500.0,
                ra_deg=s.ra_deg,
                dec_deg=s.dec_deg,
                x=100.3,
                y=80.0,
                expected_x=100.0,
                expected_y=80.0,
                offset_px=0.3,
                offset_arcsec=0.3 * PIXEL_ARCSEC,
            )
            sources.append(change(band, measured) if change is not None else measured)
        found[band] = ImageMeasurement(
            image=f"{band}-image.fits",
            beam=None,
            pixel_arcsec=PIXEL_ARCSEC,
            rms_jy_beam=0.01,
            frequency_hz=frequency,
            search_radius_px=12.0,
            sources=sources,
        )
    return found


def failing(result: Verification) -> tuple[set[str], set[tuple[str, str]]]:
    return (
        {s.station for s in result.stations if not s.passed},
        {(s.source, s.band) for s in result.sources if not s.passed},
    )


def test_the_right_answer_passes(truth: Truth) -> None:
    result = verify(truth, summary(truth), images(truth))
    assert result.passed and result.calibrated and not result.reasons
    assert len(result.stations) == 6 and len(result.sources) == 4 * 2
    reference = result.stations[0]
    assert reference.reference and reference.injected_clock_s == 0.0
    assert reference.recovered_clock_s == 0.0  # relative to the reference: the offset cancels
    assert result.worst["clock_s"] == pytest.approx(0.0, abs=1e-15)
    assert result.worst["flux"] == pytest.approx(0.01)
    assert result.tolerances.clock_s == pytest.approx(0.512e-6) == CLOCK_TOLERANCE_S
    assert Verification.model_validate_json(result.model_dump_json()) == result


def test_an_amplitude_3_percent_off_fails_that_station(truth: Truth) -> None:
    def off(s: StationSolution) -> StationSolution:
        if s.name != truth.stations[2].name:
            return s
        return s.model_copy(update={"mean_amplitude": [a * 1.03 for a in s.mean_amplitude]})

    result = verify(truth, summary(truth, off), images(truth))
    assert not result.passed and failing(result) == ({truth.stations[2].name}, set())
    row = result.stations[2]
    assert row.clock_ok and not row.amplitude_ok and row.amplitude_error == pytest.approx(0.03)
    assert result.reasons == ["amplitude of 1 of 6 station(s) off"]


def test_a_clock_1_us_off_fails_that_station(truth: Truth) -> None:
    def off(s: StationSolution) -> StationSolution:
        if s.name != truth.stations[4].name:
            return s
        return s.model_copy(update={"clock_s": (s.clock_s or 0.0) + 1e-6})

    result = verify(truth, summary(truth, off), images(truth))
    assert failing(result) == ({truth.stations[4].name}, set())
    assert result.stations[4].clock_error_s == pytest.approx(1e-6)
    assert result.stations[4].amplitude_ok and not result.stations_passed


def test_a_reference_clock_off_moves_every_other_station(truth: Truth) -> None:
    def off(s: StationSolution) -> StationSolution:
        if s.name != truth.reference_station:
            return s
        return s.model_copy(update={"clock_s": (s.clock_s or 0.0) + 1e-6})

    result = verify(truth, summary(truth, off), images(truth))
    assert failing(result)[0] == {s.name for s in truth.stations[1:]}


def test_a_source_2_pixels_away_fails_in_that_band(truth: Truth) -> None:
    band = sorted(truth.bands)[1]

    def away(label: str, m: SourceMeasurement) -> SourceMeasurement:
        if label != band or m.name != "S2":
            return m
        return m.model_copy(update={"offset_px": 2.0, "offset_arcsec": 2 * PIXEL_ARCSEC})

    result = verify(truth, summary(truth), images(truth, away))
    assert failing(result) == (set(), {("S2", band)})
    [row] = [s for s in result.sources if not s.passed]
    assert row.flux_ok and not row.position_ok and result.worst["offset_px"] == 2.0
    assert result.reasons == ["position of 1 of 8 source measurement(s) off"]


def test_a_flux_10_percent_low_fails(truth: Truth) -> None:
    def low(label: str, m: SourceMeasurement) -> SourceMeasurement:
        if m.name != "S1":
            return m
        return m.model_copy(update={"peak_jy_beam": m.peak_jy_beam / 1.01 * 0.9})

    result = verify(truth, summary(truth), images(truth, low))
    assert failing(result) == (set(), {("S1", band) for band in truth.bands})
    assert all(s.flux_error == pytest.approx(-0.1) for s in result.sources if s.source == "S1")


def test_a_missing_image_or_station_fails_rather_than_passing_by_absence(truth: Truth) -> None:
    some = images(truth)
    missing_band = sorted(some)[0]
    del some[missing_band]
    result = verify(truth, summary(truth), some)
    assert failing(result)[1] == {(s.name, missing_band) for s in truth.target.sources}
    assert all(s.measured_flux_jy is None for s in result.sources if s.band == missing_band)

    def flagged(s: StationSolution) -> StationSolution:
        if s.name != truth.stations[1].name:
            return s
        return s.model_copy(update={"ok": False, "problem": "all flagged", "clock_s": None})

    result = verify(truth, summary(truth, flagged), images(truth))
    assert failing(result)[0] == {truth.stations[1].name}
    assert result.stations[1].problem == "all flagged"
    assert not verify(truth, summary(truth), {}).passed


def test_no_calibration_compares_with_unit_gains(truth: Truth) -> None:
    result = verify(truth, None, images(truth))
    assert not result.calibrated and not result.stations_passed
    assert all(s.recovered_amplitude == 1.0 and s.recovered_clock_s == 0.0 for s in result.stations)
    assert failing(result)[0] == {s.name for s in truth.stations if abs(s.amplitude - 1) > 0.02}
