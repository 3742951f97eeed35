"""The root ``gridlrt`` command and its sub-command groups."""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
import typer.main
from pydantic import ValidationError
from rich.markup import escape

from gridlrt import __version__
from gridlrt.cli.common import err_console
from gridlrt.cli.helpfmt import use_plain_metavars
from gridlrt.errors import ExitCode, GridlrtError

#: Every sub-command, in the order ``gridlrt --help`` lists them: name -> (module, the typer
#: command function or sub-app in it). A command's module is imported when the command line
#: names it (or help lists it), not at start-up: ``gridlrt worker run`` on a worker node, and
#: every ``gridlrt tokens ...`` or ``jobs status`` call, loads neither the dashboard, the
#: doctor, pipelines, datasets nor the submit backends (a third of the start-up time).
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("gridlrt.cli.doctor", "doctor_command"),
    "demo": ("gridlrt.cli.demo", "demo_command"),
    "submit": ("gridlrt.cli.submit", "submit_command"),
    "status": ("gridlrt.cli.status", "status_command"),
    "dashboard": ("gridlrt.cli.dashboard", "dashboard_command"),
    "pool": ("gridlrt.cli.tokens", "pool_app"),
    "tokens": ("gridlrt.cli.tokens", "tokens_app"),
    "pipeline": ("gridlrt.cli.pipeline", "pipeline_app"),
    "stage": ("gridlrt.cli.stage", "stage_app"),
    "ms": ("gridlrt.cli.ms", "ms_app"),
    "worker": ("gridlrt.cli.worker", "worker_app"),
    "sandbox": ("gridlrt.cli.sandbox", "sandbox_app"),
    "storage": ("gridlrt.cli.storage", "storage_app"),
    "data": ("gridlrt.cli.data", "data_app"),
    "jobs": ("gridlrt.cli.submit", "jobs_app"),
}
#: the root app's settings, which its sub-commands are built with
_SETTINGS: dict[str, Any] = {"pretty_exceptions_show_locals": False, "rich_markup_mode": "markdown"}


def load_command(name: str) -> typer.core.TyperCommand | typer.core.TyperGroup:
    """The click command ``name`` of :data:`COMMANDS`, built as if it had been added to the
    root app (``app.command(name)`` for a function, ``app.add_typer(sub, name=name)``)."""
    module, attribute = COMMANDS[name]
    found = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer(**_SETTINGS)
    holder.callback()(lambda: None)  # a group even around a single command
    if isinstance(found, typer.Typer):
        holder.add_typer(found, name=name)
    else:
        holder.command(name)(found)
    group = typer.main.get_command(holder)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands[name]
    assert isinstance(command, typer.core.TyperCommand | typer.core.TyperGroup)
    return command


class LazyCommands(MutableMapping[str, Any]):
    """The root group's commands: every name of :data:`COMMANDS` (and any command added
    later), each built by :func:`load_command` the first time it is looked up."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            self._built[name] = load_command(name)
        return self._built[name]

    def __contains__(self, name: object) -> bool:  # without building it
        return name in COMMANDS or name in self._built

    def __iter__(self) -> Iterator[str]:
        return iter([*COMMANDS, *(n for n in self._built if n not in COMMANDS)])

    def __len__(self) -> int:
        return len(COMMANDS) + sum(1 for n in self._built if n not in COMMANDS)

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("the gridlrt commands are fixed")


class LazyGroup(typer.core.TyperGroup):
    """The root group: lists (and suggests, on a typo) every command, builds one when used."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        added, self.commands = self.commands, LazyCommands()
        self.commands.update(added)


app = typer.Typer(
    name="gridlrt",
    help="LOFAR Reduction Tools for the grid: stage LTA data, fill a token pool, ship a "
    "sandbox, run pilots (local, Slurm, DIRAC), and watch them work.\n\n"
    "Start with `gridlrt doctor` to see what this node has.",
    no_args_is_help=True,
    cls=LazyGroup,
    **_SETTINGS,  # no locals in tracebacks: they may hold secrets
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
