"""The token: one unit of work, as a JSON document that PiCaS and gridlrt both understand.

The PiCaS fields keep their meanings (``type``, ``lock``/``done`` as 0 or epoch seconds,
``hostname``, ``scrub_count``, ``input``, ``output``, ``exit_code``, ``error``); gridlrt adds a
fine-grained ``status``, a ``heartbeat``, one :class:`Attempt` per claim, ``created``,
``priority``, the step and its parameters, and upload results. Unknown fields are kept, so a
document round-trips through gridlrt unchanged apart from what gridlrt sets.

The PiCaS state of a token is a pure function of ``lock``, ``done`` and ``exit_code``
(:func:`picas_state`); gridlrt's ``status`` refines it and is derived from it for tokens that
PiCaS wrote (which have no ``status``).
"""

from __future__ import annotations

import re
import time
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_STEP = "default"
#: what a step may be called (also a run name: both become parts of token ids and file names)
STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class TokenStatus(StrEnum):
    """Where a token is in its life. The middle four are all PiCaS's "locked"."""

    WAITING = "waiting"  # for its parents (a pipeline token); no PiCaS view shows it
    BLOCKED = "blocked"  # its parents failed beyond its threshold; see ``blocked_reason``
    TODO = "todo"
    LOCKED = "locked"
    DOWNLOADING = "downloading"
    RUNNING = "running"
    UPLOADING = "uploading"
    DONE = "done"
    ERROR = "error"

    @property
    def picas(self) -> str:
        """The PiCaS view this status shows up in ("waiting" and "blocked": none)."""
        return "locked" if self in ACTIVE else self.value


ACTIVE = frozenset(
    {TokenStatus.LOCKED, TokenStatus.DOWNLOADING, TokenStatus.RUNNING, TokenStatus.UPLOADING}
)
PENDING = frozenset({TokenStatus.WAITING, TokenStatus.BLOCKED})  # lock = -1, done = 0
FINISHED = frozenset({TokenStatus.DONE, TokenStatus.ERROR})
# lock of a token that waits for its parents: PiCaS's views want lock == 0 (todo) or > 0
WAITING_LOCK = -1


def _as_int(value: Any) -> int | None:
    """JavaScript's ``parseInt`` as PiCaS's views apply it to ``exit_code``."""
    try:
        return int(str(value).strip().split(".")[0])
    except (TypeError, ValueError):
        return None


def picas_state(lock: float, done: float, exit_code: Any) -> str:
    """todo / locked / done / error exactly as PiCaS's ``Monitor`` views decide.

    A done token without a parseable ``exit_code`` of 0 is an error in PiCaS's views, and so
    here (PiCaS 1.x's ``error()`` writes lock = done = 99 and no exit code). Older PiCaS clients
    wrote lock = done = -1, which no PiCaS view shows; gridlrt counts those as errors too.
    """
    if lock == 0 and done == 0:
        return "todo"
    if lock > 0 and done == 0:
        return "locked"
    if lock > 0 and done > 0 and _as_int(exit_code) == 0:
        return "done"
    return "error"


class ErrorEntry(BaseModel):
    """One entry of the PiCaS ``error`` list; gridlrt adds the log tail and the exit code."""

    model_config = ConfigDict(extra="allow")

    time: float
    message: str = ""
    exception: str | list[str] = ""
    log_tail: str = ""


class Attempt(BaseModel):
    """One claim of the token by one pilot."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])  # names the work directory
    pilot: str
    host: str = ""
    job_id: str | None = None
    started: float
    ended: float | None = None
    exit_code: int | None = None
    outcome: str | None = None  # done, error, released, lost, reset, abandoned
    timings: dict[str, float] = Field(default_factory=dict)
    heartbeat_interval: float | None = None  # the pilot's, seconds (recover's guard)
    sandbox: str | None = None  # id (sha256) of the sandbox the pilot ran from, when known


class UploadResult(BaseModel):
    """One file the worker uploaded for this token."""

    model_config = ConfigDict(extra="allow")

    url: str
    size: int | None = None
    checksum: str | None = None


class ParentGroup(BaseModel):
    """Parents whose outputs feed one input of a dependent token.

    ``name`` "input" is the token's own input (a gather: the parents' outputs, in the order of
    ``ids``, follow the token's own inputs); any other name is an extra input the step refers
    to as ``{name}`` (e.g. the calibrator's solutions for every target subband)."""

    model_config = ConfigDict(extra="allow")

    name: str = "input"
    ids: list[str] = Field(default_factory=list)
    # fraction of ids that must be done, the rest failed for good, before the token starts
    min_done: float = Field(default=1.0, ge=0.0, le=1.0)


class Depends(BaseModel):
    """What a waiting token waits for (its rule), and its own input before promotion."""

    model_config = ConfigDict(extra="allow")

    groups: list[ParentGroup] = Field(default_factory=list)
    base_input: Any = None

    @property
    def parent_ids(self) -> list[str]:
        return [i for group in self.groups for i in group.ids]


class ParentRecord(BaseModel):
    """Provenance: one parent as it was when its child was promoted."""

    model_config = ConfigDict(extra="allow")

    id: str
    step: str = ""
    status: str = ""
    group: str = "input"
    outputs: list[UploadResult] = Field(default_factory=list)
    sandbox: str | None = None


class PilotInfo(BaseModel):
    """Who claims: recorded in the attempt and the PiCaS ``hostname``."""

    pilot: str
    host: str
    job_id: str | None = None
    heartbeat_interval: float | None = None  # seconds between the pilot's heartbeats
    sandbox: str | None = None  # id (sha256) of the sandbox the pilot runs from, when known


class Token(BaseModel):
    """A token document. JSON by :meth:`to_doc`; read with :meth:`from_doc`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, validate_assignment=False)

    id: str = Field(alias="_id", min_length=1)
    rev: str | None = Field(default=None, alias="_rev")
    type: str = "token"
    # PiCaS
    lock: int = 0
    done: int = 0
    hostname: str = ""
    scrub_count: int = 0
    input: Any = None
    output: Any = None
    exit_code: int | str | None = None
    error: list[ErrorEntry] = Field(default_factory=list)
    # gridlrt
    step: str = DEFAULT_STEP
    status: TokenStatus = TokenStatus.TODO
    heartbeat: float = 0.0
    attempts: list[Attempt] = Field(default_factory=list)
    # attempts before this index predate the last ``tokens reset``: they are history and do
    # not count against the step's max_attempts or recover's max_scrubs
    reset_index: int = 0
    created: float = 0.0  # epoch seconds; 0 for tokens PiCaS created
    priority: int = 0
    parameters: dict[str, Any] = Field(default_factory=dict)
    uploads: list[UploadResult] = Field(default_factory=list)
    progress: dict[str, Any] = Field(default_factory=dict)
    attachments: dict[str, Any] = Field(default_factory=dict, alias="_attachments")
    # dependencies (pipelines); see gridlrt.tokens.dependencies
    pipeline: str | None = None
    stage: str | None = None
    group: dict[str, Any] = Field(default_factory=dict)  # what it stands for: obsid, subbands
    depends: Depends | None = None  # a dependent token's parents and rule
    children: list[str] = Field(default_factory=list)  # tokens waiting for this one
    settled: bool | None = None  # False: finished, its children not yet told (see settle)
    blocked_reason: str = ""
    extra_inputs: dict[str, list[str]] = Field(default_factory=dict)  # {name}: parents' outputs
    provenance: list[ParentRecord] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _derive_status(cls, data: Any) -> Any:
        """PiCaS-written documents have no (or a stale) status: take it from lock/done."""
        if not isinstance(data, dict):
            return data
        lock, done = _number(data.get("lock", 0)), _number(data.get("done", 0))
        state = picas_state(lock, done, data.get("exit_code"))
        status = data.get("status")
        if lock < 0 and done == 0:  # waiting for parents (PiCaS shows it nowhere)
            state = "blocked" if status == "blocked" else "waiting"
        keep = status in {s.value for s in ACTIVE} and state == "locked"
        if not keep and status != state:
            data = {**data, "status": state}
        if data.get("step") in (None, ""):
            data = {**data, "step": DEFAULT_STEP}
        return data

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Token:
        return cls.model_validate(doc)

    def to_doc(self) -> dict[str, Any]:
        """The JSON document (``_id``, ``_rev`` when known, ``_attachments`` stubs when any)."""
        doc = self.model_dump(mode="json", by_alias=True)
        if doc.get("_rev") is None:
            doc.pop("_rev", None)
        if not doc.get("_attachments"):
            doc.pop("_attachments", None)
        return doc

    @property
    def inputs(self) -> list[str]:
        """``input`` as a list of strings (PiCaS tokens usually hold one string)."""
        if self.input is None:
            return []
        if isinstance(self.input, list):
            return [str(item) for item in self.input]
        return [str(self.input)]

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def attempts_since_reset(self, outcome: str) -> int:
        """How many attempts since the last reset ended with ``outcome``. Only "error" counts
        against a step's ``max_attempts`` and only "lost" against recover's ``max_scrubs``:
        a release (SIGTERM, cancel), a pool outage or a reset costs a token no try."""
        return sum(1 for a in self.attempts[self.reset_index :] if a.outcome == outcome)

    @property
    def last_error(self) -> ErrorEntry | None:
        return self.error[-1] if self.error else None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def new_token(
    token_id: str,
    *,
    inputs: list[str] | str | None,
    step: str = DEFAULT_STEP,
    parameters: dict[str, Any] | None = None,
    priority: int = 0,
    fields: dict[str, Any] | None = None,
    depends: Depends | None = None,
) -> Token:
    """A fresh todo token, or, with ``depends``, a waiting one (``lock`` -1, so no PiCaS view
    shows it) that its parents promote. ``fields`` are extra top-level keys
    (``--field KEY=VALUE``)."""
    data: dict[str, Any] = {
        "_id": token_id,
        "input": inputs,
        "step": step,
        "parameters": parameters or {},
        "priority": priority,
        "created": time.time(),
        **(fields or {}),
    }
    if depends is not None:
        data.update(
            lock=WAITING_LOCK,
            status=TokenStatus.WAITING.value,
            depends=depends.model_copy(update={"base_input": inputs}).model_dump(mode="json"),
        )
    return Token.model_validate(data)
