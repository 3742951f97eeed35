"""The reduction demo's sky and telescope: a calibrator and a target observation, and the truth.

This module owns what ``gridlrt demo`` reduces and what it checks the answer against, all
deterministic from :attr:`ReductionSpec.seed`:

* :func:`make_truth` - the injected corruptions and sky (:class:`Truth`): per station a gain
  amplitude, a phase and a clock delay (the first station is the reference: phase 0, clock 0),
  the same in both observations, as LOFAR's stations are the same for the calibrator and the
  target; the calibrator 3C196 (a bright point source at its own phase centre); and a few point
  sources of the target field, a few beams apart from each other;
* :func:`make_observations` - both observations as the LTA gives them (the tarballs and names
  of :mod:`gridlrt.demo.run`, one ``srm.txt``-style list per observation), ``truth.json`` beside
  them (never shipped to pilots), and the steps directory the pilots get, holding the
  calibrator's sky model (``calibrator.skymodel``, makesourcedb text). Idempotent: a rerun finds
  everything made and makes nothing; a store made from another spec is refused.

Truth is drawn with :class:`random.Random` (pure Python, the same on every platform);
numpy and python-casacore are needed only to make the measurement sets.

Why 16 stations and 20 s timeslots by default (LOFAR correlates every 1-2 s): the target's
point sources must be imaged to 5 % in flux, and a core-only snapshot's sidelobes decide that.
Measured with the image step's defaults on noise-free bands of four subbands (seeds 1-4): 12
stations over 4 minutes (120 x 2 s) left sidelobes of 1.4 Jy rms and fluxes 11-13 % low (the
fainter sources never entered the clean mask); 12 stations over 40 minutes, errors up to 6 %;
16 stations over 40 minutes (120 x 20 s), sidelobes of 0.04 Jy and errors of 1.5 % at most.
Averaging 20 s slots in pairs smears a source 1.5 degrees out by 0.3 %.

Clocks are drawn within +-1.2 us (LOFAR's remote stations have their own clocks, off by up
to microseconds): several beyond the clock goal of a tenth of the delay that decorrelates a
subband (0.512 us), so a run without calibration fails the clock check as well, not only the
amplitudes and the images. The cal-solve step solves per channel (``nchan = 1``), which such
delays need: a whole-subband solution would average a 1-2 us phase ramp (up to 2.4 rad across
195 kHz) and lose amplitude.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gridlrt.demo.run import archive_tarball, pack_archive, write_list
from gridlrt.errors import InputError
from gridlrt.extras import needs_extra

if TYPE_CHECKING:
    from gridlrt.demo.synthetic_ms import PointSource, StationGain, SyntheticMSSpec

log = logging.getLogger(__name__)

__all__ = [
    "CALIBRATOR_LIST",
    "SKYMODEL_NAME",
    "TARGET_LIST",
    "TRUTH_NAME",
    "FieldTruth",
    "ObservationFiles",
    "Observations",
    "ReductionSpec",
    "SourceTruth",
    "StationTruth",
    "Truth",
    "band_subbands",
    "make_observations",
    "make_truth",
    "plan_observations",
    "subband_centre_hz",
]

SUBBAND_WIDTH_HZ: Final = 200e6 / 1024
"""One subband with the 200 MHz clock (as :mod:`gridlrt.demo.synthetic_ms`)."""
SPEED_OF_LIGHT: Final = 299_792_458.0

CALIBRATOR_LIST: Final = "calibrator_srm.txt"
TARGET_LIST: Final = "target_srm.txt"
TRUTH_NAME: Final = "truth.json"
SKYMODEL_NAME: Final = "calibrator.skymodel"
"""The name the shipped cal-target pipeline gives the calibrator's sky model (``skymodel``)."""

# 3C196 is at the default phase centre of synthetic_ms's sets (J2000 08h13m36.0s +48d13m03s);
# its flux is Scaife & Heald (2012)'s 83.084 Jy at 150 MHz with their first spectral index.
_3C196_FLUX_JY: Final = 83.084
_3C196_INDEX: Final = -0.699
_REFERENCE_HZ: Final = 150e6

_MAX_PLACEMENT_TRIES: Final = 10_000


def subband_centre_hz(subband: int) -> float:
    """Centre of an HBA subband (200 MHz clock, Nyquist zone 2), as the synthetic sets have."""
    return 100e6 + subband * SUBBAND_WIDTH_HZ


class ReductionSpec(BaseModel):
    """The two observations of the reduction demo; every number of :class:`Truth` follows from
    these fields (``seed`` above all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=196, ge=0, description="draws the gains and the target's sky")
    calibrator_obsid: int = Field(default=700700, ge=0)
    calibrator_name: str = "3C196"
    target_obsid: int = Field(default=700701, ge=0)
    target_name: str = Field(default="P150+55", description="a LoTSS-style pointing name")
    target_ra_deg: float = Field(default=150.0, ge=0, lt=360)
    target_dec_deg: float = Field(default=55.0, ge=-90, le=90)
    subbands: int = Field(default=8, ge=3, le=244, description="per observation")
    first_subband: int = Field(default=100, ge=0, le=511)
    band_subbands: int = Field(default=4, ge=1, description="consecutive subbands per band")
    stations: int = Field(default=16, ge=4, le=48, description="core HBA ears, CS001HBA0 first")
    channels: int = Field(default=64, ge=4, description="per subband")
    timeslots: int = Field(default=120, ge=4)
    integration_s: float = Field(
        default=20.0, gt=0, le=60, description="seconds per timeslot (LOFAR correlates 1-2 s)"
    )
    noise_jy: float = Field(default=1.0, ge=0, description="sigma of a visibility's re and im")
    amplitude_drift: float = Field(
        default=0.0, ge=0, lt=0.5, description="per hour; each station drifts U(-d, d)"
    )
    target_sources: int = Field(default=4, ge=1, le=8)
    source_flux_jy: tuple[float, float] = Field(default=(3.0, 20.0), description="U(low, high)")
    field_radius_deg: float = Field(default=1.5, gt=0, le=3, description="sources within this")
    min_separation_beams: float = Field(default=6.0, ge=1, description="between target sources")

    @model_validator(mode="after")
    def _consistent(self) -> ReductionSpec:
        if self.first_subband + self.subbands > 512:
            raise ValueError(f"subbands {self.first_subband}+{self.subbands} go beyond SB511")
        if self.calibrator_obsid == self.target_obsid:
            raise ValueError("the calibrator and the target need different obsids")
        if not 0 < self.source_flux_jy[0] <= self.source_flux_jy[1]:
            raise ValueError("source_flux_jy: (low, high) with 0 < low <= high")
        return self

    def subband_numbers(self) -> list[int]:
        return list(range(self.first_subband, self.first_subband + self.subbands))

    @property
    def bands(self) -> int:
        return math.ceil(self.subbands / self.band_subbands)

    @property
    def duration_s(self) -> float:
        return self.timeslots * self.integration_s


class StationTruth(BaseModel):
    """One station's injected gain: ``amplitude (1 + drift t) exp(i (phase + 2 pi nu clock))``."""

    name: str
    amplitude: float
    phase_rad: float
    clock_s: float
    amplitude_drift: float = Field(default=0.0, description="fractional change per hour")
    mean_amplitude: float = Field(description="averaged over the observation: what solving sees")


class SourceTruth(BaseModel):
    """One injected point source."""

    name: str
    ra_deg: float
    dec_deg: float
    offset_rad: tuple[float, float] = Field(description="(RA, Dec) from the phase centre")
    flux_jy: float = Field(description="Stokes I at reference_frequency_hz")
    spectral_index: float
    reference_frequency_hz: float = _REFERENCE_HZ
    distance_deg: float = Field(description="from the phase centre")

    def flux_at(self, frequency_hz: float) -> float:
        """Stokes I (Jy) at ``frequency_hz``."""
        ratio = frequency_hz / self.reference_frequency_hz
        return float(self.flux_jy * ratio**self.spectral_index)


class FieldTruth(BaseModel):
    """One observation's pointing and sky."""

    obsid: int
    name: str
    ra_deg: float
    dec_deg: float
    sources: list[SourceTruth]


class Truth(BaseModel):
    """What was injected into both observations: what the reduction must recover."""

    spec: ReductionSpec
    reference_station: str
    stations: list[StationTruth]
    calibrator: FieldTruth
    target: FieldTruth
    beam_arcmin: float = Field(description="lambda / longest baseline at the lowest frequency")
    bands: dict[str, list[int]] = Field(description="band label -> its target subbands")

    def station(self, name: str) -> StationTruth | None:
        return next((s for s in self.stations if s.name == name), None)

    def gains(self) -> tuple[StationGain, ...]:
        """The stations' corruptions as :mod:`gridlrt.demo.synthetic_ms` applies them."""
        with needs_extra("gridlrt demo"):
            from gridlrt.demo.synthetic_ms import StationGain

        return tuple(
            StationGain(
                amplitude=s.amplitude,
                phase=s.phase_rad,
                clock=s.clock_s,
                amplitude_drift=s.amplitude_drift,
            )
            for s in self.stations
        )

    def ms_spec(self, field: FieldTruth, subband: int) -> SyntheticMSSpec:
        """The synthetic measurement set of one subband of ``field``'s observation."""
        with needs_extra("gridlrt demo"):
            from gridlrt.demo.synthetic_ms import SyntheticMSSpec

        spec = self.spec
        return SyntheticMSSpec(
            obsid=field.obsid,
            subband=subband,
            stations=spec.stations,
            channels=spec.channels,
            timeslots=spec.timeslots,
            integration_time=spec.integration_s,
            phase_centre=(math.radians(field.ra_deg), math.radians(field.dec_deg)),
            target=field.name,
            sources=point_sources(field),
            gains=self.gains(),
            noise_jy=spec.noise_jy,
            seed=_subband_seed(spec.seed, field.obsid, subband),
        )


def point_sources(field: FieldTruth) -> tuple[PointSource, ...]:
    with needs_extra("gridlrt demo"):
        from gridlrt.demo.synthetic_ms import PointSource

    return tuple(
        PointSource(
            name=s.name,
            offset=s.offset_rad,
            flux_jy=s.flux_jy,
            spectral_index=s.spectral_index,
            reference_frequency=s.reference_frequency_hz,
        )
        for s in field.sources
    )


def _subband_seed(seed: int, obsid: int, subband: int) -> int:
    """The noise seed of one subband: distinct per (seed, obsid, subband), stable."""
    return (seed * 1_000_003 + obsid * 1_000 + subband) % (2**63)


def band_subbands(spec: ReductionSpec) -> dict[str, list[int]]:
    """``{label: subbands}`` of the target's bands as the pipeline's ``gather = "subbands:N"``
    groups them: N consecutive subbands from the first, labelled ``L<obsid>_SB<lo>-<hi>``."""
    bands: dict[str, list[int]] = {}
    size = spec.band_subbands
    for subband in spec.subband_numbers():
        low = spec.first_subband + (subband - spec.first_subband) // size * size
        label = f"SB{low:03d}-{low + size - 1:03d}" if size > 1 else f"SB{low:03d}"
        bands.setdefault(f"L{spec.target_obsid}_{label}", []).append(subband)
    return bands


def longest_baseline_m(stations: int) -> float:
    """The longest distance between the first ``stations`` core HBA ears (metres)."""
    with needs_extra("gridlrt demo"):
        from gridlrt.demo.synthetic_ms import CORE_STATIONS

    positions = [pos for _, pos in CORE_STATIONS[:stations]]
    return max(math.dist(a, b) for a in positions for b in positions)


def station_names(stations: int) -> list[str]:
    with needs_extra("gridlrt demo"):
        from gridlrt.demo.synthetic_ms import CORE_STATIONS

    return [name for name, _ in CORE_STATIONS[:stations]]


def angular_distance_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance (degrees in, degrees out)."""
    a1, d1, a2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    cos = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(a2 - a1)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def make_truth(spec: ReductionSpec) -> Truth:
    """The injected gains and skies of ``spec``: the same ``spec`` always gives the same truth,
    another seed another one."""
    rng = random.Random(spec.seed)
    names = station_names(spec.stations)
    hours = spec.duration_s / 2 / 3600.0  # the middle of the observation
    stations = []
    for index, name in enumerate(names):
        amplitude = rng.uniform(0.6, 1.4)
        phase = 0.0 if index == 0 else rng.uniform(-math.pi, math.pi)
        clock = 0.0 if index == 0 else rng.uniform(-1.2e-6, 1.2e-6)
        drift = rng.uniform(-1.0, 1.0) * spec.amplitude_drift + 0.0  # no -0.0
        stations.append(
            StationTruth(
                name=name,
                amplitude=amplitude,
                phase_rad=phase,
                clock_s=clock,
                amplitude_drift=drift,
                mean_amplitude=amplitude * (1.0 + drift * hours),
            )
        )
    with needs_extra("gridlrt demo"):
        from gridlrt.demo.synthetic_ms import SyntheticMSSpec

    cal_ra, cal_dec = map(math.degrees, SyntheticMSSpec.model_fields["phase_centre"].default)
    lowest = subband_centre_hz(spec.first_subband) - SUBBAND_WIDTH_HZ / 2
    beam_deg = math.degrees(SPEED_OF_LIGHT / lowest / longest_baseline_m(spec.stations))
    calibrator = FieldTruth(
        obsid=spec.calibrator_obsid,
        name=spec.calibrator_name,
        ra_deg=cal_ra,
        dec_deg=cal_dec,
        sources=[
            SourceTruth(
                name=spec.calibrator_name,
                ra_deg=cal_ra,
                dec_deg=cal_dec,
                offset_rad=(0.0, 0.0),
                flux_jy=_3C196_FLUX_JY,
                spectral_index=_3C196_INDEX,
                distance_deg=0.0,
            )
        ],
    )
    target = FieldTruth(
        obsid=spec.target_obsid,
        name=spec.target_name,
        ra_deg=spec.target_ra_deg,
        dec_deg=spec.target_dec_deg,
        sources=_place_sources(rng, spec, beam_deg),
    )
    return Truth(
        spec=spec,
        reference_station=names[0],
        stations=stations,
        calibrator=calibrator,
        target=target,
        beam_arcmin=beam_deg * 60.0,
        bands=band_subbands(spec),
    )


def _place_sources(rng: random.Random, spec: ReductionSpec, beam_deg: float) -> list[SourceTruth]:
    """Point sources uniform over a disc of ``field_radius_deg``, at least
    ``min_separation_beams`` beams from each other and two beams from the phase centre."""
    ra0, dec0 = spec.target_ra_deg, spec.target_dec_deg
    apart = spec.min_separation_beams * beam_deg
    placed: list[SourceTruth] = []
    for _ in range(_MAX_PLACEMENT_TRIES):
        if len(placed) == spec.target_sources:
            break
        radius = spec.field_radius_deg * math.sqrt(rng.random())
        angle = rng.uniform(0, 2 * math.pi)
        east, north = radius * math.sin(angle), radius * math.cos(angle)
        dec = dec0 + north
        ra = (ra0 + east / math.cos(math.radians(dec0))) % 360.0
        distance = angular_distance_deg(ra0, dec0, ra, dec)
        if distance < 2 * beam_deg or distance > spec.field_radius_deg:
            continue
        if any(angular_distance_deg(s.ra_deg, s.dec_deg, ra, dec) < apart for s in placed):
            continue
        dra = (ra - ra0 + 180.0) % 360.0 - 180.0
        placed.append(
            SourceTruth(
                name=f"S{len(placed) + 1}",
                ra_deg=ra,
                dec_deg=dec,
                offset_rad=(math.radians(dra), math.radians(dec - dec0)),
                flux_jy=round(rng.uniform(*spec.source_flux_jy), 3),
                spectral_index=round(rng.uniform(-1.0, -0.5), 3),
                distance_deg=distance,
            )
        )
    if len(placed) < spec.target_sources:
        raise InputError(
            f"cannot place {spec.target_sources} sources {spec.min_separation_beams:g} beams "
            f"({apart * 60:.1f}') apart within {spec.field_radius_deg:g} deg; ask for fewer "
            "sources or a larger field"
        )
    return placed


class ObservationFiles(BaseModel):
    """One observation in the store: its tarballs and its list."""

    obsid: int
    name: str
    list_file: Path
    inputs: list[str]
    tarballs: list[Path]


class Observations(BaseModel):
    """Both observations, the truth and the steps directory, as :func:`make_observations`
    left them."""

    store: Path
    calibrator: ObservationFiles
    target: ObservationFiles
    truth_file: Path
    steps_dir: Path
    skymodel: Path
    made: int = Field(description="tarballs made now (0 when the store had them all)")
    written: list[Path] = Field(default_factory=list, description="other files (re)written now")

    @property
    def size(self) -> int:
        tarballs = [*self.calibrator.tarballs, *self.target.tarballs]
        return sum(p.stat().st_size for p in tarballs)


def _tarballs(store: Path, field: FieldTruth, spec: ReductionSpec) -> dict[int, Path]:
    return {sb: archive_tarball(store / "lta", field.obsid, sb) for sb in spec.subband_numbers()}


def _truth_text(truth: Truth) -> str:
    return truth.model_dump_json(indent=2) + "\n"


def _check_store(store: Path, truth: Truth) -> None:
    """:class:`InputError` when the store holds observations made from another spec."""
    path = store / TRUTH_NAME
    if not path.exists():
        return
    try:
        stored = ReductionSpec.model_validate(json.loads(path.read_text())["spec"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path} is not a demo truth file; use another --workdir") from None
    if stored != truth.spec:
        changed = [
            f"{name} {getattr(stored, name)!r} -> {getattr(truth.spec, name)!r}"
            for name in ReductionSpec.model_fields
            if getattr(stored, name) != getattr(truth.spec, name)
        ]
        raise InputError(
            f"{store} holds observations made with another spec ({', '.join(changed)}); "
            "use another --workdir, or delete that one"
        )


def plan_observations(store: Path, spec: ReductionSpec) -> tuple[Truth, list[Path]]:
    """The truth and the tarballs still to make; nothing is written (a dry run)."""
    truth = make_truth(spec)
    _check_store(store, truth)
    missing = [
        tarball
        for field in (truth.calibrator, truth.target)
        for tarball in _tarballs(store, field, spec).values()
        if not tarball.exists()
    ]
    return truth, missing


def _write_if_changed(path: Path, text: str, written: list[Path]) -> None:
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    part.write_text(text)
    part.replace(path)
    written.append(path)


def make_observations(store: Path, spec: ReductionSpec) -> Observations:
    """Make (or find) both observations in ``store``: ``lta/`` (the tarballs),
    ``calibrator_srm.txt`` and ``target_srm.txt``, ``truth.json`` and ``steps/calibrator.skymodel``.
    A rerun makes nothing; a store made from another spec is refused (:class:`InputError`)."""
    with needs_extra("gridlrt demo"):  # numpy and python-casacore: gridlrt[demo]
        from gridlrt.demo.synthetic_ms import sky_model_text

    truth = make_truth(spec)
    _check_store(store, truth)
    store.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # the truth first: a store with tarballs but no truth could be from any spec
    _write_if_changed(store / TRUTH_NAME, _truth_text(truth), written)
    made = 0
    files = {}
    for role, field, list_name in (
        ("calibrator", truth.calibrator, CALIBRATOR_LIST),
        ("target", truth.target, TARGET_LIST),
    ):
        tarballs = _tarballs(store, field, spec)
        for subband, tarball in tarballs.items():
            if not tarball.exists():
                pack_archive(tarball, truth.ms_spec(field, subband))
                made += 1
        inputs = [p.resolve().as_uri() for p in tarballs.values()]
        list_file = write_list(
            store / list_name,
            inputs,
            f"L{field.obsid} ({field.name}, the {role}): {spec.subbands} subbands of a "
            "synthetic observation (gridlrt demo);\non the grid these lines are srm:// URLs "
            "of the LTA",
        )
        files[role] = ObservationFiles(
            obsid=field.obsid,
            name=field.name,
            list_file=list_file,
            inputs=inputs,
            tarballs=list(tarballs.values()),
        )
    steps_dir = store / "steps"
    skymodel = steps_dir / SKYMODEL_NAME
    centre = (math.radians(truth.calibrator.ra_deg), math.radians(truth.calibrator.dec_deg))
    _write_if_changed(skymodel, sky_model_text(point_sources(truth.calibrator), centre), written)
    if made or written:
        log.info(
            "observations in %s: %d tarball(s) made, %d file(s) written", store, made, len(written)
        )
    return Observations(
        store=store,
        calibrator=files["calibrator"],
        target=files["target"],
        truth_file=store / TRUTH_NAME,
        steps_dir=steps_dir,
        skymodel=skymodel,
        made=made,
        written=written,
    )
