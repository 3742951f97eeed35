"""Planning one token: every download, the rendered payload, the outputs and their URLs.

:func:`plan_token` is pure apart from looking up files: it renders every template of the step
against the token's fields *before* anything is downloaded, so an unknown placeholder or a
bad value fails the token at once with a clear message, never half-way through.

Fields a template can use: ``token_id``, ``step``, ``input`` (first input), ``inputs`` (all,
space-separated), ``obsid``/``sap``/``subband`` (from LOFAR file names), ``msin``, ``msout``,
``workdir``, ``cores``, ``root`` (the storage root), ``pipeline``, ``stage`` and
``group_label`` (from the token; empty when unset), ``python`` (the pilot's own Python, for
command steps that run gridlrt's reduction modules: ``{python} -m gridlrt.reduction.image``),
``aoflagger_strategy`` (the LOFAR strategy
in the DP3 wheel, when present), the step's files by name, then the step's ``parameters``,
overridden by the token's ``parameters`` and by top-level token fields (PiCaS style); last,
one field per extra input (``token.extra_inputs``, e.g. a calibrator's solutions): ``{name}``
is the local path(s) of its files, space-separated. ``local_inputs``: the local paths of the
downloaded inputs, space-separated (``msin`` is DP3's ``[a,b]`` list when there are several).
The worker knows nothing of pipelines: an extra input is just a named list of URLs to download.

Inputs land in the work directory: ``ms-tarball`` inputs unpacked as ``<workdir>/<MS>``,
``file`` inputs as ``<workdir>/<file>`` (``<workdir>/inputs/<n>/<file>`` when several share a
file name, as a gather of every parent's ``part.txt`` does), extra inputs as
``<workdir>/extra/<name>/<file>`` (an archive of a measurement set, ``*.MS.tar`` or LTA's
``*.MS_<8 hex>.tar``, unpacked there as ``<MS>``; files of one name that share a file name
each in a numbered directory).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from gridlrt import templating
from gridlrt.errors import InputError
from gridlrt.lofar_names import basename, ms_name_in_archive, name_fields
from gridlrt.storage.templates import render_url
from gridlrt.tokens.model import PENDING, Token
from gridlrt.worker.dp3 import default_dp3, find_aoflagger_strategy
from gridlrt.worker.steps import StepConfig

TOKEN_OWN_FIELDS = frozenset(Token.model_fields) | {"_id", "_rev", "_attachments"}

#: Fields an extra input may never be called, whether or not this token has them (``name`` is
#: the file name in ``outputs.url``).
RESERVED_FIELDS = templating.PLAN_FIELDS
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
EXTRA_DIR = "extra"  # <workdir>/extra/<name>/...
INPUTS_DIR = "inputs"  # <workdir>/inputs/<n>/<file> for file inputs that share a file name
EXTRA_DOWNLOADS = ".download"  # <workdir>/extra/.download/<name>/...: archives before unpacking


class Download(BaseModel):
    url: str
    path: Path  # where it lands
    extract_to: Path | None = None  # for ms-tarball: the MS expected after extraction


class Upload(BaseModel):
    path: Path  # in the work directory (a file, or an MS directory to pack)
    url: str
    pack: bool = False


class TokenPlan(BaseModel):
    token_id: str
    step: str
    workdir: Path
    downloads: list[Download]
    msin: list[Path]
    msout: Path | None
    parset: str | None  # rendered DP3 parset text
    argv: list[str]  # what runs
    uploads: list[Upload]
    log_url: str | None
    timeout: float
    freqstep: int = 1
    timestep: int = 1
    fields: dict[str, str]
    # name -> local paths (measurement sets: the unpacked directories)
    extra_inputs: dict[str, list[Path]] = Field(default_factory=dict)


def token_parameters(step: StepConfig, token: Token) -> dict[str, Any]:
    """Step defaults < token ``parameters`` < top-level token fields (PiCaS style)."""
    extra = {k: v for k, v in (token.model_extra or {}).items() if k not in TOKEN_OWN_FIELDS}
    return {**step.parameters, **token.parameters, **extra}


def plan_token(
    step: StepConfig,
    token: Token,
    *,
    workdir: Path,
    storage_root: str,
    step_dir: Path | None = None,
    cores: int | None = None,
    dp3: Path | None = None,
) -> TokenPlan:
    """Everything the pilot will do for ``token``; :class:`InputError` if any template fails."""
    inputs = token.inputs
    if not inputs and step.inputs.kind != "none":
        raise InputError(f"token {token.id} has no input")
    where = f"step {step.name}"
    fields: dict[str, Any] = {
        "token_id": token.id,
        "step": step.name,
        "input": inputs[0] if inputs else "",
        "inputs": " ".join(inputs),
        "workdir": str(workdir),
        "cores": str(cores or step.cores),
        "root": storage_root,
        "pipeline": token.pipeline or "",
        "stage": token.stage or "",
        "group_label": str(token.group.get("label", "")),
        "python": sys.executable,
        **name_fields(inputs[0] if inputs else ""),
    }
    strategy = find_aoflagger_strategy()
    if strategy is not None:
        fields["aoflagger_strategy"] = str(strategy)
    base = step_dir or step.directory
    for name in step.files:
        fields[Path(name).stem.replace("-", "_")] = str((base or workdir) / name)
    params = token_parameters(step, token)
    # parameters that name step files (e.g. skymodel = "sky.skymodel") resolve beside the step
    for key, value in params.items():
        if isinstance(value, str) and base is not None and (base / value).is_file():
            params[key] = str(base / value)
    fields.update({k: v if isinstance(v, str) else str(v) for k, v in params.items()})

    downloads: list[Download] = []
    msin: list[Path] = []
    if step.inputs.kind == "ms-tarball":
        for url in inputs:
            ms = workdir / ms_name_in_archive(url)
            downloads.append(
                Download(url=url, path=workdir / "download" / url.rsplit("/", 1)[-1], extract_to=ms)
            )
            msin.append(ms)
    elif step.inputs.kind == "file":
        names = [url.rstrip("/").rsplit("/", 1)[-1] for url in inputs]
        shared = len(set(names)) < len(names)  # e.g. a gather of every parent's part.txt
        for index, (url, file_name) in enumerate(zip(inputs, names, strict=True)):
            local = workdir / INPUTS_DIR / str(index) / file_name if shared else workdir / file_name
            downloads.append(Download(url=url, path=local))
            msin.append(local)
    if msin:
        _check_distinct(inputs, msin)
    msout: Path | None = None
    if msin:
        fields["msin"] = str(msin[0]) if len(msin) == 1 else "[" + ",".join(map(str, msin)) + "]"
        fields["local_inputs"] = " ".join(map(str, msin))
        stem = msin[0].name.split(".")[0]
        msout = workdir / f"{stem}.{step.name}.MS"
        fields["msout"] = str(msout)
    extra = _plan_extra_inputs(token, workdir, fields, downloads)

    parset: str | None = None
    if step.kind == "dp3":
        assert step.parset is not None
        parset = templating.render(step.parset.strip() + "\n", fields, where=f"{where} parset")
        argv = [str(dp3 or default_dp3()), str(workdir / "step.parset")]
    else:
        assert step.command is not None
        argv = [templating.render(arg, fields, where=f"{where} command") for arg in step.command]

    uploads: list[Upload] = []
    for template in step.outputs.keep:
        local = Path(templating.render(template, fields, where=f"{where} outputs.keep"))
        local = local if local.is_absolute() else workdir / local
        pack = step.outputs.pack and local.suffix.upper() == ".MS"
        name = local.name + (".tar" if pack else "")
        url = _render_output_url(step, fields, name)
        uploads.append(Upload(path=local, url=url, pack=pack))
    log_url = _render_output_url(step, fields, f"{token.id}.log") if step.outputs.log else None

    factors = {"freqstep": 1, "timestep": 1}
    if step.expect is not None:
        for key in factors:
            text = templating.render(getattr(step.expect, key), fields, where=f"{where} expect")
            try:
                factors[key] = int(text)
            except ValueError:
                raise InputError(f"{where} expect.{key}: {text!r} is not a whole number") from None
    return TokenPlan(
        token_id=token.id,
        step=step.name,
        workdir=workdir,
        downloads=downloads,
        msin=msin,
        msout=msout,
        parset=parset,
        argv=argv,
        uploads=uploads,
        log_url=log_url,
        timeout=step.timeout,
        freqstep=factors["freqstep"],
        timestep=factors["timestep"],
        fields={k: str(v) for k, v in fields.items()},
        extra_inputs=extra,
    )


def is_ms_archive(url: str) -> bool:
    """Whether ``url`` names a tar of one measurement set: the worker's own packed outputs
    (``*.MS.tar``) or the LTA's (``*.MS_<8 hex>.tar``)."""
    name = basename(url)
    unpacked = ms_name_in_archive(name)
    return unpacked != name and unpacked.upper().endswith(".MS")


def _check_distinct(urls: list[str], local: list[Path]) -> None:
    seen: dict[Path, str] = {}
    for url, path in zip(urls, local, strict=True):
        if path in seen:
            raise InputError(
                f"inputs {seen[path]} and {url} would both be {path.name} in the work directory"
            )
        seen[path] = url


def _plan_extra_inputs(
    token: Token, workdir: Path, fields: dict[str, Any], downloads: list[Download]
) -> dict[str, list[Path]]:
    """Downloads for ``token.extra_inputs`` (appended to ``downloads``) and their fields
    (``{name}``: the local paths, space-separated); the local paths by name."""
    planned: dict[str, list[Path]] = {}
    for name, urls in token.extra_inputs.items():
        if not _FIELD_NAME.fullmatch(name):
            raise InputError(
                f"token {token.id}: extra input {name!r} is not a usable field name "
                "(letters, digits and _, not starting with a digit)"
            )
        if name in RESERVED_FIELDS or name in fields:
            raise InputError(
                f"token {token.id}: extra input {name!r} has the name of a field the step "
                f"already has ({{{name}}}); give the extra input another name"
            )
        names = [basename(url) for url in urls]
        for url, file_name in zip(urls, names, strict=True):
            if file_name in ("", ".", ".."):
                raise InputError(f"token {token.id}: extra input {name}: {url} names no file")
        shared = len(set(names)) < len(names)  # e.g. every calibrator's instrument.h5
        local: list[Path] = []
        for index, (url, file_name) in enumerate(zip(urls, names, strict=True)):
            sub = Path(str(index)) if shared else Path()
            target = workdir / EXTRA_DIR / name / sub
            if is_ms_archive(url):
                ms = target / ms_name_in_archive(file_name)
                archive = workdir / EXTRA_DIR / EXTRA_DOWNLOADS / name / sub / file_name
                downloads.append(Download(url=url, path=archive, extract_to=ms))
                local.append(ms)
            else:
                downloads.append(Download(url=url, path=target / file_name))
                local.append(target / file_name)
        planned[name] = local
        fields[name] = " ".join(map(str, local))
    return planned


def _render_output_url(step: StepConfig, fields: dict[str, Any], name: str) -> str:
    try:
        return render_url(step.outputs.url, {**fields, "name": name})
    except InputError as exc:
        raise InputError(f"step {step.name} outputs.url: {exc}") from exc


#: Where :func:`validate_step` pretends the work directory is (nothing is created there).
CHECK_WORKDIR = Path("/gridlrt-check/work")


#: Where :func:`with_parent_stand_ins` pretends a waiting token's parents put their outputs.
CHECK_PARENTS = "file:///gridlrt-check/parents"


def with_parent_stand_ins(token: Token) -> Token:
    """A waiting (or blocked) token as its promotion will make it, for checking its step: one
    stand-in URL per parent (``<parent id>.MS.tar``) in its input and its extra inputs, which
    only promotion fills in. Other tokens are returned as they are."""
    if token.depends is None or token.status not in PENDING:
        return token
    inputs = token.inputs
    extra = {name: list(urls) for name, urls in token.extra_inputs.items()}
    for group in token.depends.groups:
        urls = [f"{CHECK_PARENTS}/{group.name}/{pid}.MS.tar" for pid in group.ids]
        if group.name == "input":
            inputs = [*inputs, *urls]
        else:
            extra.setdefault(group.name, []).extend(urls)
    return token.model_copy(update={"input": inputs, "extra_inputs": extra})


def validate_step(
    step: StepConfig, token: Token, *, storage_root: str, step_dir: Path | None = None
) -> TokenPlan:
    """Plan ``token`` as a pilot would, without touching anything, so a broken step is found
    when tokens are created or pilots submitted rather than by every pilot.

    :class:`InputError` names the step file, the field and the token: an unknown placeholder
    in the parset, command, ``outputs.keep``/``outputs.url`` or ``expect``, a file of
    ``files`` missing beside the step, or an output URL the token's fields cannot fill.
    A token still waiting for its parents is checked with stand-ins for their outputs
    (:func:`with_parent_stand_ins`).
    """
    where = str(step.source) if step.source else f"step {step.name}"
    base = step_dir or step.directory
    for name in step.files:
        if base is not None and not (base / name).exists():
            raise InputError(f"{where}: files: {name} is not in {base}; put it beside the step")
    if find_aoflagger_strategy() is None:  # this machine has no DP3; worker nodes will
        stand_in = {"aoflagger_strategy": "/worker-node/aoflagger/lofar-default.lua"}
        token = token.model_copy(update={"parameters": {**stand_in, **token.parameters}})
    token = with_parent_stand_ins(token)
    try:
        return plan_token(
            step, token, workdir=CHECK_WORKDIR, storage_root=storage_root, step_dir=step_dir
        )
    except InputError as exc:
        message = str(exc).removeprefix(f"step {step.name} ").removeprefix(f"step {step.name}: ")
        hint = ""
        if message.startswith("outputs.url") and "url" not in step.outputs.model_fields_set:
            hint = (
                f"; the default url {step.outputs.url} needs LOFAR file names: set "
                '[outputs] url = "{root}/{step}/{token_id}/{name}" (or similar) in the step file'
            )
        raise InputError(f"{where}: {message} (checked with token {token.id}){hint}") from None
