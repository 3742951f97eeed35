"""``gridlrt doctor``: check this node and show what to fix."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from gridlrt import doctor
from gridlrt.cli.common import PoolOption, console, settings

STYLE = {
    doctor.Status.OK: "[green]ok[/]",
    doctor.Status.WARN: "[yellow]warn[/]",
    doctor.Status.FAIL: "[bold red]FAIL[/]",
    doctor.Status.INFO: "[blue]info[/]",
}


def doctor_command(
    ctx: typer.Context,
    pool: PoolOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check that this node can run gridlrt: Python, gfal2 and its protocol plugins, DP3,
    python-casacore and measures data, the token pool, credential files (presence and 0600
    permissions only; secrets are never shown) and batch/grid clients.

    Exit status 0 when everything the configured use needs is present, 1 otherwise.
    Run it first on a login node, and on a worker node when a pilot misbehaves.
    """
    checks = doctor.run_checks(settings(ctx, pool))
    ok = doctor.healthy(checks)
    if as_json:
        payload = {"healthy": ok, "checks": [c.model_dump(mode="json") for c in checks]}
        typer.echo(json.dumps(payload, indent=2))
    else:
        table = Table(title="gridlrt doctor", title_justify="left")
        for column in ("check", "status", "detail", "how to fix"):
            table.add_column(column, overflow="fold")
        for check in checks:
            table.add_row(check.name, STYLE[check.status], check.detail, check.fix or "")
        console.print(table)
        failed = [c.name for c in checks if c.required and c.status is doctor.Status.FAIL]
        if failed:
            console.print(
                f"[bold red]{len(failed)} required check(s) failed:[/] {', '.join(failed)}"
            )
        else:
            console.print("[green]Everything gridlrt needs here is present.[/]")
    raise typer.Exit(0 if ok else 1)
