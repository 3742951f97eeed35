"""The pilot: the loop that runs on every worker node.

claim a token → heartbeat in the background → fresh work directory → plan (every template
rendered before anything moves) → download and unpack inputs → run the payload (own process
group, step timeout) → validate outputs (the MS opens; channel and time counts are what the
step promises) → describe output measurement sets for the dataset catalogue (frequency,
channels, time range, stations, flagged fraction; before packing) → upload (atomic, verified)
→ finish with output URLs, exit code and timings → record the described outputs in the
catalogue (:mod:`gridlrt.datasets.catalogue`; a warning, never a failure, when that fails).

Failures go to ``fail`` with the message, traceback and log tail; a token that has not failed
its step's ``max_attempts`` times since its last reset goes back to todo for another try
(releases, lost pilots and pool outages cost no try). The pilot stops when the pool stays
empty for ``idle_timeout`` (and no token waits for parents that are being worked on), after
``max_tokens``, or when the time left is shorter than the
expected time of one more token (the mean of this pilot's tokens times ``safety_factor``). On
SIGTERM/SIGINT (:meth:`Pilot.stop`) before the upload, the payload is killed and the token goes
back to todo; once the upload has begun it is finished and so is the token (uploads are short
next to a batch system's kill grace), so no output is left at its final URL by a token in todo.

What nothing may break:

* every attempt works in its own directory (``<token>.<attempt id>``, see
  :mod:`~gridlrt.worker.workdirs`), and the payload runs under a shepherd that kills its whole
  tree when the pilot dies, even by SIGKILL (:mod:`~gridlrt.worker.shepherd`): outputs are
  written by exactly one attempt;
* a pool outage is ridden out for the pool's patience (the payload keeps running, heartbeats
  and status changes retry with backoff); only then does the pilot stop, leaving the token for
  ``tokens recover``, never failing it;
* a pilot starting on a node removes the work directories of dead pilots there.

Each claim records the pilot, host, batch job id and the sandbox id (``GRIDLRT_SANDBOX_ID``,
see :func:`sandbox_id`) in the token's attempt, for provenance.

Hook methods (:meth:`Pilot.prepare`, :meth:`Pilot.after`) are for user code, as in PiCaS.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tarfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from gridlrt.errors import (
    GridlrtError,
    InputError,
    LostClaim,
    PoolUnavailable,
    StoragePermissionDenied,
    TransfersFailed,
)
from gridlrt.sandbox.extract import extract_tarball
from gridlrt.storage import Storage, TransferResult
from gridlrt.tokens import PilotInfo, Token, TokenPool, TokenStatus
from gridlrt.tokens.model import UploadResult
from gridlrt.worker.dp3 import find_dp3
from gridlrt.worker.environment import payload_environment
from gridlrt.worker.payload import log_tail, run_payload
from gridlrt.worker.plan import TokenPlan, plan_token
from gridlrt.worker.steps import StepConfig
from gridlrt.worker.workdirs import attempt_dir, clean_dead, remove_workdir

log = logging.getLogger(__name__)

JOB_ID_VARIABLES = ("SLURM_JOB_ID", "DIRACJOBID", "GLITE_WMS_JOBID", "GRIDLRT_JOB_ID")


def batch_job_id(env: dict[str, str] | None = None) -> str | None:
    """The batch/grid job id of this pilot, from the environment the batch system sets."""
    env = dict(os.environ) if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return next((env[name] for name in JOB_ID_VARIABLES if env.get(name)), None)


#: The sandbox the pilot runs from: its id (sha256), exported by pilot.sh once verified.
SANDBOX_ID_VARIABLE = "GRIDLRT_SANDBOX_ID"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sandbox_id(env: dict[str, str] | None = None) -> str | None:
    """The id of the sandbox this pilot runs from (``GRIDLRT_SANDBOX_ID``), for the provenance
    of every attempt; None when unset, or (with a warning) when it is no sha256."""
    env = dict(os.environ) if env is None else env
    value = env.get(SANDBOX_ID_VARIABLE, "").strip().lower()
    if not value:
        return None
    if not _SHA256.fullmatch(value):
        log.warning(
            "%s=%r is not a sha256; the sandbox is not recorded", SANDBOX_ID_VARIABLE, value
        )
        return None
    return value


class PilotOptions(BaseModel):
    step: str | None = Field(default=None, description="only claim tokens of this step")
    max_tokens: int | None = None
    max_time: float | None = Field(default=None, description="seconds this pilot may run")
    idle_timeout: float = Field(default=0.0, description="wait this long for new tokens")
    poll_interval: float = 5.0
    heartbeat_interval: float = 30.0
    safety_factor: float = 1.5
    grace: float = 10.0
    keep_workdirs: bool = False
    workroot: Path


class PilotSummary(BaseModel):
    pilot: str
    processed: int = 0
    done: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0  # taken from this pilot (recovered, reset, or another replica's claim won)
    stop_reason: str = ""
    token_seconds: list[float] = Field(default_factory=list)


class TokenFailure(Exception):
    """Raised inside the pilot to fail a token with a message and (maybe) a log tail."""

    def __init__(self, message: str, *, exit_code: int = 1, retry: bool = True) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.retry = retry


class _Stopped(Exception):
    """The pilot was told to stop while working on a token."""


class Heartbeat(threading.Thread):
    """Beats for one token until stopped; notices when the token was taken away."""

    def __init__(self, pool: TokenPool, token_id: str, pilot: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{token_id}", daemon=True)
        self.pool, self.token_id, self.pilot, self.interval = pool, token_id, pilot, interval
        self.finished = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        """Every ``interval``: heartbeat with the node's 1-minute load and, where
        /proc/meminfo exists, its memory (``mem_used_pct``, ``mem_total_mb``); what the node
        cannot tell is left out."""
        while not self.finished.wait(self.interval):
            info: dict[str, float] = {}
            try:
                info["load"] = round(os.getloadavg()[0], 2)
            except OSError:
                log.debug("no load average on this node")
            try:
                kib = {
                    key: float(rest.split()[0])
                    for key, _, rest in (
                        line.partition(":")
                        for line in Path("/proc/meminfo").read_text().splitlines()
                    )
                    if key in ("MemTotal", "MemAvailable")
                }
                total, available = kib["MemTotal"], kib["MemAvailable"]
                if total > 0:
                    info["mem_used_pct"] = round(100.0 * (1.0 - available / total), 1)
                    info["mem_total_mb"] = round(total / 1024.0)
            except (OSError, ValueError, KeyError, IndexError):
                log.debug("no memory figures on this node (/proc/meminfo)")
            try:
                self.pool.heartbeat(self.token_id, self.pilot, info)
            except LostClaim:
                log.warning("token %s was taken from this pilot", self.token_id)
                self.lost.set()
                return
            except GridlrtError as exc:  # the pool is briefly unreachable: keep trying
                log.warning("heartbeat for %s failed: %s", self.token_id, exc)


class Pilot:
    """Processes tokens from ``pool`` until a stop condition; see the module docstring."""

    def __init__(
        self,
        pool: TokenPool,
        resolve_step: Callable[[str], StepConfig],
        storage: Storage,
        *,
        storage_root: str,
        options: PilotOptions,
        who: PilotInfo | None = None,
        step_dir: Path | None = None,
    ) -> None:
        self.pool = pool
        self.resolve_step = resolve_step
        self.storage = storage
        self.storage_root = storage_root
        self.options = options
        self.step_dir = step_dir
        self.who = who or PilotInfo(
            pilot=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            host=socket.gethostname(),
            job_id=batch_job_id(),
            heartbeat_interval=options.heartbeat_interval,
            sandbox=sandbox_id(),
        )
        self.stop_event = threading.Event()
        self.summary = PilotSummary(pilot=self.who.pilot)
        self._started = time.monotonic()
        self._claim_seconds = 0.0

    # --- hooks for user code --------------------------------------------------------------

    def prepare(self, token: Token, plan: TokenPlan) -> None:
        """Called after the inputs are in place, before the payload runs."""

    def after(self, token: Token, plan: TokenPlan) -> None:
        """Called after a token finished successfully."""

    # --- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the pilot to stop (signal handlers call this)."""
        self.stop_event.set()

    def _time_left_enough(self) -> bool:
        if self.options.max_time is None:
            return True
        left = self.options.max_time - (time.monotonic() - self._started)
        times = self.summary.token_seconds
        expected = (sum(times) / len(times)) * self.options.safety_factor if times else 0.0
        return left > expected and left > 0

    def _next_token(self) -> Token | None:
        """The next token; past the idle timeout, keep polling only while tokens wait for
        parents that other pilots are working on (the next stage of a pipeline)."""
        waited_since = time.monotonic()
        told = False
        while not self.stop_event.is_set():
            token = self.pool.claim(self.who, self.options.step)
            if token is not None:
                return token
            if time.monotonic() - waited_since >= self.options.idle_timeout:
                if not self.pool.work_may_appear(self.options.step):
                    self.summary.stop_reason = "no more tokens"
                    return None
                if not told:
                    log.info("nothing to claim yet: tokens wait for parents still being worked on")
                    told = True
            self.stop_event.wait(self.options.poll_interval)
        return None

    def run(self) -> PilotSummary:
        """The loop. Returns what was done and why it stopped."""
        log.info("pilot %s starting on %s (job %s)", self.who.pilot, self.who.host, self.who.job_id)
        clean_dead(self.options.workroot)
        while True:
            if self.stop_event.is_set():
                self.summary.stop_reason = "stopped by signal"
                break
            if (
                self.options.max_tokens is not None
                and self.summary.processed >= self.options.max_tokens
            ):
                self.summary.stop_reason = (
                    f"processed {self.summary.processed} token(s) (--max-tokens)"
                )
                break
            if not self._time_left_enough():
                self.summary.stop_reason = "not enough time left for another token (--max-time)"
                break
            t0 = time.monotonic()
            token = self._next_token()
            self._claim_seconds = time.monotonic() - t0
            if token is None:
                if self.stop_event.is_set():
                    self.summary.stop_reason = "stopped by signal"
                break
            self._process(token)
        log.info("pilot %s stops: %s", self.who.pilot, self.summary.stop_reason)
        return self.summary

    # --- one token ---------------------------------------------------------------------------

    def _process(self, token: Token) -> None:
        started = time.monotonic()
        timings: dict[str, float] = {"claim": self._claim_seconds}
        attempt = token.current_attempt
        workdir = attempt_dir(self.options.workroot, token.id, attempt.id if attempt else "0")
        beat = Heartbeat(self.pool, token.id, self.who.pilot, self.options.heartbeat_interval)
        beat.start()
        plan: TokenPlan | None = None
        step: StepConfig | None = None
        try:
            step = self.resolve_step(token.step)
            plan = plan_token(
                step,
                token,
                workdir=workdir,
                storage_root=self.storage_root,
                step_dir=self.step_dir,
                dp3=find_dp3(),
            )
            self._set(token, TokenStatus.DOWNLOADING)
            timings["download"] = self._timed(lambda: self._download(plan))
            self.prepare(token, plan)
            self._set(token, TokenStatus.RUNNING)
            timings["run"] = self._timed(lambda: self._run(plan, beat))
            timings["validate"] = self._timed(lambda: self._validate(plan))
            described: dict[str, dict[str, Any]] = {}
            timings["catalogue"] = self._timed(lambda: described.update(describe_outputs(plan)))
            self._set(token, TokenStatus.UPLOADING)
            # Nothing is published under a final name before the claim is sure to be the
            # only one (on a replicated pool, every copy has it; a no-op on one server).
            self.pool.confirm(token.id, self.who.pilot)
            # From here on a stop request waits: the upload and the token are finished.
            t_upload = time.monotonic()
            uploads = self._upload(plan)
            timings["upload"] = time.monotonic() - t_upload
            self._attach_log(token, plan)
            self.pool.finish(
                token.id,
                self.who.pilot,
                output=[u.url for u in plan.uploads],
                uploads=[
                    UploadResult(url=r.dst, size=r.size, checksum=r.checksum) for r in uploads
                ],
                timings={**timings, "total": time.monotonic() - started},
            )
            self.summary.done += 1
            record_outputs(self.pool, token, described, uploads)
            self.after(token, plan)
        except _Stopped:
            self._release(token)
        except LostClaim as exc:
            self.summary.lost += 1
            log.warning("%s; its work here is discarded", exc)
        except PoolUnavailable:
            # The pool stayed away longer than our patience: nothing can be recorded. The
            # token stays with this (ending) pilot until `tokens recover`; it is not failed.
            log.error(
                "token %s left for `gridlrt tokens recover`: the pool is unreachable", token.id
            )
            raise
        except (TokenFailure, InputError, GridlrtError) as exc:
            retry = getattr(exc, "retry", not isinstance(exc, InputError))
            code = getattr(exc, "exit_code", 1)
            self._fail(token, step, plan, str(exc), "", retry=retry, exit_code=code)
        except Exception as exc:  # a bug or an unexpected environment: record it, go on
            log.exception("token %s failed unexpectedly", token.id)
            self._fail(
                token,
                step,
                plan,
                f"{type(exc).__name__}: {exc}",
                traceback.format_exc(),
                retry=True,
                exit_code=1,
            )
        finally:
            beat.finished.set()
            beat.join(5)
            self.summary.processed += 1
            self.summary.token_seconds.append(time.monotonic() - started)
            if not self.options.keep_workdirs:
                remove_workdir(workdir)

    def _timed(self, action: Callable[[], object]) -> float:
        t0 = time.monotonic()
        action()
        if self.stop_event.is_set():
            raise _Stopped
        return time.monotonic() - t0

    def _set(self, token: Token, status: TokenStatus) -> None:
        if self.stop_event.is_set():
            raise _Stopped
        self.pool.set_status(token.id, self.who.pilot, status)

    def _download(self, plan: TokenPlan) -> None:
        if not plan.downloads:
            return
        pairs = [(d.url, d.path.resolve().as_uri()) for d in plan.downloads]
        try:
            self.storage.copy_many(pairs, max_in_flight=4)
        except TransfersFailed as exc:
            hint = macaroon_hint(exc, self.storage.bearer_prefixes)
            if hint:
                raise TransfersFailed(
                    f"{exc}; {hint}", failures=exc.failures, results=exc.results
                ) from exc
            raise
        for item in plan.downloads:
            if item.extract_to is not None:
                extract_ms(item.path, item.extract_to)
                item.path.unlink()

    def _run(self, plan: TokenPlan, beat: Heartbeat) -> None:
        if plan.parset is not None:
            (plan.workdir / "step.parset").write_text(plan.parset)
        lost = threading.Event()
        watcher = threading.Thread(
            target=_either, args=(self.stop_event, beat.lost, lost), daemon=True
        )
        watcher.start()
        result = run_payload(
            plan.argv,
            cwd=plan.workdir,
            log_path=plan.workdir / "payload.log",
            env=payload_environment(),  # no gridlrt secret reaches a payload
            timeout=plan.timeout,
            grace=self.options.grace,
            stop=lost,
        )
        lost.set()
        if beat.lost.is_set():
            raise LostClaim(f"token {plan.token_id} was taken from this pilot while running")
        if result.interrupted:
            raise _Stopped
        if result.timed_out:
            raise TokenFailure(
                f"payload killed after the step timeout of {plan.timeout:.0f} s", exit_code=124
            )
        if result.exit_code != 0:
            raise TokenFailure(
                f"{Path(plan.argv[0]).name} exited with {result.exit_code}",
                exit_code=result.exit_code,
            )

    def _validate(self, plan: TokenPlan) -> None:
        for upload in plan.uploads:
            if not upload.path.exists():
                raise TokenFailure(
                    f"expected output {upload.path.name} was not produced", retry=False
                )
        if plan.msout is None or not plan.msin or plan.msout not in [u.path for u in plan.uploads]:
            return
        # imported here: numpy and python-casacore are needed only for measurement-set outputs
        from gridlrt.worker.msinfo import ms_info

        try:
            before, after = ms_info(plan.msin[0]), ms_info(plan.msout)
        except InputError as exc:
            raise TokenFailure(f"output does not open as a measurement set: {exc}") from exc
        channels = before.channels // plan.freqstep
        timeslots = -(-before.timeslots // plan.timestep)
        if (after.channels, after.timeslots) != (channels, timeslots):
            raise TokenFailure(
                f"output has {after.channels} channels x {after.timeslots} timeslots; the step "
                f"promises {channels} x {timeslots}",
                retry=False,
            )

    def _upload(self, plan: TokenPlan) -> list[TransferResult]:
        """Every output (atomically, verified), then the log. Not interrupted by a stop request.
        Should one upload fail, the outputs already at their final URLs are removed again, so
        a token that is not done has no results out there."""
        results: list[TransferResult] = []
        try:
            for upload in plan.uploads:
                source = upload.path
                if upload.pack:
                    source = pack_directory(upload.path, plan.workdir / "upload")
                results.append(self.storage.copy(source.resolve().as_uri(), upload.url))
            if plan.log_url:
                log_file = plan.workdir / "payload.log"
                if log_file.exists():
                    results.append(self.storage.copy(log_file.resolve().as_uri(), plan.log_url))
        except BaseException:
            for done in results:
                try:
                    self.storage.delete(done.dst, missing_ok=True)
                except GridlrtError as exc:
                    log.warning("could not remove %s after a failed upload: %s", done.dst, exc)
            raise
        return results

    def _attach_log(self, token: Token, plan: TokenPlan) -> None:
        tail = log_tail(plan.workdir / "payload.log", 100)
        if tail:
            self.pool.attach(token.id, "log_tail.txt", tail.encode())

    def _release(self, token: Token) -> None:
        try:
            self.pool.release(token.id, self.who.pilot)
            self.summary.released += 1
            log.info("released %s back to todo", token.id)
        except LostClaim:
            pass

    def _fail(
        self,
        token: Token,
        step: StepConfig | None,
        plan: TokenPlan | None,
        message: str,
        trace: str,
        *,
        retry: bool,
        exit_code: int,
    ) -> None:
        tail = log_tail(plan.workdir / "payload.log", 50) if plan else ""
        failures = token.attempts_since_reset("error") + 1  # this one is still open
        max_attempts = step.max_attempts if step else 1
        again = retry and failures < max_attempts
        log.warning(
            "token %s failed (%s), failure %d of %d%s",
            token.id,
            message,
            failures,
            max_attempts,
            "; will retry" if again else "",
        )
        try:
            if tail:
                self.pool.attach(token.id, "log_tail.txt", tail.encode())
            self.pool.fail(
                token.id,
                self.who.pilot,
                message,
                exception=trace,
                log_tail=tail,
                exit_code=exit_code or 1,
                retry=again,
            )
            self.summary.failed += 1
        except LostClaim:
            pass


def _either(first: threading.Event, second: threading.Event, out: threading.Event) -> None:
    while not out.is_set():
        if first.is_set() or second.is_set():
            out.set()
            return
        out.wait(0.2)


def macaroon_hint(failed: TransfersFailed, prefixes: list[str]) -> str:
    """What to do when a WebDAV door refused inputs this pilot has no bearer token for (a
    dCache door behind StageIT macaroons answers 401): empty when that is not the case."""
    refused = [
        src
        for src, _, error in failed.failures
        if src.split("://", 1)[0].lower() in ("http", "https", "dav", "davs")
        and (isinstance(error, StoragePermissionDenied) or " 401" in str(error))
        and not any(src.startswith(prefix) for prefix in prefixes)
    ]
    if not refused:
        return ""
    return (
        "the WebDAV door refused this pilot, which has no macaroon for it: if the files were "
        "staged with StageIT, give the pilots its macaroons (gridlrt stage macaroons ID -o "
        "FILE, then gridlrt submit ... --macaroons FILE)"
    )


def describe_outputs(plan: TokenPlan) -> dict[str, dict[str, Any]]:
    """What the dataset catalogue records of each output measurement set (by upload URL), read
    on the node before packing (:func:`gridlrt.worker.msinfo.catalogue_fields`). A set that
    cannot be read is left out with a warning: the catalogue never fails a token."""
    described: dict[str, dict[str, Any]] = {}
    for upload in plan.uploads:
        if not (upload.path / "table.dat").is_file():
            continue  # not a measurement set
        try:
            from gridlrt.worker.msinfo import catalogue_fields  # numpy, casacore: on use

            described[upload.url] = catalogue_fields(upload.path)
        except Exception as exc:  # never the token's failure
            log.warning("catalogue: %s not described (%s)", upload.path.name, exc)
    return described


def record_outputs(
    pool: TokenPool,
    token: Token,
    described: dict[str, dict[str, Any]],
    uploads: list[TransferResult],
) -> None:
    """Record the described outputs in the pool's dataset catalogue (by URL: a redone token
    overwrites its records), with the uploads' sizes and checksums. Called once the token is
    done; a failure is a warning."""
    if not described:
        return
    try:
        from gridlrt.datasets import catalogue

        by_url = {r.dst: r for r in uploads}
        entries = [
            catalogue.output_entry(
                url,
                token=token,
                fields=fields,
                size=by_url[url].size if url in by_url else None,
                checksum=by_url[url].checksum if url in by_url else None,
            )
            for url, fields in described.items()
        ]
        catalogue.record(pool, entries)
    except Exception as exc:  # the token is done; a missing record is not its failure
        log.warning("catalogue: records of token %s not written (%s)", token.id, exc)


def pack_directory(directory: Path, into: Path) -> Path:
    """``directory`` as ``<into>/<name>.tar`` (LTA style: the MS directory at the top)."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{directory.name}.tar"
    with tarfile.open(target, "w") as tar:
        tar.add(directory, arcname=directory.name)
    return target


def extract_ms(tarball: Path, expected: Path) -> Path:
    """Unpack an archive tar holding one measurement set so that it is ``expected``, refusing
    unsafe members (see :mod:`gridlrt.sandbox.extract`)."""
    unpacked = expected.parent / f".unpack-{expected.name}"
    shutil.rmtree(unpacked, ignore_errors=True)
    extract_tarball(tarball, unpacked)
    found = [p for p in unpacked.iterdir() if p.is_dir() and p.suffix.upper() == ".MS"]
    if (unpacked / "table.dat").is_file():  # the tar held the MS contents, not the directory
        found = [unpacked]
    if len(found) != 1:
        raise TokenFailure(f"{tarball.name} holds no single measurement set", retry=False)
    found[0].rename(expected)
    shutil.rmtree(unpacked, ignore_errors=True)
    return expected
