"""``gridlrt data clean`` and ``gridlrt data rm`` on real storage (file:// and the WebDAV
server) and real pools (SQLite and CouchDB): a small command-step pipeline run by real pilots
(prep per subband -> band per 2 subbands -> image per band), cleaned keeping its images; files
a waiting, active or blocked child still needs are refused; a dataset with a file already gone;
an interrupted clean finished by a rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gridlrt.datasets import catalogue
from gridlrt.datasets.cleanup import carry_out, plan_clean, plan_rm
from gridlrt.datasets.model import Dataset, entry_for_url, write_dataset
from gridlrt.storage import Storage
from gridlrt.tokens import PilotInfo, Token, TokenPool, TokenStatus
from tests.gridlrt_cli import cli_env, gridlrt
from tests.integration.test_cli_pipeline import STEP
from tests.services.webdav import WebDAV

OBS = 300
SUBBANDS = [0, 1, 2, 3]
PIPELINE = """
name = "cln"
[inputs]
obs = "subbands"

[[stage]]
name = "prep"
step = "prep"
over = "obs"

[[stage]]
name = "band"
step = "concat"
over = "prep"
gather = "subbands:2"

[[stage]]
name = "image"
step = "image"
over = "band"
"""
SCRIPTS = {
    "prep": ("part.txt", "cat {local_inputs} > part.txt"),
    "concat": ("band.txt", "cat {local_inputs} > band.txt"),
    "image": ("image.txt", "grep -c ^L {local_inputs} > image.txt"),
}
BANDS = [f"L{OBS}_SB000-001", f"L{OBS}_SB002-003"]


class Run:
    """A pipeline run ``cln`` in ``pool`` with its outputs under ``root``; files by URL."""

    def __init__(self, tmp_path: Path, pool: TokenPool, root: str, local: Path) -> None:
        self.env = cli_env(tmp_path, GRIDLRT_POOL=pool_url(pool))
        self.pool, self.root, self.local = pool, root, local
        self.steps = tmp_path / "steps"
        self.steps.mkdir()
        for name, (out, script) in SCRIPTS.items():
            (self.steps / f"{name}.toml").write_text(STEP.format(name=name, script=script, out=out))
        lta = tmp_path / "lta"
        lta.mkdir()
        urls = []
        for sb in SUBBANDS:
            path = lta / f"L{OBS}_SB{sb:03d}_uv.txt"
            path.write_text(f"L{OBS}_SB{sb:03d}\n")
            urls.append(path.as_uri())
        (tmp_path / "srm.txt").write_text("\n".join(urls) + "\n")
        (tmp_path / "cln.toml").write_text(PIPELINE)
        gridlrt(self.env, "pipeline", "create", str(tmp_path / "cln.toml"), "--steps-dir",
                str(self.steps), "-i", f"obs={tmp_path / 'srm.txt'}")  # fmt: skip
        self.tmp_path = tmp_path

    def pilot(self, *extra: str) -> None:
        """One pilot until nothing is left that it may take."""
        args = ["worker", "run", "--steps-dir", str(self.steps), "--output-root", self.root,
                "--workdir", str(self.tmp_path / "wd"), "--poll-interval", "0.2s",
                "--idle-timeout", "0s", *extra]  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "gridlrt", *args], env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    def path(self, *parts: str) -> Path:
        return self.local.joinpath("cln", *parts)

    def tokens(self) -> dict[str, Token]:
        return {t.id: t for t in self.pool.tokens()}

    def clean(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return gridlrt(self.env, "data", "clean", "cln", *args, check=check)


def pool_url(pool: TokenPool) -> str:
    return pool.url


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


@pytest.fixture(params=["file", "webdav"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    """(the output root URL, the local directory behind it)."""
    if request.param == "file":
        local = tmp_path / "results"
        return local.as_uri(), local
    webdav: WebDAV = request.getfixturevalue("webdav")
    rel = f"clean-{tmp_path.name}"
    return webdav.davs_url(rel), webdav.path(rel)


def test_a_finished_run_is_cleaned_keeping_its_images(
    pool: TokenPool, where: tuple[str, Path], tmp_path: Path
) -> None:
    run = Run(tmp_path, pool, *where)
    run.pilot()
    before = run.tokens()
    assert all(t.status is TokenStatus.DONE for t in before.values()), before
    images = {b: run.path("image", b, "image.txt").read_text() for b in BANDS}
    # a user's own file in one of the prep directories: that directory is not empty
    notes = run.path("prep", f"L{OBS}_SB000", "notes.txt")
    notes.write_text("mine\n")
    everything = files_under(run.path())

    dry = json.loads(run.clean("--keep", "image", "--json").stdout)
    plan = dry["plan"]
    assert dry["dry_run"] is True and not plan["refusal"] and not plan["refused"]
    assert plan["kept_stages"] == ["image"] and plan["removed_stages"] == ["prep", "band"]
    # every prep and band token's output and payload log, nothing of image
    assert sorted((f["stage"], f["kind"]) for f in plan["files"]) == sorted(
        [("prep", "output"), ("prep", "log")] * 4 + [("band", "output"), ("band", "log")] * 2
    )
    assert dry["bytes"] == sum(f["size"] for f in plan["files"]) > 0
    rel = [d.removeprefix(where[0].rstrip("/") + "/") for d in plan["directories"]]
    assert sorted(rel) == sorted(
        [f"cln/prep/L{OBS}_SB{sb:03d}" for sb in (1, 2, 3)]
        + [f"cln/band/{b}" for b in BANDS]
        + ["cln/band"]
    )
    assert files_under(run.path()) == everything  # the dry run removed nothing
    shown = run.clean("--keep", "image").stdout
    assert "dry run: nothing removed" in shown and "would remove: run cln" in shown

    # catalogue records (as pilots write for measurement sets) of a removed and a kept output
    band_out, image_out = (
        before[f"cln.{stage}.{BANDS[0]}"].output[0] for stage in ("band", "image")
    )
    catalogue.record(pool, [entry_for_url(band_out), entry_for_url(image_out)])
    done = run.clean("--keep", "image", "--yes", "--json")
    result = json.loads(done.stdout)["result"]
    assert result["records_forgotten"] == 1
    assert [e.url for e in catalogue.entries(pool)] == [image_out]  # the removed one is gone
    assert len(result["removed"]) == 12 and not result["failed"]
    assert result["bytes_freed"] == dry["bytes"]
    assert sorted(result["directories_removed"]) == sorted(plan["directories"])
    assert not run.path("band").exists()
    assert files_under(run.path()) == sorted(
        [f"image/{b}/{f}" for b in BANDS for f in ("image.txt", f"cln.image.{b}.log")]
        + [f"prep/L{OBS}_SB000/notes.txt"]
    )
    assert {b: run.path("image", b, "image.txt").read_text() for b in BANDS} == images
    assert notes.read_text() == "mine\n"  # its directory is not empty: untouched
    after = run.tokens()
    for token_id, token in after.items():
        mark = (token.model_extra or {}).get("outputs_removed")
        if token.stage == "image":
            assert mark is None
        else:
            assert mark["by"] == "gridlrt data clean" and len(mark["urls"]) == 2, token_id
            assert token.output == before[token_id].output  # what it produced stays recorded

    again = run.clean("--keep", "image", "--yes")
    assert "removed 0 file(s)" in again.stdout and "12 already gone" in again.stdout
    bad = run.clean("--keep", "imgae", check=False)
    assert bad.returncode == 3 and len(bad.stderr.strip().splitlines()) == 1
    assert "imgae" in bad.stderr and "prep, band, image" in bad.stderr


def test_files_a_waiting_active_or_blocked_child_needs_are_refused(
    pool: TokenPool, tmp_path: Path
) -> None:
    local = tmp_path / "results"
    run = Run(tmp_path, pool, local.as_uri(), local)
    run.pilot("--step", "prep")  # every prep done; both bands promoted to todo
    prep = {sb: f"cln.prep.L{OBS}_SB{sb:03d}" for sb in SUBBANDS}
    band_a, band_b = (f"cln.band.{b}" for b in BANDS)
    outputs = {sb: str(run.tokens()[prep[sb]].output[0]) for sb in SUBBANDS}
    # SB003 again: band B waits again for it (its SB002 parent is done); SB003's old output
    # is still on storage but nobody will take it any more
    assert pool.reset(ids=[prep[3]], cascade=True) == [prep[3], band_b]
    pilot = PilotInfo(pilot="test", host="here")
    claimed = pool.claim(pilot, step="concat")  # band A is active
    assert claimed is not None and claimed.id == band_a
    states = {i: t.status for i, t in run.tokens().items()}
    assert states[band_a] is TokenStatus.LOCKED and states[band_b] is TokenStatus.WAITING

    dry = json.loads(run.clean("--keep", "image", "--json").stdout)["plan"]
    refused = {f["url"]: f["reason"] for f in dry["refused"]}
    assert set(refused) == {outputs[0], outputs[1], outputs[2]}
    assert f"{band_a} (locked)" in refused[outputs[0]]
    assert f"{band_b} (waiting)" in refused[outputs[2]]
    assert "not finished" in dry["refusal"]
    before = files_under(local)
    refusal = run.clean("--keep", "image", "--yes", check=False)
    assert refusal.returncode == 3 and len(refusal.stderr.strip().splitlines()) == 1
    assert "still needed" in refusal.stderr and files_under(local) == before

    # SB003 fails for good: band B is blocked, and still keeps SB002's output
    again = pool.claim(pilot, step="prep")
    assert again is not None and again.id == prep[3]
    pool.fail(prep[3], "test", "boom")
    assert pool.get(band_b).status is TokenStatus.BLOCKED
    dataset = Dataset(name="prep", entries=[entry_for_url(outputs[sb]) for sb in SUBBANDS])
    plan = plan_rm(dataset, pool)
    assert {f.url: f.reason for f in plan.refused}[outputs[2]].endswith(f"{band_b} (blocked)")
    assert [f.url for f in plan.files] == [outputs[3]]

    # data rm removes the one file nobody needs and says why the others stay
    listed = write_dataset(tmp_path / "prep.jsonl", dataset)
    removed = gridlrt(run.env, "data", "rm", str(listed), "--yes", check=False)
    assert removed.returncode == 1, removed.stderr
    assert "removed 1 file(s)" in removed.stdout and "3 refused" in removed.stdout
    assert [Path(outputs[sb][7:]).exists() for sb in SUBBANDS] == [True, True, True, False]


def test_rm_of_a_dataset_with_a_file_already_gone(webdav: WebDAV, tmp_path: Path) -> None:
    rel = f"rm-{tmp_path.name}/L400"
    urls = []
    for sb in range(4):
        path = webdav.path(f"{rel}/sb{sb}/L400_SB{sb:03d}_uv.MS.tar")
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * (100 + sb))
        urls.append(webdav.davs_url(f"{rel}/sb{sb}/L400_SB{sb:03d}_uv.MS.tar"))
    local = tmp_path / "local" / "L400_SB009_uv.MS.tar"  # a file:// one in the same dataset
    local.parent.mkdir()
    local.write_bytes(b"y" * 50)
    urls.append(local.as_uri())
    webdav.path(f"{rel}/sb2/L400_SB002_uv.MS.tar").unlink()  # already gone
    listed = tmp_path / "srm.txt"
    listed.write_text("\n".join(urls) + "\n")
    env = cli_env(tmp_path)

    dry = json.loads(gridlrt(env, "data", "rm", str(listed), "--json").stdout)
    assert [f["url"] for f in dry["plan"]["missing"]] == [urls[2]]
    assert dry["bytes"] == 100 + 101 + 103 + 50
    assert all(webdav.path(u).exists() for u in urls[:2] + urls[3:4]) and local.exists()
    assert "--yes removes 4 file(s)" in gridlrt(env, "data", "rm", str(listed)).stdout

    done = gridlrt(env, "data", "rm", str(listed), "--yes")
    assert "removed 4 file(s)" in done.stdout and "1 already gone" in done.stdout
    assert "4 directories removed" in done.stdout  # sb2 too: its file was gone already
    assert sorted(p.name for p in webdav.path(rel).iterdir()) == []
    assert webdav.path(rel).is_dir()  # the dataset's top directory stays
    assert not local.exists() and local.parent.is_dir()
    only = gridlrt(env, "data", "rm", str(listed), "--subbands", "0..1", "--yes")
    assert "2 already gone" in only.stdout


def test_an_interrupted_clean_is_finished_by_a_rerun(pool: TokenPool, tmp_path: Path) -> None:
    local = tmp_path / "results"
    run = Run(tmp_path, pool, local.as_uri(), local)
    run.pilot()
    storage = Storage()
    plan = plan_clean(pool, "cln", ["image"], storage=storage)
    assert len(plan.files) == 12 and plan.directories
    # as a clean killed after five removals leaves it: files gone, directories still there
    part = carry_out(plan.model_copy(update={"files": plan.files[:5], "directories": []}), pool,
                     storage=storage, by="gridlrt data clean")  # fmt: skip
    assert len(part.removed) == 5 and all(run.path("band").is_dir() for _ in [0])
    rerun = json.loads(run.clean("--keep", "image", "--yes", "--json").stdout)
    assert len(rerun["plan"]["missing"]) == 5 and len(rerun["result"]["removed"]) == 7
    assert sorted(rerun["result"]["directories_removed"]) == sorted(plan.directories)
    assert not run.path("prep").exists() and not run.path("band").exists()
    assert files_under(run.path()) == sorted(
        f"image/{b}/{f}" for b in BANDS for f in ("image.txt", f"cln.image.{b}.log")
    )
