#!/usr/bin/env bash
# Builds the tract inference component (wasm-modules/inference, its own cargo workspace) for
# wasm32-wasip2 in release with SIMD, and copies it to target/wasm/falaj-inference.wasm
# (override with FALAJ_WASM_OUT), and its wasi:nn build to falaj-inference-nn.wasm beside it. Idempotent: a second run with no change rebuilds nothing.
#
#   scripts/wasm-component.sh            build, print path and size
#   scripts/wasm-component.sh --path     print where the component is (build nothing)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
crate="$root/wasm-modules/inference"
out=${FALAJ_WASM_OUT:-$root/target/wasm/falaj-inference.wasm}
if [ "${1:-}" = "--path" ]; then echo "$out"; exit 0; fi

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
# The component has its own target directory, whatever CARGO_TARGET_DIR the caller uses for
# the main workspace, so the two never invalidate each other (FALAJ_WASM_TARGET_DIR moves it,
# e.g. outside a CI clone).
export CARGO_TARGET_DIR="${FALAJ_WASM_TARGET_DIR:-$crate/target}"
# SIMD for tract's kernels. Set here as well as in .cargo/config.toml (read only from that
# directory); RUSTFLAGS would override both, so it is cleared for this build.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
export CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C target-feature=+simd128"
# Two builds of the one source: the plain component (any wasi:http host) and, beside it,
# the `host-nn` build that also imports wasi:nn (falaj-edge's host inference path; it
# instantiates only where wasi:nn is offered: falaj-edge, `wasmtime serve -S nn`).
nn_out="${out%.wasm}-nn.wasm"
build() { # <out> [cargo args...]
  local dest=$1; shift
  local t0; t0=$(date +%s)
  (cd "$crate" && cargo build --release --locked --target wasm32-wasip2 ${CARGO_BUILD_JOBS:+-j "$CARGO_BUILD_JOBS"} "$@")
  local built="$CARGO_TARGET_DIR/wasm32-wasip2/release/falaj_inference.wasm"
  mkdir -p "$(dirname "$dest")"
  if ! cmp -s "$built" "$dest"; then cp "$built" "$dest"; fi
  # A wasip2 cdylib is a component: check the header (layer 1) rather than trust the target.
  if [ "$(od -An -tx1 -j4 -N4 "$dest" | tr -d ' ')" != "0d000100" ]; then
    echo "error: $dest is not a WebAssembly component" >&2; exit 1
  fi
  local bytes; bytes=$(stat -c %s "$dest")
  awk -v p="$dest" -v b="$bytes" -v s=$(( $(date +%s) - t0 )) \
    'BEGIN { printf "component: %s\nsize: %d bytes (%.1f MiB), build %ds\n", p, b, b / 1048576, s }'
}
build "$nn_out" --features host-nn
build "$out"
