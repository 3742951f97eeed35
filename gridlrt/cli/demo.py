"""``gridlrt demo``: the whole trip on this machine, with live progress and a summary.

:mod:`gridlrt.demo` is imported when the command runs, not with the CLI: pilots run this CLI
from a runtime bundle that leaves the demo out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gridlrt.cli.common import PoolOption, console, err_console, settings
from gridlrt.durations import format_duration
from gridlrt.errors import ConfigError
from gridlrt.tokens import open_pool

if TYPE_CHECKING:
    from gridlrt.demo import DemoResult


def demo_command(
    ctx: typer.Context,
    subbands: Annotated[
        int, typer.Option("--subbands", min=1, max=244, help="Subbands in the observation.")
    ] = 8,
    pilots: Annotated[
        int, typer.Option("--pilots", min=1, max=64, help="Local pilots to start.")
    ] = 2,
    step: Annotated[
        str, typer.Option("--step", help="Step to run: flag-average, average (built in).")
    ] = "flag-average",
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            help="Where the observation, its srm.txt and the plot go "
            "(default: ~/.local/share/gridlrt/demo).",
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
    """Run the main job end to end on this machine, with nothing to start by hand.

    Makes a small LOFAR-like observation (8 subbands of synthetic measurement sets, packed as
    LTA tarballs with real LOFAR names) and its srm.txt, creates tokens for the flag-average
    step in the pool (the embedded default), starts local pilots that flag with AOFlagger and
    average with DP3, shows progress, and ends with a table per subband and a PNG plot of
    progress over time. Run it again: nothing is redone, the answer is the same.

    Watch it from another terminal with: gridlrt status --watch
    """
    try:
        from gridlrt.demo import DemoSpec, default_workdir, plan_demo, run_demo
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("gridlrt.demo"):
            raise
        raise ConfigError(
            "the demo is not part of this installation (a pilot's runtime bundle leaves it "
            "out); run gridlrt demo where gridlrt is installed with pip"
        ) from None
    chosen = settings(ctx, pool)
    spec = DemoSpec(subbands=subbands, pilots=pilots, step=step)
    where = (workdir or default_workdir()).expanduser().absolute()
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
        f"gridlrt demo: L{spec.obsid}, {spec.subbands} subbands, step {spec.step}, "
        f"{spec.pilots} local pilot(s); pool {chosen.pool}",
        highlight=False,
        soft_wrap=True,
    )
    with (
        open_pool(chosen) as opened,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        ) as progress,
    ):
        task = progress.add_task(f"{spec.step}", total=spec.subbands, detail="making the data")

        def show(counts: dict[str, int]) -> None:
            busy = sum(counts.get(s, 0) for s in ("locked", "downloading", "running", "uploading"))
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
    _report(result)


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}s" if value < 60 else format_duration(value)


def _report(result: DemoResult) -> None:
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
            _seconds(row.seconds),
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
