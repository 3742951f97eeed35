"""Step configurations: what a pilot does with a token, as a validated TOML or YAML file.

A step is ``kind = "dp3"`` (a DP3 parset template) or ``kind = "command"`` (an argv template,
so a PiCaS user's shell script runs unchanged with the token's ``input`` substituted). It says
how inputs become local files, which outputs to keep and where they go (a URL template), the
cores, the timeout and the maximum attempts, and — for DP3 — what the output must look like
(``expect``: channel and time averaging factors) so the worker can validate it.

Ready steps ship in the package (``gridlrt/data/steps``, :data:`BUILTIN_STEPS`): ``average``,
``flag-average``, ``gaincal`` and ``command`` for one subband, and the calibrator → target
reduction's ``cal-solve``, ``apply-flag-average``, ``concat`` and ``image``. :func:`load_step`
takes a file path or one of those names; :func:`resolve_step` finds a step by name as a pilot
does (``--steps-dir``, then built-in).
Templates are checked strictly when a token is planned (:mod:`gridlrt.worker.plan`), before
anything is downloaded, and — by :func:`gridlrt.worker.plan.validate_step` — already when
tokens are created and pilots submitted.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gridlrt.durations import parse_duration
from gridlrt.errors import InputError
from gridlrt.tokens.model import STEP_NAME

BUILTIN_STEPS = (
    "average",
    "flag-average",
    "gaincal",
    "concat",
    "cal-solve",
    "apply-flag-average",
    "image",
    "command",
)


class InputSpec(BaseModel):
    """How token inputs become local files.

    ``ms-tarball``: each input is an archive tar holding one measurement set (LTA style); it is
    downloaded and extracted, and ``{msin}`` is the MS. ``file``: downloaded as is; ``{msin}``
    is the file. ``none``: nothing is downloaded; the payload gets the URLs (``{input}``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ms-tarball", "file", "none"] = "ms-tarball"


class OutputSpec(BaseModel):
    """Outputs to keep (paths in the work directory, templates) and where they go."""

    model_config = ConfigDict(extra="forbid")

    keep: list[str] = Field(default_factory=lambda: ["{msout}"])
    url: str = "{root}/{obsid}/{step}/{name}"
    pack: bool = Field(default=True, description="tar measurement-set directories for upload")
    log: bool = Field(default=True, description="upload the payload log beside the outputs")


class Expect(BaseModel):
    """What a DP3 output promises relative to its input (templates, e.g. ``{freqstep}``)."""

    model_config = ConfigDict(extra="forbid")

    freqstep: str = "1"
    timestep: str = "1"

    @field_validator("freqstep", "timestep", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return str(value)


class StepConfig(BaseModel):
    """One step. Load with :func:`load_step`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{STEP_NAME.pattern}$")
    kind: Literal["dp3", "command"]
    description: str = ""
    parset: str | None = None
    command: list[str] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: InputSpec = Field(default_factory=InputSpec)
    outputs: OutputSpec = Field(default_factory=OutputSpec)
    expect: Expect | None = None
    cores: int = Field(default=1, ge=1)
    timeout: float = Field(default=7200.0, gt=0, description="seconds (or e.g. '2h' in files)")
    max_attempts: int = Field(default=3, ge=1)
    files: list[str] = Field(
        default_factory=list, description="files beside the config the step needs (sky models)"
    )
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _payload(self) -> StepConfig:
        if self.kind == "dp3" and not self.parset:
            raise ValueError("a dp3 step needs a parset template (parset = ...)")
        if self.kind == "command" and not self.command:
            raise ValueError('a command step needs command = ["prog", "arg", ...]')
        return self

    @property
    def directory(self) -> Path | None:
        """Where the config file is (relative ``files`` are looked up there)."""
        return self.source.parent if self.source else None


def builtin_step_file(name: str) -> Path:
    return Path(str(resources.files("gridlrt") / "data" / "steps" / f"{name}.toml"))


def load_step(ref: str | Path) -> StepConfig:
    """A step from a TOML/YAML file, or one of :data:`BUILTIN_STEPS` by name."""
    path = Path(ref)
    if not path.exists() and str(ref) in BUILTIN_STEPS:
        path = builtin_step_file(str(ref))
    if not path.is_file():
        known = ", ".join(BUILTIN_STEPS)
        raise InputError(f"{ref}: no such step file (or built-in step: {known})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the step file as UTF-8"
        ) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the step file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {first}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a table of step settings")
    try:
        step = StepConfig.model_validate({**data, "source": path})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "step"
        raise InputError(f"{path}: {where}: {err['msg'].removeprefix('Value error, ')}") from exc
    return step


STEP_SUFFIXES = (".toml", ".yaml", ".yml")


def resolve_step(name: str, steps_dir: Path | None) -> StepConfig:
    """The step called ``name`` as a pilot finds it: ``steps_dir/<name>.toml`` (or ``.yaml``,
    ``.yml``) first, then the built-in step of that name.

    :class:`InputError` when ``steps_dir`` is given but is not a directory (a typo must not
    fall back to the built-in step silently), when the step is found nowhere, when its file is
    broken, or when the ``name`` inside the file is not the file's name.
    """
    if steps_dir is not None:
        if not steps_dir.is_dir():
            raise InputError(
                f"--steps-dir {steps_dir}: no such directory (the directory with your "
                "<step>.toml files)"
            )
        for suffix in STEP_SUFFIXES:
            candidate = steps_dir / f"{name}{suffix}"
            if candidate.is_file():
                step = load_step(candidate)
                if step.name != name:
                    raise InputError(
                        f"{candidate}: name: {step.name!r} is not the file's name; set "
                        f'name = "{name}" (or rename the file to {step.name}{suffix})'
                    )
                return step
    if name in BUILTIN_STEPS:
        return load_step(builtin_step_file(name))
    known = ", ".join(BUILTIN_STEPS)
    where = f"no {name}.toml in {steps_dir}" if steps_dir else "no --steps-dir given"
    raise InputError(
        f"step {name!r}: {where} and no built-in step of that name ({known}); "
        f"give --steps-dir DIR with {name}.toml"
    )
