"""``gridlrt demo``: the main job on this machine — a calibrator → target → bands → images
reduction on real DP3 and WSClean, verified against what was injected — with live progress per
stage and the verification table; ``--single-step`` keeps the first demo (one step over one
observation).

:mod:`gridlrt.demo` is imported when the command runs, not with the CLI: pilots run this CLI
from a runtime bundle that leaves the demo out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gridlrt.cli.common import PoolOption, console, err_console, settings
from gridlrt.config import Settings
from gridlrt.dashboard.snapshots import safe_url
from gridlrt.durations import format_duration
from gridlrt.errors import ConfigError, GridlrtError, InputError
from gridlrt.tokens import open_pool

if TYPE_CHECKING:
    from gridlrt.demo import DemoResult
    from gridlrt.demo.observations import ReductionSpec
    from gridlrt.demo.reduction import ReductionProgress, ReductionResult

BUSY = ("locked", "downloading", "running", "uploading")


class VerificationFailed(GridlrtError):
    """The reduction ran but did not recover what was injected (exit code 1)."""


def demo_command(
    ctx: typer.Context,
    subbands: Annotated[
        int,
        typer.Option(
            "--subbands", min=1, max=244, help="Subbands per observation (calibrator and target)."
        ),
    ] = 8,
    band_subbands: Annotated[
        int,
        typer.Option(
            "--band-subbands", min=1, help="Consecutive target subbands per band (one image each)."
        ),
    ] = 4,
    seed: Annotated[
        int,
        typer.Option("--seed", min=0, help="Draws the station gains and the target's sources."),
    ] = 196,
    pilots: Annotated[
        int, typer.Option("--pilots", min=1, max=64, help="Local pilots to start.")
    ] = 2,
    no_calibration: Annotated[
        bool,
        typer.Option(
            "--no-calibration",
            help="The control run: the same target data without applying the calibrator's "
            "solutions. Its source checks must fail (exit 0 when they do).",
        ),
    ] = False,
    single_step: Annotated[
        bool,
        typer.Option(
            "--single-step", help="The first demo instead: one step over one observation."
        ),
    ] = False,
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            help="With --single-step: the step, flag-average (default) or average.",
            show_default=False,
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            help="Where the observations, results and plots go "
            "(default: ~/.local/share/gridlrt/demo, or demo-HASH for other --seed, "
            "--subbands or --band-subbands; --single-step: demo/single-step).",
            show_default=False,
        ),
    ] = None,
    pool: PoolOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Say what would be made and started; change nothing."),
    ] = False,
) -> None:
    """Run the main job end to end on this machine, with nothing to start by hand: a LOFAR
    calibrator → target reduction, checked against what was put into the data.

    1. Makes two synthetic observations as the LTA gives them (tarballs, one srm.txt each):
    the calibrator 3C196 (L700700) and a target field (L700701) with a few point sources,
    seen through the same station gains (amplitude, phase, clock delay), plus noise;

    2. creates the tokens of the cal-target pipeline in the pool (the embedded default):
    calibrator subbands flagged and averaged (DP3), solved together (DP3 gaincal, one clock
    per station fitted across the subbands), target subbands calibrated, flagged and averaged,
    concatenated into bands, imaged (WSClean);

    3. starts local pilots that take whichever token is ready, and shows each stage's progress;

    4. measures the sources in the band images and prints the verification: per station the
    injected and recovered clock and amplitude, per source and band the injected and measured
    flux and position, each pass or FAIL. Exit code 1 when the run misses a goal.

    Run it again: nothing is redone, the check is the same. --no-calibration is the control
    (the same data, no applycal): its source checks fail, which shows the check can tell a
    right answer from a wrong one. Watch from another terminal: gridlrt pipeline status --watch

    Examples:

        gridlrt demo

        gridlrt demo --no-calibration

        gridlrt demo --subbands 12 --band-subbands 3 --seed 7 --workdir /tmp/demo7

        gridlrt demo --single-step --step average
    """
    try:
        from gridlrt.demo import default_workdir
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("gridlrt.demo"):
            raise
        raise ConfigError(
            "the demo is not part of this installation (a pilot's runtime bundle leaves it "
            "out); run gridlrt demo where gridlrt is installed with pip"
        ) from None
    chosen = settings(ctx, pool)
    if single_step:
        where = (workdir or default_workdir() / "single-step").expanduser().absolute()
        _single_step(chosen, subbands, pilots, step or "flag-average", where, as_json, dry_run)
        return
    if step is not None:
        raise InputError("--step is for --single-step; the reduction's steps are its pipeline's")
    from gridlrt.demo.reduction import spec_label

    spec = _spec(seed=seed, subbands=subbands, band_subbands=band_subbands)
    # other observations (seed, subbands, ...) than the default get a work directory and
    # pipeline runs of their own: demo-<hash>
    where = (workdir or default_workdir().with_name(spec_label(spec))).expanduser().absolute()
    calibrate = not no_calibration
    if dry_run:
        _dry_run(chosen, spec, where, calibrate, pilots, as_json)
        return
    result = _run(chosen, spec, where, calibrate, pilots)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        _report(result)
    _judge(result)


def _spec(**fields: Any) -> ReductionSpec:
    from gridlrt.demo.observations import ReductionSpec

    try:
        return ReductionSpec(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        option = f"--{where.replace('_', '-')}: " if where else ""
        raise InputError(f"{option}{message}") from None


def _judge(result: ReductionResult) -> None:
    """Exit 1 with one line when the run missed a goal, or when the control run did not."""
    check = result.verification
    if result.calibrated and not check.passed:
        raise VerificationFailed(
            f"verification failed: {'; '.join(check.reasons)} (table above; {result.workdir})"
        )
    if not result.calibrated and check.sources_passed:
        raise VerificationFailed(
            "the uncalibrated control run passed its source checks: the check cannot tell a "
            "right answer from a wrong one"
        )


def _dry_run(
    chosen: Settings, spec: ReductionSpec, where: Path, calibrate: bool, pilots: int, as_json: bool
) -> None:
    from gridlrt.demo.reduction import plan_reduction

    with open_pool(chosen) as opened:
        planned = plan_reduction(opened, spec, where, calibrate=calibrate, pilots=pilots)
    if as_json:
        typer.echo(planned.model_dump_json(indent=2))
        return
    stages = ", ".join(f"{name} {n}" for name, n in planned.stages.items())
    console.print(
        f"would make {planned.tarballs_to_make} of {planned.tarballs} archive tarballs in "
        f"{where / 'lta'}, create {planned.tokens_to_create} token(s) of run {planned.run} "
        f"({stages}) in {chosen.pool}, and start {planned.pilots} local pilot(s) for "
        f"{planned.tokens_to_run} token(s) to run"
        + (f" (the pool is made then: {planned.pool_state})" if planned.pool_state else "")
        + "; dry run: nothing changed",
        highlight=False,
        soft_wrap=True,
    )


def _progress() -> Progress:
    """Progress bars on stderr, one per task: name, bar, done/total, notes, time."""
    return Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def _run(
    chosen: Settings, spec: ReductionSpec, where: Path, calibrate: bool, pilots: int
) -> ReductionResult:
    from gridlrt.demo.reduction import run_name, run_reduction

    err_console.print(
        f"gridlrt demo: run {run_name(spec, calibrate)}, calibrator L{spec.calibrator_obsid} "
        f"({spec.calibrator_name}) and target L{spec.target_obsid} ({spec.target_name}), "
        f"{spec.subbands} subbands each, bands of {spec.band_subbands}, {spec.stations} "
        f"stations, {pilots} local pilot(s); pool {chosen.pool}; in {where}",
        highlight=False,
        soft_wrap=True,
    )
    err_console.print(
        f"watch it in a browser: gridlrt dashboard --pool {safe_url(chosen.pool)} "
        "(then open http://localhost:8080/)",
        highlight=False,
        soft_wrap=True,
    )
    with open_pool(chosen) as opened, _progress() as progress:
        phase = progress.add_task("setup", total=None, detail="making observations")
        tasks: dict[str, Any] = {}

        def show(update: ReductionProgress) -> None:
            progress.update(phase, detail=update.phase)
            for name, counts in update.stages.items():
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=1, detail="")
                busy = sum(counts.get(s, 0) for s in BUSY)
                notes = [f"{busy} running"] if busy else []
                notes += [f"{counts[s]} {s}" for s in ("waiting", "todo", "error", "blocked")
                          if counts.get(s)]  # fmt: skip
                progress.update(
                    tasks[name],
                    completed=counts.get("done", 0),
                    total=max(sum(counts.values()), 1),
                    detail=", ".join(notes),
                )
            if update.phase == "measuring":
                progress.update(phase, total=1, completed=1)

        return run_reduction(
            chosen, opened, spec, where, on_progress=show, calibrate=calibrate, pilots=pilots
        )


def _mark(ok: bool) -> str:
    return "[green]pass[/]" if ok else "[bold red]FAIL[/]"


def _number(value: float | None, scale: float = 1.0, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * scale:+.{digits}f}" if sign else f"{value * scale:.{digits}f}"


def verification_tables(result: ReductionResult) -> tuple[Table, Table]:
    """The verification as two rich tables: stations, then sources per band."""
    check = result.verification
    tol = check.tolerances
    verdict = "[green]PASSED[/]" if check.passed else "[bold red]FAILED[/]"
    what = "calibrated" if check.calibrated else "uncalibrated control (expected to fail)"
    stations = Table(
        box=box.SIMPLE_HEAD,
        title=f"verification, {what}: {verdict}\nstations: clock (ns) relative to "
        f"{check.reference_station}* within {tol.clock_s * 1e6:.3f} us, amplitude within "
        f"{tol.amplitude:.0%}",
        title_justify="left",
    )
    for column in ("station", "clock in", "out", "error", "amp in", "out", "error", ""):
        stations.add_column(
            column,
            justify="left" if column == "station" else "right",
            no_wrap=True,
            min_width=max(len(column), 5),
        )
    for row in check.stations:
        stations.add_row(
            row.station + ("*" if row.reference else ""),
            _number(row.injected_clock_s, 1e9, 1, sign=True),
            _number(row.recovered_clock_s, 1e9, 1, sign=True),
            _number(row.clock_error_s, 1e9, 2, sign=True),
            _number(row.injected_amplitude),
            _number(row.recovered_amplitude),
            f"{row.amplitude_error:+.2%}" if row.amplitude_error is not None else "-",
            _mark(row.passed) + (f" {row.problem}" if row.problem else ""),
        )
    sources = Table(
        box=box.SIMPLE_HEAD,
        title=f"sources: peak (Jy/beam) within {tol.flux:.0%} of the injected flux (Jy) at "
        f"the band's centre, position within {tol.position_px:g} pixel (offset in pixels)",
        title_justify="left",
    )
    for column in ("band", "source", "MHz", "flux in", "out", "error", "offset", "S/N", ""):
        sources.add_column(
            column,
            justify="left" if column in ("band", "source") else "right",
            no_wrap=True,
            min_width=max(len(column), 5),
        )
    for found in check.sources:
        sources.add_row(
            re.sub(r"^L\d+_", "", found.band),  # the target's L number is in the title
            found.source,
            f"{found.frequency_hz / 1e6:.2f}",
            _number(found.injected_flux_jy, digits=2),
            _number(found.measured_flux_jy, digits=2),
            f"{found.flux_error:+.1%}" if found.flux_error is not None else "-",
            _number(found.offset_px, digits=2),
            _number(found.snr, digits=0),
            _mark(found.passed),
        )
    return stations, sources


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 60 else format_duration(value)


def _report(result: ReductionResult) -> None:
    stations, sources = verification_tables(result)
    console.print(stations)
    console.print(sources)
    obs = result.observations
    if result.record is None:
        pilots = "no pilots needed: every token was already done (rerun is safe)"
    else:
        pilots = f"{result.record.count} local pilot(s), logs in {result.record.run_dir}"
    lines = [
        f"observations: {len(obs.calibrator.tarballs) + len(obs.target.tarballs)} archive "
        f"tarballs ({obs.size / 1e6:.0f} MB) listed in {obs.calibrator.list_file.name} and "
        f"{obs.target.list_file.name}; truth in {obs.truth_file}",
        f"run {result.run}: {result.created} token(s) created now; {pilots}",
    ]
    if result.solutions is not None:
        lines.append(f"solutions: {result.solutions}")
    for band in result.images:
        png = f" (preview {band.png.name})" if band.png is not None else ""
        lines.append(f"image {band.band}: {band.fits}{png}")
    lines += [f"plot {name}: {path}" for name, path in result.plots.items()]
    spans = ", ".join(f"{s.stage} {_seconds(s.span_s)}" for s in result.stages)
    lines.append(f"took {_seconds(result.wall_seconds)} (stages: {spans})")
    if result.failed_tokens:
        lines.append(f"[yellow]not done:[/] {', '.join(result.failed_tokens)}")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def _single_step(
    chosen: Settings,
    subbands: int,
    pilots: int,
    step: str,
    where: Path,
    as_json: bool,
    dry_run: bool,
) -> None:
    """The first demo: ``step`` over one observation's subbands, a table per subband."""
    from gridlrt.demo import DemoSpec, plan_demo, run_demo

    spec = DemoSpec(subbands=subbands, pilots=pilots, step=step)
    if dry_run:
        with open_pool(chosen) as opened:
            planned = plan_demo(opened, spec, where)
        if as_json:
            typer.echo(planned.model_dump_json(indent=2))
            return
        console.print(
            f"would make {planned.tarballs_to_make} of {spec.subbands} archive tarballs in "
            f"{where / 'lta'}, create {len(planned.tokens_to_create)} {spec.step} token(s) in "
            f"{chosen.pool}, and start {planned.pilots} local pilot(s) for "
            f"{planned.tokens_to_process} token(s) to process"
            + (f" (the pool is made then: {planned.pool_state})" if planned.pool_state else "")
            + "; dry run: nothing changed",
            highlight=False,
            soft_wrap=True,
        )
        return
    err_console.print(
        f"gridlrt demo --single-step: L{spec.obsid}, {spec.subbands} subbands, step {spec.step}, "
        f"{spec.pilots} local pilot(s); pool {chosen.pool}",
        highlight=False,
        soft_wrap=True,
    )
    with open_pool(chosen) as opened, _progress() as progress:
        task = progress.add_task(f"{spec.step}", total=spec.subbands, detail="making the data")

        def show(counts: dict[str, int]) -> None:
            busy = sum(counts.get(s, 0) for s in BUSY)
            progress.update(
                task,
                completed=counts.get("done", 0),
                total=max(sum(counts.values()), 1),
                detail=f"{busy} running, {counts.get('todo', 0)} todo, "
                f"{counts.get('error', 0)} error",
            )

        result = run_demo(chosen, opened, spec, where, on_progress=show)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    _single_step_report(result)


def _single_step_report(result: DemoResult) -> None:
    table = Table(title=f"{result.step}: {result.done} of {len(result.rows)} subbands done")
    table.add_column("SB", justify="right")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("tries", justify="right")
    table.add_column("output", overflow="fold")
    for row in result.rows:
        colour = "green" if row.status == "done" else "bold red"
        output = row.outputs[0].rsplit("/", 1)[-1] if row.outputs else (row.error or "")
        table.add_row(
            str(row.subband) if row.subband is not None else row.token,
            f"[{colour}]{row.status}[/]",
            _seconds(row.seconds) if row.seconds is not None else "",
            str(row.attempts),
            output,
        )
    console.print(table)
    obs = result.observation
    first = next((r.outputs[0] for r in result.rows if r.outputs), "")
    results_dir = first.rsplit("/", 1)[0] if first else result.storage_root
    if result.record is None:
        what = "nothing to do: every token was already done (rerun is safe)"
    else:
        what = f"{result.record.count} local pilot(s), logs in {result.record.run_dir}"
    console.print(
        f"observation: {len(obs.tarballs)} archive tarballs ({obs.size / 1e6:.1f} MB) listed in "
        f"{obs.list_file}\n"
        f"tokens: {result.created} created now; {what}\n"
        f"results: {results_dir}\n"
        f"plot:    {result.plot}\n"
        f"took {format_duration(result.wall_seconds)}. Next: gridlrt status, "
        f"gridlrt ms info <output>, or open tutorials/LRT_demo.ipynb",
        highlight=False,
        soft_wrap=True,
    )
