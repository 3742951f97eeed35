"""``gridlrt stage ...``: from an LTA ``srm.txt`` to files online on dCache.

Thin: parsing, planning, the stager clients, records and locality live in
:mod:`gridlrt.staging`, and what a command does with them (refreshing the records, keeping
them up to date, choosing the client for a request) in :mod:`gridlrt.staging.service`; this
module turns options into calls and answers into tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from gridlrt.cli.common import JsonOption, SubbandsOption, console, duration, err_console, settings
from gridlrt.errors import InputError
from gridlrt.staging import open_stager
from gridlrt.staging.download import DownloadPlan
from gridlrt.staging.records import RequestStore
from gridlrt.staging.service import (
    Selection,
    abort_request,
    dry_run_target,
    latest_record,
    locality_targets,
    plan_submission,
    refresh,
    request_status,
    select_surls,
    stager_for,
    submit_requests,
    wait_for,
)
from gridlrt.staging.stager import (
    MAX_FILES_IN_FLIGHT,
    MAX_FILES_PER_REQUEST,
    Plan,
    Stager,
    StagingReport,
    StagingRequest,
    StagingState,
)
from gridlrt.staging.surl import SURL, URL_FORMS, UrlForm, group_by_observation

stage_app = typer.Typer(
    help="Stage LTA data: read an srm.txt from the LTA catalogue, ask the LTA stager to bring "
    "the files from tape to disk, watch the requests, and check what is online.\n\n"
    "Typical session:\n\n"
    "  gridlrt stage list srm.txt\n\n"
    "  gridlrt stage submit srm.txt --subbands 0..243 --dry-run\n\n"
    "  gridlrt stage submit srm.txt --subbands 0..243 --wait\n\n"
    "  gridlrt stage status\n\n"
    "  gridlrt stage check srm.txt\n\n"
    "  gridlrt stage download 40001 --to data/   (no grid certificate needed)\n\n"
    "Credentials: ~/.stagingrc (chmod 600) with api_token=... for StageIT, the LTA's current "
    "stager (or GRIDLRT_LTA_TOKEN). The legacy v1 XML-RPC stager (user=/password=) is used only "
    "when chosen: --protocol v1 or GRIDLRT_LTA_PROTOCOL=v1.",
    no_args_is_help=True,
)

STATE_STYLE = {
    StagingState.NEW: "white",
    StagingState.SCHEDULED: "white",
    StagingState.IN_PROGRESS: "cyan",
    StagingState.ON_HOLD: "yellow",
    StagingState.SUCCESS: "green",
    StagingState.PARTIAL_SUCCESS: "yellow",
    StagingState.FAILED: "bold red",
    StagingState.ABORTED: "red",
}
LOCALITY_STYLE = {
    "ONLINE": "green",
    "ONLINE_AND_NEARLINE": "green",
    "NEARLINE": "yellow",
    "UNKNOWN": "bold yellow",
    "MISSING": "bold red",
}

FileArgument = Annotated[
    Path,
    typer.Argument(
        metavar="FILE", help="SRM list: one srm:// URL per line (the LTA catalogue's srm.txt)."
    ),
]
ProtocolOption = Annotated[
    str | None,
    typer.Option(
        "--protocol",
        help="stageit (the current LTA stager, API token) or v1 (legacy XML-RPC, user and "
        "password). Default: the setting lta_protocol / $GRIDLRT_LTA_PROTOCOL, else stageit.",
        show_default=False,
    ),
]
StagerUrlOption = Annotated[
    str | None,
    typer.Option(
        "--stager-url",
        help="Stager service URL. Default: $GRIDLRT_STAGEIT_URL or "
        "https://sdc.astron.nl/stageit/api/staging/ (StageIT), $GRIDLRT_STAGER_URL or "
        "https://webportal.astron.nl/service-public/xmlrpc (v1).",
        show_default=False,
    ),
]
RequestIdArgument = Annotated[int, typer.Argument(metavar="ID", help="Staging request id.")]


def _styled(state: StagingState) -> str:
    return f"[{STATE_STYLE[state]}]{state.label}[/]"


def _warn_duplicates(selection: Selection) -> Selection:
    """Say on stderr which duplicate lines of the list were dropped."""
    for dup in selection.duplicates:
        err_console.print(
            f"[yellow]warning:[/] {selection.source}:{dup.line}: duplicate of line "
            f"{dup.first_line}, dropped",
            highlight=False,
        )
    return selection


def _read(file: Path, subbands: str | None) -> list[SURL]:
    """The SURLs of ``file`` (strict), restricted to ``subbands``; duplicates are reported."""
    return _warn_duplicates(select_surls(file, subbands)).surls


def _forms(forms: Sequence[str] | None) -> list[UrlForm]:
    chosen: list[UrlForm] = []
    for form in forms or ["srm"]:
        if form == "all":
            return list(URL_FORMS)
        match = [f for f in URL_FORMS if f == form]
        if not match:
            raise InputError(f"--form {form!r}: choose {', '.join(URL_FORMS)} or all")
        chosen.append(match[0])
    return chosen


def _int_or_dash(value: int | None, width: int = 0) -> str:
    return "-" if value is None else f"{value:0{width}d}"


def _surl_json(s: SURL) -> dict[str, object]:
    return {
        "name": s.name, "site": s.site.key, "site_name": s.site.name, "project": s.project,
        "obsid": s.obsid, "sap": s.sap, "subband": s.subband, "suffix": s.suffix,
        "urls": s.forms(),
    }  # fmt: skip


# --- list ------------------------------------------------------------------------------------


@stage_app.command("list")
def list_command(
    file: FileArgument,
    subbands: SubbandsOption = None,
    form: Annotated[
        list[str] | None,
        typer.Option(
            "--form",
            help="URL forms to show (repeatable): srm, gfal (srm://…/srm/managerv2?SFN=…), "
            "gsiftp, https (LTA download link), webdav, or all. Default: srm.",
            show_default=False,
        ),
    ] = None,
    print_form: Annotated[
        str | None,
        typer.Option(
            "--print",
            metavar="FORM",
            help="Only print the URLs in this form, one per line (for scripts and gfal-copy).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """What an SRM list holds: observation, SAP, subband and site of every file, and its URL
    in other forms (GridFTP, HTTPS download, WebDAV). Mixed-site lists are grouped by site.

    Examples:

      gridlrt stage list srm.txt

      gridlrt stage list srm.txt --subbands 0..243..2 --form gsiftp --form webdav

      gridlrt stage list srm.txt --print gsiftp > gsiftp.txt
    """
    surls = _read(file, subbands)
    groups = group_by_observation(surls)
    ordered = [s for g in groups for s in g.surls]
    if print_form is not None:
        (chosen,) = _forms([print_form])
        for surl in ordered:
            url = surl.form(chosen)
            if url is None:
                raise InputError(f"{surl.url}: {surl.site.name} has no {chosen} form")
            typer.echo(url)
        return
    if as_json:
        typer.echo(json.dumps([_surl_json(s) for s in ordered], indent=2, ensure_ascii=False))
        return
    forms = _forms(form)
    table = Table(title=f"{len(surls)} file(s) in {file}", title_justify="left")
    for column in ("obs", "SAP", "SB", "site"):
        table.add_column(column, justify="right" if column in ("SAP", "SB") else "left")
    for chosen in forms:
        table.add_column(chosen, overflow="fold")
    for s in ordered:
        table.add_row(
            f"L{s.obsid}" if s.obsid is not None else "-",
            _int_or_dash(s.sap, 3),
            _int_or_dash(s.subband, 3),
            s.site.name,
            *(s.form(f) or "-" for f in forms),
        )
    console.print(table)
    for group in groups:
        obs = f"L{group.obsid}" if group.obsid is not None else "(no observation id)"
        sbs = group.subband_ranges
        console.print(
            f"{obs} at {group.site.name}: {len(group.surls)} file(s)"
            + (f", subbands {sbs}" if sbs else ""),
            highlight=False,
        )


# --- submit ------------------------------------------------------------------------------------


def _plan_table(plan: Plan) -> Table:
    table = Table(title_justify="left")
    for column in ("#", "site", "files", "observations", "subbands", "first file", "last file"):
        table.add_column(column, overflow="fold", justify="right" if column == "files" else "left")
    for req in plan.requests:
        table.add_row(
            str(req.number), req.site_name, str(len(req.surls)), req.observations,
            req.subbands or "-", req.surls[0].url, req.surls[-1].url,
        )  # fmt: skip
    return table


@stage_app.command("submit")
def submit_command(
    ctx: typer.Context,
    file: FileArgument,
    subbands: SubbandsOption = None,
    max_files: Annotated[
        int,
        typer.Option(
            "--max-files",
            min=1,
            help="At most this many files per request (the LTA asks for ≤ 1,000).",
        ),
    ] = MAX_FILES_PER_REQUEST,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait until every request finished, with a progress bar."),
    ] = False,
    poll: Annotated[
        str,
        typer.Option("--poll", help="While waiting, ask the stager this often (e.g. 30s, 5m)."),
    ] = "30s",
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout", help="Stop waiting after this long (e.g. 12h).", show_default=False
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show exactly which requests would be sent; send nothing."),
    ] = False,
    protocol: ProtocolOption = None,
    stager_url: StagerUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Ask the LTA to stage the files of FILE (from tape to disk). The list is split per site
    into requests of at most --max-files files; every request id is recorded, so
    `gridlrt stage status` shows them later.

    Examples:

      gridlrt stage submit srm.txt --dry-run

      gridlrt stage submit srm.txt --subbands 0..243..2 --wait --poll 1m
    """
    poll_seconds = duration(poll, "--poll", example="30s")
    timeout_seconds = duration(timeout, "--timeout", example="12h") if timeout else None
    surls = _read(file, subbands)
    store = RequestStore()
    plan = plan_submission(surls, max_files, store=store)
    if dry_run:
        target = dry_run_target(settings(ctx), protocol, stager_url)
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "protocol": target.protocol,
                        "service": target.service,
                        "requests": [
                            {"site": r.site, "surls": [s.url for s in r.surls]}
                            for r in plan.requests
                        ],
                    },
                    indent=2,
                )
            )
            return
        table = _plan_table(plan)
        note = f"; note: {target.problem}" if target.problem else ""
        table.title = (
            f"would send {len(plan.requests)} request(s) for {plan.files} file(s) to "
            f"{target.service} ({target.protocol}{note})"
        )
        console.print(table, highlight=False)
        _warn_in_flight(plan)
        return
    _warn_in_flight(plan)
    with open_stager(settings(ctx), protocol, stager_url) as stager:
        sent = submit_requests(stager, surls, max_files=max_files, store=store)
        if as_json and not wait:
            typer.echo(json.dumps([r.model_dump(mode="json") for r in sent], indent=2))
            return
        for record in sent:
            console.print(
                f"submitted staging request {record.id}: {record.files_total} file(s) at "
                f"{record.site} ({stager.protocol}, {stager.service})",
                highlight=False,
            )
        if not wait:
            console.print("follow with: gridlrt stage status")
            return
        reports = _wait(stager, sent, poll_seconds, timeout_seconds, store)
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in reports], indent=2))
    else:
        console.print(_reports_table(reports, sent))
    _finish(reports)


def _warn_in_flight(plan: Plan) -> None:
    if plan.over_in_flight_limit:
        err_console.print(
            f"[yellow]warning:[/] {plan.in_flight_before + plan.files:,} file(s) would be in "
            f"flight (recorded unfinished requests included); the LTA stages about "
            f"{MAX_FILES_IN_FLIGHT:,} per user at once and queues the rest",
            highlight=False,
        )


def _wait(
    stager: Stager,
    sent: Sequence[StagingRequest],
    poll: float,
    timeout: float | None,
    store: RequestStore,
) -> list[StagingReport]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files  {task.fields[state]}"),
        console=console,
    )
    tasks = {
        r.id: progress.add_task(f"request {r.id} ({r.site})", total=r.files_total, state="new")
        for r in sent
    }
    by_id = {r.id: r for r in sent}

    def show(reports: list[StagingReport]) -> None:
        for report in reports:
            progress.update(
                tasks[report.request_id],
                completed=report.progress.done or 0,
                total=report.progress.total or by_id[report.request_id].files_total,
                state=report.state.label
                + (f", {report.progress.failed} failed" if report.progress.failed else ""),
            )

    with progress:
        return wait_for(stager, sent, poll=poll, timeout=timeout, store=store, on_progress=show)


def _reports_table(reports: Sequence[StagingReport], records: Sequence[StagingRequest]) -> Table:
    sites = {r.id: r.site for r in records}
    table = Table(title_justify="left")
    for column in ("id", "site", "state", "done", "failed", "total"):
        table.add_column(
            column, justify="right" if column in ("done", "failed", "total") else "left"
        )
    for r in reports:
        table.add_row(
            str(r.request_id), sites.get(r.request_id, "?"), _styled(r.state),
            _int_or_dash(r.progress.done), str(r.progress.failed), _int_or_dash(r.progress.total),
        )  # fmt: skip
    return table


def _finish(reports: Sequence[StagingReport]) -> None:
    """Print failed SURLs; exit 1 unless every request succeeded."""
    failed = [surl for r in reports for surl in r.failed]
    if failed:
        err_console.print(f"{len(failed)} file(s) did not stage:", highlight=False)
        for surl in failed:
            err_console.print(f"  {surl}", highlight=False, markup=False)
    bad = [r for r in reports if r.state is not StagingState.SUCCESS]
    if bad:
        states = ", ".join(f"{r.request_id} {r.state.label}" for r in bad)
        err_console.print(f"[bold red]not all staged:[/] {states}", highlight=False)
        raise typer.Exit(1)


# --- status -------------------------------------------------------------------------------------


@stage_app.command("status")
def status_command(
    ctx: typer.Context,
    request_id: Annotated[
        int | None,
        typer.Argument(
            metavar="[ID]", help="One request. Default: every recorded request.", show_default=False
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Show the recorded states; do not ask the stager."),
    ] = False,
    protocol: ProtocolOption = None,
    stager_url: StagerUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """State and progress (files done/total) of staging requests. Without ID: every request
    this user submitted with gridlrt (unfinished ones are asked afresh). With ID: that request,
    including the SURLs that failed.

    Examples:

      gridlrt stage status

      gridlrt stage status 40001 --json
    """
    store = RequestStore()
    if request_id is not None:
        _status_one(ctx, store, request_id, protocol, stager_url, as_json)
        return
    records = store.all()
    if not offline:
        refreshed = refresh(lambda: settings(ctx), store, records)
        for problem in refreshed.problems:
            err_console.print(
                f"[yellow]warning:[/] showing recorded states for {problem.service}: "
                f"{problem.message}",
                highlight=False,
            )
        records = refreshed.records
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    if not records:
        console.print(f"no staging requests recorded in {store.path}", highlight=False)
        return
    table = Table(title=f"{len(records)} staging request(s) in {store.path}", title_justify="left")
    for column in ("id", "protocol", "site", "submitted (UTC)", "state", "done", "failed", "total"):
        table.add_column(
            column, justify="right" if column in ("done", "failed", "total") else "left"
        )
    for r in records:
        table.add_row(
            str(r.id), r.protocol, r.site, r.submitted.strftime("%Y-%m-%d %H:%M"),
            _styled(r.state), _int_or_dash(r.files_done), str(len(r.failed)), str(r.files_total),
        )  # fmt: skip
    console.print(table, highlight=False)


def _status_one(
    ctx: typer.Context,
    store: RequestStore,
    request_id: int,
    protocol: str | None,
    stager_url: str | None,
    as_json: bool,
) -> None:
    status = request_status(
        lambda: settings(ctx), store, request_id, protocol=protocol, stager_url=stager_url
    )
    report, service, record = status.report, status.service, status.record
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    done, total = report.progress.done, report.progress.total
    rows: dict[str, str] = {
        "request": str(request_id),
        "service": f"{service} ({report.protocol})",
        "state": _styled(report.state),
        "files": f"{_int_or_dash(done)}/{_int_or_dash(total)} online"
        + (f", {report.progress.failed} failed" if report.progress.failed else ""),
    }
    if record is not None:
        rows["site"] = record.site
        rows["submitted"] = record.submitted.strftime("%Y-%m-%d %H:%M:%S %Z")
    for key, value in rows.items():
        grid.add_row(key, value)
    console.print(grid, highlight=False)
    if report.failed:
        console.print(f"{len(report.failed)} file(s) did not stage:", highlight=False)
        for surl in report.failed:
            console.print(f"  {surl}", highlight=False, markup=False)


# --- abort --------------------------------------------------------------------------------------


@stage_app.command("abort")
def abort_command(
    ctx: typer.Context,
    request_id: RequestIdArgument,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be aborted; abort nothing.")
    ] = False,
    protocol: ProtocolOption = None,
    stager_url: StagerUrlOption = None,
) -> None:
    """Abort a staging request (or release the files of a finished one).

    Example: gridlrt stage abort 40001
    """
    store = RequestStore()
    aborted = abort_request(
        lambda: settings(ctx),
        store,
        request_id,
        protocol=protocol,
        stager_url=stager_url,
        dry_run=dry_run,
    )
    record = aborted.record
    if aborted.state is None:
        what = f"{record.files_total} file(s) at {record.site}, " if record else ""
        where = record.service if record else "the configured stager"
        console.print(f"would abort staging request {request_id} ({what}{where})", highlight=False)
        return
    console.print(
        f"aborted staging request {request_id}: now {aborted.state.label}", highlight=False
    )


# --- check --------------------------------------------------------------------------------------


@stage_app.command("check")
def check_command(
    file: FileArgument,
    subbands: SubbandsOption = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Files checked at once.", min=1, max=64)
    ] = 8,
    as_json: JsonOption = False,
) -> None:
    """Which files are on disk (ONLINE) and which only on tape (NEARLINE), asked of the
    dCache through gfal2 (the user.status attribute). Needs a grid proxy for srm://.

    Example: gridlrt stage check srm.txt --subbands 0..243
    """
    from gridlrt.staging.locality import Locality, check_locality, summarize_locality

    urls = _warn_duplicates(locality_targets(file, subbands)).urls
    results = check_locality(urls, workers=workers)
    summary = summarize_locality(results)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "files": [r.model_dump(mode="json") for r in results],
                    "summary": summary,
                },
                indent=2,
            )
        )
    else:
        table = Table(title=f"locality of {len(results)} file(s) in {file}", title_justify="left")
        for column in ("file", "locality", "detail"):
            table.add_column(column, overflow="fold")
        for r in results:
            style = LOCALITY_STYLE.get(r.locality.value, "white")
            table.add_row(r.url, f"[{style}]{r.locality.value}[/]", r.detail)
        console.print(table, highlight=False)
        counts = ", ".join(
            f"{summary[loc.value]} {loc.value}" for loc in Locality if summary[loc.value]
        )
        console.print(
            f"summary: {summary['online']} of {summary['total']} file(s) online ({counts})",
            highlight=False,
        )
    if any(r.locality in (Locality.MISSING, Locality.UNKNOWN) for r in results):
        raise typer.Exit(1)


# --- download -----------------------------------------------------------------------------------


def _plan_for(
    ctx: typer.Context, request_id: int, to: Path, protocol: str | None, stager_url: str | None
) -> DownloadPlan:
    from gridlrt.staging.download import plan_download

    record = latest_record(RequestStore(), request_id)
    with stager_for(lambda: settings(ctx), record, protocol, stager_url) as stager:
        return plan_download(stager, request_id, to)


def _macaroons_json(plan: DownloadPlan) -> list[dict[str, str | None]]:
    return [
        {
            "site": m.site,
            "door": door,
            "valid_until": m.valid_until.isoformat() if m.valid_until else None,
        }
        for door, m in sorted(plan.macaroons.items())
    ]


@stage_app.command("download")
def download_command(
    ctx: typer.Context,
    request_id: RequestIdArgument,
    to: Annotated[
        Path,
        typer.Option("--to", metavar="DIR", help="Directory the files are downloaded into."),
    ],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Ask StageIT for the URLs and macaroons and show what would be downloaded "
            "where; download nothing.",
        ),
    ] = False,
    parallel: Annotated[
        int, typer.Option("--parallel", min=1, max=64, help="Files downloaded at once.")
    ] = 4,
    protocol: ProtocolOption = None,
    stager_url: StagerUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download the staged files of a StageIT request over WebDAV with the request's
    macaroons: no grid certificate needed. StageIT gives the WebDAV URLs and one macaroon per
    LTA site; the macaroon is sent as a bearer token to that site's door only (never on a
    command line, in a URL or a log). Every file is verified and renamed into place only
    when complete; files already there with the right size are skipped, so a rerun
    finishes an interrupted download.

    Examples:

      gridlrt stage download 40001 --to /data/L229507 --dry-run

      gridlrt stage download 40001 --to /data/L229507 --parallel 8
    """
    from gridlrt.cli.storage import transfer_progress
    from gridlrt.staging.download import download

    plan = _plan_for(ctx, request_id, to, protocol, stager_url)
    if dry_run:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "request": request_id,
                        "to": str(to),
                        "files": [
                            {"url": f.url, "destination": str(f.destination), "site": f.site}
                            for f in plan.files
                        ],
                        "macaroons": _macaroons_json(plan),
                    },
                    indent=2,
                )
            )
            return
        table = Table(
            title=f"would download {len(plan.files)} file(s) of staging request {request_id} "
            f"into {to}",
            title_justify="left",
        )
        for column in ("file", "site", "from"):
            table.add_column(column, overflow="fold")
        for f in plan.files:
            table.add_row(f.destination.name, f.site, f.url)
        console.print(table, highlight=False)
        _say_macaroons(plan)
        return
    with transfer_progress(f"request {request_id}", enabled=not as_json) as progress:
        done = download(plan, parallel=parallel, progress=progress)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "request": request_id,
                    "downloaded": [r.model_dump(mode="json") for r in done.copied],
                    "already_there": [str(f.destination) for f in done.skipped],
                },
                indent=2,
            )
        )
        return
    size = sum(r.size for r in done.copied)
    seconds = max((r.seconds for r in done.copied), default=0.0)
    how = ", ".join(sorted({r.verified for r in done.copied})) or "-"
    console.print(
        f"downloaded {len(done.copied)} file(s) of staging request {request_id} into {to} "
        f"({size:,} bytes, verified: {how}"
        + (f", {size / seconds / 1e6:.1f} MB/s" if seconds > 0 and size else "")
        + ")"
        + (f"; {len(done.skipped)} already there" if done.skipped else ""),
        highlight=False,
    )


def _say_macaroons(plan: DownloadPlan) -> None:
    for door, m in sorted(plan.macaroons.items()):
        until = m.valid_until
        when = f", valid until {until.isoformat(timespec='minutes')}" if until else ""
        console.print(f"macaroon for {m.site or '?'} ({door}{when})", highlight=False)


@stage_app.command("macaroons")
def macaroons_command(
    ctx: typer.Context,
    request_id: RequestIdArgument,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the macaroons here (created 0600): '<WebDAV door> <macaroon>' lines.",
        ),
    ],
    protocol: ProtocolOption = None,
    stager_url: StagerUrlOption = None,
) -> None:
    """Save the macaroons of a StageIT request to a 0600 file, for downloads elsewhere: a
    pilot given GRIDLRT_MACAROON_FILE=FILE reads the request's WebDAV URLs with them. The
    macaroons are never printed.

    Example: gridlrt stage macaroons 40001 -o ~/.config/gridlrt/L229507.macaroons
    """
    from gridlrt.staging.download import write_macaroon_file

    plan = _plan_for(ctx, request_id, output.parent, protocol, stager_url)
    write_macaroon_file(output, plan.bearers())
    console.print(
        f"wrote {len(plan.macaroons)} macaroon(s) of staging request {request_id} to {output} "
        "(mode 0600)",
        highlight=False,
    )
    _say_macaroons(plan)
