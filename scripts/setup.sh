#!/usr/bin/env bash
# make setup: install whatever is missing for gridlrt, its tests and its demo. Idempotent;
# works as root without a terminal on a fresh Debian (bookworm) machine. Prints its time.
#   1. Debian packages: gfal2 + protocol plugins + python3-gfal2, casacore-data, slurm-wlm,
#      munge, openssl, wsclean (the imager), chromium + chromium-driver (the dashboard's
#      browser tests), nodejs/npm (only what is absent; apt-get update once, only if needed).
#   2. .venv with gridlrt installed editable with its test extra, which pulls in the worker
#      extra (numpy, python-casacore, dp3), the reduction extra (losoto, astropy) and the demo
#      extra (matplotlib): everything make test
#      and make demo need (re-done when pyproject changes). `pip install gridlrt` alone is
#      the light core.
#   3. Debian's gfal2 Python binding linked into .venv (the PyPI sdist does not build here).
#   4. pouchdb-server (CouchDB protocol, for tests) into tests/services/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages ------------------------------------------------------------------
APT_PACKAGES=(gfal2 python3-gfal2 gfal2-plugin-file gfal2-plugin-http gfal2-plugin-srm
  gfal2-plugin-gridftp gfal2-plugin-xrootd casacore-data slurm-wlm munge openssl wsclean
  chromium chromium-driver)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo -n);
  else die "missing Debian packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}"; fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

# --- 2. virtual environment --------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON (apt-get install python3-venv?)"
fi
stamp="$VENV/.gridlrt-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing gridlrt[test] (with the worker and demo extras) into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  "$VENV/bin/python" -c 'import casacore.tables, matplotlib, numpy, packaging, pytest, losoto.h5parm, astropy.io.fits' \
    || die "gridlrt[test] installed but its extras do not import in $VENV"
  touch "$stamp"
else
  say "gridlrt already installed in $VENV"
fi

# --- 3. gfal2 binding into the venv ------------------------------------------------------
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tag=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
binding="/usr/lib/python3/dist-packages/gfal2${tag}"
[ -f "$binding" ] || die "no gfal2 binding $binding for $($VENV/bin/python --version) (python3-gfal2 targets Debian's Python; use a Python 3.11 venv)"
ln -sf "$binding" "$site/"
"$VENV/bin/python" -c 'import gfal2' || die "gfal2 binding does not import in $VENV"

# --- 4. pouchdb-server for the tests -----------------------------------------------------
services=tests/services
if [ ! -x "$services/node_modules/.bin/pouchdb-server" ] || [ "$services/package-lock.json" -nt "$services/node_modules/.package-lock.json" ]; then
  say "installing pouchdb-server (npm, about a minute)"
  (cd "$services" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
else
  say "pouchdb-server present"
fi

say "setup took $(( $(date +%s) - start )) s"
