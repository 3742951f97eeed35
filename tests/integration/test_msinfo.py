"""``gridlrt ms info`` and the MSInfo model on synthetic LOFAR sets, before and after DP3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gridlrt.demo.synthetic_ms import SyntheticMSSpec, subband_centre_hz
from gridlrt.errors import ExitCode, InputError
from gridlrt.worker.msinfo import ms_info

GRIDLRT = str(Path(sys.executable).with_name("gridlrt"))
DP3 = str(Path(sys.executable).with_name("DP3.py"))


def test_info_matches_the_spec(make_ms: Callable[..., Path]) -> None:
    spec = SyntheticMSSpec(obsid=229507, subband=100, stations=5, channels=32, timeslots=6)
    ms = make_ms(obsid=229507, subband=100, stations=5, channels=32, timeslots=6)
    info = ms_info(ms)
    assert info.observation_id == "229507"
    assert info.telescope == "LOFAR"
    assert info.stations == ["CS001HBA0", "CS002HBA0", "CS003HBA0", "CS004HBA0", "CS005HBA0"]
    assert info.baselines == 10 and info.autocorrelations
    assert info.channels == 32 and info.timeslots == 6
    assert info.bandwidth_hz == pytest.approx(195312.5)
    assert info.central_frequency_hz == pytest.approx(subband_centre_hz(100))
    assert info.integration_s == pytest.approx(spec.integration_time)
    assert info.duration_s == pytest.approx(6 * spec.integration_time)
    assert info.start_utc.tzinfo is UTC and info.start_utc > datetime(2000, 1, 1, tzinfo=UTC)
    assert info.correlations == ["XX", "XY", "YX", "YY"]
    assert info.data_columns == ["DATA"]


def test_info_after_dp3_average_and_cli(make_ms: Callable[..., Path], tmp_path: Path) -> None:
    ms = make_ms(channels=64, timeslots=10)
    out = tmp_path / "avg.MS"
    run = subprocess.run(
        [
            DP3,
            f"msin={ms}",
            f"msout={out}",
            "steps=[avg]",
            "avg.type=averager",
            "avg.freqstep=4",
            "avg.timestep=2",
            "checkparset=1",
        ],
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    before, after = ms_info(ms), ms_info(out)
    assert after.channels == before.channels // 4
    assert after.timeslots == before.timeslots // 2
    assert after.bandwidth_hz == pytest.approx(before.bandwidth_hz)
    assert after.integration_s == pytest.approx(2 * before.integration_s)
    assert any(h.application == "DP3" for h in after.history)

    result = subprocess.run(
        [GRIDLRT, "ms", "info", str(out), "--json"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["channels"] == 16 and data["timeslots"] == 5
    assert data["observation_id"] == "123456"
    table = subprocess.run(
        [GRIDLRT, "ms", "info", str(out)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "150"},
    )
    assert "16 x 12.207 kHz" in table.stdout and "L123456" in table.stdout


def test_not_a_measurement_set(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a measurement set"):
        ms_info(tmp_path)
    result = subprocess.run(
        [GRIDLRT, "ms", "info", str(tmp_path / "nope.MS")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == ExitCode.INPUT  # not a measurement set: a bad argument
    assert (
        result.stderr.strip()
        == f"error: {tmp_path / 'nope.MS'}: not a measurement set (no table.dat in it)"
    )
