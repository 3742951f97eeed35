"""``gridlrt pool ...`` and ``gridlrt tokens ...``: create, watch and repair the token pool."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from gridlrt.cli.common import (
    JsonOption,
    PoolOption,
    console,
    duration,
    err_console,
    output_directory,
    settings,
)
from gridlrt.config import Settings
from gridlrt.durations import format_duration, parse_duration
from gridlrt.errors import InputError, MalformedToken
from gridlrt.tokens import Token, TokenPool, TokenStatus, open_pool
from gridlrt.tokens.conflicts import winner
from gridlrt.tokens.create import TokenCheck, create_tokens
from gridlrt.worker.plan import validate_step
from gridlrt.worker.steps import resolve_step

pool_app = typer.Typer(help="Create or upgrade the token pool.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="Create, inspect, reset, recover and archive tokens (one token = one unit of work, "
    "e.g. one subband).",
    no_args_is_help=True,
)

STATUS_STYLE = {
    "waiting": "dim",
    "blocked": "magenta",
    "todo": "white",
    "locked": "cyan",
    "downloading": "cyan",
    "running": "bold cyan",
    "uploading": "cyan",
    "done": "green",
    "error": "bold red",
}
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
]
StepOption = Annotated[str | None, typer.Option("--step", help="Only tokens of this step.")]


def _open(ctx: typer.Context, pool: str | None) -> TokenPool:
    return open_pool(settings(ctx, pool))


def _malformed(pool: TokenPool, found: dict[str, str] | None = None) -> dict[str, str]:
    """Documents that are not valid tokens: those ``found`` (an overview's) and those the pool
    skipped on the way."""
    return {**(found or {}), **pool.malformed.reasons}


def _warn_malformed(reasons: dict[str, str], shown: int = 5) -> None:
    """Say on stderr which documents were skipped and why (they are counted nowhere)."""
    if not reasons:
        return
    err_console.print(
        f"[yellow]warning:[/] skipped {len(reasons)} document(s) that are not valid tokens "
        "(fix or delete them; `gridlrt tokens show ID` prints one):",
        highlight=False,
    )
    for doc_id, why in list(reasons.items())[:shown]:
        err_console.print(f"  {doc_id}: {why}", markup=False, highlight=False)
    if len(reasons) > shown:
        err_console.print(f"  ... and {len(reasons) - shown} more", highlight=False)


def _status(text: str | None) -> TokenStatus | None:
    if text is None:
        return None
    try:
        return TokenStatus(text)
    except ValueError:
        names = ", ".join(s.value for s in TokenStatus)
        raise InputError(f"--status {text!r}: choose one of {names}") from None


# --- pool ------------------------------------------------------------------------------------


@pool_app.command("init")
def pool_init(ctx: typer.Context, pool: PoolOption = None) -> None:
    """Create the pool (embedded SQLite file, or CouchDB database with the PiCaS-compatible
    `Monitor` design document). Safe to run again: upgrades the design document in place and
    keeps views others added."""
    with _open(ctx, pool) as opened:
        opened.init()
        console.print(f"pool ready: {opened.url} ({opened.overview().total()} tokens)")


@pool_app.command("resolve")
def pool_resolve(
    ctx: typer.Context, pool: PoolOption = None, dry_run: DryRunOption = False
) -> None:
    """Settle tokens with conflicting revisions: two copies of a replicated pool (or of a
    CouchDB cluster) each accepted a write of the same revision. One revision wins by a rule
    every pool user applies alike (a finished one; else the first write after the split with
    the smaller revision id); the others are deleted. Pilots do this by themselves as they
    go; this command is for a look, or for conflicts left by tools that do not. Nothing to do
    on the embedded pool.

    Example: gridlrt pool resolve --dry-run"""
    with _open(ctx, pool) as opened:
        found = opened.conflicts()
        if not found:
            console.print(f"no token of {opened.url} has conflicting revisions")
            return
        table = Table(title=f"{len(found)} token(s) with conflicting revisions")
        for column in ("token", "revision", "status", "pilot", ""):
            table.add_column(column)
        for token_id, leaves in found:
            kept = winner(leaves)
            for leaf in sorted(leaves, key=lambda x: x is not kept):
                attempts = leaf.doc.get("attempts") or [{}]
                last = attempts[-1] if isinstance(attempts[-1], dict) else {}
                table.add_row(
                    token_id if leaf is kept else "",
                    leaf.rev,
                    str(leaf.doc.get("status", "?")),
                    str(last.get("pilot", "")),
                    "kept" if leaf is kept else ("would be deleted" if dry_run else "deleted"),
                )
        console.print(table)
        if dry_run:
            console.print("dry run: nothing changed")
            return
        settled = sum(1 for token_id, _ in found if opened.resolve(token_id))
        console.print(f"settled {settled} token(s)")


# --- tokens ----------------------------------------------------------------------------------


@tokens_app.command("create")
def create(
    ctx: typer.Context,
    step: Annotated[str, typer.Option("--step", help="Step that will process these tokens.")],
    inputs: Annotated[
        Path,
        typer.Option(
            "--inputs", help="File with one input per line (e.g. srm.txt).", show_default=False
        ),
    ],
    per_token: Annotated[
        int, typer.Option("--per-token", min=1, help="Inputs per token (1 or more).")
    ] = 1,
    steps_dir: Annotated[
        Path | None,
        typer.Option(
            "--steps-dir",
            help="Directory with your STEP.toml/.yaml files (as given to `gridlrt submit`); "
            "without it STEP must be a built-in step. The step is checked against the first "
            "new token now, so a typo or a broken template fails here, not in every pilot.",
            show_default=False,
        ),
    ] = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option("--attach", help="File to attach to every new token (repeatable)."),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field", help="Extra token field KEY=VALUE (JSON values allowed; repeatable)."
        ),
    ] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher is claimed first.")] = 0,
    pool: PoolOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Make one token per input (or per N inputs) for STEP. Token ids come from the LOFAR file
    names (`STEP_L229507_SB100`), so running the same command twice creates nothing new.

    The step is looked up as pilots will (--steps-dir, then the built-in steps) and its
    templates are filled from the first new token: an unknown step, a broken step file or an
    unknown placeholder is reported now, naming the file and the field.

    Example: gridlrt tokens create --step average --inputs srm.txt --field avg_freqstep=4

    Example: gridlrt tokens create --step mystep --steps-dir steps/ --inputs srm.txt
    """
    result = create_tokens(
        lambda: settings(ctx, pool),
        inputs,
        step=step,
        per_token=per_token,
        fields=field or [],
        priority=priority,
        attach=attach or [],
        check=_step_check(step, steps_dir),
        dry_run=dry_run,
    )
    tokens = result.tokens
    if result.dry_run:
        table = Table(title=f"would create {len(tokens)} token(s) for step {step!r}")
        for column in ("id", "inputs", "first input"):
            table.add_column(column, overflow="fold")
        for token in tokens[:50]:
            table.add_row(token.id, str(len(token.inputs)), token.inputs[0])
        console.print(table)
        if len(tokens) > 50:
            console.print(f"... and {len(tokens) - 50} more")
        for path in result.attachments:
            console.print(f"would attach {path.name} to each new token")
        return
    console.print(
        f"created {len(result.created)} token(s) for step {step!r} in {result.pool_url}"
        + (f"; {len(result.duplicates)} already there" if result.duplicates else "")
    )


def _step_check(step: str, steps_dir: Path | None) -> TokenCheck:
    """The step looked up as pilots will (--steps-dir, then the built-in steps), its templates
    filled from a token: a typo or a broken template fails now, not in every pilot."""

    def check(token: Token, chosen: Settings) -> None:
        config = resolve_step(step, steps_dir)
        validate_step(config, token, storage_root=chosen.storage_root, step_dir=steps_dir)

    return check


def token_step_check(steps_dir: Path | None) -> TokenCheck:
    """Like :func:`_step_check`, for the step each token names (pipeline stages)."""

    def check(token: Token, chosen: Settings) -> None:
        config = resolve_step(token.step, steps_dir)
        validate_step(config, token, storage_root=chosen.storage_root, step_dir=steps_dir)

    return check


@tokens_app.command("status")
def status(
    ctx: typer.Context,
    step: StepOption = None,
    pool: PoolOption = None,
    as_json: JsonOption = False,
) -> None:
    """Counts per step and status, with a progress bar per step. Documents that are not valid
    tokens are counted nowhere: they are listed on stderr (and under "_malformed" with --json,
    id: why)."""
    with _open(ctx, pool) as opened:
        overview = opened.overview()
        malformed = _malformed(opened, overview.malformed)
    steps = [step] if step else sorted(overview.counts)
    _warn_malformed(malformed)
    if as_json:
        data: dict[str, object] = {s: overview.by_status(s) for s in steps}
        if malformed:
            data["_malformed"] = malformed
        typer.echo(json.dumps(data, indent=2))
        return
    if not steps or overview.total(step=step) == 0:
        console.print(f"no tokens{f' for step {step!r}' if step else ''} in {opened.url}")
        return
    table = Table(title=f"tokens in {opened.url}", title_justify="left")
    table.add_column("step")
    for st in TokenStatus:
        table.add_column(st.value, justify="right", style=STATUS_STYLE[st.value])
    table.add_column("total", justify="right")
    for name in steps:
        counts = overview.by_status(name)
        table.add_row(
            name, *(str(counts[st.value]) for st in TokenStatus), str(sum(counts.values()))
        )
    console.print(table)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
    )
    for name in steps:
        counts = overview.by_status(name)
        total = sum(counts.values())
        finished = counts["done"] + counts["error"]
        progress.add_task(
            name, total=total, completed=finished,
            detail=f"{counts['done']} done, {counts['error']} error of {total}",
        )  # fmt: skip
    console.print(progress.get_renderable())


def _age(epoch: float) -> str:
    return f"{format_duration(time.time() - epoch)} ago" if epoch else ""


def _first_line(token: Token) -> str:
    error = token.last_error
    return error.message.splitlines()[0][:80] if error and error.message else ""


@tokens_app.command("list")
def list_tokens(
    ctx: typer.Context,
    status_: Annotated[
        str | None, typer.Option("--status", help="todo, locked, running, done, error, ...")
    ] = None,
    step: StepOption = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Show at most this many (0: all).")
    ] = 200,
    pool: PoolOption = None,
    as_json: JsonOption = False,
) -> None:
    """Tokens with their status, host, attempts, last heartbeat and first error line.
    Documents in the pool that are not valid tokens are skipped and listed on stderr."""
    wanted = _status(status_)
    with _open(ctx, pool) as opened:
        tokens = []
        for token in opened.tokens(wanted, step):
            tokens.append(token)
            if limit and len(tokens) >= limit:
                break
        _warn_malformed(_malformed(opened, opened.overview().malformed))
    if as_json:
        typer.echo(json.dumps([t.to_doc() for t in tokens], indent=2))
        return
    table = Table(title=f"{len(tokens)} token(s)", title_justify="left")
    for column in ("id", "step", "status", "host", "tries", "heartbeat", "error"):
        table.add_column(column, overflow="fold")
    for t in tokens:
        table.add_row(
            t.id, t.step, f"[{STATUS_STYLE[t.status.value]}]{t.status.value}[/]", t.hostname,
            str(len(t.attempts)), _age(t.heartbeat) if t.status.picas == "locked" else "",
            _first_line(t),
        )  # fmt: skip
    console.print(table)
    if limit and len(tokens) >= limit:
        console.print(f"(first {limit}; use --limit 0 for all)")


@tokens_app.command("show")
def show(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id.")],
    pool: PoolOption = None,
    as_json: JsonOption = False,
    tail: Annotated[
        int, typer.Option("--tail", min=0, help="Log lines to show per error (0: none).")
    ] = 20,
) -> None:
    """One token: its fields, every attempt, errors with the log tail, attachments. A document
    that is not a valid token is printed as it is (JSON), with why on stderr."""
    with _open(ctx, pool) as opened:
        try:
            token = opened.get(token_id)
        except MalformedToken as err:
            err_console.print(f"[yellow]warning:[/] {err}", markup=True, highlight=False)
            typer.echo(json.dumps(opened.document(token_id), indent=2))
            return
        names = opened.attachment_names(token_id)
    if as_json:
        typer.echo(json.dumps(token.to_doc(), indent=2))
        return
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    rows = {
        "id": token.id, "step": token.step, "status": token.status.value,
        "input": json.dumps(token.input), "output": json.dumps(token.output),
        "exit code": str(token.exit_code), "host": token.hostname,
        "scrub count": str(token.scrub_count),
        "tries used": f"{token.attempts_since_reset('error')} failed (of the step's "
        f"max_attempts), {token.attempts_since_reset('lost')} lost (of recover's --max-scrubs) "
        "since the last reset; released attempts cost no try",
        "priority": str(token.priority),
        "heartbeat": _age(token.heartbeat), "attachments": ", ".join(names),
    }  # fmt: skip
    extra = {k: json.dumps(v) for k, v in (token.model_extra or {}).items()}
    for key, value in {**rows, **extra}.items():
        fields.add_row(key, value)
    console.print(fields)
    if token.attempts:
        table = Table(title="attempts", title_justify="left")
        for column in ("#", "pilot", "host", "job", "started", "took", "outcome", "exit"):
            table.add_column(column)
        for i, a in enumerate(token.attempts, 1):
            took = format_duration(a.ended - a.started) if a.ended else "running"
            table.add_row(
                str(i), a.pilot, a.host, a.job_id or "", _age(a.started), took,
                (a.outcome or "") + (" (before reset)" if i <= token.reset_index else ""),
                "" if a.exit_code is None else str(a.exit_code),
            )  # fmt: skip
        console.print(table)
    for error in token.error[-3:]:
        console.print(f"[bold red]error[/] {_age(error.time)}: {error.message}")
        lines = error.log_tail.splitlines()[-tail:]
        if lines:
            console.print("\n".join(f"  | {line}" for line in lines), highlight=False, markup=False)


@tokens_app.command("reset")
def reset(
    ctx: typer.Context,
    status_: Annotated[
        list[str] | None,
        typer.Option("--status", help="Statuses to reset (repeatable). Default: error."),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="Only tokens last changed before this long ago (e.g. 2h)."
        ),
    ] = None,
    token_ids: Annotated[
        list[str] | None, typer.Option("--id", help="Reset these ids (repeatable).")
    ] = None,
    step: StepOption = None,
    cascade: Annotated[
        bool,
        typer.Option(
            "--cascade",
            help="Also reset the pipeline tokens that already took these tokens' outputs "
            "(and theirs): they wait for them again. Without it such a reset is refused.",
        ),
    ] = False,
    pool: PoolOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Put tokens back to todo so pilots process them again (errors and attempts are kept
    as history). A pipeline token with parents goes back to waiting and starts again as soon
    as its parents allow; resetting failed parents unblocks their blocked children.

    Examples:

        gridlrt tokens reset --status error --step average

        gridlrt tokens reset --id cal-target.cal_prep.L123_SB004 --cascade --dry-run
    """
    statuses = [s for s in (_status(x) for x in status_ or []) if s is not None]
    age = duration(older_than, "--older-than", zero=True, example="2h") if older_than else None
    with _open(ctx, pool) as opened:
        ids = opened.reset(
            statuses=statuses or None,
            older_than=age,
            ids=token_ids,
            step=step,
            dry_run=dry_run,
            cascade=cascade,
        )
    verb = "would reset" if dry_run else "reset"
    console.print(f"{verb} {len(ids)} token(s)" + (": " + ", ".join(ids[:20]) if ids else ""))


@tokens_app.command("recover")
def recover(
    ctx: typer.Context,
    stale_after: Annotated[
        str, typer.Option("--stale-after", help="Silence after which a pilot counts as lost.")
    ] = "30m",
    max_scrubs: Annotated[
        int, typer.Option("--max-scrubs", help="After this many losses a token goes to error.")
    ] = 3,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Recover even with a --stale-after shorter than 3x the heartbeat interval "
            "the pilots recorded in their tokens (live pilots may lose their tokens).",
        ),
    ] = False,
    pool: PoolOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Give back tokens held by pilots that stopped sending heartbeats (killed, node lost):
    they return to todo, or to error once lost --max-scrubs times. A --stale-after shorter
    than 3x the pilots' heartbeat interval (recorded in their tokens) is refused unless
    --force. Documents that are not valid tokens are skipped and listed on stderr."""
    seconds = parse_duration(stale_after)
    with _open(ctx, pool) as opened:
        ids = opened.recover(seconds, max_scrubs=max_scrubs, dry_run=dry_run, force=force)
        malformed = _malformed(opened)
    _warn_malformed(malformed)
    if as_json:
        typer.echo(
            json.dumps({"recovered": ids, "dry_run": dry_run, "malformed": malformed}, indent=2)
        )
        return
    verb = "would recover" if dry_run else "recovered"
    console.print(
        f"{verb} {len(ids)} token(s) silent for more than {format_duration(seconds)}"
        + (": " + ", ".join(ids[:20]) if ids else "")
    )


@tokens_app.command("archive")
def archive(
    ctx: typer.Context,
    to: Annotated[
        Path, typer.Option("--to", help="Directory for the archive.", show_default=False)
    ],
    status_: Annotated[str, typer.Option("--status", help="Which tokens to archive.")] = "done",
    step: StepOption = None,
    pool: PoolOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Write tokens (JSON lines) and their attachments under --to, then delete them from the
    pool. Nothing is deleted that was not written first."""
    wanted = _status(status_) or TokenStatus.DONE
    output_directory(to, "--to", create=not dry_run)
    with _open(ctx, pool) as opened:
        if dry_run:
            n = sum(1 for _ in opened.tokens(wanted, step))
            console.print(f"would archive {n} {wanted.value} token(s) to {to}")
            return
        try:
            result = opened.archive(to, wanted, step)
        except OSError as exc:  # disk full, permissions: nothing was deleted from the pool
            if exc.errno is None:  # not a file system error (e.g. the network)
                raise
            raise InputError(
                f"--to {to}: cannot write the archive ({exc.strerror}); nothing was removed "
                "from the pool"
            ) from None
    if result.file is None:
        console.print(f"no {wanted.value} tokens to archive")
    else:
        console.print(
            f"archived {result.tokens} token(s) and {result.attachments} attachment(s) "
            f"to {result.file}; removed them from the pool"
        )
    if result.kept:
        console.print(
            f"kept {len(result.kept)} token(s) whose pipeline children still wait for them "
            f"(e.g. {result.kept[0]}); archive them once those have started"
        )
