"""The tutorial notebook ``tutorials/LRT_demo.ipynb``: it runs top to bottom (twice: a rerun does
no work) in a Jupyter kernel of this venv on the embedded default pool, and it is stored clean
(no outputs, no execution counts), so the file in git only changes when its text does."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from gridlrt.config import load_settings
from gridlrt.tokens import TokenStatus, open_pool

NOTEBOOK = Path(__file__).resolve().parents[2] / "tutorials" / "LRT_demo.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"
STEP = "flag-average"
TOKEN_IDS = [f"{STEP}_L700800_SB{sb}" for sb in range(100, 104)]


def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The kernel inherits this process's environment: no user config, data or Jupyter paths."""
    for name in list(os.environ):
        if name.startswith(("GRIDLRT_", "JUPYTER_")) or name in ("IPYTHONDIR", "MPLBACKEND"):
            monkeypatch.delenv(name)
    data = tmp_path / "xdg-data"
    monkeypatch.setenv("GRIDLRT_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
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


def test_tutorial_runs_on_the_embedded_default_and_reruns_clean(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = _isolate(monkeypatch, tmp_path)

    first, seconds = _execute(tmp_path)
    print(f"tutorial: first run {seconds:.1f} s", file=sys.stderr)

    assert _outputs(first, "error") == []
    stderr = [o.text for o in _outputs(first, "stream") if o.name == "stderr"]
    assert stderr == [], stderr
    text = _text(first)
    # the kernel is this venv's Python, with gridlrt importable
    assert f": {sys.executable}\n" in text
    # settings: the embedded default under the isolated data directory
    assert f"sqlite:///{data / 'pool.sqlite'} (embedded)" in text
    # the list, and the staging example worked out without a stager
    assert "4 inputs" in text and "(4 archive file(s) made now)" in text
    assert "L700800_SB103" in text
    assert "L229507 at SARA: subbands 100..103" in text
    assert "L412345 at Jülich: subbands 0..3" in text
    # tokens, sandbox, submission
    assert "4 token(s) created now, 0 already there" in text
    assert "built twice, same id: True" in text
    assert "-m gridlrt worker run --pool sqlite:///" in text
    assert "submitted " in text and "-local-flag-average-" in text
    # monitoring: every token done, an inline PNG of the progress
    assert "4 of 4 tokens done" in text
    shown = _outputs(first, "display_data") + _outputs(first, "execute_result")
    images = [base64.b64decode(o.data["image/png"]) for o in shown if "image/png" in o.data]
    assert len(images) == 1 and images[0][:8] == PNG and len(images[0]) > 20_000
    html = [o.data["text/html"] for o in shown if "text/html" in o.data]
    assert any("<td>flag-average_L700800_SB100</td>" in h for h in html)
    # the output measurement set: flagged and averaged by DP3
    assert "channels: 64 -> 16" in text
    assert "timeslots: 120 -> 60" in text
    assert "L700800_SB100_uv.flag-average.MS" in text
    assert "processed by DP3" in text

    # what the notebook did, seen from outside the kernel
    pool = open_pool(load_settings())
    with pool:
        tokens = {t.id: t for t in pool.tokens(step=STEP)}
        assert sorted(tokens) == TOKEN_IDS
        assert {t.status for t in tokens.values()} == {TokenStatus.DONE}
        attempts = {i: len(t.attempts) for i, t in tokens.items()}
        assert len(pool.records("job")) == 1
    assert (data / "tutorial" / "progress.png").read_bytes()[:8] == PNG
    output = tokens[TOKEN_IDS[0]].output[0]
    assert output.startswith((data / "storage").as_uri())

    # a rerun finds everything made and done: no new data, tokens or pilots
    second, again = _execute(tmp_path)
    print(f"tutorial: rerun {again:.1f} s", file=sys.stderr)
    assert _outputs(second, "error") == []
    text = _text(second)
    assert "(0 archive file(s) made now)" in text
    assert "0 token(s) created now, 4 already there" in text
    assert "nothing to submit" in text
    assert "4 of 4 tokens done" in text
    assert "channels: 64 -> 16" in text
    with open_pool(load_settings()) as pool:
        assert {t.id: len(t.attempts) for t in pool.tokens(step=STEP)} == attempts
        assert len(pool.records("job")) == 1


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
    for command in ("gridlrt status --watch", "gridlrt jobs status", "gridlrt submit -b dirac"):
        assert command in markdown
