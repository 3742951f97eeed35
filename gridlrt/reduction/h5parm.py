"""H5parm files of the calibrator solutions, read and written through LOSOTO's H5parm module.

This module owns the two H5parm layouts of the ``cal-solve`` step and nothing of the fitting:

* :func:`read_gaincal` reads what DP3 gaincal (``caltype=diagonal``) writes per subband:
  ``sol000/amplitude000`` and ``sol000/phase000`` on axes ``time,freq,ant,pol``, the
  ``antenna`` and ``source`` tables, into a :class:`GainSolutions`;
* :func:`write_combined` writes one :class:`CombinedSolutions` for the whole observation as
  ``sol000`` with the ``antenna`` and ``source`` tables and three soltabs DP3 applycal applies
  at any channel frequency (checked with DP3 6.6):

  ============  =================  ===============================================
  soltab        axes               values
  ============  =================  ===============================================
  clock000      ``time,ant``       seconds; DP3 applies ``phase = 2 pi nu clock``
  phase000      ``time,ant,pol``   radians: the phase offset at nu = 0
  amplitude000  ``time,freq,ant,pol``  smooth amplitudes on a frequency grid (DP3
                                   takes the nearest frequency)
  ============  =================  ===============================================

  with one time (the calibrator's mean time; DP3 uses a single time for any target time).
  Apply with :data:`APPLYCAL_PARSET`.

LOSOTO (with PyTables) is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gridlrt.errors import InputError
from gridlrt.extras import needs_extra

FloatArray = npt.NDArray[np.float64]

log = logging.getLogger(__name__)

SOLSET = "sol000"
AXES = ("time", "freq", "ant", "pol")
#: The applycal lines (an ``ac`` step with three sub-steps) that apply :func:`write_combined`'s
#: file; ``{h5parm}`` is its path.
APPLYCAL_PARSET = """\
ac.type=applycal
ac.parmdb={h5parm}
ac.steps=[amp,phase,clock]
ac.amp.correction=amplitude000
ac.phase.correction=phase000
ac.clock.correction=clock000
"""


@dataclass(frozen=True)
class GainSolutions:
    """Diagonal gain solutions on axes (time, freq, ant, pol), as DP3 gaincal writes them."""

    times: FloatArray
    """(time,) MJD seconds."""
    freqs: FloatArray
    """(freq,) Hz."""
    antennas: tuple[str, ...]
    pols: tuple[str, ...]
    amplitude: FloatArray
    phase: FloatArray
    """Radians, as solved (not referenced)."""
    weight: FloatArray
    """Zero where either the amplitude or the phase is flagged (or not finite)."""
    positions: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """ITRF metres of each antenna, from the antenna table."""
    sources: dict[str, tuple[float, float]] = field(default_factory=dict)
    """(RA, Dec) radians of each direction, from the source table."""
    source: str = ""
    """Where the solutions came from (a path), for messages."""


@dataclass(frozen=True)
class CombinedSolutions:
    """One set of solutions for the observation (see the module docstring for the layout)."""

    time: float
    """MJD seconds the solutions are tabulated at."""
    antennas: tuple[str, ...]
    pols: tuple[str, ...]
    clock: FloatArray
    """(ant,) seconds."""
    clock_weight: FloatArray
    """(ant,) 1 where the clock was fitted, 0 for a station without solutions."""
    phase_offset: FloatArray
    """(ant, pol) radians at nu = 0."""
    amplitude_freqs: FloatArray
    """(freq,) Hz of the amplitude grid."""
    amplitude: FloatArray
    """(freq, ant, pol)."""
    amplitude_weight: FloatArray
    """(freq, ant, pol)."""
    positions: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    sources: dict[str, tuple[float, float]] = field(default_factory=dict)
    history: str = ""


def _decode(values: Any) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values))


def _soltab_array(soltab: Any, where: str) -> tuple[FloatArray, FloatArray, dict[str, Any]]:
    """Values and weights of a LOSOTO soltab transposed to :data:`AXES`."""
    names = list(soltab.getAxesNames())
    if sorted(names) != sorted(AXES):
        raise InputError(
            f"{where}: axes {','.join(names)}; expected {','.join(AXES)} "
            "(DP3 gaincal with caltype=diagonal)"
        )
    values, axes = soltab.getValues(retAxesVals=True)
    weights = soltab.getValues(retAxesVals=False, weight=True)
    order = [names.index(a) for a in AXES]
    return (
        np.transpose(np.asarray(values, dtype=np.float64), order),
        np.transpose(np.asarray(weights, dtype=np.float64), order),
        axes,
    )


def read_gaincal(path: Path) -> GainSolutions:
    """DP3 gaincal's H5parm (``sol000/amplitude000`` and ``phase000``, diagonal) as
    :class:`GainSolutions`. :class:`InputError` (one line) when it is not such a file."""
    with needs_extra("H5parm solutions"):
        from losoto.h5parm import h5parm  # type: ignore[import-untyped]

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such H5parm")
    try:
        handle = h5parm(str(path), readonly=True)
    except Exception as exc:  # LOSOTO raises bare Exception
        raise InputError(f"{path}: not an H5parm ({exc})") from None
    try:
        if SOLSET not in handle.getSolsetNames():
            raise InputError(f"{path}: no solset {SOLSET}")
        solset = handle.getSolset(SOLSET)
        tables = solset.getSoltabNames()
        for name in ("amplitude000", "phase000"):
            if name not in tables:
                raise InputError(f"{path}: no soltab {SOLSET}/{name} (has {', '.join(tables)})")
        amp, amp_w, axes = _soltab_array(solset.getSoltab("amplitude000"), f"{path} amplitude000")
        phase, phase_w, phase_axes = _soltab_array(solset.getSoltab("phase000"), f"{path} phase000")
        if amp.shape != phase.shape or any(
            not np.array_equal(np.asarray(axes[a]), np.asarray(phase_axes[a])) for a in AXES
        ):
            raise InputError(f"{path}: amplitude000 and phase000 have different axes")
        weight = np.where(
            (amp_w > 0) & (phase_w > 0) & np.isfinite(amp) & np.isfinite(phase),
            np.minimum(amp_w, phase_w),
            0.0,
        )
        positions = {
            name: (float(p[0]), float(p[1]), float(p[2])) for name, p in solset.getAnt().items()
        }
        sources = {name: (float(d[0]), float(d[1])) for name, d in solset.getSou().items()}
    finally:
        handle.close()
    return GainSolutions(
        times=np.asarray(axes["time"], dtype=np.float64),
        freqs=np.asarray(axes["freq"], dtype=np.float64),
        antennas=_decode(axes["ant"]),
        pols=_decode(axes["pol"]),
        amplitude=amp,
        phase=phase,
        weight=weight,
        positions=positions,
        sources=sources,
        source=str(path),
    )


def on_antennas(solutions: GainSolutions, antennas: tuple[str, ...]) -> GainSolutions:
    """``solutions`` with their antenna axis in the order of ``antennas``; an antenna they do
    not have gets NaN values with weight 0."""
    if solutions.antennas == antennas:
        return solutions
    shape = (*solutions.amplitude.shape[:2], len(antennas), solutions.amplitude.shape[3])
    amp, phase, weight = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape)
    where = {name: i for i, name in enumerate(solutions.antennas)}
    for index, name in enumerate(antennas):
        if name in where:
            amp[:, :, index] = solutions.amplitude[:, :, where[name]]
            phase[:, :, index] = solutions.phase[:, :, where[name]]
            weight[:, :, index] = solutions.weight[:, :, where[name]]
    return replace(solutions, antennas=antennas, amplitude=amp, phase=phase, weight=weight)


def write_combined(path: Path, combined: CombinedSolutions) -> Path:
    """Write ``combined`` as a new H5parm at ``path`` (replacing a file there)."""
    with needs_extra("H5parm solutions"):
        from losoto.h5parm import h5parm

    path = Path(path)
    path.unlink(missing_ok=True)
    n_ant, n_pol = len(combined.antennas), len(combined.pols)
    times = np.array([combined.time], dtype=np.float64)
    ants = np.array(combined.antennas, dtype="S")  # DP3 writes byte strings
    pols = np.array(combined.pols, dtype="S")
    handle = h5parm(str(path), readonly=False)
    try:
        solset = handle.makeSolset(SOLSET, addTables=False)
        _write_tables(solset, combined)
        soltabs = [
            solset.makeSoltab(
                "clock",
                "clock000",
                axesNames=["time", "ant"],
                axesVals=[times, ants],
                vals=combined.clock.reshape(1, n_ant),
                weights=combined.clock_weight.reshape(1, n_ant),
            ),
            solset.makeSoltab(
                "phase",
                "phase000",
                axesNames=["time", "ant", "pol"],
                axesVals=[times, ants, pols],
                vals=combined.phase_offset.reshape(1, n_ant, n_pol),
                weights=np.repeat(combined.clock_weight[:, None], n_pol, axis=1)[None],
            ),
            solset.makeSoltab(
                "amplitude",
                "amplitude000",
                axesNames=["time", "freq", "ant", "pol"],
                axesVals=[times, combined.amplitude_freqs, ants, pols],
                vals=combined.amplitude[None],
                weights=combined.amplitude_weight[None],
            ),
        ]
        if combined.history:
            for soltab in soltabs:
                soltab.addHistory(combined.history)
    finally:
        handle.close()
    log.info("wrote %s: clock000, phase000, amplitude000 for %d stations", path, n_ant)
    return path


def _write_tables(solset: Any, combined: CombinedSolutions) -> None:
    """The ``antenna`` and ``source`` tables, typed as DP3 writes them (byte-string names)."""
    file = solset.obj._v_file
    antenna = file.create_table(
        solset.obj,
        "antenna",
        np.dtype([("name", "S16"), ("position", np.float32, (3,))]),
        title="Antenna names and positions",
    )
    antenna.append(
        [
            (name.encode(), np.asarray(combined.positions.get(name, (0.0, 0.0, 0.0)), np.float32))
            for name in combined.antennas
        ]
    )
    source = file.create_table(
        solset.obj,
        "source",
        np.dtype([("name", "S128"), ("dir", np.float64, (2,))]),
        title="Source names and directions",
    )
    source.append([(name.encode(), np.asarray(d)) for name, d in combined.sources.items()])
