"""The main job: a calibrator → target → bands → images reduction on this machine, verified.

This module owns the run of ``gridlrt demo``: the observations of
:mod:`gridlrt.demo.observations` in a work directory, the run's pipeline file (the shipped
``cal-target`` pipeline with the demo's band size), its tokens in the pool (the embedded one by
default), local pilots for them, progress per stage, then the answer: the calibration summary
and band images found through the tokens' ``output`` lists, the images measured
(:mod:`gridlrt.reduction.measure`), compared with the truth (:mod:`gridlrt.demo.verify`) and
drawn (:mod:`gridlrt.demo.plot`).

:func:`run_reduction` with ``calibrate=False`` is the control: the same target data through
the same band and image stages, with ``flag-average`` instead of ``apply-flag-average`` (step
3 without applycal) and no calibrator stages; its source checks must fail.

Layout of the work directory (``store``)::

    lta/                 both observations' tarballs, as the LTA names them
    calibrator_srm.txt   target_srm.txt        the lists (file:// URLs here, srm:// on the grid)
    truth.json           what was injected (pilots never see it)
    steps/               the pilots' --steps-dir: calibrator.skymodel
    results/             the pilots' output root (file://): every token's outputs
    <run>/               the run's pipeline file, plots and result.json

Safe to rerun: made files are kept, tokens are created once (ids come from the run name and
LOFAR names), pilots are started only while tokens are still to run, and the verification is
computed again from the results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, Field

from gridlrt.config import Settings
from gridlrt.demo.observations import (
    Observations,
    ReductionSpec,
    Truth,
    make_observations,
    plan_observations,
)
from gridlrt.demo.run import archive_tarball
from gridlrt.demo.verify import Verification, band_frequency_hz, verify
from gridlrt.errors import GridlrtError, InputError, PoolError, PoolUnavailable
from gridlrt.extras import needs_extra
from gridlrt.pipelines.definition import Pipeline, validate_pipeline
from gridlrt.pipelines.expand import StagePlan, expand
from gridlrt.pipelines.service import create_pipeline, pipeline_record, pipeline_status
from gridlrt.submit.model import JobRecord, Resources
from gridlrt.tokens import Token, TokenPool, TokenStatus
from gridlrt.tokens.model import ACTIVE

if TYPE_CHECKING:
    from gridlrt.reduction.measure import ImageMeasurement

log = logging.getLogger(__name__)

__all__ = [
    "BandImages",
    "ReductionPlan",
    "ReductionProgress",
    "ReductionResult",
    "StageTime",
    "pipeline_definition",
    "plan_reduction",
    "run_name",
    "run_reduction",
    "spec_label",
    "verify_products",
    "write_pipeline",
]

SHIPPED_PIPELINE: Final = "cal-target"
RESULTS_DIR: Final = "results"
#: the step a target subband runs without calibration (step 3 without applycal)
UNCALIBRATED_STEPS: Final = {"apply-flag-average": "flag-average"}
#: token statuses that mean "still to run or running" (blocked and error wait for a user)
BUSY: Final = frozenset({TokenStatus.WAITING, TokenStatus.TODO} | set(ACTIVE))


class ReductionProgress(BaseModel):
    """What :func:`run_reduction` reports while it works (``on_progress``)."""

    phase: str = Field(description="making observations, creating tokens, running, measuring")
    stages: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="stage -> tokens per status, in DAG order"
    )


class StageTime(BaseModel):
    """How long one stage took, from its tokens' last attempts."""

    stage: str
    step: str
    tokens: int
    done: int
    start_s: float | None = Field(description="first claim, seconds after the run's first")
    end_s: float | None = Field(description="last finish, seconds after the run's first claim")
    span_s: float | None = Field(description="end_s - start_s")
    busy_s: float = Field(description="sum of the attempts' durations (pilot-seconds)")
    timings: dict[str, float] = Field(
        default_factory=dict, description="summed per phase: download, run, upload, ..."
    )


class BandImages(BaseModel):
    """One band's image products, as local files."""

    band: str
    subbands: list[int]
    frequency_hz: float
    fits: Path
    residual: Path | None
    png: Path | None


class ReductionResult(BaseModel):
    """What ``gridlrt demo`` reports (``--json``)."""

    run: str
    calibrated: bool
    workdir: Path
    pool_url: str
    results_root: str
    pipeline_file: Path
    observations: Observations
    created: int = Field(description="tokens created now (0 on a rerun)")
    record: JobRecord | None = Field(description="the pilots started now (None: none needed)")
    verification: Verification
    calibration_summary: Path | None = Field(description="cal-solve's solutions.json")
    solutions: Path | None = Field(description="cal-solve's H5parm")
    images: list[BandImages]
    plots: dict[str, Path]
    stages: list[StageTime]
    failed_tokens: list[str] = Field(default_factory=list)
    wall_seconds: float


class ReductionPlan(BaseModel):
    """What :func:`run_reduction` would do now (``gridlrt demo --dry-run``)."""

    run: str
    calibrated: bool
    workdir: Path
    tarballs_to_make: int
    tarballs: int
    stages: dict[str, int] = Field(description="stage -> tokens in the run")
    tokens_to_create: int
    tokens_to_run: int = Field(description="not created yet, or waiting, todo or running")
    pilots: int
    pool_state: str = Field(default="", description="why the pool could not be read, if so")


def worker_args(output_root: str) -> list[str]:
    """The local pilots' options: results into ``output_root``, quick polls (a demo waits)."""
    return ["--output-root", output_root, "--heartbeat", "5s", "--poll-interval", "0.5s"]


def spec_label(spec: ReductionSpec) -> str:
    """``demo`` for the default observations, ``demo-<6 hex>`` (from every field) for others:
    the name of their runs and of their default work directory."""
    if spec == ReductionSpec():
        return "demo"
    return "demo-" + hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:6]


def run_name(spec: ReductionSpec, calibrate: bool = True) -> str:
    """The run's name in the pool: :func:`spec_label`, ``-uncalibrated`` for the control run."""
    return spec_label(spec) + ("" if calibrate else "-uncalibrated")


def _shipped_definition() -> dict[str, Any]:
    path = resources.files("gridlrt") / "data" / "pipelines" / f"{SHIPPED_PIPELINE}.toml"
    return tomllib.loads(path.read_text(encoding="utf-8"))


def pipeline_definition(spec: ReductionSpec, calibrate: bool = True) -> dict[str, Any]:
    """The run's pipeline (as a parsed file): the shipped ``cal-target`` with the band stage
    gathering ``subbands:N`` (LINC's ~2 MHz bands are 10 subbands; the demo's are N); for
    ``calibrate=False`` without the calibrator's stages, and the target's subbands prepared by
    ``flag-average`` with no ``after`` (the same data, no applycal)."""
    data = _shipped_definition()
    data["name"] = run_name(spec, calibrate)
    stages: list[dict[str, Any]] = data["stage"]
    bands = [s for s in stages if s.get("step") == "concat"]
    if len(bands) != 1:
        raise GridlrtError(
            f"the shipped {SHIPPED_PIPELINE} pipeline has {len(bands)} concat stages; the demo "
            "expects one (its band stage)"
        )
    bands[0]["gather"] = f"subbands:{spec.band_subbands}"
    if calibrate:
        data["description"] = (
            f"{data.get('description', '')} (gridlrt demo: bands of {spec.band_subbands} subbands)"
        )
        return data
    removed = _stages_over(stages, "calibrator")
    kept = []
    for stage in stages:
        if stage["name"] in removed:
            continue
        after = [name for name in stage.get("after", []) if name not in removed]
        if after != stage.get("after", []):
            stage["step"] = UNCALIBRATED_STEPS.get(stage["step"], stage["step"])
            stage.pop("after")
            if after:
                stage["after"] = after
        kept.append(stage)
    data["stage"] = kept
    data["inputs"] = {k: v for k, v in data.get("inputs", {}).items() if k != "calibrator"}
    data["description"] = "the target without calibration (gridlrt demo's control run)"
    return data


def _stages_over(stages: list[dict[str, Any]], source: str) -> set[str]:
    """Stages that run over ``source``, or over or after such a stage, transitively, except
    through ``after`` (what the control run drops is the calibrator's own chain)."""
    found: set[str] = set()
    for stage in stages:
        if stage.get("over") == source or stage.get("over") in found:
            found.add(stage["name"])
    return found


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def pipeline_toml(data: dict[str, Any], header: str = "") -> str:
    """A pipeline definition (scalars, ``[inputs]``, ``[[stage]]`` tables) as TOML text."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in data.items() if k not in tables | arrays]
    for name, table in tables.items():
        lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    for name, items in arrays.items():
        for item in items:
            lines += ["", f"[[{name}]]", *(f"{k} = {_toml_value(v)}" for k, v in item.items())]
    return "\n".join(lines) + "\n"


def write_pipeline(directory: Path, spec: ReductionSpec, calibrate: bool = True) -> Path:
    """The run's pipeline file ``directory/<run>.toml`` (rewritten only when it changes)."""
    data = pipeline_definition(spec, calibrate)
    validate_pipeline(data, f"the demo's {data['name']} pipeline")
    text = pipeline_toml(
        data,
        f"Written by gridlrt demo from the shipped {SHIPPED_PIPELINE} pipeline: the band stage "
        f"gathers {spec.band_subbands} subbands"
        + ("" if calibrate else "; no calibrator stages and no applycal (the control run)")
        + ".",
    )
    path = directory / f"{data['name']}.toml"
    if not path.exists() or path.read_text() != text:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def _lists(store: Path, truth: Truth, calibrate: bool) -> dict[str, list[str]]:
    """The input lists the run is created from, as URLs (made or not)."""
    lists = {}
    for name, field in (("calibrator", truth.calibrator), ("target", truth.target)):
        if name == "calibrator" and not calibrate:
            continue
        lists[name] = [
            archive_tarball(store / "lta", field.obsid, sb).resolve().as_uri()
            for sb in truth.spec.subband_numbers()
        ]
    return lists


def plan_reduction(
    pool: TokenPool, spec: ReductionSpec, workdir: Path, *, calibrate: bool = True, pilots: int = 2
) -> ReductionPlan:
    """Look, change nothing: the tarballs to make, the run's tokens to create and run, the
    pilots to start."""
    truth, missing = plan_observations(workdir, spec)
    pipeline: Pipeline = validate_pipeline(pipeline_definition(spec, calibrate), "the demo")
    expansion = expand(pipeline, _lists(workdir, truth, calibrate), run=run_name(spec, calibrate))
    ids = [t.id for t in expansion.tokens]
    try:
        existing = pool.by_id(ids)
        pool_state = ""
    except (PoolUnavailable, PoolError) as exc:  # e.g. the embedded pool is made by the run
        existing, pool_state = {}, str(exc)
    to_create = [i for i in ids if existing.get(i) is None]
    busy = [i for i, t in existing.items() if t is not None and t.status in BUSY]
    to_run = len(to_create) + len(busy)
    return ReductionPlan(
        run=expansion.run,
        calibrated=calibrate,
        workdir=workdir,
        tarballs_to_make=len(missing),
        tarballs=2 * spec.subbands,  # the control run's store holds the calibrator too
        stages={p.name: p.tokens for p in expansion.plan},
        tokens_to_create=len(to_create),
        tokens_to_run=to_run,
        pilots=pilots if to_run else 0,
        pool_state=pool_state,
    )


def _step_check(steps_dir: Path) -> Callable[[Token, Settings], None]:
    """Every stage's first token against its step, as pilots will plan it."""
    from gridlrt.worker.plan import validate_step
    from gridlrt.worker.steps import resolve_step

    def check(token: Token, chosen: Settings) -> None:
        config = resolve_step(token.step, steps_dir)
        validate_step(config, token, storage_root=chosen.storage_root, step_dir=steps_dir)

    return check


def _stage_counts(pool: TokenPool, run: str) -> dict[str, dict[str, int]]:
    try:
        pool.settle_pending()  # promotions a lost pilot left undone
    except PoolError as err:
        log.warning("pending promotions not completed: %s", err)
    [status] = pipeline_status(pool, run)
    return {stage.name: dict(stage.counts) for stage in status.stages}


def _busy(stages: dict[str, dict[str, int]]) -> int:
    return sum(counts.get(s.value, 0) for counts in stages.values() for s in BUSY)


def _wait(
    pool: TokenPool,
    run: str,
    record: JobRecord,
    timeout: float,
    report: Callable[[ReductionProgress], None],
    poll: float,
) -> None:
    """Until no token of the run is waiting, to do or running; fail clearly when the pilots
    ended first or the time is up."""
    from gridlrt.submit.service import refresh

    deadline = time.monotonic() + timeout
    while True:
        stages = _stage_counts(pool, run)
        report(ReductionProgress(phase="running", stages=stages))
        if not _busy(stages):
            return
        record = refresh(pool, record)
        if not record.active:
            stages = _stage_counts(pool, run)  # the last pilot's last promotion
            if _busy(stages):
                raise GridlrtError(
                    f"the pilots ended with {_busy(stages)} token(s) of run {run} unfinished; "
                    f"see their logs in {record.run_dir}"
                )
            report(ReductionProgress(phase="running", stages=stages))
            return
        if time.monotonic() > deadline:
            raise GridlrtError(
                f"run {run} did not finish within {timeout:.0f} s; pilots keep running "
                f"(gridlrt jobs status {record.id}; logs in {record.run_dir})"
            )
        time.sleep(poll)


def _local_path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise GridlrtError(f"the demo reads its results from local files; {url} is not file://")
    return Path(unquote(parsed.path))


def _outputs(token: Token) -> list[str]:
    return [str(o) for o in token.output] if isinstance(token.output, list) else []


def _first(urls: list[str], suffix: str) -> Path | None:
    found = [u for u in urls if u.endswith(suffix)]
    return _local_path(found[0]) if found else None


def _check_images(tokens: list[Token], run: str) -> None:
    """:class:`GridlrtError` naming the first failure when a band has no image."""
    images = [t for t in tokens if t.stage == "image"]
    if images and all(t.status is TokenStatus.DONE for t in images):
        return
    stuck = [t for t in tokens if t.status in (TokenStatus.ERROR, TokenStatus.BLOCKED)]
    if not stuck:
        raise GridlrtError(f"run {run} has no finished image; gridlrt pipeline status {run}")
    first = stuck[0]
    why = first.blocked_reason or (first.error[-1].message.splitlines()[0] if first.error else "")
    raise GridlrtError(
        f"run {run}: {len(stuck)} token(s) failed or blocked, first {first.id} "
        f"({first.status.value}: {why or 'no message'}); gridlrt tokens show {first.id}"
    )


def stage_times(tokens: list[Token], order: list[tuple[str, str]]) -> list[StageTime]:
    """Per stage (``(name, step)`` in DAG order): when its first token was claimed and its last
    finished, relative to the run's first claim, and the pilot-seconds its attempts took."""
    last = {t.id: t.attempts[-1] for t in tokens if t.attempts}
    start = min((a.started for a in last.values()), default=0.0)
    found = []
    for stage, step in order:
        mine = [t for t in tokens if t.stage == stage]
        attempts = [last[t.id] for t in mine if t.id in last]
        ended = [a.ended for a in attempts if a.ended is not None]
        begun = min((a.started - start for a in attempts), default=None)
        end = max(ended) - start if ended else None
        timings: dict[str, float] = {}
        for attempt in attempts:
            for phase, seconds in attempt.timings.items():
                timings[phase] = timings.get(phase, 0.0) + seconds
        found.append(
            StageTime(
                stage=stage,
                step=step,
                tokens=len(mine),
                done=sum(1 for t in mine if t.status is TokenStatus.DONE),
                start_s=begun,
                end_s=end,
                span_s=end - begun if end is not None and begun is not None else None,
                busy_s=sum(a.ended - a.started for a in attempts if a.ended is not None),
                timings=timings,
            )
        )
    return found


def _collect(
    tokens: list[Token], truth: Truth
) -> tuple[Path | None, Path | None, list[BandImages]]:
    """cal-solve's summary and H5parm, and each band's image files, from the tokens' outputs."""
    summary = solutions = None
    for token in tokens:
        if token.stage == "cal_solve" and token.status is TokenStatus.DONE:
            summary = _first(_outputs(token), "/solutions.json")
            solutions = _first(_outputs(token), ".h5")
    images = []
    for token in sorted((t for t in tokens if t.stage == "image"), key=lambda t: t.id):
        band = str(token.group.get("label", token.id))
        fits = _first(_outputs(token), "-image.fits")
        if fits is None:
            raise GridlrtError(
                f"image token {token.id} kept no -image.fits (outputs: {token.output})"
            )
        subbands = [int(sb) for sb in token.group.get("subbands", truth.bands.get(band, []))]
        images.append(
            BandImages(
                band=band,
                subbands=subbands,
                frequency_hz=band_frequency_hz(subbands) if subbands else 0.0,
                fits=fits,
                residual=_first(_outputs(token), "-residual.fits"),
                png=_first(_outputs(token), ".png"),
            )
        )
    return summary, solutions, images


def _check_run_is_ours(pool: TokenPool, run: str, lists: dict[str, Path]) -> None:
    """:class:`InputError` when the pool's run of this name was made from other lists (another
    work directory): its tokens are not this observation's."""
    record = pipeline_record(pool, run)
    theirs = {name: str(Path(path).resolve()) for name, path in record.inputs.items()}
    ours = {name: str(path.resolve()) for name, path in lists.items()}
    if theirs != ours:
        where = Path(next(iter(theirs.values()), "?")).parent
        raise InputError(
            f"the pool already holds run {run} of the demo in {where}; use --workdir {where}, "
            "or another pool (--pool)"
        )


def run_reduction(
    settings: Settings,
    pool: TokenPool,
    spec: ReductionSpec,
    workdir: Path,
    *,
    on_progress: Callable[[ReductionProgress], None] | None = None,
    calibrate: bool = True,
    pilots: int = 2,
    timeout: float = 1800.0,
    poll: float = 0.5,
) -> ReductionResult:
    """The whole reduction; see the module docstring. ``pool`` is the pool of ``settings``
    (open); ``on_progress`` hears each phase and the counts per stage while pilots work."""
    from gridlrt.submit.service import get_submitter, submit_pilots

    began = time.monotonic()

    def report(progress: ReductionProgress) -> None:
        if on_progress is not None:
            on_progress(progress)

    report(ReductionProgress(phase="making observations"))
    observations = make_observations(workdir, spec)
    truth = Truth.model_validate_json(observations.truth_file.read_text())
    run = run_name(spec, calibrate)
    run_dir = workdir / run
    definition = write_pipeline(run_dir, spec, calibrate)
    lists = {"target": observations.target.list_file}
    if calibrate:
        lists["calibrator"] = observations.calibrator.list_file
    report(ReductionProgress(phase="creating tokens"))
    created = create_pipeline(
        settings, definition, lists, run=run, check=_step_check(observations.steps_dir)
    )
    _check_run_is_ours(pool, run, lists)
    results_root = (workdir / RESULTS_DIR).resolve().as_uri()
    stages = _stage_counts(pool, run)
    record: JobRecord | None = None
    if _busy(stages):
        record = submit_pilots(
            settings,
            get_submitter("local"),
            pipeline=run,
            count=pilots,
            resources=Resources(walltime=timeout),
            worker_args=worker_args(results_root),
            steps_dir=observations.steps_dir,
        ).record
    if record is not None:
        _wait(pool, run, record, timeout, report, poll)
    else:
        report(ReductionProgress(phase="running", stages=stages))
    report(ReductionProgress(phase="measuring", stages=_stage_counts(pool, run)))
    found = pool.by_id([t.id for t in created.tokens])
    tokens = [t for t in found.values() if t is not None]
    _check_images(tokens, run)
    summary_path, solutions, images = _collect(tokens, truth)
    if calibrate and summary_path is None:
        raise GridlrtError(f"run {run}: cal_solve kept no solutions.json; see its token")
    verification, measurements = verify_products(truth, summary_path, images)
    plots = _plots(run_dir, truth, tokens, created.plan, summary_path, images, measurements)
    result = ReductionResult(
        run=run,
        calibrated=calibrate,
        workdir=workdir,
        pool_url=pool.url,
        results_root=results_root,
        pipeline_file=definition,
        observations=observations,
        created=len(created.created),
        record=record,
        verification=verification,
        calibration_summary=summary_path,
        solutions=solutions,
        images=images,
        plots=plots,
        stages=stage_times(tokens, [(p.name, p.step) for p in created.plan]),
        failed_tokens=sorted(t.id for t in tokens if t.status is not TokenStatus.DONE),
        wall_seconds=time.monotonic() - began,
    )
    (run_dir / "result.json").write_text(result.model_dump_json(indent=2) + "\n")
    return result


def verify_products(
    truth: Truth, summary_path: Path | None, images: list[BandImages]
) -> tuple[Verification, dict[str, ImageMeasurement]]:
    """Measure every band image at the truth's source positions, then compare with the truth
    (also how the Slurm and DIRAC tests judge products they downloaded from grid storage)."""
    with needs_extra("the demo's verification"):
        from gridlrt.reduction.measure import ExpectedSource, measure_sources
        from gridlrt.reduction.solve import CalibrationSummary

    calibration = (
        CalibrationSummary.model_validate_json(summary_path.read_text())
        if summary_path is not None
        else None
    )
    expected = [
        ExpectedSource(name=s.name, ra_deg=s.ra_deg, dec_deg=s.dec_deg)
        for s in truth.target.sources
    ]
    measurements = {
        band.band: measure_sources(band.fits, expected, residual=band.residual) for band in images
    }
    return verify(truth, calibration, measurements), measurements


def _plots(
    run_dir: Path,
    truth: Truth,
    tokens: list[Token],
    plan: list[StagePlan],
    summary_path: Path | None,
    images: list[BandImages],
    measurements: dict[str, ImageMeasurement],
) -> dict[str, Path]:
    from gridlrt.demo.plot import plot_images, plot_solutions, plot_stage_progress

    plots = {
        "progress": plot_stage_progress(
            tokens,
            [p.name for p in plan],
            run_dir / "progress.png",
            title=f"{run_dir.name}: tokens done over time, per stage",
        )
    }
    if summary_path is not None:
        plots["solutions"] = plot_solutions(summary_path, truth, run_dir / "solutions.png")
    if images:
        plots["images"] = plot_images(
            [(b.band, b.fits) for b in images], truth, run_dir / "images.png", measurements
        )
    return plots
