"""The reduction demo's truth: deterministic from the seed, the same gains in both observations,
target sources inside the field and apart from each other, bands as the pipeline groups them."""

from __future__ import annotations

import itertools

import pytest

from gridlrt.demo.observations import (
    ReductionSpec,
    Truth,
    angular_distance_deg,
    band_subbands,
    make_truth,
    subband_centre_hz,
)
from gridlrt.errors import InputError


def test_the_same_seed_gives_the_same_truth_and_another_seed_another() -> None:
    first, again = make_truth(ReductionSpec(seed=7)), make_truth(ReductionSpec(seed=7))
    assert first == again
    assert Truth.model_validate_json(first.model_dump_json()) == first  # truth.json round trip
    other = make_truth(ReductionSpec(seed=8))
    assert [s.amplitude for s in other.stations] != [s.amplitude for s in first.stations]
    assert [s.ra_deg for s in other.target.sources] != [s.ra_deg for s in first.target.sources]


def test_stations_the_first_is_the_reference_and_the_others_are_corrupted() -> None:
    truth = make_truth(ReductionSpec(stations=12))
    assert len(truth.stations) == 12 and truth.reference_station == "CS001HBA0"
    reference, *others = truth.stations
    assert reference.phase_rad == 0.0 and reference.clock_s == 0.0
    assert all(0.6 <= s.amplitude <= 1.4 for s in truth.stations)
    assert all(abs(s.clock_s) <= 1.2e-6 for s in others)
    # some beyond the clock goal (0.512 us): uncalibrated clocks must fail the check too
    assert sum(abs(s.clock_s) > 0.6e-6 for s in others) >= 3
    assert len({round(s.clock_s, 12) for s in others}) == len(others)
    assert max(abs(s.phase_rad) for s in others) > 1.0  # not small: uncalibrated data is wrong
    assert all(s.amplitude_drift == 0.0 and s.mean_amplitude == s.amplitude for s in others)


def test_drift_moves_the_mean_amplitude_by_half_the_observation() -> None:
    spec = ReductionSpec(amplitude_drift=0.2, timeslots=180)  # an hour of 20 s slots
    truth = make_truth(spec)
    drifting = [s for s in truth.stations if s.amplitude_drift]
    assert drifting and all(abs(s.amplitude_drift) <= 0.2 for s in drifting)
    for s in drifting:
        hours = spec.duration_s / 2 / 3600
        assert s.mean_amplitude == pytest.approx(s.amplitude * (1 + s.amplitude_drift * hours))


@pytest.mark.parametrize("seed", [0, 1, 196, 2026])
def test_target_sources_are_in_the_field_and_beams_apart(seed: int) -> None:
    spec = ReductionSpec(seed=seed)
    truth = make_truth(spec)
    target = truth.target
    assert len(target.sources) == spec.target_sources
    beam = truth.beam_arcmin / 60
    assert 3 / 60 < beam < 12 / 60  # lambda / B_max of 16 core stations at 120 MHz
    for source in target.sources:
        distance = angular_distance_deg(
            target.ra_deg, target.dec_deg, source.ra_deg, source.dec_deg
        )
        assert source.distance_deg == pytest.approx(distance)
        assert 2 * beam <= distance <= spec.field_radius_deg
        assert spec.source_flux_jy[0] <= source.flux_jy <= spec.source_flux_jy[1]
    for a, b in itertools.combinations(target.sources, 2):
        apart = angular_distance_deg(a.ra_deg, a.dec_deg, b.ra_deg, b.dec_deg)
        assert apart >= spec.min_separation_beams * beam, (a.name, b.name, apart)
    assert len({s.name for s in target.sources}) == len(target.sources)


def test_the_calibrator_is_3c196_at_its_phase_centre() -> None:
    truth = make_truth(ReductionSpec())
    [source] = truth.calibrator.sources
    assert truth.calibrator.name == source.name == "3C196" and truth.calibrator.obsid == 700700
    assert (source.ra_deg, source.dec_deg) == (truth.calibrator.ra_deg, truth.calibrator.dec_deg)
    assert source.offset_rad == (0.0, 0.0) and 50 <= source.flux_at(120e6) <= 100
    assert truth.target.obsid == 700701


def test_ms_specs_share_the_gains_and_differ_in_sky_and_noise() -> None:
    truth = make_truth(ReductionSpec(stations=6))
    cal = truth.ms_spec(truth.calibrator, 100)
    target = truth.ms_spec(truth.target, 100)
    assert cal.gains == target.gains and cal.gains is not None and len(cal.gains) == 6
    assert cal.gains[1].clock == truth.stations[1].clock_s
    assert len(target.point_sources()) == 4 and cal.point_sources()[0].flux_jy == 83.084
    assert cal.seed != target.seed != truth.ms_spec(truth.target, 101).seed
    assert target.ms_name == "L700701_SAP000_SB100_uv.MS"


def test_bands_follow_the_pipelines_subband_groups() -> None:
    assert band_subbands(ReductionSpec()) == {
        "L700701_SB100-103": [100, 101, 102, 103],
        "L700701_SB104-107": [104, 105, 106, 107],
    }
    assert band_subbands(ReductionSpec(subbands=5, band_subbands=2)) == {
        "L700701_SB100-101": [100, 101],
        "L700701_SB102-103": [102, 103],
        "L700701_SB104-105": [104],
    }
    assert subband_centre_hz(100) == pytest.approx(119.53125e6)


def test_impossible_fields_and_specs_are_refused_in_one_line() -> None:
    with pytest.raises(InputError, match="cannot place 8 sources"):
        make_truth(ReductionSpec(target_sources=8, field_radius_deg=0.3))
    with pytest.raises(ValueError, match="different obsids"):
        ReductionSpec(calibrator_obsid=1, target_obsid=1)
