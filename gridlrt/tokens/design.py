"""The CouchDB design document ``Monitor``: PiCaS's views, verbatim, plus gridlrt's own.

PiCaS's ``todo``/``locked``/``done``/``error`` (keyed by ``_id``) and ``overview_total``
(state name → 1, reduced by ``_sum``) are written exactly as PiCaS writes them, so PiCaS
tools keep working on a gridlrt pool. gridlrt's views use the same state rules
(:func:`gridlrt.tokens.model.picas_state`) refined by ``status``, and only built-in reduces.
All views live in one design document so CouchDB indexes them in one pass.
:data:`DESIGN_VERSION` lets ``gridlrt pool init`` upgrade a pool in place.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Union

from pydantic import BaseModel

from gridlrt.tokens.model import Token

DESIGN_ID = "_design/Monitor"
DESIGN_VERSION = 8

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

# --- the shape of a token, for views and queries that cannot run pydantic -----------------------
#
# A document of type token that is not a valid token (a field of the wrong type) must not reach
# a view's keys as garbage (a number where a step name goes, NaN for a heartbeat): the views
# classify it as "malformed" instead, and the SQLite pool runs the same check in SQL. The check
# is derived from the Token model (a shallow mirror of pydantic's lax rules: a field may be
# missing, else it must be of one of these JSON kinds; list items that are models are checked
# one level deep). In the views the check is ``bad()``, run at most once a document and only
# after a view's own cheaper test (is it todo, unsettled, in a pipeline): indexing a document a
# view does not concern then skips it, about half of pouchdb-server's cost of indexing a written
# document in the claim view (bench/RESULTS.md, issue 18). pydantic stays the judge: the pools
# parse what the check flags, and a document the check lets through but pydantic refuses is
# still skipped and reported when read.

Shape = dict[str, tuple[tuple[str, ...], bool, "Shape | None"]]  # field: (kinds, required, items)


def _kinds(annotation: Any) -> tuple[tuple[str, ...], Shape | None] | None:
    """JSON kinds a field accepts (None: anything), and the shape of its list items."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        kinds: list[str] = []
        for arg in typing.get_args(annotation):
            sub = _kinds(arg)
            if sub is None:
                return None
            kinds.extend(k for k in sub[0] if k not in kinds)
        return tuple(kinds), None
    if annotation is type(None):
        return ("null",), None
    if annotation is bool or annotation is int:
        return ("int",), None
    if annotation is float:
        return ("number",), None
    if annotation is str:
        return ("string",), None
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        items = _shape(item) if isinstance(item, type) and issubclass(item, BaseModel) else None
        return ("array",), items
    if origin is dict or annotation is dict:
        return ("object",), None
    return None  # Any, enums (status is derived from lock/done when garbage), ...


def _shape(model: type[BaseModel]) -> Shape:
    shape: Shape = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in ("_id", "_rev", "type", "status"):
            continue
        found = _kinds(info.annotation)
        if found is not None:
            kinds, items = found
            if key == "step":  # None and "" mean the default step
                kinds = (*kinds, "null")
            shape[key] = (kinds, info.is_required(), items)
    return shape


TOKEN_SHAPE: Shape = _shape(Token)

_SHAPE_JS = """
  function kindOk(v, kinds) {
    var t = v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
    var num = kinds.indexOf('number') >= 0, int = kinds.indexOf('int') >= 0;
    if (t == 'boolean') { return num || int; }
    if (t == 'number') { return isFinite(v) && (num || (int && v % 1 == 0)); }
    if (t == 'string') {
      if (kinds.indexOf('string') >= 0) { return true; }
      if (int && /^\\s*[-+]?\\d+(\\.0*)?\\s*$/.test(v)) { return true; }
      return num && /^\\s*[-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?\\s*$/.test(v);
    }
    return kinds.indexOf(t) >= 0;
  }
  function misfit(d, shape) {
    for (var f in shape) {
      var v = d[f], spec = shape[f];
      if (v === undefined) { if (spec[1]) { return f + ': missing'; } continue; }
      if (!kindOk(v, spec[0])) { return f + ': not ' + spec[0].join(' or '); }
      if (spec[2] && Array.isArray(v)) {
        for (var i = 0; i < v.length; i++) {
          var item = v[i];
          if (item === null || typeof item != 'object' || Array.isArray(item)) {
            return f + '.' + i + ': not an object';
          }
          var inner = misfit(item, spec[2]);
          if (inner) { return f + '.' + i + '.' + inner; }
        }
      }
    }
    return '';
  }
  var misfitMemo = null;
  function bad() {
    if (misfitMemo === null) { misfitMemo = misfit(doc, SHAPE); }
    return misfitMemo;
  }
"""


def _js_shape() -> str:
    return _SHAPE_JS.replace("SHAPE", json.dumps(TOKEN_SHAPE, separators=(",", ":")))


def _sql_kind(value: str, kind_of: str, kinds: tuple[str, ...]) -> str:
    """SQL: is JSON value ``value`` (its json_type ``kind_of``) one of ``kinds``."""
    text = f"trim({value})"
    unsigned = f"ltrim({text}, '+-')"
    tests = []
    if "int" in kinds or "number" in kinds:
        tests.append(f"{kind_of} IN ('integer', 'true', 'false')")
    if "number" in kinds:
        tests.append(f"({kind_of} = 'real' AND abs({value}) <= 1.7976931348623157e308)")
        tests.append(
            f"({kind_of} = 'text' AND {unsigned} GLOB '*[0-9]*' "
            f"AND {unsigned} NOT GLOB '*[^0-9eE.+-]*' AND {unsigned} GLOB '[0-9.]*')"
        )
    elif "int" in kinds:
        tests.append(f"({kind_of} = 'real' AND {value} = CAST({value} AS INTEGER))")
        tests.append(
            f"({kind_of} = 'text' AND {unsigned} GLOB '[0-9]*' "
            f"AND rtrim({unsigned}, '0') NOT GLOB '*[^0-9]*.*' "
            f"AND rtrim(rtrim({unsigned}, '0'), '.') NOT GLOB '*[^0-9]*')"
        )
    named = {"string": "text", "null": "null", "array": "array", "object": "object"}
    chosen = [named[k] for k in kinds if k in named]
    if chosen:
        tests.append(f"{kind_of} IN ({', '.join(repr(k) for k in chosen)})")
    return "(" + " OR ".join(tests) + ")"


def sql_misfit(doc: str = "doc", shape: Shape | None = None, depth: int = 0) -> str:
    """An SQL expression, true when the JSON object in column ``doc`` does not fit ``shape``
    (the token's by default). ``doc`` must hold a valid JSON object (check json_valid first)."""
    shape = TOKEN_SHAPE if shape is None else shape
    wrong = []
    for field_, (kinds, required, items) in shape.items():
        path = "'$.\"" + field_ + "\"'"
        kind_of = f"json_type({doc}, {path})"
        value = f"json_extract({doc}, {path})"
        fits = _sql_kind(value, kind_of, kinds)
        missing = "0" if not required else "1"
        wrong.append(
            f"(CASE WHEN {kind_of} IS NULL THEN {missing} ELSE NOT coalesce({fits}, 0) END)"
        )
        if items:
            each = f"e{depth}"
            inner = sql_misfit(f"{each}.value", items, depth + 1)
            wrong.append(
                f"({kind_of} = 'array' AND EXISTS (SELECT 1 FROM json_each({doc}, {path}) AS "
                f"{each} WHERE {each}.type != 'object' OR {inner}))"
            )
    return "(" + " OR ".join(wrong) + ")"


def sql_misfit_once(doc: str = "doc", shape: Shape | None = None, depth: int = 0) -> str:
    """:func:`sql_misfit` with one JSON parse per object: it walks ``json_each(doc)`` once and
    judges each member by its key, instead of one ``json_extract`` (one parse) per field; about
    half the cost on a token, which matters where it runs on writes (the embedded pool's
    triggers). ``doc`` must hold a valid JSON object. Lists of objects are walked by their own
    ``json_each``, kept at the top of the expression: SQLite's parser has a small stack."""
    shape = TOKEN_SHAPE if shape is None else shape
    member = f"m{depth}"
    cases = []
    lists = []
    for field_, (kinds, _required, items) in shape.items():
        fits = _sql_kind(f"{member}.value", f"{member}.type", kinds)
        cases.append(f"WHEN {_sql_text(field_)} THEN NOT coalesce({fits}, 0)")
        if items:
            each = f"e{depth}"
            # an item's row has an integer key only when the member is an array
            item = f"CASE WHEN {each}.type = 'object' THEN {each}.value ELSE '{{}}' END"
            lists.append(
                f"EXISTS (SELECT 1 FROM json_each({doc}, {_sql_text(_path(field_))}) AS {each} "
                f"WHERE typeof({each}.key) = 'integer' AND ({each}.type != 'object' OR "
                f"{sql_misfit_once(item, items, depth + 1)}))"
            )
    tests = [
        f"EXISTS (SELECT 1 FROM json_each({doc}) AS {member} WHERE CASE {member}.key "
        + " ".join(cases)
        + " ELSE 0 END)",
        *lists,
    ]
    required = [field_ for field_, (_k, needed, _i) in shape.items() if needed]
    if required:
        names = ", ".join(_sql_text(f) for f in required)
        tests.append(
            f"(SELECT count(DISTINCT {member}.key) FROM json_each({doc}) AS {member} "
            f"WHERE {member}.key IN ({names})) < {len(required)}"
        )
    return "(" + " OR ".join(tests) + ")"


def _path(field_: str) -> str:
    return '$."' + field_ + '"'


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# The same rules as gridlrt.tokens.model (picas_state + the active statuses); tested to agree.
_STATUS_JS = """
  var lock = Number(doc.lock || 0), done = Number(doc.done || 0), s;
  if (lock == 0 && done == 0) { s = 'todo'; }
  else if (lock < 0 && done == 0) { s = doc.status == 'blocked' ? 'blocked' : 'waiting'; }
  else if (lock > 0 && done == 0) {
    s = ['downloading', 'running', 'uploading'].indexOf(doc.status) >= 0 ? doc.status : 'locked';
  }
  else if (lock > 0 && done > 0 && parseInt(doc.exit_code) == 0) { s = 'done'; }
  else { s = 'error'; }
  var step = typeof doc.step == 'string' && doc.step ? doc.step : 'default';
  var active = ['locked', 'downloading', 'running', 'uploading'];
"""


def _gridlrt_view(body: str) -> str:
    return (
        "function(doc) {\n  if (doc.type != 'token') { return; }"
        + _SHAPE_JS_FILLED
        + _STATUS_JS
        + body
        + "\n}"
    )


_SHAPE_JS_FILLED = _js_shape()


#: The field of a side record (see :meth:`gridlrt.tokens.pool.TokenPool.put_record`) holding
#: its index keys.
RECORD_KEYS = "gridlrt_keys"

GRIDLRT_VIEWS: dict[str, dict[str, str]] = {
    # claim order within a step: priority (high first), then age, then id
    "gridlrt_todo": {
        "map": _gridlrt_view(
            "  if (s == 'todo' && !bad()) {\n"
            "    emit([step, -Number(doc.priority || 0), Number(doc.created || 0)], null);\n  }"
        )
    },
    # what a pilot of any step looks for, in one index (pouchdb-server pays for each view it
    # reads once per written document, ~0.5 ms): [0, -priority, created] for the todo tokens in
    # claim order (priority, then age, then id), and [1, id] for the tokens whose children
    # were not yet told that they finished, or were blocked or unblocked (a pilot died in
    # between; usually none)
    "gridlrt_next": {
        "map": _gridlrt_view(
            "  if (s == 'todo' && !bad()) {\n"
            "    emit([0, -Number(doc.priority || 0), Number(doc.created || 0)], null);\n  }\n"
            "  if (doc.settled === false && Array.isArray(doc.children)\n"
            "      && doc.children.length && !bad()) {\n"
            "    emit([1, doc._id], null);\n  }"
        )
    },
    # listing by status (and step); reduce with group_level=2 gives the overview. A malformed
    # document is listed under status "malformed", with the reason as its value.
    "gridlrt_status": {
        "map": _gridlrt_view(
            "  var b = bad();\n  emit([b ? 'malformed' : s, step, doc._id], b || null);"
        ),
        "reduce": "_count",
    },
    # active tokens by last sign of life, for recovering lost pilots; a malformed document
    # that looks active comes first (key 0), so that recover reports it
    "gridlrt_heartbeat": {
        "map": _gridlrt_view(
            "  var on = active.indexOf(s) >= 0;\n"
            "  if ((on || active.indexOf(doc.status) >= 0) && (on || bad())) {\n"
            "    emit(bad() ? 0 : Math.max(Number(doc.heartbeat || 0), lock), null);\n  }"
        )
    },
    # pipeline progress: reduce with group_level=3 gives counts per pipeline, stage and status
    "gridlrt_stages": {
        "map": _gridlrt_view(
            "  if (typeof doc.pipeline == 'string' && typeof doc.stage == 'string' && !bad()) {\n"
            "    emit([doc.pipeline, doc.stage, s], null);\n  }"
        ),
        "reduce": "_count",
    },
    # tokens with conflicting revisions (replicas of a pool accepted two writes of one
    # revision; see gridlrt.tokens.conflicts): read only on a clustered or replicated pool,
    # so a single server never indexes it
    "gridlrt_conflicts": {
        "map": "function(doc) {\n"
        "  if (doc.type == 'token' && doc._conflicts && doc._conflicts.length) {\n"
        "    emit(doc._id, doc._conflicts.length);\n  }\n}"
    },
    # side records by index key: [type, key] for documents of type gridlrt_<kind> only, so no
    # token (and no PiCaS view) ever meets a record
    "gridlrt_records": {
        "map": "function(doc) {\n"
        "  if (typeof doc.type != 'string' || doc.type.indexOf('gridlrt_') != 0) { return; }\n"
        f"  var keys = doc.{RECORD_KEYS};\n"
        "  if (!Array.isArray(keys)) { return; }\n"
        "  for (var i = 0; i < keys.length; i++) {\n"
        "    if (typeof keys[i] == 'string') { emit([doc.type, keys[i]], null); }\n"
        "  }\n}"
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
