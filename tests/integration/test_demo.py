"""``gridlrt demo``: the main job as a new user runs it (``make demo``) on the embedded default
pool: the calibrator -> target reduction verified against its truth, rerun, dry run and the
uncalibrated control that must fail; and the first demo, ``--single-step``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from casacore import tables

from gridlrt.config import load_settings
from gridlrt.tokens import TokenStatus, open_pool
from tests.gridlrt_cli import cli_env, gridlrt

PNG = b"\x89PNG\r\n\x1a\n"
STAGES = {"cal_prep": 8, "cal_solve": 1, "target_prep": 8, "band": 2, "image": 2}


def outputs_of(pool_file: Path) -> dict[str, tuple[int, list[str]]]:
    """Every token's attempts and outputs, by id."""
    pool = open_pool(load_settings(pool=f"sqlite:///{pool_file}"))
    return {t.id: (len(t.attempts), list(t.output or [])) for t in pool.tokens()}


def test_the_reduction_is_verified_rerun_does_nothing_and_the_control_fails(
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path)
    work = tmp_path / "work"
    dry = gridlrt(env, "demo", "--workdir", str(work), "--dry-run")
    assert "would make 16 of 16 archive tarballs" in dry.stdout
    assert "create 21 token(s) of run demo (cal_prep 8, cal_solve 1" in dry.stdout
    assert "start 2 local pilot(s) for 21 token(s)" in dry.stdout
    assert not work.exists() and not (tmp_path / "xdg-data").exists()  # nothing changed

    result = json.loads(gridlrt(env, "demo", "--workdir", str(work), "--json").stdout)
    check = result["verification"]
    assert check["passed"] and check["calibrated"] and not check["reasons"], check["reasons"]
    assert len(check["stations"]) == 16 and len(check["sources"]) == 4 * 2
    assert all(row["passed"] for row in check["stations"] + check["sources"])
    assert check["worst"]["clock_s"] < 1e-9 and check["worst"]["amplitude"] < 0.01
    assert check["worst"]["flux"] < 0.05 and check["worst"]["offset_px"] < 0.5
    assert result["run"] == "demo" and result["created"] == 21
    assert result["record"]["backend"] == "local" and result["record"]["count"] == 2
    assert [(s["stage"], s["done"]) for s in result["stages"]] == list(STAGES.items())
    assert all(s["span_s"] > 0 and s["busy_s"] > 0 for s in result["stages"])
    # what the JSON names is there: solutions, band images and previews, plots
    assert Path(result["solutions"]).read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
    summary = json.loads(Path(result["calibration_summary"]).read_text())
    assert summary["reference_station"] == "CS001HBA0" and summary["subbands"] == 8
    assert [b["band"] for b in result["images"]] == ["L700701_SB100-103", "L700701_SB104-107"]
    for band in result["images"]:
        assert Path(band["fits"]).read_bytes()[:6] == b"SIMPLE"
        assert Path(band["png"]).read_bytes()[:8] == PNG
    assert sorted(result["plots"]) == ["images", "progress", "solutions"]
    for plot in result["plots"].values():
        assert Path(plot).read_bytes()[:8] == PNG and Path(plot).stat().st_size > 20_000
    # results live in the work directory; the truth is not in the pilots' steps directory
    assert all(Path(b["fits"]).is_relative_to(work / "results") for b in result["images"])
    assert [p.name for p in (work / "steps").iterdir()] == ["calibrator.skymodel"]
    assert "3C196, POINT, 08:13:3" in (work / "steps" / "calibrator.skymodel").read_text()
    truth = json.loads((work / "truth.json").read_text())
    assert [s["name"] for s in truth["target"]["sources"]] == ["S1", "S2", "S3", "S4"]
    listed = (work / "target_srm.txt").read_text().split()
    assert [u for u in listed if u.startswith("file://")] == result["observations"]["target"][
        "inputs"
    ]
    assert Path(listed[-1]).name.startswith("L700701_SB107_uv.MS_")
    pool_file = tmp_path / "xdg-data" / "gridlrt" / "pool.sqlite"
    before = outputs_of(pool_file)
    assert len(before) == 21 and all(n == 1 for n, _ in before.values())

    # a rerun makes nothing, creates nothing, starts no pilot; the table says so
    again = gridlrt(env, "demo", "--workdir", str(work))
    assert "verification, calibrated: PASSED" in again.stdout
    assert "0 token(s) created now; no pilots needed" in again.stdout
    assert "FAIL" not in again.stdout and "image L700701_SB104-107:" in again.stdout
    assert outputs_of(pool_file) == before
    pool = open_pool(load_settings(pool=f"sqlite:///{pool_file}"))
    assert len(pool.records("job")) == 1  # no second submission
    planned = json.loads(gridlrt(env, "demo", "--workdir", str(work), "--dry-run", "--json").stdout)
    assert planned["tarballs_to_make"] == 0 and planned["tokens_to_create"] == 0
    assert planned["tokens_to_run"] == 0 and planned["pilots"] == 0

    # the control: the same target data without applycal fails its source checks (exit 0:
    # it is meant to), and the normal run's results are left alone
    control = gridlrt(env, "demo", "--workdir", str(work), "--no-calibration", "--json")
    uncalibrated = json.loads(control.stdout)
    ucheck = uncalibrated["verification"]
    assert uncalibrated["run"] == "demo-uncalibrated" and uncalibrated["observations"]["made"] == 0
    assert not ucheck["calibrated"] and not ucheck["passed"] and not ucheck["sources_passed"]
    assert not any(row["flux_ok"] for row in ucheck["sources"]), ucheck["sources"]
    assert ucheck["worst"]["flux"] > 0.3 and uncalibrated["solutions"] is None
    assert {s["stage"] for s in uncalibrated["stages"]} == {"target_prep", "band", "image"}
    assert {t: v for t, v in outputs_of(pool_file).items() if t.startswith("demo.")} == before

    # a wrong answer on the normal run: exit 1 with one line, after the table
    solutions = Path(result["calibration_summary"])
    wrong = json.loads(solutions.read_text())
    wrong["stations"][3]["mean_amplitude"] = [
        a * 1.05 for a in wrong["stations"][3]["mean_amplitude"]
    ]
    solutions.write_text(json.dumps(wrong))
    failed = gridlrt(env, "demo", "--workdir", str(work), check=False)
    assert failed.returncode == 1, failed.stderr
    assert "verification, calibrated: FAILED" in failed.stdout
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .startswith("error: verification failed: amplitude of 1 of 16 station(s) off")
    )


def test_reduction_options_and_mistakes_are_one_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    work = tmp_path / "work"
    planned = json.loads(
        gridlrt(env, "demo", "--subbands", "6", "--band-subbands", "3", "--seed", "7",
                "--no-calibration", "--dry-run", "--json").stdout
    )  # fmt: skip
    assert planned["run"].startswith("demo-") and planned["run"].endswith("-uncalibrated")
    assert planned["stages"] == {"target_prep": 6, "band": 2, "image": 2}
    assert planned["tarballs_to_make"] == 12
    for args, expected in [
        (("demo", "--subbands", "2"), "--subbands: Input should be greater than or equal to 3"),
        (("demo", "--step", "average"), "--step is for --single-step"),
    ]:
        bad = gridlrt(env, *args, "--workdir", str(work), check=False)
        assert bad.returncode == 3 and expected in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2
    (work).mkdir()
    (work / "truth.json").write_text(json.dumps({"spec": {"seed": 1}}))
    other = gridlrt(env, "demo", "--workdir", str(work), "--dry-run", check=False)
    assert other.returncode == 3 and "holds observations made with another spec" in other.stderr
    assert "seed 1 -> 196" in other.stderr


def test_demo_runs_end_to_end_and_rerun_does_no_work(tmp_path: Path) -> None:
    env = cli_env(tmp_path)  # nothing set: the embedded default pool and storage root
    first = gridlrt(env, "demo", "--single-step", "--subbands", "4", "--json")
    result = json.loads(first.stdout)

    assert result["step"] == "flag-average" and result["created"] == 4
    assert result["record"]["backend"] == "local"
    rows = result["rows"]
    assert [r["subband"] for r in rows] == [100, 101, 102, 103]
    assert {r["status"] for r in rows} == {"done"}, rows
    data = tmp_path / "xdg-data" / "gridlrt"
    listed = (data / "demo" / "single-step" / "srm.txt").read_text().split()
    assert [line for line in listed if line.startswith("file://")] == result["observation"][
        "inputs"
    ]
    assert Path(result["observation"]["tarballs"][0]).name.startswith("L700700_SB100_uv.MS_")
    plot = Path(result["plot"])
    assert plot.read_bytes()[:8] == PNG and plot.stat().st_size > 20_000
    # the outputs are flagged, averaged measurement sets in the default storage root
    output = rows[0]["outputs"][0]
    assert output.startswith((data / "storage").as_uri())
    assert output.endswith("L700700_SB100_uv.flag-average.MS.tar")
    pool = open_pool(load_settings(pool=f"sqlite:///{data / 'pool.sqlite'}"))
    tokens = list(pool.tokens(step="flag-average"))
    attempts = {t.id: len(t.attempts) for t in tokens}
    assert {t.status for t in tokens} == {TokenStatus.DONE}

    again = gridlrt(env, "demo", "--single-step", "--subbands", "4", "--json")
    second = json.loads(again.stdout)
    assert second["created"] == 0 and second["record"] is None
    assert second["observation"]["made"] == 0
    assert [r["outputs"] for r in second["rows"]] == [r["outputs"] for r in rows]
    assert {t.id: len(t.attempts) for t in pool.tokens(step="flag-average")} == attempts
    assert len(pool.records("job")) == 1  # no second submission


def test_demo_table_and_where_things_are(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    out = gridlrt(env, "demo", "--single-step", "--subbands", "2", "--step", "average").stdout
    assert "average: 2 of 2 subbands done" in out
    assert "L700700_SB100_uv.average.MS.tar" in out
    assert "results: file://" in out and "plot:" in out and "progress.png" in out
    # the output is a real measurement set: averaged 64 -> 16 channels by DP3
    storage = tmp_path / "xdg-data" / "gridlrt" / "storage" / "L700700" / "average"
    [tarball] = [p for p in storage.iterdir() if p.name.startswith("L700700_SB100")]
    import tarfile

    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "check", filter="data")
    [ms] = list((tmp_path / "check").iterdir())
    with tables.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as spw:
        assert spw.getcol("NUM_CHAN")[0] == 16


def test_status_watch_during_the_demo_shows_progress_moving(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    data = tmp_path / "xdg-data" / "gridlrt"
    demo_out = (tmp_path / "demo.txt").open("w")
    demo = subprocess.Popen(
        [sys.executable, "-m", "gridlrt", "demo", "--single-step", "--subbands", "6", "--pilots",
         "1"],
        env=env, stdout=demo_out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        pool = None
        while pool is None or not list(pool.tokens(step="flag-average")):
            assert demo.poll() is None, (tmp_path / "demo.txt").read_text()
            assert time.monotonic() < deadline, "the demo never made its tokens"
            if (data / "pool.sqlite").exists():
                pool = open_pool(load_settings(pool=f"sqlite:///{data / 'pool.sqlite'}"))
            time.sleep(0.05)
        watch = gridlrt(env, "status", "--step", "flag-average", "--watch", "--until-done",
                        "--interval", "0.2s", "--json")  # fmt: skip
        assert demo.wait(timeout=120) == 0, (tmp_path / "demo.txt").read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo_out.close()
    done = [json.loads(line)["steps"][0]["done"] for line in watch.stdout.splitlines()]
    assert done == sorted(done) and done[-1] == 6, done
    assert len(set(done)) >= 2, f"no progress seen between frames: {done}"


def test_demo_dry_run_changes_nothing_and_bad_options_are_one_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    dry = gridlrt(env, "demo", "--single-step", "--subbands", "3", "--dry-run")
    assert "would make 3 of 3 archive tarballs" in dry.stdout
    assert "create 3 flag-average token(s)" in dry.stdout and "start 2 local pilot(s)" in dry.stdout
    assert not (tmp_path / "xdg-data").exists()  # no data, no pool, no run directory

    gridlrt(env, "demo", "--single-step", "--subbands", "2")
    planned = json.loads(
        gridlrt(env, "demo", "--single-step", "--subbands", "3", "--dry-run", "--json").stdout
    )
    assert planned["tarballs_to_make"] == 1 and planned["tokens_to_create"] == [
        "flag-average_L700700_SB102"
    ]
    assert planned["tokens_to_process"] == 1 and planned["pilots"] == 1

    for args, expected in [
        (("demo", "--single-step", "--subbands", "0"), "--subbands"),
        (("submit", "-b", "local", "--step", "x", "-n", "1", "--walltime", "0", "--dry-run"),
         "walltime: Input should be greater than 0"),
        (("submit", "-b", "nope", "--step", "x"), "unknown backend 'nope'"),
    ]:  # fmt: skip
        bad = gridlrt(env, *args, check=False)
        assert bad.returncode != 0 and expected in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
