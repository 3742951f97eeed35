"""The ``local`` backend: N detached pilot processes on this machine.

Each pilot is ``python -m gridlrt worker run ...`` in its own session (it survives the
submitting command), logging to ``<run_dir>/pilot-<i>.log`` and writing its exit code to
``pilot-<i>.status`` when it ends. A job id is the pilot's pid (``pilot-<pid>.index`` maps
it to its ``i``); the start time read from ``/proc`` guards against a recycled pid. Cancel
sends SIGTERM: the pilot kills its payload, puts its token back to todo and exits.

States: a live process (same start time) is RUNNING; a cancelled one CANCELLED; an ended one
COMPLETED when its status file says exit code 0, else FAILED (reason: the status file's error,
or "no status file" for a pilot killed without a word). Local pilots are never pending, held
or timed out (``--max-time`` makes a pilot stop by itself, with exit code 0); a pid without an
index file is UNKNOWN.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from gridlrt.errors import SubmitError
from gridlrt.procfs import start_time
from gridlrt.submit.base import SharedPythonSubmitter
from gridlrt.submit.model import JobState, JobStatus, PilotRequest, Submission
from gridlrt.submit.pilot_args import worker_command


def _unblock_signals() -> None:  # pragma: no cover - runs in the child
    # gfal2 blocks signals in threads that created a context; a pilot must receive SIGTERM.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


class LocalSubmitter(SharedPythonSubmitter):
    """Pilots as background processes of this machine."""

    name = "local"
    programs = ()

    def prepare(self, request: PilotRequest) -> Submission:
        command = [self.python, "-m", "gridlrt", *worker_command(request, local=True)]
        return Submission(backend=self.name, request=request, files={}, command=command)

    def _submit(self, submission: Submission) -> list[str]:
        run_dir = submission.request.run_dir
        env = dict(self.env)
        if submission.request.credentials_file is not None:
            env["GRIDLRT_POOL_CREDENTIALS"] = str(submission.request.credentials_file)
        if submission.request.macaroon_file is not None:
            env["GRIDLRT_MACAROON_FILE"] = str(submission.request.macaroon_file)
        ids: list[str] = []
        for index in range(submission.request.count):
            env["GRIDLRT_JOB_ID"] = f"{run_dir.name}-{index}"
            command = [*submission.command, "--status-file", f"pilot-{index}.status"]
            with (run_dir / f"pilot-{index}.log").open("ab") as log:
                try:
                    process = subprocess.Popen(  # noqa: S603 - argv list, no shell
                        command,
                        cwd=run_dir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=_unblock_signals,
                    )
                except OSError as exc:
                    raise SubmitError(f"cannot start a local pilot: {exc}") from exc
            pid = process.pid
            (run_dir / f"pilot-{pid}.index").write_text(f"{index} {start_time(pid) or ''}\n")
            ids.append(str(pid))
        return ids

    def _files(self, pid: str) -> tuple[Path, Path]:
        if self.run_dir is None:
            raise SubmitError("the local backend needs the run directory to look at its pilots")
        return self.run_dir / f"pilot-{pid}.index", self.run_dir / f"pilot-{pid}.cancelled"

    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return {job_id: self._status(job_id) for job_id in job_ids}

    def _status(self, job_id: str) -> JobStatus:
        index_file, cancelled = self._files(job_id)
        try:
            index, _, started = index_file.read_text().strip().partition(" ")
        except OSError:
            return JobStatus(state=JobState.UNKNOWN, reason=f"no {index_file.name}")
        now = start_time(int(job_id))
        if now is not None and (not started or now == started):
            return JobStatus(state=JobState.RUNNING)
        status_file = index_file.with_name(f"pilot-{index}.status")
        try:
            status = json.loads(status_file.read_text())
            code, error = status.get("exit_code"), status.get("error")
        except (OSError, ValueError, AttributeError):
            # killed without a word (SIGKILL, OOM, reboot)
            code, error = None, f"no {status_file.name}: killed without a word?"
        code = code if isinstance(code, int) else None
        if cancelled.exists():
            return JobStatus(state=JobState.CANCELLED, reason="cancelled", exit_code=code)
        state = JobState.COMPLETED if code == 0 else JobState.FAILED
        return JobStatus(state=state, reason=error, exit_code=code)

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job_id, status in self.status(job_ids).items():
            if status.state is not JobState.RUNNING:
                continue
            _, cancelled = self._files(job_id)
            cancelled.touch()
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(job_id), signal.SIGTERM)
