"""The pipeline file: stages over input lists and over each other, as a validated TOML file.

A pipeline names its input lists (``[inputs]``, given as files when it is created) and its
stages (``[[stage]]``), each a step run once per token:

- ``over`` an input list: *scatter*, one token per file;
- ``over`` an earlier stage: one token per token of that stage (one-to-one), or, with
  ``gather`` (``all``, ``subbands:N``, ``width:2MHz``, ``key:obsid``), one token per group
  of them, whose input is their outputs;
- ``after``: earlier stages every token of this stage waits for (all their tokens); their
  outputs are an extra input the step refers to by the stage's name (``{cal_solve}``);
- ``min_done``: the fraction of each parent group that must be done (the rest failed for
  good) before a token starts; ``priority``: default the stage's depth in the DAG, so that
  downstream tokens are claimed first and bands finish early.

A stage may only use stages listed before it, so the file reads top-down and has no cycles.
:func:`load_pipeline` reads a file; every problem is one :class:`InputError` line naming the
file and the field (``cal-target.toml: stage[2] (target_prep).after: unknown stage ...``).
Nothing here knows how a step runs or touches a pool: :mod:`gridlrt.pipelines.expand` turns
a pipeline into tokens.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gridlrt.errors import InputError
from gridlrt.templating import PLAN_FIELDS
from gridlrt.tokens.model import STEP_NAME

#: stage and input names: they become template fields (``{cal_solve}``) and parts of token ids
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: run names (token id prefixes) are spelled like step names
RUN_NAME = STEP_NAME
#: fields a step's templates already have (gridlrt.worker.plan): an ``after`` stage becomes a
#: field named after the stage, so a stage may not be called like one of them
RESERVED_NAMES = PLAN_FIELDS
#: one LOFAR subband is the clock frequency / 1024 wide
SUBBANDS_PER_CLOCK = 1024
_WIDTH = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(hz|khz|mhz|ghz)", re.IGNORECASE)
_UNITS = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}
GATHER_FORMS = "all, subbands:N, width:<W>MHz or key:<field>"


class DefinitionError(ValueError):
    """A problem found across fields; ``where`` names the field (``stage[2] (x).after``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def parse_width(text: str) -> float:
    """A bandwidth in Hz from ``2MHz``, ``1.95 MHz``, ``500kHz`` (ValueError otherwise)."""
    found = _WIDTH.fullmatch(text.strip())
    if not found:
        raise ValueError(f"width {text!r}: expected a number and a unit, e.g. 2MHz or 500kHz")
    hz = float(found.group(1)) * _UNITS[found.group(2).lower()]
    if not hz > 0:
        raise ValueError(f"width {text!r}: must be more than 0")
    return hz


class Gather(BaseModel):
    """How a stage groups the tokens (or files) it runs over: a parsed ``gather``."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["all", "subbands", "width", "key"]
    size: int | None = None  # subbands:N
    width_hz: float | None = None  # width:W
    key: str | None = None  # key:FIELD

    @classmethod
    def parse(cls, text: str) -> Gather:
        """``all`` | ``subbands:N`` | ``width:2MHz`` | ``key:obsid`` (ValueError otherwise)."""
        kind, sep, arg = (part.strip() for part in text.strip().partition(":"))
        if kind == "all" and not sep:
            return cls(kind="all")
        if kind == "subbands" and sep:
            if not arg.isdigit() or int(arg) < 1:
                raise ValueError(f"{text!r}: subbands:N needs a whole number N of 1 or more")
            return cls(kind="subbands", size=int(arg))
        if kind == "width" and sep:
            return cls(kind="width", width_hz=parse_width(arg))
        if kind == "key" and sep:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", arg):
                raise ValueError(f"{text!r}: key:FIELD needs a field name, e.g. key:obsid")
            return cls(kind="key", key=arg)
        raise ValueError(f"{text!r} is not a gather rule; use {GATHER_FORMS}")

    @property
    def text(self) -> str:
        if self.kind == "subbands":
            return f"subbands:{self.size}"
        if self.kind == "width":
            return f"width:{_format_hz(self.width_hz or 0.0)}"
        if self.kind == "key":
            return f"key:{self.key}"
        return "all"

    def subbands_per_group(self, clock_mhz: float | None) -> int | None:
        """N of subbands:N, or of width:W (whole subbands that fit, at least 1)."""
        if self.kind == "subbands":
            return self.size
        if self.kind == "width":
            if clock_mhz is None:
                raise ValueError("gather width needs clock_mhz")
            width = clock_mhz * 1e6 / SUBBANDS_PER_CLOCK
            return max(1, math.floor((self.width_hz or 0.0) / width + 1e-9))
        return None


def _format_hz(hz: float) -> str:
    for unit, factor in (("GHz", 1e9), ("MHz", 1e6), ("kHz", 1e3)):
        if hz >= factor:
            return f"{hz / factor:g}{unit}"
    return f"{hz:g}Hz"


class Stage(BaseModel):
    """One ``[[stage]]``: a step run over an input list or an earlier stage."""

    model_config = ConfigDict(extra="forbid")

    name: str
    step: str
    description: str = ""
    over: str | None = None
    gather: str | None = None
    after: list[str] = Field(default_factory=list)
    min_done: float = Field(default=1.0, ge=0.0, le=1.0)
    priority: int | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_after(cls, data: Any) -> Any:
        """A stage with ``gather``, no ``over`` and exactly one ``after`` stage gathers over
        that stage (the wording of the issue that asked for pipelines); ``after`` may name
        one stage without a list."""
        if not isinstance(data, dict):
            return data
        after = data.get("after")
        if isinstance(after, str):  # after = "cal_solve": one stage
            after = [after]
            data = {**data, "after": after}
        if (
            data.get("over") is None
            and data.get("gather")
            and isinstance(after, list)
            and len(after) == 1
        ):
            return {**data, "over": after[0], "after": []}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(
                f"{value!r}: use a letter, then letters, digits or '_' (it becomes a template "
                "field and part of token ids)"
            )
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is a field every step has; choose another name")
        return value

    @field_validator("step")
    @classmethod
    def _step(cls, value: str) -> str:
        if not STEP_NAME.fullmatch(value):
            raise ValueError(f"{value!r}: a step name is letters, digits, '.', '_' or '-'")
        return value

    @field_validator("gather")
    @classmethod
    def _gather(cls, value: str | None) -> str | None:
        return None if value is None else Gather.parse(value).text

    @property
    def gather_rule(self) -> Gather | None:
        return None if self.gather is None else Gather.parse(self.gather)


class Pipeline(BaseModel):
    """A pipeline definition. Load with :func:`load_pipeline`; stages are in DAG order (a
    stage only uses stages before it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    description: str = ""
    clock_mhz: float | None = Field(default=None, gt=0)
    inputs: dict[str, str] = Field(default_factory=dict)
    stages: list[Stage] = Field(alias="stage", min_length=1)
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not RUN_NAME.fullmatch(value):
            raise ValueError(f"{value!r}: use letters, digits, '.', '_' or '-' (it prefixes ids)")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not NAME.fullmatch(key):
                raise ValueError(f"{key!r}: an input name is a letter, then letters, digits or '_'")
        return value

    @model_validator(mode="after")
    def _references(self) -> Pipeline:
        seen: dict[str, int] = {}
        for index, stage in enumerate(self.stages):
            where = f"stage[{index}] ({stage.name})"
            if stage.name in seen:
                raise DefinitionError(
                    f"{where}.name", f"duplicate stage name (also stage[{seen[stage.name]}])"
                )
            if stage.name in self.inputs:
                raise DefinitionError(
                    f"{where}.name", f"{stage.name!r} is also an input name; rename one of them"
                )
            self._check_over(stage, where, seen)
            self._check_after(stage, where, seen)
            rule = stage.gather_rule
            if rule is not None and rule.kind == "width" and self.clock_mhz is None:
                raise DefinitionError(
                    f"{where}.gather",
                    "width needs the clock: set clock_mhz = 200 (or 160) at the top of the file",
                )
            if "min_done" in stage.model_fields_set and not self.parents(stage):
                raise DefinitionError(
                    f"{where}.min_done",
                    "the stage waits for no other stage (it runs over an input list): "
                    "min_done is for stages over or after other stages",
                )
            seen[stage.name] = index
        used = {s.over for s in self.stages}
        for name in self.inputs:
            if name not in used:
                raise DefinitionError(f"inputs.{name}", "declared but no stage runs over it")
        return self

    def _check_over(self, stage: Stage, where: str, earlier: dict[str, int]) -> None:
        if stage.over is None:
            raise DefinitionError(
                f"{where}.over",
                "required: the input list or earlier stage the stage runs over",
            )
        if stage.over in self.inputs or stage.over in earlier:
            return
        raise DefinitionError(
            f"{where}.over", self._unknown(stage, stage.over, earlier, inputs=True)
        )

    def _check_after(self, stage: Stage, where: str, earlier: dict[str, int]) -> None:
        for name in stage.after:
            if name in self.inputs:
                raise DefinitionError(
                    f"{where}.after",
                    f"{name!r} is an input list; after names stages (use over for an input)",
                )
            if name not in earlier:
                raise DefinitionError(
                    f"{where}.after", self._unknown(stage, name, earlier, inputs=False)
                )
            if name == stage.over:
                raise DefinitionError(
                    f"{where}.after", f"{name!r} is already the stage's over; list it once"
                )
        if len(set(stage.after)) != len(stage.after):
            raise DefinitionError(f"{where}.after", "a stage is listed twice")

    def _unknown(self, stage: Stage, name: str, earlier: dict[str, int], *, inputs: bool) -> str:
        what = "input or stage" if inputs else "stage"
        if name == stage.name:
            return f"a stage cannot use itself ({name!r})"
        if name in {s.name for s in self.stages}:
            return (
                f"stage {name!r} comes later in the file; a stage may only use stages listed "
                f"before it (move {name!r} up)"
            )
        known = f"stages: {', '.join(earlier) or 'none before it'}"
        if inputs:
            known = f"inputs: {', '.join(self.inputs) or 'none'}; " + known
        return f"unknown {what} {name!r} ({known})"

    # --- the DAG --------------------------------------------------------------------------

    @cached_property
    def by_name(self) -> dict[str, Stage]:
        return {s.name: s for s in self.stages}

    def over_stage(self, stage: Stage) -> Stage | None:
        """The stage ``stage`` runs over, or None when it runs over an input list."""
        if stage.over is None or stage.over in self.inputs:
            return None
        return self.by_name.get(stage.over)

    def parents(self, stage: Stage) -> list[str]:
        """Names of the stages ``stage`` waits for: its ``over`` stage, then ``after``."""
        over = self.over_stage(stage)
        return [*([over.name] if over else []), *stage.after]

    def children(self, stage: Stage) -> list[str]:
        return [s.name for s in self.stages if stage.name in self.parents(s)]

    def depth(self, stage: Stage) -> int:
        """0 for a stage over an input list only; else 1 + the deepest parent's depth."""
        parents = [self.by_name[p] for p in self.parents(stage) if p in self.by_name]
        return 1 + max(self.depth(p) for p in parents) if parents else 0

    def priority(self, stage: Stage) -> int:
        """The stage's ``priority``, by default its depth (downstream tokens are claimed
        first)."""
        return self.depth(stage) if stage.priority is None else stage.priority

    def kind(self, stage: Stage) -> Literal["scatter", "one-to-one", "gather"]:
        if stage.gather is not None:
            return "gather"
        return "one-to-one" if self.over_stage(stage) is not None else "scatter"

    def as_dict(self) -> dict[str, Any]:
        """The definition as the file spells it (``stage`` for the list), JSON-ready."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """``stage[2] (target_prep).after[0]`` from a pydantic location."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            if isinstance(name, str) and name:
                parts.append(f" ({name})")
        else:
            parts.append(f".{item}" if parts else item)
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "pipeline"


def _message(error: Any) -> tuple[str | None, str]:
    """(where, message) of the first pydantic error, friendlier than pydantic's."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, DefinitionError):
        return cause.where, str(cause)
    if error["type"] == "extra_forbidden":
        loc = error["loc"]
        model: type[BaseModel] = Stage if loc and loc[0] == "stage" else Pipeline
        known = [(f.alias or n) for n, f in model.model_fields.items() if not f.exclude]
        close = difflib.get_close_matches(str(loc[-1]) if loc else "", known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return None, f"unknown field ({hint}fields: {', '.join(known)})"
    if error["type"] == "missing":
        return None, "required"
    return None, str(error["msg"]).removeprefix("Value error, ")


def validate_pipeline(data: Any, source: str = "pipeline") -> Pipeline:
    """A pipeline from a parsed file (a dict); :class:`InputError` ``source: field: ...``."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a table of pipeline settings")
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt field is also a missing one: name the misspelling
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        where, message = _message(error)
        if where is None:
            where = _where(tuple(error["loc"]), data)
        raise InputError(f"{source}: {where}: {message}") from None


#: pipelines shipped in gridlrt/data/pipelines, usable by name (``pipeline create cal-target``)
BUILTIN_PIPELINES = ("cal-target",)


def pipeline_file(ref: Path) -> Path:
    """``ref`` itself, or the built-in pipeline of that name when no such file exists."""
    if not ref.exists() and str(ref) in BUILTIN_PIPELINES:
        return Path(str(resources.files("gridlrt") / "data" / "pipelines" / f"{ref}.toml"))
    return ref


def load_pipeline(path: Path) -> Pipeline:
    """The pipeline in the TOML file ``path`` (or a built-in one by name, see
    :data:`BUILTIN_PIPELINES`); :class:`InputError` (one line naming the file and the field)
    when it is missing, not TOML, or not a valid pipeline."""
    path = pipeline_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(BUILTIN_PIPELINES)
        raise InputError(f"{path}: no such pipeline file (built-in pipelines: {known})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the pipeline file ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: not valid TOML: {first}") from None
    pipeline = validate_pipeline(data, str(path))
    return pipeline.model_copy(update={"source": path})
