"""``gridlrt submit`` and ``gridlrt jobs ...``: start pilots on a backend, watch and cancel them."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from gridlrt.cli.common import PoolOption, console, duration, err_console, settings
from gridlrt.durations import format_duration
from gridlrt.errors import InputError
from gridlrt.submit.model import JobRecord, JobState, JobStatus, Resources
from gridlrt.submit.pilot_args import pilot_max_time
from gridlrt.submit.service import (
    BACKENDS,
    cancel,
    check_macaroons,
    get_record,
    get_submitter,
    refresh_jobs,
    submit_pilots,
    worker_arguments,
)
from gridlrt.tokens import Token, open_pool
from gridlrt.worker.plan import validate_step
from gridlrt.worker.steps import StepConfig, resolve_step

jobs_app = typer.Typer(
    help="Pilot jobs started by gridlrt submit: their states (refreshed from the batch or "
    "grid system) and cancel.",
    no_args_is_help=True,
)

STATE_STYLE = {
    JobState.PENDING: "white",
    JobState.HELD: "magenta",
    JobState.RUNNING: "bold cyan",
    JobState.COMPLETED: "green",
    JobState.TIMEOUT: "green",
    JobState.FAILED: "bold red",
    JobState.CANCELLED: "yellow",
    JobState.UNKNOWN: "dim",
}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_FACTOR = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


#: ``--macaroons FILE`` of every command that starts pilots (submit, pipeline run)
MacaroonsOption = Annotated[
    Path | None,
    typer.Option(
        "--macaroons",
        metavar="FILE",
        help="A 0600 macaroon file (gridlrt stage macaroons): pilots download inputs from "
        "(and upload to) its WebDAV doors with it; shipped as macaroon.cred (0600), never "
        "on a command line or in a script or JDL.",
        show_default=False,
    ),
]


def parse_memory(text: str) -> int:
    """``4G``, ``4000M``, ``4GB``, ``4000`` (MB) -> megabytes."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise InputError(f"--mem {text!r}: use a size like 4G or 4000M")
    return max(1, int(float(match.group(1)) * _FACTOR[match.group(2).lower()]))


def parse_count(text: str) -> int | None:
    """``-n``: a positive number, or ``auto`` (None)."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise InputError(f"-n {text!r}: give a number of pilots (>= 1) or auto")
    return int(text)


def submit_command(
    ctx: typer.Context,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            "-b",
            help=f"Where pilots run: {', '.join(BACKENDS)}.",
            show_default=False,
        ),
    ],
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            help="Pilots take only tokens of this step (default: any ready token, whatever "
            "its step).",
            show_default=False,
        ),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option(
            "--pipeline",
            metavar="RUN",
            help="Pilots for this pipeline run: -n auto sizes them by its widest remaining "
            "stage, every stage's step is checked now. They take any ready token.",
            show_default=False,
        ),
    ] = None,
    count: Annotated[
        str,
        typer.Option(
            "-n",
            "--count",
            help="Number of pilots, or auto: one per todo token (of --step), or per token of "
            "the --pipeline run's widest remaining stage (todo, waiting, running); at most --max.",
        ),
    ] = "auto",
    maximum: Annotated[
        int | None,
        typer.Option(
            "--max",
            min=1,
            help="Cap for -n auto (default: the max_pilots setting, 100).",
            show_default=False,
        ),
    ] = None,
    pool: PoolOption = None,
    steps_dir: Annotated[
        Path | None,
        typer.Option("--steps-dir", help="Your step configs (STEP.toml and the files they name)."),
    ] = None,
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="Cores per pilot.")] = 1,
    mem: Annotated[
        str | None,
        typer.Option(
            "--mem", help="Memory per pilot (e.g. 8G); default: the site's.", show_default=False
        ),
    ] = None,
    walltime: Annotated[
        str,
        typer.Option("--walltime", help="Wall time per pilot job (e.g. 12h, 1d)."),
    ] = "12h",
    max_running: Annotated[
        int | None,
        typer.Option(
            "--max-running",
            min=1,
            help="Slurm: at most this many pilots at once.",
            show_default=False,
        ),
    ] = None,
    partition: Annotated[
        str | None, typer.Option("--partition", help="Slurm partition.", show_default=False)
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", help="Slurm account.", show_default=False)
    ] = None,
    site: Annotated[
        list[str] | None,
        typer.Option(
            "--site", help="DIRAC/gLite: only this site (repeatable).", show_default=False
        ),
    ] = None,
    ban_site: Annotated[
        list[str] | None,
        typer.Option(
            "--ban-site", help="DIRAC/gLite: never this site (repeatable).", show_default=False
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag", help="DIRAC: a job tag, e.g. 4Processors (repeatable).", show_default=False
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            min=1,
            help="Each pilot stops after this many tokens.",
            show_default=False,
        ),
    ] = None,
    idle_timeout: Annotated[
        str | None,
        typer.Option(
            "--idle-timeout",
            help="How long a pilot waits for new tokens (e.g. 10m; 0s: stop at once).",
            show_default=False,
        ),
    ] = None,
    output_root: Annotated[
        str | None,
        typer.Option(
            "--output-root",
            help="Base URL for outputs (default: the storage_root setting).",
            show_default=False,
        ),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(
            "--python",
            help="local/slurm: the Python with gridlrt that pilots run (default: this one).",
            show_default=False,
        ),
    ] = None,
    vo: Annotated[str, typer.Option("--vo", help="gLite: virtual organisation.")] = "lofar",
    delegation: Annotated[
        str | None,
        typer.Option(
            "--delegation", help="gLite: delegation id (default: $USER).", show_default=False
        ),
    ] = None,
    macaroons: MacaroonsOption = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Where scripts, JDL and logs go (default: the runs_dir setting/ID).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the script/JDL and the exact command; submit nothing."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job record as JSON.")] = False,
) -> None:
    """Start N pilots on a batch or grid system and record the jobs in the pool.

    Each pilot claims tokens (of --step, else any ready token, whatever its step) until none
    is left or its wall time is nearly up (it stops taking tokens 10 % before the end); while
    pipeline tokens wait for parents other pilots work on, it waits for them. Every step the
    pilots may meet is checked first against a token (a typo fails here, not on the nodes):
    the step of each kind of todo token and, with --pipeline, the step of every stage left.
    Backends:

    * **local** - N background processes on this machine; logs in the run directory.
    * **slurm** - one sbatch array job (cluster with a shared file system, e.g. SURF Spider).
    * **dirac** - a DIRAC parametric job; ships pilot.sh, the step sandbox with gridlrt inside,
      and the pool credentials as a 0600 file (never in the JDL or on a command line).
    * **glite** - a gLite WMS parametric job (old recipes).

    --macaroons FILE gives every pilot, on any backend, a 0600 copy of a macaroon file
    (gridlrt stage macaroons), so it reads inputs on those WebDAV doors without a grid
    certificate.

    Examples:

        gridlrt submit -b local --step average -n 4
        gridlrt submit -b slurm --step flag-average -n auto --max-running 20 --walltime 4h
        gridlrt submit -b dirac --step average -n auto --steps-dir steps/ --dry-run
        gridlrt submit -b slurm -n 4 --steps-dir steps/     # any ready token, any step
        gridlrt submit -b slurm --pipeline cal-target --steps-dir steps/ --max 50
    """
    if step is not None and pipeline is not None:
        raise typer.BadParameter(
            "pilots take one step, or a pipeline's steps: give --step or --pipeline",
            param_hint="'--pipeline'",
        )
    chosen = settings(ctx, pool)
    requested = parse_count(count)
    seconds = duration(walltime, "--walltime", zero=True, example="12h")  # 0: Resources refuses it
    submitter_options: dict[str, Any] = {}
    if backend in ("local", "slurm") and python:
        submitter_options["python"] = python
    if backend == "glite":
        submitter_options.update(vo=vo, delegation=delegation)
    submitter = get_submitter(backend, **submitter_options)
    resources = Resources(
        cpus=cpus,
        memory_mb=parse_memory(mem) if mem else None,
        walltime=seconds,
        max_running=max_running,
        partition=partition,
        account=account,
        sites=site or [],
        banned_sites=ban_site or [],
        tags=tag or [],
    )
    idle = (
        duration(idle_timeout, "--idle-timeout", zero=True, example="10m")
        if idle_timeout is not None
        else None
    )
    pilot_args = worker_arguments(
        chosen, backend, output_root=output_root, max_tokens=max_tokens, idle_timeout=idle
    )
    root = pilot_args.output_root
    configs: dict[str, StepConfig] = {}

    def resolve(name: str) -> StepConfig:
        if name not in configs:
            configs[name] = resolve_step(name, steps_dir)
        return configs[name]

    if step is not None:
        resolve(step)  # before the pool is asked: a typo fails here, not on nodes

    def check(token: Token) -> None:  # the templates, filled as a pilot will fill them
        validate_step(resolve(token.step), token, storage_root=root, step_dir=steps_dir)

    done = submit_pilots(
        chosen,
        submitter,
        step=step,
        pipeline=pipeline,
        count=requested,
        maximum=maximum,
        resources=resources,
        worker_args=pilot_args.argv,
        steps_dir=steps_dir,
        run_dir=run_dir,
        check=check,
        dry_run=dry_run,
        macaroons=macaroons,
    )
    work = (
        f"step {step}"
        if step is not None
        else f"pipeline run {pipeline}"
        if pipeline is not None
        else "any step"
    )
    if done.auto_cap is not None:
        err_console.print(f"-n auto: {done.count} pilot(s) for {work} (at most {done.auto_cap})")
    if done.submission is None:
        left = "no tokens left to run" if pipeline is not None else "no todo tokens"
        err_console.print(f"{left} for {work} in {done.pool_url}; nothing to submit")
        return
    if done.checked:
        steps = sorted({t.step for t in done.checked})
        err_console.print(
            f"checked step(s) {', '.join(steps)} against {len(done.checked)} token(s)",
            highlight=False,
        )
    if done.record is None:  # dry run
        submission = done.submission
        _show_plan(submission.files, submission.command, submission.request.run_dir)
        if submission.request.credentials_file is not None:
            console.print(
                f"credentials: would be written to {submission.request.credentials_file} "
                "(0600; not shown)",
                highlight=False,
                soft_wrap=True,
            )
        if submission.request.macaroon_file is not None:
            doors = check_macaroons(submission.request.macaroon_source or Path())
            console.print(
                f"macaroons: {submission.request.macaroon_source} would be copied to "
                f"{submission.request.macaroon_file} (0600) and given to the pilots for "
                f"{', '.join(doors)} (not shown)",
                highlight=False,
                soft_wrap=True,
            )
        console.print(f"[yellow]dry run:[/] nothing submitted ({done.count} pilot(s) planned)")
        return
    record = done.record
    if as_json:
        typer.echo(record.model_dump_json(indent=2))
        return
    shown = ", ".join(record.job_ids[:3]) + (" ..." if len(record.job_ids) > 3 else "")
    console.print(
        f"submitted {record.count} pilot(s) for {work} on {record.backend}: {shown}\n"
        f"record {record.id}; files and logs in {record.run_dir}\n"
        f"follow with: gridlrt jobs status   (pilots stop taking tokens after "
        f"{format_duration(pilot_max_time(seconds))})",
        highlight=False,
        soft_wrap=True,
    )


def _show_plan(files: dict[str, str], command: list[str], run_dir: Path) -> None:
    for name, text in files.items():
        lexer = "bash" if name.endswith(".sh") else "text"
        console.rule(f"{run_dir / name}")
        console.print(Syntax(text, lexer, word_wrap=True))
    console.rule("command")
    console.print(shlex.join(command), highlight=False, soft_wrap=True)


def _age(seconds: float) -> str:
    return format_duration(time.time() - seconds) + " ago"


def _records_table(records: list[JobRecord]) -> Table:
    table = Table(title="pilot jobs", title_justify="left")
    table.add_column("submission", no_wrap=True)
    table.add_column("backend")
    table.add_column("step")
    table.add_column("pilots", justify="right")
    for state in JobState:
        table.add_column(state.value, justify="right", style=STATE_STYLE[state])
    table.add_column("submitted")
    for record in records:
        counts = record.counts()
        table.add_row(
            record.id,
            record.backend,
            record.takes,
            str(len(record.job_ids)),
            *(str(counts[s.value] or "") for s in JobState),
            _age(record.submitted) + (" (cancelled)" if record.cancelled else ""),
        )
    return table


@jobs_app.command("status")
def jobs_status(
    ctx: typer.Context,
    record_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[SUBMISSION]", help="One submission (default: all).", show_default=False
        ),
    ] = None,
    pool: PoolOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    jobs: Annotated[
        bool, typer.Option("--jobs", help="List every job with its state, exit code and reason.")
    ] = False,
) -> None:
    """Refresh the states of submitted pilot jobs from their backends and show them.

    Finished submissions are not asked again. A job the backend has forgotten keeps its last
    known state; local pilots can only be seen from the machine that started them.

    Examples:

        gridlrt jobs status
        gridlrt jobs status 20261121T101121Z-slurm-average-ab12 --jobs
        gridlrt jobs status --json
    """
    with open_pool(settings(ctx, pool)) as opened:
        found = refresh_jobs(opened, record_id)
    for failed_id, exc in found.errors.items():
        err_console.print(f"[yellow]warning:[/] {failed_id}: {escape(str(exc))}", highlight=False)
    fresh = found.records
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in fresh], indent=2))
        return
    if not fresh:
        console.print("no submissions recorded in this pool; start pilots with gridlrt submit")
        return
    console.print(_records_table(fresh))
    if jobs:
        table = Table("submission", "job id", "state", "exit code", "reason")
        for record in fresh:
            for job_id in record.job_ids:
                status = record.states.get(job_id, JobStatus(state=JobState.PENDING))
                table.add_row(
                    record.id,
                    job_id,
                    f"[{STATE_STYLE[status.state]}]{status.state.value}[/]",
                    "" if status.exit_code is None else str(status.exit_code),
                    escape(status.reason or ""),
                )
        console.print(table)


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context,
    record_id: Annotated[
        str,
        typer.Argument(metavar="SUBMISSION", help="The submission to cancel.", show_default=False),
    ],
    pool: PoolOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show which jobs would be cancelled.")
    ] = False,
) -> None:
    """Cancel the unfinished pilot jobs of a submission.

    Pilots get SIGTERM (Slurm, local) or are killed by the grid; a pilot that is told to stop
    puts its current token back to todo. Tokens of pilots killed hard are recovered with
    gridlrt tokens recover.

    Example: gridlrt jobs cancel 20261121T101121Z-slurm-average-ab12 --dry-run
    """
    with open_pool(settings(ctx, pool)) as opened:
        record, active = cancel(opened, get_record(opened, record_id), dry_run=dry_run)
    if dry_run:
        console.print(f"would cancel {len(active)} job(s) of {record.id}: {' '.join(active)}")
        return
    console.print(f"cancelled {len(active)} job(s) of {record.id} on {record.backend}")
