"""The submitter contract: render a submission, submit it, ask the states of its jobs, cancel.

One small module per backend implements it (:mod:`.local`, :mod:`.slurm`, :mod:`.dirac`,
:mod:`.glite`); :func:`gridlrt.submit.get_submitter` picks one by name. Rendering
(:meth:`Submitter.prepare`) is pure, so ``--dry-run`` shows exactly what would be sent.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from gridlrt.config import scrub_environment
from gridlrt.errors import SubmitError, SubmitterUnavailable, SubmitterUnreachable
from gridlrt.submit.model import JobStatus, PilotRequest, Submission

log = logging.getLogger(__name__)

CLI_TIMEOUT = 120.0


class Submitter(ABC):
    """Starts pilots on one kind of batch or grid system."""

    name: ClassVar[str]
    #: the client programs this backend needs on PATH, and how to get them
    programs: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    def __init__(
        self, env: Mapping[str, str] | None = None, *, run_dir: Path | None = None
    ) -> None:
        self.run_dir = run_dir  # of a past submission, for backends that keep state there
        #: collection id -> its member job ids, as learnt by the last :meth:`status` call
        #: (gLite parametric jobs); the members are the pilots to track from then on
        self.members: dict[str, list[str]] = {}
        source = os.environ if env is None else env
        # Pilots read the pool credentials from a 0600 file; secrets given to this process
        # in the environment (pool and LTA passwords, credential file paths, a password in
        # GRIDLRT_POOL) stay here, out of the client programs' and the pilots' environments
        # (local pilots inherit it, and sbatch exports it to the job).
        self.env = scrub_environment(source)

    @abstractmethod
    def prepare(self, request: PilotRequest) -> Submission:
        """Render the job description(s) and the submit command. Writes nothing."""

    @abstractmethod
    def _submit(self, submission: Submission) -> list[str]:
        """Run the submit command (files are written) and return the job ids."""

    @abstractmethod
    def status(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status (state, reason, exit code) of each job id (ids the backend does not
        know: UNKNOWN); those of a collection's members too, with the collection recorded in
        :attr:`members`."""

    @abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None:
        """Ask the backend to cancel these jobs (finished ones are ignored)."""

    def submit(self, submission: Submission) -> list[str]:
        """Write the rendered files into the run directory, submit, return the job ids."""
        self.check_available()
        write_files(submission)
        ids = self._submit(submission)
        if not ids:
            raise SubmitError(f"{self.name}: the submit command returned no job ids")
        log.info("%s: submitted %d job(s): %s", self.name, len(ids), ", ".join(ids[:5]))
        return ids

    def check_available(self) -> None:
        """Raise :class:`SubmitterUnavailable` when a client program is missing."""
        path = self.env.get("PATH")
        missing = [p for p in self.programs if shutil.which(p, path=path) is None]
        if missing:
            raise SubmitterUnavailable(
                f"{', '.join(missing)} not found on PATH; {self.install_hint}"
            )

    def run(
        self, argv: Sequence[str], *, cwd: Path | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run one client program (argv list, never a shell string) and return its output."""
        log.debug("%s: running %s", self.name, " ".join(argv))
        try:
            return subprocess.run(  # noqa: S603 - argv list from validated fields
                list(argv),
                cwd=cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise SubmitterUnavailable(f"{argv[0]} not found on PATH; {self.install_hint}") from exc
        except subprocess.TimeoutExpired as exc:
            raise SubmitterUnreachable(
                f"{argv[0]} did not answer within {timeout:.0f} s", command=argv
            ) from exc


def refused(
    what: str, result: subprocess.CompletedProcess[str], detail: str | None = None
) -> SubmitError:
    """The error for a client program that failed: ``WHAT: <first line of detail (default:
    its stderr)>``, carrying its argv, return code and stderr."""
    return SubmitError(
        f"{what}: {first_line(result.stderr if detail is None else detail)}",
        command=[str(a) for a in result.args],
        returncode=result.returncode,
        stderr=result.stderr,
    )


class SharedPythonSubmitter(Submitter):
    """A backend whose pilots run gridlrt from this machine's installation (``python``,
    default: the running interpreter): local processes, or a cluster sharing the file system."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        run_dir: Path | None = None,
        python: str | None = None,
    ) -> None:
        super().__init__(env, run_dir=run_dir)
        self.python = python or sys.executable


def write_files(submission: Submission) -> None:
    """Write the rendered files into the run directory (0644, executables 0755)."""
    run_dir = submission.request.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in submission.files.items():
        path = run_dir / name
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(text)
        tmp.chmod(0o755 if name in submission.executable else 0o644)
        tmp.replace(path)


def first_line(text: str) -> str:
    """The first non-empty line of a program's output (for one-line error messages)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "(no output)")
