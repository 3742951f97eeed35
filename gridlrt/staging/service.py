"""Staging as a service: what ``gridlrt stage ...`` does between parsing options and printing,
so a notebook gets the same behaviour as the shell.

The glue between an SRM list, the local request records (:mod:`~gridlrt.staging.records`) and
the LTA stager clients (:func:`~gridlrt.staging.open_stager`):

* :func:`select_surls` / :func:`locality_targets` - the files of a list, restricted to subbands;
* :func:`plan_submission` / :func:`dry_run_target` - what ``submit`` would send, and where;
* :func:`submit_requests` / :func:`wait_for` - send, wait, and record every answer;
* :func:`refresh` - ask each service about its unfinished requests (grouped by service; a
  service in trouble is reported and its records kept, the others are still asked);
* :func:`request_status` / :func:`abort_request` - one request, its record kept up to date;
* :func:`stager_for` - the client for a recorded request (its own protocol and service unless
  told otherwise); :func:`is_srm_list` - whether a file is an SRM list or a plain URL list.

No printing: problems worth a warning are returned (and logged), errors are raised.

Functions that open a client take the settings, or a function returning them
(:data:`SettingsSource`), called only when a client is opened: after the records were read,
never for a dry run, as the command line has always done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gridlrt.config import Settings
from gridlrt.errors import CredentialsError, InputError, StagingError
from gridlrt.staging import open_stager, service_url
from gridlrt.staging.credentials import (
    DEFAULT_PROTOCOL,
    load_lta_credentials,
    requested_protocol,
)
from gridlrt.staging.lists import Duplicate, read_srm_list, read_url_list
from gridlrt.staging.ranges import format_ranges
from gridlrt.staging.records import RequestStore
from gridlrt.staging.stager import (
    MAX_FILES_PER_REQUEST,
    Plan,
    Protocol,
    Stager,
    StagingReport,
    StagingRequest,
    StagingState,
    plan_requests,
)
from gridlrt.staging.surl import SURL, select_subbands

log = logging.getLogger(__name__)

ReportsCallback = Callable[[list[StagingReport]], None]
SettingsSource = Settings | Callable[[], Settings]
"""Settings, or a function giving them when they are first needed."""


def _settings(source: SettingsSource) -> Settings:
    return source if isinstance(source, Settings) else source()


# --- reading lists ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The files chosen from a list, and the duplicate lines that were dropped from it."""

    source: Path
    surls: list[SURL] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    """Every chosen file's URL, in list order (for an SRM list: the SURLs' URLs)."""
    duplicates: list[Duplicate] = field(default_factory=list)


def select_surls(path: Path, subbands: str | None = None) -> Selection:
    """The SURLs of the SRM list ``path`` (strict: a bad line is an :class:`InputError`),
    restricted to ``subbands`` (LEDAMA ranges); :class:`InputError` when that leaves none."""
    srm_list = read_srm_list(path)
    for dup in srm_list.duplicates:
        log.info("%s:%d: duplicate of line %d, dropped", path, dup.line, dup.first_line)
    surls = srm_list.surls
    if subbands is not None:
        chosen = select_subbands(surls, subbands)
        if not chosen:
            have = format_ranges(s.subband for s in surls if s.subband is not None) or "none"
            raise InputError(
                f"--subbands {subbands} matches no file in {path} (its subbands: {have})"
            )
        surls = chosen
    return Selection(path, surls, [s.url for s in surls], list(srm_list.duplicates))


def is_srm_list(path: Path) -> bool:
    """True when ``path`` names an ``srm://`` URL anywhere (an SRM list), False for a plain
    URL list. An unreadable file counts as an SRM list, so reading it gives the one-line
    error of :func:`~gridlrt.staging.lists.read_srm_list`."""
    try:
        return "srm://" in path.read_text(encoding="utf-8-sig", errors="replace").lower()
    except OSError:
        return True


def locality_targets(path: Path, subbands: str | None = None) -> Selection:
    """The URLs whose locality ``stage check`` asks: an SRM list's SURLs (restricted to
    ``subbands``), or a plain URL list (``file://``, ``dav://`` ...), which takes no
    ``subbands``."""
    if is_srm_list(path):
        return select_surls(path, subbands)
    if subbands is not None:
        raise InputError(f"--subbands needs an SRM list; {path} has no srm:// URL")
    return Selection(path, urls=read_url_list(path))


# --- submitting --------------------------------------------------------------------------------


def plan_submission(
    surls: Sequence[SURL], max_files: int = MAX_FILES_PER_REQUEST, *, store: RequestStore
) -> Plan:
    """The requests ``submit`` would send, counting the files of the unfinished requests in
    ``store`` towards the files-in-flight limit."""
    return plan_requests(surls, max_files, in_flight=store.in_flight())


@dataclass(frozen=True)
class Target:
    """Where a submission would go, found without contacting anything (no secret in it)."""

    protocol: Protocol
    service: str
    problem: str | None = None
    """Why no usable credentials were found (the plan can still be shown), or None."""


def dry_run_target(
    settings: SettingsSource, protocol: str | None = None, stager_url: str | None = None
) -> Target:
    """The protocol and service URL a submission would use. Without usable credentials the
    chosen protocol (default StageIT) is assumed and the problem returned, not raised."""
    loaded = _settings(settings)
    try:
        creds = load_lta_credentials(loaded, protocol)
    except CredentialsError as exc:
        chosen: Protocol = requested_protocol(protocol, loaded) or DEFAULT_PROTOCOL
        return Target(chosen, service_url(chosen, stager_url), str(exc))
    return Target(creds.protocol, service_url(creds.protocol, stager_url, creds.hostname))


def submit_requests(
    stager: Stager,
    surls: Sequence[SURL],
    *,
    max_files: int = MAX_FILES_PER_REQUEST,
    store: RequestStore,
) -> list[StagingRequest]:
    """Send ``surls`` (per site, at most ``max_files`` a request) and record each request in
    ``store`` as soon as its id is known, so a failure half-way loses no id."""
    return stager.submit(surls, max_files=max_files, on_submitted=store.save)


def wait_for(
    stager: Stager,
    sent: Sequence[StagingRequest],
    *,
    poll: float = 30.0,
    timeout: float | None = None,
    store: RequestStore,
    on_progress: ReportsCallback | None = None,
) -> list[StagingReport]:
    """Poll until every request in ``sent`` finished, saving every round's answers in
    ``store``; ``on_progress`` then sees the round's reports. Raises
    :class:`~gridlrt.errors.StagingTimeout` after ``timeout`` seconds."""
    by_id = {r.id: r for r in sent}

    def record(reports: list[StagingReport]) -> None:
        for report in reports:
            store.save(by_id[report.request_id].updated(report))
        if on_progress is not None:
            on_progress(reports)

    return stager.wait(sent, poll=poll, timeout=timeout, on_progress=record)


# --- following requests ------------------------------------------------------------------------


def latest_record(store: RequestStore, request_id: int) -> StagingRequest | None:
    """The most recent record of ``request_id`` (any service), or None."""
    found = store.find(request_id)
    return found[-1] if found else None


def stager_for(
    settings: SettingsSource,
    record: StagingRequest | None,
    protocol: str | None = None,
    stager_url: str | None = None,
) -> Stager:
    """The client to ask about a request: the protocol and service it was recorded with,
    unless ``protocol`` or ``stager_url`` is given (then those, as for a new submission)."""
    if record is not None and protocol is None and stager_url is None:
        return open_stager(_settings(settings), record.protocol, record.service)
    return open_stager(_settings(settings), protocol, stager_url)


@dataclass(frozen=True)
class ServiceProblem:
    """A service that could not be asked; its requests keep their recorded states."""

    protocol: Protocol
    service: str
    message: str


@dataclass(frozen=True)
class Refreshed:
    """Records after :func:`refresh`, in the order given, and the services that failed."""

    records: list[StagingRequest]
    problems: list[ServiceProblem] = field(default_factory=list)


def refresh(
    settings: SettingsSource,
    store: RequestStore,
    records: Sequence[StagingRequest] | None = None,
) -> Refreshed:
    """Ask each service about the unfinished ones of ``records`` (default: every record in
    ``store``), one client per (protocol, service), and save the answers.

    A :class:`~gridlrt.errors.StagingError` from one service (unreachable, refused) does not
    stop the others: it is logged and returned in :attr:`Refreshed.problems`, and that
    service's requests keep what was recorded (answers saved before the error are kept).
    """
    records = list(store.all() if records is None else records)
    pending: dict[tuple[Protocol, str], list[StagingRequest]] = {}
    for record in records:
        if not record.state.finished:
            pending.setdefault((record.protocol, record.service), []).append(record)
    fresh = {(r.service, r.id): r for r in records}
    problems: list[ServiceProblem] = []
    for (protocol, service), group in pending.items():
        try:
            with open_stager(_settings(settings), protocol, service) as stager:
                for record in group:
                    updated = record.updated(stager.report(record.id, record.surls))
                    store.save(updated)
                    fresh[(record.service, record.id)] = updated
        except StagingError as exc:
            log.warning("showing recorded states for %s: %s", service, exc)
            problems.append(ServiceProblem(protocol, service, str(exc)))
    return Refreshed([fresh[(r.service, r.id)] for r in records], problems)


@dataclass(frozen=True)
class RequestStatus:
    """One request as its service reports it now, with its record (None: not recorded)."""

    report: StagingReport
    service: str
    record: StagingRequest | None


def request_status(
    settings: SettingsSource,
    store: RequestStore,
    request_id: int,
    *,
    protocol: str | None = None,
    stager_url: str | None = None,
) -> RequestStatus:
    """Ask about one request (through :func:`stager_for`) and update its record, when it has
    one at the service asked. A request without a record can still be asked about."""
    record = latest_record(store, request_id)
    with stager_for(settings, record, protocol, stager_url) as stager:
        report = stager.report(request_id, record.surls if record else None)
        service = stager.service
    if record is not None and record.service == service:
        store.save(record.updated(report))
    return RequestStatus(report, service, record)


@dataclass(frozen=True)
class Aborted:
    """The outcome of :func:`abort_request`; ``state`` is None for a dry run."""

    request_id: int
    record: StagingRequest | None
    state: StagingState | None = None


def abort_request(
    settings: SettingsSource,
    store: RequestStore,
    request_id: int,
    *,
    protocol: str | None = None,
    stager_url: str | None = None,
    dry_run: bool = False,
) -> Aborted:
    """Abort a request (or release the files of a finished one) and record the state the
    service reports afterwards. ``dry_run``: only look up the record (the settings are not
    read, nothing is contacted)."""
    record = latest_record(store, request_id)
    if dry_run:
        return Aborted(request_id, record)
    with stager_for(settings, record, protocol, stager_url) as stager:
        stager.abort(request_id)
        state = stager.state(request_id)
        if record is not None and record.service == stager.service:
            store.save(record.model_copy(update={"state": state}))
    return Aborted(request_id, record, state)
