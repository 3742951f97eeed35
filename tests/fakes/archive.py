"""A simulated LTA behind both fake stagers: staging requests whose state advances with time.

Timeline of a request, in units of ``step`` seconds after it was submitted::

    [0, 1)   new
    [1, 2)   scheduled
    [2, ..)  in progress: ``files_per_step`` more files are handled per step, in order
    done     success; partial success when some files fail; failed when all do

Files listed in ``failing`` never come online (they end up in the request's errors). A
request can be aborted (frozen as ``aborted``) or put on hold (frozen as ``on hold``);
``reschedule`` starts it again. All methods are thread-safe.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class FakeRequest:
    id: int
    user: str
    surls: list[str]
    created: float
    stopped: str | None = None  # "aborted" or "on hold"
    stopped_at: float | None = None
    notify: bool = True


@dataclass
class RequestView:
    """What the archive knows about one request at one moment."""

    id: int
    user: str
    state: str  # the LTA's own words: "in progress", "partial success", ...
    surls: list[str]
    online: list[str]
    progressing: list[str]
    errors: dict[str, str]


@dataclass
class FakeArchive:
    step: float = 0.1
    files_per_step: int = 2
    failing: set[str] = field(default_factory=set)
    clock: Callable[[], float] = time.monotonic
    first_id: int = 40001
    requests: dict[int, FakeRequest] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(self.first_id)

    def add(self, user: str, surls: list[str], notify: bool = True) -> int:
        with self._lock:
            request_id = next(self._ids)
            self.requests[request_id] = FakeRequest(
                request_id, user, list(surls), self.clock(), notify=notify
            )
            return request_id

    def _get(self, request_id: int) -> FakeRequest:
        try:
            return self.requests[int(request_id)]
        except (KeyError, ValueError):
            raise KeyError(f"No such request: {request_id}") from None

    def exists(self, request_id: int) -> bool:
        return int(request_id) in self.requests

    def view(self, request_id: int) -> RequestView:
        with self._lock:
            req = self._get(request_id)
            now = req.stopped_at if req.stopped_at is not None else self.clock()
            steps = (now - req.created) / self.step
            handled = max(0, int((steps - 2) * self.files_per_step)) if steps >= 2 else 0
            handled = min(handled, len(req.surls))
            done = req.surls[:handled]
            online = [s for s in done if s not in self.failing]
            errors = {s: "SRM_FAILURE: file could not be staged" for s in done if s in self.failing}
            progressing = req.surls[handled:]
            if req.stopped:
                state = req.stopped
            elif steps < 1:
                state = "new"
            elif steps < 2:
                state = "scheduled"
            elif handled < len(req.surls):
                state = "in progress"
            elif not errors:
                state = "success"
            elif online:
                state = "partial success"
            else:
                state = "failed"
            return RequestView(
                req.id, req.user, state, list(req.surls), online, progressing, errors
            )

    def abort(self, request_id: int) -> None:
        with self._lock:
            req = self._get(request_id)
            req.stopped, req.stopped_at = "aborted", self.clock()

    def hold(self, request_id: int) -> None:
        with self._lock:
            req = self._get(request_id)
            req.stopped, req.stopped_at = "on hold", self.clock()

    def reschedule(self, request_id: int) -> None:
        with self._lock:
            req = self._get(request_id)
            req.stopped, req.stopped_at, req.created = None, None, self.clock()

    def of_user(self, user: str) -> list[int]:
        with self._lock:
            return [r.id for r in self.requests.values() if r.user == user]
