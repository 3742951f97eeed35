"""The ``cal-solve`` step: one set of calibrator solutions for the whole observation.

``python -m gridlrt.reduction.solve --skymodel SKY --out cal_solutions.h5 --summary
solutions.json [--solint N] [--nchan N] MS [MS...]`` (one argument may hold several
space-separated measurement sets, as ``{local_inputs}`` renders them).

This module owns running DP3 gaincal (``caltype=diagonal``) once per calibrator subband through
the worker's DP3 adapter (:mod:`gridlrt.worker.dp3`; a parset and a log per subband in a work
directory beside ``--out``), the combine (:func:`combine`: time-averaged gains per subband,
phases referenced to the first station, one clock delay and phase offset per station fitted
across every subband with :func:`gridlrt.reduction.clock.fit_clock`, amplitudes smoothed over
frequency per station and polarisation), and the JSON summary (:class:`CalibrationSummary`)
from which the UI plots phase against frequency per station with the fitted clock. The H5parm
layout and the applycal lines that apply it are :mod:`gridlrt.reduction.h5parm`'s.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from gridlrt.errors import CalSolveError, GridlrtError, InputError
from gridlrt.reduction.clock import (
    DEFAULT_MAX_CLOCK_S,
    ClockFit,
    FitError,
    average_over_time,
    fit_clock,
    frequency_grid,
    reference_phases,
    smooth_amplitudes,
)
from gridlrt.reduction.h5parm import (
    CombinedSolutions,
    GainSolutions,
    on_antennas,
    read_gaincal,
    write_combined,
)
from gridlrt.worker.dp3 import default_dp3, dp3_environment, find_dp3

log = logging.getLogger("gridlrt.reduction.solve")  # not __main__ under -m

PHASE_MODEL = (
    "phase = phase_offset_rad[pol] + 2*pi*freq_hz*clock_s (radians), referenced to "
    "reference_station; DP3 applycal's clock000 soltab applies the same sign"
)
#: Most points of the amplitude grid written to the H5parm.
MAX_AMPLITUDE_GRID = 2048


class SolutionPoint(BaseModel):
    """One solution frequency of one station (time-averaged), per polarisation."""

    freq_hz: float
    phase_rad: list[float | None] = Field(
        description="referenced to the reference station, wrapped to (-pi, pi]; null: flagged"
    )
    amplitude: list[float | None]


class StationSolution(BaseModel):
    name: str
    ok: bool = Field(description="false: no clock fitted, the station is flagged by applycal")
    problem: str = ""
    clock_s: float | None = None
    clock_rms_rad: float | None = Field(default=None, description="rms of the phase residuals")
    phase_offset_rad: list[float | None] = Field(description="per pol, at 0 Hz")
    mean_amplitude: list[float | None] = Field(description="per pol, of the smoothed amplitude")
    amplitude_rms: list[float | None] = Field(description="per pol, residual of the smoothing")
    n_points: int = Field(description="phase points used by the clock fit (all pols)")
    points: list[SolutionPoint]


class CalibrationSummary(BaseModel):
    """What ``--summary`` holds: enough to plot and judge the solutions without HDF5."""

    h5parm: str = Field(description="file name of the combined H5parm")
    reference_station: str
    pols: list[str]
    phase_model: str = PHASE_MODEL
    subbands: int = Field(description="calibrator subbands (gaincal H5parms) combined")
    freq_min_hz: float
    freq_max_hz: float
    amplitude_degree: int
    stations: list[StationSolution]
    gaincal_seconds: list[float] = Field(default_factory=list, description="per subband")
    combine_seconds: float = 0.0


def _clean(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _stack(
    solutions: Sequence[GainSolutions],
) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Antennas, pols, and over every subband's solution frequencies (sorted): frequencies
    (f,), time-averaged amplitudes, phases and weights (f, ant, pol); the mean time."""
    if not solutions:
        raise CalSolveError("no gaincal solutions to combine")
    pols = solutions[0].pols
    antennas: list[str] = []
    for sol in solutions:
        if sol.pols != pols:
            raise CalSolveError(
                f"{sol.source}: polarisations {','.join(sol.pols)}, not {','.join(pols)} as "
                f"in {solutions[0].source}"
            )
        antennas.extend(a for a in sol.antennas if a not in antennas)
    names = tuple(antennas)
    freqs, amps, phases, weights, times = [], [], [], [], []
    for sol in solutions:
        sol = on_antennas(sol, names)
        amp, phase, weight = average_over_time(sol.amplitude, sol.phase, sol.weight, axis=0)
        freqs.append(sol.freqs)
        amps.append(amp)
        phases.append(phase)
        weights.append(weight)
        times.append(sol.times)
    nu = np.concatenate(freqs)
    order = np.argsort(nu, kind="stable")
    return (
        names,
        pols,
        nu[order],
        np.concatenate(amps)[order],
        np.concatenate(phases)[order],
        np.concatenate(weights)[order],
        float(np.mean(np.concatenate(times))),
    )


def combine(
    solutions: Sequence[GainSolutions],
    *,
    degree: int = 2,
    max_clock_s: float = DEFAULT_MAX_CLOCK_S,
    h5parm_name: str = "cal_solutions.h5",
) -> tuple[CombinedSolutions, CalibrationSummary]:
    """One set of solutions from every subband's gaincal solutions (pure).

    Per subband the gains are averaged over time (mean amplitude, phase of the mean phasor);
    phases are referenced to the first station (of the first file); per station one clock is
    fitted over every subband and both polarisations (an offset per polarisation), and each
    polarisation's amplitudes are smoothed with a polynomial of ``degree`` over frequency,
    tabulated on a grid at the solutions' frequency step. A station the fit rejects (too few
    unflagged points) gets weight 0: applycal flags its data. :class:`CalSolveError` when no
    station but the reference has a clock.
    """
    names, pols, nu, amp, phase, weight, mean_time = _stack(solutions)
    n_ant, n_pol = len(names), len(pols)
    ref_weight = np.where(weight[:, :1, :] > 0, weight, 0.0)
    ref_phase = reference_phases(phase, ref=0, axis=1)
    distinct = np.unique(nu)
    step = float(np.diff(distinct).min()) if distinct.size > 1 else 1.0
    step = max(step, float(distinct[-1] - distinct[0]) / (MAX_AMPLITUDE_GRID - 1))
    grid = frequency_grid(distinct, step)
    clock = np.zeros(n_ant)
    clock_weight = np.zeros(n_ant)
    offsets = np.zeros((n_ant, n_pol))
    grid_amp = np.ones((grid.size, n_ant, n_pol))
    grid_weight = np.zeros((grid.size, n_ant, n_pol))
    stations: list[StationSolution] = []
    for k, name in enumerate(names):
        problem = ""
        fit: ClockFit | None = None
        try:
            fit = fit_clock(nu, ref_phase[:, k, :], ref_weight[:, k, :], max_clock_s=max_clock_s)
        except FitError as exc:
            problem = f"clock: {exc}"
        means: list[float | None] = []
        rms: list[float | None] = []
        for p in range(n_pol):
            try:
                smooth = smooth_amplitudes(nu, amp[:, k, p], weight[:, k, p], degree)
            except FitError as exc:
                problem = problem or f"amplitude {pols[p]}: {exc}"
                means.append(None)
                rms.append(None)
                continue
            grid_amp[:, k, p] = smooth(grid)
            grid_weight[:, k, p] = 1.0
            means.append(smooth.mean)
            rms.append(smooth.rms)
        if fit is not None:
            clock[k], clock_weight[k], offsets[k] = fit.clock, 1.0, fit.offsets
        else:
            grid_weight[:, k, :] = 0.0
        points = [
            SolutionPoint(
                freq_hz=float(nu[j]),
                phase_rad=[
                    _clean(ref_phase[j, k, p]) if ref_weight[j, k, p] > 0 else None
                    for p in range(n_pol)
                ],
                amplitude=[
                    _clean(amp[j, k, p]) if weight[j, k, p] > 0 else None for p in range(n_pol)
                ],
            )
            for j in range(nu.size)
        ]
        stations.append(
            StationSolution(
                name=name,
                ok=fit is not None and not problem,
                problem=problem,
                clock_s=fit.clock if fit else None,
                clock_rms_rad=fit.rms if fit else None,
                phase_offset_rad=list(fit.offsets) if fit else [None] * n_pol,
                mean_amplitude=means,
                amplitude_rms=rms,
                n_points=fit.n_points if fit else 0,
                points=points,
            )
        )
        if fit is not None:
            log.info(
                "%s: clock %+.2f ns (rms %.3f rad over %d points), mean amplitude %s",
                name,
                fit.clock * 1e9,
                fit.rms,
                fit.n_points,
                ", ".join("-" if m is None else f"{m:.3f}" for m in means),
            )
        else:
            log.warning("%s: no solutions (%s); applycal will flag it", name, problem)
    if n_ant < 2 or not clock_weight[1:].any():
        raise CalSolveError(
            "no station has enough unflagged solutions for a clock fit "
            f"({stations[-1].problem if stations else 'no stations'})"
        )
    combined = CombinedSolutions(
        time=mean_time,
        antennas=names,
        pols=pols,
        clock=clock,
        clock_weight=clock_weight,
        phase_offset=offsets,
        amplitude_freqs=grid,
        amplitude=grid_amp,
        amplitude_weight=grid_weight,
        positions=dict(solutions[0].positions),
        sources=dict(solutions[0].sources),
        history=f"gridlrt cal-solve: clock fit over {len(solutions)} subbands, reference "
        f"{names[0]}, amplitudes smoothed with degree {degree}",
    )
    summary = CalibrationSummary(
        h5parm=h5parm_name,
        reference_station=names[0],
        pols=list(pols),
        subbands=len(solutions),
        freq_min_hz=float(nu.min()),
        freq_max_hz=float(nu.max()),
        amplitude_degree=degree,
        stations=stations,
    )
    return combined, summary


def gaincal_parset(
    ms: Path, skymodel: Path, h5parm: Path, *, solint: int, nchan: int, beam: bool
) -> str:
    """The DP3 parset of one subband's gaincal (diagonal, solutions to ``h5parm`` only)."""
    return (
        f"msin={ms}\n"
        "msout=\n"
        "checkparset=1\n"
        "numthreads=1\n"
        "steps=[cal]\n"
        "cal.type=gaincal\n"
        f"cal.sourcedb={skymodel}\n"
        f"cal.parmdb={h5parm}\n"
        "cal.caltype=diagonal\n"
        f"cal.solint={solint}\n"
        f"cal.nchan={nchan}\n"
        f"cal.usebeammodel={'true' if beam else 'false'}\n"
    )


def run_gaincal(
    ms: Path,
    skymodel: Path,
    workdir: Path,
    *,
    solint: int = 0,
    nchan: int = 0,
    beam: bool = False,
    dp3: Path | None = None,
) -> Path:
    """DP3 gaincal on one measurement set; its H5parm (``<workdir>/<MS>.h5``). The parset and
    the log are ``<workdir>/<MS>.gaincal.parset`` and ``.log``. :class:`CalSolveError` (one
    line, naming the log) when DP3 fails or writes no H5parm."""
    workdir.mkdir(parents=True, exist_ok=True)
    stem = ms.name
    h5parm = workdir / f"{stem}.h5"
    h5parm.unlink(missing_ok=True)  # DP3 would add to an old file
    parset = workdir / f"{stem}.gaincal.parset"
    parset.write_text(
        gaincal_parset(ms, skymodel, h5parm, solint=solint, nchan=nchan, beam=beam),
        encoding="utf-8",
    )
    log_path = workdir / f"{stem}.gaincal.log"
    exe = dp3 or find_dp3() or default_dp3()
    with log_path.open("w", encoding="utf-8") as out:
        try:
            run = subprocess.run(  # noqa: S603 - argv list, no shell
                [str(exe), str(parset)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dp3_environment(),
                check=False,
            )
        except OSError as exc:
            raise CalSolveError(f"cannot run DP3 ({exe}): {exc.strerror or exc}") from None
    if run.returncode != 0 or not h5parm.is_file():
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        last = lines[-1].strip() if lines else "no output"
        what = f"exit {run.returncode}" if run.returncode else "no H5parm written"
        raise CalSolveError(f"DP3 gaincal on {ms.name} failed ({what}): {last}; log: {log_path}")
    return h5parm


def solve(
    measurement_sets: Sequence[Path],
    skymodel: Path,
    out: Path,
    summary_path: Path,
    *,
    solint: int = 0,
    nchan: int = 0,
    degree: int = 2,
    beam: bool = False,
    workdir: Path | None = None,
) -> CalibrationSummary:
    """Gaincal every measurement set, combine, write ``out`` (H5parm) and ``summary_path``."""
    if not measurement_sets:
        raise InputError("no measurement sets to calibrate")
    for ms in measurement_sets:
        if not ms.is_dir():
            raise InputError(f"{ms}: no such measurement set")
    if not skymodel.is_file():
        raise InputError(f"{skymodel}: no such sky model")
    work = workdir or out.parent / "cal-solve-work"
    solutions: list[GainSolutions] = []
    seconds: list[float] = []
    for ms in measurement_sets:
        start = time.perf_counter()
        h5parm = run_gaincal(ms, skymodel, work, solint=solint, nchan=nchan, beam=beam)
        seconds.append(time.perf_counter() - start)
        solutions.append(read_gaincal(h5parm))
        log.info("gaincal %s: %.2f s", ms.name, seconds[-1])
    start = time.perf_counter()
    combined, summary = combine(solutions, degree=degree, h5parm_name=out.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_combined(out, combined)
    summary = summary.model_copy(
        update={"gaincal_seconds": seconds, "combine_seconds": time.perf_counter() - start}
    )
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(summary.model_dump_json(indent=1) + "\n", encoding="utf-8")
    log.info(
        "%d subbands: gaincal %.2f s in all, combine and write %.2f s; %s, %s",
        len(measurement_sets),
        sum(seconds),
        summary.combine_seconds,
        out,
        summary_path,
    )
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gridlrt.reduction.solve",
        description="DP3 gaincal per calibrator subband, then one clock per station and "
        "smoothed amplitudes for the observation: an H5parm for applycal and a JSON summary.",
    )
    p.add_argument("ms", nargs="+", help="measurement sets (one argument may hold several)")
    p.add_argument("--skymodel", required=True, type=Path, help="makesourcedb text sky model")
    p.add_argument("--out", required=True, type=Path, help="the combined H5parm")
    p.add_argument("--summary", required=True, type=Path, help="the JSON summary")
    p.add_argument("--solint", type=int, default=0, help="gaincal timeslots (0: all)")
    p.add_argument("--nchan", type=int, default=0, help="gaincal channels (0: the subband)")
    p.add_argument("--degree", type=int, default=2, help="amplitude polynomial degree")
    p.add_argument("--beam", action="store_true", help="gaincal with the LOFAR beam model")
    p.add_argument("--workdir", type=Path, default=None, help="per-subband H5parms and logs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # LOSOTO logs its chatter on the root logger: warnings only there, gridlrt's own at INFO
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("gridlrt").setLevel(logging.INFO)
    ms = [Path(part) for arg in args.ms for part in arg.split()]
    try:
        solve(
            ms,
            args.skymodel,
            args.out,
            args.summary,
            solint=args.solint,
            nchan=args.nchan,
            degree=args.degree,
            beam=args.beam,
            workdir=args.workdir,
        )
    except GridlrtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
