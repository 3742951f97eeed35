"""Pure fits over frequency for the calibrator solutions: clock delays and smoothed amplitudes.

This module owns the numbers of the ``cal-solve`` combine and nothing else (numpy only, no
files, no DP3): a station's clock delay from its calibrator phases across every subband
(:func:`fit_clock`), a smooth amplitude bandpass (:func:`smooth_amplitudes`), and the helpers
the combine needs around them (:func:`reference_phases`, :func:`wrap_phase`,
:func:`average_over_time`).

The phase model is LOFAR's clock: ``phase(nu) = offset + 2 pi nu clock`` (radians, Hz,
seconds), the sign DP3 gaincal solves for (``DATA = g_p V conj(g_q)`` with
``g = |g| exp(i phase)``) and DP3 applycal's ``clock`` soltab undoes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Fewest usable points (positive weight, finite phase) a clock fit accepts: two unknowns per
#: series, and a residual to judge the fit by.
MIN_CLOCK_POINTS = 3
#: Default half-width of the delay search (seconds): LOFAR station clock offsets are within a
#: few hundred nanoseconds; the search is narrowed further to what the frequencies resolve.
DEFAULT_MAX_CLOCK_S = 2e-6
#: Coarse grid steps per resolution element (1 / frequency span) of the delay search.
_GRID_OVERSAMPLING = 8
_REFINE_ITERATIONS = 4


class FitError(ValueError):
    """The data cannot support the fit (too few points, no frequency span); the message says
    why in one line."""


@dataclass(frozen=True)
class ClockFit:
    """A clock fit: ``phase(nu) = offsets[k] + 2 pi nu clock`` for each series ``k``."""

    clock: float
    """Seconds."""
    offsets: tuple[float, ...]
    """Radians, wrapped to (-pi, pi], one per phase series (polarisation)."""
    rms: float
    """Weighted rms of the wrapped residuals, radians."""
    n_points: int
    """Points used (positive weight, finite phase), over every series."""

    @property
    def offset(self) -> float:
        """The offset of the first (or only) series."""
        return self.offsets[0]

    def model(self, freqs_hz: npt.ArrayLike, series: int = 0) -> FloatArray:
        """The fitted phase (unwrapped) at ``freqs_hz`` for one series."""
        nu = np.asarray(freqs_hz, dtype=np.float64)
        phase: FloatArray = self.offsets[series] + 2 * np.pi * nu * self.clock
        return phase


@dataclass(frozen=True)
class AmplitudeFit:
    """A smooth amplitude over frequency: a polynomial in ``(nu - centre) / scale``, evaluated
    at the edge value outside the fitted range (no extrapolation)."""

    coefficients: tuple[float, ...]
    """Lowest power first (:class:`numpy.polynomial.Polynomial` order)."""
    centre: float
    scale: float
    low: float
    high: float
    rms: float
    """Weighted rms of the residuals of the points kept."""
    n_points: int
    """Points kept (positive weight, finite, not rejected as outliers)."""

    def __call__(self, freqs_hz: npt.ArrayLike) -> FloatArray:
        nu = np.clip(np.asarray(freqs_hz, dtype=np.float64), self.low, self.high)
        values: FloatArray = np.polynomial.polynomial.polyval(
            (nu - self.centre) / self.scale, np.asarray(self.coefficients)
        )
        return values

    @property
    def mean(self) -> float:
        """The mean of the smooth curve over the fitted range."""
        grid = np.linspace(self.low, self.high, 65)
        return float(np.mean(self(grid)))


def wrap_phase(phase: npt.ArrayLike) -> FloatArray:
    """Phases wrapped to (-pi, pi]."""
    wrapped: FloatArray = np.angle(np.exp(1j * np.asarray(phase, dtype=np.float64)))
    return wrapped


def reference_phases(phases: npt.ArrayLike, ref: int = 0, axis: int = -1) -> FloatArray:
    """Phases minus those of station ``ref`` along the station ``axis``, wrapped; NaN where
    either is NaN."""
    values = np.asarray(phases, dtype=np.float64)
    reference = np.take(values, [ref], axis=axis)
    return wrap_phase(values - reference)


def average_over_time(
    amplitudes: npt.ArrayLike, phases: npt.ArrayLike, weights: npt.ArrayLike, axis: int = 0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Collapse the time ``axis``: weighted mean amplitude, phase of the weighted mean phasor
    (wrap-safe), and the summed weight. Non-finite values count with weight zero; where every
    weight is zero the amplitude and phase are NaN."""
    amp = np.asarray(amplitudes, dtype=np.float64)
    ph = np.asarray(phases, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    usable = (w > 0) & np.isfinite(amp) & np.isfinite(ph)
    w = np.where(usable, w, 0.0)
    total = w.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_amp = np.where(
            total > 0, (np.where(usable, amp, 0.0) * w).sum(axis=axis) / total, np.nan
        )
        phasor = (np.where(usable, np.exp(1j * np.where(usable, ph, 0.0)), 0.0) * w).sum(axis=axis)
    mean_phase = np.where(total > 0, np.angle(phasor), np.nan)
    return mean_amp, mean_phase, total


def _usable(
    freqs_hz: npt.ArrayLike, values: npt.ArrayLike, weights: npt.ArrayLike | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Frequencies (n,), values (n, k) and weights (n, k) with unusable points weighted 0."""
    nu = np.asarray(freqs_hz, dtype=np.float64).reshape(-1)
    y = np.asarray(values, dtype=np.float64)
    if y.ndim == 1 and y.size == nu.size:
        y = y.reshape(nu.size, 1)
    if y.ndim != 2 or y.shape[0] != nu.size:
        raise FitError(f"values of shape {np.shape(values)} do not match {nu.size} frequencies")
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.broadcast_to(w.reshape(y.shape) if w.size == y.size else w, y.shape).astype(np.float64)
    w = np.where(np.isfinite(y) & np.isfinite(nu)[:, None] & (w > 0), w, 0.0)
    return nu, np.where(w > 0, y, 0.0), w


def fit_clock(
    freqs_hz: npt.ArrayLike,
    phases_rad: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    *,
    max_clock_s: float = DEFAULT_MAX_CLOCK_S,
) -> ClockFit:
    """Fit ``phase = offset + 2 pi nu clock`` to wrapped phases.

    ``phases_rad`` is (n,) or (n, k): ``k`` series (e.g. the XX and YY phases of one station)
    that share the clock, each with its own offset. ``weights`` (same shape, or (n,)) of zero,
    and NaN phases, leave a point out.

    Robust to wrapping: a coarse grid search over the delay maximises the coherence
    ``sum_k |sum_j w_j exp(i (phi_jk - 2 pi nu_j tau))|`` (the offsets drop out), over
    ``|tau| <= max_clock_s`` narrowed to half the alias period ``1 / (smallest frequency
    step)``, on a grid of ``1 / (8 * frequency span)``; then weighted least squares on the
    residual phases wrapped about the current model, a few times.

    Raises :class:`FitError` for fewer than :data:`MIN_CLOCK_POINTS` usable points or no
    frequency span among them.
    """
    nu, phi, w = _usable(freqs_hz, phases_rad, weights)
    used = w > 0
    n_points = int(used.sum())
    if n_points < MIN_CLOCK_POINTS:
        raise FitError(f"{n_points} usable phase points; a clock fit needs {MIN_CLOCK_POINTS}")
    nu_used = np.unique(nu[used.any(axis=1)])
    span = float(nu_used[-1] - nu_used[0]) if nu_used.size else 0.0
    if span <= 0:
        raise FitError("every usable phase point is at one frequency; a clock needs a span")
    steps = np.diff(nu_used)
    alias = 1.0 / float(steps.min())
    half = min(max_clock_s, alias / 2)
    step = 1.0 / (_GRID_OVERSAMPLING * span)
    grid = np.arange(-half, half + step / 2, step)
    centre = float(np.average(nu, weights=w.sum(axis=1))) if w.sum() > 0 else float(nu.mean())
    x = nu - centre  # centred frequencies: offset and clock decouple
    phasors = w * np.exp(1j * phi)  # (n, k)
    chunk = max(1, 4_000_000 // max(1, nu.size))
    coherence = np.empty(grid.size)
    for start in range(0, grid.size, chunk):
        taus = grid[start : start + chunk]
        rot = np.exp(-2j * np.pi * np.outer(taus, x))  # (g, n)
        coherence[start : start + chunk] = np.abs(rot @ phasors).sum(axis=1)
    clock = float(grid[int(np.argmax(coherence))])
    offsets = np.angle((np.exp(-2j * np.pi * x * clock)[:, None] * phasors).sum(axis=0))
    for _ in range(_REFINE_ITERATIONS):
        residual = wrap_phase(phi - offsets[None, :] - 2 * np.pi * x[:, None] * clock)
        # weighted least squares of residual = d_offset_k + 2 pi x d_clock, over every series
        k = phi.shape[1]
        design = np.zeros((phi.size, k + 1))
        design[:, :k] = np.tile(np.eye(k), (nu.size, 1))
        design[:, k] = np.repeat(2 * np.pi * x, k)
        root_w = np.sqrt(w.reshape(-1))
        solution, *_ = np.linalg.lstsq(
            design * root_w[:, None], residual.reshape(-1) * root_w, rcond=None
        )
        offsets = offsets + solution[:k]
        clock += float(solution[k])
    residual = wrap_phase(phi - offsets[None, :] - 2 * np.pi * x[:, None] * clock)
    rms = float(np.sqrt(np.sum(w * residual**2) / np.sum(w)))
    # offsets at nu = 0 rather than at the centre frequency
    at_zero = wrap_phase(offsets - 2 * np.pi * centre * clock)
    return ClockFit(
        clock=clock, offsets=tuple(float(o) for o in at_zero), rms=rms, n_points=n_points
    )


def smooth_amplitudes(
    freqs_hz: npt.ArrayLike,
    amplitudes: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    degree: int = 2,
    *,
    reject_sigma: float = 5.0,
) -> AmplitudeFit:
    """A weighted polynomial of ``degree`` (lowered to what the points allow) through the
    amplitudes over frequency, refitted once without points further than ``reject_sigma``
    robust sigmas (1.4826 MAD) from the first fit (RFI-hit subbands). Weights of zero and
    non-finite amplitudes leave a point out; :class:`FitError` when none is left."""
    if degree < 0:
        raise FitError(f"polynomial degree {degree} is negative")
    nu, amp2d, w2d = _usable(freqs_hz, amplitudes, weights)
    if amp2d.shape[1] != 1:
        raise FitError("smooth_amplitudes takes one amplitude per frequency")
    amp, w = amp2d[:, 0], w2d[:, 0]
    keep = w > 0
    if not keep.any():
        raise FitError("no usable amplitude points")
    low, high = float(nu[keep].min()), float(nu[keep].max())
    centre = (low + high) / 2
    scale = (high - low) / 2 or 1.0
    x = (nu - centre) / scale

    def fit(mask: npt.NDArray[np.bool_]) -> FloatArray:
        distinct = np.unique(x[mask]).size
        coefficients = np.polynomial.polynomial.polyfit(
            x[mask], amp[mask], min(degree, distinct - 1), w=np.sqrt(w[mask])
        )
        return np.asarray(coefficients, dtype=np.float64)

    coefficients = fit(keep)
    residual = amp - np.polynomial.polynomial.polyval(x, coefficients)
    sigma = 1.4826 * float(np.median(np.abs(residual[keep])))
    if sigma > 0:
        inliers = keep & (np.abs(residual) <= reject_sigma * sigma)
        if inliers.sum() > coefficients.size and inliers.sum() < keep.sum():
            keep = inliers
            coefficients = fit(keep)
            residual = amp - np.polynomial.polynomial.polyval(x, coefficients)
    rms = float(np.sqrt(np.sum(w[keep] * residual[keep] ** 2) / np.sum(w[keep])))
    return AmplitudeFit(
        coefficients=tuple(float(c) for c in coefficients),
        centre=centre,
        scale=scale,
        low=low,
        high=high,
        rms=rms,
        n_points=int(keep.sum()),
    )


def frequency_grid(freqs_hz: npt.ArrayLike, step_hz: float) -> FloatArray:
    """Points every ``step_hz`` from the lowest to the highest of ``freqs_hz`` (both ends
    included): where smooth solutions are tabulated for applycal's nearest-frequency lookup."""
    nu = np.asarray(freqs_hz, dtype=np.float64)
    low, high = float(np.nanmin(nu)), float(np.nanmax(nu))
    count = max(1, int(np.ceil((high - low) / step_hz - 1e-9)) + 1)
    grid: FloatArray = np.linspace(low, high, count) if count > 1 else np.array([low])
    return grid
