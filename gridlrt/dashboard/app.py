"""The dashboard's web app: Starlette routes over a :class:`Reader` of one pool.

:func:`create_app` takes a pool (read through the library only: :class:`~gridlrt.monitor.
Monitor`, :func:`~gridlrt.pipelines.service.pipeline_status`, :meth:`TokenPool.tokens`, the
catalogue; nothing here writes) and returns the app. Every page has a full form and a
fragment (``/fragment/...``) its live parts are refreshed with by ``static/live.js``, every
few seconds, without reloading the page. ``/api/status`` is the snapshot as JSON (what
``gridlrt status --json`` prints, the pool URL without a password). A page costs at most one
reading of each thing it shows (the header's pool name is no reading); readings are kept a
few seconds and, once expired, shown while they are read again in the background
(:mod:`gridlrt.dashboard.cache`); the overview says how old its reading is.

An ``access_token`` (required by ``gridlrt dashboard`` for a non-loopback bind) guards every
request: ``?token=`` once (compared in constant time) sets a session cookie (a random value of
this process, HttpOnly, SameSite=Strict) and redirects to the URL without the token; anything
else is refused with 401. Only GET and HEAD are served.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from gridlrt.dashboard import snapshots as pages
from gridlrt.dashboard.cache import TTLCache
from gridlrt.datasets import catalogue
from gridlrt.datasets.model import DatasetEntry
from gridlrt.errors import GridlrtError, InputError, TokenNotFound
from gridlrt.monitor import ACTIVE_ORDER, Monitor, Snapshot
from gridlrt.pipelines.service import (
    PipelineRecord,
    PipelineStatus,
    pipeline_record,
    pipeline_status,
)
from gridlrt.tokens import Token, TokenPool, TokenStatus

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
#: seconds a shutdown waits for background readings of the pool under way
SHUTDOWN_WAIT = 30.0
COOKIE = "gridlrt_dashboard"
#: an image larger than this is not proxied
MAX_IMAGE_BYTES = 20 * 1024 * 1024
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'",
}


class Reader:
    """Reads one pool through the library. Every reading is kept ``ttl`` seconds (the listings
    of every token, for plots and filters, ``slow_ttl``), longer when it was slow, and read
    again in the background once expired (:class:`~gridlrt.dashboard.cache.TTLCache`); the page
    models built from readings are kept until one of them is read anew."""

    def __init__(self, pool: TokenPool, *, ttl: float = 2.0, slow_ttl: float = 10.0) -> None:
        self.pool = pool
        pool.follow()  # counts read again and again: only what changed (CouchDB's _changes)
        self.name = pages.safe_url(pool.url)  # what every page's header shows: no reading
        self.cache: TTLCache[Any] = TTLCache(ttl)
        self.slow_ttl = slow_ttl
        self.monitor = Monitor(pool)  # lists done/error tokens again only when needed
        self._monitor_lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        def read() -> Snapshot:
            with self._monitor_lock:
                snap = self.monitor.snapshot()
            return snap.model_copy(update={"pool": pages.safe_url(snap.pool)})

        result: Snapshot = self.cache.get("snapshot", read)
        return result

    def runs(self) -> list[PipelineStatus]:
        result: list[PipelineStatus] = self.cache.get("runs", lambda: pipeline_status(self.pool))
        return result

    def overview(self) -> pages.OverviewPage:
        snap, runs = self.snapshot(), self.runs()
        return self.cache.derive("overview", (snap, runs), lambda: pages.overview_page(snap, runs))

    def record(self, run: str) -> PipelineRecord | None:
        def read() -> PipelineRecord | None:
            try:
                return pipeline_record(self.pool, run)
            except InputError:
                return None

        result: PipelineRecord | None = self.cache.get(f"record:{run}", read, ttl=60.0)
        return result

    def listing(self, status: TokenStatus | None, step: str | None) -> list[Token]:
        key = f"listing:{status.value if status else ''}:{step or ''}"
        slow = status is None or status in (TokenStatus.DONE, TokenStatus.ERROR)
        result: list[Token] = self.cache.get(
            key, lambda: list(self.pool.tokens(status, step)), ttl=self.slow_ttl if slow else None
        )
        return result

    def tokens(self, wanted: pages.TokenFilter) -> pages.TokenList:
        statuses = wanted.statuses()
        found: list[Token] = []
        for status in statuses or [None]:  # type: ignore[list-item]  # None: every status
            found.extend(self.listing(status, wanted.step))
        return pages.token_list(found, wanted, now=time.time())

    def token(self, token_id: str) -> pages.TokenPage:
        def read() -> pages.TokenPage:
            token = self.pool.get(token_id)
            names = self.pool.attachment_names(token_id)
            return pages.token_page(token, now=time.time(), attachments=names)

        result: pages.TokenPage = self.cache.get(f"token:{token_id}", read)
        return result

    def plots(self) -> tuple[str, str]:
        """The SVGs of tokens done over time and of attempts per pilot, from the tokens with
        attempts (done, error, active)."""
        wanted = [TokenStatus.DONE, TokenStatus.ERROR, *ACTIVE_ORDER]
        listings = [self.listing(status, None) for status in wanted]

        def build() -> tuple[str, str]:
            tokens = [t for listing in listings for t in listing]
            return (
                pages.done_over_time_svg(pages.done_series(tokens)),
                pages.timeline_svg(pages.timeline_bars(tokens)),
            )

        return self.cache.derive("plots", listings, build)

    def data(self, run: str, stage: str) -> pages.DataPage:
        """A stage's products; without ``run``, the last stage of the last run."""
        runs = self.runs()
        stages = [(r.run, s.name) for r in runs for s in r.stages]
        if not run and stages:
            run, stage = stages[-1]
        entries: list[DatasetEntry] = []
        if run and stage:
            query = catalogue.Query(pipeline=run, stage=stage)
            entries = self.cache.get(
                f"catalogue:{run}/{stage}", lambda: catalogue.entries(self.pool, query)
            )
        listed = self.listing(TokenStatus.DONE, None)

        def build() -> pages.DataPage:
            done = [t for t in listed if run and t.pipeline == run and t.stage == stage]
            return pages.data_page(entries, done, run=run, stage=stage, stages=stages)

        return self.cache.derive(f"data:{run}/{stage}", (runs, entries, listed), build)

    def image(self, token_id: str, index: int) -> Path | None:
        """The file of a token's image output, when it may be shown: a file:// upload the pool
        records, an image by name, a regular file of at most :data:`MAX_IMAGE_BYTES`."""
        try:
            token = self.pool.get(token_id)
        except (TokenNotFound, GridlrtError):
            return None
        local = pages.image_index(token, index)
        if local is None:
            return None
        path = Path(local)
        try:
            if path.is_symlink() or not path.is_file():
                return None
            if path.stat().st_size > MAX_IMAGE_BYTES:
                return None
        except OSError:
            return None
        return path


class TokenGuard:
    """Refuses every request without the access token (see the module's docstring)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()
        self.session = secrets.token_urlsafe(32).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cookie = request.cookies.get(COOKIE, "").encode()
        if cookie and hmac.compare_digest(cookie, self.session):
            await self.app(scope, receive, send)
            return
        given = request.query_params.get("token", "").encode()
        if given and hmac.compare_digest(given, self.token):
            url = URL(scope=scope).remove_query_params("token")
            target = url.path + (f"?{url.query}" if url.query else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, self.session.decode(), httponly=True, samesite="strict")
        else:
            response = PlainTextResponse(
                "401: this dashboard needs its access token: open the URL gridlrt dashboard "
                "printed (…/?token=…) once",
                status_code=401,
            )
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        await response(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.lower().encode() not in names:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    pool: TokenPool,
    *,
    access_token: str | None = None,
    refresh: float = 3.0,
    ttl: float = 2.0,
    slow_ttl: float = 10.0,
) -> ASGIApp:
    """The dashboard of ``pool``: live parts refreshed every ``refresh`` seconds, readings
    kept ``ttl`` seconds (listings of all tokens ``slow_ttl``; ``0``: read on every request),
    then read again in the background; with ``access_token`` every request needs it (see
    :class:`TokenGuard`). Its lifespan's shutdown waits for background readings under way."""
    reader = Reader(pool, ttl=ttl, slow_ttl=slow_ttl)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["refresh_ms"] = int(refresh * 1000)
    templates.env.globals["categories"] = pages.CATEGORIES

    def render(request: Request, name: str, **context: Any) -> HTMLResponse:
        context.setdefault("pool", reader.name)
        return templates.TemplateResponse(request, name, context)

    def page(
        full: str, fragment: str, build: Callable[[Request], dict[str, Any]]
    ) -> tuple[Callable[[Request], HTMLResponse], Callable[[Request], HTMLResponse]]:
        def whole(request: Request) -> HTMLResponse:
            return render(request, full, **build(request))

        def part(request: Request) -> HTMLResponse:
            return render(request, fragment, **build(request))

        return whole, part

    def overview(request: Request) -> dict[str, Any]:
        page = reader.overview()
        read = pages.ago_text(time.time(), page.taken_at)
        return {"page": page, "read_ago": read, "active": "overview"}

    def pipeline(request: Request) -> dict[str, Any]:
        run = request.path_params["run"]
        status = next((r for r in reader.runs() if r.run == run), None)
        if status is None:
            raise HTTPException(404, f"no pipeline run {run!r} in this pool")
        record = reader.record(run)
        svg = ""
        if record is not None:
            svg = pages.dag_svg(
                record.pipeline,
                record.plan,
                status.stages,
                link=lambda stage: f"/tokens?run={run}&stage={stage}",
            )
        views = pages.run_views([status], reader.snapshot())
        return {"run": views[0], "svg": svg, "active": "overview"}

    def tokens(request: Request) -> dict[str, Any]:
        params = request.query_params
        subband = params.get("subband", "").strip()
        status = params.get("status") or None
        if status and status not in {s.value for s in TokenStatus} | {"running"}:
            raise HTTPException(400, f"unknown status {status!r}")
        try:
            wanted = pages.TokenFilter(
                run=params.get("run") or None,
                stage=params.get("stage") or None,
                step=params.get("step") or None,
                status=status,
                subband=int(subband.removeprefix("SB")) if subband else None,
                host=params.get("host") or None,
            )
        except ValueError:
            raise HTTPException(400, f"subband {subband!r}: give a number") from None
        statuses = [s.value for s in TokenStatus]
        return {"listing": reader.tokens(wanted), "statuses": statuses, "active": "tokens"}

    def token(request: Request) -> dict[str, Any]:
        token_id = request.path_params["token_id"]
        try:
            return {"token": reader.token(token_id), "active": "tokens"}
        except TokenNotFound:
            raise HTTPException(404, f"no token {token_id!r} in this pool") from None

    def pilots(request: Request) -> dict[str, Any]:
        snap = reader.snapshot()
        return {
            "pilots": pages.pilot_views(snap),
            "hint": snap.hint,
            "stale_after": snap.stale_after,
            "active": "pilots",
        }

    def plots(request: Request) -> dict[str, Any]:
        done, timeline = reader.plots()
        return {"done_svg": done, "timeline_svg": timeline, "active": "plots"}

    def data(request: Request) -> dict[str, Any]:
        run = request.query_params.get("run", "")
        stage = request.query_params.get("stage", "")
        return {"data": reader.data(run, stage), "active": "data"}

    def image(request: Request) -> Response:
        try:
            index = int(request.query_params.get("n", "0"))
        except ValueError:
            raise HTTPException(400, "n: give a number") from None
        path = reader.image(request.path_params["token_id"], index)
        if path is None:
            raise HTTPException(404, "no such image output (only file:// images are shown)")
        kind = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
        return FileResponse(path, media_type=kind)

    def api_status(request: Request) -> JSONResponse:
        snap = reader.snapshot()
        body = snap.model_dump(mode="json")
        body["pipelines"] = [r.model_dump(mode="json") for r in reader.runs()]
        return JSONResponse(json.loads(json.dumps(body)))

    routes: list[Route | Mount] = []
    for path, full, fragment, build in (
        ("/", "overview.html", "_overview.html", overview),
        ("/pipeline/{run}", "pipeline.html", "_pipeline.html", pipeline),
        ("/tokens", "tokens.html", "_tokens.html", tokens),
        ("/token/{token_id:path}", "token.html", "_token.html", token),
        ("/pilots", "pilots.html", "_pilots.html", pilots),
        ("/plots", "plots.html", "_plots.html", plots),
        ("/data", "data.html", "_data.html", data),
    ):
        whole, part = page(full, fragment, build)
        routes.append(Route(path, whole))
        routes.append(Route("/fragment" + (path if path != "/" else "/overview"), part))
    routes += [
        Route("/image/{token_id:path}", image),
        Route("/api/status", api_status),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    def failed(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            code, message = exc.status_code, str(exc.detail)
        else:
            code, message = 503, f"the pool cannot be read now: {exc}"
        return templates.TemplateResponse(
            request,
            "error.html",
            {"code": code, "message": message, "active": "", "pool": ""},
            status_code=code,
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        # no new background readings; those under way end before the pool is closed
        if not await anyio.to_thread.run_sync(reader.cache.close, SHUTDOWN_WAIT):
            log.warning("dashboard: a reading of the pool was still running at shutdown")

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: failed, GridlrtError: failed},
        lifespan=lifespan,
    )
    guarded: ASGIApp = SecurityHeaders(app)
    if access_token is not None:
        guarded = TokenGuard(guarded, access_token)
    return guarded
