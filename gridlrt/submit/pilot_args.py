"""The ``gridlrt worker run`` arguments every backend starts its pilots with (pure)."""

from __future__ import annotations

from gridlrt.submit.model import PilotRequest

# A pilot stops taking tokens this long before the batch system would kill it.
MIN_MARGIN = 300.0
MARGIN_FRACTION = 0.1


def pilot_max_time(walltime: float) -> int:
    """Seconds a pilot may work inside a job of ``walltime`` seconds: 10 % (at least 5 min,
    at most half the job) is kept for the last upload and for the pilot to leave cleanly."""
    margin = min(max(MIN_MARGIN, walltime * MARGIN_FRACTION), walltime / 2)
    return max(1, int(walltime - margin))


def worker_options(request: PilotRequest) -> list[str]:
    """Options of ``gridlrt worker run`` for this request (pool without credentials); no
    ``--step`` when the pilots take any ready token."""
    return [
        "--pool",
        request.pool_url,
        *(["--pool-replicas", ",".join(request.pool_replicas)] if request.pool_replicas else []),
        *(["--step", request.step] if request.step is not None else []),
        "--max-time",
        f"{pilot_max_time(request.resources.walltime)}s",
        *request.worker_args,
    ]


def worker_command(request: PilotRequest, *, local: bool) -> list[str]:
    """``worker run ...`` for pilots that see this machine's files (local, Slurm on a shared
    file system): the steps directory is passed by its path."""
    command = ["worker", "run", *worker_options(request)]
    if local and request.steps_dir is not None:
        command += ["--steps-dir", str(request.steps_dir)]
    return command


def slurm_time(seconds: float) -> str:
    """Slurm's ``--time`` format, ``D-HH:MM:SS`` (rounded up to whole minutes)."""
    minutes = max(1, -(-int(seconds) // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"
