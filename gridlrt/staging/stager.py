"""The LTA stager contract: one interface over the v1 XML-RPC and the v2 StageIT services.

Owns the shared :class:`StagingState` enum, the :class:`Progress`/:class:`StagingReport`
answers, the :class:`StagingRequest` record, the batching plan (:func:`plan_requests`) and the
abstract :class:`Stager` with what every backend shares — splitting a list into requests,
waiting with a progress callback, and retrying transient errors with backoff
(:meth:`Stager._retry`, over :func:`gridlrt.retry.retry`). Each protocol lives in its own
small module (:mod:`~gridlrt.staging.lta_v1`, :mod:`~gridlrt.staging.stageit`) and implements
the five primitive operations: submit one request, state, progress, staged SURLs, abort.

Requests are split **per site** (one request never mixes SARA, Jülich and Poznań files: the
archive stages each request at one location) and into at most ``max_files`` SURLs each
(default :data:`MAX_FILES_PER_REQUEST` = 1,000, the archive's guideline, which also asks for
at most 5 TB per request). The archive also limits a user to about
:data:`MAX_FILES_IN_FLIGHT` = 5,000 files being staged at once: :func:`plan_requests`
reports when a submission (plus what is already in flight) would exceed it; the archive
then queues the extra requests, it does not refuse them.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr

from gridlrt.errors import StagerUnavailable, StagingError, StagingTimeout
from gridlrt.retry import Backoff, retry
from gridlrt.staging.ranges import format_ranges
from gridlrt.staging.surl import SURL, group_by_site

log = logging.getLogger(__name__)

MAX_FILES_PER_REQUEST = 1000
MAX_FILES_IN_FLIGHT = 5000
BACKOFF_CAP = 8.0  # seconds: the longest wait between two tries of one call
Protocol = Literal["v1", "stageit"]
PROTOCOLS: tuple[Protocol, ...] = ("v1", "stageit")
T = TypeVar("T")


class StagingState(StrEnum):
    """The states both LTA services report (v1 writes ``in progress``, we write ``in_progress``)."""

    NEW = "new"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    PARTIAL_SUCCESS = "partial_success"
    FAILED = "failed"
    ABORTED = "aborted"
    ON_HOLD = "on_hold"

    @classmethod
    def parse(cls, text: str) -> StagingState:
        """``'in progress'``, ``'Partial Success'``, ``'on_hold'`` ... -> the enum member."""
        key = "_".join(str(text).strip().lower().replace("-", " ").split())
        try:
            return cls(key)
        except ValueError:
            raise StagingError(f"the stager reported an unknown state {text!r}") from None

    @property
    def finished(self) -> bool:
        """True when the LTA will not change this request any more."""
        return self in _FINISHED

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


_FINISHED = frozenset(
    {
        StagingState.SUCCESS,
        StagingState.PARTIAL_SUCCESS,
        StagingState.FAILED,
        StagingState.ABORTED,
    }
)


class Progress(BaseModel):
    """Files of one request: total, staged (online) and failed so far (``None``: unknown)."""

    total: int | None = None
    done: int | None = None
    failed: int = 0


class StagingReport(BaseModel):
    """What the stager says about one request now."""

    request_id: int
    protocol: Protocol
    state: StagingState
    progress: Progress
    staged: list[str] = []
    failed: list[str] = []
    """SURLs that did not stage (known once the request finished, or reported as errors)."""


class Macaroon(BaseModel):
    """A bearer token StageIT hands out per request and LTA site, for WebDAV downloads of
    the staged files (``Authorization: Bearer <macaroon>``). A secret: shown as ``*****``."""

    site: str
    """The LTA's name of the site (``SURF``, ``Juelich``, ``Poznan``)."""
    token: SecretStr
    valid_until: datetime | None = None


class StagingRequest(BaseModel):
    """The local record of a submitted request (never holds a secret)."""

    id: int
    protocol: Protocol
    service: str
    """The stager's URL, without credentials."""
    site: str
    surls: list[str]
    submitted: datetime = Field(default_factory=lambda: datetime.now(UTC))
    state: StagingState = StagingState.NEW
    checked: datetime | None = None
    files_done: int | None = None
    failed: list[str] = []

    @property
    def files_total(self) -> int:
        return len(self.surls)

    def updated(self, report: StagingReport) -> StagingRequest:
        """This record after a fresh report."""
        return self.model_copy(
            update={
                "state": report.state,
                "checked": datetime.now(UTC),
                "files_done": report.progress.done,
                "failed": report.failed or self.failed,
            }
        )


class PlannedRequest(BaseModel):
    """One request :meth:`Stager.submit` would send."""

    number: int
    site: str
    site_name: str
    surls: list[SURL]

    @property
    def observations(self) -> str:
        return ",".join(sorted({f"L{s.obsid}" for s in self.surls if s.obsid is not None}))

    @property
    def subbands(self) -> str:
        return format_ranges(s.subband for s in self.surls if s.subband is not None)


class Plan(BaseModel):
    """The requests for a list, and whether they would exceed the files-in-flight limit."""

    requests: list[PlannedRequest]
    max_files: int
    in_flight_before: int = 0

    @property
    def files(self) -> int:
        return sum(len(r.surls) for r in self.requests)

    @property
    def over_in_flight_limit(self) -> bool:
        return self.in_flight_before + self.files > MAX_FILES_IN_FLIGHT


def plan_requests(
    surls: Sequence[SURL], max_files: int = MAX_FILES_PER_REQUEST, *, in_flight: int = 0
) -> Plan:
    """Split ``surls`` per site (sorted by observation and subband) into chunks of at most
    ``max_files``. Pure: this is exactly what :meth:`Stager.submit` sends (and ``--dry-run``
    shows)."""
    if max_files < 1:
        raise StagingError(f"--max-files must be at least 1, not {max_files}")
    planned: list[PlannedRequest] = []
    for key, members in group_by_site(surls).items():
        for start in range(0, len(members), max_files):
            chunk = members[start : start + max_files]
            planned.append(
                PlannedRequest(
                    number=len(planned) + 1, site=key, site_name=chunk[0].site.name, surls=chunk
                )
            )
    return Plan(requests=planned, max_files=max_files, in_flight_before=in_flight)


ProgressCallback = Callable[[list[StagingReport]], None]


class Stager(ABC):
    """A client for one LTA staging service. Backends implement the five primitives below.

    Transient failures (connection refused or reset, timeouts, HTTP 5xx) are retried
    ``retries`` times with exponential backoff and jitter starting at ``backoff`` seconds;
    then :class:`~gridlrt.errors.StagerUnavailable` says so in one line. Submitting is retried
    only when the request surely did not arrive (connection refused), so a retry never stages
    the same files twice.
    """

    protocol: ClassVar[Protocol]

    def __init__(self, *, retries: int = 5, backoff: float = 0.25, timeout: float = 60.0) -> None:
        self.retries = max(1, retries)
        self.backoff = backoff
        self.timeout = timeout

    # --- what a backend implements -----------------------------------------------------------

    @property
    @abstractmethod
    def service(self) -> str:
        """The service URL, safe to show (no credentials)."""

    @abstractmethod
    def submit_one(self, surls: Sequence[str]) -> int:
        """Send one staging request; return its id."""

    @abstractmethod
    def state(self, request_id: int) -> StagingState:
        """The request's current state."""

    @abstractmethod
    def progress(self, request_id: int, *, requested: int | None = None) -> Progress:
        """Files done/total. ``requested`` (the number of SURLs sent, from the records) fills
        in what a service no longer reports."""

    @abstractmethod
    def staged(self, request_id: int) -> list[str]:
        """SURLs of the request that are online now."""

    @abstractmethod
    def abort(self, request_id: int) -> None:
        """Abort a running request (or release the files of a finished one)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def webdav_urls(self, request_id: int) -> list[str]:
        """The WebDAV URLs of the staged files of a request (StageIT only)."""
        raise self._no_webdav(request_id)

    def macaroons(self, request_id: int) -> list[Macaroon]:
        """The per-site macaroons for downloading a request's files over WebDAV (StageIT
        only)."""
        raise self._no_webdav(request_id)

    def _no_webdav(self, request_id: int) -> StagingError:
        return StagingError(
            f"the {self.protocol} stager gives no WebDAV URLs or macaroons for request "
            f"{request_id}; StageIT does (api_token= in ~/.stagingrc), or copy the staged "
            "files with a grid certificate (gridlrt storage copy)"
        )

    # --- shared behaviour ----------------------------------------------------------------------

    def __enter__(self) -> Stager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def report(self, request_id: int, requested: Sequence[str] | None = None) -> StagingReport:
        """State, progress, staged SURLs, and (when finished) the SURLs that failed.

        ``requested`` are the SURLs sent (from the records): failed ones are those requested
        but not staged once the request is over.
        """
        state = self.state(request_id)
        staged = self.staged(request_id) if state is not StagingState.NEW else []
        progress = self.progress(request_id, requested=len(requested) if requested else None)
        failed = self._failed(request_id, state, staged, requested)
        if progress.total is None and requested:
            progress = progress.model_copy(update={"total": len(requested)})
        if progress.done is None or state.finished:
            progress = progress.model_copy(update={"done": len(staged)})
        if failed:
            progress = progress.model_copy(update={"failed": len(failed)})
        return StagingReport(
            request_id=request_id,
            protocol=self.protocol,
            state=state,
            progress=progress,
            staged=staged,
            failed=failed,
        )

    def _failed(
        self,
        request_id: int,
        state: StagingState,
        staged: Sequence[str],
        requested: Sequence[str] | None,
    ) -> list[str]:
        if requested and state in (StagingState.PARTIAL_SUCCESS, StagingState.FAILED):
            online = set(staged)
            return [s for s in requested if s not in online]
        return []

    def submit(
        self,
        surls: Sequence[SURL],
        *,
        max_files: int = MAX_FILES_PER_REQUEST,
        on_submitted: Callable[[StagingRequest], None] | None = None,
    ) -> list[StagingRequest]:
        """Send ``surls`` as requests of at most ``max_files`` (one site each).

        ``on_submitted`` sees each request as soon as its id is known (e.g. to record it), so
        a failure half-way loses no id. Returns every request sent.
        """
        sent: list[StagingRequest] = []
        for planned in plan_requests(surls, max_files).requests:
            urls = [s.url for s in planned.surls]
            request_id = self.submit_one(urls)
            record = StagingRequest(
                id=request_id,
                protocol=self.protocol,
                service=self.service,
                site=planned.site,
                surls=urls,
            )
            log.info(
                "staging request %d: %d file(s) at %s", request_id, len(urls), planned.site_name
            )
            sent.append(record)
            if on_submitted is not None:
                on_submitted(record)
        return sent

    def wait(
        self,
        requests: Sequence[StagingRequest],
        *,
        poll: float = 30.0,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> list[StagingReport]:
        """Poll until every request has finished; ``on_progress`` gets every round's reports.

        Raises :class:`~gridlrt.errors.StagingTimeout` after ``timeout`` seconds (the requests
        keep running on the LTA).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reports = [self.report(r.id, r.surls) for r in requests]
            if on_progress is not None:
                on_progress(reports)
            if all(r.state.finished for r in reports):
                return reports
            if deadline is not None and time.monotonic() >= deadline:
                ids = ", ".join(str(r.request_id) for r in reports if not r.state.finished)
                raise StagingTimeout(
                    f"staging request(s) {ids} still running after {timeout:g} s; they continue "
                    "on the LTA: check later with gridlrt stage status"
                )
            time.sleep(
                poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            )

    # --- retries -------------------------------------------------------------------------------

    def _retry(
        self,
        what: str,
        call: Callable[[], T],
        transient: Callable[[Exception], str | None],
    ) -> T:
        """Run ``call``; when ``transient(exc)`` names a transient problem, retry with backoff.

        ``transient`` returns a short description of a retryable problem, or ``None`` for an
        exception that must propagate at once. ``retries`` tries in all, the first wait about
        ``backoff`` seconds, doubling up to :data:`BACKOFF_CAP` (:class:`~gridlrt.retry.Backoff`).
        """

        def retrying(problem: str, _attempt: int, delay: float) -> None:
            log.info("%s: %s; retrying in %.1f s", what, problem, delay)

        def gave_up(problem: str, attempts: int) -> StagerUnavailable:
            return StagerUnavailable(
                f"LTA stager {self.service} unreachable after {attempts} attempts ({problem}); "
                "check your network, or the LTA status page, and try again later"
            )

        backoff = Backoff(tries=self.retries, base=self.backoff, cap=BACKOFF_CAP)
        return retry(call, backoff, transient=transient, gave_up=gave_up, on_retry=retrying)
