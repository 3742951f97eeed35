"""Did the reduction get the science right? The demo's answer compared with what was injected.

This module owns the comparison and nothing else: pure functions of the :class:`~gridlrt.demo.
observations.Truth`, the calibration summary the ``cal-solve`` step wrote
(:class:`~gridlrt.reduction.solve.CalibrationSummary`; ``None`` for a run without calibration,
whose applied corrections are unity: amplitude 1, clock 0) and the measurements of each band
image (:class:`~gridlrt.reduction.measure.ImageMeasurement`, by band label). No files, no
numpy, no pool.

The goals of issue 15, as named constants:

* per station, the clock delay relative to the reference station within a tenth of the delay
  that decorrelates a subband (:data:`CLOCK_TOLERANCE_S` = 0.1 / 195.3125 kHz = 0.512 us), and
  the amplitude within 2 % (:data:`AMPLITUDE_TOLERANCE`);
* per target source and band, the peak within 5 % of the injected flux at the band's centre
  frequency (:data:`FLUX_TOLERANCE`) and the position within one pixel
  (:data:`POSITION_TOLERANCE_PX`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, Field

from gridlrt.demo.observations import SUBBAND_WIDTH_HZ, Truth, subband_centre_hz

if TYPE_CHECKING:
    from gridlrt.reduction.measure import ImageMeasurement
    from gridlrt.reduction.solve import CalibrationSummary, StationSolution

__all__ = [
    "AMPLITUDE_TOLERANCE",
    "CLOCK_TOLERANCE_S",
    "FLUX_TOLERANCE",
    "POSITION_TOLERANCE_PX",
    "SourceCheck",
    "StationCheck",
    "Tolerances",
    "Verification",
    "band_frequency_hz",
    "verify",
]

AMPLITUDE_TOLERANCE: Final = 0.02
"""Relative error of a station's recovered gain amplitude."""
CLOCK_TOLERANCE_S: Final = 0.1 / SUBBAND_WIDTH_HZ
"""A tenth of the delay that turns the phase once across a subband: 0.512 microseconds."""
FLUX_TOLERANCE: Final = 0.05
"""Relative error of a source's measured peak against its injected flux."""
POSITION_TOLERANCE_PX: Final = 1.0
"""Distance of a measured source from its injected position, pixels."""


class Tolerances(BaseModel):
    """The goals a run was judged by (printed in the table's title, kept in the JSON)."""

    amplitude: float = AMPLITUDE_TOLERANCE
    clock_s: float = CLOCK_TOLERANCE_S
    flux: float = FLUX_TOLERANCE
    position_px: float = POSITION_TOLERANCE_PX


class StationCheck(BaseModel):
    """One station: injected against recovered clock (relative to the reference station) and
    amplitude."""

    station: str
    reference: bool = False
    injected_clock_s: float
    recovered_clock_s: float | None = Field(description="None: no solution for the station")
    clock_error_s: float | None
    clock_ok: bool
    injected_amplitude: float
    recovered_amplitude: float | None
    amplitude_error: float | None = Field(description="relative: recovered / injected - 1")
    amplitude_ok: bool
    problem: str = ""
    passed: bool


class SourceCheck(BaseModel):
    """One target source in one band image."""

    band: str
    source: str
    frequency_hz: float = Field(description="the band's centre")
    injected_flux_jy: float = Field(description="at frequency_hz")
    measured_flux_jy: float | None = Field(description="peak, Jy/beam; None: no image")
    flux_error: float | None = Field(description="relative: measured / injected - 1")
    flux_ok: bool
    offset_px: float | None
    offset_arcsec: float | None
    position_ok: bool
    detected: bool
    snr: float | None = None
    passed: bool


class Verification(BaseModel):
    """The verification table: a row per station, a row per target source per band."""

    calibrated: bool = Field(description="False: no calibration applied (the control run)")
    tolerances: Tolerances = Field(default_factory=Tolerances)
    reference_station: str
    stations: list[StationCheck]
    sources: list[SourceCheck]
    passed: bool
    stations_passed: bool
    sources_passed: bool
    worst: dict[str, float | None] = Field(
        description="largest |clock error| (s), |amplitude error|, |flux error|, offset (px)"
    )
    reasons: list[str] = Field(description="one line per kind of failure; empty when passed")


def band_frequency_hz(subbands: list[int]) -> float:
    """A band's centre frequency: the middle of its subbands' centres."""
    centres = [subband_centre_hz(sb) for sb in subbands]
    return (min(centres) + max(centres)) / 2


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and math.isfinite(v)]
    return sum(known) / len(known) if known else None


def _relative(value: float | None, reference: float) -> float | None:
    return None if value is None else value / reference - 1.0


def _station_checks(truth: Truth, calibration: CalibrationSummary | None) -> list[StationCheck]:
    solutions: dict[str, StationSolution] = (
        {s.name: s for s in calibration.stations} if calibration is not None else {}
    )
    reference = truth.station(truth.reference_station)
    ref_clock = reference.clock_s if reference is not None else 0.0
    ref_solution = solutions.get(truth.reference_station)
    ref_recovered = ref_solution.clock_s if ref_solution is not None else None
    checks = []
    for station in truth.stations:
        injected_clock = station.clock_s - ref_clock
        recovered_clock: float | None
        recovered_amplitude: float | None
        problem = ""
        if calibration is None:  # nothing applied: unit gains
            recovered_clock, recovered_amplitude = 0.0, 1.0
        else:
            solution = solutions.get(station.name)
            if solution is None or not solution.ok:
                problem = solution.problem if solution is not None else "no solution"
                recovered_clock, recovered_amplitude = None, None
            else:
                recovered_amplitude = _mean(solution.mean_amplitude)
                if solution.clock_s is None or ref_recovered is None:
                    recovered_clock = None
                    problem = "no clock (the reference station has none)"
                else:
                    recovered_clock = solution.clock_s - ref_recovered
        clock_error = None if recovered_clock is None else recovered_clock - injected_clock
        amplitude_error = _relative(recovered_amplitude, station.mean_amplitude)
        clock_ok = clock_error is not None and abs(clock_error) <= CLOCK_TOLERANCE_S
        amplitude_ok = amplitude_error is not None and abs(amplitude_error) <= AMPLITUDE_TOLERANCE
        checks.append(
            StationCheck(
                station=station.name,
                reference=station.name == truth.reference_station,
                injected_clock_s=injected_clock,
                recovered_clock_s=recovered_clock,
                clock_error_s=clock_error,
                clock_ok=clock_ok,
                injected_amplitude=station.mean_amplitude,
                recovered_amplitude=recovered_amplitude,
                amplitude_error=amplitude_error,
                amplitude_ok=amplitude_ok,
                problem=problem,
                passed=clock_ok and amplitude_ok,
            )
        )
    return checks


def _source_checks(truth: Truth, images: Mapping[str, ImageMeasurement]) -> list[SourceCheck]:
    checks = []
    for band, subbands in truth.bands.items():
        frequency = band_frequency_hz(subbands)
        image = images.get(band)
        found = {m.name: m for m in image.sources} if image is not None else {}
        for source in truth.target.sources:
            injected = source.flux_at(frequency)
            measured = found.get(source.name)
            peak = measured.peak_jy_beam if measured is not None else None
            error = _relative(peak, injected)
            offset = measured.offset_px if measured is not None else None
            flux_ok = error is not None and abs(error) <= FLUX_TOLERANCE
            position_ok = offset is not None and offset <= POSITION_TOLERANCE_PX
            checks.append(
                SourceCheck(
                    band=band,
                    source=source.name,
                    frequency_hz=frequency,
                    injected_flux_jy=injected,
                    measured_flux_jy=peak,
                    flux_error=error,
                    flux_ok=flux_ok,
                    offset_px=offset,
                    offset_arcsec=measured.offset_arcsec if measured is not None else None,
                    position_ok=position_ok,
                    detected=measured is not None and measured.detected,
                    snr=measured.snr if measured is not None else None,
                    passed=flux_ok and position_ok,
                )
            )
    return checks


def _worst(values: list[float | None]) -> float | None:
    known = [abs(v) for v in values if v is not None]
    return max(known) if known else None


def _reasons(stations: list[StationCheck], sources: list[SourceCheck]) -> list[str]:
    reasons = []
    for what, failed in (
        ("clock", [s.station for s in stations if not s.clock_ok]),
        ("amplitude", [s.station for s in stations if not s.amplitude_ok]),
    ):
        if failed:
            reasons.append(f"{what} of {len(failed)} of {len(stations)} station(s) off")
    for what, failed in (
        ("flux", [f"{s.source}@{s.band}" for s in sources if not s.flux_ok]),
        ("position", [f"{s.source}@{s.band}" for s in sources if not s.position_ok]),
    ):
        if failed:
            reasons.append(f"{what} of {len(failed)} of {len(sources)} source measurement(s) off")
    return reasons


def verify(
    truth: Truth,
    calibration: CalibrationSummary | None,
    images: Mapping[str, ImageMeasurement],
) -> Verification:
    """Compare a run's answer with the truth. ``calibration`` None: the run applied no
    calibration (its corrections are unity). ``images``: each band image's measurements of the
    target's sources (by the names in ``truth``), by band label; a band without an image fails
    its rows."""
    stations = _station_checks(truth, calibration)
    sources = _source_checks(truth, images)
    stations_passed = all(s.passed for s in stations)
    sources_passed = bool(sources) and all(s.passed for s in sources)
    return Verification(
        calibrated=calibration is not None,
        reference_station=truth.reference_station,
        stations=stations,
        sources=sources,
        passed=stations_passed and sources_passed,
        stations_passed=stations_passed,
        sources_passed=sources_passed,
        worst={
            "clock_s": _worst([s.clock_error_s for s in stations]),
            "amplitude": _worst([s.amplitude_error for s in stations]),
            "flux": _worst([s.flux_error for s in sources]),
            "offset_px": _worst([s.offset_px for s in sources]),
        },
        reasons=_reasons(stations, sources),
    )
