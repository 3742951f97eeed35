"""The root ``gridlrt`` command and its sub-command groups."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.markup import escape

from gridlrt import __version__
from gridlrt.cli.common import err_console
from gridlrt.cli.dashboard import dashboard_command
from gridlrt.cli.data import data_app
from gridlrt.cli.demo import demo_command
from gridlrt.cli.doctor import doctor_command
from gridlrt.cli.helpfmt import use_plain_metavars
from gridlrt.cli.ms import ms_app
from gridlrt.cli.pipeline import pipeline_app
from gridlrt.cli.sandbox import sandbox_app
from gridlrt.cli.stage import stage_app
from gridlrt.cli.status import status_command
from gridlrt.cli.storage import storage_app
from gridlrt.cli.submit import jobs_app, submit_command
from gridlrt.cli.tokens import pool_app, tokens_app
from gridlrt.cli.worker import worker_app
from gridlrt.errors import ExitCode, GridlrtError

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
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(stage_app, name="stage")
app.add_typer(ms_app, name="ms")
app.add_typer(worker_app, name="worker")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(storage_app, name="storage")
app.add_typer(data_app, name="data")
app.command("submit")(submit_command)
app.add_typer(jobs_app, name="jobs")
app.command("status")(status_command)
app.command("dashboard")(dashboard_command)


def _error(message: str, code: int) -> NoReturn:
    """Print ``error: MESSAGE`` as one line on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _interrupted() -> NoReturn:
    err_console.print("[yellow]interrupted[/]", highlight=False)
    sys.exit(ExitCode.INTERRUPTED)


def _internal_error(err: Exception) -> NoReturn:
    """A bug: the traceback (it is what a report needs), then one ``internal error:`` line."""
    traceback.print_exception(err, file=sys.stderr)
    err_console.print(
        f"[bold red]internal error:[/] {escape(type(err).__name__)}: {escape(str(err))} "
        "(a bug in gridlrt; please report it with the traceback above)",
        highlight=False,
        soft_wrap=True,
    )
    sys.exit(ExitCode.INTERNAL)


#: click's ``ClickException`` (typer vendors click in newer versions, so it is found through
#: typer's own ``BadParameter`` rather than imported from a package that may not be there).
_CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def _usage_error(err: Exception) -> NoReturn:
    """A command-line mistake (unknown option, missing value, value out of range): one line
    with where to read more; ``gridlrt GROUP`` alone still shows the group's help."""
    code = int(getattr(err, "exit_code", ExitCode.USAGE))
    if type(err).__name__ == "NoArgsIsHelpError":
        text = str(err.format_message())  # type: ignore[attr-defined]
        if text.strip():  # typer with rich has printed the help already
            typer.echo(text, err=True)
        sys.exit(code)
    message = " ".join(str(err.format_message()).split())  # type: ignore[attr-defined]
    ctx = getattr(err, "ctx", None)
    hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
    _error(message + hint, code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: an error a user can act on becomes one line on stderr and
    its :class:`~gridlrt.errors.ExitCode` (usage errors 2, invalid input 3, credentials 4, an
    unreachable service 5, ...); a bug prints its traceback and exits 6; Ctrl-C prints
    ``interrupted`` and exits 130."""
    use_plain_metavars()  # `--dry-run`, not `--dry-run <bool>`
    try:
        # Not standalone: typer would turn Ctrl-C into a silent exit 130 (newer versions) or
        # "Aborted!" and exit 1 (older ones), and print usage errors as a box.
        result = app(args=argv, prog_name="gridlrt", standalone_mode=False)
    except GridlrtError as err:
        _error(str(err), err.exit_code)
    except ValidationError as err:  # a value an option passed into a model: still one line
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or err.title
        _error(f"{where}: {first['msg']} (got {first.get('input')!r})", ExitCode.INPUT)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except _CLICK_EXCEPTION as err:
        _usage_error(err)
    except Exception as err:  # anything else is a bug: say so, distinctly
        _internal_error(err)
    if isinstance(result, int) and result:  # typer.Exit(code), or Ctrl-C in newer typers
        if result == ExitCode.INTERRUPTED:
            _interrupted()
        sys.exit(result)
