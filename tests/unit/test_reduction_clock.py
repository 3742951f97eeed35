"""The pure fits of the cal-solve combine: clock delays from wrapped phases, smoothed
amplitudes, phase referencing and time averaging (gridlrt.reduction.clock)."""

from __future__ import annotations

import numpy as np
import pytest

from gridlrt.reduction.clock import (
    FitError,
    average_over_time,
    fit_clock,
    frequency_grid,
    reference_phases,
    smooth_amplitudes,
    wrap_phase,
)

SUBBAND_HZ = 195_312.5
#: 8 subbands near 120 MHz, every 5th (alias period of the delay: 1 / 976.6 kHz = 1.02 us)
FREQS = 100e6 + np.arange(100, 140, 5) * SUBBAND_HZ
CLOCKS = np.linspace(-300e-9, 300e-9, 41)


def phases(clock: float, offset: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    return wrap_phase(offset + 2 * np.pi * FREQS * clock + rng.normal(0, noise, FREQS.size))


def in_band_error(fit_clock_s: float, fit_offset: float, clock: float, offset: float) -> float:
    """Largest phase difference of the fitted and the true model over the band (radians)."""
    diff = (fit_offset - offset) + 2 * np.pi * FREQS * (fit_clock_s - clock)
    return float(np.abs(wrap_phase(diff)).max())


@pytest.mark.parametrize("clock", CLOCKS)
def test_clock_recovered_within_a_nanosecond_from_noisy_wrapped_phases(clock: float) -> None:
    rng = np.random.default_rng(int(abs(clock) * 1e12) + 7)
    offset = rng.uniform(-np.pi, np.pi)
    observed = phases(clock, offset, 0.01, rng)
    assert np.ptp(np.unwrap(observed)) > 0 or clock == 0  # the data do wrap at large clocks
    fit = fit_clock(FREQS, observed)
    assert abs(fit.clock - clock) < 1e-9
    assert in_band_error(fit.clock, fit.offset, clock, offset) < 0.05
    assert fit.rms < 0.03
    assert fit.n_points == FREQS.size


def test_phases_wrap_many_times_across_the_band() -> None:
    # 300 ns over 6.8 MHz is 2 turns; at 120 MHz the phase is 36 turns from zero
    rng = np.random.default_rng(1)
    observed = phases(300e-9, 2.5, 0.0, rng)
    assert np.abs(np.diff(observed)).max() > np.pi / 2  # wrapped
    fit = fit_clock(FREQS, observed)
    assert fit.clock == pytest.approx(300e-9, abs=1e-12)
    assert in_band_error(fit.clock, fit.offset, 300e-9, 2.5) < 1e-6


def test_consecutive_subbands_and_two_polarisations_share_one_clock() -> None:
    rng = np.random.default_rng(2)
    nu = 100e6 + np.arange(100, 108) * SUBBAND_HZ
    both = np.stack(
        [
            wrap_phase(off + 2 * np.pi * nu * -173e-9 + rng.normal(0, 0.005, nu.size))
            for off in (0.4, -2.9)
        ],
        axis=1,
    )
    fit = fit_clock(nu, both)
    assert fit.clock == pytest.approx(-173e-9, abs=3e-9)
    assert len(fit.offsets) == 2 and fit.n_points == 16
    for k, off in enumerate((0.4, -2.9)):
        model = fit.model(nu, series=k)
        assert np.abs(wrap_phase(model - (off + 2 * np.pi * nu * -173e-9))).max() < 0.02


def test_weights_leave_out_bad_points() -> None:
    rng = np.random.default_rng(3)
    observed = phases(120e-9, 0.0, 0.005, rng)
    corrupted = observed.copy()
    corrupted[[1, 2]] = wrap_phase(corrupted[[1, 2]] + 2.0)  # RFI-hit subbands
    weights = np.ones(FREQS.size)
    weights[[1, 2]] = 0.0
    assert abs(fit_clock(FREQS, corrupted, weights).clock - 120e-9) < 1e-9
    assert abs(fit_clock(FREQS, corrupted).clock - 120e-9) > 1e-9  # unweighted it goes wrong
    nan = observed.copy()
    nan[3] = np.nan  # a flagged solution
    fit = fit_clock(FREQS, nan)
    assert fit.n_points == FREQS.size - 1 and abs(fit.clock - 120e-9) < 1e-9


def test_too_few_points_or_no_span_is_rejected() -> None:
    with pytest.raises(FitError, match="3"):
        fit_clock(FREQS[:2], np.zeros(2))
    with pytest.raises(FitError, match="usable"):
        fit_clock(FREQS, np.zeros(FREQS.size), np.r_[1.0, 1.0, np.zeros(FREQS.size - 2)])
    with pytest.raises(FitError, match="one frequency"):
        fit_clock(np.full(5, 120e6), np.zeros(5))
    with pytest.raises(FitError, match="do not match"):
        fit_clock(FREQS, np.zeros(FREQS.size + 1))


def test_smooth_amplitudes_fit_a_slope_and_reject_an_outlier() -> None:
    rng = np.random.default_rng(4)
    nu = 100e6 + np.arange(100, 160) * SUBBAND_HZ
    truth = 1.2 + 0.05 * (nu - nu.mean()) / 1e7
    amps = truth + rng.normal(0, 0.002, nu.size)
    amps[10] = 5.0  # RFI
    smooth = smooth_amplitudes(nu, amps, degree=2)
    assert np.abs(smooth(nu) - truth).max() < 0.005
    assert smooth.n_points == nu.size - 1
    assert smooth.mean == pytest.approx(truth.mean(), rel=0.01)
    # outside the fitted range: the edge value, not an extrapolated polynomial
    assert smooth(nu[-1] + 1e7)[()] == pytest.approx(smooth(nu[-1])[()])
    flagged = smooth_amplitudes(nu[:3], [1.0, 9.0, 1.0], [1, 0, 1], degree=2)
    assert flagged(nu[1])[()] == pytest.approx(1.0) and flagged.n_points == 2
    with pytest.raises(FitError):
        smooth_amplitudes(nu[:3], [1.0, 1.0, 1.0], [0, 0, 0])


def test_reference_and_time_average() -> None:
    ph = np.array([[3.0, -3.0, 0.5]])  # (freq, ant)
    assert reference_phases(ph, ref=0, axis=1)[0] == pytest.approx([0.0, -6.0 + 2 * np.pi, -2.5])
    # phases near +-pi average to pi, not 0; a zero weight and a NaN are left out
    amp, phase, weight = average_over_time(
        [[1.0], [3.0], [np.nan], [100.0]],
        [[np.pi - 0.1], [-np.pi + 0.1], [0.0], [0.0]],
        [[1.0], [1.0], [1.0], [0.0]],
    )
    assert amp == pytest.approx([2.0]) and abs(abs(phase[0]) - np.pi) < 1e-9 and weight[0] == 2
    empty_amp, empty_phase, empty_weight = average_over_time([[1.0]], [[0.0]], [[0.0]])
    assert np.isnan(empty_amp[0]) and np.isnan(empty_phase[0]) and empty_weight[0] == 0


def test_frequency_grid_covers_the_band_at_the_step() -> None:
    grid = frequency_grid([120e6, 121e6, 120.5e6], 0.25e6)
    assert grid == pytest.approx([120e6, 120.25e6, 120.5e6, 120.75e6, 121e6])
    assert frequency_grid([120e6], 1e5) == pytest.approx([120e6])
