"""The demo: a small LOFAR-like observation taken through the whole trip on this machine.

What a new user runs first (``gridlrt demo``, ``make demo``), and what the tutorial notebook
walks through step by step:

1. :func:`make_observation` - N subbands of synthetic measurement sets with real LOFAR names,
   packed as the Long Term Archive ships them (``L700700_SAP000_SB100_uv.MS_<hash>.tar``) into a
   local store, and their ``srm.txt``-style list (one URL per line);
2. tokens for the ``flag-average`` step in the pool (the embedded default unless told
   otherwise), made from that list;
3. local pilots started with the ``local`` submit backend, which flag with AOFlagger and
   average with DP3, upload the results into the storage root and mark the tokens done;
4. :func:`summarize` and :func:`~gridlrt.demo.plot.plot_progress` - a table of what happened
   per subband and a PNG of progress over time.

Every step is idempotent: the store keeps its tarballs, tokens are created once (their ids
come from the LOFAR names), and only tokens still to do get pilots - a second run does no
work and gives the same answer.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from gridlrt.config import Settings
from gridlrt.demo.plot import plot_progress, subband_of
from gridlrt.errors import GridlrtError, PoolUnavailable
from gridlrt.extras import needs_extra
from gridlrt.submit.model import JobRecord, Resources
from gridlrt.submit.service import get_submitter, plan, refresh, submit
from gridlrt.tokens import Token, TokenPool, TokenStatus
from gridlrt.tokens.create import make_tokens
from gridlrt.tokens.model import ACTIVE

if TYPE_CHECKING:
    from gridlrt.demo.synthetic_ms import SyntheticMSSpec

log = logging.getLogger(__name__)

LIST_NAME = "srm.txt"
PLOT_NAME = "progress.png"


class DemoSpec(BaseModel):
    """The demo observation and how it is processed."""

    obsid: int = Field(default=700700, ge=0, description="the L number")
    subbands: int = Field(default=8, ge=1, le=244)
    first_subband: int = Field(default=100, ge=0, le=511)
    channels: int = Field(default=64, ge=4, description="channels per subband (averaged to 1/4)")
    timeslots: int = Field(default=120, ge=2)
    stations: int = Field(default=8, ge=2, description="core stations (baselines grow as n²)")
    step: str = "flag-average"
    pilots: int = Field(default=2, ge=1, le=64)
    timeout: float = Field(default=1800.0, gt=0, description="give up waiting after this")


class Observation(BaseModel):
    """The demo observation in its store."""

    list_file: Path
    inputs: list[str]
    tarballs: list[Path]
    made: int = Field(description="tarballs made now (0 when the store already had them all)")

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.tarballs)


class SubbandResult(BaseModel):
    """One row of the summary table."""

    token: str
    subband: int | None
    status: str
    seconds: float | None = Field(description="download + processing + upload of the last try")
    attempts: int
    outputs: list[str]
    error: str | None = None


class DemoResult(BaseModel):
    """What ``gridlrt demo`` reports at the end."""

    observation: Observation
    step: str
    created: int = Field(description="tokens created now (0 on a rerun)")
    record: JobRecord | None = Field(description="the pilots submitted now (None: nothing to do)")
    rows: list[SubbandResult]
    wall_seconds: float
    plot: Path
    storage_root: str

    @property
    def done(self) -> int:
        return sum(1 for r in self.rows if r.status == TokenStatus.DONE.value)


def _archive_hash(name: str) -> str:
    """A stable stand-in for the checksum suffix the LTA appends (``.MS_3d78b8f1.tar``)."""
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def archive_tarball(lta: Path, obsid: int, subband: int) -> Path:
    """Where the LTA-style tarball of one subband is: ``lta/L<obsid>_SB<nnn>_uv.MS_<hash>.tar``
    (the name as the LTA gives it, the hash a stable stand-in for its checksum suffix)."""
    name = f"L{obsid}_SB{subband:03d}_uv.MS"  # synthetic_ms.lofar_ms_name, without numpy
    return lta / f"{name}_{_archive_hash(name)}.tar"


def archive_tarballs(store: Path, spec: DemoSpec) -> dict[int, Path]:
    """``{subband: path}`` of the demo's archive tarballs in ``store/lta`` (made or not)."""
    return {
        sb: archive_tarball(store / "lta", spec.obsid, sb)
        for sb in range(spec.first_subband, spec.first_subband + spec.subbands)
    }


def pack_archive(tarball: Path, ms_spec: SyntheticMSSpec) -> Path:
    """Make the synthetic measurement set of ``ms_spec`` and pack it as the LTA does into
    ``tarball`` (``<name>.MS_<hash>.tar`` holding ``<name>.MS``), atomically: a half-made
    tarball never has the final name."""
    with needs_extra("gridlrt demo"):  # numpy and python-casacore: gridlrt[demo]
        from gridlrt.demo.synthetic_ms import make_synthetic_ms

    ms_name = tarball.name.rsplit("_", 1)[0]  # <name>.MS_<hash>.tar -> <name>.MS
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=".making-") as tmp:
        ms = make_synthetic_ms(Path(tmp) / ms_name, ms_spec)
        part = Path(tmp) / f"{tarball.name}.part"
        with tarfile.open(part, "w") as tar:
            tar.add(ms, arcname=ms.name)
        part.replace(tarball)
    log.info("made %s", tarball.name)
    return tarball


def write_list(path: Path, inputs: list[str], comment: str) -> Path:
    """An ``srm.txt``-style list: ``comment`` lines, then one URL per line; rewritten only
    when its text changes."""
    text = "".join(f"# {line}\n" for line in comment.splitlines()) + "\n".join(inputs) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def make_observation(store: Path, spec: DemoSpec) -> Observation:
    """Make (or find) the demo's archive tarballs in ``store/lta`` and its list in
    ``store/srm.txt``. Existing tarballs are kept, so a rerun makes nothing."""
    with needs_extra("gridlrt demo"):  # numpy and python-casacore: gridlrt[demo]
        from gridlrt.demo.synthetic_ms import SyntheticMSSpec

    tarballs: list[Path] = []
    made = 0
    for subband, tarball in archive_tarballs(store, spec).items():
        if not tarball.exists():
            ms_spec = SyntheticMSSpec(
                obsid=spec.obsid,
                subband=subband,
                channels=spec.channels,
                timeslots=spec.timeslots,
                stations=spec.stations,
                seed=spec.obsid * 1000 + subband,
            )
            pack_archive(tarball, ms_spec)
            made += 1
        tarballs.append(tarball)
    inputs = [p.resolve().as_uri() for p in tarballs]
    list_file = write_list(
        store / LIST_NAME,
        inputs,
        f"L{spec.obsid}: {spec.subbands} subbands of a synthetic observation (gridlrt demo);\n"
        "on the grid these lines are srm:// URLs of the LTA",
    )
    return Observation(list_file=list_file, inputs=inputs, tarballs=tarballs, made=made)


class DemoPlan(BaseModel):
    """What :func:`run_demo` would do now (``gridlrt demo --dry-run``)."""

    workdir: Path
    tarballs_to_make: int
    tokens_to_create: list[str]
    tokens_to_process: int = Field(description="todo or error now, or not created yet")
    pilots: int
    pool_state: str = Field(default="", description="why the pool could not be read, if so")


def plan_demo(pool: TokenPool, spec: DemoSpec, workdir: Path) -> DemoPlan:
    """Look, change nothing: which tarballs, tokens and pilots a run would make."""
    tarballs = archive_tarballs(workdir, spec)
    tokens = make_tokens([p.resolve().as_uri() for p in tarballs.values()], step=spec.step)
    try:
        existing = {t.id: t for t in pool.tokens(step=spec.step)}
        pool_state = ""
    except PoolUnavailable as exc:  # e.g. the embedded pool is made by the first run
        existing, pool_state = {}, str(exc)
    waiting = (TokenStatus.TODO, TokenStatus.ERROR)
    to_process = [t.id for t in tokens if t.id not in existing or existing[t.id].status in waiting]
    return DemoPlan(
        workdir=workdir,
        tarballs_to_make=sum(1 for p in tarballs.values() if not p.exists()),
        tokens_to_create=[t.id for t in tokens if t.id not in existing],
        tokens_to_process=len(to_process),
        pilots=min(spec.pilots, len(to_process)),
        pool_state=pool_state,
    )


def demo_tokens(pool: TokenPool, step: str, ids: Iterable[str]) -> list[Token]:
    """The demo's tokens, in the order of ``ids``."""
    wanted = list(ids)
    by_id = {t.id: t for t in pool.tokens(step=step) if t.id in set(wanted)}
    return [by_id[i] for i in wanted if i in by_id]


def summarize(tokens: Iterable[Token]) -> list[SubbandResult]:
    """One row per token: status, seconds of its last attempt, outputs, the error if any."""
    rows = []
    for token in tokens:
        last = token.attempts[-1] if token.attempts else None
        seconds = None
        if last is not None:
            seconds = last.timings.get("total") or (
                (last.ended - last.started) if last.ended else None
            )
        error = token.error[-1].message.splitlines()[0] if token.error else None
        outputs = token.output if isinstance(token.output, list) else []
        rows.append(
            SubbandResult(
                token=token.id,
                subband=subband_of(token),
                status=token.status.value,
                seconds=seconds,
                attempts=len(token.attempts),
                outputs=[str(o) for o in outputs],
                error=error if token.status is not TokenStatus.DONE else None,
            )
        )
    return rows


def run_demo(
    settings: Settings,
    pool: TokenPool,
    spec: DemoSpec,
    workdir: Path,
    *,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    poll: float = 0.5,
) -> DemoResult:
    """The whole trip; see the module docstring. ``on_progress`` gets the step's counts."""
    began = time.monotonic()
    observation = make_observation(workdir, spec)
    pool.init()
    tokens = make_tokens(observation.inputs, step=spec.step)
    created = pool.create(tokens)
    ids = [t.id for t in tokens]
    # tokens a previous, interrupted demo left in error get another chance
    failed = [t.id for t in demo_tokens(pool, spec.step, ids) if t.status is TokenStatus.ERROR]
    if failed:
        pool.reset(ids=failed)
    todo = sum(1 for t in demo_tokens(pool, spec.step, ids) if t.status is TokenStatus.TODO)
    record: JobRecord | None = None
    if todo:
        submitter = get_submitter("local")
        submission = plan(
            settings,
            submitter,
            step=spec.step,
            count=min(spec.pilots, todo),
            resources=Resources(walltime=spec.timeout),
            worker_args=["--output-root", settings.storage_root, "--heartbeat", "5s"],
        )
        record = submit(settings, pool, submitter, submission)
        _wait(pool, spec, ids, record, on_progress, poll)
    elif on_progress is not None:
        on_progress(pool.overview().by_status(spec.step))
    final = demo_tokens(pool, spec.step, ids)
    plot = plot_progress(
        final, workdir / PLOT_NAME, title=f"L{spec.obsid}, {spec.step}: tokens done over time"
    )
    return DemoResult(
        observation=observation,
        step=spec.step,
        created=len(created.created),
        record=record,
        rows=summarize(final),
        wall_seconds=time.monotonic() - began,
        plot=plot,
        storage_root=settings.storage_root,
    )


def _wait(
    pool: TokenPool,
    spec: DemoSpec,
    ids: list[str],
    record: JobRecord,
    on_progress: Callable[[dict[str, int]], None] | None,
    poll: float,
) -> None:
    """Until the demo's tokens are all done or failed; fail clearly if the pilots died."""
    deadline = time.monotonic() + spec.timeout
    active = {s.value for s in ACTIVE} | {TokenStatus.TODO.value}
    while True:
        counts = pool.overview().by_status(spec.step)
        if on_progress is not None:
            on_progress(counts)
        left = [t for t in demo_tokens(pool, spec.step, ids) if t.status.value in active]
        if not left:
            return
        record = refresh(pool, record)
        if not record.active:
            logs = Path(record.run_dir)
            raise GridlrtError(
                f"the demo's pilots ended with {len(left)} token(s) unfinished; "
                f"see the pilot logs in {logs} (e.g. {logs / 'pilot-0.log'})"
            )
        if time.monotonic() > deadline:
            raise GridlrtError(
                f"the demo did not finish within {spec.timeout:.0f} s; pilots keep running "
                f"(gridlrt jobs status {record.id}); logs in {record.run_dir}"
            )
        time.sleep(poll)


def default_workdir() -> Path:
    """Where the demo keeps its observation and plot: ``$XDG_DATA_HOME/gridlrt/demo``."""
    from gridlrt.config import data_dir

    return data_dir() / "demo"
