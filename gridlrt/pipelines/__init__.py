"""Pipelines: a definition of stages (scatter over input lists, one-to-one, gather by group,
``after`` other stages, ``min_done`` thresholds) and its expansion into tokens that know their
parents and children. Nothing here runs at run time: the tokens room promotes a waiting token
when its parents finish (:mod:`gridlrt.tokens.dependencies`), so pilots never import this.

- :mod:`gridlrt.pipelines.definition`: the pipeline file (TOML), :func:`load_pipeline`;
- :mod:`gridlrt.pipelines.expand`: :func:`expand` (pure: tokens and a plan), :func:`dag_text`;
- :mod:`gridlrt.pipelines.service`: :func:`create_pipeline`, :func:`pipeline_status`,
  :func:`pipeline_record` for the CLI.
"""

from __future__ import annotations

from gridlrt.pipelines.definition import Gather, Pipeline, Stage, load_pipeline
from gridlrt.pipelines.expand import Expansion, StagePlan, dag_text, expand

__all__ = [
    "Expansion",
    "Gather",
    "Pipeline",
    "Stage",
    "StagePlan",
    "dag_text",
    "expand",
    "load_pipeline",
]
