#!/usr/bin/env bash
# The whole test suite, from a fresh clone: the README's test command, and what .ci/run calls.
#
#   scripts/test.sh
#
# 1. installs what the tests need and a fresh machine may lack (Debian packages via apt-get,
#    when missing and when running as root or with sudo);
# 2. creates or reuses the pinned Python venvs for 3.11 (required) and 3.8-3.10, 3.12, 3.13
#    (when that interpreter exists under pyenv or on PATH; 3.8-3.10 have their own pins,
#    tests/python/requirements-py3.X.txt; the live matrix tests fail, not skip, if one they
#    use is missing), and installs the browser check's pinned playwright-core
#    (tests/browser, `npm ci`; it drives Debian's Chromium, no browser download);
# 3. checks formatting and lints, builds the pip wheel (scripts/wheel.sh: maturin and zig
#    from a pinned venv), then runs every unit and live test with cargo-nextest (cargo test
#    when nextest is not installed);
# 4. fuzzes each untrusted input for a short while (scripts/fuzz.sh, AFL++ through cargo-afl,
#    installed on first use; docs/fuzzing.md). Set LOOPPROF_FUZZ_SECS=0 to skip it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '\033[1mtest.sh:\033[0m %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------------
need=()
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # live sync-redis case
[[ -x /usr/bin/chromium ]] || need+=(chromium)  # tests/browser/check_report.mjs
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)  # decodes the pprof export
if ((${#need[@]})); then
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    log "installing Debian packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# --- Python venvs ----------------------------------------------------------------------
for v in 3.8 3.9 3.10 3.11 3.12 3.13; do
    if [[ $v == 3.11 ]] || ls -d /root/.pyenv/versions/$v.* >/dev/null 2>&1 || command -v "python$v" >/dev/null 2>&1; then
        log "venv for Python $v"
        scripts/venv.sh "$v" >/dev/null
    fi
done

# --- browser check (node) ---------------------------------------------------------------
if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
    log "npm ci in tests/browser"
    npm ci --no-audit --no-fund --prefix tests/browser
fi

# --- Rust ------------------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets -- -D warnings
log "scripts/wheel.sh (the pip wheel tests/live_wheel.rs installs)"
scripts/wheel.sh >/dev/null
if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run"
    cargo nextest run --no-fail-fast "$@"
    # nextest does not run doctests
    cargo test --doc --quiet
else
    log "cargo test (cargo-nextest not installed)"
    cargo test --no-fail-fast "$@" -- --test-threads 2
fi
fuzz_secs=${LOOPPROF_FUZZ_SECS:-20}
if [[ "$fuzz_secs" != 0 ]]; then
    log "scripts/fuzz.sh $fuzz_secs (each fuzz target)"
    scripts/fuzz.sh "$fuzz_secs"
fi
log "all tests passed"
