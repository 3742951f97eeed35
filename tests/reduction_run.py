"""The calibrator -> target reduction as the grid tests run it: a small synthetic observation
pair uploaded to WebDAV as the LTA gives it (tarballs, one srm-style list per observation),
the run's pipeline file as ``gridlrt demo`` writes it (the built-in cal-target, its band stage
gathering ``subbands:2``), and the checks at the end: every token done once, the products on
WebDAV, and the science (the solutions summary and the band images downloaded, measured and
verified against the injected truth by the demo's own code).
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

from gridlrt.demo.observations import ReductionSpec, Truth, band_subbands, make_observations
from gridlrt.demo.reduction import BandImages, verify_products, write_pipeline
from gridlrt.demo.verify import SourceCheck, StationCheck, Verification, band_frequency_hz
from gridlrt.reduction.measure import ImageMeasurement
from gridlrt.storage import Storage
from gridlrt.tokens import Token, TokenStatus
from gridlrt.tokens.couchdb import CouchDBPool
from tests.gridlrt_cli import cli_env, gridlrt, job_states
from tests.lofar_inputs import put_tarball
from tests.secrets_watch import files_containing
from tests.services.couchdb import SecuredCouchDB
from tests.services.webdav import WebDAV

#: 4 calibrator + 4 target subbands, 2 bands of 2, 16 channels: small enough for a quick run
#: (8 sets of 8 MB), large enough for the clock fit (4 frequencies) and two band images. The
#: demo's 16 stations and 120 slots of 20 s are kept: fewer leave the images sidelobe-limited
#: and the fluxes 10 % off (gridlrt/demo/observations.py).
SPEC = ReductionSpec(subbands=4, band_subbands=2, channels=16)
#: the target's bands: label -> subbands (L700701_SB100-101, L700701_SB102-103)
SPEC_BANDS = band_subbands(SPEC)
#: tokens per stage of the cal-target pipeline for SPEC
PLAN = [("cal_prep", 4), ("cal_solve", 1), ("target_prep", 4), ("band", 2), ("image", 2)]
IMAGE_FILES = ("-image.fits", "-residual.fits", ".png", "-wsclean.log")


@dataclass
class ReductionInputs:
    truth: Truth
    steps_dir: Path  # holds calibrator.skymodel, as the user's --steps-dir would
    pipeline: Path  # the built-in cal-target, its band stage gathering subbands:2 (the demo's)
    lists: dict[str, Path]  # calibrator / target -> the list of their dav:// URLs
    inputs: dict[str, list[str]]


def put_reduction(webdav: WebDAV, area: str, tmp_path: Path) -> ReductionInputs:
    """Make SPEC's observations and put their tarballs on WebDAV under ``<area>/lta``."""
    observations = make_observations(tmp_path / "observations", SPEC)
    lists: dict[str, Path] = {}
    inputs: dict[str, list[str]] = {}
    for role, files in (("calibrator", observations.calibrator), ("target", observations.target)):
        urls = [put_tarball(webdav, area, tarball) for tarball in files.tarballs]
        lists[role] = tmp_path / f"{role}_srm.txt"
        lists[role].write_text("".join(f"{url}\n" for url in urls), encoding="utf-8")
        inputs[role] = urls
    truth = Truth.model_validate_json(observations.truth_file.read_text(encoding="utf-8"))
    return ReductionInputs(
        truth=truth,
        steps_dir=observations.steps_dir,
        pipeline=write_pipeline(tmp_path, SPEC),
        lists=lists,
        inputs=inputs,
    )


@dataclass
class ReductionRun:
    """A created run of the reduction: its tokens in a CouchDB pool behind credentials."""

    name: str
    reduction: ReductionInputs
    pool: CouchDBPool
    area: str  # on WebDAV: <area>/lta the inputs, <area>/results the products
    root: str  # the output root, dav://.../<area>/results
    env: dict[str, str]  # for the gridlrt CLI: the pool and its credentials

    def submit_args(self, backend: str) -> list[str]:
        """``gridlrt submit`` of two pilots for the run, as a user types it."""
        return ["submit", "-b", backend, "--pipeline", self.name, "-n", "2",
                "--steps-dir", str(self.reduction.steps_dir), "--output-root", self.root,
                "--json"]  # fmt: skip


def create_run(
    name: str, couch: SecuredCouchDB, webdav: WebDAV, tmp_path: Path, **settings: str
) -> ReductionRun:
    """SPEC's observations on WebDAV and ``gridlrt pipeline create`` of the run ``name`` in a
    new database of ``couch``; ``settings``: more of the CLI's environment."""
    url = couch.new_database()
    pool = CouchDBPool(url, (couch.username, couch.password))
    pool.init()
    area = f"{name}-{uuid4().hex[:8]}"
    reduction = put_reduction(webdav, area, tmp_path)
    env = cli_env(
        tmp_path,
        GRIDLRT_POOL=url,
        # given to the submitting command only: pilots get them as the 0600 file
        GRIDLRT_POOL_USERNAME=couch.username,
        GRIDLRT_POOL_PASSWORD=couch.password,
        **settings,
    )
    created = json.loads(
        gridlrt(env, "pipeline", "create", str(reduction.pipeline), "--name", name,
                "-i", f"calibrator={reduction.lists['calibrator']}",
                "-i", f"target={reduction.lists['target']}",
                "--steps-dir", str(reduction.steps_dir), "--json").stdout
    )  # fmt: skip
    assert [(p["name"], p["tokens"]) for p in created["plan"]] == PLAN
    root = webdav.dav_url(f"{area}/results")
    return ReductionRun(name, reduction, pool, area, root, env)


def token_problems(tokens: list[Token]) -> dict[str, str]:
    """Tokens not done, or not done at their first attempt: what went wrong (for messages)."""
    return {
        t.id: f"{t.status.value} attempts={[a.outcome for a in t.attempts]} "
        + (t.error[-1].message[-500:] if t.error else "")
        for t in tokens
        if t.status is not TokenStatus.DONE or [a.outcome for a in t.attempts] != ["done"]
    }


def check_products(tokens: list[Token], run: ReductionRun, storage: Storage) -> None:
    """Each stage read what it should and its outputs are where the steps put them, and on
    storage."""
    by_stage: dict[str, list[Token]] = {}
    for token in tokens:
        by_stage.setdefault(token.stage or "", []).append(token)
    assert sorted((s, len(t)) for s, t in by_stage.items()) == sorted(PLAN)
    for stage, role in (("cal_prep", "calibrator"), ("target_prep", "target")):
        assert sorted(t.input for t in by_stage[stage]) == sorted(run.reduction.inputs[role])
    root = f"{run.root}/{run.name}"
    [solve] = by_stage["cal_solve"]
    assert solve.output == [
        f"{root}/cal_solve/cal_solutions.h5",
        f"{root}/cal_solve/solutions.json",
    ]
    for token in by_stage["target_prep"]:  # every target subband applied the solutions
        assert token.extra_inputs == {"cal_solve": solve.output}, token.id
    bands = {t.group["label"]: t for t in by_stage["band"]}
    assert sorted(bands) == sorted(SPEC_BANDS), bands
    for label, token in bands.items():
        assert token.group["subbands"] == SPEC_BANDS[label]
        assert token.output == [f"{root}/band/{label}.MS.tar"], token.output  # packed
    for token in by_stage["image"]:
        assert token.output == [f"{root}/image/{token.id}{suffix}" for suffix in IMAGE_FILES], (
            token.output
        )
    for token in tokens:
        for url in token.output:
            assert storage.exists(url), f"{token.id}: {url} is not on storage"


def download(storage: Storage, url: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    local = into / url.rsplit("/", 1)[-1]
    storage.copy(url, local.as_uri())
    return local


def download_run(
    tokens: list[Token], storage: Storage, into: Path
) -> tuple[Path, list[BandImages]]:
    """The run's answer as its tokens uploaded it, downloaded into ``into``: the cal_solve
    summary (solutions.json) and each band's restored and residual images."""
    [solve] = [t for t in tokens if t.stage == "cal_solve"]
    [summary_url] = [u for u in solve.output if u.endswith("/solutions.json")]
    images = []
    for token in (t for t in tokens if t.stage == "image"):
        band = token.group["label"]
        fits, residual = (download(storage, u, into / band) for u in token.output[:2])
        images.append(
            BandImages(
                band=band,
                subbands=token.group["subbands"],
                frequency_hz=band_frequency_hz(token.group["subbands"]),
                fits=fits,
                residual=residual,
                png=None,
            )
        )
    return download(storage, summary_url, into), images


def verify_run(
    truth: Truth, summary: Path, images: list[BandImages]
) -> tuple[Verification, dict[str, ImageMeasurement]]:
    """The band images measured where ``truth`` put the target's sources, and everything
    compared with ``truth``: the demo's own verification (gridlrt.demo.reduction)."""
    return verify_products(truth, summary, images)


def check_run(
    run: ReductionRun,
    record: dict[str, Any],
    final: dict[str, Any],
    couch: SecuredCouchDB,
    webdav: WebDAV,
    into: Path,
) -> tuple[list[Token], tuple[Path, list[BandImages]], Verification]:
    """After the pilots of ``record`` (``gridlrt submit --json``) ended as ``final``: every
    token done at its first attempt by one of them, the products where the tokens say
    (:func:`check_products`), the science right (the summary and band images downloaded into
    ``into``, :func:`verify_run`), and the password in no job file, product or token. Returns
    the tokens, what was downloaded, and the verification."""
    tokens = list(run.pool.tokens())
    assert token_problems(tokens) == {}, run.pool.stage_counts()
    assert set(job_states(final).values()) == {"completed"}, final
    assert {t.attempts[0].job_id for t in tokens} <= set(record["job_ids"])
    storage = Storage()
    check_products(tokens, run, storage)
    downloaded = download_run(tokens, storage, into)
    verification, _ = verify_run(run.reduction.truth, *downloaded)
    assert verification.passed, table(verification)
    assert len(verification.stations) == SPEC.stations
    assert len(verification.sources) == SPEC.target_sources * SPEC.bands
    assert all(s.detected for s in verification.sources), table(verification)

    run_dir = Path(record["run_dir"])
    cred = run_dir / "pool.cred"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert files_containing(couch.password, run_dir, skip=(cred,)) == []
    assert files_containing(couch.password, webdav.path(run.area)) == []
    for token in tokens:
        assert couch.password not in json.dumps(token.to_doc())
    return tokens, downloaded, verification


def table(verification: Verification) -> str:
    """The verification for an assertion message: why it failed, the worst errors, and the
    rows that failed."""
    rows: list[StationCheck | SourceCheck] = [*verification.stations, *verification.sources]
    failed = [row.model_dump(mode="json") for row in rows if not row.passed]
    return json.dumps(
        {"reasons": verification.reasons, "worst": verification.worst, "failed": failed}, indent=1
    )
