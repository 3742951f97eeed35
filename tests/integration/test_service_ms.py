"""Smoke tests of the synthetic LOFAR measurement sets, read back with casacore and run through
the real DP3 (averaging, and predicting the point source the data contain)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from casacore import tables as ct
from casacore.measures import measures
from casacore.quanta import quantity

from gridlrt.demo.synthetic_ms import (
    SUBBAND_WIDTH_HZ,
    SyntheticMSSpec,
    baseline_uvw,
    lofar_ms_name,
    make_synthetic_ms,
    model_visibilities,
)
from tests.services.measurement_sets import MSFactory

LOFAR_CORE = np.array([3826577.0, 461022.0, 5064892.0])


def table(path: Path | str) -> ct.table:
    return ct.table(str(path), ack=False)


def dp3_executable() -> str:
    beside = Path(sys.executable).with_name("DP3.py")
    found = str(beside) if beside.exists() else shutil.which("DP3.py")
    assert found, "DP3.py is neither next to the test interpreter nor on PATH"
    return found


def run_dp3(parset: Path, **keys: str) -> float:
    """Write ``keys`` as the parset, run DP3 on it, fail with its output unless it exits 0."""
    parset.write_text("".join(f"{key}={value}\n" for key, value in keys.items()))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run(
        [dp3_executable(), str(parset)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, f"DP3 exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return elapsed


def test_lofar_ms_name() -> None:
    assert lofar_ms_name(123456, 100) == "L123456_SB100_uv.MS"
    assert lofar_ms_name(123456, 7, sap=0) == "L123456_SAP000_SB007_uv.MS"
    assert lofar_ms_name(700123, 321, sap=2) == "L700123_SAP002_SB321_uv.MS"


def test_built_ms_has_what_the_spec_promises(make_ms: MSFactory) -> None:
    spec = SyntheticMSSpec(obsid=654321, subband=123, stations=5, channels=32, timeslots=6)
    ms_path = make_ms(obsid=654321, subband=123, stations=5, channels=32, timeslots=6)
    assert ms_path.name == "L654321_SAP000_SB123_uv.MS"

    with table(ms_path) as ms:
        assert ms.nrows() == 6 * 15  # 5 stations: 10 cross-correlations + 5 autocorrelations
        times = np.unique(ms.getcol("TIME"))
        np.testing.assert_allclose(times, spec.times())
        np.testing.assert_allclose(np.diff(times), 2.00278)
        np.testing.assert_allclose(ms.getcol("INTERVAL"), 2.00278)
        data = ms.getcol("DATA")
        assert data.shape == (90, 32, 4)
        assert data.dtype == np.complex64
        assert not ms.getcol("FLAG").any()
        assert ms.getcol("FLAG").shape == (90, 32, 4)
        np.testing.assert_array_equal(ms.getcol("WEIGHT_SPECTRUM"), 1.0)
        ant1, ant2 = ms.getcol("ANTENNA1"), ms.getcol("ANTENNA2")
        assert set(zip(ant1[:15].tolist(), ant2[:15].tolist(), strict=True)) == {
            (a, b) for a in range(5) for b in range(a, 5)
        }
        uvw = ms.getcol("UVW")
        np.testing.assert_array_equal(uvw[ant1 == ant2], 0.0)
        assert ms.getcolkeyword("UVW", "MEASINFO")["Ref"] == "J2000"

    with table(ms_path / "ANTENNA") as antenna:
        assert antenna.getcol("NAME") == [f"CS00{i}HBA0" for i in range(1, 6)]
        positions = antenna.getcol("POSITION")
    assert np.all(np.linalg.norm(positions - LOFAR_CORE, axis=1) < 1000.0)
    assert len({tuple(p) for p in positions.round(1).tolist()}) == 5
    # UVW is a rotation of ANTENNA2 - ANTENNA1: the baseline lengths are the station distances.
    lengths = np.linalg.norm(positions[ant2] - positions[ant1], axis=1)
    np.testing.assert_allclose(np.linalg.norm(uvw, axis=1), lengths, rtol=1e-9, atol=1e-6)
    assert lengths.max() > 100.0

    centre = 100e6 + 123 * 195312.5
    with table(ms_path / "SPECTRAL_WINDOW") as spw:
        assert spw.getcol("NAME") == ["SB-123"]
        assert spw.getcol("NUM_CHAN").tolist() == [32]
        freqs = spw.getcol("CHAN_FREQ")[0]
        assert spw.getcol("REF_FREQUENCY")[0] == centre
        np.testing.assert_allclose(spw.getcol("CHAN_WIDTH")[0], 195312.5 / 32)
        assert spw.getcol("TOTAL_BANDWIDTH")[0] == SUBBAND_WIDTH_HZ
    np.testing.assert_allclose(freqs, centre - 195312.5 / 2 + (np.arange(32) + 0.5) * 6103.515625)
    np.testing.assert_allclose(freqs.mean(), centre)

    with table(ms_path / "OBSERVATION") as obs:
        assert obs.getcol("LOFAR_OBSERVATION_ID") == ["654321"]
        assert obs.getcol("TELESCOPE_NAME") == ["LOFAR"]
        np.testing.assert_allclose(
            obs.getcol("TIME_RANGE")[0], [spec.start_time, spec.start_time + 6 * 2.00278]
        )
    with table(ms_path / "POLARIZATION") as pol:
        assert pol.getcol("CORR_TYPE")[0].tolist() == [9, 10, 11, 12]
    with table(ms_path / "FIELD") as field:
        np.testing.assert_allclose(field.getcol("PHASE_DIR")[0, 0], spec.phase_centre)


def test_data_are_the_point_source_plus_seeded_noise(tmp_path: Path) -> None:
    spec = SyntheticMSSpec(stations=6, channels=16, timeslots=20, noise_jy=0.1, seed=7)
    first = make_synthetic_ms(tmp_path / "a" / spec.ms_name, spec)
    again = make_synthetic_ms(tmp_path / "b" / spec.ms_name, spec)
    other = make_synthetic_ms(tmp_path / "c" / spec.ms_name, spec.model_copy(update={"seed": 8}))
    with table(first) as ms:
        data, uvw = ms.getcol("DATA"), ms.getcol("UVW")
        cross = ms.getcol("ANTENNA1") != ms.getcol("ANTENNA2")
    with table(again) as ms:
        np.testing.assert_array_equal(ms.getcol("DATA"), data)
    with table(other) as ms:
        assert not np.array_equal(ms.getcol("DATA"), data)

    np.testing.assert_allclose(uvw, baseline_uvw(spec))
    residual = data[cross] - model_visibilities(spec, uvw[cross])
    assert abs(np.std(residual.real) - 0.1) < 0.01
    assert abs(np.std(residual.imag) - 0.1) < 0.01
    assert abs(np.mean(residual)) < 0.01
    # The source is off the phase centre: the signal really has phase structure.
    phases = np.angle(data[cross][:, :, 0])
    assert np.ptp(phases) > 1.0
    np.testing.assert_allclose(np.abs(data[cross][:, :, 0]).mean(), 10.0, rtol=0.01)


def test_uvw_agrees_with_casacore_measures() -> None:
    spec = SyntheticMSSpec(stations=24)
    positions = spec.station_positions()
    when = spec.times()[:1]
    dm = measures()
    dm.do_frame(dm.epoch("utc", quantity(float(when[0]), "s")))
    dm.do_frame(dm.position("itrf", *(quantity(float(x), "m") for x in positions[0])))
    ra, dec = spec.phase_centre
    dm.do_frame(dm.direction("J2000", quantity(ra, "rad"), quantity(dec, "rad")))
    ours = baseline_uvw(spec, when)
    first, second = spec.baselines()
    checked = 0
    for row in range(0, len(first), 37):
        dx, dy, dz = positions[second[row]] - positions[first[row]]
        baseline = dm.baseline("itrf", quantity(dx, "m"), quantity(dy, "m"), quantity(dz, "m"))
        theirs = np.asarray(dm.to_uvw(baseline)["xyz"].get_value("m"))
        length = max(float(np.linalg.norm(theirs)), 1.0)
        # Only precession since J2000 (a fraction of a degree) separates the two.
        assert np.linalg.norm(ours[row] - theirs) < 0.01 * length
        checked += 1
    assert checked > 5


@pytest.mark.slow
def test_dp3_averages_the_synthetic_ms(make_ms: MSFactory, tmp_path: Path) -> None:
    msin = make_ms(channels=64, timeslots=10, stations=4)
    msout = tmp_path / "L123456_SAP000_SB100_avg.MS"
    run_dp3(
        tmp_path / "avg.parset",
        msin=str(msin),
        msout=str(msout),
        **{"msout.overwrite": "true", "checkparset": "1", "steps": "[avg]"},
        **{"avg.type": "averager", "avg.freqstep": "4", "avg.timestep": "2"},
    )

    with table(msin / "SPECTRAL_WINDOW") as spw:
        freqs_in = spw.getcol("CHAN_FREQ")[0]
    with table(msout / "SPECTRAL_WINDOW") as spw:
        freqs_out = spw.getcol("CHAN_FREQ")[0]
        assert spw.getcol("NUM_CHAN")[0] == 16
        np.testing.assert_allclose(spw.getcol("CHAN_WIDTH")[0], 4 * 195312.5 / 64)
    assert freqs_out.shape == (16,)
    np.testing.assert_allclose(freqs_out, freqs_in.reshape(16, 4).mean(axis=1))

    with table(msin) as ms:
        times_in = np.unique(ms.getcol("TIME"))
        pick = (ms.getcol("ANTENNA1") == 1) & (ms.getcol("ANTENNA2") == 3)
        data_in = ms.getcol("DATA")[pick]
    with table(msout) as ms:
        times_out = np.unique(ms.getcol("TIME"))
        assert ms.nrows() == 5 * 10
        pick = (ms.getcol("ANTENNA1") == 1) & (ms.getcol("ANTENNA2") == 3)
        data_out = ms.getcol("DATA")[pick]
        np.testing.assert_allclose(ms.getcol("INTERVAL"), 2 * 2.00278)
        # Weights are summed over the 2 x 4 averaged samples.
        np.testing.assert_allclose(ms.getcol("WEIGHT_SPECTRUM")[pick], 8.0)
        with table(msout / "OBSERVATION") as obs:
            assert obs.getcol("LOFAR_OBSERVATION_ID") == ["123456"]
    assert times_in.shape == (10,)
    assert times_out.shape == (5,)
    np.testing.assert_allclose(times_out, times_in.reshape(5, 2).mean(axis=1))

    assert data_in.shape == (10, 64, 4)
    assert data_out.shape == (5, 16, 4)
    expected = data_in.astype(np.complex128).reshape(5, 2, 16, 4, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(data_out, expected, rtol=0, atol=1e-4)
    assert np.abs(expected).max() > 5  # a real signal, not noise averaged to nothing


@pytest.mark.slow
def test_dp3_predict_reproduces_the_signal(make_ms: MSFactory, tmp_path: Path) -> None:
    """DP3 predicting ``spec.sky_model()`` gives the noise-free DATA: calibration has a model."""
    spec = SyntheticMSSpec(stations=6, channels=16, timeslots=4)
    msin = make_ms(stations=6, channels=16, timeslots=4)
    skymodel = tmp_path / "model.skymodel"
    skymodel.write_text(spec.sky_model())
    run_dp3(
        tmp_path / "predict.parset",
        msin=str(msin),
        msout=".",
        **{"msout.datacolumn": "MODEL_DATA", "checkparset": "1", "steps": "[predict]"},
        **{"predict.type": "predict", "predict.sourcedb": str(skymodel)},
    )
    with table(msin) as ms:
        cross = ms.getcol("ANTENNA1") != ms.getcol("ANTENNA2")
        predicted = ms.getcol("MODEL_DATA")[cross]
        uvw = ms.getcol("UVW")[cross]
    expected = model_visibilities(spec, uvw)
    np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-4 * spec.source_flux_jy)


def test_station_gains_corrupt_every_baseline_as_gp_conj_gq(tmp_path: Path) -> None:
    """DATA with gains is the clean DATA times g_p conj(g_q), per channel and timeslot; the
    clock makes the phase linear in frequency; several sources add up."""
    from gridlrt.demo.synthetic_ms import PointSource, StationGain

    sources = (
        PointSource(name="a", offset=(0.01, 0.0), flux_jy=5.0),
        PointSource(name="b", offset=(-0.02, 0.015), flux_jy=2.0, spectral_index=-0.8),
    )
    gains = (
        StationGain(),
        StationGain(amplitude=1.2, phase=0.5, clock=80e-9),
        StationGain(amplitude=0.7, phase=-2.0, clock=-120e-9, amplitude_drift=0.5),
    )
    clean = SyntheticMSSpec(stations=3, channels=8, timeslots=6, noise_jy=0.0, sources=sources)
    corrupted = clean.model_copy(update={"gains": gains})
    make_synthetic_ms(tmp_path / "clean.MS", clean)
    make_synthetic_ms(tmp_path / "corrupted.MS", corrupted)
    with table(tmp_path / "clean.MS") as ms:
        a1, a2, slot = ms.getcol("ANTENNA1"), ms.getcol("ANTENNA2"), ms.getcol("TIME")
        truth = ms.getcol("DATA")[:, :, 0]
        uvw = ms.getcol("UVW")
    with table(tmp_path / "corrupted.MS") as ms:
        data = ms.getcol("DATA")[:, :, 0]
    cross = a1 != a2
    np.testing.assert_allclose(truth[cross], model_visibilities(clean, uvw)[cross, :, 0], atol=1e-4)
    g = corrupted.station_gains()  # (times, stations, channels)
    t = np.searchsorted(corrupted.times(), slot - 1e-6)
    expected = truth * g[t, a1] * np.conj(g[t, a2])
    np.testing.assert_allclose(data[cross], expected[cross], rtol=1e-5, atol=1e-4)
    # the clock: phase of g_1 grows by 2 pi clock per Hz across the subband
    freqs = corrupted.channel_frequencies()
    slope = np.diff(np.unwrap(np.angle(g[0, 1]))) / np.diff(freqs)
    np.testing.assert_allclose(slope, 2 * np.pi * 80e-9, rtol=1e-6)
    # the drift: station 2 is 0.5 per hour brighter later on
    hours = (corrupted.times()[-1] - corrupted.start_time) / 3600
    assert abs(g[-1, 2, 0]) == pytest.approx(0.7 * (1 + 0.5 * hours))
    assert "b, POINT" in corrupted.sky_model() and "[-0.8]" in corrupted.sky_model()
