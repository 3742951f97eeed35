"""The tutorial notebook ``tutorials/LRT_demo.ipynb``: the calibrator -> target reduction of
``gridlrt demo`` step by step through the Python API. It runs top to bottom (twice: a rerun
does no work) in a Jupyter kernel of this venv on the embedded default pool, its answer is
verified and its control fails, the dashboard it starts in the kernel shows the notebook's
counts and stops without leaving a thread, and it is stored clean (no outputs, no execution
counts), so the file in git only changes when its text does."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from gridlrt.config import load_settings
from gridlrt.demo import ReductionSpec, make_truth
from gridlrt.tokens import TokenStatus, open_pool

NOTEBOOK = Path(__file__).resolve().parents[2] / "tutorials" / "LRT_demo.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"
RUN, CONTROL = "demo", "demo-uncalibrated"
STAGES = {"cal_prep": 8, "cal_solve": 1, "target_prep": 8, "band": 2, "image": 2}
CONTROL_STAGES = {"target_prep": 8, "band": 2, "image": 2}
#: the PNGs the notebook shows, in order, as files of the work directory
SHOWN = [f"{RUN}/dag.png", f"{RUN}/progress.png", f"{RUN}/solutions.png", f"{RUN}/images.png"]
SHOWN += [f"{CONTROL}/images.png"]


def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The kernel inherits this process's environment: no user config, data or Jupyter paths."""
    for name in list(os.environ):
        if name.startswith(("GRIDLRT_", "JUPYTER_")) or name in ("IPYTHONDIR", "MPLBACKEND"):
            monkeypatch.delenv(name)
    data = tmp_path / "xdg-data"
    config = tmp_path / "xdg-config"
    config.mkdir()  # astropy warns on stderr about an XDG_CONFIG_HOME that does not exist
    monkeypatch.setenv("GRIDLRT_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    return data / "gridlrt"


def _execute(tmp_path: Path) -> tuple[Any, float]:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",  # the venv's kernelspec: argv "python" = this sys.executable
        timeout=300,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    began = time.monotonic()
    client.execute()
    return notebook, time.monotonic() - began


def _text(notebook: Any) -> str:
    """Everything the cells printed or displayed as text, in order."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif "data" in output:
                parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def _outputs(notebook: Any, kind: str) -> list[Any]:
    return [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == kind]


def _images(notebook: Any) -> list[bytes]:
    """The PNGs the cells displayed, in order."""
    shown = [o for c in notebook.cells for o in c.get("outputs", []) if "data" in o]
    return [base64.b64decode(o.data["image/png"]) for o in shown if "image/png" in o.data]


def _clean_run(notebook: Any) -> str:
    assert _outputs(notebook, "error") == []
    stderr = [o.text for o in _outputs(notebook, "stream") if o.name == "stderr"]
    assert stderr == [], stderr
    return _text(notebook)


def _row(text: str, *cells: str) -> bool:
    """A line of a text table starting with ``cells``, columns apart by spaces (the last one a
    prefix of its column)."""
    pattern = r"^" + r"\s+".join(re.escape(c) for c in cells)
    return re.search(pattern, text, re.MULTILINE) is not None


def _result(work: Path, run: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((work / run / "result.json").read_text())
    return result


def _attempts(run: str) -> dict[str, int]:
    """Attempts per token of ``run``; every token done."""
    with open_pool(load_settings()) as pool:
        tokens = [t for t in pool.tokens() if t.pipeline == run]
    assert {t.status for t in tokens} == {TokenStatus.DONE}, run
    return {t.id: len(t.attempts) for t in tokens}


def _dashboard_agrees(text: str, data: Path) -> None:
    """The dashboard cell's output: the command for this pool, the app answered and stopped
    with no thread left, and its counts are the notebook's (every stage done, none failed)."""
    assert f"on the UI node: gridlrt dashboard --pool sqlite:///{data / 'pool.sqlite'}\n" in text
    assert re.search(r"answered on http://127\.0\.0\.1:\d+/; stopped, threads left: 0$", text,
                     re.MULTILINE), text[-2000:]  # fmt: skip
    for stage, total in STAGES.items():
        assert _row(text, RUN, stage, f"{total}/0", f"{total}/0"), stage
    for stage, total in CONTROL_STAGES.items():
        assert _row(text, CONTROL, stage, f"{total}/0", f"{total}/0"), stage
    assert "the dashboard's counts equal the notebook's: True" in text


def _jobs() -> list[dict[str, Any]]:
    with open_pool(load_settings()) as pool:
        return pool.records("job")


@pytest.mark.slow
@pytest.mark.dp3
def test_tutorial_runs_the_verified_reduction_and_the_control_and_reruns_clean(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    record_property: Any,
) -> None:
    data = _isolate(monkeypatch, tmp_path)
    work = data / "demo"  # gridlrt demo's work directory: the notebook makes the same run
    truth = make_truth(ReductionSpec())

    first, seconds = _execute(tmp_path)
    record_property("tutorial_first_run_s", round(seconds, 1))
    print(f"tutorial: first run {seconds:.1f} s", file=sys.stderr)

    text = _clean_run(first)
    # the kernel is this venv's Python; settings: the embedded default under the isolated data
    assert f": {sys.executable}\n" in text
    assert f"pool:    sqlite:///{data / 'pool.sqlite'} (embedded)" in text
    assert f"workdir: {work}\n" in text
    # 1. the spec and the truth: every station's injected gain, the calibrator, the sources
    assert "16 stations, 8 subbands per observation (SB100..SB107)" in text
    for station in truth.stations:
        assert _row(text, station.name, f"{station.amplitude:.3f}"), station.name
        assert f"{station.clock_s * 1e9:+.1f}" in text
    assert _row(text, "calibrator", "L700700", "3C196", "123.4000")
    for source in truth.target.sources:
        assert _row(text, "target", "L700701", source.name, f"{source.ra_deg:.4f}")
    assert _row(text, "L700701_SB104-107", "SB104..SB107", "120.61")
    # 2. the observations as the LTA gives them
    assert "16 archive tarball(s) made now" in text
    assert _row(text, "calibrator_srm.txt", "L700700", "3C196", "8", "L700700_SB100_uv.MS_")
    assert _row(text, "target_srm.txt", "L700701", "P150+55", "8", "L700701_SB100_uv.MS_")
    assert re.search(r"^file://\S+/lta/L700701_SB107_uv\.MS_\w+\.tar$", text, re.MULTILINE)
    assert "3C196, POINT, 08:13:3" in text
    # 3. the run's pipeline file and its DAG
    assert f"{work / RUN / 'demo.toml'}:" in text and 'gather = "subbands:4"' in text
    assert "target_prep [apply-flag-average]  <- scatter target; after cal_solve" in text
    # 4. the dry run, then the tokens: later stages wait
    assert "0 of 16 tarballs to make, 21 token(s) to create, 21 to run, 2 pilot(s) to start" in text
    assert "21 token(s) created now, 0 already there" in text
    assert _row(text, "cal_prep", "flag-average", "8", "0", "8", "0", "0")
    assert _row(text, "cal_solve", "cal-solve", "1", "1", "0", "0", "0", "waits for cal_prep")
    # 5. two pilots, progress per stage: each stage's count moving up, two tokens at once
    assert "2 local pilot(s) started" in text
    progress = re.findall(r"^\s*[\d.]+ s  running\s+(.*)$", text, re.MULTILINE)
    for stage, total in STAGES.items():
        done = [int(m) for line in progress for m in re.findall(rf"\b{stage} (\d+)/{total}", line)]
        assert done[0] == 0 and done[-1] == total and len(set(done)) > 1, (stage, done)
    assert any("(2 running)" in line for line in progress), progress
    assert re.search(r"^image\s+image\s+2\s+2\s+[\d.]+\s+[\d.]+$", text, re.MULTILINE)  # times
    # 6. the H5parm through LoSoTo
    assert "sol000/clock000 (clock): time 1, ant 16" in text
    assert "fitted clocks (ns): CS001HBA0 +0.0, CS002HBA0 " in text
    # 8. the verification table: every row passes
    assert "verification of run demo: PASSED" in text
    for station in truth.stations:
        assert re.search(rf"^{station.name}( \(ref\))?\s.*\spass$", text, re.MULTILINE)
    sources = re.findall(r"^L700701_SB\d+-\d+\s+S\d\s+[\d.]+\s+[\d.]+\s+.*\s(pass|FAIL)$", text,
                         re.MULTILINE)  # fmt: skip
    # 8 rows of the calibrated run (pass), 8 of the comparison with the control (FAIL)
    assert sources == ["pass"] * 8 + ["FAIL"] * 8, sources
    # 9. the control fails, for the sources too
    assert "verification of run demo-uncalibrated: FAILED" in text
    assert "flux of 8 of 8 source measurement(s) off" in text
    assert "the check tells them apart: True" in text
    # 10. the dashboard, started in the kernel over the notebook's pool, agrees with it, stops
    _dashboard_agrees(text, data)
    # 6, 7, 9 and the DAG: the images shown inline are the run's plots
    images = _images(first)
    assert len(images) == len(SHOWN)
    for image, name in zip(images, SHOWN, strict=True):
        assert image[:8] == PNG and len(image) > 20_000, name
        assert image == (work / name).read_bytes(), f"the notebook shows {name}"

    # what the notebook did, seen from outside the kernel: results verified, the control not
    result, control = _result(work, RUN), _result(work, CONTROL)
    assert result["verification"]["passed"] and result["calibrated"]
    assert [(s["stage"], s["done"]) for s in result["stages"]] == list(STAGES.items())
    assert not control["verification"]["passed"]
    assert not control["verification"]["sources_passed"]
    assert [(s["stage"], s["done"]) for s in control["stages"]] == list(CONTROL_STAGES.items())
    assert result["record"]["count"] == control["record"]["count"] == 2
    attempts = {run: _attempts(run) for run in (RUN, CONTROL)}
    assert [len(attempts[RUN]), len(attempts[CONTROL])] == [21, 12]
    assert len(_jobs()) == 2

    # a rerun finds everything made and done: no new data, tokens or pilots, the same answer
    second, again = _execute(tmp_path)
    record_property("tutorial_rerun_s", round(again, 1))
    print(f"tutorial: rerun {again:.1f} s", file=sys.stderr)
    text = _clean_run(second)
    assert "0 archive tarball(s) made now" in text
    assert "0 of 16 tarballs to make, 0 token(s) to create, 0 to run, 0 pilot(s) to start" in text
    assert "0 token(s) created now, 21 already there" in text
    assert text.count("no pilots needed: every token was already done") == 2
    assert "local pilot(s) started" not in text
    assert "verification of run demo: PASSED" in text
    assert "verification of run demo-uncalibrated: FAILED" in text
    _dashboard_agrees(text, data)
    assert len(_images(second)) == len(SHOWN)
    assert {run: _attempts(run) for run in (RUN, CONTROL)} == attempts
    assert len(_jobs()) == 2


def test_tutorial_is_stored_without_outputs() -> None:
    raw = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    notebook = nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4)
    nbformat.validate(notebook)
    assert raw["nbformat"] == 4
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    assert set(raw["metadata"]) <= {"kernelspec", "language_info"}, raw["metadata"]
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 9
    for cell in raw["cells"]:
        where = f"cell {cell.get('id')}"
        assert cell["metadata"] == {}, f"{where}: metadata {cell['metadata']}"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{where} has outputs: clear them before committing"
            assert cell["execution_count"] is None, f"{where} has an execution count"
    markdown = "".join("".join(c["source"]) for c in raw["cells"] if c["cell_type"] == "markdown")
    for command in (
        "gridlrt demo --no-calibration",
        "gridlrt pipeline status --watch",
        "gridlrt jobs status",
        "gridlrt submit -b dirac --pipeline",
        "gridlrt demo --single-step",
        "gridlrt dashboard --pool",
        "ssh -L 8080:127.0.0.1:8080 ui-node",
    ):
        assert command in markdown
    for term in ("subband", "band", "clock", "H5parm", "reference station"):
        assert term in markdown, term
