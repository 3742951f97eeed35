"""Small but realistic synthetic LOFAR HBA measurement sets for tests, demos and benchmarks.

This module owns building a measurement set (MS) that looks like one LOFAR subband as it comes
out of the Long Term Archive: core stations ``CS001HBA0``, ``CS002HBA0``, ... at their real
ETRS89/ITRF positions, subband frequencies of the 200 MHz clock in Nyquist zone 2 (HBA),
four linear correlations (XX, XY, YX, YY), autocorrelations included, the ``L<obsid>_SB<nnn>_uv.MS``
name and the ``LOFAR_*`` columns of the OBSERVATION subtable that LOFAR tools look at.

The data are deterministic for a given :class:`SyntheticMSSpec`: unpolarised point sources
(by default one, slightly off the phase centre, so visibilities have phase structure; or the
:class:`PointSource` list of ``spec.sources``, each with a flux and a spectral index), seen
through per-station complex gains when ``spec.gains`` is set (:class:`StationGain`: an
amplitude, a phase and a clock delay, so ``DATA = g_p conj(g_q) V`` with
``g = a (1 + drift t) exp(i (phase + 2 pi nu clock))``), plus gaussian noise drawn from
``spec.seed``. DP3 reads, averages and calibrates these sets, and WSClean images them, so tests
and benchmarks can run real processing steps without downloading anything.

Deliberate simplifications (documented so nobody mistakes them for LOFAR behaviour):

* UVW uses the Earth rotation angle and the J2000 phase centre, without precession, nutation
  or aberration. The coordinates are internally consistent (the DATA are computed from the
  written UVW), but differ from a full ``casacore.measures`` computation by the precession
  since J2000 (a rotation of a fraction of a degree).
* Channel centres tile the subband symmetrically (their mean is the subband centre); real LOFAR
  channels are offset by half a channel.
* There are no beam subtables (``LOFAR_ANTENNA_FIELD``, ...): run DP3 steps without a beam model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gridlrt.errors import InputError

__all__ = [
    "CORE_STATIONS",
    "SPEED_OF_LIGHT",
    "SUBBAND_WIDTH_HZ",
    "PointSource",
    "StationGain",
    "SyntheticMSSpec",
    "antenna_uvw",
    "baseline_uvw",
    "lofar_ms_name",
    "make_synthetic_ms",
    "model_visibilities",
    "sky_model_text",
    "subband_centre_hz",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
ComplexArray = npt.NDArray[np.complex128]

SPEED_OF_LIGHT: Final = 299_792_458.0
"""Metres per second."""

CLOCK_HZ: Final = 200e6
SUBBAND_WIDTH_HZ: Final = CLOCK_HZ / 1024
"""195312.5 Hz: the width of one subband with the 200 MHz clock."""

NYQUIST_ZONE_2_START_HZ: Final = CLOCK_HZ / 2
"""HBA (110-190 MHz filter) samples the second Nyquist zone, which starts at 100 MHz."""

CORR_TYPES_LINEAR: Final = (9, 10, 11, 12)
"""casacore Stokes codes of XX, XY, YX, YY."""

_SECONDS_PER_DAY: Final = 86_400.0
_MJD_J2000: Final = 51_544.5

# ETRS89 positions (metres; within a metre of ITRF at LOFAR) of the HBA0 and HBA1 ears of the
# 24 core stations, in station-number order (ASTRON station metadata via lofarantpos).
_CORE_HBA0: Final = (
    ("CS001", (3826896.631, 460979.131, 5064657.943), (3826979.780, 460897.273, 5064602.929)),
    ("CS002", (3826601.357, 460953.078, 5064880.876), (3826565.990, 460957.786, 5064906.998)),
    ("CS003", (3826471.744, 460999.814, 5064973.941), (3826518.208, 461034.934, 5064935.890)),
    ("CS004", (3826586.022, 460865.520, 5064900.301), (3826579.882, 460917.156, 5064900.242)),
    ("CS005", (3826701.556, 460988.926, 5064802.425), (3826631.590, 461021.491, 5064851.999)),
    ("CS006", (3826654.179, 461136.116, 5064824.683), (3826612.895, 461079.974, 5064860.746)),
    ("CS007", (3826479.111, 461083.396, 5064960.857), (3826538.417, 461169.407, 5064908.567)),
    ("CS011", (3826637.817, 461227.021, 5064828.874), (3826649.357, 461353.917, 5064808.743)),
    ("CS013", (3826319.350, 460855.801, 5065101.590), (3826402.499, 460773.943, 5065046.576)),
    ("CS017", (3826405.491, 461507.136, 5064977.823), (3826500.179, 461552.174, 5064902.678)),
    ("CS021", (3826463.898, 460532.770, 5065022.354), (3826369.209, 460487.733, 5065097.499)),
    ("CS024", (3827218.589, 461403.574, 5064378.530), (3827123.900, 461358.537, 5064453.675)),
    ("CS026", (3826418.623, 461805.513, 5064940.939), (3826335.474, 461887.372, 5064995.953)),
    ("CS028", (3825573.530, 461324.283, 5065618.779), (3825656.679, 461242.425, 5065563.765)),
    ("CS030", (3826041.973, 460323.050, 5065357.354), (3825958.824, 460404.909, 5065412.368)),
    ("CS031", (3826383.433, 460279.019, 5065105.590), (3826478.121, 460324.057, 5065030.445)),
    ("CS032", (3826864.658, 460451.600, 5064729.746), (3826947.807, 460369.742, 5064674.732)),
    ("CS101", (3825900.321, 461698.615, 5065338.957), (3825805.632, 461653.578, 5065414.102)),
    ("CS103", (3826331.986, 462758.750, 5064919.360), (3826248.837, 462840.609, 5064974.374)),
    ("CS201", (3826679.677, 461854.919, 5064741.120), (3826691.217, 461981.815, 5064720.989)),
    ("CS301", (3827442.908, 461050.523, 5064242.143), (3827431.369, 460923.628, 5064262.273)),
    ("CS302", (3827973.622, 459728.300, 5063975.040), (3827890.473, 459810.159, 5064030.053)),
    ("CS401", (3826796.148, 460158.570, 5064808.669), (3826784.607, 460031.669, 5064828.802)),
    ("CS501", (3825569.216, 460647.296, 5065682.768), (3825663.904, 460692.334, 5065607.623)),
)

CORE_STATIONS: Final[tuple[tuple[str, tuple[float, float, float]], ...]] = tuple(
    [(f"{name}HBA0", hba0) for name, hba0, _ in _CORE_HBA0]
    + [(f"{name}HBA1", hba1) for name, _, hba1 in _CORE_HBA0]
)
"""(name, ITRF position) of every core HBA ear: all ``HBA0`` ears first, then the ``HBA1`` ears."""

_HBA_EAR_DIAMETER_M: Final = 30.75
_DEFAULT_START_MJD_S: Final = 58_849.0 * _SECONDS_PER_DAY  # 2020-01-01T00:00:00 UTC
_3C196_RA_RAD: Final = 2.1537362969  # 08h13m36.0s
_3C196_DEC_RAD: Final = 0.8415048578  # +48d13m03s
_TARGET_VISIBILITIES_PER_CHUNK: Final = 1 << 21


def lofar_ms_name(obsid: int, subband: int, sap: int | None = None) -> str:
    """The LTA name of one subband: ``L123456_SB100_uv.MS`` or ``L123456_SAP000_SB100_uv.MS``."""
    if sap is None:
        return f"L{obsid}_SB{subband:03d}_uv.MS"
    return f"L{obsid}_SAP{sap:03d}_SB{subband:03d}_uv.MS"


def subband_centre_hz(subband: int) -> float:
    """Centre frequency of an HBA subband (200 MHz clock, Nyquist zone 2)."""
    return NYQUIST_ZONE_2_START_HZ + subband * SUBBAND_WIDTH_HZ


class PointSource(BaseModel):
    """An unpolarised point source: where it is relative to the phase centre, and its flux
    ``flux_jy * (nu / reference_frequency) ** spectral_index``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="src", pattern=r"^[A-Za-z0-9_+-]+$")
    offset: tuple[float, float] = Field(
        description="(RA, Dec) offset in radians from the phase centre"
    )
    flux_jy: float = Field(description="Stokes I at reference_frequency")
    spectral_index: float = 0.0
    reference_frequency: float = Field(default=150e6, gt=0, description="Hz")

    def flux_at(self, frequency_hz: float | FloatArray) -> Any:
        """Stokes I (Jy) at the given frequencies."""
        return self.flux_jy * (np.asarray(frequency_hz) / self.reference_frequency) ** (
            self.spectral_index
        )


class StationGain(BaseModel):
    """One station's corruption: ``a (1 + drift * hours) * exp(i (phase + 2 pi nu clock))``,
    the same for both polarisations. ``hours`` counts from the start of the observation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amplitude: float = Field(default=1.0, gt=0)
    phase: float = Field(default=0.0, description="radians")
    clock: float = Field(default=0.0, description="delay in seconds (phase linear in frequency)")
    amplitude_drift: float = Field(default=0.0, description="fractional change per hour")


class SyntheticMSSpec(BaseModel):
    """What to build: one subband of one observation. Hashable, so it can key a cache."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    obsid: int = Field(default=123456, ge=0, description="LOFAR observation id (the L number)")
    subband: int = Field(default=100, ge=0, le=511, description="HBA subband number")
    sap: int = Field(default=0, ge=0, description="sub-array pointing")
    stations: int = Field(
        default=4, ge=2, le=len(CORE_STATIONS), description="core HBA ears, CS001HBA0 first"
    )
    channels: int = Field(default=64, ge=1, description="channels per subband")
    timeslots: int = Field(default=10, ge=1)
    integration_time: float = Field(default=2.00278, gt=0, description="seconds per timeslot")
    start_time: float = Field(
        default=_DEFAULT_START_MJD_S, description="start of the first timeslot, MJD seconds (UTC)"
    )
    phase_centre: tuple[float, float] = Field(
        default=(_3C196_RA_RAD, _3C196_DEC_RAD), description="J2000 (RA, Dec) in radians"
    )
    target: str = "3C196"
    autocorrelations: bool = True
    source_offset: tuple[float, float] = Field(
        default=(0.004, -0.003),
        description="(RA, Dec) offset in radians of the point source from the phase centre",
    )
    source_flux_jy: float = Field(default=10.0, description="Stokes I of the point source")
    sources: tuple[PointSource, ...] | None = Field(
        default=None,
        description="the sky, when not the single source of source_offset and source_flux_jy",
    )
    gains: tuple[StationGain, ...] | None = Field(
        default=None, description="one per station: the corruption every baseline sees"
    )
    noise_jy: float = Field(default=0.05, ge=0, description="sigma of real and imaginary noise")
    auto_power_jy: float = Field(default=1000.0, description="XX and YY of autocorrelations")
    seed: int = Field(default=20240601, ge=0)

    @model_validator(mode="after")
    def _one_gain_per_station(self) -> SyntheticMSSpec:
        if self.gains is not None and len(self.gains) != self.stations:
            raise ValueError(f"gains: {len(self.gains)} given for {self.stations} stations")
        return self

    def point_sources(self) -> tuple[PointSource, ...]:
        """The sky: ``sources``, or the one source of ``source_offset``/``source_flux_jy``."""
        if self.sources is not None:
            return self.sources
        return (PointSource(offset=self.source_offset, flux_jy=self.source_flux_jy),)

    @property
    def ms_name(self) -> str:
        """The LTA-style directory name, including the SAP."""
        return lofar_ms_name(self.obsid, self.subband, self.sap)

    @property
    def reference_frequency(self) -> float:
        return subband_centre_hz(self.subband)

    @property
    def channel_width(self) -> float:
        return SUBBAND_WIDTH_HZ / self.channels

    def channel_frequencies(self) -> FloatArray:
        """Channel centres in Hz: the subband split evenly, symmetric about its centre."""
        low = self.reference_frequency - SUBBAND_WIDTH_HZ / 2
        return low + (np.arange(self.channels, dtype=np.float64) + 0.5) * self.channel_width

    def station_names(self) -> list[str]:
        return [name for name, _ in CORE_STATIONS[: self.stations]]

    def station_positions(self) -> FloatArray:
        """ITRF positions, shape (stations, 3), metres."""
        return np.array([pos for _, pos in CORE_STATIONS[: self.stations]], dtype=np.float64)

    def baselines(self) -> tuple[IntArray, IntArray]:
        """ANTENNA1, ANTENNA2 of one timeslot in LOFAR order (0-0, 0-1, ..., 1-1, ...)."""
        first, second = np.triu_indices(self.stations, k=0 if self.autocorrelations else 1)
        return first.astype(np.int32), second.astype(np.int32)

    @property
    def n_baselines(self) -> int:
        n = self.stations
        return n * (n + 1) // 2 if self.autocorrelations else n * (n - 1) // 2

    def times(self) -> FloatArray:
        """Timeslot centres (the TIME column values), MJD seconds."""
        slots = np.arange(self.timeslots, dtype=np.float64) + 0.5
        times: FloatArray = self.start_time + slots * self.integration_time
        return times

    def source_direction(self, source: PointSource | None = None) -> tuple[float, float]:
        """J2000 (RA, Dec) in radians of ``source`` (default: the first point source)."""
        offset = (source or self.point_sources()[0]).offset
        return (self.phase_centre[0] + offset[0], self.phase_centre[1] + offset[1])

    def source_lmn(self, source: PointSource | None = None) -> tuple[float, float, float]:
        """Direction cosines of ``source`` (default: the first) relative to the phase centre."""
        ra0, dec0 = self.phase_centre
        ra, dec = self.source_direction(source)
        dra = ra - ra0
        ell = float(np.cos(dec) * np.sin(dra))
        emm = float(np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra))
        return ell, emm, float(np.sqrt(1.0 - ell * ell - emm * emm))

    def sky_model(self) -> str:
        """The point sources as a DP3/makesourcedb text sky model (``predict``, ``gaincal``)."""
        return sky_model_text(self.point_sources(), self.phase_centre)

    def station_gains(self, times: FloatArray | None = None) -> ComplexArray:
        """Complex gains, shape (times, stations, channels); ones without ``gains``."""
        t = self.times() if times is None else np.asarray(times, dtype=np.float64)
        shape = (t.size, self.stations, self.channels)
        if self.gains is None:
            return np.ones(shape, dtype=np.complex128)
        hours = (t - self.start_time) / 3600.0
        amp = np.array([g.amplitude for g in self.gains])
        drift = np.array([g.amplitude_drift for g in self.gains])
        phase = np.array([g.phase for g in self.gains])
        clock = np.array([g.clock for g in self.gains])
        freqs = self.channel_frequencies()
        scale = amp[None, :] * (1.0 + drift[None, :] * hours[:, None])  # (times, stations)
        turns = phase[:, None] + 2 * np.pi * clock[:, None] * freqs[None, :]  # (stations, chan)
        gains: ComplexArray = scale[:, :, None] * np.exp(1j * turns)[None, :, :]
        return gains


def sky_model_text(sources: tuple[PointSource, ...], phase_centre: tuple[float, float]) -> str:
    """A DP3/makesourcedb text sky model of point sources around ``phase_centre``."""
    header = (
        "FORMAT = Name, Type, Ra, Dec, I, Q, U, V, ReferenceFrequency='150e6', SpectralIndex='[]'"
    )
    lines = [header]
    for src in sources:
        ra = phase_centre[0] + src.offset[0]
        dec = phase_centre[1] + src.offset[1]
        lines.append(
            f"{src.name}, POINT, {_format_ra(ra)}, {_format_dec(dec)}, {src.flux_jy!r}, 0, 0, 0, "
            f"{src.reference_frequency!r}, [{src.spectral_index!r}]"
        )
    return "\n".join(lines) + "\n"


def _format_ra(ra: float) -> str:
    hours = (np.degrees(ra) / 15.0) % 24.0
    h = int(hours)
    minutes = (hours - h) * 60
    m = int(minutes)
    return f"{h:02d}:{m:02d}:{(minutes - m) * 60:012.9f}"


def _format_dec(dec: float) -> str:
    sign = "-" if dec < 0 else "+"
    degrees = abs(np.degrees(dec))
    d = int(degrees)
    minutes = (degrees - d) * 60
    m = int(minutes)
    return f"{sign}{d:02d}.{m:02d}.{(minutes - m) * 60:012.9f}"


def _earth_rotation_angle(mjd_seconds: FloatArray) -> FloatArray:
    """IERS Earth rotation angle (radians) for UTC taken as UT1."""
    days = mjd_seconds / _SECONDS_PER_DAY - _MJD_J2000
    turns = 0.7790572732640 + 1.00273781191135448 * days
    result: FloatArray = 2 * np.pi * np.mod(turns, 1.0)
    return result


def antenna_uvw(spec: SyntheticMSSpec, times: FloatArray | None = None) -> FloatArray:
    """UVW (metres) of every station relative to the geocentre, shape (times, stations, 3)."""
    t = spec.times() if times is None else np.asarray(times, dtype=np.float64)
    ra0, dec0 = spec.phase_centre
    hour_angle = _earth_rotation_angle(t) - ra0  # Greenwich hour angle; ITRF X is at Greenwich
    sin_h, cos_h = np.sin(hour_angle), np.cos(hour_angle)
    sin_d, cos_d = np.sin(dec0), np.cos(dec0)
    pos = spec.station_positions()
    x, y, z = pos[:, 0][None, :], pos[:, 1][None, :], pos[:, 2][None, :]
    sh, ch = sin_h[:, None], cos_h[:, None]
    u = sh * x + ch * y
    v = -sin_d * ch * x + sin_d * sh * y + cos_d * z
    w = cos_d * ch * x - cos_d * sh * y + sin_d * z
    return np.stack([u, v, w], axis=-1)


def baseline_uvw(spec: SyntheticMSSpec, times: FloatArray | None = None) -> FloatArray:
    """UVW column values (ANTENNA2 minus ANTENNA1), shape (times * baselines, 3), row order."""
    ant = antenna_uvw(spec, times)
    first, second = spec.baselines()
    uvw: FloatArray = (ant[:, second, :] - ant[:, first, :]).reshape(-1, 3)
    return uvw


def _source_phasor(spec: SyntheticMSSpec, uvw: FloatArray) -> ComplexArray:
    """``sum I * exp(+2 pi i (u l + v m + w (n - 1)) / lambda)`` over the point sources,
    shape (rows, channels)."""
    freqs = spec.channel_frequencies()
    wavenumber = 2 * np.pi * freqs / SPEED_OF_LIGHT
    phasor: ComplexArray = np.zeros((uvw.shape[0], freqs.size), dtype=np.complex128)
    for source in spec.point_sources():
        ell, emm, enn = spec.source_lmn(source)
        delay = uvw[:, 0] * ell + uvw[:, 1] * emm + uvw[:, 2] * (enn - 1.0)  # metres
        flux = np.asarray(source.flux_at(freqs), dtype=np.float64)
        phasor += flux[None, :] * np.exp(1j * delay[:, None] * wavenumber[None, :])
    return phasor


def model_visibilities(spec: SyntheticMSSpec, uvw: FloatArray) -> ComplexArray:
    """Noise-free point-source visibilities for the given UVW rows, shape (rows, channels, 4).

    The sign follows what DP3's ``predict`` computes from an MS whose UVW is ANTENNA2 minus
    ANTENNA1 (the casacore definition, which :func:`baseline_uvw` follows):
    ``V = I * exp(+2 pi i (u l + v m + w (n - 1)) / lambda)``, XX = YY = I, XY = YX = 0.
    So ``predict`` with :meth:`SyntheticMSSpec.sky_model` reproduces the signal in DATA, and
    calibrating against that model starts from unit gains.
    """
    phasor = _source_phasor(spec, uvw)
    vis = np.zeros((uvw.shape[0], spec.channels, 4), dtype=np.complex128)
    vis[:, :, 0] = phasor
    vis[:, :, 3] = phasor
    return vis


def _main_table_desc(spec: SyntheticMSSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fixed-shape DATA/FLAG/WEIGHT_SPECTRUM in tiled storage, and fixed WEIGHT/SIGMA shapes."""
    from casacore import tables as ct

    cell = [spec.channels, 4]
    tiled = {"datamanagertype": "TiledColumnStMan", "options": 4}  # 4: FixedShape
    # A group name of its own: default_ms already has a data manager called "StandardStMan".
    weights = {"datamanagertype": "StandardStMan", "datamanagergroup": "WeightSigmaStMan"}
    columns = [
        ct.makearrcoldesc(
            "DATA",
            0j,
            ndim=2,
            shape=cell,
            valuetype="complex",
            datamanagergroup="TiledDATA",
            comment="The data column",
            **tiled,
        ),
        ct.makearrcoldesc(
            "FLAG",
            False,
            ndim=2,
            shape=cell,
            datamanagergroup="TiledFLAG",
            comment="The data flags, array of bools with same shape as data",
            **tiled,
        ),
        ct.makearrcoldesc(
            "WEIGHT_SPECTRUM",
            0.0,
            ndim=2,
            shape=cell,
            valuetype="float",
            datamanagergroup="TiledWEIGHT_SPECTRUM",
            comment="Weight for each data point",
            **tiled,
        ),
        ct.makearrcoldesc(
            "WEIGHT",
            0.0,
            ndim=1,
            shape=[4],
            valuetype="float",
            options=4,
            **weights,
            comment="Weight for each polarization spectrum",
        ),
        ct.makearrcoldesc(
            "SIGMA",
            0.0,
            ndim=1,
            shape=[4],
            valuetype="float",
            options=4,
            **weights,
            comment="Estimated rms noise for channel with unity bandpass response",
        ),
    ]
    desc = ct.maketabdesc(columns)
    # Tiles of about 128 KiB complex values spanning all channels: one timeslot of DP3 reads
    # touches few tiles, and chunked writes in row order fill tiles sequentially.
    tile_chan = min(spec.channels, 256)
    tile_rows = max(1, 16384 // (4 * tile_chan))
    tile = {"DEFAULTTILESHAPE": np.array([4, tile_chan, tile_rows], dtype=np.int32)}
    dminfo = ct.makedminfo(
        desc,
        {"TiledDATA": tile, "TiledFLAG": dict(tile), "TiledWEIGHT_SPECTRUM": dict(tile)},
    )
    return desc, dminfo


def _open_subtable(ms_path: Path, name: str) -> Any:
    from casacore import tables as ct

    return ct.table(str(ms_path / name), readonly=False, ack=False)


def _fill_spectral_window(ms_path: Path, spec: SyntheticMSSpec) -> None:
    freqs = spec.channel_frequencies()
    width = np.full(spec.channels, spec.channel_width)
    with _open_subtable(ms_path, "SPECTRAL_WINDOW") as spw:
        spw.addrows(1)
        spw.putcol("NAME", [f"SB-{spec.subband}"])
        spw.putcol("NUM_CHAN", np.array([spec.channels], dtype=np.int32))
        spw.putcol("CHAN_FREQ", freqs[None, :])
        spw.putcol("CHAN_WIDTH", width[None, :])
        spw.putcol("EFFECTIVE_BW", width[None, :])
        spw.putcol("RESOLUTION", width[None, :])
        spw.putcol("REF_FREQUENCY", np.array([spec.reference_frequency]))
        spw.putcol("TOTAL_BANDWIDTH", np.array([SUBBAND_WIDTH_HZ]))
        spw.putcol("MEAS_FREQ_REF", np.array([5], dtype=np.int32))  # TOPO, as LOFAR writes
        spw.putcol("NET_SIDEBAND", np.array([1], dtype=np.int32))
        spw.putcol("FREQ_GROUP", np.array([0], dtype=np.int32))
        spw.putcol("FREQ_GROUP_NAME", [""])
        spw.putcol("IF_CONV_CHAIN", np.array([0], dtype=np.int32))
        spw.putcol("FLAG_ROW", np.array([False]))


def _fill_polarization_and_dd(ms_path: Path) -> None:
    with _open_subtable(ms_path, "POLARIZATION") as pol:
        pol.addrows(1)
        pol.putcol("NUM_CORR", np.array([4], dtype=np.int32))
        pol.putcol("CORR_TYPE", np.array([CORR_TYPES_LINEAR], dtype=np.int32))
        pol.putcol("CORR_PRODUCT", np.array([[[0, 0], [0, 1], [1, 0], [1, 1]]], dtype=np.int32))
        pol.putcol("FLAG_ROW", np.array([False]))
    with _open_subtable(ms_path, "DATA_DESCRIPTION") as dd:
        dd.addrows(1)
        dd.putcol("SPECTRAL_WINDOW_ID", np.array([0], dtype=np.int32))
        dd.putcol("POLARIZATION_ID", np.array([0], dtype=np.int32))
        dd.putcol("FLAG_ROW", np.array([False]))


def _fill_antenna_and_feed(ms_path: Path, spec: SyntheticMSSpec) -> None:
    n = spec.stations
    with _open_subtable(ms_path, "ANTENNA") as ant:
        ant.addrows(n)
        ant.putcol("NAME", spec.station_names())
        ant.putcol("STATION", ["LOFAR"] * n)
        ant.putcol("TYPE", ["GROUND-BASED"] * n)
        ant.putcol("MOUNT", ["X-Y"] * n)
        ant.putcol("POSITION", spec.station_positions())
        ant.putcol("OFFSET", np.zeros((n, 3)))
        ant.putcol("DISH_DIAMETER", np.full(n, _HBA_EAR_DIAMETER_M))
        ant.putcol("FLAG_ROW", np.zeros(n, dtype=bool))
    with _open_subtable(ms_path, "FEED") as feed:
        feed.addrows(n)
        feed.putcol("ANTENNA_ID", np.arange(n, dtype=np.int32))
        feed.putcol("FEED_ID", np.zeros(n, dtype=np.int32))
        feed.putcol("SPECTRAL_WINDOW_ID", np.full(n, -1, dtype=np.int32))
        duration = spec.timeslots * spec.integration_time
        feed.putcol("TIME", np.full(n, spec.start_time + duration / 2))
        feed.putcol("INTERVAL", np.full(n, duration))
        feed.putcol("NUM_RECEPTORS", np.full(n, 2, dtype=np.int32))
        feed.putcol("BEAM_ID", np.full(n, -1, dtype=np.int32))
        feed.putcol("BEAM_OFFSET", np.zeros((n, 2, 2)))
        feed.putcol("POLARIZATION_TYPE", np.array([["X", "Y"]] * n))
        feed.putcol("POL_RESPONSE", np.tile(np.eye(2, dtype=np.complex64), (n, 1, 1)))
        feed.putcol("POSITION", np.zeros((n, 3)))
        feed.putcol("RECEPTOR_ANGLE", np.tile(np.array([-np.pi / 4, np.pi / 4]), (n, 1)))


def _fill_field(ms_path: Path, spec: SyntheticMSSpec) -> None:
    direction = np.array([[list(spec.phase_centre)]], dtype=np.float64)  # (rows, poly, 2)
    with _open_subtable(ms_path, "FIELD") as field:
        field.addrows(1)
        field.putcol("NAME", [spec.target])
        field.putcol("CODE", [""])
        field.putcol("TIME", np.array([spec.start_time]))
        field.putcol("NUM_POLY", np.array([0], dtype=np.int32))
        field.putcol("DELAY_DIR", direction)
        field.putcol("PHASE_DIR", direction)
        field.putcol("REFERENCE_DIR", direction)
        field.putcol("SOURCE_ID", np.array([-1], dtype=np.int32))
        field.putcol("FLAG_ROW", np.array([False]))


def _fill_observation_and_processor(ms_path: Path, spec: SyntheticMSSpec) -> None:
    from casacore import tables as ct

    end_time = spec.start_time + spec.timeslots * spec.integration_time
    with _open_subtable(ms_path, "OBSERVATION") as obs:
        extra = [
            ct.makescacoldesc("LOFAR_OBSERVATION_ID", ""),
            ct.makescacoldesc("LOFAR_SUB_ARRAY_POINTING", ""),
            ct.makescacoldesc("LOFAR_ANTENNA_SET", ""),
            ct.makescacoldesc("LOFAR_FILTER_SELECTION", ""),
            ct.makescacoldesc("LOFAR_CLOCK_FREQUENCY", 0.0),
        ]
        missing = [c for c in extra if c["name"] not in obs.colnames()]
        if missing:
            obs.addcols(ct.maketabdesc(missing))
        obs.putcolkeyword("LOFAR_CLOCK_FREQUENCY", "QuantumUnits", ["MHz"])
        obs.addrows(1)
        obs.putcol("TELESCOPE_NAME", ["LOFAR"])
        obs.putcol("TIME_RANGE", np.array([[spec.start_time, end_time]]))
        obs.putcol("OBSERVER", ["gridlrt"])
        obs.putcol("PROJECT", ["LC0_000"])
        obs.putcol("SCHEDULE_TYPE", ["LOFAR"])
        obs.putcol("RELEASE_DATE", np.array([end_time]))
        obs.putcol("FLAG_ROW", np.array([False]))
        obs.putcol("LOFAR_OBSERVATION_ID", [str(spec.obsid)])
        obs.putcol("LOFAR_SUB_ARRAY_POINTING", [str(spec.sap)])
        obs.putcol("LOFAR_ANTENNA_SET", ["HBA_DUAL_INNER"])
        obs.putcol("LOFAR_FILTER_SELECTION", ["HBA_110_190"])
        obs.putcol("LOFAR_CLOCK_FREQUENCY", np.array([CLOCK_HZ / 1e6]))
    with _open_subtable(ms_path, "PROCESSOR") as proc:
        proc.addrows(1)
        proc.putcol("TYPE", ["CORRELATOR"])
        proc.putcol("SUB_TYPE", ["LOFAR-COBALT"])
        proc.putcol("TYPE_ID", np.array([-1], dtype=np.int32))
        proc.putcol("MODE_ID", np.array([-1], dtype=np.int32))
        proc.putcol("FLAG_ROW", np.array([False]))


def _fill_main(ms: Any, spec: SyntheticMSSpec) -> None:
    nbl = spec.n_baselines
    first, second = spec.baselines()
    autos = first == second
    times = spec.times()
    rng = np.random.default_rng(spec.seed)
    per_slot = nbl * spec.channels * 4
    slots_per_chunk = max(1, _TARGET_VISIBILITIES_PER_CHUNK // per_slot)
    ms.addrows(nbl * spec.timeslots)
    ones_weight = np.ones((nbl * slots_per_chunk, 4), dtype=np.float32)
    weight_spectrum = np.ones((nbl * slots_per_chunk, spec.channels, 4), dtype=np.float32)
    flags = np.zeros((nbl * slots_per_chunk, spec.channels, 4), dtype=bool)
    for slot0 in range(0, spec.timeslots, slots_per_chunk):
        chunk_times = times[slot0 : slot0 + slots_per_chunk]
        nslot = chunk_times.size
        nrow = nslot * nbl
        row0 = slot0 * nbl
        uvw = baseline_uvw(spec, chunk_times)
        # Noise first, in complex64 (pairs of float32 normals viewed as one complex value),
        # then the signal added in place: no complex128 copy of the whole chunk.
        normals = rng.standard_normal((nrow, spec.channels, 4, 2), dtype=np.float32)
        data = normals.view(np.complex64)[..., 0]
        data *= np.float32(spec.noise_jy)
        # Autocorrelations: real XX and YY power with real noise, zero XY and YX.
        auto_rows = np.flatnonzero(np.tile(autos, nslot))
        auto_noise = data[auto_rows][:, :, [0, 3]].real
        phasor = _source_phasor(spec, uvw)
        auto_gain = np.ones((nrow, spec.channels))
        if spec.gains is not None:
            g = spec.station_gains(chunk_times)  # (slots, stations, channels)
            slot = np.repeat(np.arange(nslot), nbl)
            g1 = g[slot, np.tile(first, nslot)]
            g2 = g[slot, np.tile(second, nslot)]
            phasor *= g1 * np.conj(g2)
            auto_gain = np.abs(g1) ** 2
        phasor64 = phasor.astype(np.complex64)
        data[:, :, 0] += phasor64
        data[:, :, 3] += phasor64
        data[auto_rows] = 0.0
        power = spec.auto_power_jy * auto_gain[auto_rows]
        data[auto_rows, :, 0] = power + auto_noise[:, :, 0]
        data[auto_rows, :, 3] = power + auto_noise[:, :, 1]
        ms.putcol("TIME", np.repeat(chunk_times, nbl), row0, nrow)
        ms.putcol("TIME_CENTROID", np.repeat(chunk_times, nbl), row0, nrow)
        ms.putcol("ANTENNA1", np.tile(first, nslot), row0, nrow)
        ms.putcol("ANTENNA2", np.tile(second, nslot), row0, nrow)
        ms.putcol("UVW", uvw, row0, nrow)
        ms.putcol("DATA", data, row0, nrow)
        ms.putcol("FLAG", flags[:nrow], row0, nrow)
        ms.putcol("WEIGHT_SPECTRUM", weight_spectrum[:nrow], row0, nrow)
        ms.putcol("WEIGHT", ones_weight[:nrow], row0, nrow)
        ms.putcol("SIGMA", ones_weight[:nrow], row0, nrow)
    nrows = nbl * spec.timeslots
    int_zero = np.zeros(nrows, dtype=np.int32)
    for column in (
        "ARRAY_ID",
        "DATA_DESC_ID",
        "FEED1",
        "FEED2",
        "FIELD_ID",
        "OBSERVATION_ID",
        "PROCESSOR_ID",
        "SCAN_NUMBER",
    ):
        ms.putcol(column, int_zero)
    ms.putcol("STATE_ID", np.full(nrows, -1, dtype=np.int32))
    ms.putcol("INTERVAL", np.full(nrows, spec.integration_time))
    ms.putcol("EXPOSURE", np.full(nrows, spec.integration_time))
    ms.putcol("FLAG_ROW", np.zeros(nrows, dtype=bool))


def make_synthetic_ms(path: Path, spec: SyntheticMSSpec, *, overwrite: bool = False) -> Path:
    """Build the measurement set ``path`` (a directory, e.g. ``dir / spec.ms_name``) from ``spec``.

    Rows are time-major, baselines in LOFAR order within a timeslot, autocorrelations included
    when ``spec.autocorrelations`` (as LOFAR writes them; their UVW is zero and their DATA is real
    XX/YY power). Returns ``path``.
    """
    from casacore import tables as ct

    path = Path(path)
    if path.exists():
        if not overwrite:
            raise InputError(f"{path} already exists; remove it or pass overwrite=True")
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    desc, dminfo = _main_table_desc(spec)
    ms = ct.default_ms(str(path), desc, dminfo)
    try:
        ms.putcolkeyword("UVW", "MEASINFO", {"type": "uvw", "Ref": "J2000"})
        _fill_main(ms, spec)
    finally:
        ms.close()
    _fill_spectral_window(path, spec)
    _fill_polarization_and_dd(path)
    _fill_antenna_and_feed(path, spec)
    _fill_field(path, spec)
    _fill_observation_and_processor(path, spec)
    return path
