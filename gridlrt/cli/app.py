"""The root ``gridlrt`` command and its sub-command groups."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from gridlrt import __version__
from gridlrt.cli.common import err_console
from gridlrt.cli.demo import demo_command
from gridlrt.cli.doctor import doctor_command
from gridlrt.cli.ms import ms_app
from gridlrt.cli.sandbox import sandbox_app
from gridlrt.cli.stage import stage_app
from gridlrt.cli.status import status_command
from gridlrt.cli.storage import storage_app
from gridlrt.cli.submit import jobs_app, submit_command
from gridlrt.cli.tokens import pool_app, tokens_app
from gridlrt.cli.worker import worker_app
from gridlrt.errors import GridlrtError

app = typer.Typer(
    name="gridlrt",
    help="LOFAR Reduction Tools for the grid: stage LTA data, fill a token pool, ship a "
    "sandbox, run pilots (local, Slurm, DIRAC), and watch them work.\n\n"
    "Start with `gridlrt doctor` to see what this node has.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gridlrt {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings file (TOML). Default: $GRIDLRT_CONFIG or ~/.config/gridlrt/config.toml.",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output.")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


app.command("doctor")(doctor_command)
app.command("demo")(demo_command)
app.add_typer(pool_app, name="pool")
app.add_typer(tokens_app, name="tokens")
app.add_typer(stage_app, name="stage")
app.add_typer(ms_app, name="ms")
app.add_typer(worker_app, name="worker")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(storage_app, name="storage")
app.command("submit")(submit_command)
app.add_typer(jobs_app, name="jobs")
app.command("status")(status_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit 1."""
    try:
        app(args=argv, prog_name="gridlrt")
    except GridlrtError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except ValidationError as err:  # a value an option passed into a model: still one line
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or err.title
        err_console.print(
            f"[bold red]error:[/] {where}: {first['msg']} (got {first.get('input')!r})",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
