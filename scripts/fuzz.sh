#!/usr/bin/env bash
# Coverage-guided fuzzing of loopprof's untrusted inputs with AFL++ (cargo-afl), on the
# stable toolchain. See docs/fuzzing.md.
#
#   scripts/fuzz.sh SECONDS [TARGET...]   fuzz each target (recording, fail_on, catalog) for
#                                         SECONDS, one after the other; crashes fail the run
#
# Installs cargo-afl (pinned) and builds AFL++ on first use. New corpus entries stay in
# target/fuzz/<target>/out/default/queue; `scripts/fuzz.sh --minimize TARGET` copies a
# minimised queue into fuzz/corpus/TARGET for committing. Crashes and hangs found are under
# target/fuzz/<target>/out/default/{crashes,hangs}.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
AFL_VERSION=0.18.2

if ! cargo afl --version >/dev/null 2>&1; then
    cargo install cargo-afl --locked --version "$AFL_VERSION"
fi
# Builds AFL++ once per toolchain (a no-op when it is there).
cargo afl config --build >/dev/null 2>&1 || true

(cd fuzz && CARGO_TARGET_DIR="$ROOT/target/fuzz/build" cargo afl build --release --quiet)
BIN="$ROOT/target/fuzz/build/release"

if [[ "${1:-}" == "--minimize" ]]; then
    t=$2
    rm -rf "target/fuzz/$t/min"
    cargo afl cmin -i "target/fuzz/$t/out/default/queue" -o "target/fuzz/$t/min" -- "$BIN/$t" >/dev/null
    cp target/fuzz/"$t"/min/* "fuzz/corpus/$t/"
    exit 0
fi

secs=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(recording fail_on catalog)

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
status=0
for t in "${targets[@]}"; do
    out="target/fuzz/$t/out"
    mkdir -p "$out"
    # Resume a previous run of this target when there is one.
    input="fuzz/corpus/$t"
    [[ -d "$out/default/queue" ]] && input=-
    echo "fuzzing $t for ${secs}s"
    cargo afl fuzz -V "$secs" -m 2048 -t 2000 -i "$input" -o "$out" -- "$BIN/$t" \
        > "target/fuzz/$t.log" 2>&1 || { echo "afl-fuzz failed for $t:"; tail -20 "target/fuzz/$t.log"; exit 1; }
    stats="$out/default/fuzzer_stats"
    grep -E '^(execs_done|execs_per_sec|corpus_count|bitmap_cvg|saved_crashes|saved_hangs)' "$stats" | tr -s ' ' | paste -sd' '
    crashes=$(find "$out/default/crashes" -type f -name 'id:*' | wc -l)
    if [[ $crashes -gt 0 ]]; then
        echo "$t: $crashes crashing inputs in $out/default/crashes"
        status=1
    fi
done
exit $status
