"""Fakes of the DIRAC and gLite WMS job-submission command-line tools, for tests.

DIRAC and gLite cannot be reached from here, so the fixtures ``fake_dirac`` and ``fake_glite``
install stand-ins for ``dirac-wms-job-submit``, ``dirac-wms-job-status``, ``dirac-wms-job-kill``
and ``glite-wms-job-submit``, ``glite-wms-job-status``, ``glite-wms-job-cancel`` into a per-test
``bin/`` directory. They take the real options, print the real output formats and run the jobs
locally, the way a worker node would: each job gets a fresh job directory, its InputSandbox is
copied in by basename, ``Executable`` runs there with ``Arguments`` and StdOutput/StdError go to
files in it. State (ids, job records, job dirs) lives under ``$FAKE_DIRAC_HOME`` or
``$FAKE_GLITE_HOME`` (separate variables, so one test can use both fakes), shared by the
separate processes under an ``fcntl`` lock. A small detached supervisor process per job records
the exit code and the final state, so status goes Running -> Done/Failed (or Killed/Cancelled).

Reproduced, with where it was verified (stored public sources, read with the ``search`` tool):

DIRAC (``DIRACGrid/DIRAC``, ``src/DIRAC/...``)
  * ``dirac-wms-job-submit [-f FILE] JDL...`` (``Interfaces/scripts/dirac_wms_job_submit.py``):
    ``JobID = 12`` per JDL, ``JobID = [12, 13, 14]`` (a Python list) for a parametric one;
    ``-f FILE`` appends the ids one per line (and first prints ``Appending job ids to existing
    logfile: FILE`` when FILE exists); failures are printed after all successes as
    ``ERROR <jdl>: <message>`` and the exit code is 2. A JDL argument that is not a file is read
    as JDL text, as ``Dirac.submitJob`` does.
  * Error messages are DIRAC's ``S_ERROR(EWMSJDL, ...)`` texts, formatted as
    ``Invalid job description ( 1501 : <msg>)`` (``Core/Utilities/ReturnValues.py``,
    ``DErrno.py``): ``Invalid job JDL``, ``Input Sandbox is not valid`` (a local InputSandbox
    entry missing, checked relative to the *current directory* as ``os.path.exists`` does in
    ``WorkloadManagementSystem/Client/WMSClient.py``; entries starting ``LFN:``, ``lfn:``,
    ``SB:``, ``%s``, ``%(`` are not checked), ``Illegal number of job parameters N``,
    ``Number of parametric jobs exceeds the limit of 20`` (``MAX_PARAMETRIC_JOBS`` in
    ``JobManagerHandler.py``; fixture attribute ``max_parametric_jobs``), and the unformatted
    ``X is not a valid value for JobType`` (JobManifest allows only User, Test, Hospital), ...
  * Parametric jobs (``DIRACCommon ... Utilities/ParametricJob.py``): ``Parameters`` is the
    *number* of jobs (or a list of values); the first value is ParameterStart and each next one
    is the previous times ParameterFactor (default 1) plus ParameterStep, so start + k*step;
    ``%s`` becomes the value and ``%n`` the zero-padded index in every attribute, and the
    server replaces ``%j`` with the job id (``JobDB.insertNewJobIntoDB``). Each job's JDL gets
    ``Parameter`` and ``ParameterNumber`` instead of the Parameter* attributes.
  * ``dirac-wms-job-status [-f FILE] ID...`` (``dirac_wms_job_status.py`` + ``Dirac.getJobStatus``
    with ``JobMonitoringClient.getJobsStates`` + ``getJobsSites``) prints per known job
    ``JobID=12 Status=Done; MinorStatus=Execution Complete; ApplicationStatus=Unknown;
    Site=GRID.FAKE.nl; `` (note the trailing space; current DIRAC includes ApplicationStatus,
    the script's docstring example predates it). Unknown ids are silently left out (the job DB
    query returns no row for them), exit code 0; a non-integer id gives
    ``ERROR: Expected (list of)  integer or string for existing jobID`` (sic, two spaces) and 2.
  * ``dirac-wms-job-kill ID...`` (``dirac_wms_job_kill.py``, ``Dirac.killJob``, ``JobStatus.py``)
    kills only jobs whose state may move to Killed (Running, Matched, Stalled, Completing,
    Staging; *not* Received/Waiting, nor finished ones) and prints ``Killed jobs 12,13``; if
    none is left it prints ``ERROR Invalid job specification: []`` and exits 2.
  * States: Received (during ``start_delay``), Waiting (queued by ``max_running``), Running,
    Done (exit 0, ``Execution Complete``), Failed (exit != 0, ``Application Finished With
    Errors``), Killed (``Marked for termination``). Site is ``ANY`` until the job runs.
  * The job environment has ``DIRACJOBID`` and ``JOBID``.

gLite WMS UI (``italiangrid/org.glite.wms``, ``org.glite.wms-ui.commands``)
  * ``glite-wms-job-submit (-d ID | -a) [-o FILE] [--noint] [--nomsg] [-e URL] JDL``
    (``src/services/jobsubmit.cpp``, ``job.cpp``, ``utilities/utils.cpp``): prints
    ``\\nConnecting to the service <endpoint>\\n\\n`` then the 74-wide stripe
    ``====================== glite-wms-job-submit Success ======================``, ``The job has
    been successfully submitted to the WMProxy``, ``Your job identifier is:``, a blank line, the
    https id, the ``-o`` note and the closing stripe. ``-o FILE`` writes ``###Submitted Job
    Ids###`` then the id, without a final newline, and appends to an existing ids file.
    Neither ``-d`` nor ``-a`` -> ``Error - Missing Information`` (``Job::setDelegationId``).
    Errors go to stderr as ``\\nError - <name>\\n<message>\\n\\n`` and exit 1 (``excman.cpp``);
    JDL errors use the glite-jdl exception texts (``RequestAdExceptions.cpp``), e.g.
    ``AdSyntaxException`` / ``The following parsing error(s) have been found:``,
    ``Executable: Jdl mandatory attribute is missing``.
  * Parametric (SURF and BiG Grid user docs): ``JobType = "Parametric"``; ``Parameters`` is the
    *exclusive upper bound* (or a list): values ParameterStart, +ParameterStep, ... <
    Parameters (defaults 0 and 1); ``_PARAM_`` is replaced in every string attribute. The
    submit prints one (parent) id; the nodes get their own ids.
  * ``glite-wms-job-status [-i FILE] [--noint] [--nonodes] [-v 0|1] ID...``
    (``src/lbclient/glite-wms-job-status`` + ``wmsui_api.py`` 2012): the
    ``======================= glite-wms-job-status Success =====================`` /
    ``BOOKKEEPING INFORMATION:`` block with ``Status info for the Job : ``, ``Current Status:``
    (``Done(Success)`` / ``Done(Exit Code !=0)`` in the EMI UI; the older UI printed
    ``Done (Success)`` and ``*****`` separators: fixture attribute ``status_style = "legacy"``),
    ``Exit code:``, ``Status Reason:``, ``Destination:``, ``Submitted:``, and for a parametric
    parent the ``- Nodes information for: `` section with each node indented by four spaces.
    ``-i FILE`` with several ids and no ``--noint`` shows the real interactive menu and reads
    stdin (at EOF the real Python-2 script dies with EOFError; so does the fake).
  * ``glite-wms-job-cancel [--noint] ID...`` (``src/services/jobcancel.cpp``, ``lbapi.cpp``):
    asks ``Are you sure you want to remove specified job(s) [y/n]y :`` unless ``--noint``,
    prints the 88-wide ``glite-wms-job-cancel Success`` stripe, ``The cancellation request has
    been successfully submitted for the following job(s):`` and ``- <id>``; a finished job gives
    ``Error - Cancel not allowed`` / ``Current Job Status is Done``.
  * States: Submitted (during ``start_delay``), Scheduled (queued by ``max_running``), Running,
    Done (with exit code), Cancelled. The job environment has ``GLITE_WMS_JOBID`` and
    ``EDG_WL_JOBID``.

Both: relative InputSandbox paths are resolved against the *current directory* of the submit
command (DIRAC: verified; gLite: the UI makes local paths absolute with ``getAbsolutePath``,
which is cwd-based). ``Arguments`` is split like a shell command line (``shlex``, no variable
expansion): both real job wrappers hand it to a shell (the gLite/CREAM JDL guide says arguments
with spaces must be single-quoted). A basename ``Executable`` present in the job dir runs as
``./name`` after ``chmod u+x``; otherwise it runs as given (PATH of the site environment).
Missing StdOutput / StdError: DIRAC writes ``std.out`` / ``std.err`` (assumed from the DIRAC
Job API defaults), gLite discards the output.

The JDL is read by our own small ClassAd parser (independent of gridlrt): optional ``[ ... ]``,
``Name = value;`` (names case-insensitive; the ``;`` may be left out only before ``]`` or the
end, as in ClassAds), double-quoted strings with ``\\"`` ``\\\\`` ``\\n`` ``\\t`` escapes,
integers, reals, ``true``/``false``, lists ``{ ... }``, and for other attributes (e.g.
``Requirements``) general ClassAd expressions, kept as :class:`Expr`. Whole-line ``#`` and
``//`` comments are skipped. Malformed input (missing ``;``, unterminated string, unbalanced
braces/brackets/parentheses, unknown characters) is rejected in the tool's error format and
nothing runs.

Deliberately stricter than the real tools (``strict = True``, the default; set
``fake.strict = False`` to get the real leniency back where noted):
  * duplicated attributes are rejected (real ClassAds keep the last one);
  * DIRAC: a missing ``Executable`` is rejected (real DIRAC accepts and the job fails later);
    an integer ``Parameters`` without ``ParameterStart`` and ``ParameterStep`` is rejected (real
    DIRAC silently uses 1 and 0, i.e. every job gets the same value);
  * DIRAC: the real client reads the JDL with ``ClassAdLight`` (a split on ``=`` and ``;``,
    ``Core/Utilities/ClassAd/ClassAdLight.py``) after dropping only lines that *start* with
    ``#`` (``WMSClient.submitJob``), and re-sends what it read. The fake runs the same
    algorithm and rejects the JDL when it would read it differently from the ClassAd meaning:
    ``//`` comment lines, trailing ``# ...`` comments, ``;`` or ``[`` inside a string all
    corrupt attribute names or values in real DIRAC. Known DIRAC attributes written in another
    case (``executable``) are rejected too (DIRAC's names are case-sensitive);
  * DIRAC: type checks on known attributes (strings quoted, sandboxes strings or lists of
    strings, counts numbers; real DIRAC passes everything on as text), and InputSandbox
    entries with blanks or commas (DIRAC splits the list on them) or two files of one name.
  These rejections print the tool's usual error (DIRAC: ``Invalid job JDL`` and the like) and
  explain themselves with ``(fake, strict)`` on stderr. gLite's own type checks
  (``AdMismatchException``) are real behaviour and always on.

Approximated: the state of a gLite parametric parent is derived from its nodes (LB computes
it itself); the LB error text for an unknown gLite id; Status Reason texts.

Not faked: proxies/VOMS, sandboxes on grid storage (``LFN:``, ``gsiftp://`` entries are not
fetched), OutputSandbox retrieval (``dirac-wms-job-get-output``, ``glite-wms-job-output``; the
files stay in the job dir), DAGs and collections, LB queries (``--all``, ``--status``, ...),
``-v 2``/``-v 3`` status detail, Matched/Stalled/Completing/Ready/Aborted/Cleared states, job
rescheduling, log files. Child processes get an unblocked signal mask; kill/cancel sends
SIGTERM to the job's process group and SIGKILL after :data:`KILL_GRACE` seconds.

Fixture API (:class:`FakeGrid`, function-scoped, fresh state per test): ``.env`` (pass it to
the code under test), ``.site_env`` (the jobs' environment, by default a copy of the test
process's; edits are written through), ``.jobs()`` -> :class:`FakeJob` list (id, state as the
status tool prints it, exit_code, final, job_dir, jdl, jdl_text, argv, parameter, parent, ...),
``.job(id)``, ``.wait(ids=None, timeout=120)`` (a gLite parent id means its nodes; raises
AssertionError with output tails on timeout), ``.close()`` (teardown: kills what still runs),
and the options ``max_running``, ``start_delay``, ``strict``, ``max_parametric_jobs`` (DIRAC),
``status_style`` (gLite). Job ids: DIRAC 1001, 1002, ...; gLite
``https://wms.fake-grid.example:9000/<22 url-safe characters>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import getopt
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]

DIRAC_TOOLS = ("dirac-wms-job-submit", "dirac-wms-job-status", "dirac-wms-job-kill")
GLITE_TOOLS = ("glite-wms-job-submit", "glite-wms-job-status", "glite-wms-job-cancel")
HOME_VARS = {"dirac": "FAKE_DIRAC_HOME", "glite": "FAKE_GLITE_HOME"}

#: Seconds between SIGTERM and SIGKILL when a job is killed or cancelled.
KILL_GRACE = 3.0
FIRST_DIRAC_ID = 1001
#: gLite has no small parametric limit like DIRAC's 20; the fake refuses beyond this many nodes.
MAX_FAKE_NODES = 1000
DIRAC_SITE = "GRID.FAKE.nl"
GLITE_ENDPOINT = "https://wms.fake-grid.example:7443/glite_wms_wmproxy_server"
GLITE_LB = "https://wms.fake-grid.example:9000"
GLITE_CE = "ce.fake-grid.example:8443/cream-pbs-fake"

# ----------------------------------------------------------------------------------------------
# The ClassAd (JDL) parser
# ----------------------------------------------------------------------------------------------


class JdlSyntaxError(ValueError):
    """The JDL text is not a well-formed ClassAd."""


@dataclass(frozen=True)
class Expr:
    """A ClassAd expression that is not a plain literal, e.g. ``other.GlueCEPolicyMaxCPUTime > 60``
    or an unquoted word. ``text`` is its source text."""

    text: str


@dataclass
class JdlAttribute:
    name: str  # as written
    value: Any  # str | int | float | bool | list | Expr
    raw: str  # source text of the value


@dataclass
class Jdl:
    """A parsed JDL. Look-ups are case-insensitive, like ClassAd attribute names."""

    text: str
    attributes: dict[str, JdlAttribute]
    duplicates: list[str] = field(default_factory=list)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self.attributes

    def get(self, name: str, default: Any = None) -> Any:
        attr = self.attributes.get(name.lower())
        return default if attr is None else attr.value

    def as_dict(self) -> dict[str, Any]:
        return {a.name: a.value for a in self.attributes.values()}


@dataclass
class _Token:
    kind: str  # string, number, ident, op, punct
    text: str
    value: Any
    start: int
    end: int
    line: int


_LEX = re.compile(
    r"""(?P<ws>\s+)
      | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<op>=\?=|=!=|==|!=|<=|>=|&&|\|\||[-+*/%<>!?:])
      | (?P<punct>[\[\]{}(),;=])""",
    re.VERBOSE,
)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "/": "/", "'": "'"}


def _blank_comment_lines(text: str) -> str:
    """Whole-line ``#`` and ``//`` comments become blanks (offsets and line numbers stay)."""
    out = []
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip(" \t")
        if stripped.startswith("#") or stripped.startswith("//"):
            body = line.rstrip("\r\n")
            out.append(" " * len(body) + line[len(body) :])
        else:
            out.append(line)
    return "".join(out)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    line = 1
    while pos < len(text):
        if text[pos] == '"':
            start, start_line = pos, line
            pos += 1
            chars: list[str] = []
            while True:
                if pos >= len(text) or text[pos] == "\n":
                    raise JdlSyntaxError(f"unterminated string starting on line {start_line}")
                char = text[pos]
                if char == '"':
                    pos += 1
                    break
                if char == "\\":
                    nxt = text[pos + 1] if pos + 1 < len(text) else ""
                    if nxt not in _ESCAPES:
                        raise JdlSyntaxError(
                            f"unknown escape sequence \\{nxt} in a string on line {line}"
                        )
                    chars.append(_ESCAPES[nxt])
                    pos += 2
                    continue
                chars.append(char)
                pos += 1
            tokens.append(_Token("string", text[start:pos], "".join(chars), start, pos, start_line))
            continue
        match = _LEX.match(text, pos)
        if match is None:
            raise JdlSyntaxError(f"unexpected character {text[pos]!r} on line {line}")
        kind = match.lastgroup or ""
        chunk = match.group()
        if kind != "ws":
            value: Any = chunk
            if kind == "number":
                value = float(chunk) if any(c in chunk for c in ".eE") else int(chunk)
            tokens.append(_Token(kind, chunk, value, pos, match.end(), line))
        line += chunk.count("\n")
        pos = match.end()
    return tokens


_BINARY_OPS = {"=?=", "=!=", "==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%"}
_CLOSERS = {"]": "[", "}": "{", ")": "("}


class _Parser:
    def __init__(self, text: str) -> None:
        self.source = text
        self.tokens = _tokenize(_blank_comment_lines(text))
        self.pos = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind in ("punct", "op") and tok.text == text

    def fail_unexpected(self, tok: _Token | None, wanted: str) -> JdlSyntaxError:
        if tok is None:
            return JdlSyntaxError(f"unexpected end of the JDL, expected {wanted}")
        if tok.text in _CLOSERS:
            return JdlSyntaxError(f"unbalanced {tok.text!r} on line {tok.line}")
        return JdlSyntaxError(f"expected {wanted} on line {tok.line}, found {tok.text!r}")

    def parse(self) -> Jdl:
        bracketed = self.at("[")
        if bracketed:
            self.take()
        attributes, duplicates = self.statements(bracketed, outer=True)
        if self.peek() is not None:
            tok = self.peek()
            assert tok is not None
            raise JdlSyntaxError(f"unexpected {tok.text!r} after the end on line {tok.line}")
        return Jdl(self.source, attributes, duplicates)

    def statements(
        self, bracketed: bool, outer: bool = False
    ) -> tuple[dict[str, JdlAttribute], list[str]]:
        attributes: dict[str, JdlAttribute] = {}
        duplicates: list[str] = []
        while True:
            tok = self.peek()
            if tok is None:
                if bracketed:
                    raise JdlSyntaxError("unbalanced '[': the JDL ends without the closing ']'")
                break
            if bracketed and self.at("]"):
                self.take()
                break
            if tok.kind != "ident" or "." in tok.text or tok.text.lower() in ("true", "false"):
                raise self.fail_unexpected(tok, "an attribute name")
            name = self.take().text
            if not self.at("="):
                raise self.fail_unexpected(self.peek(), f"'=' after {name}")
            self.take()
            first = self.peek()
            if first is None:
                raise JdlSyntaxError(f"{name} has no value")
            node = self.expression()
            raw = self.source[first.start : self.tokens[self.pos - 1].end]
            if self.at(";"):
                self.take()
            elif self.peek() is None or (bracketed and self.at("]")):
                pass  # the last statement: ';' is optional before ']' and at the end
            else:
                nxt = self.peek()
                assert nxt is not None
                if nxt.text in _CLOSERS:
                    raise JdlSyntaxError(f"unbalanced {nxt.text!r} on line {nxt.line}")
                raise JdlSyntaxError(
                    f"missing ';' after the value of {name} (line {nxt.line}, before {nxt.text!r})"
                )
            key = name.lower()
            if key in attributes:
                duplicates.append(name)
            attributes[key] = JdlAttribute(name, _node_value(node, raw), raw)
        return attributes, duplicates

    # expression := unary (binop unary)* ['?' expression ':' expression]
    def expression(self) -> Any:
        nodes = [self.unary()]
        while True:
            tok = self.peek()
            if tok is not None and tok.kind == "op" and tok.text in _BINARY_OPS:
                self.take()
                nodes.append(self.unary())
            else:
                break
        if self.at("?"):
            self.take()
            self.expression()
            if not self.at(":"):
                raise self.fail_unexpected(self.peek(), "':' of a conditional expression")
            self.take()
            self.expression()
            return ("expr",)
        return nodes[0] if len(nodes) == 1 else ("expr",)

    def unary(self) -> Any:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text in ("-", "+", "!"):
            self.take()
            inner = self.unary()
            if tok.text in "-+" and inner[0] == "lit" and type(inner[1]) in (int, float):
                return ("lit", -inner[1] if tok.text == "-" else inner[1])
            return ("expr",)
        return self.primary()

    def primary(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise JdlSyntaxError("unexpected end of the JDL in a value")
        if tok.kind in ("string", "number"):
            self.take()
            return ("lit", tok.value)
        if tok.kind == "ident":
            self.take()
            if tok.text.lower() in ("true", "false"):
                return ("lit", tok.text.lower() == "true")
            if self.at("("):
                opener = self.take()
                self.sequence(")", opener)
            return ("expr",)
        if self.at("("):
            opener = self.take()
            self.expression()
            if not self.at(")"):
                raise JdlSyntaxError(f"unbalanced '(' opened on line {opener.line}")
            self.take()
            return ("expr",)
        if self.at("{"):
            opener = self.take()
            return ("list", self.sequence("}", opener))
        if self.at("["):
            self.take()
            self.statements(bracketed=True)
            return ("expr",)
        raise self.fail_unexpected(tok, "a value")

    def sequence(self, closer: str, opener: _Token) -> list[Any]:
        items: list[Any] = []
        if self.at(closer):
            self.take()
            return items
        while True:
            items.append(self.expression())
            if self.at(","):
                self.take()
                continue
            if self.at(closer):
                self.take()
                return items
            tok = self.peek()
            found = "the end" if tok is None else repr(tok.text)
            raise JdlSyntaxError(
                f"unbalanced {opener.text!r} opened on line {opener.line}: expected ',' or "
                f"{closer!r}, found {found}"
            )


def _node_value(node: Any, raw: str) -> Any:
    if node[0] == "lit":
        return node[1]
    if node[0] == "list" and all(item[0] == "lit" for item in node[1]):
        return [item[1] for item in node[1]]
    return Expr(raw.strip())


def parse_jdl(text: str) -> Jdl:
    """Parse a JDL (a ClassAd); raise :class:`JdlSyntaxError` if it is malformed."""
    return _Parser(text).parse()


# ----------------------------------------------------------------------------------------------
# DIRAC's ClassAdLight, re-implemented to see what the real DIRAC client would read
# ----------------------------------------------------------------------------------------------


def dirac_light_read(text: str) -> dict[str, str] | None:
    """Attribute name -> value text as DIRAC's client reads a JDL: ``WMSClient.submitJob`` drops
    lines starting with ``#`` and wraps the text in ``[]`` unless it starts with ``[``; then
    ``ClassAdLight`` takes a name up to the next ``=`` and a value up to the next ``;`` (or a
    bracketed sub-JDL). None when the algorithm would not finish sensibly."""
    lines = [line for line in text.strip().split("\n") if not line.strip().startswith("#")]
    jdl = "\n".join(lines)
    if not jdl.startswith("["):
        jdl = f"[{jdl}]"
    jdl = jdl.strip()
    if not (jdl.startswith("[") and jdl.endswith("]")):
        return {}
    body = jdl[1:-1]
    result: dict[str, str] = {}
    index = 0
    while index < len(body):
        equals = body.find("=", index)
        if equals == -1:
            break
        name = body[index:equals]
        index = equals + 1
        bracket = body.find("[", index)
        semicolon = body.find(";", index)
        if bracket != -1 and semicolon != -1 and bracket < semicolon:
            return None  # a sub-JDL: DIRAC's scan for it is unreliable; treat as a misread
        if bracket == -1 and semicolon == -1:
            value, index = body[index:], len(body)
        elif semicolon == -1:
            return None  # a '[' but no ';' after it: ClassAdLight loops or truncates
        elif semicolon == index:
            return {}  # an empty value: ClassAdLight gives up (isOK() false)
        else:
            value, index = body[index:semicolon], semicolon + 1
        result[name.strip()] = value.strip().replace("\n", "")
    return result


def dirac_misreadings(jdl: Jdl) -> list[str]:
    """How the real DIRAC client would read ``jdl`` differently from its ClassAd meaning."""
    light = dirac_light_read(jdl.text)
    if light is None:
        return ["DIRAC's ClassAdLight cannot split it into attributes ('[' inside a value)"]
    meant = {a.name: a.raw.strip().replace("\n", "") for a in jdl.attributes.values()}
    problems = []
    for name, value in light.items():
        if name not in meant:
            problems.append(f"it would read an attribute named {name!r} = {value!r}")
        elif value != meant[name]:
            problems.append(f"it would read {name} as {value!r} instead of {meant[name]!r}")
    problems.extend(f"it would not see {name}" for name in meant if name not in light)
    return problems


# ----------------------------------------------------------------------------------------------
# Attribute checks shared by both flavours
# ----------------------------------------------------------------------------------------------

_STRING_ATTRS = {
    "executable",
    "arguments",
    "stdoutput",
    "stderror",
    "stdinput",
    "jobname",
    "virtualorganisation",
    "jobgroup",
    "myproxyserver",
}
_STRING_OR_LIST_ATTRS = {
    "inputsandbox",
    "outputsandbox",
    "inputdata",
    "outputdata",
    "bannedsites",
    "tags",
    "site",
    "jobtype",
    "outputse",
}
_INT_ATTRS = {
    "cputime",
    "numberofprocessors",
    "cpunumber",
    "retrycount",
    "shallowretrycount",
    "priority",
    "maxnumberofprocessors",
    "minnumberofprocessors",
    "smpgranularity",
    "hostnumber",
}
_NUMBER_ATTRS = {"parameterstart", "parameterstep", "parameterfactor"}
DIRAC_KNOWN = [
    "Executable",
    "Arguments",
    "StdOutput",
    "StdError",
    "StdInput",
    "InputSandbox",
    "OutputSandbox",
    "JobName",
    "CPUTime",
    "Site",
    "BannedSites",
    "Tags",
    "NumberOfProcessors",
    "Parameters",
    "ParameterStart",
    "ParameterStep",
    "ParameterFactor",
    "JobType",
    "JobGroup",
    "InputData",
    "OutputData",
    "OutputSE",
    "OutputPath",
    "Priority",
    "Platform",
]


def _type_problems(jdl: Jdl, *, lenient_numbers: bool) -> list[str]:
    """(attribute, problem) texts for known attributes of the wrong type."""
    problems = []
    for key, attr in jdl.attributes.items():
        value = attr.value
        if key in _STRING_ATTRS and not isinstance(value, str):
            problems.append(f"{attr.name}: a quoted string is expected, found {attr.raw}")
        elif key in _STRING_OR_LIST_ATTRS and not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            problems.append(f"{attr.name}: a string or a list of strings is expected")
        elif key in _INT_ATTRS and not _is_int(value, lenient_numbers):
            problems.append(f"{attr.name}: an integer is expected, found {attr.raw}")
        elif key in _NUMBER_ATTRS and not (_is_int(value, lenient_numbers) or type(value) is float):
            problems.append(f"{attr.name}: a number is expected, found {attr.raw}")
        elif key == "parameters" and not (
            _is_int(value, lenient_numbers) or isinstance(value, list)
        ):
            problems.append(f"{attr.name}: an integer or a list is expected, found {attr.raw}")
    return problems


def _is_int(value: Any, lenient: bool) -> bool:
    if type(value) is int:
        return True
    return lenient and isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value) is not None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _substitute(value: Any, replace: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, list):
        return [_substitute(v, replace) for v in value]
    if isinstance(value, Expr):
        return Expr(replace(value.text))
    return value


def _text(value: Any) -> str:
    """A value as plain text (an expression by its source text)."""
    return value.text if isinstance(value, Expr) else str(value)


# ----------------------------------------------------------------------------------------------
# The shared state directory
# ----------------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, Expr):
        return {"__expr__": value.text}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__expr__" in value:
        return Expr(value["__expr__"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


DEFAULT_CONFIG: dict[str, Any] = {
    "site_env": {},
    "max_running": None,
    "start_delay": 0.0,
    "strict": True,
    "max_parametric_jobs": 20,
    "status_style": "emi",
}


class _Store:
    """Job records (one JSON file per job), the id counter and the fixture options, under an
    ``fcntl`` lock shared by all processes using one state directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.jobs_dir = home / "jobs"
        self.parents_dir = home / "parents"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self.home / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _write(path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)

    @staticmethod
    def _read(path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def config(self) -> dict[str, Any]:
        return {**DEFAULT_CONFIG, **(self._read(self.home / "config.json") or {})}

    def set_config(self, **values: Any) -> None:
        with self.locked():
            config = self._read(self.home / "config.json") or {}
            config.update(values)
            self._write(self.home / "config.json", config)

    def counter(self, name: str, first: int) -> int:
        """The next value of a counter; call with the lock held."""
        counters = self._read(self.home / "counters.json") or {}
        value = int(counters.get(name, first))
        counters[name] = value + 1
        self._write(self.home / "counters.json", counters)
        return value

    def load(self, key: str) -> dict[str, Any] | None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            return None
        record = self._read(self.jobs_dir / key / "record.json")
        return record if isinstance(record, dict) else None

    def save(self, record: dict[str, Any]) -> None:
        self._write(self.jobs_dir / record["key"] / "record.json", record)

    def records(self) -> list[dict[str, Any]]:
        out = []
        if self.jobs_dir.is_dir():
            for path in self.jobs_dir.glob("*/record.json"):
                record = self._read(path)
                if isinstance(record, dict):
                    out.append(record)
        return sorted(out, key=lambda r: r["seq"])

    def load_parent(self, key: str) -> dict[str, Any] | None:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            return None
        parent = self._read(self.parents_dir / f"{key}.json")
        return parent if isinstance(parent, dict) else None

    def save_parent(self, parent: dict[str, Any]) -> None:
        self._write(self.parents_dir / f"{parent['key']}.json", parent)


# ----------------------------------------------------------------------------------------------
# Job states
# ----------------------------------------------------------------------------------------------

DIRAC_FINAL = {"Done", "Failed", "Killed", "Deleted", "Completed"}
DIRAC_KILLABLE = {"Running", "Matched", "Stalled", "Completing", "Staging"}
GLITE_FINAL = {"Done", "Cancelled", "Aborted", "Cleared"}
GLITE_CANCELLABLE = {"Submitted", "Waiting", "Ready", "Scheduled", "Running", "Unknown"}
DIRAC_MINOR = {
    "Received": "Job accepted",
    "Waiting": "Pilot Agent Submission",
    "Running": "Application",
    "Done": "Execution Complete",
    "Failed": "Application Finished With Errors",
    "Killed": "Marked for termination",
}


def _is_final(record: dict[str, Any]) -> bool:
    final = DIRAC_FINAL if record["tool"] == "dirac" else GLITE_FINAL
    return record["state"] in final


def _glite_state_name(state: str, exit_code: int | None, style: str) -> str:
    if state != "Done":
        return state
    suffix = "(Success)" if exit_code == 0 else "(Exit Code !=0)"
    return f"Done {suffix}" if style == "legacy" else f"Done{suffix}"


# ----------------------------------------------------------------------------------------------
# Job specs: what one job runs
# ----------------------------------------------------------------------------------------------


class _Rejected(Exception):
    """A submission the tool refuses: ``message`` in the tool's words, ``detail`` for stderr."""

    def __init__(self, message: str, detail: str = "", name: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.name = name


@dataclass
class _JobSpec:
    attrs: dict[str, Any]  # name as written -> value, after substitutions
    parameter: Any
    node_name: str | None
    sandbox: list[Path]


def _attr(attrs: dict[str, Any], name: str, default: Any = None) -> Any:
    for key, value in attrs.items():
        if key.lower() == name.lower():
            return value
    return default


def _sandbox_files(entries: Iterable[Any], cwd: Path, flavour: str) -> tuple[list[Path], list[str]]:
    """Local sandbox files (absolute) and the entries that do not exist."""
    files, missing = [], []
    for entry in entries:
        text = str(entry)
        if flavour == "dirac" and text.startswith(("lfn:", "LFN:", "SB:", "%s", "%(")):
            continue
        if flavour == "glite":
            if text.startswith("file://"):
                text = text[len("file://") :]
            elif "://" in text:
                continue
        path = Path(text) if os.path.isabs(text) else cwd / text
        if path.exists():
            files.append(path.absolute())
        else:
            missing.append(str(path.absolute()) if flavour == "glite" else text)
    return files, missing


def _check_sandbox_names(files: list[Path]) -> str | None:
    seen: dict[str, Path] = {}
    for path in files:
        if path.name in seen and seen[path.name] != path:
            return path.name
        seen[path.name] = path
    return None


def _dirac_specs(text: str, cwd: Path, config: dict[str, Any]) -> tuple[Jdl, list[_JobSpec]]:
    """Validate a DIRAC JDL as client and server would and expand it into job specs."""
    strict = bool(config["strict"])
    invalid = "Invalid job description ( 1501 : {})"
    try:
        jdl = parse_jdl(text)
    except JdlSyntaxError as exc:
        raise _Rejected(invalid.format("Invalid job JDL"), f"JDL syntax error: {exc}") from None
    if not jdl.attributes:
        raise _Rejected(invalid.format("Invalid job JDL"), "the JDL has no attributes")
    if strict:
        if jdl.duplicates:
            raise _Rejected(
                invalid.format("Invalid job JDL"),
                f"(fake, strict) attribute(s) given twice: {', '.join(jdl.duplicates)}",
            )
        misread = dirac_misreadings(jdl)
        if misread:
            raise _Rejected(
                invalid.format("Invalid job JDL"),
                "(fake, strict) the real DIRAC client (ClassAdLight) would misread this JDL: "
                + "; ".join(misread[:4]),
            )
        for attr in jdl.attributes.values():
            for known in DIRAC_KNOWN:
                if attr.name.lower() == known.lower() and attr.name != known:
                    raise _Rejected(
                        invalid.format("Invalid job JDL"),
                        f"(fake, strict) DIRAC attribute names are case-sensitive: "
                        f"{attr.name!r} is not {known!r}",
                    )
        problems = _type_problems(jdl, lenient_numbers=True)
        if problems:
            raise _Rejected(invalid.format("Invalid job JDL"), "(fake, strict) " + problems[0])
        if "executable" not in jdl:
            raise _Rejected(
                invalid.format("Invalid job JDL"),
                "(fake, strict) no Executable (real DIRAC accepts this and the job fails later)",
            )
        for entry in _as_list(jdl.get("InputSandbox")):
            if re.search(r"[\s,]", str(entry)):
                raise _Rejected(
                    invalid.format("Input Sandbox is not valid"),
                    f"(fake, strict) DIRAC splits sandbox entries on blanks and commas: {entry!r}",
                )
    # WMSClient.__uploadInputSandbox: local files must exist (relative to the current directory)
    files, missing = _sandbox_files(_as_list(jdl.get("InputSandbox")), cwd, "dirac")
    if missing:
        raise _Rejected(
            invalid.format("Input Sandbox is not valid"),
            f"missing InputSandbox file(s), relative to {cwd}: {', '.join(missing)}",
        )
    clash = _check_sandbox_names(files)
    if clash and strict:
        raise _Rejected(
            invalid.format("Input Sandbox is not valid"),
            f"(fake, strict) two InputSandbox files are both named {clash!r}",
        )
    values = _dirac_parameter_values(jdl, config)
    # JobManifest.check (server side, per job)
    job_types = _as_list(jdl.get("JobType"))
    for job_type in job_types:
        for item in str(job_type).split(","):
            if item.strip() and item.strip() not in ("User", "Test", "Hospital"):
                raise _Rejected(f"{item.strip()} is not a valid value for JobType")
    cpu = jdl.get("CPUTime")
    if cpu is not None and not _is_int(cpu, True) and type(cpu) is not float:
        raise _Rejected("CPUTime must be a number")
    specs = []
    if values is None:
        specs.append(_JobSpec(jdl.as_dict(), None, None, files))
    else:
        width = len(str(len(values) - 1))
        for number, value in enumerate(values):
            text_value = str(value)

            def replace(s: str, n: int = number, v: str = text_value) -> str:
                return s.replace("%n", str(n).zfill(width)).replace("%s", v)

            attrs = {
                a.name: _substitute(a.value, replace)
                for key, a in jdl.attributes.items()
                if key not in ("parameters", "parameterstart", "parameterstep", "parameterfactor")
            }
            attrs["Parameter"] = text_value
            attrs["ParameterNumber"] = number
            specs.append(_JobSpec(attrs, value, None, files))
    return jdl, specs


def _dirac_parameter_values(jdl: Jdl, config: dict[str, Any]) -> list[Any] | None:
    invalid = "Invalid job description ( 1501 : {})"
    params = [a for a in jdl.attributes.values() if a.name.startswith("Parameters")]
    if not params:
        return None
    attr = params[0]
    if isinstance(attr.value, list):
        count: int | None = len(attr.value)
    elif _is_int(attr.value, True):
        count = int(attr.value)
    else:
        raise _Rejected(invalid.format("Can not determine the number of job parameters"))
    assert count is not None
    if count <= 0:
        raise _Rejected(invalid.format(f"Illegal number of job parameters {count}"))
    limit = int(config["max_parametric_jobs"])
    if count > limit:
        raise _Rejected(invalid.format(f"Number of parametric jobs exceeds the limit of {limit}"))
    if isinstance(attr.value, list):
        return list(attr.value)
    numbers: dict[str, Any] = {}
    for key, default in (("ParameterStart", 1), ("ParameterStep", 0), ("ParameterFactor", 1)):
        value = jdl.get(key)
        if value is None:
            if config["strict"] and key != "ParameterFactor":
                raise _Rejected(
                    invalid.format("Inconsistent parametric job description"),
                    f"(fake, strict) Parameters = {count} without {key}: real DIRAC would use "
                    f"ParameterStart = 1 and ParameterStep = 0 (every job the same value)",
                )
            value = default
        elif _is_int(value, True):
            value = int(value)
        elif type(value) is not float:
            raise _Rejected(f"Illegal value for {key} JDL field: {value}")
        numbers[key] = value
    values = [numbers["ParameterStart"]]
    for _ in range(1, count):
        values.append(values[-1] * numbers["ParameterFactor"] + numbers["ParameterStep"])
    return values


def _glite_specs(jdl_path: Path, cwd: Path, config: dict[str, Any]) -> tuple[Jdl, list[_JobSpec]]:
    """Validate a gLite JDL as the UI would and expand it into node specs."""
    strict = bool(config["strict"])
    try:
        text = jdl_path.read_text()
    except OSError:
        raise _Rejected(
            f"Specified path '{jdl_path}' is missing", name="AdSemanticPathException"
        ) from None
    try:
        jdl = parse_jdl(text)
    except JdlSyntaxError as exc:
        raise _Rejected(
            f"The following parsing error(s) have been found:\n{exc}", name="AdSyntaxException"
        ) from None
    if not jdl.attributes:
        raise _Rejected(
            "The following parsing error(s) have been found:\nNot a valid ClassAd",
            name="AdSyntaxException",
        )
    if jdl.duplicates and strict:
        raise _Rejected(
            "The following parsing error(s) have been found:\n(fake, strict) attribute(s) "
            f"given twice: {', '.join(jdl.duplicates)}",
            name="AdSyntaxException",
        )
    problems = _type_problems(jdl, lenient_numbers=False)
    if problems:
        attr_name = problems[0].split(":", 1)[0]
        raise _Rejected(
            f"{attr_name}: wrong type caught for attribute",
            problems[0],
            name="AdMismatchException",
        )
    if "executable" not in jdl:
        raise _Rejected(
            "Executable: Jdl mandatory attribute is missing", name="AdSemanticMandatoryException"
        )
    job_type = str(jdl.get("JobType", "Normal"))
    if job_type.lower() in ("partitionable", "checkpointable"):
        raise _Rejected(
            "Partitionable and Checkpointable Job Types have been deprecated.",
            name="Deprecated Job Types",
        )
    if str(jdl.get("Type", "Job")).lower() in ("dag", "collection"):
        raise _Rejected("(fake) DAGs and collections are not faked", name="Invalid JDL")
    values: list[Any] | None = None
    if job_type.lower() == "parametric":
        if "parameters" not in jdl:
            raise _Rejected(
                "Parameters: Jdl mandatory attribute is missing",
                name="AdSemanticMandatoryException",
            )
        parameters = jdl.get("Parameters")
        if isinstance(parameters, list):
            values = list(parameters)
        else:
            start, step = jdl.get("ParameterStart", 0), jdl.get("ParameterStep", 1)
            if step <= 0:
                raise _Rejected(
                    "ParameterStep: wrong value caught for attribute", name="AdMismatchException"
                )
            values = []
            while start + len(values) * step < parameters and len(values) <= MAX_FAKE_NODES:
                values.append(start + len(values) * step)
        if len(values) > MAX_FAKE_NODES:
            raise _Rejected(
                "Parameters: wrong value caught for attribute",
                f"(fake) more than {MAX_FAKE_NODES} nodes; the fake runs them all locally",
                name="AdMismatchException",
            )
        if not values:
            raise _Rejected(
                "Parameters: wrong value caught for attribute",
                f"Parameters = {parameters} gives no job (values start at "
                f"{jdl.get('ParameterStart', 0)}, Parameters is the exclusive upper bound)",
                name="AdMismatchException",
            )
    specs = []
    for value in values if values is not None else [None]:
        if value is None:
            attrs = jdl.as_dict()
        else:
            text_value = str(value)
            attrs = {
                a.name: _substitute(a.value, lambda s, v=text_value: s.replace("_PARAM_", v))
                for a in jdl.attributes.values()
            }
        files, missing = _sandbox_files(_as_list(_attr(attrs, "InputSandbox")), cwd, "glite")
        if missing:
            raise _Rejected(
                f"InputSandbox: Specified path '{missing[0]}' is missing",
                name="AdSemanticPathException",
            )
        clash = _check_sandbox_names(files)
        if clash:
            raise _Rejected(
                "InputSandbox: filename conflict found while extracting files.The following "
                f"file is repeated more than once: '{clash}'",
                name="AdSemanticPathException",
            )
        node = None if value is None else f"Node_{value!s}"
        specs.append(_JobSpec(attrs, value, node, files))
    return jdl, specs


# ----------------------------------------------------------------------------------------------
# Creating jobs (in the submitting process)
# ----------------------------------------------------------------------------------------------


def _glite_unique() -> str:
    return secrets.token_urlsafe(16)  # 22 url-safe characters, like the real LB ids


def _new_record(
    store: _Store,
    tool: str,
    job_id: str,
    key: str,
    spec: _JobSpec,
    jdl: Jdl,
    jdl_path: str,
    parent: str | None,
) -> dict[str, Any]:
    job_dir = store.jobs_dir / key / "sandbox"
    job_dir.mkdir(parents=True, exist_ok=True)
    for src in spec.sandbox:
        dest = job_dir / src.name
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest)
    default_out = "std.out" if tool == "dirac" else None
    default_err = "std.err" if tool == "dirac" else None
    return {
        "tool": tool,
        "id": job_id,
        "key": key,
        "seq": store.counter("seq", 1),
        "state": "Received" if tool == "dirac" else "Submitted",
        "exit_code": None,
        "job_dir": str(job_dir),
        "jdl": {name: _encode(value) for name, value in spec.attrs.items()},
        "jdl_text": jdl.text,
        "jdl_path": jdl_path,
        "argv": None,
        "stdout": _attr(spec.attrs, "StdOutput", default_out),
        "stderr": _attr(spec.attrs, "StdError", default_err),
        "parameter": spec.parameter,
        "node_name": spec.node_name,
        "parent": parent,
        "submitted": time.time(),
        "started": None,
        "finished": None,
        "pid": None,
        "supervisor_pid": None,
        "kill_requested": None,
    }


def _held_state(tool: str, delayed: bool) -> str:
    """The state of a job that may not start yet: accepted but not processed during
    ``start_delay`` (DIRAC Received, gLite Submitted), then queued for a slot (``max_running``:
    DIRAC Waiting, gLite Scheduled)."""
    if delayed:
        return "Received" if tool == "dirac" else "Submitted"
    return "Waiting" if tool == "dirac" else "Scheduled"


def _initial_state(
    store: _Store, config: dict[str, Any], record: dict[str, Any], pending: int
) -> str:
    """Running if the job may start at once (set here, so that status and kill see it running
    as soon as submit returns), else its held state; call with the lock held."""
    if float(config["start_delay"]) > 0:
        return _held_state(record["tool"], True)
    limit = config["max_running"]
    if limit is not None:
        records = store.records()
        running = sum(1 for r in records if r["state"] == "Running")
        queued = any(not _is_final(r) and r["state"] != "Running" for r in records)
        if queued or running + pending >= int(limit):
            return _held_state(record["tool"], False)
    return "Running"


def _launch_supervisors(store: _Store, records: Sequence[dict[str, Any]]) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r}); "
        "from tests.fakes.grid_cli import _supervise; _supervise(sys.argv[1], sys.argv[2])"
    )
    for record in records:
        log = Path(record["job_dir"]).parent / "supervisor.log"
        with log.open("ab") as out:
            subprocess.Popen(
                [sys.executable, "-c", code, str(store.home), record["key"]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_unblock_signals,
            )


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


# ----------------------------------------------------------------------------------------------
# The supervisor: one detached process per job
# ----------------------------------------------------------------------------------------------


def _job_argv(record: dict[str, Any]) -> list[str]:
    attrs = {k: _decode(v) for k, v in record["jdl"].items()}
    executable = _text(_attr(attrs, "Executable", ""))
    arguments = _attr(attrs, "Arguments", "")
    if isinstance(arguments, list):
        args = [_text(a) for a in arguments]
    else:
        args = shlex.split(_text(arguments))
    if "/" not in executable and (Path(record["job_dir"]) / executable).is_file():
        path = Path(record["job_dir"]) / executable
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        executable = f"./{executable}"
    return [executable, *args]


def _job_env(record: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    env = {str(k): str(v) for k, v in config["site_env"].items()}
    if record["tool"] == "dirac":
        env["DIRACJOBID"] = record["id"]
        env["JOBID"] = record["id"]
    else:
        env["GLITE_WMS_JOBID"] = record["id"]
        env["EDG_WL_JOBID"] = record["id"]
    return env


def _supervise(home: str, key: str) -> None:
    """Wait for a slot, run the job, record its end. Runs detached (own session). If the fake
    itself breaks, the job ends with exit code 70 and the traceback in supervisor.log."""
    try:
        _supervise_job(home, key)
    except BaseException:
        traceback.print_exc()
        store = _Store(Path(home))
        with store.locked():
            record = store.load(key)
            if record is not None and record["finished"] is None:
                record["state"] = "Failed" if record["tool"] == "dirac" else "Done"
                record["exit_code"] = 70
                record["finished"] = time.time()
                store.save(record)
        raise


def _supervise_job(home: str, key: str) -> None:
    store = _Store(Path(home))
    _become_subreaper()
    with store.locked():
        record = store.load(key)
        if record is None:
            return
        record["supervisor_pid"] = os.getpid()
        store.save(record)
    # 1. Wait until the job may start (start_delay, max_running with first-come-first-served).
    while True:
        with store.locked():
            record = store.load(key)
            if record is None or _is_final(record):
                return
            if record["state"] == "Running":
                break
            config = store.config()
            delayed = time.time() - record["submitted"] < float(config["start_delay"])
            records = store.records()
            running = sum(1 for r in records if r["state"] == "Running")
            earlier = any(
                r["seq"] < record["seq"] and not _is_final(r) and r["state"] != "Running"
                for r in records
            )
            limit = config["max_running"]
            if not delayed and not earlier and (limit is None or running < int(limit)):
                record["state"] = "Running"
                store.save(record)
                break
            held = _held_state(record["tool"], delayed)
            if record["state"] != held:
                record["state"] = held
                store.save(record)
        time.sleep(0.1)
    # 2. Start it.
    job_dir = Path(record["job_dir"])
    with store.locked():
        record = store.load(key)
        if record is None or _is_final(record):
            return
        config = store.config()
        proc: subprocess.Popen[bytes] | None = None
        rc: int | None = None
        out_name, err_name = record["stdout"], record["stderr"]
        out: Any = None
        err: Any = None
        try:
            for name in (out_name, err_name):
                if name:
                    (job_dir / name).parent.mkdir(parents=True, exist_ok=True)
            out = (job_dir / out_name).open("ab") if out_name else subprocess.DEVNULL
            if err_name and err_name == out_name:
                err = subprocess.STDOUT
            else:
                err = (job_dir / err_name).open("ab") if err_name else subprocess.DEVNULL
            argv = _job_argv(record)
            record["argv"] = argv
            proc = subprocess.Popen(
                argv,
                cwd=job_dir,
                env=_job_env(record, config),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_unblock_signals,
            )
            record["pid"] = proc.pid
        except (OSError, ValueError) as exc:
            message = f"fake grid job wrapper: cannot run the job ({record.get('argv')}): {exc}\n"
            sys.stderr.write(message)
            for target in (err, out):
                if hasattr(target, "write"):
                    target.write(message.encode())
                    break
            rc = 127
        finally:
            for stream in (out, err):
                if hasattr(stream, "close"):
                    stream.close()
        record["started"] = time.time()
        kill_now = record["kill_requested"] is not None
        store.save(record)
    # 3. Wait for it; escalate a kill to SIGKILL after the grace time.
    if proc is not None:
        if kill_now:
            _signal_group(proc.pid, signal.SIGTERM)
        killed_hard = False
        while True:
            try:
                rc = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            current = store.load(key) or {}
            requested = current.get("kill_requested")
            if requested is not None and not killed_hard and time.time() - requested > KILL_GRACE:
                _signal_group(proc.pid, signal.SIGKILL)
                killed_hard = True
        _signal_group(proc.pid, signal.SIGKILL)  # leftovers of the job, as a batch system would
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _group_exists(proc.pid):
            _reap_orphans()
            time.sleep(0.02)
    # 4. Record the end.
    assert rc is not None
    exit_code = rc if rc >= 0 else 128 - rc
    with store.locked():
        record = store.load(key)
        if record is None:
            return
        record["exit_code"] = exit_code
        record["finished"] = time.time()
        if record["state"] not in ("Killed", "Cancelled"):
            if record["tool"] == "dirac":
                record["state"] = "Done" if exit_code == 0 else "Failed"
            else:
                record["state"] = "Done"
        store.save(record)


def _become_subreaper() -> None:
    """Orphaned processes of the job become our children (not init's), so that we can reap them
    and know when the job's process group is really gone (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def _reap_orphans() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _request_kill(store: _Store, record: dict[str, Any], final_state: str) -> None:
    """Mark a job killed/cancelled and SIGTERM its process group; call with the lock held."""
    record["state"] = final_state
    record["kill_requested"] = time.time()
    if record["pid"] is not None and record["finished"] is None:
        _signal_group(record["pid"], signal.SIGTERM)
    elif record["pid"] is None and record["finished"] is None:
        record["finished"] = time.time()  # never started: nothing will run
    store.save(record)


# ----------------------------------------------------------------------------------------------
# Command-line front ends
# ----------------------------------------------------------------------------------------------


class _Output:
    def __init__(self) -> None:
        self.out = sys.stdout
        self.err = sys.stderr

    def print(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text)
        self.err.flush()


def main(tool: str, argv: Sequence[str]) -> int:
    """Entry point of the installed fake programs."""
    flavour = "dirac" if tool.startswith("dirac") else "glite"
    var = HOME_VARS[flavour]
    home = os.environ.get(var)
    if not home or not Path(home, "config.json").is_file():
        sys.stderr.write(
            f"fake {tool}: ${var} is not set to a fake {flavour} state directory; this program "
            f"is a test fake (tests/fakes/grid_cli.py) and only works with the env of its "
            f"fixture\n"
        )
        return 1
    store = _Store(Path(home))
    commands: dict[str, Callable[[_Store, list[str], _Output], int]] = {
        "dirac-wms-job-submit": _dirac_submit,
        "dirac-wms-job-status": _dirac_status,
        "dirac-wms-job-kill": _dirac_kill,
        "glite-wms-job-submit": _glite_submit,
        "glite-wms-job-status": _glite_status,
        "glite-wms-job-cancel": _glite_cancel,
    }
    try:
        return commands[tool](store, list(argv), _Output())
    except Exception:
        sys.stderr.write(f"fake {tool}: internal error of the fake\n{traceback.format_exc()}")
        return 70


# ---- DIRAC -----------------------------------------------------------------------------------


def _dirac_switches(
    argv: list[str], with_value: dict[str, str]
) -> tuple[dict[str, str], list[str], bool]:
    """DIRAC's Script.parseCommandLine(ignoreErrors=True): registered switches (short letter or
    long name, ``-f X``, ``-fX``, ``--File=X``, ``--File X``), unknown ones ignored."""
    found: dict[str, str] = {}
    args: list[str] = []
    want_help = False
    i = 0
    long_names = {long.lower(): short for short, long in with_value.items()}
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            want_help = True
        elif arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            short = long_names.get(name.lower())
            if short is not None:
                if not value and i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                found[short] = value
        elif arg.startswith("-") and len(arg) > 1:
            short = arg[1]
            if short in with_value:
                value = arg[2:]
                if not value and i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                found[short] = value
        else:
            args.append(arg)
        i += 1
    return found, args, want_help


def _dirac_submit(store: _Store, argv: list[str], io: _Output) -> int:
    switches, args, want_help = _dirac_switches(argv, {"f": "File", "r": "UseJobRepo"})
    if want_help or not args:
        io.print(
            "Submit jobs to DIRAC WMS\n\nUsage:\n  dirac-wms-job-submit [options] ... JDL ...\n\n"
            "Arguments:\n  JDL:    Path to JDL file\n"
        )
        return 0 if want_help else 1
    ids_file = switches.get("f")
    if ids_file and os.path.isfile(ids_file):
        io.print(f"Appending job ids to existing logfile: {ids_file}")
    errors: list[tuple[str, str]] = []
    for arg in args:
        try:
            ids = _dirac_submit_one(store, arg, io)
        except _Rejected as exc:
            errors.append((arg, exc.message))
            if exc.detail:
                io.error(f"fake dirac-wms-job-submit: {arg}: {exc.detail}\n")
            continue
        io.print(f"JobID = {ids}")
        if ids_file:
            with open(ids_file, "a") as handle:
                listed = ids if isinstance(ids, list) else [ids]
                handle.write("\n".join(str(i) for i in listed) + "\n")
    for jdl_arg, message in errors:
        io.print(f"ERROR {jdl_arg}: {message}")
    return 2 if errors else 0


def _dirac_submit_one(store: _Store, arg: str, io: _Output) -> int | list[int]:
    """Submit one JDL (a file, else the argument itself as JDL text, as Dirac.submitJob does);
    the id, or the list of ids of a parametric job."""
    if os.path.isfile(arg):
        text = Path(arg).read_text()
    else:
        io.error(
            f"fake dirac-wms-job-submit: {arg}: not a file, read as JDL text (as DIRAC does)\n"
        )
        text = arg
    config = store.config()
    jdl, specs = _dirac_specs(text, Path.cwd(), config)
    with store.locked():
        records = []
        pending = 0
        for spec in specs:
            job_id = store.counter("dirac_id", FIRST_DIRAC_ID)
            spec.attrs = {
                k: _substitute(v, lambda s, j=str(job_id): s.replace("%j", j))
                for k, v in spec.attrs.items()
            }
            record = _new_record(store, "dirac", str(job_id), str(job_id), spec, jdl, arg, None)
            record["state"] = _initial_state(store, config, record, pending)
            pending += record["state"] == "Running"
            records.append(record)
            store.save(record)
    _launch_supervisors(store, records)
    ids = [int(r["id"]) for r in records]
    parametric = any(a.name.startswith("Parameters") for a in jdl.attributes.values())
    return ids if parametric else ids[0]


def _dirac_ids(args: Sequence[str]) -> list[int]:
    """``parseArguments`` + ``_checkJobArgument``: comma/blank separated integers."""
    ids = []
    for arg in args:
        for part in arg.split(","):
            if part.strip():
                ids.append(int(part.strip()))
    return ids


_DIRAC_BAD_ID = "Expected (list of)  integer or string for existing jobID"


def _dirac_status(store: _Store, argv: list[str], io: _Output) -> int:
    switches, args, want_help = _dirac_switches(argv, {"f": "File", "g": "JobGroup"})
    jobs: list[str] = []
    if "f" in switches and os.path.exists(switches["f"]):
        jobs += Path(switches["f"]).read_text().split()
    if want_help or (not args and not jobs):
        io.print(
            "Retrieve status of the given DIRAC job\n\nUsage:\n  dirac-wms-job-status "
            "[options] ... JobID ...\n\nArguments:\n  JobID:    DIRAC Job ID\n"
        )
        return 0 if want_help else 1
    try:
        ids = _dirac_ids(jobs + args)
    except ValueError:
        io.print(f"ERROR: {_DIRAC_BAD_ID}")
        return 2
    with store.locked():
        records = [store.load(str(i)) for i in sorted(set(ids))]
    for record in records:
        if record is None or record["tool"] != "dirac":
            continue  # the job DB has no row for it: no output
        state = record["state"]
        site = DIRAC_SITE if record["started"] is not None or state == "Running" else "ANY"
        fields = {
            "Status": state,
            "MinorStatus": DIRAC_MINOR.get(state, "Unknown"),
            "ApplicationStatus": "Unknown",
            "Site": site,
        }
        io.print(f"JobID={record['id']} " + "".join(f"{k}={v}; " for k, v in fields.items()))
    return 0


def _dirac_kill(store: _Store, argv: list[str], io: _Output) -> int:
    _, args, want_help = _dirac_switches(argv, {})
    if want_help or not args:
        io.print(
            "Issue a kill signal to a running DIRAC job\n\nUsage:\n  dirac-wms-job-kill "
            "[options] ... JobID ...\n\nArguments:\n  JobID:    DIRAC Job ID\n"
        )
        return 0 if want_help else 1
    try:
        ids = _dirac_ids(args)
    except ValueError:
        io.print(f"ERROR {_DIRAC_BAD_ID}")
        return 2
    killed = []
    with store.locked():
        for job_id in ids:
            record = store.load(str(job_id))
            # checkJobStateTransition(jobID, KILLED): only these states may become Killed
            if record is None or record["tool"] != "dirac":
                continue
            if record["state"] in DIRAC_KILLABLE:
                _request_kill(store, record, "Killed")
                killed.append(job_id)
    if not killed:
        io.print("ERROR Invalid job specification: []")
        return 2
    io.print(f"Killed jobs {','.join(str(j) for j in killed)}")
    return 0


# ---- gLite -----------------------------------------------------------------------------------


def _glite_error(io: _Output, name: str, message: str) -> int:
    io.error(f"\nError - {name}\n{message}\n\n")
    return 1


def _glite_getopt(
    tool: str, argv: list[str], short: str, long: list[str], io: _Output
) -> tuple[dict[str, str], list[str]] | None:
    try:
        opts, args = getopt.gnu_getopt(argv, short, long)
    except getopt.GetoptError as exc:
        io.error(f"{tool}: {exc}\n\nUsage: {tool} [options] ...\n")
        return None
    found: dict[str, str] = {}
    for opt, value in opts:
        found[opt.lstrip("-")] = value
    return found, args


def _stripe(width: int, message: str = "") -> str:
    """``Utils::getStripe``: a line of '=' with the message centred."""
    if not message:
        return "=" * width
    side = "=" * (width // 2 - (len(message) // 2 + 1))
    return f"{side} {message} {side}"


def _glite_parse_id(text: str) -> tuple[str, str] | None:
    """(lb address, unique) of a gLite job id, or None if malformed (``JobId.fromString``)."""
    match = re.fullmatch(r"(https?)://([^/:]+):(\d+)/(\S+)", text.strip())
    if match is None or not match.group(4).strip("/"):
        return None
    return f"{match.group(1)}://{match.group(2)}:{match.group(3)}", match.group(4)


def _glite_submit(store: _Store, argv: list[str], io: _Output) -> int:
    tool = "glite-wms-job-submit"
    parsed = _glite_getopt(
        tool,
        argv,
        "ad:o:e:c:r:i:v:",
        [
            "autm-delegation",
            "delegationid=",
            "output=",
            "endpoint=",
            "config=",
            "resource=",
            "input=",
            "valid=",
            "to=",
            "vo=",
            "noint",
            "nomsg",
            "nolisten",
            "debug",
            "logfile=",
            "lrms=",
            "nodes-resource=",
            "register-only",
            "transfer-files",
            "proto=",
            "start=",
            "collection=",
            "dag=",
            "default-jdl=",
            "json",
            "pretty-print",
            "version",
            "help",
        ],
        io,
    )
    if parsed is None:
        return 1
    opts, args = parsed
    if "help" in opts or "version" in opts:
        io.print(f"\n{tool}: fake of the WMS User Interface (tests/fakes/grid_cli.py)\n")
        return 0
    for unsupported in ("collection", "dag", "start", "register-only", "json"):
        if unsupported in opts:
            return _glite_error(io, "Input Option Error", f"(fake) --{unsupported} is not faked")
    endpoint = (
        opts.get("e")
        or opts.get("endpoint")
        or os.environ.get("GLITE_WMS_WMPROXY_ENDPOINT", GLITE_ENDPOINT)
    )
    nomsg = "nomsg" in opts
    if not nomsg:
        io.print(f"\nConnecting to the service {endpoint}\n")
    if not args:
        return _glite_error(
            io,
            "JDL File Missing",
            "uknown JDL file pathame (Last Argument of the command must be a JDL file)",
        )
    jdl_path = Path(args[-1])
    config = store.config()
    try:
        jdl, specs = _glite_specs(jdl_path, Path.cwd(), config)
    except _Rejected as exc:
        code = _glite_error(io, exc.name or "Invalid JDL", exc.message)
        if exc.detail:
            io.error(f"fake {tool}: {exc.detail}\n")
        return code
    delegation = opts.get("d") or opts.get("delegationid")
    auto = "a" in opts or "autm-delegation" in opts
    if delegation and auto:
        return _glite_error(
            io,
            "Input Option Error",
            "the following options cannot be specified together:\n"
            "--delegationid, -d <id_string>\n--autm-delegation, -a\n",
        )
    if not delegation and not auto:
        return _glite_error(
            io,
            "Missing Information",
            "No delegationId found, please use one of the following methods: \n"
            "--delegationid, -d <id_string>\nto use a proxy previously delegated or\n"
            "--autm-delegation, -a\nto perform automatic delegation or\n"
            "delegationId attribute in the configuration file",
        )
    with store.locked():
        records = []
        pending = 0
        parametric = specs[0].node_name is not None
        parent_key = _glite_unique() if parametric else None
        parent_id = f"{GLITE_LB}/{parent_key}" if parent_key else None
        for spec in specs:
            key = _glite_unique()
            job_id = f"{GLITE_LB}/{key}"
            record = _new_record(store, "glite", job_id, key, spec, jdl, str(jdl_path), parent_id)
            record["state"] = _initial_state(store, config, record, pending)
            pending += record["state"] == "Running"
            records.append(record)
            store.save(record)
        if parent_key and parent_id:
            store.save_parent(
                {
                    "key": parent_key,
                    "id": parent_id,
                    "children": [r["key"] for r in records],
                    "submitted": records[0]["submitted"],
                    "jdl_text": jdl.text,
                }
            )
    _launch_supervisors(store, records)
    job_id = parent_id or records[0]["id"]
    out_file = opts.get("o") or opts.get("output")
    saved = ""
    if out_file:
        path = Path(out_file)
        header = "###Submitted Job Ids###"
        old = path.read_text() if path.is_file() else ""
        content = old.strip() + "\n" if header in old else header + "\n"
        path.write_text(content + job_id)
        saved = f"\nThe job identifier has been saved in the following file:\n{path.absolute()}\n"
    if nomsg:
        io.print(job_id)
        return 0
    io.print(
        f"\n{_stripe(74, tool + ' Success')}\n\n"
        "The job has been successfully submitted to the WMProxy\n"
        f"Your job identifier is:\n\n{job_id}\n{saved}\n{_stripe(74)}\n\n"
    )
    return 0


def _glite_view(store: _Store, job_id: str) -> dict[str, Any] | None:
    """The status of a node job or a parametric parent (state computed from its nodes)."""
    parsed = _glite_parse_id(job_id)
    if parsed is None or parsed[0] != GLITE_LB:
        return None
    record = store.load(parsed[1])
    if record is not None and record["tool"] == "glite":
        return {**record, "nodes": []}
    parent = store.load_parent(parsed[1])
    if parent is None:
        return None
    nodes = [r for r in (store.load(k) for k in parent["children"]) if r is not None]
    states = [n["state"] for n in nodes]
    if all(s in GLITE_FINAL for s in states):
        exit_codes = [n["exit_code"] for n in nodes if n["state"] == "Done"]
        if all(s == "Cancelled" for s in states):
            state, exit_code = "Cancelled", None
        else:
            state = "Done"
            exit_code = next((c for c in exit_codes if c), 0)
    else:
        started = any(s == "Running" or s in GLITE_FINAL for s in states)
        waiting = (s for s in ("Scheduled", "Waiting", "Submitted") if s in states)
        state = "Running" if started else next(waiting, "Submitted")
        exit_code = None
    return {
        "id": parent["id"],
        "state": state,
        "exit_code": exit_code,
        "submitted": parent["submitted"],
        "started": None,
        "parent": None,
        "node_name": None,
        "nodes": nodes,
        "is_parent": True,
    }


def _glite_block(view: dict[str, Any], indent: str, level: int, style: str) -> str:
    """One job's lines in ``glite-wms-job-status`` (wmsui_api.JobStatus.__printSt__)."""
    state = view["state"]
    text = f"\n{indent}Status info for the Job : {view['id']}"
    text += f"\n{indent}{'Current Status:':<20}"
    done = ""
    if state == "Done":
        done = "(Success)" if view["exit_code"] == 0 else "(Exit Code !=0)"
        if level:
            done += f"\n{indent}{'Exit code:':<20}{view['exit_code']}"
    text += state + (" " + done if style == "legacy" else done)
    if level:
        if view.get("is_parent"):
            reason, destination = "", ""
        else:
            reason = {
                "Done": "Job Terminated Successfully",
                "Cancelled": "Cancelled by user",
                "Submitted": "",
            }.get(state, "unavailable")
            started = view["started"] is not None or state in ("Running", "Scheduled")
            destination = GLITE_CE if started else ""
        if reason:
            text += f"\n{indent}{'Status Reason:':<20}{reason}"
        if destination:
            text += f"\n{indent}{'Destination:':<20}{destination}"
        submitted = time.asctime(time.localtime(view["submitted"])) + " " + time.strftime("%Z")
        text += f"\n{indent}{'Submitted:':<20}{submitted}"
        if not indent and view.get("parent"):
            text += f"\n{indent}{'Parent Job:':<20}{view['parent']}"
    return text


def _glite_status_text(view: dict[str, Any], level: int, style: str, nonodes: bool) -> str:
    if style == "legacy":
        start = "*" * 61 + "\n"
        sep = "*" * 61 + "\n"
    else:
        start = "======================= glite-wms-job-status Success =====================\n"
        sep = "=" * 74 + "\n"
    text = f"\n{start}BOOKKEEPING INFORMATION:\n" + _glite_block(view, "", level, style)
    if level:
        text += "\n" + sep
    if not nonodes:
        indent = "    "
        for number, node in enumerate(view["nodes"]):
            if number == 0:
                text += "\n- Nodes information for: "
                if level > 1:
                    text += view["id"] + ":\n"
            text += _glite_block(node, indent, level, style)
            if level:
                text += "\n" + sep + indent
    return text


def _glite_status(store: _Store, argv: list[str], io: _Output) -> int:
    tool = "glite-wms-job-status"
    parsed = _glite_getopt(
        tool,
        argv,
        "i:c:o:v:s:e:",
        [
            "help",
            "version",
            "all",
            "input=",
            "verbosity=",
            "from=",
            "to=",
            "config=",
            "user-tag=",
            "status=",
            "exclude=",
            "config-vo=",
            "vo=",
            "output=",
            "noint",
            "nonodes",
            "debug",
            "logfile=",
        ],
        io,
    )
    if parsed is None:
        return 1
    opts, args = parsed
    for query in ("all", "from", "to", "user-tag", "s", "status", "e", "exclude"):
        if query in opts:
            return _glite_error(
                io, "Input Option Error", f"(fake) LB queries ({query}) are not faked"
            )
    in_file = opts.get("i") or opts.get("input")
    if not args and not in_file:
        io.error(f"\n{tool}: missing job Id(s)\n")
        return 1
    if args and in_file:
        io.error("**** Error: UI_TOO_MANY_ARGS ****  \nToo many arguments specified\n")
        return 1
    level_text = opts.get("v") or opts.get("verbosity") or "1"
    if not level_text.isdigit() or int(level_text) > 3:
        io.error(
            f'**** Error: UI_ARG_MISMATCH ****  \nNot a valid value for the "{level_text}" option\n'
        )
        return 1
    level = int(level_text)
    style = str(store.config()["status_style"])
    noint = "noint" in opts
    bad_format = False
    jobs: list[str] = []
    candidates = args
    if in_file:
        path = Path(in_file)
        if not path.is_file():
            io.error(f'**** Error: UI_FILE_NOT_FOUND ****  \nUnable to find the file "{in_file}"\n')
            return 1
        candidates = [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith(("#", "//"))
        ]
    for candidate in candidates:
        if _glite_parse_id(candidate) is None:
            io.error(
                "**** Warning: UI_WRONG_JOBID_FORMAT ****  \n"
                f'The "{candidate}" jobID is not in a valid format\n'
            )
            bad_format = True
        elif candidate in jobs:
            io.error(
                "**** Warning: UI_JOBID_REPEAT ****  \n"
                f'The jobID "{candidate}" has been already specified in the input list.\n'
                "The jobID will be taken into account only once.\n"
            )
        else:
            jobs.append(candidate)
    if not jobs:
        if bad_format:
            io.error("**** Error: UI_WRONG_JOBID_ALL ****  \nAll jobID are in wrong format\n")
        return 1
    if in_file and len(jobs) > 1 and not noint:
        chosen = _glite_menu(jobs, io)
        if chosen is None:
            return 1
        jobs = chosen
    exit_code = -1 if bad_format else 0
    printed = 0
    severity = "Warning" if len(jobs) > 1 else "Error"
    texts = []
    for job in jobs:
        with store.locked():
            view = _glite_view(store, job)
        if view is None:
            io.error(
                f"**** {severity}: API_NATIVE_ERROR ****  \n"
                'Error while calling the "Job:getStatus" native api \n'
                f"Unable to retrieve the status for: {job}\n"
                "glite.lb.Exception: edg_wll_JobStatus: No such file or directory: "
                "no matching jobs found\n"
            )
            exit_code = -1
            continue
        texts.append(_glite_status_text(view, level, style, "nonodes" in opts))
        printed += 1
    if level == 0 and printed:
        texts.append("*" * 61 + "\n")
    if not printed:
        if len(jobs) != 1:
            io.error(
                "**** Error: LB_API_OPEN_ALL ****  \nUnable to open connection with any LB "
                "supplied\n"
            )
        return 1
    out_file = opts.get("o") or opts.get("output")
    if out_file:
        with open(out_file, "a") as handle:
            for text in texts:
                handle.write(text + "\n")
    else:
        for text in texts:
            io.print(text)
    return exit_code & 0xFF


def _glite_menu(jobs: list[str], io: _Output) -> list[str] | None:
    """wmsui_api.selectJobId: the interactive choice among several ids (Python 2 raw_input)."""
    lines = ["-" * 66]
    lines += [f"{str(n).ljust(2)}: {job}" for n, job in enumerate(jobs, 1)]
    lines += ["a : all", "q : quit", "-" * 66]
    io.print("\n".join(lines))
    io.print(f"\nChoose one or more jobId(s) in the list - [1-{len(jobs)}]all:", end="")
    answer = sys.stdin.readline()
    if not answer:
        io.error(
            'Traceback (most recent call last):\n  File "glite-wms-job-status", in <module>\n'
            "EOFError: EOF when reading a line\n"
        )
        return None
    answer = answer.strip()
    if answer in ("", "a"):
        return jobs
    if answer == "q":
        io.print("bye")
        return None
    chosen = []
    for part in answer.split(","):
        bounds = part.split("-")
        with contextlib.suppress(ValueError, IndexError):
            first, last = int(bounds[0]), int(bounds[-1])
            chosen += jobs[first - 1 : last]
    return chosen or jobs


def _glite_cancel(store: _Store, argv: list[str], io: _Output) -> int:
    tool = "glite-wms-job-cancel"
    parsed = _glite_getopt(
        tool,
        argv,
        "i:c:o:",
        [
            "help",
            "version",
            "input=",
            "config=",
            "output=",
            "noint",
            "debug",
            "logfile=",
            "vo=",
            "json",
        ],
        io,
    )
    if parsed is None:
        return 1
    opts, args = parsed
    noint = "noint" in opts
    in_file = opts.get("i") or opts.get("input")
    if in_file:
        try:
            candidates = [
                line.strip()
                for line in Path(in_file).read_text().splitlines()
                if line.strip() and not line.strip().startswith(("#", "//"))
            ]
        except OSError:
            return _glite_error(io, "File i/o Error", f"invalid input file : {in_file}")
    else:
        candidates = args
    jobs = [c for c in candidates if _glite_parse_id(c) is not None]
    for bad in (c for c in candidates if _glite_parse_id(c) is None):
        io.error(f"\nWarning - Wrong JobId\n{bad}\n\n")
    if not jobs:
        return _glite_error(
            io, "JobId Error", "No valid JobId for which the cancellation can be requested"
        )
    if len(jobs) > 1 and not noint:
        lines = ["-" * 66] + [f"{n} : {job}" for n, job in enumerate(jobs, 1)]
        lines += ["a : all", "q : quit", "-" * 66, ""]
        io.print("\n".join(lines))
        io.print(
            f"Choose one or more jobId(s) in the list - [1-{len(jobs)}]all (use , as separator "
            "or - for a range): ",
            end="",
        )
        answer = sys.stdin.readline().strip()
        if answer == "q":
            io.print("bye")
            return 1
        if answer.isdigit() and 1 <= int(answer) <= len(jobs):
            jobs = [jobs[int(answer) - 1]]
    if not noint:
        io.print("\nAre you sure you want to remove specified job(s) [y/n]y : ", end="")
        answer = sys.stdin.readline().strip().lower()
        if answer.startswith("n"):
            io.print("bye\n")
            return 1
    cancelled = []
    for job in jobs:
        with store.locked():
            view = _glite_view(store, job)
            problem = None
            if view is None:
                problem = (
                    "Unable to retrieve the job status",
                    "glite.lb.Exception: edg_wll_JobStatus: No such file or directory: "
                    "no matching jobs found",
                )
            elif view["state"] not in GLITE_CANCELLABLE:
                problem = ("Cancel not allowed", f"Current Job Status is {view['state']}")
            else:
                targets = view["nodes"] if view.get("is_parent") else [view]
                for target in targets:
                    record = store.load(target["key"])
                    if record is not None and record["state"] in GLITE_CANCELLABLE:
                        _request_kill(store, record, "Cancelled")
                cancelled.append(job)
        if problem is not None:
            if len(jobs) == 1:
                return _glite_error(io, problem[0], problem[1])
            io.error(f"\nWarning - Not allowed to cancel the job:\n{job}\n{problem[1]}\n\n")
    if not cancelled:
        return _glite_error(io, "Operation Failed", "Unable to cancel any job")
    listing = "".join(f"- {job}\n" for job in cancelled)
    io.print(
        f"\n{_stripe(88, tool + ' Success')}\n\n"
        "The cancellation request has been successfully submitted for the following job(s):\n\n"
        f"{listing}\n{_stripe(88)}\n\n"
    )
    return 0


# ----------------------------------------------------------------------------------------------
# The fixture side
# ----------------------------------------------------------------------------------------------


@dataclass
class FakeJob:
    """One job as the fake grid ran it (for gLite parametric jobs: one node)."""

    flavour: str
    id: str
    state: str  # the real status string: "Done", "Failed", "Done(Success)", "Cancelled", ...
    exit_code: int | None
    final: bool  # in a final state and its processes have ended
    job_dir: Path
    jdl: dict[str, Any]  # this job's attributes after %s/%j/_PARAM_ substitution
    jdl_text: str  # the submitted JDL text
    jdl_path: str
    argv: list[str] | None
    parameter: Any
    parent: str | None  # gLite: the parametric parent's id
    node_name: str | None
    stdout_path: Path | None
    stderr_path: Path | None
    pid: int | None  # of the job's first process, also its process group id
    submitted: float
    started: float | None
    finished: float | None

    def stdout(self) -> str:
        return _read_or_empty(self.stdout_path)

    def stderr(self) -> str:
        return _read_or_empty(self.stderr_path)


def _read_or_empty(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


_SCRIPT = """#!{python}
# Fake of `{tool}` for the tests; installed by tests/fakes/grid_cli.py (see its docstring).
import sys
sys.path.insert(0, {root!r})
from tests.fakes.grid_cli import main
sys.exit(main({tool!r}, sys.argv[1:]))
"""


class _SiteEnv(dict[str, str]):
    """The jobs' environment; every change is written through to the fake's config."""

    def __init__(self, owner: FakeGrid, values: dict[str, str]) -> None:
        super().__init__(values)
        self._owner = owner

    def _sync(self) -> None:
        self._owner._store.set_config(site_env=dict(self))

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self._sync()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._sync()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._sync()

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        value = super().pop(key, *default)
        self._sync()
        return value

    def setdefault(self, key: str, default: str = "") -> str:  # type: ignore[override]
        value = super().setdefault(key, default)
        self._sync()
        return value

    def clear(self) -> None:
        super().clear()
        self._sync()

    def __ior__(self, other: Any) -> _SiteEnv:  # type: ignore[override,misc]
        self.update(other)
        return self


class FakeGrid:
    """A fake DIRAC or gLite WMS: its programs in :attr:`bin_dir`, its state in :attr:`home`."""

    def __init__(self, flavour: str, root: Path) -> None:
        if flavour not in HOME_VARS:
            raise ValueError(f"unknown flavour {flavour!r}")
        self.flavour = flavour
        self.root = root
        self.home = root / "state"
        self.bin_dir = root / "bin"
        self.home.mkdir(parents=True, exist_ok=True)
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self._store = _Store(self.home)
        site = {k: v for k, v in os.environ.items() if k not in HOME_VARS.values()}
        self._store.set_config(**{**DEFAULT_CONFIG, "site_env": site})
        self._site_env = _SiteEnv(self, site)
        tools = DIRAC_TOOLS if flavour == "dirac" else GLITE_TOOLS
        for tool in tools:
            script = self.bin_dir / tool
            script.write_text(
                _SCRIPT.format(python=sys.executable, tool=tool, root=str(PROJECT_ROOT))
            )
            script.chmod(0o755)
        self.env: dict[str, str] = dict(os.environ)
        self.env["PATH"] = os.pathsep.join([str(self.bin_dir), self.env.get("PATH", "")])
        self.env[HOME_VARS[flavour]] = str(self.home)
        self.programs = {tool: str(self.bin_dir / tool) for tool in tools}

    # -- options ----------------------------------------------------------------------------

    @property
    def site_env(self) -> dict[str, str]:
        return self._site_env

    @site_env.setter
    def site_env(self, values: dict[str, str]) -> None:
        self._site_env = _SiteEnv(self, dict(values))
        self._site_env._sync()

    def _option(self, name: str) -> Any:
        return self._store.config()[name]

    @property
    def max_running(self) -> int | None:
        """At most this many jobs run at once; the rest wait (DIRAC Waiting, gLite Scheduled)."""
        return self._option("max_running")  # type: ignore[no-any-return]

    @max_running.setter
    def max_running(self, value: int | None) -> None:
        self._store.set_config(max_running=value)

    @property
    def start_delay(self) -> float:
        """Seconds a new job waits (DIRAC/gLite Waiting) before it starts."""
        return float(self._option("start_delay"))

    @start_delay.setter
    def start_delay(self, value: float) -> None:
        self._store.set_config(start_delay=float(value))

    @property
    def strict(self) -> bool:
        """Reject JDL the real tool would accept but misread or regret (see module doc)."""
        return bool(self._option("strict"))

    @strict.setter
    def strict(self, value: bool) -> None:
        self._store.set_config(strict=bool(value))

    @property
    def max_parametric_jobs(self) -> int:
        """DIRAC's JobManager limit (MaxParametricJobs, 20 by default)."""
        return int(self._option("max_parametric_jobs"))

    @max_parametric_jobs.setter
    def max_parametric_jobs(self, value: int) -> None:
        self._store.set_config(max_parametric_jobs=int(value))

    @property
    def status_style(self) -> str:
        """gLite status format: "emi" (``Done(Success)``) or "legacy" (``Done (Success)``)."""
        return str(self._option("status_style"))

    @status_style.setter
    def status_style(self, value: str) -> None:
        if value not in ("emi", "legacy"):
            raise ValueError("status_style is 'emi' or 'legacy'")
        self._store.set_config(status_style=value)

    # -- jobs -------------------------------------------------------------------------------

    def _job(self, record: dict[str, Any], style: str) -> FakeJob:
        job_dir = Path(record["job_dir"])
        state = record["state"]
        if self.flavour == "glite":
            state = _glite_state_name(state, record["exit_code"], style)
        return FakeJob(
            flavour=self.flavour,
            id=record["id"],
            state=state,
            exit_code=record["exit_code"],
            final=_is_final(record) and record["finished"] is not None,
            job_dir=job_dir,
            jdl={k: _decode(v) for k, v in record["jdl"].items()},
            jdl_text=record["jdl_text"],
            jdl_path=record["jdl_path"],
            argv=record["argv"],
            parameter=record["parameter"],
            parent=record["parent"],
            node_name=record["node_name"],
            stdout_path=job_dir / record["stdout"] if record["stdout"] else None,
            stderr_path=job_dir / record["stderr"] if record["stderr"] else None,
            pid=record["pid"],
            submitted=record["submitted"],
            started=record["started"],
            finished=record["finished"],
        )

    def jobs(self) -> list[FakeJob]:
        """All jobs submitted so far, oldest first (gLite parametric: the nodes)."""
        style = self.status_style
        with self._store.locked():
            records = self._store.records()
        return [self._job(r, style) for r in records if r["tool"] == self.flavour]

    def job(self, job_id: str | int) -> FakeJob:
        for job in self.jobs():
            if job.id == str(job_id):
                return job
        raise KeyError(f"no {self.flavour} job {job_id!r}; known: {[j.id for j in self.jobs()]}")

    def _expand(self, ids: Iterable[str | int]) -> list[str]:
        out = []
        for job_id in ids:
            text = str(job_id).strip()
            parsed = _glite_parse_id(text) if self.flavour == "glite" else None
            parent = self._store.load_parent(parsed[1]) if parsed else None
            if parent is not None:
                out += [f"{GLITE_LB}/{key}" for key in parent["children"]]
            else:
                out.append(text)
        return out

    def wait(self, ids: Iterable[str | int] | None = None, timeout: float = 120.0) -> list[FakeJob]:
        """Wait until the given jobs (default: all; gLite parent ids mean their nodes) are in a
        final state; raise AssertionError with their output tails on timeout."""
        deadline = time.monotonic() + timeout
        wanted = None if ids is None else self._expand(ids)
        while True:
            jobs = self.jobs()
            if wanted is not None:
                by_id = {j.id: j for j in jobs}
                unknown = [i for i in wanted if i not in by_id]
                if unknown:
                    raise AssertionError(f"fake {self.flavour}: unknown job id(s) {unknown}")
                jobs = [by_id[i] for i in wanted]
            pending = [j for j in jobs if not j.final]
            if not pending:
                return jobs
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fake {self.flavour}: {len(pending)} job(s) not finished after "
                    f"{timeout:.0f} s:\n" + "\n".join(self._describe(j) for j in pending)
                )
            time.sleep(0.05)

    def _describe(self, job: FakeJob) -> str:
        supervisor = _read_or_empty(job.job_dir.parent / "supervisor.log")
        return (
            f"--- job {job.id} state {job.state} argv {job.argv} dir {job.job_dir}\n"
            f"stdout tail:\n{_tail(job.stdout())}\nstderr tail:\n{_tail(job.stderr())}\n"
            f"supervisor log tail:\n{_tail(supervisor)}"
        )

    def close(self, grace: float = 3.0) -> None:
        """Kill every job still running (process group) and its supervisor."""
        with self._store.locked():
            records = self._store.records()
            for record in records:
                if not _is_final(record):  # also stops supervisors still waiting for a slot
                    record["state"] = "Killed" if record["tool"] == "dirac" else "Cancelled"
                    record["kill_requested"] = time.time()
                    self._store.save(record)
        live = [r for r in records if r.get("pid") and r["finished"] is None]
        supervisors = [r["supervisor_pid"] for r in records if r.get("supervisor_pid")]
        for record in live:
            _signal_group(record["pid"], signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(r["pid"]) for r in live):
            time.sleep(0.05)
        for record in live:
            _signal_group(record["pid"], signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in supervisors):
            time.sleep(0.05)
        for pid in supervisors:
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie that nobody reaps yet counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


if "pytest" in sys.modules:  # the fixtures; the fake programs themselves skip this import
    import pytest

    @pytest.fixture
    def fake_dirac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGrid]:
        """A fake DIRAC: pass ``fake_dirac.env`` to the code under test."""
        grid = FakeGrid("dirac", tmp_path_factory.mktemp("fake-dirac"))
        try:
            yield grid
        finally:
            grid.close()

    @pytest.fixture
    def fake_glite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGrid]:
        """A fake gLite WMS: pass ``fake_glite.env`` to the code under test."""
        grid = FakeGrid("glite", tmp_path_factory.mktemp("fake-glite"))
        try:
            yield grid
        finally:
            grid.close()
