#!/usr/bin/env bash
# Builds the loopprof wheel into target/wheels: a maturin `bindings = "bin"` wheel
# (pyproject.toml) whose binary is linked by zig against glibc 2.17, so it is tagged
# manylinux2014 and installs with pip, pipx or uv on any glibc Linux of the last ten years.
#
#   scripts/wheel.sh            # x86_64
#   scripts/wheel.sh aarch64    # aarch64 (adds the Rust target with rustup first)
#
# The tools come from a pinned venv (target/venvs/wheel-tools, scripts/wheel-requirements.txt);
# the build uses its own target directory (target/wheel-build), since zig as the linker
# changes every crate's fingerprint.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
arch="${1:-x86_64}"
case "$arch" in
    x86_64|aarch64) ;;
    *) echo "wheel.sh: unknown architecture $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac
target="$arch-unknown-linux-gnu"
tools=target/venvs/wheel-tools
if ! "$tools/bin/python" -c 'import maturin, ziglang' >/dev/null 2>&1; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q -r scripts/wheel-requirements.txt
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
fi
rm -f target/wheels/loopprof-*"$arch".whl
PATH="$ROOT/$tools/bin:$PATH" CARGO_TARGET_DIR="$ROOT/target/wheel-build" \
    maturin build --release --zig --compatibility manylinux2014 --target "$target" \
    -o target/wheels >&2
ls target/wheels/loopprof-*"$arch".whl
