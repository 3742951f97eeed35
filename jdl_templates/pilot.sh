#!/bin/sh
# pilot.sh - gridlrt's bootstrap on a grid worker node.
#
# Usage: pilot.sh SANDBOX SHA256 [gridlrt worker run options...]
#
# Runs in the job's working directory on a node that has python3 and the site's LOFAR software
# (the gfal2 Python binding, numpy, python-casacore, DP3) but not gridlrt: gridlrt and its
# pure-Python dependencies come in the sandbox, under _gridlrt/lib (built with
# `gridlrt sandbox build DIR --with-gridlrt`); the step configurations are at its top level.
#
#   SANDBOX  the sandbox tarball: a file (shipped in the job's input sandbox, or on a shared
#            filesystem) or a URL (file://, https://, davs://, srm://, root://, gsiftp://, ...),
#            downloaded with gfal-copy, or with gfal2's Python binding without gfal-copy
#   SHA256   the sandbox id (sha256 of the tarball); nothing is unpacked when it differs
#   ...      options of `gridlrt worker run`, e.g. --pool URL --step average --max-time 11h
#
# Environment:
#   GRIDLRT_PYTHON  the Python to run gridlrt with (default: python3); its major.minor,
#                   implementation and platform must be those of the bundle (bundle.json)
#   GRIDLRT_PILOT_RETRIES     how often to start gridlrt again when it exits 5 (a service,
#                   usually the pool, did not answer even after --pool-patience); default 2
#   GRIDLRT_PILOT_RETRY_WAIT  seconds to wait before each such restart (default 300)
#   ./pool.cred     if the job's input sandbox has it: the CouchDB pool credentials
#                   (username=, password=); made 0600 and given to gridlrt as
#                   GRIDLRT_POOL_CREDENTIALS; its content is never printed
#   ./macaroon.cred if the job's input sandbox has it (gridlrt submit --macaroons): the
#                   '<WebDAV URL prefix> <macaroon>' lines; made 0600 and given to gridlrt as
#                   GRIDLRT_MACAROON_FILE (downloads and uploads on those doors send the
#                   macaroon as a bearer token); its content is never printed
#
# Steps: find the Python; fetch the sandbox; verify its sha256; unpack it into a fresh
# ./gridlrt-sandbox; check the Python against _gridlrt/bundle.json; check gfal2 imports;
# put _gridlrt/lib first on PYTHONPATH; export GRIDLRT_SANDBOX_ID=SHA256 (each attempt records
# it); run PYTHON -P -m gridlrt worker run --steps-dir
# ./gridlrt-sandbox "$@" (SIGTERM/SIGINT are passed on to it). Every phase is logged to stdout
# as "pilot.sh: <UTC time> <message>", errors to stderr as "pilot.sh: <UTC time> error: <message>".
#
# When gridlrt exits 5 (service unavailable), it is started again after
# GRIDLRT_PILOT_RETRY_WAIT seconds, at most GRIDLRT_PILOT_RETRIES times, with --max-time
# shortened by the time already spent (so the job still ends before its wall time); tokens
# are safe meanwhile (a pilot's claim is recovered once its heartbeat stops).
#
# Exit codes: pilot.sh's own (the bootstrap failed, gridlrt never ran):
#   64  usage: missing or malformed arguments, or an unsupported URL scheme
#   65  the Python ($GRIDLRT_PYTHON, default python3) is not found or does not run
#   66  the sandbox file is missing, or its download failed
#   67  sha256 mismatch: the sandbox is corrupt or not the one asked for (nothing unpacked)
#   68  the sandbox does not unpack, has no runtime bundle, or its gridlrt does not import
#   69  the Python's version, implementation or platform is not the bundle's
#   70  gfal2's Python binding does not import with that Python (the site must provide it)
# otherwise gridlrt's (README "Exit codes"): 0 done, 1 failed, 2 usage, 3 invalid input or
# settings, 4 credentials missing or refused, 5 a service did not answer (after the retries
# above), 6 a bug in gridlrt, 130 interrupted; each non-zero one is explained by one
# "pilot.sh: <UTC time> error: gridlrt exited N: ..." line on stderr.
set -eu

ME=pilot.sh
SANDBOX_DIR=gridlrt-sandbox

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
log() { printf '%s: %s %s\n' "$ME" "$(now)" "$*"; }
error() { printf '%s: %s error: %s\n' "$ME" "$(now)" "$*" >&2; }
die() {
    code=$1
    shift
    error "$*"
    exit "$code"
}
# user:password@ in a URL is shown as ***@
redact() { printf '%s' "$*" | sed 's#://[^/@ ]*@#://***@#g'; }

usage() {
    cat <<'EOF'
usage: pilot.sh SANDBOX SHA256 [gridlrt worker run options...]

Bootstrap a gridlrt pilot on a worker node that has python3 and the site's LOFAR software
(gfal2's Python binding, numpy, python-casacore, DP3): fetch the sandbox (a file, or a
file:// https:// davs:// srm:// root:// gsiftp:// URL), check its sha256, unpack it into
./gridlrt-sandbox, check the Python against the bundle, then run
  $GRIDLRT_PYTHON -m gridlrt worker run --steps-dir ./gridlrt-sandbox [options...]

  SANDBOX         sandbox tarball built with `gridlrt sandbox build DIR --with-gridlrt`
  SHA256          its id (the sha256 printed by the build)
  options         e.g. --pool https://couch.example.org:6984/lofar --step average --max-time 11h

Environment: GRIDLRT_PYTHON (default python3); GRIDLRT_PILOT_RETRIES (default 2) and
GRIDLRT_PILOT_RETRY_WAIT (seconds, default 300): restarts of gridlrt when it exits 5 (a
service did not answer); ./pool.cred, if present, holds the pool credentials (made 0600,
passed as GRIDLRT_POOL_CREDENTIALS, never printed); ./macaroon.cred, if present, the
macaroons for WebDAV doors (made 0600, passed as GRIDLRT_MACAROON_FILE, never printed).
Exit codes: 64 usage, 65 no Python, 66 sandbox not found or not downloaded, 67 sha256
mismatch, 68 bad sandbox, 69 Python does not match the bundle, 70 no gfal2 binding;
otherwise gridlrt's own: 1 failed, 2 usage, 3 invalid input, 4 credentials, 5 service
unavailable (after the retries), 6 internal error, 130 interrupted.
EOF
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
esac
if [ $# -lt 2 ]; then
    usage >&2
    exit 64
fi
SANDBOX=$1
SHA256=$(printf '%s' "$2" | tr 'A-F' 'a-f')
shift 2
RETRIES=${GRIDLRT_PILOT_RETRIES:-2}
RETRY_WAIT=${GRIDLRT_PILOT_RETRY_WAIT:-300}
case "$RETRIES$RETRY_WAIT" in
    *[!0-9]*) die 64 "GRIDLRT_PILOT_RETRIES and GRIDLRT_PILOT_RETRY_WAIT must be whole numbers, got '$RETRIES' and '$RETRY_WAIT'" ;;
esac
STARTED=$(date +%s)
case "$SHA256" in
    '' | *[!0-9a-f]*) die 64 "SHA256 must be 64 hexadecimal characters (the sandbox id), got '$SHA256'" ;;
esac
[ "${#SHA256}" -eq 64 ] || die 64 "SHA256 must be 64 hexadecimal characters (the sandbox id), got ${#SHA256}"

log "host $(uname -n), working directory $PWD"

# --- the Python ------------------------------------------------------------------------------
PY=${GRIDLRT_PYTHON:-python3}
FOUND=$(command -v "$PY" 2>/dev/null) || FOUND=
if [ -z "$FOUND" ] || [ ! -x "$FOUND" ] || [ -d "$FOUND" ]; then
    die 65 "no Python '$PY' on this node (PATH=$PATH); set GRIDLRT_PYTHON to the python3 that has the site's LOFAR software"
fi
PY=$FOUND
PY_VERSION=$("$PY" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null) ||
    die 65 "'$PY' does not run as Python; set GRIDLRT_PYTHON to the python3 that has the site's LOFAR software"
log "python $PY_VERSION at $PY"

gfal2_or_die() {
    if ! "$PY" -c 'import gfal2' >/dev/null 2>&1; then
        die 70 "gfal2's Python binding does not import with $PY (Python $PY_VERSION); the site must provide python3-gfal2 (Debian/Ubuntu) or gfal2-python (EL) for this Python, or set GRIDLRT_PYTHON to a Python that has it"
    fi
}

# --- fetch -----------------------------------------------------------------------------------
DOWNLOADED=
case "$SANDBOX" in
    *://*)
        scheme=${SANDBOX%%://*}
        case "$scheme" in
            file | http | https | dav | davs | srm | root | xroot | gsiftp) ;;
            *) die 64 "sandbox URL $(redact "$SANDBOX"): $scheme:// is not supported (file, https, davs, srm, root, gsiftp)" ;;
        esac
        TARBALL="$PWD/$SANDBOX_DIR.tar.gz"
        PART="$TARBALL.part"
        rm -f "$PART" "$TARBALL"
        if command -v gfal-copy >/dev/null 2>&1; then
            log "downloading sandbox $(redact "$SANDBOX") with gfal-copy"
            gfal-copy -f "$SANDBOX" "file://$PART" || {
                rm -f "$PART"
                die 66 "could not download the sandbox $(redact "$SANDBOX") (gfal-copy failed, see above)"
            }
        else
            gfal2_or_die
            log "downloading sandbox $(redact "$SANDBOX") with gfal2's Python binding"
            # values go in argv, never into the code
            "$PY" -c '
import sys
import gfal2
context = gfal2.creat_context()
params = context.transfer_parameters()
params.overwrite = True
params.timeout = 3600
try:
    context.filecopy(params, sys.argv[1], sys.argv[2])
except gfal2.GError as exc:
    sys.exit(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
' "$SANDBOX" "file://$PART" || {
                rm -f "$PART"
                die 66 "could not download the sandbox $(redact "$SANDBOX") (see the line above)"
            }
        fi
        mv "$PART" "$TARBALL"
        DOWNLOADED=1
        ;;
    *)
        [ -f "$SANDBOX" ] || die 66 "sandbox $SANDBOX: no such file in $PWD (ship it in the job's input sandbox, or give a URL)"
        case "$SANDBOX" in
            /*) TARBALL=$SANDBOX ;;
            *) TARBALL="$PWD/$SANDBOX" ;;
        esac
        ;;
esac
SIZE=$(($(wc -c <"$TARBALL")))
log "sandbox $SHA256 ($SIZE bytes)"

# --- verify ----------------------------------------------------------------------------------
if command -v sha256sum >/dev/null 2>&1; then
    ACTUAL=$(sha256sum <"$TARBALL")
    ACTUAL=${ACTUAL%% *}
else
    ACTUAL=$("$PY" -c '
import hashlib
import sys
digest = hashlib.sha256()
with open(sys.argv[1], "rb") as fh:
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
print(digest.hexdigest())
' "$TARBALL")
fi
if [ "$ACTUAL" != "$SHA256" ]; then
    [ -z "$DOWNLOADED" ] || rm -f "$TARBALL"
    die 67 "sandbox $(redact "$SANDBOX"): sha256 is $ACTUAL, expected $SHA256; it is corrupt, truncated or not the sandbox asked for; nothing unpacked"
fi
log "sha256 verified"
# the pilot records it in every attempt it makes (provenance: which sandbox ran the step)
GRIDLRT_SANDBOX_ID=$SHA256
export GRIDLRT_SANDBOX_ID

# --- unpack ----------------------------------------------------------------------------------
rm -rf "./$SANDBOX_DIR"
mkdir "./$SANDBOX_DIR"
if ! tar -xzf "$TARBALL" -C "./$SANDBOX_DIR"; then
    rm -rf "./$SANDBOX_DIR"
    die 68 "sandbox $(redact "$SANDBOX") does not unpack (see tar's message above)"
fi
[ -z "$DOWNLOADED" ] || rm -f "$TARBALL"
log "unpacked into $PWD/$SANDBOX_DIR"

# --- the Python against the bundle -----------------------------------------------------------
BUNDLE="$PWD/$SANDBOX_DIR/_gridlrt/bundle.json"
[ -f "$BUNDLE" ] ||
    die 68 "the sandbox has no gridlrt runtime bundle (_gridlrt/bundle.json); build it with: gridlrt sandbox build DIR --with-gridlrt"
WANT=$("$PY" -c '
import json
import sys
with open(sys.argv[1]) as fh:
    bundle = json.load(fh)
print(bundle["python"], bundle["implementation"], bundle["platform"], bundle["gridlrt"])
' "$BUNDLE" 2>/dev/null) || die 68 "$BUNDLE is not a valid runtime bundle description"
HAVE=$("$PY" -c '
import sys
import sysconfig
print("%d.%d" % sys.version_info[:2], sys.implementation.name, sysconfig.get_platform())
')
read -r WANT_PYTHON WANT_IMPL WANT_PLATFORM WANT_GRIDLRT <<EOF
$WANT
EOF
read -r HAVE_PYTHON HAVE_IMPL HAVE_PLATFORM <<EOF
$HAVE
EOF
if [ "$WANT_PYTHON" != "$HAVE_PYTHON" ]; then
    die 69 "the sandbox's gridlrt bundle is for Python $WANT_PYTHON but $PY is Python $HAVE_PYTHON; set GRIDLRT_PYTHON=python$WANT_PYTHON (a Python $WANT_PYTHON with the site's gfal2 binding), or rebuild the sandbox with Python $HAVE_PYTHON"
fi
if [ "$WANT_IMPL $WANT_PLATFORM" != "$HAVE_IMPL $HAVE_PLATFORM" ]; then
    die 69 "the sandbox's gridlrt bundle is for $WANT_IMPL on $WANT_PLATFORM but $PY is $HAVE_IMPL on $HAVE_PLATFORM; set GRIDLRT_PYTHON to a matching Python, or rebuild the sandbox on a $HAVE_PLATFORM machine"
fi
log "bundle: gridlrt $WANT_GRIDLRT for Python $WANT_PYTHON ($WANT_IMPL, $WANT_PLATFORM)"

# --- the site's software ---------------------------------------------------------------------
gfal2_or_die
log "gfal2 binding imports"

# --- credentials and environment -------------------------------------------------------------
# FILE VARIABLE WHAT: a secrets file of the input sandbox, if there, made 0600 and named to
# gridlrt by VARIABLE (its content is never printed)
secrets_file() {
    [ -f "$1" ] || return 0
    chmod 600 "$1" 2>/dev/null ||
        log "warning: cannot chmod 600 $1; gridlrt refuses it if others can read it"
    eval "$2=\"\$PWD/$1\""
    export "${2?}"
    log "$3: $PWD/$1 (content not shown)"
}
secrets_file pool.cred GRIDLRT_POOL_CREDENTIALS "pool credentials"
secrets_file macaroon.cred GRIDLRT_MACAROON_FILE macaroons
PYTHONPATH="$PWD/$SANDBOX_DIR/_gridlrt/lib${PYTHONPATH:+:$PYTHONPATH}"
OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export PYTHONPATH OPENBLAS_NUM_THREADS

# -P: the working directory is not put on sys.path (files in the job's input sandbox must
# not shadow modules); gridlrt comes from PYTHONPATH only.
PROBE='import os, gridlrt, pydantic_core; print(os.path.dirname(gridlrt.__file__))'
if ! IMPORTED=$("$PY" -P -c "$PROBE" 2>/dev/null); then
    WHY=$("$PY" -P -c "$PROBE" 2>&1 | tail -n 1) || WHY=
    die 68 "gridlrt from the sandbox does not import with $PY: $WHY"
fi
log "gridlrt $WANT_GRIDLRT from $IMPORTED"

# --- run gridlrt ------------------------------------------------------------------------------
# The seconds of the last --max-time option (Ns, Nm, Nh, Nd or N; empty if absent or compound).
max_time_seconds() {
    value=
    while [ $# -gt 0 ]; do
        case "$1" in
            --max-time) [ $# -lt 2 ] || { value=$2; shift; } ;;
            --max-time=*) value=${1#--max-time=} ;;
        esac
        shift
    done
    number=${value%[smhd]}
    case "$number" in '' | *[!0-9]*) return 0 ;; esac
    case "$value" in
        *m) echo $((number * 60)) ;;
        *h) echo $((number * 3600)) ;;
        *d) echo $((number * 86400)) ;;
        *) echo "$number" ;;
    esac
}
MAX_TIME=$(max_time_seconds "$@")

CHILD=
SIGNALLED=
pass_on() {
    SIGNALLED=1
    [ -z "$CHILD" ] || kill -s "$1" "$CHILD" 2>/dev/null || :
}
trap 'pass_on TERM' TERM
trap 'pass_on INT' INT

# gridlrt worker run "$@" [extra options] as a child that gets our SIGTERM/SIGINT; its exit code
run_gridlrt() {
    "$PY" -P -m gridlrt worker run --steps-dir "$PWD/$SANDBOX_DIR" "$@" &
    CHILD=$!
    wait "$CHILD" && status=0 || status=$?
    # a trapped signal interrupts wait (status 128+N) while gridlrt still finishes its token
    while [ -n "$SIGNALLED" ] && [ "$status" -gt 128 ]; do
        SIGNALLED=
        wait "$CHILD" && again=0 || again=$?
        [ "$again" -eq 127 ] || status=$again # 127: it had already been waited for
    done
    CHILD=
    return "$status"
}

attempt=0
EXTRA=
while :; do
    log "run: $PY -P -m gridlrt worker run --steps-dir $PWD/$SANDBOX_DIR $(redact "$*")${EXTRA:+ $EXTRA}"
    # shellcheck disable=SC2086 # EXTRA is empty or "--max-time <N>s"
    run_gridlrt "$@" $EXTRA && code=0 || code=$?
    [ "$code" -eq 5 ] && [ "$attempt" -lt "$RETRIES" ] && [ -z "$SIGNALLED" ] || break
    attempt=$((attempt + 1))
    if [ -n "$MAX_TIME" ]; then
        left=$((MAX_TIME - ($(date +%s) - STARTED) - RETRY_WAIT))
        if [ "$left" -lt 60 ]; then
            log "gridlrt exited 5 (a service did not answer); too little time left to try again"
            break
        fi
        EXTRA="--max-time ${left}s"
    fi
    log "gridlrt exited 5 (a service did not answer); starting it again in $RETRY_WAIT s (retry $attempt of $RETRIES)"
    sleep "$RETRY_WAIT" &
    CHILD=$!
    wait "$CHILD" || :
    CHILD=
    [ -z "$SIGNALLED" ] || break
done

case "$code" in
    0) log "gridlrt finished" ;;
    1) error "gridlrt exited 1: it failed (its message is above)" ;;
    2) error "gridlrt exited 2: bad gridlrt worker run options (its message is above)" ;;
    3) error "gridlrt exited 3: invalid input or settings (its message is above); fix the job before submitting it again" ;;
    4) error "gridlrt exited 4: pool or storage credentials missing or refused (its message is above)" ;;
    5) error "gridlrt exited 5: a service (the pool?) did not answer, also after $attempt restart(s); the tokens are safe: submit pilots again later" ;;
    6) error "gridlrt exited 6: a bug in gridlrt (the traceback is above); please report it" ;;
    130) error "gridlrt exited 130: interrupted" ;;
    *) error "gridlrt exited $code" ;;
esac
exit "$code"
