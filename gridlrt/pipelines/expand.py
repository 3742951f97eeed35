"""From a pipeline and its input lists to tokens that know their parents, as pure functions.

:func:`expand` makes every token of a pipeline run up front: the first stages' tokens are
todo, every other token is waiting (``depends``: its parents in groups, with the stage's
``min_done``) and every parent lists its ``children``, so the tokens room promotes a child
when its parents finish (:mod:`gridlrt.tokens.dependencies`) and nothing of the pipeline is
needed at run time. Token ids are ``{run}.{stage}.{label}`` — stable, so creating a run twice
is a no-op — and :attr:`Expansion.tokens` lists every child before its parents: a create that
is interrupted never leaves a parent in the pool without its children, and running it again
finishes the job.

Labels: the input's LOFAR name (``L123_SB004``) for a scatter, the parent's label for a
one-to-one stage, ``all``, the nominal subband range (``L123_SB000-009``) or the key's value
for a gather. :func:`dag_text` draws a pipeline (and, given a plan, its token counts) as text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gridlrt.errors import InputError
from gridlrt.lofar_names import name_fields
from gridlrt.pipelines.definition import RUN_NAME, Gather, Pipeline, Stage
from gridlrt.tokens.create import input_name
from gridlrt.tokens.model import Depends, ParentGroup, Token, new_token

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class GroupPlan(BaseModel):
    """One token of a gather stage: what it stands for."""

    label: str
    members: int
    subbands: list[int] = []
    obsid: str | None = None


class StagePlan(BaseModel):
    """One stage as expanded: enough to print a plan and draw the DAG with counts."""

    name: str
    step: str
    kind: str  # scatter, one-to-one, gather
    over: str
    gather: str | None = None
    subbands_per_group: int | None = None  # subbands:N, or width:W at the pipeline's clock
    after: list[str] = []
    parents: list[str] = []  # stages it waits for (over, then after)
    min_done: float = 1.0
    priority: int = 0
    depth: int = 0
    tokens: int = 0
    groups: list[GroupPlan] = []  # gather stages only


class Expansion(BaseModel):
    """Every token of a run (children before parents) and the plan, stage by stage."""

    run: str
    pipeline: str
    tokens: list[Token]
    plan: list[StagePlan]

    def stage_tokens(self, stage: str) -> list[Token]:
        """The tokens of one stage, in the stage's order."""
        return [t for t in self.tokens if t.stage == stage]


@dataclass
class _Node:
    """A token in the making (or, for a gather over an input list, one file)."""

    label: str
    group: dict[str, Any]
    id: str = ""
    input: str | list[str] | None = None
    parents: list[str] = field(default_factory=list)  # group "input"
    order: int = 0


def check_run_name(run: str) -> str:
    if not RUN_NAME.fullmatch(run):
        raise InputError(
            f"run name {run!r}: use letters, digits, '.', '_' or '-' (it prefixes ids)"
        )
    return run


def _file_group(item: str, label: str) -> dict[str, Any]:
    fields = name_fields(item)
    group: dict[str, Any] = {"label": label}
    if "obsid" in fields:
        group["obsid"] = fields["obsid"]
    if "sap" in fields:
        group["sap"] = fields["sap"]
    if "subband" in fields:
        group["subbands"] = [int(fields["subband"])]
    return group


def _labelled(items: Sequence[str]) -> list[_Node]:
    """One node per file, labelled by its LOFAR name; repeated labels get ``_2``, ``_3``..."""
    seen: dict[str, int] = {}
    nodes = []
    for order, item in enumerate(items):
        label = input_name(item)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}_{seen[label]}"
        nodes.append(_Node(label=label, group=_file_group(item, label), input=item, order=order))
    return nodes


def _sort_key(node: _Node) -> tuple[int, int, int]:
    obsid = str(node.group.get("obsid", ""))
    subbands = node.group.get("subbands") or []
    return (int(obsid) if obsid.isdigit() else -1, min(subbands) if subbands else -1, node.order)


def _in_order(members: list[_Node]) -> list[_Node]:
    """By (obsid, subband) when every member has both, else as they came."""
    known = all(
        str(m.group.get("obsid", "")).isdigit() and m.group.get("subbands") for m in members
    )
    return sorted(members, key=_sort_key) if known else sorted(members, key=lambda m: m.order)


def _what(node: _Node) -> str:
    return node.id or (node.input if isinstance(node.input, str) else node.label)


def _groups(
    pipeline: Pipeline, stage: Stage, rule: Gather, members: list[_Node]
) -> list[tuple[str, list[_Node]]]:
    """(label, members) per token of a gather stage, in order."""
    where = f"pipeline {pipeline.name}: stage {stage.name} (gather {rule.text})"
    if rule.kind == "all":
        return [("all", members)] if members else []
    if rule.kind == "key":
        key = rule.key or ""
        by_value: dict[str, list[_Node]] = {}
        for node in members:
            value = node.group.get(key)
            if value is None or value == "" or value == []:
                known = ", ".join(k for k in node.group if k != "label") or "none"
                raise InputError(f"{where}: {_what(node)} has no {key!r} (it has: {known})")
            text = "-".join(map(str, value)) if isinstance(value, list) else str(value)
            by_value.setdefault(_UNSAFE.sub("_", text), []).append(node)
        return list(by_value.items())
    size = rule.subbands_per_group(pipeline.clock_mhz) or 1
    for node in members:
        if not node.group.get("subbands"):
            raise InputError(
                f"{where}: {_what(node)} has no subband number (its name has no _SB<nnn>); "
                'gather "all" or "key:..." instead'
            )
    if not members:
        return []
    first = min(min(n.group["subbands"]) for n in members)
    slots: dict[int, list[_Node]] = {}
    for node in members:
        slots.setdefault((min(node.group["subbands"]) - first) // size, []).append(node)
    found = []
    for slot in sorted(slots):
        low = first + slot * size
        label = f"SB{low:03d}-{low + size - 1:03d}" if size > 1 else f"SB{low:03d}"
        obsids = {str(n.group.get("obsid")) for n in slots[slot]}
        if len(obsids) == 1 and "None" not in obsids:
            label = f"L{obsids.pop()}_{label}"
        found.append((label, slots[slot]))
    return found


def _merged(label: str, members: list[_Node]) -> dict[str, Any]:
    group: dict[str, Any] = {"label": label}
    for key in ("obsid", "sap"):
        values = {m.group.get(key) for m in members}
        if len(values) == 1 and None not in values:
            group[key] = values.pop()
    subbands = sorted({sb for m in members for sb in m.group.get("subbands", [])})
    if subbands:
        group["subbands"] = subbands
    return group


def check_input_names(pipeline: Pipeline, given: Iterable[str]) -> None:
    """:class:`InputError` (one line) when an input the pipeline declares is not given, or a
    given one is not declared."""
    names = list(given)
    missing = [name for name in pipeline.inputs if name not in names]
    extra = [name for name in names if name not in pipeline.inputs]
    declared = ", ".join(pipeline.inputs)
    if extra:  # first: most often a typo of the missing one
        raise InputError(
            f"pipeline {pipeline.name}: unknown input {extra[0]!r} (inputs: {declared})"
        )
    if missing:
        raise InputError(
            f"pipeline {pipeline.name}: input {missing[0]!r} not given (inputs: {declared}); "
            f"add --input {missing[0]}=LIST"
        )


def expand(
    pipeline: Pipeline, inputs: dict[str, list[str]], *, run: str | None = None
) -> Expansion:
    """Every token of the run ``run`` (default: the pipeline's name) of ``pipeline`` over the
    input lists ``inputs`` (name -> files). :class:`InputError` (one line) when an input is
    missing, unknown or empty, or a gather cannot group a token."""
    run = check_run_name(run or pipeline.name)
    check_input_names(pipeline, inputs)
    for name, items in inputs.items():
        if not items:
            raise InputError(f"pipeline {pipeline.name}: input {name!r} is an empty list")
    nodes: dict[str, list[_Node]] = {}
    plans: list[StagePlan] = []
    for stage in pipeline.stages:
        rule = stage.gather_rule
        over = pipeline.over_stage(stage)
        plan = StagePlan(
            name=stage.name,
            step=stage.step,
            kind=pipeline.kind(stage),
            over=stage.over or "",
            gather=stage.gather,
            subbands_per_group=(
                rule.subbands_per_group(pipeline.clock_mhz) if rule is not None else None
            ),
            after=list(stage.after),
            parents=pipeline.parents(stage),
            min_done=stage.min_done,
            priority=pipeline.priority(stage),
            depth=pipeline.depth(stage),
        )
        sources = nodes[over.name] if over is not None else _labelled(inputs[stage.over or ""])
        made: list[_Node] = []
        if rule is None:
            for order, source in enumerate(sources):
                made.append(
                    _Node(
                        label=source.label,
                        group=dict(source.group),
                        input=source.input if over is None else None,
                        parents=[source.id] if over is not None else [],
                        order=order,
                    )
                )
        else:
            for order, (label, members) in enumerate(_groups(pipeline, stage, rule, sources)):
                members = _in_order(members)
                made.append(
                    _Node(
                        label=label,
                        group=_merged(label, members),
                        input=[str(m.input) for m in members] if over is None else None,
                        parents=[m.id for m in members] if over is not None else [],
                        order=order,
                    )
                )
                merged = made[-1].group
                plan.groups.append(
                    GroupPlan(
                        label=label,
                        members=len(members),
                        subbands=merged.get("subbands", []),
                        obsid=merged.get("obsid"),
                    )
                )
        for node in made:
            node.id = f"{run}.{stage.name}.{node.label}"
        nodes[stage.name] = made
        plan.tokens = len(made)
        plans.append(plan)
    tokens = _tokens(pipeline, run, nodes)
    return Expansion(run=run, pipeline=pipeline.name, tokens=tokens, plan=plans)


def _tokens(pipeline: Pipeline, run: str, nodes: dict[str, list[_Node]]) -> list[Token]:
    """The tokens, children before parents (stages in reverse DAG order)."""
    depends: dict[str, Depends | None] = {}
    children: dict[str, dict[str, None]] = {}  # parent -> its children, ordered, once each
    for stage in pipeline.stages:
        gathers = pipeline.over_stage(stage) is not None
        after = {name: [n.id for n in nodes[name]] for name in stage.after}
        for node in nodes[stage.name]:
            groups = []
            if gathers:
                groups.append(ParentGroup(name="input", ids=node.parents, min_done=stage.min_done))
            for name, ids in after.items():
                groups.append(ParentGroup(name=name, ids=list(ids), min_done=stage.min_done))
            depends[node.id] = Depends(groups=groups) if groups else None
            for group in groups:
                for parent in group.ids:
                    children.setdefault(parent, {})[node.id] = None
    tokens: list[Token] = []
    for stage in reversed(pipeline.stages):
        priority = pipeline.priority(stage)
        for node in nodes[stage.name]:
            tokens.append(
                new_token(
                    node.id,
                    inputs=node.input,
                    step=stage.step,
                    parameters=dict(stage.parameters),
                    priority=priority,
                    fields={
                        "pipeline": run,
                        "stage": stage.name,
                        "group": node.group,
                        "children": list(children.get(node.id, {})),
                    },
                    depends=depends[node.id],
                )
            )
    return tokens


def _edge(pipeline: Pipeline, stage: Stage) -> str:
    """How a stage gets its tokens: ``scatter calibrator``, ``gather all of cal_prep``..."""
    over = pipeline.over_stage(stage)
    if stage.gather is None:
        text = f"one per {over.name}" if over is not None else f"scatter {stage.over}"
    else:
        rule = stage.gather_rule
        n = rule.subbands_per_group(pipeline.clock_mhz) if rule and rule.kind == "width" else None
        size = f" = {n} subbands" if n else ""
        text = f"gather {stage.gather}{size} of {stage.over}"
    if stage.after:
        text += f"; after {', '.join(stage.after)}"
    if pipeline.parents(stage) and stage.min_done < 1.0:
        text += f" (min_done {stage.min_done:g})"
    return text


def dag_text(pipeline: Pipeline, plan: Sequence[StagePlan] | None = None) -> str:
    """The pipeline as text: its inputs, then one line per stage in DAG order, indented by
    depth, with the step, how its tokens come about (over, gather, after: every incoming
    edge), the priority and, given a ``plan``, the token count; the last column names the
    stages that wait for it. Readable for 5-10 stages with fan-in::

        cal-target: calibrator then target
          inputs: calibrator, target
          cal_prep [flag-average]               <- scatter calibrator      x20  -> cal_solve
            cal_solve [cal-solve]               <- gather all of cal_prep (min_done 0.9) ...
    """
    counts = {p.name: p.tokens for p in plan or []}
    head = pipeline.name + (f": {pipeline.description}" if pipeline.description else "")
    lines = [head, f"  inputs: {', '.join(pipeline.inputs) or 'none'}"]
    rows = []
    for stage in pipeline.stages:
        name = "  " * (1 + pipeline.depth(stage)) + f"{stage.name} [{stage.step}]"
        edge = f"<- {_edge(pipeline, stage)}"
        notes = [f"priority {pipeline.priority(stage)}"]
        if stage.name in counts:
            notes.insert(0, f"{counts[stage.name]} token(s)")
        kids = pipeline.children(stage)
        tail = f"-> {', '.join(kids)}" if kids else ""
        rows.append((name, edge, ", ".join(notes), tail))
    width_name = max(len(r[0]) for r in rows)
    width_edge = max(len(r[1]) for r in rows)
    width_extra = max(len(r[2]) for r in rows)
    for name, edge, extra, tail in rows:
        line = f"{name:<{width_name}}  {edge:<{width_edge}}  {extra:<{width_extra}}  {tail}"
        lines.append(line.rstrip())
    return "\n".join(lines)
