"""Page models for the dashboard: pure functions of the library's snapshots and tokens.

Nothing here reads a pool. The app (:mod:`gridlrt.dashboard.app`) reads through the library
(:class:`~gridlrt.monitor.Monitor`, :func:`~gridlrt.pipelines.service.pipeline_status`,
:meth:`~gridlrt.tokens.TokenPool.tokens`, the dataset catalogue) and hands what it read to
these functions, which return the models the templates draw — and SVG pictures (the DAG, tokens
done over time, attempts per pilot) as strings. The readings are kept by the app's cache
(:mod:`gridlrt.dashboard.cache`), so many browsers refreshing every few seconds cost one reading.

Every URL shown goes through :func:`safe_url` (no user or password, no query string: a macaroon or a
signed URL's token lives there); parameters whose names look secret are masked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import BaseModel

from gridlrt.config import strip_credentials
from gridlrt.durations import format_duration
from gridlrt.lofar_names import name_fields
from gridlrt.monitor import FailingToken, PilotRow, Snapshot, StepSnapshot, done_times
from gridlrt.pipelines.definition import Pipeline
from gridlrt.pipelines.draw import dag_layout
from gridlrt.pipelines.expand import StagePlan
from gridlrt.pipelines.service import PipelineStatus, StageStatus
from gridlrt.sizes import format_bytes
from gridlrt.tokens import Token, TokenStatus
from gridlrt.tokens.model import ACTIVE

#: the bar's segments, in the order a token passes them ("running": any active status)
CATEGORIES = ("waiting", "todo", "running", "done", "error", "blocked")
ACTIVE_VALUES = frozenset(s.value for s in ACTIVE)
#: attempt phases drawn on the timeline, and their colours (the demo's)
PHASES = {"download": "#17becf", "run": "#ff7f0e", "upload": "#2ca02c"}
STAGE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_SECRET_KEY = re.compile(r"pass|secret|token|macaroon|credential|authz|api_?key", re.I)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# --- small helpers ---------------------------------------------------------------------------


def safe_url(url: str) -> str:
    """``url`` fit to show: without its ``user:password@`` part, query and fragment (a
    macaroon or a signed URL's token travels there)."""
    text: str = strip_credentials(str(url))
    return text.split("?", 1)[0].split("#", 1)[0]


def safe_parameters(parameters: dict[str, Any]) -> dict[str, str]:
    """A token's parameters to show: values of secret-looking names masked."""
    return {str(k): "***" if _SECRET_KEY.search(str(k)) else str(v) for k, v in parameters.items()}


def clock_text(epoch: float | None) -> str:
    if not epoch or epoch <= 1:
        return ""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def ago_text(now: float, then: float | None) -> str:
    if not then or then <= 1:
        return ""
    return f"{format_duration(max(0.0, now - then))} ago"


def size_text(size: int | None) -> str:
    return "" if size is None else format_bytes(size)


def category(status: str) -> str:
    """The bar segment of a status (the active ones are "running")."""
    return "running" if status in ACTIVE_VALUES else status


def categorize(counts: dict[str, int]) -> dict[str, int]:
    """Counts per status -> counts per :data:`CATEGORIES`."""
    found = dict.fromkeys(CATEGORIES, 0)
    for status, n in counts.items():
        key = category(status)
        found[key] = found.get(key, 0) + n
    return found


class Segment(BaseModel):
    status: str
    count: int
    percent: float


def segments(counts: dict[str, int]) -> list[Segment]:
    """The bar of a stage or step: one segment per non-empty category, in order."""
    grouped = categorize(counts)
    total = sum(grouped.values())
    return [
        Segment(status=name, count=n, percent=100.0 * n / total)
        for name, n in grouped.items()
        if n and total
    ]


def subband_of(token: Token) -> int | None:
    """The subband of a token: its group's, else the LOFAR name of its first input."""
    value = token.group.get("subband")
    if value is None:
        inputs = token.inputs
        value = name_fields(inputs[0]).get("subband") if inputs else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def host_of(token: Token) -> str:
    attempt = token.current_attempt
    return (attempt.host if attempt else "") or token.hostname


def rate_text(step: StepSnapshot | None, window: float) -> str:
    if step is None:
        return ""
    if step.throughput.done_in_window == 0:
        return f"0/min (none in {format_duration(window)})"
    return f"{step.throughput.per_minute:.3g}/min"


def eta_text(remaining: int, eta: float | None) -> str:
    if remaining == 0:
        return "-"
    return "unknown" if eta is None else format_duration(eta)


# --- overview --------------------------------------------------------------------------------


class StageRow(BaseModel):
    run: str
    name: str
    step: str
    kind: str
    parents: list[str]
    total: int
    planned: int
    done: int
    counts: dict[str, int]  # per category
    segments: list[Segment]
    throughput: str
    eta: str
    waiting_for: str
    blocked: list[tuple[str, str]]
    more_blocked: int


class RunView(BaseModel):
    run: str
    pipeline: str
    description: str
    created: str
    recorded: bool
    stages: list[StageRow]
    counts: dict[str, int]  # per category
    total: int
    done: int


class StepRow(BaseModel):
    step: str
    total: int
    done: int
    done_percent: float
    counts: dict[str, int]  # per category
    segments: list[Segment]
    throughput: str
    eta: str


class FailingRow(BaseModel):
    token_id: str
    step: str
    when: str
    attempts: int
    message: str


class PilotView(BaseModel):
    host: str
    job_id: str
    pilot: str
    token_id: str
    step: str
    status: str
    attempt: int
    started: str
    heartbeat_age: str
    stale: bool
    load: str
    memory: str


class OverviewPage(BaseModel):
    pool: str
    taken: str
    taken_at: float  # epoch seconds of the snapshot (the page says how old it is)
    runs: list[RunView]
    steps: list[StepRow]
    failing: list[FailingRow]
    failing_total: int
    pilots: int
    stale_pilots: int
    hint: str | None
    finished: bool
    malformed: int
    totals: dict[str, int]  # per category over every step


def _stage_rate(
    stage: StageStatus, steps: dict[str, StepSnapshot], shared: set[str], window: float
) -> tuple[str, str]:
    """Throughput and ETA of a stage: its step's, when no other stage runs that step (the
    monitor measures per step)."""
    step = steps.get(stage.step)
    if step is None or stage.step in shared:
        return "", ""
    counts = categorize(stage.counts)
    remaining = counts["waiting"] + counts["todo"] + counts["running"]
    per_minute = step.throughput.per_minute
    eta = None if per_minute <= 0 else (60.0 * remaining / per_minute if remaining else 0.0)
    return rate_text(step, window), eta_text(remaining, eta)


def run_views(runs: Sequence[PipelineStatus], snap: Snapshot) -> list[RunView]:
    """Every run with its stages in DAG order."""
    steps = {s.step: s for s in snap.steps}
    seen: dict[str, int] = {}
    for run in runs:
        for stage in run.stages:
            if stage.step:
                seen[stage.step] = seen.get(stage.step, 0) + 1
    shared = {step for step, n in seen.items() if n > 1}
    views = []
    for run in runs:
        rows = []
        for stage in run.stages:
            throughput, eta = _stage_rate(stage, steps, shared, snap.window)
            rows.append(
                StageRow(
                    run=run.run,
                    name=stage.name,
                    step=stage.step,
                    kind=stage.kind,
                    parents=stage.parents,
                    total=stage.present,
                    planned=stage.planned,
                    done=stage.counts.get("done", 0),
                    counts=categorize(stage.counts),
                    segments=segments(stage.counts),
                    throughput=throughput,
                    eta=eta,
                    waiting_for=stage.waiting_for,
                    blocked=[(b.id, b.reason) for b in stage.blocked],
                    more_blocked=stage.more_blocked,
                )
            )
        views.append(
            RunView(
                run=run.run,
                pipeline=run.pipeline,
                description=run.description,
                created=clock_text(run.created),
                recorded=run.recorded,
                stages=rows,
                counts=categorize(run.counts),
                total=sum(run.counts.values()),
                done=run.counts.get("done", 0),
            )
        )
    return views


def step_rows(snap: Snapshot) -> list[StepRow]:
    return [
        StepRow(
            step=step.step,
            total=step.total,
            done=step.done,
            done_percent=100.0 * step.done_fraction,
            counts=categorize(step.counts),
            segments=segments(step.counts),
            throughput=rate_text(step, snap.window),
            eta=eta_text(step.remaining, step.eta_seconds),
        )
        for step in snap.steps
    ]


def failing_rows(snap: Snapshot) -> list[FailingRow]:
    rows: list[FailingToken] = [row for step in snap.steps for row in step.failing]
    rows.sort(key=lambda r: (-r.time, r.token_id))
    return [
        FailingRow(
            token_id=r.token_id,
            step=r.step,
            when=ago_text(snap.taken, r.time),
            attempts=r.attempts,
            message=r.message,
        )
        for r in rows
    ]


def pilot_views(snap: Snapshot) -> list[PilotView]:
    """Every pilot at work, stale ones first."""
    rows: list[PilotRow] = [row for step in snap.steps for row in step.pilots]
    rows.sort(key=lambda r: (not r.stale, r.host, r.job_id or "", r.token_id))
    views = []
    for row in rows:
        memory = ""
        if row.mem_used_pct is not None:
            of = f" of {row.mem_total_mb / 1024:.1f} GB" if row.mem_total_mb else ""
            memory = f"{row.mem_used_pct:.0f}%{of}"
        views.append(
            PilotView(
                host=row.host or "?",
                job_id=row.job_id or "",
                pilot=row.pilot,
                token_id=row.token_id,
                step=row.step,
                status=row.status,
                attempt=row.attempt,
                started=clock_text(row.started),
                heartbeat_age=f"{format_duration(row.heartbeat_age)} ago",
                stale=row.stale,
                load="" if row.load is None else f"{row.load:.2f}",
                memory=memory,
            )
        )
    return views


def overview_page(snap: Snapshot, runs: Sequence[PipelineStatus]) -> OverviewPage:
    """The overview: every run's stages (DAG order) and every step, with bars, throughput and
    ETA; the latest failing tokens; how many pilots work and how many went silent."""
    totals = dict.fromkeys(CATEGORIES, 0)
    for step in snap.steps:
        for key, n in categorize(step.counts).items():
            totals[key] += n
    return OverviewPage(
        pool=safe_url(snap.pool),
        taken=clock_text(snap.taken),
        taken_at=snap.taken,
        runs=run_views(runs, snap),
        steps=step_rows(snap),
        failing=failing_rows(snap),
        failing_total=sum(s.failing_total for s in snap.steps),
        pilots=sum(len(s.pilots) for s in snap.steps),
        stale_pilots=snap.stale_pilots,
        hint=snap.hint,
        finished=snap.finished,
        malformed=snap.malformed,
        totals=totals,
    )


# --- the DAG ---------------------------------------------------------------------------------

BOX_W, BOX_H, GAP_X, GAP_Y = 190, 78, 60, 26
KIND_FILL = {"input": "#eeeeee", "scatter": "#dce9f5", "one-to-one": "#e2efda", "gather": "#fcebd9"}
STATUS_FILL = {
    "waiting": "#c7c7c7",
    "todo": "#9ecae1",
    "running": "#fdae6b",
    "done": "#74c476",
    "error": "#e34a33",
    "blocked": "#756bb1",
}


def dag_svg(
    pipeline: Pipeline,
    plan: Sequence[StagePlan] | None,
    stages: Sequence[StageStatus] = (),
    link: Callable[[str], str] | None = None,
) -> str:
    """The run's DAG as an SVG: :func:`~gridlrt.pipelines.draw.dag_layout`'s boxes (a stage
    box with its counts and a bar, linking to its tokens through ``link(stage)``) and edges
    (solid: runs over; dashed: waits for)."""
    boxes, edges = dag_layout(pipeline, plan)
    status = {s.name: s for s in stages}
    where = {b.name: (10 + b.column * (BOX_W + GAP_X), 10 + b.row * (BOX_H + GAP_Y)) for b in boxes}
    width = 20 + (max(b.column for b in boxes) + 1) * (BOX_W + GAP_X) - GAP_X
    height = 20 + (max(b.row for b in boxes) + 1) * (BOX_H + GAP_Y) - GAP_Y
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="pipeline {escape(pipeline.name)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#444"/></marker></defs>',
    ]
    for edge in edges:
        if edge.parent not in where or edge.child not in where:
            continue
        (x0, y0), (x1, y1) = where[edge.parent], where[edge.child]
        dash = "" if edge.style == "over" else ' stroke-dasharray="5,4"'
        out.append(
            f'<path d="M {x0 + BOX_W:.0f} {y0 + BOX_H / 2:.0f} C {x0 + BOX_W + GAP_X / 2:.0f} '
            f"{y0 + BOX_H / 2:.0f}, {x1 - GAP_X / 2:.0f} {y1 + BOX_H / 2:.0f}, {x1:.0f} "
            f'{y1 + BOX_H / 2:.0f}" fill="none" stroke="#444" stroke-width="1.4"{dash} '
            'marker-end="url(#arrow)"/>'
        )
    for box in boxes:
        x, y = where[box.name]
        stage = status.get(box.name)
        lines = box.label.split("\n")
        group = [
            f'<g class="box" data-stage="{escape(box.name)}">',
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="{KIND_FILL.get(box.kind, "#fff")}" stroke="#333"/>',
            f'<text x="{x + 8:.0f}" y="{y + 17:.0f}" font-weight="bold" font-size="13">'
            f"{escape(lines[0])}</text>",
            f'<text x="{x + 8:.0f}" y="{y + 33:.0f}" font-size="11" fill="#333">'
            f"{escape(' '.join(lines[1:]))}</text>",
        ]
        if stage is not None:
            counts = categorize(stage.counts)
            total = sum(counts.values()) or 1
            group.append(
                f'<text x="{x + 8:.0f}" y="{y + 50:.0f}" font-size="11" class="counts">'
                f"{counts['done']}/{stage.present} done"
                + (f", {counts['running']} running" if counts["running"] else "")
                + (f", {counts['error']} error" if counts["error"] else "")
                + (f", {counts['blocked']} blocked" if counts["blocked"] else "")
                + "</text>"
            )
            left = x + 8.0
            for name in CATEGORIES:
                part = (BOX_W - 16) * counts[name] / total
                if part > 0:
                    group.append(
                        f'<rect x="{left:.1f}" y="{y + 58:.0f}" width="{part:.1f}" height="10" '
                        f'fill="{STATUS_FILL[name]}"><title>{counts[name]} {name}</title></rect>'
                    )
                    left += part
        group.append("</g>")
        if stage is not None and link is not None:
            group = [f'<a href="{escape(link(box.name))}">', *group, "</a>"]
        out.extend(group)
    out.append("</svg>")
    return "\n".join(out)


# --- tokens ----------------------------------------------------------------------------------


class TokenFilter(BaseModel):
    """What the tokens page asks: every given field must match."""

    run: str | None = None
    stage: str | None = None
    step: str | None = None
    status: str | None = None  # a status, or "running" (any active one)
    subband: int | None = None
    host: str | None = None

    def statuses(self) -> list[TokenStatus] | None:
        """The statuses to list from the pool (None: all)."""
        if not self.status:
            return None
        if self.status == "running":
            return [TokenStatus.LOCKED, TokenStatus.DOWNLOADING, TokenStatus.RUNNING,
                    TokenStatus.UPLOADING]  # fmt: skip
        return [TokenStatus(self.status)]

    def matches(self, token: Token) -> bool:
        if self.run and token.pipeline != self.run:
            return False
        if self.stage and token.stage != self.stage:
            return False
        if self.step and token.step != self.step:
            return False
        if (
            self.status
            and category(token.status.value) != self.status
            and (token.status.value != self.status)
        ):
            return False
        if self.subband is not None and subband_of(token) != self.subband:
            return False
        return not (self.host and self.host.lower() not in host_of(token).lower())

    def query(self) -> str:
        """The filter as a query string (for links and the live fragment)."""
        pairs = [(k, v) for k, v in self.model_dump().items() if v not in (None, "")]
        return "&".join(f"{k}={quote(str(v), safe='')}" for k, v in pairs)


class TokenRow(BaseModel):
    id: str
    step: str
    run: str
    stage: str
    status: str
    category: str
    subband: int | None
    host: str
    attempts: int
    updated: str
    error: str


def token_row(token: Token, now: float) -> TokenRow:
    from gridlrt.monitor import first_error_line

    attempt = token.current_attempt
    last = max(
        token.heartbeat,
        attempt.ended or attempt.started if attempt else 0.0,
        token.created,
    )
    return TokenRow(
        id=token.id,
        step=token.step,
        run=token.pipeline or "",
        stage=token.stage or "",
        status=token.status.value,
        category=category(token.status.value),
        subband=subband_of(token),
        host=host_of(token),
        attempts=len(token.attempts),
        updated=ago_text(now, last),
        error=first_error_line(token)
        if token.status is TokenStatus.ERROR
        else (token.blocked_reason if token.status is TokenStatus.BLOCKED else ""),
    )


class TokenList(BaseModel):
    filter: TokenFilter
    rows: list[TokenRow]
    matching: int
    limit: int


def token_list(
    tokens: Iterable[Token], wanted: TokenFilter, *, now: float, limit: int = 500
) -> TokenList:
    """The tokens that match ``wanted`` (the first ``limit`` by id shown, all counted)."""
    found = sorted((t for t in tokens if wanted.matches(t)), key=lambda t: t.id)
    return TokenList(
        filter=wanted,
        rows=[token_row(t, now) for t in found[:limit]],
        matching=len(found),
        limit=limit,
    )


class AttemptView(BaseModel):
    number: int
    pilot: str
    host: str
    job_id: str
    started: str
    ended: str
    duration: str
    outcome: str
    exit_code: str
    timings: list[tuple[str, str]]


class ErrorView(BaseModel):
    time: str
    message: str
    exception: str
    log_tail: str


class OutputView(BaseModel):
    url: str
    size: str
    checksum: str
    image: int | None  # the upload's index when the proxy may show it


class ParentView(BaseModel):
    id: str
    step: str
    status: str
    group: str
    outputs: list[str]


class TokenPage(BaseModel):
    id: str
    status: str
    category: str
    step: str
    run: str
    stage: str
    group: dict[str, str]
    subband: int | None
    host: str
    created: str
    heartbeat: str
    inputs: list[str]
    parameters: dict[str, str]
    attempts: list[AttemptView]
    errors: list[ErrorView]
    outputs: list[OutputView]
    provenance: list[ParentView]
    parents: list[str]
    children: list[str]
    blocked_reason: str
    attachments: list[str]
    progress: dict[str, str]


def image_index(token: Token, index: int) -> str | None:
    """The local path of the token's ``index``-th upload when the image proxy may show it: a
    file:// URL of an image (by name). None otherwise."""
    if not 0 <= index < len(token.uploads):
        return None
    url = token.uploads[index].url
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    if not parts.path.lower().endswith(IMAGE_SUFFIXES) or parts.query:
        return None
    from urllib.parse import unquote

    return unquote(parts.path)


def token_page(token: Token, *, now: float, attachments: Sequence[str] = ()) -> TokenPage:
    """A token's page: every attempt with its timings, every error with its log tail, its
    inputs and outputs (safe URLs), parents (links) and children."""
    attempts = []
    for number, a in enumerate(token.attempts, 1):
        attempts.append(
            AttemptView(
                number=number,
                pilot=a.pilot,
                host=a.host,
                job_id=a.job_id or "",
                started=clock_text(a.started),
                ended=clock_text(a.ended),
                duration=format_duration(a.ended - a.started) if a.ended else "",
                outcome=a.outcome or ("active" if token.status.value in ACTIVE_VALUES else ""),
                exit_code="" if a.exit_code is None else str(a.exit_code),
                timings=[(k, f"{v:.2f} s") for k, v in a.timings.items()],
            )
        )
    errors = [
        ErrorView(
            time=clock_text(e.time),
            message=e.message,
            exception=e.exception if isinstance(e.exception, str) else "\n".join(e.exception),
            log_tail=e.log_tail,
        )
        for e in token.error
    ]
    outputs = [
        OutputView(
            url=safe_url(u.url),
            size=size_text(u.size),
            checksum=u.checksum or "",
            image=i if image_index(token, i) else None,
        )
        for i, u in enumerate(token.uploads)
    ]
    provenance = [
        ParentView(
            id=p.id,
            step=p.step,
            status=p.status,
            group=p.group,
            outputs=[safe_url(o.url) for o in p.outputs],
        )
        for p in token.provenance
    ]
    progress = {str(k): str(v) for k, v in token.progress.items() if not _SECRET_KEY.search(str(k))}
    return TokenPage(
        id=token.id,
        status=token.status.value,
        category=category(token.status.value),
        step=token.step,
        run=token.pipeline or "",
        stage=token.stage or "",
        group={str(k): str(v) for k, v in token.group.items()},
        subband=subband_of(token),
        host=host_of(token),
        created=clock_text(token.created),
        heartbeat=ago_text(now, token.heartbeat),
        inputs=[safe_url(i) for i in token.inputs],
        parameters=safe_parameters(token.parameters),
        attempts=attempts,
        errors=errors,
        outputs=outputs,
        provenance=provenance,
        parents=token.depends.parent_ids if token.depends else [],
        children=list(token.children),
        blocked_reason=token.blocked_reason,
        attachments=list(attachments),
        progress=progress,
    )


# --- plots -----------------------------------------------------------------------------------


def done_series(tokens: Iterable[Token]) -> dict[str, list[float]]:
    """Per stage (the step for tokens outside a pipeline) the sorted end times of done
    tokens."""
    series: dict[str, list[float]] = {}
    for token in tokens:
        if token.status is not TokenStatus.DONE:
            continue
        times = done_times(token)
        if times is None:
            continue
        key = f"{token.pipeline}/{token.stage}" if token.pipeline and token.stage else token.step
        series.setdefault(key, []).append(times[1])
    return {k: sorted(v) for k, v in sorted(series.items())}


def _axis_ticks(span: float, count: int = 5) -> list[float]:
    if span <= 0:
        return [0.0]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), default=raw)
    return [i * step for i in range(int(span / step) + 1)]


def done_over_time_svg(series: dict[str, list[float]], *, width: int = 760) -> str:
    """Tokens done over time, one step line per stage, in seconds since the first end."""
    height, left, bottom, top, right = 280, 50, 36, 14, 190
    if not series:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60">'
            '<text x="10" y="30">no token is done yet</text></svg>'
        )
    start = min(v[0] for v in series.values())
    span = max(max(v[-1] for v in series.values()) - start, 1.0)
    most = max(len(v) for v in series.values())
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(t: float) -> float:
        return left + plot_w * (t - start) / span

    def py(n: int) -> float:
        return top + plot_h * (1 - n / most)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="tokens done over time">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>',
    ]
    for tick in _axis_ticks(span):
        x = px(start + tick)
        out.append(
            f'<text x="{x:.1f}" y="{height - bottom + 16}" font-size="10" '
            f'text-anchor="middle">{tick:g}</text>'
        )
    for tick in _axis_ticks(float(most)):
        if tick == int(tick):
            out.append(
                f'<text x="{left - 6}" y="{py(int(tick)) + 4:.1f}" font-size="10" '
                f'text-anchor="end">{int(tick)}</text>'
            )
    out.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" font-size="11" '
        'text-anchor="middle">seconds since the first token was done</text>'
    )
    for i, (name, ends) in enumerate(series.items()):
        colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
        points = [f"{px(start):.1f},{py(0):.1f}"]
        for n, t in enumerate(ends, 1):
            points.append(f"{px(t):.1f},{py(n - 1):.1f}")
            points.append(f"{px(t):.1f},{py(n):.1f}")
        out.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
            f'stroke-width="2"><title>{escape(name)}: {len(ends)} done</title></polyline>'
        )
        out.append(
            f'<text x="{width - right + 10}" y="{top + 14 + 16 * i}" font-size="11" '
            f'fill="{colour}">{escape(name)} ({len(ends)})</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


class Bar(BaseModel):
    pilot: str
    token_id: str
    phase: str
    start: float
    length: float


def timeline_bars(tokens: Iterable[Token], *, limit: int = 400) -> list[Bar]:
    """Each attempt (the latest ``limit`` by start) as bars download / run / upload per pilot,
    as the demo's picture draws them; an attempt without timings is one bar "run"."""
    attempts = [(t, a) for t in tokens for a in t.attempts]
    attempts.sort(key=lambda ta: ta[1].started)
    bars: list[Bar] = []
    for token, attempt in attempts[-limit:]:
        left = attempt.started + attempt.timings.get("claim", 0.0)
        drawn = False
        for phase in PHASES:
            length = attempt.timings.get(phase, 0.0)
            if phase == "run":
                length += attempt.timings.get("validate", 0.0)
            if length > 0:
                bars.append(Bar(pilot=attempt.pilot, token_id=token.id, phase=phase,
                                start=left, length=length))  # fmt: skip
                drawn = True
            left += length
        if not drawn:
            end = attempt.ended or max(token.heartbeat, attempt.started)
            length = max(end - attempt.started, 0.0)
            bars.append(
                Bar(
                    pilot=attempt.pilot,
                    token_id=token.id,
                    phase="run",
                    start=attempt.started,
                    length=length,
                )
            )
    return bars


def timeline_svg(bars: Sequence[Bar], *, width: int = 760) -> str:
    """Attempts per pilot over time: one row per pilot, bars coloured by phase."""
    if not bars:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60">'
            '<text x="10" y="30">no attempt yet</text></svg>'
        )
    pilots = sorted({b.pilot for b in bars})
    row_h, left, top, bottom, right = 22, 150, 10, 40, 20
    height = top + bottom + row_h * len(pilots)
    start = min(b.start for b in bars)
    span = max(max(b.start + b.length for b in bars) - start, 1.0)
    plot_w = width - left - right

    def px(t: float) -> float:
        return left + plot_w * (t - start) / span

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="attempts per pilot">'
    ]
    for i, pilot in enumerate(pilots):
        y = top + row_h * i
        out.append(
            f'<text x="{left - 6}" y="{y + 15}" font-size="10" text-anchor="end">'
            f"{escape(pilot[:24])}</text>"
        )
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y + row_h}" y2="{y + row_h}" '
            'stroke="#eee"/>'
        )
    for bar in bars:
        y = top + row_h * pilots.index(bar.pilot) + 3
        out.append(
            f'<rect x="{px(bar.start):.1f}" y="{y}" '
            f'width="{max(plot_w * bar.length / span, 1):.1f}"'
            f' height="{row_h - 6}" fill="{PHASES.get(bar.phase, "#888")}">'
            f"<title>{escape(bar.token_id)}: {bar.phase} {bar.length:.1f} s</title></rect>"
        )
    for tick in _axis_ticks(span):
        out.append(
            f'<text x="{px(start + tick):.1f}" y="{height - bottom + 16}" font-size="10" '
            f'text-anchor="middle">{tick:g}</text>'
        )
    legend_x = left
    for phase, colour in PHASES.items():
        out.append(
            f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{height - 5}" font-size="10">{phase}</text>'
        )
        legend_x += 80
    out.append(
        f'<text x="{width - right}" y="{height - 5}" font-size="10" text-anchor="end">'
        "seconds since the first claim shown</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


# --- data ------------------------------------------------------------------------------------


class ProductRow(BaseModel):
    label: str
    name: str
    subband: int | None
    frequency: str
    size: str
    flagged: float | None  # percent
    bad: bool
    url: str
    token: str


class ImageView(BaseModel):
    token: str
    index: int
    name: str
    subband: int | None


class DataPage(BaseModel):
    run: str
    stage: str
    stages: list[tuple[str, str]]  # every (run, stage) to choose from
    products: list[ProductRow]
    images: list[ImageView]
    threshold: float
    total_size: str
    bad: int


def data_page(
    entries: Sequence[Any],
    image_tokens: Iterable[Token],
    *,
    run: str,
    stage: str,
    stages: Sequence[tuple[str, str]],
    threshold: float = 0.5,
    max_images: int = 60,
) -> DataPage:
    """A stage's products from the catalogue (``DatasetEntry`` objects: size, flagged
    fraction per subband, bad ones marked above ``threshold``) and its image outputs (file://
    PNG/JPEG uploads of its tokens) for thumbnails."""
    products = []
    for entry in sorted(
        entries,
        key=lambda e: (
            e.frequency_hz or float("inf"),
            e.subband if e.subband is not None else -1,
            e.url,
        ),
    ):
        fraction = entry.flagged_fraction
        products.append(
            ProductRow(
                label=entry.label,
                name=entry.name,
                subband=entry.subband,
                frequency=f"{entry.frequency_hz / 1e6:.3f} MHz" if entry.frequency_hz else "",
                size=size_text(entry.size),
                flagged=None if fraction is None else 100.0 * fraction,
                bad=fraction is not None and fraction > threshold,
                url=safe_url(entry.url),
                token=entry.token or "",
            )
        )
    images: list[ImageView] = []
    for token in sorted(image_tokens, key=lambda t: t.id):
        for i, upload in enumerate(token.uploads):
            if image_index(token, i) is not None and len(images) < max_images:
                images.append(
                    ImageView(
                        token=token.id,
                        index=i,
                        name=upload.url.rsplit("/", 1)[-1],
                        subband=subband_of(token),
                    )
                )
    total = sum(e.size or 0 for e in entries)
    return DataPage(
        run=run,
        stage=stage,
        stages=list(stages),
        products=products,
        images=images,
        threshold=threshold,
        total_size=size_text(total) if entries else "",
        bad=sum(1 for p in products if p.bad),
    )
