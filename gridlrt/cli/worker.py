"""``gridlrt worker run``: the pilot command that batch and grid jobs start on worker nodes."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from pydantic import ValidationError

from gridlrt.cli.common import PoolOption, console, duration, err_console, settings
from gridlrt.config import Settings
from gridlrt.durations import format_duration
from gridlrt.errors import InputError
from gridlrt.storage import Storage
from gridlrt.tokens import open_pool
from gridlrt.worker.pilot import Pilot, PilotOptions, PilotSummary
from gridlrt.worker.steps import StepConfig, resolve_step

worker_app = typer.Typer(help="Run a pilot on this node.", no_args_is_help=True)

#: The shortest heartbeat: each one writes the token, so a shorter one floods the pool (0
#: wrote thousands of revisions of one token in seconds). Tests use sub-second ones.
MIN_HEARTBEAT = 0.1
#: names the 0600 macaroon file of a submitted pilot (``gridlrt submit --macaroons``); a
#: secret variable (:data:`gridlrt.config.SECRET_VARIABLES`): payloads never get it
MACAROON_FILE_VARIABLE = "GRIDLRT_MACAROON_FILE"


def step_resolver(steps_dir: Path | None) -> Callable[[str], StepConfig]:
    """Step configs by name: ``steps_dir/<name>.toml|.yaml`` first, then the built-in ones
    (:func:`~gridlrt.worker.steps.resolve_step`); a missing ``steps_dir`` is an error now."""
    if steps_dir is not None and not steps_dir.is_dir():
        resolve_step("", steps_dir)  # raises: --steps-dir is not a directory

    @cache
    def resolve(name: str) -> StepConfig:
        return resolve_step(name, steps_dir)

    return resolve


@worker_app.command("run")
def run(
    ctx: typer.Context,
    pool: PoolOption = None,
    step: Annotated[
        str | None, typer.Option("--step", help="Only claim tokens of this step.")
    ] = None,
    steps_dir: Annotated[
        Path | None,
        typer.Option(
            "--steps-dir",
            help="Directory with STEP.toml/.yaml files (and the files they name, e.g. sky "
            "models); steps not found there are the built-in ones.",
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=1, help="Stop after this many tokens (1 or more)."),
    ] = None,
    max_time: Annotated[
        str | None,
        typer.Option(
            "--max-time",
            help="Wall time this pilot may use (e.g. 12h); it will not "
            "start a token it cannot expect to finish. Default: no limit.",
        ),
    ] = None,
    idle_timeout: Annotated[
        str,
        typer.Option(
            "--idle-timeout",
            help="How long to wait for new tokens when none is left (0s: stop at once). "
            "Pipeline tokens waiting for parents that other pilots work on are waited for "
            "anyway.",
        ),
    ] = "0s",
    poll_interval: Annotated[
        str,
        typer.Option(
            "--poll-interval",
            help="Time between looks at the pool while there is nothing to claim.",
        ),
    ] = "5s",
    heartbeat: Annotated[
        str,
        typer.Option(
            "--heartbeat",
            help="Interval of the liveness signal to the pool (at least 0.1s; each one writes "
            "the token, so keep real runs at tens of seconds). `gridlrt tokens recover "
            "--stale-after` must be several times longer, or it takes tokens from live pilots.",
        ),
    ] = "30s",
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir", help="Scratch space (default: $TMPDIR); one directory per token."
        ),
    ] = None,
    keep_workdirs: Annotated[
        bool, typer.Option("--keep-workdirs", help="Keep each token's directory (debugging).")
    ] = False,
    output_root: Annotated[
        str | None,
        typer.Option(
            "--output-root",
            help="Base URL for outputs ({root} in URL templates). "
            "Default: storage_root setting (GRIDLRT_STORAGE_ROOT).",
        ),
    ] = None,
    pool_replicas: Annotated[
        str | None,
        typer.Option(
            "--pool-replicas",
            help="Other copies of the CouchDB pool that replicate with --pool (URLs, "
            "comma-separated): each claim is confirmed on every copy before its results are "
            "uploaded. Default: pool_replicas setting (GRIDLRT_POOL_REPLICAS).",
        ),
    ] = None,
    pool_patience: Annotated[
        str,
        typer.Option(
            "--pool-patience",
            help="How long to ride out a pool outage (CouchDB restart, network blip) before "
            "giving up: the payload keeps running and pool calls retry with backoff; a token "
            "is never failed because of an outage.",
        ),
    ] = "15m",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    status_file: Annotated[
        Path | None,
        typer.Option(
            "--status-file",
            help="Write the exit code and summary here as JSON when the pilot ends "
            "(used by the local backend of gridlrt submit).",
            hidden=True,
        ),
    ] = None,
    macaroons: Annotated[
        Path | None,
        typer.Option(
            "--macaroons",
            metavar="FILE",
            help="0600 file of '<WebDAV URL prefix> <macaroon>' lines (gridlrt stage "
            "macaroons): inputs and outputs under a prefix go with its macaroon as a bearer "
            f"token. Default: ${MACAROON_FILE_VARIABLE} (how gridlrt submit --macaroons "
            "gives it to its pilots).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Claim tokens and process them until none is left, --max-tokens, or --max-time.

    For each token: download and unpack the inputs, run the step (DP3 parset or command) in
    its own process group with the step timeout, check the output measurement set, upload the
    results and the log, and mark the token done. Failures are recorded with the log tail and
    retried up to the step's max_attempts. SIGTERM/SIGINT: the payload is killed, the token goes
    back to todo, and the pilot exits 0.

    Example: gridlrt worker run --pool https://couch.example.org:6984/lofar --step average
    """
    with _exit_status(status_file) as status:
        storage = pilot_storage(macaroons)
        options = PilotOptions(
            step=step,
            max_tokens=max_tokens,
            max_time=duration(max_time, "--max-time", example="12h") if max_time else None,
            idle_timeout=duration(idle_timeout, "--idle-timeout", zero=True, example="10m"),
            poll_interval=duration(poll_interval, "--poll-interval", example="5s"),
            heartbeat_interval=duration(heartbeat, "--heartbeat", minimum=MIN_HEARTBEAT),
            keep_workdirs=keep_workdirs,
            workroot=workdir or Path(tempfile.gettempdir()) / "gridlrt-pilot",
        )
        summary = _pilot_run(
            ctx,
            pool,
            storage,
            steps_dir,
            options,
            output_root,
            duration(pool_patience, "--pool-patience", zero=True, example="15m"),
            pool_replicas,
        )
        status["summary"] = summary.model_dump()
    if as_json:
        typer.echo(json.dumps(summary.model_dump(), indent=2))
        return
    mean = sum(summary.token_seconds) / len(summary.token_seconds) if summary.token_seconds else 0
    console.print(
        f"pilot {summary.pilot}: {summary.processed} token(s), {summary.done} done, "
        f"{summary.failed} failed, {summary.released} released"
        + (f", {summary.lost} taken away" if summary.lost else "")
        + (f", {format_duration(mean)} per token" if summary.token_seconds else "")
        + f"; stopped: {summary.stop_reason}"
    )


@contextmanager
def _exit_status(path: Path | None) -> Iterator[dict[str, object]]:
    """Write ``{"exit_code": N, ...}`` to ``path`` (if given) however the block ends."""
    status: dict[str, object] = {}
    try:
        yield status
    except BaseException as exc:
        code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
        status.update(exit_code=code, error=str(exc) or type(exc).__name__)
        raise
    else:
        status["exit_code"] = 0
    finally:
        if path is not None:
            tmp = path.with_name(f".{path.name}.part")
            tmp.write_text(json.dumps(status))
            tmp.replace(path)


def pilot_storage(macaroons: Path | None = None) -> Storage:
    """The pilot's :class:`~gridlrt.storage.Storage`, given the macaroons of ``macaroons``
    (default: the file ``$GRIDLRT_MACAROON_FILE`` names, if set) as bearer tokens for their
    URL prefixes. A missing, unsafe (not 0600) or malformed file is a
    :class:`~gridlrt.errors.CredentialsError` before any token is claimed; the macaroons are
    never shown."""
    storage = Storage()
    named = os.environ.get(MACAROON_FILE_VARIABLE)
    path = macaroons or (Path(named) if named else None)
    if path is None:
        return storage
    from gridlrt.staging.download import storage_bearers

    storage_bearers(storage, path)
    doors = sorted({prefix.split("://", 1)[1] for prefix in storage.bearer_prefixes})
    err_console.print(
        f"macaroons from {path} for {', '.join(doors)} (not shown)", highlight=False, soft_wrap=True
    )
    return storage


def _pilot_run(
    ctx: typer.Context,
    pool: str | None,
    storage: Storage,
    steps_dir: Path | None,
    options: PilotOptions,
    output_root: str | None,
    patience: float,
    replicas: str | None = None,
) -> PilotSummary:
    chosen = settings(ctx, pool)
    if replicas is not None:
        try:
            chosen = Settings.model_validate({**chosen.model_dump(), "pool_replicas": replicas})
        except ValidationError as exc:
            raise InputError(f"--pool-replicas: {exc.errors()[0]['msg']}") from None
    with open_pool(chosen, patience=patience) as opened:
        pilot = Pilot(
            opened,
            step_resolver(steps_dir),
            storage,
            storage_root=output_root or chosen.storage_root,
            options=options,
            step_dir=steps_dir,
        )

        def on_signal(signum: int, frame: FrameType | None) -> None:
            pilot.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        return pilot.run()
