"""The CouchDB design document ``Monitor``: PiCaS's views, verbatim, plus gridlrt's own.

PiCaS's ``todo``/``locked``/``done``/``error`` (keyed by ``_id``) and ``overview_total``
(state name → 1, reduced by ``_sum``) are written exactly as PiCaS writes them, so PiCaS
tools keep working on a gridlrt pool. gridlrt's views use the same state rules
(:func:`gridlrt.tokens.model.picas_state`) refined by ``status``, and only built-in reduces.
All views live in one design document so CouchDB indexes them in one pass.
:data:`DESIGN_VERSION` lets ``gridlrt pool init`` upgrade a pool in place.
"""

from __future__ import annotations

from typing import Any

DESIGN_ID = "_design/Monitor"
DESIGN_VERSION = 1

_PICAS_VIEW = """function(doc) {
   if(doc.type == "token") {
    if(%s) {
      emit(doc._id, doc._id);
    }
  }
}"""

PICAS_CONDITIONS = {
    "todo": "doc.lock == 0 && doc.done == 0",
    "locked": "doc.lock > 0 && doc.done == 0",
    "done": "doc.lock > 0 && doc.done > 0 && parseInt(doc.exit_code) == 0",
    "error": "doc.lock > 0 && doc.done > 0 && parseInt(doc.exit_code) != 0",
}

_PICAS_OVERVIEW = """function(doc) {
   if(doc.type == "token") {
       if (doc.lock == 0 && doc.done == 0){
          emit('todo', 1);
       }
       if(doc.lock > 0 && doc.done == 0) {
          emit('locked', 1);
       }
       if(doc.lock > 0 && doc.done > 0 && parseInt(doc.exit_code) == 0) {
          emit('done', 1);
       }
       if(doc.lock > 0 && doc.done > 0 && parseInt(doc.exit_code) != 0) {
          emit('error', 1);
       }
   }
}"""

# The same rules as gridlrt.tokens.model (picas_state + the active statuses); tested to agree.
_STATUS_JS = """
  var lock = Number(doc.lock || 0), done = Number(doc.done || 0), s;
  if (lock == 0 && done == 0) { s = 'todo'; }
  else if (lock > 0 && done == 0) {
    s = ['downloading', 'running', 'uploading'].indexOf(doc.status) >= 0 ? doc.status : 'locked';
  }
  else if (lock > 0 && done > 0 && parseInt(doc.exit_code) == 0) { s = 'done'; }
  else { s = 'error'; }
  var step = doc.step || 'default';
"""


def _gridlrt_view(body: str) -> str:
    return "function(doc) {\n  if (doc.type != 'token') { return; }" + _STATUS_JS + body + "\n}"


GRIDLRT_VIEWS: dict[str, dict[str, str]] = {
    # claim order within a step: priority (high first), then age, then id
    "gridlrt_todo": {
        "map": _gridlrt_view(
            "  if (s == 'todo') { emit([step, -(doc.priority || 0), doc.created || 0], null); }"
        )
    },
    "gridlrt_todo_any": {
        "map": _gridlrt_view(
            "  if (s == 'todo') { emit([-(doc.priority || 0), doc.created || 0], null); }"
        )
    },
    # listing by status (and step); reduce with group_level=2 gives the overview
    "gridlrt_status": {
        "map": _gridlrt_view("  emit([s, step, doc._id], null);"),
        "reduce": "_count",
    },
    # active tokens by last sign of life, for recovering lost pilots
    "gridlrt_heartbeat": {
        "map": _gridlrt_view(
            "  if (s == 'locked' || s == 'downloading' || s == 'running' || s == 'uploading') {\n"
            "    emit(Math.max(Number(doc.heartbeat || 0), lock), null);\n  }"
        )
    },
}


def design_document() -> dict[str, Any]:
    """The ``Monitor`` design document gridlrt wants (without ``_rev``)."""
    views: dict[str, dict[str, str]] = {
        name: {"map": _PICAS_VIEW % condition} for name, condition in PICAS_CONDITIONS.items()
    }
    views["overview_total"] = {"map": _PICAS_OVERVIEW, "reduce": "_sum"}
    views.update(GRIDLRT_VIEWS)
    return {
        "_id": DESIGN_ID,
        "language": "javascript",
        "gridlrt_version": DESIGN_VERSION,
        "views": views,
    }


def merged(existing: dict[str, Any] | None) -> dict[str, Any] | None:
    """The design document to write over ``existing`` (keeping views others added), or None
    when ``existing`` is already current."""
    wanted = design_document()
    if existing is None:
        return wanted
    views = {**existing.get("views", {}), **wanted["views"]}
    if existing.get("gridlrt_version") == DESIGN_VERSION and existing.get("views") == views:
        return None
    return {**existing, **wanted, "views": views}
