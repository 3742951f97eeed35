"""The cal-solve step on real DP3: synthetic calibrator subbands seen through known station
gains (amplitude, phase, clock) -> gaincal per subband -> one clock per station and smoothed
amplitudes -> an H5parm that DP3 applycal applies to a target subband the calibrator never
covered, giving back the uncorrupted visibilities (which proves the sign conventions)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gridlrt.demo.synthetic_ms import StationGain, SyntheticMSSpec
from gridlrt.reduction.h5parm import APPLYCAL_PARSET
from gridlrt.reduction.solve import CalibrationSummary, main
from gridlrt.tokens import new_token
from gridlrt.worker.dp3 import dp3_environment, find_dp3
from gridlrt.worker.plan import plan_token
from gridlrt.worker.steps import load_step
from tests.services.measurement_sets import MSFactory

GAINS = (
    StationGain(amplitude=1.0, phase=0.3, clock=20e-9),
    StationGain(amplitude=1.2, phase=0.5, clock=100e-9),
    StationGain(amplitude=0.8, phase=-1.0, clock=-250e-9),
    StationGain(amplitude=1.1, phase=2.0, clock=37e-9),
    StationGain(amplitude=0.9, phase=0.3, clock=300e-9),
    StationGain(amplitude=1.05, phase=-2.5, clock=-120e-9),
    StationGain(amplitude=0.95, phase=1.0, clock=5e-9),
    StationGain(amplitude=1.3, phase=-0.7, clock=210e-9),
)
CAL_SUBBANDS = tuple(range(100, 132, 4))  # 8 subbands, 119.5-125.6 MHz
TARGET_SUBBAND = 110  # between calibrator subbands: never solved for
SPEC = {"stations": len(GAINS), "channels": 16, "timeslots": 10}
#: 1/10 of 1/(subband width): the clock must be far better than the subbands' alias period
CLOCK_TOLERANCE_S = 0.1 / 195_312.5


def read_column(ms: Path, column: str) -> np.ndarray:
    from casacore import tables as ct

    with ct.table(str(ms), ack=False) as table:
        cross = table.getcol("ANTENNA1") != table.getcol("ANTENNA2")
        values: np.ndarray = table.getcol(column)[cross][:, :, [0, 3]]
    return values


def run_dp3(parset: Path) -> None:
    exe = find_dp3()
    assert exe is not None
    run = subprocess.run(
        [str(exe), str(parset)], capture_output=True, text=True, env=dp3_environment()
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


@pytest.fixture
def solved(make_ms: MSFactory, tmp_path: Path) -> tuple[Path, CalibrationSummary]:
    cal = [
        make_ms(subband=sb, gains=GAINS, directory=tmp_path / "cal", **SPEC) for sb in CAL_SUBBANDS
    ]
    sky = tmp_path / "calibrator.skymodel"
    sky.write_text(SyntheticMSSpec(**SPEC).sky_model(), encoding="utf-8")
    out = tmp_path / "out" / "cal_solutions.h5"
    summary = tmp_path / "out" / "solutions.json"
    # one argument holding every MS, as the step's {local_inputs} renders them
    args = ["--skymodel", str(sky), "--out", str(out), "--summary", str(summary)]
    assert main([*args, " ".join(map(str, cal))]) == 0
    return out, CalibrationSummary.model_validate_json(summary.read_text(encoding="utf-8"))


def test_solve_recovers_clocks_and_amplitudes(solved: tuple[Path, CalibrationSummary]) -> None:
    out, summary = solved
    assert out.is_file()
    assert summary.reference_station == "CS001HBA0" and summary.pols == ["XX", "YY"]
    assert summary.subbands == len(CAL_SUBBANDS) and len(summary.gaincal_seconds) == 8
    reference = GAINS[0]
    for station, gain in zip(summary.stations, GAINS, strict=True):
        assert station.ok, station.problem
        assert station.clock_s is not None
        error = abs(station.clock_s - (gain.clock - reference.clock))
        assert error < CLOCK_TOLERANCE_S
        assert error < 1e-9  # in practice
        for mean in station.mean_amplitude:
            assert mean == pytest.approx(gain.amplitude, rel=0.02)
        assert len(station.points) == len(CAL_SUBBANDS)
        for point in station.points:  # what the UI plots: referenced phase vs. frequency
            expected = (gain.phase - reference.phase) + 2 * np.pi * point.freq_hz * (
                gain.clock - reference.clock
            )
            for phase in point.phase_rad:
                assert phase is not None
                assert abs(np.angle(np.exp(1j * (phase - expected)))) < 0.05
    raw = json.loads(out.with_name("solutions.json").read_text(encoding="utf-8"))
    assert raw["stations"][1]["points"][0]["freq_hz"] == pytest.approx(119_531_250.0)


def test_applycal_of_the_solutions_undoes_the_gains_on_the_target(
    solved: tuple[Path, CalibrationSummary], make_ms: MSFactory, tmp_path: Path
) -> None:
    h5parm, _ = solved
    noiseless = {**SPEC, "noise_jy": 0.0, "subband": TARGET_SUBBAND}
    target = make_ms(gains=GAINS, directory=tmp_path / "target", **noiseless)
    truth = read_column(make_ms(directory=tmp_path / "truth", **noiseless), "DATA")
    parset = tmp_path / "apply.parset"
    parset.write_text(
        f"msin={target}\nmsout=.\nmsout.datacolumn=CORRECTED_DATA\nsteps=[ac]\n"
        + APPLYCAL_PARSET.format(h5parm=h5parm),
        encoding="utf-8",
    )
    run_dp3(parset)
    corrupted = read_column(target, "DATA")
    corrected = read_column(target, "CORRECTED_DATA")
    scale = np.sqrt(np.mean(np.abs(truth) ** 2))
    assert np.sqrt(np.mean(np.abs(corrupted - truth) ** 2)) / scale > 0.5  # the gains matter
    assert np.sqrt(np.mean(np.abs(corrected - truth) ** 2)) / scale < 0.02
    assert np.abs(corrected - truth).max() / scale < 0.05


def test_the_apply_flag_average_step_applies_them(
    solved: tuple[Path, CalibrationSummary], make_ms: MSFactory, tmp_path: Path
) -> None:
    """The built-in step's parset as a pilot renders it, run by DP3: the H5parm among
    cal-solve's two outputs is found, applied, then AOFlagger and the averager run."""
    h5parm, _ = solved
    work = tmp_path / "work"
    target = make_ms(subband=TARGET_SUBBAND, gains=GAINS, directory=work, **SPEC)
    outputs = "file:///storage/run/cal-target/cal_solve"
    token = new_token("target_SB110", inputs=f"file:///lta/{target.name}.tar", step="x")
    token = token.model_copy(
        update={
            "pipeline": "cal-target",
            "stage": "target_prep",
            "extra_inputs": {
                "cal_solve": [f"{outputs}/cal_solutions.h5", f"{outputs}/solutions.json"]
            },
        }
    )
    step = load_step("apply-flag-average")
    plan = plan_token(step, token, workdir=work, storage_root="file:///storage")
    assert plan.fields["cal_solve"].split() == [
        str(work / "extra" / "cal_solve" / "cal_solutions.h5"),
        str(work / "extra" / "cal_solve" / "solutions.json"),
    ]
    assert (
        plan.parset is not None and f"ac.parmdb={plan.extra_inputs['cal_solve'][0]}" in plan.parset
    )
    (work / "extra" / "cal_solve").mkdir(parents=True)
    plan.extra_inputs["cal_solve"][0].write_bytes(h5parm.read_bytes())
    parset = work / "step.parset"
    parset.write_text(plan.parset, encoding="utf-8")
    run_dp3(parset)
    assert plan.msout is not None
    from casacore import tables as ct

    with ct.table(str(plan.msout), ack=False) as table:
        assert table.getcol("DATA").shape[1] == SPEC["channels"] // 4
