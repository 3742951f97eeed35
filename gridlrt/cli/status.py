"""``gridlrt status``: a run at a glance, once or live (``--watch``).

Thin: :mod:`gridlrt.monitor` takes the snapshots; this module draws them with rich — per step
a progress bar, counts, throughput and ETA; the latest errors; the pilots at work — and
redraws them in place on a terminal, or prints one plain frame per interval when the output
goes to a file or a pipe.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from gridlrt.cli.common import PoolOption, console, err_console, settings
from gridlrt.cli.pipeline import settle, stages_table
from gridlrt.cli.tokens import STATUS_STYLE
from gridlrt.durations import format_duration, parse_duration
from gridlrt.errors import InputError, PoolError
from gridlrt.monitor import (
    DEFAULT_MAX_FAILING,
    DEFAULT_STALE_AFTER,
    DEFAULT_WINDOW,
    Monitor,
    PilotRow,
    Snapshot,
    StepSnapshot,
)
from gridlrt.pipelines.service import PipelineStatus, pipeline_status
from gridlrt.tokens import TokenPool, TokenStatus, open_pool


def status_command(
    ctx: typer.Context,
    pool: PoolOption = None,
    step: Annotated[
        str | None, typer.Option("--step", help="Only this step (default: every step).")
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Redraw every --interval until Ctrl-C (a plain frame per interval when the "
            "output is not a terminal).",
        ),
    ] = False,
    interval: Annotated[
        str, typer.Option("--interval", help="Time between frames with --watch (e.g. 2s, 1m).")
    ] = "2s",
    until_done: Annotated[
        bool,
        typer.Option(
            "--until-done",
            help="With --watch: stop (exit 0) once no token of the step(s) is todo or active.",
        ),
    ] = False,
    window: Annotated[
        str,
        typer.Option("--window", help="Throughput is measured over this recent time span."),
    ] = f"{DEFAULT_WINDOW / 60:g}m",
    stale_after: Annotated[
        str,
        typer.Option(
            "--stale-after",
            help="A pilot silent this long is flagged as probably lost (3x the pilots' "
            "heartbeat interval; 90s for the default of 30s).",
        ),
    ] = f"{DEFAULT_STALE_AFTER:g}s",
    max_pilots: Annotated[
        int, typer.Option("--pilots", help="Show at most this many pilot rows (0: all).")
    ] = 20,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the snapshot as JSON (with --watch: one JSON line per frame)."
        ),
    ] = False,
) -> None:
    """Progress of a run: per step a progress bar, counts per status, throughput (tokens done
    per minute over the last --window) and ETA; the latest error line of failing tokens; and
    every pilot at work — host, job id, token, status, heartbeat age, node load and memory.
    Pilots silent for longer than --stale-after are flagged: `gridlrt tokens recover` gives
    their tokens back. Pipeline tokens waiting for their parents count as remaining; a
    promotion a lost pilot left undone is completed here.

    Examples:

        gridlrt status                                   # every step, once

        gridlrt status --step average --watch            # live until Ctrl-C

        gridlrt status --watch --interval 30s --until-done >> run.log   # a log of the run

        gridlrt status --json | jq '.steps[].eta_seconds'
    """
    every = _positive("--interval", interval)
    span = _positive("--window", window)
    silence = _positive("--stale-after", stale_after)
    if max_pilots < 0:
        raise InputError("--pilots must be 0 (all) or more")
    opened = open_pool(settings(ctx, pool))
    if watch:
        opened.follow()  # frames after the first read only what changed (CouchDB: _changes)
    monitor = Monitor(
        opened, step=step, window=span, stale_after=silence, max_failing=DEFAULT_MAX_FAILING
    )
    with opened:
        first = _first(monitor, opened, step)
        if not watch:
            if as_json:
                typer.echo(_json(first, opened, step, indent=2))
            else:
                console.print(render(first, max_pilots, _runs(opened, step)))
            return
        if as_json:
            _watch_json(monitor, first, every, until_done)
        elif console.is_terminal:
            _watch_live(monitor, first, every, until_done, max_pilots)
        else:
            _watch_plain(monitor, first, every, until_done, max_pilots)


def _positive(option: str, text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise InputError(f"{option} {text!r}: must be longer than 0 s")
    return seconds


def _first(monitor: Monitor, pool: TokenPool, step: str | None) -> Snapshot:
    """The first snapshot; an unknown --step is a user error (most often a typo)."""
    settle(pool)
    snap = monitor.snapshot()
    if step is not None and not snap.steps:
        known = sorted(pool.overview().counts)
        raise InputError(
            f"no tokens of step {step!r} in {pool.url}"
            + (f" (steps there: {', '.join(known)})" if known else " (the pool is empty)")
        )
    return snap


def _next(monitor: Monitor, last: Snapshot, interval: float, started: float) -> Snapshot:
    """Sleep until the next frame is due, then take it (the last one if the pool is down)."""
    time.sleep(max(0.0, started + interval - time.monotonic()))
    try:
        monitor.pool.settle_pending()
        return monitor.snapshot()
    except PoolError as err:
        err_console.print(f"[yellow]warning:[/] {err} (showing the last frame; still trying)")
        return last


def _done(snap: Snapshot, until_done: bool) -> bool:
    return until_done and snap.finished


def _watch_plain(
    monitor: Monitor, snap: Snapshot, interval: float, until_done: bool, max_pilots: int
) -> None:
    try:
        while True:
            started = time.monotonic()
            console.print(render(snap, max_pilots, _runs(monitor.pool, monitor.step)))
            console.print()
            console.file.flush()
            if _done(snap, until_done):
                return
            snap = _next(monitor, snap, interval, started)
    except KeyboardInterrupt:
        console.print("stopped watching")


def _watch_json(monitor: Monitor, snap: Snapshot, interval: float, until_done: bool) -> None:
    try:
        while True:
            started = time.monotonic()
            typer.echo(_json(snap, monitor.pool, monitor.step))
            if _done(snap, until_done):
                return
            snap = _next(monitor, snap, interval, started)
    except KeyboardInterrupt:
        return


def _watch_live(
    monitor: Monitor, snap: Snapshot, interval: float, until_done: bool, max_pilots: int
) -> None:
    def frame() -> RenderableType:
        return render(snap, max_pilots, _runs(monitor.pool, monitor.step))

    with Live(frame(), console=console, auto_refresh=False) as live:
        try:
            while not _done(snap, until_done):
                snap = _next(monitor, snap, interval, time.monotonic())
                live.update(frame(), refresh=True)
        except KeyboardInterrupt:
            live.update(frame(), refresh=True)  # the last frame stays


# --- rendering ---------------------------------------------------------------------------------


def _runs(pool: TokenPool, step: str | None) -> list[PipelineStatus]:
    """The pipeline runs in the pool (none with --step: that view is one step's)."""
    if step is not None:
        return []
    try:
        return pipeline_status(pool)
    except PoolError as err:
        err_console.print(f"[yellow]warning:[/] pipeline stages not shown: {err}")
        return []


def _json(snap: Snapshot, pool: TokenPool, step: str | None, indent: int | None = None) -> str:
    """The snapshot as JSON, with the pipeline runs (stages in DAG order) under "pipelines"."""
    data = snap.model_dump(mode="json")
    data["pipelines"] = [r.model_dump(mode="json") for r in _runs(pool, step)]
    return json.dumps(data, indent=indent)


def render(
    snap: Snapshot, max_pilots: int = 20, runs: Sequence[PipelineStatus] = ()
) -> RenderableType:
    """One frame: header, pipeline stages, steps, failing tokens, pilots, advice."""
    clock = datetime.fromtimestamp(snap.taken).strftime("%Y-%m-%d %H:%M:%S")
    parts: list[RenderableType] = [
        Rule(f"gridlrt status · {snap.pool} · {clock}", align="left", style="dim")
    ]
    if not snap.steps:
        parts.append(Text("no tokens in this pool"))
        if snap.malformed:
            parts.append(malformed_text(snap.malformed_docs, snap.malformed))
        return Group(*parts)
    parts.extend(stages_table(run) for run in runs)
    parts.append(_steps_table(snap))
    failing = [row for s in snap.steps for row in s.failing]
    if failing:
        parts.append(_failing_table(snap))
    pilots = [row for s in snap.steps for row in s.pilots]
    if pilots:
        parts.append(_pilots_table(pilots, snap, max_pilots))
    if snap.hint:
        parts.append(Text.from_markup(f"[bold yellow]![/] {snap.hint}"))
    if snap.malformed:
        parts.append(malformed_text(snap.malformed_docs, snap.malformed))
    if snap.finished:
        parts.append(Text("nothing left to do: no token is todo or active", "green"))
    return Group(*parts)


def malformed_text(reasons: dict[str, str], count: int | None = None, shown: int = 5) -> Text:
    """One line per skipped document (the first ``shown``): they are counted nowhere else."""
    total = len(reasons) if count is None else count
    lines = [
        f"skipped {total} document(s) that are not valid tokens "
        "(fix or delete them; `gridlrt tokens show ID` prints one):"
    ]
    lines += [f"  {doc_id}: {why}" for doc_id, why in list(reasons.items())[:shown]]
    if total > shown:
        lines.append(f"  ... and {total - shown} more")
    return Text("\n".join(lines), "yellow")


def _counts_text(step: StepSnapshot) -> Text:
    text = Text()
    for status in TokenStatus:
        n = step.counts.get(status.value, 0)
        if n:
            if text:
                text.append("  ")
            text.append(f"{n} {status.value}", STATUS_STYLE[status.value])
    return text


def _rate_text(step: StepSnapshot, window: float) -> str:
    rate = step.throughput
    if rate.done_in_window == 0:
        return f"0/min (none in {format_duration(window)})"
    return f"{rate.per_minute:.3g}/min"


def _eta_text(step: StepSnapshot) -> str:
    if step.remaining == 0:
        return "-"
    return "unknown" if step.eta_seconds is None else format_duration(step.eta_seconds)


def _steps_table(snap: Snapshot) -> Table:
    table = Table(title_justify="left", expand=False)
    table.add_column("step", style="bold")
    table.add_column("progress", min_width=12)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("tokens")
    table.add_column("throughput", justify="right", no_wrap=True)
    table.add_column("ETA", justify="right", no_wrap=True)
    for step in snap.steps:
        table.add_row(
            step.step,
            ProgressBar(total=max(step.total, 1), completed=step.done, width=24),
            f"{step.done}/{step.total} ({100 * step.done_fraction:.0f}%)",
            _counts_text(step),
            _rate_text(step, snap.window),
            _eta_text(step),
        )
    return table


def _failing_table(snap: Snapshot) -> Table:
    total = sum(s.failing_total for s in snap.steps)
    shown = sum(len(s.failing) for s in snap.steps)
    more = (
        f"; the latest {shown} shown, all: gridlrt tokens list --status error"
        if (shown < total)
        else ""
    )
    table = Table(title=f"failing: {total} token(s) in error{more}", title_justify="left")
    table.add_column("token", no_wrap=True)
    table.add_column("when", justify="right", no_wrap=True)
    table.add_column("tries", justify="right")
    table.add_column("error (first line)", style="red", overflow="fold")
    for step in snap.steps:
        for row in step.failing:
            table.add_row(
                row.token_id,
                _ago(snap.taken, row.time),
                str(row.attempts),
                Text(row.message),
            )
    return table


def _pilots_table(rows: list[PilotRow], snap: Snapshot, max_pilots: int) -> Table:
    rows = sorted(rows, key=lambda r: (not r.stale, r.host, r.job_id or "", r.token_id))
    shown = rows[:max_pilots] if max_pilots else rows
    title = f"pilots at work: {len(rows)}"
    if snap.stale_pilots:
        title += f" ({snap.stale_pilots} silent > {format_duration(snap.stale_after)})"
    if len(shown) < len(rows):
        title += f"; {len(shown)} shown (--pilots 0 for all)"
    table = Table(title=title, title_justify="left")
    for column in ("host", "job", "token", "status", "heartbeat", "load", "mem"):
        table.add_column(column, no_wrap=column in ("heartbeat", "load", "mem"))
    for row in shown:
        age = f"{format_duration(row.heartbeat_age)} ago"
        table.add_row(
            row.host or "?",
            row.job_id or "",
            row.token_id + (f" (try {row.attempt})" if row.attempt > 1 else ""),
            Text(row.status, STATUS_STYLE.get(row.status, "")),
            Text(f"{age}  probably lost", "bold red") if row.stale else Text(age),
            "" if row.load is None else f"{row.load:.2f}",
            _mem_text(row),
        )
    return table


def _mem_text(row: PilotRow) -> str:
    if row.mem_used_pct is None:
        return ""
    total = f" of {row.mem_total_mb / 1024:.1f}G" if row.mem_total_mb else ""
    return f"{row.mem_used_pct:.0f}%{total}"


def _ago(now: float, then: float) -> str:
    return f"{format_duration(now - then)} ago" if then else ""
