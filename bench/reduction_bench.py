"""The reduction pipeline (issue 15), timed: where the time of ``gridlrt demo``'s calibrator ->
target reduction goes, gridlrt's overhead against the processing, and the schedule the pilots
achieve against the ideal one.

    .venv/bin/python bench/reduction_bench.py [--pilots 1,2] [--repeat 3] [--subbands 8]
        [--band-subbands 4] [--no-end-to-end] [--json FILE]

Per pilot count and repeat: :func:`gridlrt.demo.reduction.run_reduction` (what ``gridlrt demo``
runs: the shipped ``cal-target`` pipeline, cal_prep -> cal_solve -> target_prep -> band ->
image, local ``gridlrt worker run`` pilots, then the verification) on a fresh embedded pool, a
fresh storage root and a fresh results root; the synthetic observations are made once and
reused (their ``lta/`` is linked into every run's work directory). XDG_DATA_HOME and
XDG_CONFIG_HOME point into the bench's temporary directory, so nothing touches
~/.local/share/gridlrt or the user's config.

What an attempt's figures mean (gridlrt/worker/pilot.py, gridlrt/tokens/pool.py):

* ``started`` is the pool's clock (time.time()) when the claim transaction began, ``ended``
  when the finish transaction began: the attempt window is claim -> finish.
* ``timings`` (monotonic, measured by the pilot): ``claim`` = the pilot's whole search for this
  token (polls while nothing is claimable included; it lies before ``started`` but for the
  claim transaction itself); ``download`` = the gfal2 copies of the inputs AND the checked tar
  extraction of measurement sets; ``run`` = the payload process (writing the parset, then DP3,
  WSClean through ``python -m gridlrt.reduction.image`` or ``python -m
  gridlrt.reduction.solve`` for cal-solve, under the shepherd); ``validate`` = checking the
  outputs (the output MS and the first input MS opened with casacore, channel and time counts
  compared); ``upload`` = packing output MSs as tars, then the gfal2 copies of every output
  and of the payload log.
* transfer = download + upload; processing = run; gridlrt overhead = (ended - started) -
  download - run - upload = validate + what no timing covers: the claim transaction's commit,
  starting the heartbeat thread, resolving the step and planning the token (templates,
  find_dp3), three status writes (downloading, running, uploading), the ``prepare`` hook and
  attaching the log tail. Not in any window: the finish write itself, promoting the
  children, joining the heartbeat thread, removing the work directory, and the next claim;
  they are reported with the pilots' idle time ("between tokens").

The schedule: makespan = the run's first claim -> its last token done. Against it, for the same
pilots and the measured attempt durations (ended - started per token) and the DAG (each
token's parents from its ``depends``): the lower bound max(critical path, total work /
pilots), and a greedy list schedule without any promotion or claim latency that gives a free
pilot the ready token the pool would give it (priority, then creation time, then id). A
second greedy schedule uses transfers + processing only (no gridlrt overhead in the tokens).

Finally ``gridlrt demo --json`` as a process, end to end, in a fresh XDG data directory
(making the observations included), and the same command again (nothing to do).

Prints the machine (bench/worker_bench.py's ``machine()`` plus WSClean, LOSOTO and where
gridlrt came from) and markdown tables. Nothing is asserted: figures go to bench/RESULTS.md.
To time a commit while the checkout is being edited, put a copy first on the path (pilots,
payloads and ``gridlrt demo`` inherit it)::

    git archive HEAD gridlrt | tar -x -C /tmp/src
    PYTHONPATH=/tmp/src .venv/bin/python bench/reduction_bench.py
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gridlrt.config import load_settings  # noqa: E402
from gridlrt.demo.observations import ReductionSpec, make_observations  # noqa: E402
from gridlrt.demo.reduction import ReductionResult, run_reduction  # noqa: E402
from gridlrt.tokens import Token, TokenStatus, open_pool  # noqa: E402
from gridlrt.worker.dp3 import find_dp3  # noqa: E402

STAGES = ("cal_prep", "cal_solve", "target_prep", "band", "image")
GOAL = 0.05  # issue 15: gridlrt's overhead beyond transfers <= 5 % of the processing time


def say(text: str = "") -> None:
    print(text, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def num(seconds: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:,.{digits}f}"


# --- one run's figures ---------------------------------------------------------------------


@dataclass
class StageFigures:
    stage: str
    step: str
    tokens: int = 0
    attempts: int = 0  # all attempts of its tokens (> tokens: retries)
    window: float = 0.0  # sum of (ended - started)
    download: float = 0.0
    upload: float = 0.0
    run: float = 0.0
    validate: float = 0.0
    start: float = math.nan  # first claim, s after the run's first claim
    end: float = math.nan  # last finish, s after the run's first claim

    @property
    def transfer(self) -> float:
        return self.download + self.upload

    @property
    def overhead(self) -> float:
        return self.window - self.download - self.run - self.upload

    @property
    def untimed(self) -> float:
        return self.overhead - self.validate


@dataclass
class PilotFigures:
    pilot: str
    tokens: int = 0
    busy: float = 0.0  # sum of its attempt windows
    before_first: float = 0.0  # run's first claim -> its first claim
    looking: float = 0.0  # between its tokens: the next claim's search (``claim`` timing)
    after_finish: float = 0.0  # between its tokens, the rest (finish write, promotion, cleanup)
    after_last: float = 0.0  # its last finish -> the run's last finish

    @property
    def idle(self) -> float:
        return self.before_first + self.looking + self.after_finish + self.after_last


@dataclass
class RunFigures:
    pilots: int
    repeat: int
    tokens: int
    done: int
    verified: bool
    stages: list[StageFigures]
    pilot_figures: list[PilotFigures]
    makespan: float  # first claim -> last token done
    startup: float  # pilots submitted -> first claim
    work: float  # sum of the attempt windows
    critical_path: float
    lower_bound: float
    greedy: float
    greedy_no_overhead: float
    reduction_wall: float  # run_reduction, call to return (verification and plots included)
    before_pipeline: float  # run_reduction called -> first claim
    after_pipeline: float  # last token done -> run_reduction returned
    #: last parent done -> child claimed, for every token with parents; and those of them
    #: claimed by a pilot that was idle when the last parent finished (it had to poll)
    promotion_gaps: list[float] = field(default_factory=list)
    idle_promotion_gaps: list[float] = field(default_factory=list)
    #: validate of each pilot's first token with a measurement set (imports numpy and casacore)
    #: and of the others
    validate_first: list[float] = field(default_factory=list)
    validate_rest: list[float] = field(default_factory=list)

    @property
    def processing(self) -> float:
        return sum(s.run for s in self.stages)

    @property
    def transfer(self) -> float:
        return sum(s.transfer for s in self.stages)

    @property
    def overhead(self) -> float:
        return sum(s.overhead for s in self.stages)


def last_attempt(token: Token) -> Any:
    attempt = token.attempts[-1]
    if attempt.ended is None:
        raise RuntimeError(f"token {token.id} has no finished attempt")
    return attempt


def stage_figures(tokens: list[Token], origin: float) -> list[StageFigures]:
    steps = {t.stage: t.step for t in tokens}
    found = []
    for stage in [s for s in STAGES if s in steps] + sorted(
        s for s in steps if s not in STAGES and s is not None
    ):
        figures = StageFigures(stage=str(stage), step=steps[stage])
        for token in (t for t in tokens if t.stage == stage):
            attempt = last_attempt(token)
            timings = attempt.timings
            figures.tokens += 1
            figures.attempts += len(token.attempts)
            figures.window += attempt.ended - attempt.started
            figures.download += timings.get("download", 0.0)
            figures.upload += timings.get("upload", 0.0)
            figures.run += timings.get("run", 0.0)
            figures.validate += timings.get("validate", 0.0)
            figures.start = min(
                attempt.started - origin, math.inf if math.isnan(figures.start) else figures.start
            )
            figures.end = max(
                attempt.ended - origin, -math.inf if math.isnan(figures.end) else figures.end
            )
        found.append(figures)
    return found


def pilot_figures(tokens: list[Token], first: float, last: float) -> list[PilotFigures]:
    by_pilot: dict[str, list[Any]] = {}
    for token in tokens:
        attempt = last_attempt(token)
        by_pilot.setdefault(attempt.pilot, []).append(attempt)
    found = []
    for pilot, attempts in sorted(by_pilot.items()):
        attempts.sort(key=lambda a: a.started)
        figures = PilotFigures(pilot=pilot, tokens=len(attempts))
        figures.busy = sum(a.ended - a.started for a in attempts)
        figures.before_first = attempts[0].started - first
        figures.after_last = last - attempts[-1].ended
        for previous, attempt in itertools.pairwise(attempts):
            gap = attempt.started - previous.ended
            looking = min(attempt.timings.get("claim", 0.0), gap)
            figures.looking += looking
            figures.after_finish += gap - looking
        found.append(figures)
    return found


# --- the ideal schedule -------------------------------------------------------------------


def dag(tokens: list[Token]) -> dict[str, list[str]]:
    """Token id -> its parents' ids (within the run)."""
    ids = {t.id for t in tokens}
    return {
        t.id: [p for p in (t.depends.parent_ids if t.depends else []) if p in ids] for t in tokens
    }


def critical_path(durations: dict[str, float], parents: dict[str, list[str]]) -> float:
    finish: dict[str, float] = {}

    def done_at(token_id: str) -> float:
        if token_id not in finish:
            start = max((done_at(p) for p in parents[token_id]), default=0.0)
            finish[token_id] = start + durations[token_id]
        return finish[token_id]

    return max((done_at(t) for t in durations), default=0.0)


def greedy_schedule(
    durations: dict[str, float],
    parents: dict[str, list[str]],
    order: dict[str, tuple[Any, ...]],
    pilots: int,
) -> float:
    """Makespan of a list schedule on ``pilots`` with no latency at all: whenever a pilot is
    free it starts the best ready token (``order``: smaller first), as the pool's claim would
    give it."""
    children: dict[str, list[str]] = {t: [] for t in durations}
    missing = {t: len(ps) for t, ps in parents.items()}
    for token_id, ps in parents.items():
        for p in ps:
            children[p].append(token_id)
    ready = [(order[t], t) for t, n in missing.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free, left = 0.0, pilots, len(durations)
    while left:
        while free and ready:
            _, token_id = heapq.heappop(ready)
            heapq.heappush(running, (now + durations[token_id], token_id))
            free -= 1
        if not running:
            raise RuntimeError("the DAG has a cycle or a token whose parents are unknown")
        now, token_id = heapq.heappop(running)
        finished = [token_id]
        while running and running[0][0] == now:
            finished.append(heapq.heappop(running)[1])
        for token_id in finished:
            free += 1
            left -= 1
            for child in children[token_id]:
                missing[child] -= 1
                if missing[child] == 0:
                    heapq.heappush(ready, (order[child], child))
    return now


def promotion_gaps(tokens: list[Token]) -> tuple[list[float], list[float]]:
    """Last parent done -> child claimed, for all children and for those an idle pilot took
    (its previous token had ended before the last parent did)."""
    attempts = {t.id: last_attempt(t) for t in tokens}
    parents = dag(tokens)
    busy_until: dict[str, float] = {}
    gaps, idle = [], []
    for token_id, attempt in sorted(attempts.items(), key=lambda kv: kv[1].started):
        if parents[token_id]:
            ready = max(attempts[p].ended for p in parents[token_id])
            gaps.append(attempt.started - ready)
            if busy_until.get(attempt.pilot, -math.inf) < ready:
                idle.append(attempt.started - ready)
        busy_until[attempt.pilot] = attempt.ended
    return gaps, idle


def validate_split(tokens: list[Token]) -> tuple[list[float], list[float]]:
    attempts = sorted((last_attempt(t) for t in tokens), key=lambda a: a.started)
    first: list[float] = []
    rest: list[float] = []
    seen: set[str] = set()
    for attempt in attempts:
        seconds = attempt.timings.get("validate", 0.0)
        if seconds < 0.005:  # no measurement set checked (cal-solve, image)
            continue
        (rest if attempt.pilot in seen else first).append(seconds)
        seen.add(attempt.pilot)
    return first, rest


def run_figures(
    tokens: list[Token],
    result: ReductionResult,
    pilots: int,
    repeat: int,
    called: tuple[float, float],
) -> RunFigures:
    attempts = {t.id: last_attempt(t) for t in tokens}
    first = min(a.started for a in attempts.values())
    last = max(a.ended for a in attempts.values())
    stages = stage_figures(tokens, first)
    durations = {i: a.ended - a.started for i, a in attempts.items()}
    bare = {
        i: sum(a.timings.get(k, 0.0) for k in ("download", "run", "upload"))
        for i, a in attempts.items()
    }
    parents = dag(tokens)
    order = {t.id: (-t.priority, t.created, t.id) for t in tokens}
    work = sum(durations.values())
    path = critical_path(durations, parents)
    submitted = result.record.submitted if result.record is not None else math.nan
    per_pilot = pilot_figures(tokens, first, last)
    gaps, idle_gaps = promotion_gaps(tokens)
    validate_first, validate_rest = validate_split(tokens)
    return RunFigures(
        pilots=pilots,
        repeat=repeat,
        tokens=len(tokens),
        done=sum(1 for t in tokens if t.status is TokenStatus.DONE),
        verified=result.verification.passed,
        stages=stages,
        pilot_figures=per_pilot,
        makespan=last - first,
        startup=first - submitted,
        work=work,
        critical_path=path,
        lower_bound=max(path, work / pilots),
        greedy=greedy_schedule(durations, parents, order, pilots),
        greedy_no_overhead=greedy_schedule(bare, parents, order, pilots),
        reduction_wall=result.wall_seconds,
        before_pipeline=first - called[0],
        after_pipeline=called[1] - last,
        promotion_gaps=gaps,
        idle_promotion_gaps=idle_gaps,
        validate_first=validate_first,
        validate_rest=validate_rest,
    )


# --- running ---------------------------------------------------------------------------------


def one_run(tmp: Path, spec: ReductionSpec, pilots: int, repeat: int) -> RunFigures:
    where = tmp / f"run-{pilots}-{repeat}"
    where.mkdir(parents=True)
    (where / "lta").symlink_to(tmp / "obs" / "lta")  # the observations, made once
    settings = load_settings(
        config_file=tmp / "none.toml",
        pool=f"sqlite:///{where / 'pool.sqlite'}",
        storage_root=(where / "storage").as_uri(),
        runs_dir=where / "runs",
    )
    with open_pool(settings) as pool:
        called = time.time()
        result = run_reduction(settings, pool, spec, where, pilots=pilots)
        returned = time.time()
        tokens = [t for t in pool.tokens() if t.pipeline == result.run]
    figures = run_figures(tokens, result, pilots, repeat, (called, returned))
    say(
        f"  {pilots} pilot(s), run {repeat + 1}: makespan {figures.makespan:.2f} s, "
        f"run_reduction {figures.reduction_wall:.2f} s, {figures.done}/{figures.tokens} done, "
        f"verification {'passed' if figures.verified else 'FAILED'}; load "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    return figures


def gridlrt_demo(xdg: Path, log: Path) -> tuple[float, int, dict[str, Any]]:
    """``gridlrt demo --json`` as a process with its own XDG directories: wall, exit code,
    the JSON it printed (empty when none)."""
    for name in ("data", "config"):
        (xdg / name).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XDG_DATA_HOME": str(xdg / "data"), "XDG_CONFIG_HOME": str(xdg / "config")}
    command = [sys.executable, "-m", "gridlrt", "demo", "--json"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - began
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}\n")
    try:
        data = json.loads(done.stdout)
    except ValueError:
        data = {}
    return wall, done.returncode, data


# --- tables ----------------------------------------------------------------------------------


def stage_table(runs: list[RunFigures]) -> None:
    """Per stage: medians over the repeats of the per-stage sums (seconds)."""
    say(
        "\n| pilots | stage (step) | tokens | transfer: download + upload | processing (run) "
        "| gridlrt overhead (of it: validate / untimed) | overhead / processing | span from "
        "first claim |"
    )
    say("|---:|---|---:|---|---:|---|---:|---|")
    for pilots in sorted({r.pilots for r in runs}):
        mine = [r for r in runs if r.pilots == pilots]
        for k, stage in enumerate(mine[0].stages):
            rows = [r.stages[k] for r in mine]

            def m(attr: str, rows: list[StageFigures] = rows) -> float:
                return median([getattr(s, attr) for s in rows])

            ratio = median([s.overhead / s.run for s in rows if s.run > 0])
            retries = max(s.attempts - s.tokens for s in rows)
            say(
                f"| {pilots} | {stage.stage} ({stage.step}) | {stage.tokens}"
                f"{f' ({retries} retried)' if retries else ''} | {num(m('transfer'))} "
                f"({num(m('download'))} + {num(m('upload'))}) | {num(m('run'))} "
                f"| {num(m('overhead'))} ({num(m('validate'))} / {num(m('untimed'))}) "
                f"| {ratio:.1%} | {num(m('start'), 1)}-{num(m('end'), 1)} s |"
            )
        total_ratio = median([r.overhead / r.processing for r in mine])
        say(
            f"| {pilots} | **all** | {mine[0].tokens} | {num(median([r.transfer for r in mine]))} "
            f"| {num(median([r.processing for r in mine]))} "
            f"| {num(median([r.overhead for r in mine]))} | **{total_ratio:.1%}** | "
            f"makespan {num(median([r.makespan for r in mine]))} s |"
        )


def goal_lines(runs: list[RunFigures]) -> None:
    for pilots in sorted({r.pilots for r in runs}):
        mine = [r for r in runs if r.pilots == pilots]
        ratios = [r.overhead / r.processing for r in mine]
        met = all(x <= GOAL for x in ratios)
        say(
            f"  {pilots} pilot(s): gridlrt overhead / processing per run "
            f"{', '.join(f'{x:.1%}' for x in ratios)}: goal <= {GOAL:.0%} "
            f"{'met' if met else 'NOT met'}"
        )
        worst = max(
            ((s.stage, s.overhead / s.run) for r in mine for s in r.stages if s.run > 0),
            key=lambda x: x[1],
        )
        say(f"    worst stage in any run: {worst[0]} {worst[1]:.1%}")


def schedule_table(runs: list[RunFigures]) -> None:
    say(
        "\n| pilots | run | makespan (first claim → last done) | work (Σ attempt windows) | "
        "critical path | lower bound max(cp, work/P) | greedy, no latency | makespan / "
        "greedy | makespan / bound | greedy, transfers + processing only | pilots submitted "
        "→ first claim | pilot idle in the makespan: before first / looking / after finish / "
        "after last |"
    )
    say("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        idle = [sum(getattr(p, a) for p in r.pilot_figures) for a in
                ("before_first", "looking", "after_finish", "after_last")]  # fmt: skip
        say(
            f"| {r.pilots} | {r.repeat + 1} | {num(r.makespan)} | {num(r.work)} "
            f"| {num(r.critical_path)} | {num(r.lower_bound)} | {num(r.greedy)} "
            f"| {r.makespan / r.greedy:.3f} | {r.makespan / r.lower_bound:.3f} "
            f"| {num(r.greedy_no_overhead)} | {num(r.startup)} "
            f"| {num(sum(idle))} s: {' / '.join(num(x) for x in idle)} |"
        )


def detail_lines(runs: list[RunFigures]) -> None:
    for r in runs:
        parts = ", ".join(
            f"{p.tokens} tokens busy {p.busy:.2f} s idle {p.idle:.2f} s" for p in r.pilot_figures
        )
        gaps = r.promotion_gaps
        idle = r.idle_promotion_gaps
        idle_text = (
            f"{len(idle)} taken by an idle pilot: median {median(idle) * 1e3:.0f} ms, "
            f"max {max(idle) * 1e3:.0f} ms"
            if idle
            else "none taken by an idle pilot"
        )
        say(
            f"  {r.pilots} pilot(s), run {r.repeat + 1}: pilots: {parts}. run_reduction "
            f"{r.reduction_wall:.2f} s = {r.before_pipeline:.2f} s before the first claim "
            f"(observations checked, tokens created, pilots started) + makespan "
            f"{r.makespan:.2f} s + {r.after_pipeline:.2f} s after the last token (the waiting "
            f"side's poll, verification, plots). Promotion gaps (last parent done -> child "
            f"claimed) of {len(gaps)} children: median {median(gaps) * 1e3:.0f} ms, max "
            f"{max(gaps, default=math.nan) * 1e3:.0f} ms; {idle_text}. validate: each pilot's "
            f"first MS check {', '.join(f'{x:.3f}' for x in r.validate_first)} s, the others "
            f"median {median(r.validate_rest):.3f} s"
        )


# --- main ------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "gridlrt"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() + (" (gridlrt/ modified)" if dirty.stdout.strip() else "")


def version_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"? ({exc})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return next((line.strip() for line in lines if "version" in line.lower()), "?")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pilots", type=int_list, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--subbands", type=int, default=8, help="per observation")
    parser.add_argument("--band-subbands", type=int, default=4)
    parser.add_argument("--no-end-to-end", action="store_true", help="skip gridlrt demo twice")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args(argv)
    # imported here, after gridlrt: worker_bench puts the checkout first on the path, and a
    # copy on PYTHONPATH (see the docstring) must stay the gridlrt that is timed
    from worker_bench import machine  # bench/ is on the path

    dp3 = find_dp3()
    if dp3 is None:
        sys.exit("DP3 not found; run make setup")
    spec = ReductionSpec(subbands=args.subbands, band_subbands=args.band_subbands)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gridlrt-reduction-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # pilots inherit these: nothing lands in ~/.local/share/gridlrt or reads ~/.config
        for name in ("data", "config"):
            (tmp / "xdg" / name).mkdir(parents=True)
            os.environ[f"XDG_{name.upper()}_HOME"] = str(tmp / "xdg" / name)
        say("Machine:")
        for key, value in machine(dp3, tmp).items():
            say(f"  {key}: {value}")
        say(f"  wsclean: {version_line(['wsclean', '--version'])}")
        say(f"  losoto: {metadata.version('losoto')}, h5py {metadata.version('h5py')}")
        import gridlrt

        source = Path(gridlrt.__file__).resolve().parent.parent
        say(
            f"  gridlrt: {source}"
            + (f", commit {commit()}" if source == ROOT else f" (checkout {ROOT}: {commit()})")
        )
        say(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}")

        began = time.perf_counter()
        observations = make_observations(tmp / "obs", spec)
        size = sum(p.stat().st_size for p in (tmp / "obs" / "lta").iterdir())
        say(
            f"\nObservations: calibrator L{spec.calibrator_obsid} + target L{spec.target_obsid}, "
            f"{spec.subbands} subbands each ({spec.stations} stations, {spec.channels} channels, "
            f"{spec.timeslots} timeslots), bands of {spec.band_subbands}: {size / 1e6:.1f} MB "
            f"of tarballs ({observations.made} made in {time.perf_counter() - began:.1f} s)"
        )
        say(f"\nRuns (run_reduction, local pilots, {args.repeat} per pilot count):")
        runs = [
            one_run(tmp, spec, pilots, repeat)
            for pilots in args.pilots
            for repeat in range(args.repeat)
        ]

        say(
            "\nPer stage, seconds summed over the stage's tokens (last attempts), median of the "
            "runs; overhead = sum of (ended - started) - download - run - upload; overhead / "
            "processing: median of the runs' ratios"
        )
        stage_table(runs)
        say("\nThe goal (issue 15):")
        goal_lines(runs)
        say("\nThe schedule, seconds; pilot idle summed over the pilots")
        schedule_table(runs)
        say("\nPer run:")
        detail_lines(runs)

        if not args.no_end_to_end:
            say("\ngridlrt demo --json as a process, fresh XDG data directory:")
            xdg, log = tmp / "e2e", tmp / "e2e.log"
            for label in ("fresh (observations made)", "rerun (nothing to do)"):
                wall, code, data = gridlrt_demo(xdg, log)
                created = data.get("created", "?")
                passed = data.get("verification", {}).get("passed", "?")
                inner = data.get("wall_seconds", math.nan)
                say(
                    f"  {label}: {wall:.2f} s, exit {code}, tokens created {created}, "
                    f"verification passed {passed}, run_reduction {inner:.2f} s"
                )
                if code != 0:
                    say("  " + log.read_text()[-3000:].replace("\n", "\n  "))
        if args.json is not None:
            args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1) + "\n")
    say(
        f"\nBench wall time {time.monotonic() - started:.0f} s; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + " (1, 5, 15 min)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
