"""Request records: which staging requests this user submitted, so ``gridlrt stage status``
can show them all without an id.

Owns one JSON file, ``$XDG_DATA_HOME/gridlrt/staging-requests.json`` (default
``~/.local/share/gridlrt/``), holding :class:`~gridlrt.staging.stager.StagingRequest` records:
id, protocol, service URL (never with credentials), site, SURLs, submission time, last known
state and progress. A local file rather than the token pool: staging happens before there is
a pool, and it works on any login node. Writes are atomic (a temporary file in the same
directory, then ``os.replace``) and serialised with an exclusive lock on a side file, so two
``gridlrt`` processes never lose each other's records.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from gridlrt.config import data_dir
from gridlrt.errors import InputError, StagingRequestNotFound
from gridlrt.staging.stager import StagingRequest

FILE_NAME = "staging-requests.json"


def default_path() -> Path:
    return data_dir() / FILE_NAME


class _Document(BaseModel):
    version: int = 1
    requests: list[StagingRequest] = []


class RequestStore:
    """The records file; every method reads it fresh, so several processes can share it."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(self.path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[StagingRequest]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read staging records ({exc.strerror})") from None
        try:
            return _Document.model_validate_json(text).requests
        except (ValidationError, ValueError):
            raise InputError(
                f"{self.path}: staging records are damaged; move the file away to start afresh"
            ) from None

    def _write(self, records: list[StagingRequest]) -> None:
        data = _Document(requests=records).model_dump(mode="json")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(tmp).unlink()
            raise

    def all(self) -> list[StagingRequest]:
        """Every record, oldest first."""
        return sorted(self._read(), key=lambda r: r.submitted)

    def find(self, request_id: int) -> list[StagingRequest]:
        """Records with this id (one per service, usually one)."""
        return [r for r in self._read() if r.id == request_id]

    def get(self, request_id: int, service: str | None = None) -> StagingRequest:
        """The record of a request; :class:`StagingRequestNotFound` if none."""
        found = [r for r in self.find(request_id) if service is None or r.service == service]
        if not found:
            raise StagingRequestNotFound(
                f"no record of staging request {request_id} in {self.path}"
            )
        return found[-1]

    def save(self, record: StagingRequest) -> None:
        """Add a record, or replace the one with the same service and id."""
        with self._locked():
            records = [r for r in self._read() if (r.service, r.id) != (record.service, record.id)]
            records.append(record)
            self._write(records)

    def in_flight(self) -> int:
        """Files in recorded requests that have not finished (for the 5,000-file limit)."""
        return sum(r.files_total for r in self._read() if not r.state.finished)
