#!/usr/bin/env bash
# Create (or reuse) the Python venv used by loopprof's live tests and demo.
#
#   scripts/venv.sh [PYTHON]
#
# PYTHON is an interpreter command/path (default: python3) or a bare version
# such as 3.12 (mapped to /root/.pyenv/versions/3.12.*/bin/python3 if present,
# else python3.12 on PATH). The venv lives in <repo>/target/venvs/py<major.minor>/
# and is reused while its stamp file holds the sha256 of its requirements file
# (tests/python/requirements-py<major.minor>.txt when there is one, for the
# Pythons the main pins do not support, else tests/python/requirements.txt);
# otherwise it is rebuilt from scratch.
#
# The venv path is printed as the LAST line of stdout; all other output goes
# to stderr, so callers can do:  VENV=$(scripts/venv.sh 3.12 | tail -n1)
set -euo pipefail

log() { printf 'venv.sh: %s\n' "$*" >&2; }
die() { printf 'venv.sh: error: %s\n' "$*" >&2; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PY_ARG="${1:-python3}"
if [[ "$PY_ARG" =~ ^[0-9]+\.[0-9]+$ ]]; then
    PY=""
    # Highest patch release under pyenv, if any.
    for cand in $(ls -d /root/.pyenv/versions/"$PY_ARG".* 2>/dev/null | sort -V -r); do
        if [[ -x "$cand/bin/python3" ]]; then PY="$cand/bin/python3"; break; fi
    done
    if [[ -z "$PY" ]]; then
        if command -v "python$PY_ARG" >/dev/null 2>&1; then
            PY="$(command -v "python$PY_ARG")"
        else
            die "no Python $PY_ARG found (looked in /root/.pyenv/versions/$PY_ARG.* and for python$PY_ARG on PATH)"
        fi
    fi
else
    PY="$PY_ARG"
    command -v "$PY" >/dev/null 2>&1 || die "interpreter not found: $PY"
fi

VER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
    || die "cannot run $PY"
REQ="$ROOT/tests/python/requirements-py$VER.txt"
[[ -f "$REQ" ]] || REQ="$ROOT/tests/python/requirements.txt"
[[ -f "$REQ" ]] || die "missing $REQ"
VENV="$ROOT/target/venvs/py$VER"
STAMP="$VENV/.requirements.sha256"
WANT="$("$PY" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$REQ")"

if [[ -f "$STAMP" && -x "$VENV/bin/python" && "$(cat "$STAMP")" == "$WANT" ]]; then
    log "reusing $VENV ($("$VENV/bin/python" -V 2>&1))"
    echo "$VENV"
    exit 0
fi

if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    die "$PY cannot create venvs with pip (the venv/ensurepip module is missing).
  On Debian/Ubuntu install it with:  sudo apt-get install python3-venv
  (or python$VER-venv for a specific version), then re-run this script."
fi

log "creating $VENV with $PY ($("$PY" -V 2>&1))"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
if ! "$PY" -m venv "$VENV" >&2; then
    rm -rf "$VENV"
    die "'$PY -m venv' failed. On Debian/Ubuntu: sudo apt-get install python3-venv (or python$VER-venv)"
fi
log "installing $REQ"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ" >&2; then
    die "pip install failed; the venv at $VENV is left without a stamp and will be rebuilt next time"
fi
echo "$WANT" > "$STAMP"
log "ready"
echo "$VENV"
