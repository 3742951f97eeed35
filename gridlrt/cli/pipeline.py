"""``gridlrt pipeline``: a whole reduction as one definition — create its tokens, watch its
stages, draw it, or run it here with local pilots.

Thin: :mod:`gridlrt.pipelines` loads, expands and reports; the tokens room promotes waiting
tokens as their parents finish. This module parses options and draws tables with rich.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from gridlrt.cli.common import JsonOption, PoolOption, console, err_console, settings
from gridlrt.cli.submit import MacaroonsOption
from gridlrt.cli.tokens import STATUS_STYLE, DryRunOption, token_step_check
from gridlrt.errors import (
    GridlrtError,
    InputError,
    PoolError,
    PoolNotInitialised,
    PoolUnavailable,
)
from gridlrt.pipelines.definition import BUILTIN_PIPELINES, load_pipeline
from gridlrt.pipelines.expand import StagePlan, dag_text
from gridlrt.pipelines.service import (
    CreatedPipeline,
    PipelineStatus,
    StageStatus,
    create_pipeline,
    pipeline_record,
    pipeline_status,
)
from gridlrt.tokens import TokenPool, TokenStatus, open_pool

pipeline_app = typer.Typer(
    help="Pipelines: stages of steps over input lists and over earlier stages (scatter per "
    "subband, gather per band or observation, calibrator before target) as one definition.",
    no_args_is_help=True,
)

InputOption = Annotated[
    list[str],
    typer.Option(
        "--input",
        "-i",
        help="NAME=FILE: the input list NAME of the pipeline (e.g. calibrator=cal_srm.txt), "
        "one URL per line; repeat for every input the pipeline declares.",
        show_default=False,
    ),
]
RunOption = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Name of this run (prefixes every token id). Default: the pipeline's name; give "
        "one per observation when you run the same pipeline on several.",
        show_default=False,
    ),
]
StepsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--steps-dir",
        help="Your step files (STEP.toml and the files they name), as pilots will get them; "
        "every stage's step is checked now against its first token.",
        show_default=False,
    ),
]


DEFINITION_HELP = "The pipeline file (TOML), or a built-in pipeline by name: cal-target."


def parse_inputs(pairs: list[str]) -> dict[str, Path]:
    """``NAME=FILE`` options as a mapping; :class:`InputError` for a malformed or repeated one."""
    found: dict[str, Path] = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        name, file = name.strip(), file.strip()
        if not sep or not name or not file:
            raise InputError(
                f"--input {pair!r}: expected NAME=FILE, e.g. --input calibrator=cal_srm.txt"
            )
        if name in found:
            raise InputError(f"--input {name} given twice ({found[name]} and {file})")
        found[name] = Path(file)
    return found


@pipeline_app.command("create")
def create(
    ctx: typer.Context,
    definition: Annotated[Path, typer.Argument(help=DEFINITION_HELP)],
    inputs: InputOption,
    run: RunOption = None,
    steps_dir: StepsDirOption = None,
    pool: PoolOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Make every token of the pipeline at once: the first stages' tokens are todo, the others
    wait for their parents and start as soon as those are done (the pool promotes them; any
    pilot takes them). Prints the plan: stages, token counts, groups. Running it twice creates
    nothing new (ids are stable: RUN.STAGE.LABEL, e.g. cal-target.band.L123_SB010-019).

    Examples:

        gridlrt pipeline create cal-target.toml -i calibrator=cal_srm.txt -i target=srm.txt

        gridlrt pipeline create cal-target.toml -i calibrator=c.txt -i target=t.txt --dry-run

        gridlrt pipeline create cal-target.toml --name L123 -i ... --steps-dir steps/
    """
    result = create_pipeline(
        lambda: settings(ctx, pool),
        definition,
        parse_inputs(inputs),
        run=run,
        check=token_step_check(steps_dir),
        dry_run=dry_run,
    )
    if as_json:
        typer.echo(result.model_dump_json(indent=2, exclude={"tokens"}))
        return
    console.print(plan_table(result))
    if result.dry_run:
        console.print(
            f"dry run: would create {len(result.tokens)} token(s) of run {result.run}; "
            "nothing changed"
        )
        return
    console.print(
        f"created {len(result.created)} token(s) of run {result.run} in {result.pool_url}"
        + (f"; {len(result.duplicates)} already there" if result.duplicates else "")
        + f"\nnext: gridlrt submit --pipeline {result.run} -b local -n 4; "
        f"watch: gridlrt pipeline status {result.run} --watch"
    )


def plan_table(result: CreatedPipeline) -> Table:
    table = Table(title=f"pipeline {result.pipeline}, run {result.run}", title_justify="left")
    for column in ("stage", "step", "runs over", "tokens", "groups", "priority"):
        table.add_column(column, justify="right" if column in ("tokens", "priority") else "left")
    for stage in result.plan:
        table.add_row(
            "  " * stage.depth + stage.name,
            stage.step,
            _over_text(stage),
            str(stage.tokens),
            _groups_text(stage),
            str(stage.priority),
        )
    return table


def _over_text(stage: StagePlan) -> str:
    text = stage.over + (f", gather {stage.gather}" if stage.gather else "")
    if stage.kind == "one-to-one":
        text += ", one per token"
    if stage.after:
        text += f"; after {', '.join(stage.after)}"
    if stage.min_done < 1:
        text += f" (min_done {stage.min_done:g})"
    return text


def _groups_text(stage: StagePlan, shown: int = 4) -> str:
    if not stage.groups:
        return ""
    parts = [f"{g.label} ({g.members})" for g in stage.groups[:shown]]
    if len(stage.groups) > shown:
        parts.append(f"... {len(stage.groups) - shown} more")
    return ", ".join(parts)


@pipeline_app.command("status")
def status(
    ctx: typer.Context,
    run: Annotated[
        str | None, typer.Argument(help="The run (default: every run in the pool).")
    ] = None,
    pool: PoolOption = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Redraw every --interval until Ctrl-C.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between frames.")] = 2.0,
    as_json: JsonOption = False,
) -> None:
    """The stages of a run in DAG order: per stage a progress bar, counts per status (waiting
    for parents, blocked, todo, running, done, error), what waiting tokens wait for and why
    blocked tokens are blocked. A promotion a lost pilot left undone is completed here.

    Examples:

        gridlrt pipeline status cal-target

        gridlrt pipeline status --watch

        gridlrt pipeline status cal-target --json | jq '.[0].stages[] | {name, counts}'
    """
    if interval <= 0:
        raise InputError("--interval must be more than 0 seconds")
    with open_pool(settings(ctx, pool)) as opened:
        if watch:
            opened.follow()  # frames after the first read only what changed (CouchDB)
        runs = _read(opened, run)
        if as_json:
            typer.echo("[" + ",".join(r.model_dump_json(indent=2) for r in runs) + "]")
            return
        if not watch:
            console.print(render_runs(runs, opened.url))
            return
        with Live(render_runs(runs, opened.url), console=console, auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    try:
                        runs = _read(opened, run)
                    except PoolError as err:
                        err_console.print(f"[yellow]warning:[/] {err} (still trying)")
                        continue
                    live.update(render_runs(runs, opened.url), refresh=True)
            except KeyboardInterrupt:
                return


def settle(pool: TokenPool) -> None:
    """Complete the promotions a pilot that died after finishing a parent left undone; a pool
    that does not answer is a warning here (the status is still worth showing)."""
    try:
        pool.settle_pending()
    except PoolNotInitialised:
        raise
    except PoolError as err:
        err_console.print(f"[yellow]warning:[/] pending promotions not completed: {err}")


def _read(pool: TokenPool, run: str | None) -> list[PipelineStatus]:
    settle(pool)
    return pipeline_status(pool, run)


def render_runs(runs: list[PipelineStatus], where: str) -> RenderableType:
    if not runs:
        return Text(f"no pipeline runs in {where} (gridlrt pipeline create FILE -i NAME=LIST)")
    return Group(*[stages_table(r) for r in runs])


def stages_table(run: PipelineStatus) -> Table:
    done = run.counts.get("done", 0)
    total = sum(run.counts.values())
    title = f"run {run.run}" + (f" ({run.pipeline})" if run.pipeline not in ("", run.run) else "")
    title += f": {done}/{total} done"
    table = Table(title=title, title_justify="left")
    table.add_column("stage", style="bold")
    table.add_column("progress", min_width=12)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("tokens")
    table.add_column("notes", overflow="fold")
    for stage in run.stages:
        present = max(stage.present, 1)
        table.add_row(
            stage.name,
            ProgressBar(total=present, completed=stage.counts.get("done", 0), width=20),
            f"{stage.counts.get('done', 0)}/{stage.present}",
            counts_text(stage.counts),
            _notes(stage),
        )
    return table


def counts_text(counts: dict[str, int]) -> Text:
    text = Text()
    for st in TokenStatus:
        n = counts.get(st.value, 0)
        if n:
            if text:
                text.append("  ")
            text.append(f"{n} {st.value}", STATUS_STYLE[st.value])
    return text


def _notes(stage: StageStatus) -> Text:
    notes = Text()
    if stage.waiting_for:
        notes.append(stage.waiting_for, "dim")
    for blocked in stage.blocked:
        if notes:
            notes.append("\n")
        notes.append(f"{blocked.id}: {blocked.reason}", "magenta")
    if stage.more_blocked:
        notes.append(f"\n... {stage.more_blocked} more blocked", "magenta")
    if stage.missing:
        if notes:
            notes.append("\n")
        notes.append(f"{stage.missing} planned token(s) not in the pool", "yellow")
    return notes


@pipeline_app.command("show")
def show(
    ctx: typer.Context,
    what: Annotated[
        str, typer.Argument(help="A run in the pool, or a pipeline file (nothing is read then).")
    ],
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also draw the DAG into this PNG file.", show_default=False),
    ] = None,
    pool: PoolOption = None,
) -> None:
    """Draw a pipeline as text (a run in the pool, a pipeline file, or a built-in pipeline
    such as cal-target when no run has that name): every stage in DAG order with its step, how
    its tokens come about (scatter, gather, one per token, after), priority and token count,
    and the stages that wait for it; --png draws it as boxes and arrows (needs gridlrt[demo]).

    Examples:

        gridlrt pipeline show cal-target.toml

        gridlrt pipeline show cal-target          # a run in the pool, with its token counts

        gridlrt pipeline show cal-target.toml --png dag.png
    """
    path = Path(what)
    plan: list[StagePlan] | None = None
    if path.suffix == ".toml" or path.is_file():
        pipeline = load_pipeline(path)
    else:
        try:
            with open_pool(settings(ctx, pool)) as opened:
                record = pipeline_record(opened, what)
            pipeline, plan = record.pipeline, record.plan
        except (InputError, PoolUnavailable):
            if what not in BUILTIN_PIPELINES:  # no such run, and no built-in pipeline either
                raise
            pipeline = load_pipeline(path)
    console.print(dag_text(pipeline, plan), highlight=False, markup=False)
    if png is not None:
        from gridlrt.pipelines.draw import draw_dag

        console.print(f"drawn: {draw_dag(pipeline, png, plan)}")


@pipeline_app.command("run")
def run_command(
    ctx: typer.Context,
    definition: Annotated[Path, typer.Argument(help=DEFINITION_HELP)],
    inputs: InputOption,
    pilots: Annotated[
        int, typer.Option("-n", "--pilots", min=1, help="Local pilots (processes) to start.")
    ] = 2,
    run: RunOption = None,
    steps_dir: StepsDirOption = None,
    output_root: Annotated[
        str | None,
        typer.Option(
            "--output-root",
            help="Where results go (a URL or path). Default: the storage_root setting.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up waiting after this many seconds.")
    ] = 24 * 3600.0,
    pool: PoolOption = None,
    macaroons: MacaroonsOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run a pipeline on this machine: create its tokens (as `pipeline create`), start N local
    pilots that take any ready token, and show the stages live until every token is done,
    failed or blocked. Safe to rerun: tokens already done are not redone. On a grid or
    batch system use `pipeline create`, then `gridlrt submit --pipeline RUN`.

    Examples:

        gridlrt pipeline run cal-target.toml -i calibrator=cal.txt -i target=srm.txt -n 4

        gridlrt pipeline run cal-target.toml -i calibrator=c.txt -i target=t.txt --dry-run
    """
    from gridlrt.submit.model import Resources
    from gridlrt.submit.service import (
        cancel,
        check_macaroons,
        get_submitter,
        refresh,
        submit_pilots,
    )

    if macaroons is not None:
        check_macaroons(macaroons)  # before anything is created: one line, exit 4
    chosen = settings(ctx, pool)
    created = create_pipeline(
        chosen,
        definition,
        parse_inputs(inputs),
        run=run,
        check=token_step_check(steps_dir),
        dry_run=dry_run,
    )
    if dry_run:
        if as_json:
            typer.echo(created.model_dump_json(indent=2, exclude={"tokens"}))
            return
        console.print(plan_table(created))
        console.print(
            f"dry run: would create {len(created.tokens)} token(s) of run {created.run} and "
            f"start {pilots} local pilot(s); nothing changed"
        )
        return
    root = output_root or chosen.storage_root
    worker_args = ["--output-root", root, "--heartbeat", "5s", "--poll-interval", "0.5s"]
    with open_pool(chosen) as opened:
        runs = _read(opened, created.run)
    record = None
    if _unfinished(runs[0]):  # a rerun of a finished run starts nothing
        record = submit_pilots(
            chosen,
            get_submitter("local"),
            pipeline=created.run,
            count=pilots,
            resources=Resources(walltime=timeout),
            worker_args=worker_args,
            steps_dir=steps_dir,
            macaroons=macaroons,
        ).record
    deadline = time.monotonic() + timeout
    with open_pool(chosen) as opened:
        opened.follow()
        live = Live(render_runs(runs, opened.url), console=err_console, auto_refresh=False)
        try:
            with live:
                while record is not None and _unfinished(runs[0]):
                    time.sleep(1.0)
                    runs = _read(opened, created.run)
                    live.update(render_runs(runs, opened.url), refresh=True)
                    record = refresh(opened, record)
                    if not record.active and _unfinished(runs[0]):
                        runs = _read(opened, created.run)  # the last pilot's last promotion
                        if _unfinished(runs[0]):
                            raise GridlrtError(
                                f"the pilots ended with tokens of run {created.run} unfinished; "
                                f"see their logs in {record.run_dir}"
                            )
                    if time.monotonic() > deadline:
                        raise GridlrtError(
                            f"run {created.run} did not finish within {timeout:.0f} s; pilots "
                            f"keep running (gridlrt jobs status {record.id})"
                        )
        except KeyboardInterrupt:
            if record is not None:
                cancel(opened, record)  # pilots put their tokens back: a rerun goes on
            err_console.print("stopped; pilots cancelled, their tokens back to todo")
            raise typer.Exit(130) from None
    if as_json:
        typer.echo("[" + ",".join(r.model_dump_json(indent=2) for r in runs) + "]")
        return
    console.print(render_runs(runs, chosen.pool))
    console.print(
        f"results: under {root}, where each step's outputs.url puts them; "
        f"each token's outputs: gridlrt tokens show ID"
    )


def _unfinished(run: PipelineStatus) -> bool:
    """Tokens still to run or running (blocked and error tokens wait for a user)."""
    busy = ("waiting", "todo", "locked", "downloading", "running", "uploading")
    return any(run.counts.get(status, 0) for status in busy)
