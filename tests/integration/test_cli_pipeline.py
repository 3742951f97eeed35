"""``gridlrt pipeline`` end to end: the calibrator → target example of the pipeline issue with
``command`` steps, created with the CLI and run by two real pilots that take any step, on the
embedded pool and on a real pouchdb-server, with file:// storage through real gfal2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gridlrt.tokens import Token, TokenStatus
from gridlrt.tokens.couchdb import CouchDBPool
from gridlrt.tokens.sqlite import SQLitePool
from tests.gridlrt_cli import cli_env, gridlrt

CAL, TARGET = 100, 200
CAL_SUBBANDS = list(range(10))  # one of them fails: min_done 0.9 lets cal_solve start
TARGET_SUBBANDS = [sb for sb in range(12) if sb != 5]  # SB005 is missing from the archive
BAD = 7  # the calibrator subband whose preparation fails

PIPELINE = """
name = "caltgt"
[inputs]
calibrator = "calibrator subbands"
target = "target subbands"

[[stage]]
name = "cal_prep"
step = "prep"
over = "calibrator"

[[stage]]
name = "cal_solve"
step = "solve"
after = ["cal_prep"]
gather = "all"
min_done = 0.9

[[stage]]
name = "target_prep"
step = "apply"
over = "target"
after = ["cal_solve"]

[[stage]]
name = "band"
step = "concat"
over = "target_prep"
gather = "subbands:4"

[[stage]]
name = "image"
step = "image"
over = "band"
"""

STEP = """name = "{name}"
kind = "command"
command = ["sh", "-c", '{script}']
max_attempts = 1
[inputs]
kind = "file"
[outputs]
keep = ["{out}"]
url = "{{root}}/{{pipeline}}/{{stage}}/{{group_label}}/{{name}}"
"""

SCRIPTS = {
    # a calibrator subband's file holds its name; "bad" fails
    "prep": ("part.txt", "grep -qv bad {local_inputs} && cat {local_inputs} > part.txt"),
    "solve": ("solutions.txt", "cat {local_inputs} > solutions.txt"),
    "apply": ("part.txt", "cat {local_inputs} > part.txt && sed s/^/cal:/ {cal_solve} >> part.txt"),
    "concat": ("band.txt", "cat {local_inputs} > band.txt"),
    "image": ("image.txt", "grep -c ^L {local_inputs} > image.txt"),
}


def write_inputs(tmp_path: Path) -> dict[str, Path]:
    lta = tmp_path / "lta"
    lta.mkdir()
    lists = {}
    for name, obsid, subbands in (
        ("calibrator", CAL, CAL_SUBBANDS),
        ("target", TARGET, TARGET_SUBBANDS),
    ):
        urls = []
        for sb in subbands:
            path = lta / f"L{obsid}_SB{sb:03d}_uv.txt"
            path.write_text("bad\n" if (obsid, sb) == (CAL, BAD) else f"L{obsid}_SB{sb:03d}\n")
            urls.append(path.as_uri())
        lists[name] = tmp_path / f"{name}_srm.txt"
        lists[name].write_text("\n".join(reversed(urls)) + "\n")  # order must not matter
    return lists


def write_steps(tmp_path: Path) -> Path:
    steps = tmp_path / "steps"
    steps.mkdir()
    for name, (out, script) in SCRIPTS.items():
        (steps / f"{name}.toml").write_text(STEP.format(name=name, script=script, out=out))
    return steps


def run_pilots(env: dict[str, str], tmp_path: Path, steps: Path, n: int = 2) -> list[dict]:
    """``n`` pilots for any step, in parallel, until they stop by themselves."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridlrt",
                "worker",
                "run",
                "--steps-dir",
                str(steps),
                "--output-root",
                (tmp_path / "results").as_uri(),
                "--workdir",
                str(tmp_path / "wd"),
                "--poll-interval",
                "0.2s",
                "--heartbeat",
                "5s",
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        summaries.append(json.loads(out))
    return summaries


def check_run(tokens: dict[str, Token], results: Path) -> None:
    """The science of the example: every stage got exactly its parents' outputs, in order."""
    stage = {
        t.stage: sorted(i for i in tokens if tokens[i].stage == t.stage) for t in tokens.values()
    }
    assert len(tokens) == 10 + 1 + 11 + 3 + 3
    bad = f"caltgt.cal_prep.L{CAL}_SB{BAD:03d}"
    assert tokens[bad].status is TokenStatus.ERROR and len(tokens[bad].attempts) == 1
    assert all(t.status is TokenStatus.DONE for i, t in tokens.items() if i != bad), {
        i: t.status for i, t in tokens.items()
    }
    assert all(len(t.attempts) == 1 for t in tokens.values())  # nothing ran twice
    [solve] = [tokens[i] for i in tokens if tokens[i].stage == "cal_solve"]
    good = [sb for sb in CAL_SUBBANDS if sb != BAD]
    assert [p.id for p in solve.provenance] == [f"caltgt.cal_prep.L{CAL}_SB{sb:03d}" for sb in good]
    solutions = results / "caltgt" / "cal_solve" / "all" / "solutions.txt"
    assert solutions.read_text().split() == [f"L{CAL}_SB{sb:03d}" for sb in good]
    bands = {tokens[i].group["label"]: tokens[i] for i in tokens if tokens[i].stage == "band"}
    assert sorted(bands) == [f"L{TARGET}_SB000-003", f"L{TARGET}_SB004-007", f"L{TARGET}_SB008-011"]
    for label, band in bands.items():
        first = int(label[-7:-4])
        members = [sb for sb in TARGET_SUBBANDS if first <= sb < first + 4]
        lines = (results / "caltgt" / "band" / label / "band.txt").read_text().splitlines()
        names = [line for line in lines if not line.startswith("cal:")]
        assert names == [f"L{TARGET}_SB{sb:03d}" for sb in members]  # subband order, once
        assert len(lines) == len(members) * (1 + len(good))  # each saw the whole solution
        assert all(p.outputs and p.outputs[0].checksum for p in band.provenance)
        image = results / "caltgt" / "image" / label / "image.txt"
        assert image.read_text().strip() == str(len(members))
    assert len(stage["target_prep"]) == len(TARGET_SUBBANDS)


@pytest.mark.parametrize("backend", ["embedded", "couchdb"])
def test_the_calibrator_target_example_runs_with_two_pilots(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "couchdb":
        url = request.getfixturevalue("couchdb_database")
        env = cli_env(tmp_path, GRIDLRT_POOL=url)
        gridlrt(env, "pool", "init")
    else:
        env = cli_env(tmp_path)
    lists = write_inputs(tmp_path)
    steps = write_steps(tmp_path)
    definition = tmp_path / "caltgt.toml"
    definition.write_text(PIPELINE)
    args = ["pipeline", "create", str(definition), "--steps-dir", str(steps),
            "-i", f"calibrator={lists['calibrator']}",
            "-i", f"target={lists['target']}"]  # fmt: skip
    planned = json.loads(gridlrt(env, *args, "--dry-run", "--json").stdout)
    assert [(s["name"], s["tokens"]) for s in planned["plan"]] == [
        ("cal_prep", 10), ("cal_solve", 1), ("target_prep", 11), ("band", 3), ("image", 3)
    ]  # fmt: skip
    assert "created 28 token(s)" in gridlrt(env, *args).stdout
    assert "28 already there" in gridlrt(env, *args).stdout  # idempotent
    waiting = json.loads(gridlrt(env, "pipeline", "status", "caltgt", "--json").stdout)
    assert [s["counts"]["waiting"] for s in waiting[0]["stages"]] == [0, 1, 11, 3, 3]

    summaries = run_pilots(env, tmp_path, steps)
    assert sum(s["processed"] for s in summaries) == 28

    pool = (
        CouchDBPool(env["GRIDLRT_POOL"])
        if backend == "couchdb"
        else SQLitePool(Path(env["XDG_DATA_HOME"]) / "gridlrt" / "pool.sqlite")
    )
    with pool:
        tokens = {t.id: t for t in pool.tokens()}
    check_run(tokens, tmp_path / "results")
    final = json.loads(gridlrt(env, "pipeline", "status", "--json").stdout)
    assert {s["name"]: s["counts"]["done"] for s in final[0]["stages"]} == {
        "cal_prep": 9, "cal_solve": 1, "target_prep": 11, "band": 3, "image": 3
    }  # fmt: skip
    shown = gridlrt(env, "status").stdout
    assert "run caltgt" in shown and "target_prep" in shown


def test_pipeline_mistakes_are_one_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    lists = write_inputs(tmp_path)
    steps = write_steps(tmp_path)
    definition = tmp_path / "caltgt.toml"
    definition.write_text(PIPELINE)
    cal = f"calibrator={lists['calibrator']}"
    cases = {
        ("-i", cal): "target",  # an input the pipeline needs is not given
        ("-i", cal, "-i", "target"): "NAME=FILE",
        ("-i", cal, "-i", f"target={tmp_path / 'nope.txt'}"): "nope.txt",
        ("-i", cal, "-i", f"tagret={lists['target']}"): "tagret",
    }
    for extra, needle in cases.items():
        result = gridlrt(env, "pipeline", "create", str(definition), "--steps-dir", str(steps),
                         *extra, check=False)  # fmt: skip
        assert result.returncode in (2, 3), (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    definition.write_text(PIPELINE.replace('after = ["cal_solve"]', 'after = ["cal_sovle"]'))
    result = gridlrt(env, "pipeline", "create", str(definition), "-i", cal, check=False)
    assert (
        result.returncode == 3 and "cal_sovle" in result.stderr and "caltgt.toml" in result.stderr
    )
    missing_step = gridlrt(env, "pipeline", "show", str(definition), check=False)
    assert missing_step.returncode == 3
    definition.write_text(PIPELINE)
    assert "cal_prep [prep]" in gridlrt(env, "pipeline", "show", str(definition)).stdout
    png = tmp_path / "dag.png"
    gridlrt(env, "pipeline", "show", str(definition), "--png", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unknown = gridlrt(env, "pipeline", "status", "nosuch", check=False)
    assert unknown.returncode != 0 and len(unknown.stderr.strip().splitlines()) == 1
    # the built-in pipeline by name, when no run has that name; an unknown name is one line
    builtin = gridlrt(env, "pipeline", "show", "cal-target").stdout
    assert "cal_solve [cal-solve]" in builtin and "image [image]" in builtin
    nosuch = gridlrt(env, "pipeline", "show", "nosuch", check=False)
    assert nosuch.returncode == 3 and len(nosuch.stderr.strip().splitlines()) == 1


def test_pipeline_run_creates_starts_local_pilots_and_waits(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    lists = write_inputs(tmp_path)
    steps = write_steps(tmp_path)
    definition = tmp_path / "caltgt.toml"
    definition.write_text(PIPELINE)
    args = ["pipeline", "run", str(definition), "--steps-dir", str(steps), "-n", "3",
            "--output-root", (tmp_path / "results").as_uri(),
            "-i", f"calibrator={lists['calibrator']}",
            "-i", f"target={lists['target']}"]  # fmt: skip
    dry = gridlrt(env, *args, "--dry-run")
    assert "would create 28 token(s)" in dry.stdout
    assert not (Path(env["XDG_DATA_HOME"]) / "gridlrt" / "pool.sqlite").exists()
    runs = json.loads(gridlrt(env, *args, "--json").stdout)
    assert runs[0]["counts"]["done"] == 27 and runs[0]["counts"]["error"] == 1
    with SQLitePool(Path(env["XDG_DATA_HOME"]) / "gridlrt" / "pool.sqlite") as pool:
        tokens = {t.id: t for t in pool.tokens()}
    check_run(tokens, tmp_path / "results")
    jobs = list((tmp_path / "runs").iterdir())
    again = json.loads(gridlrt(env, *args, "--json").stdout)  # safe to rerun: nothing redone
    assert again[0]["counts"] == runs[0]["counts"]
    assert list((tmp_path / "runs").iterdir()) == jobs  # no pilot started
    with SQLitePool(Path(env["XDG_DATA_HOME"]) / "gridlrt" / "pool.sqlite") as pool:
        assert all(len(t.attempts) == 1 for t in pool.tokens())
