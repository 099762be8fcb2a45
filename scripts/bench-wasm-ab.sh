#!/usr/bin/env bash
# What the WASM sandbox costs tract on the edge bench's CNNs (docs/benchmarks.md): the same
# program (scripts/bench/wasm-ab: the component's tract, +simd128) natively, then under
# wasmtime 48 with one setting changed at a time — defaults; epoch interruption, which
# falaj-edge's per-request deadline needs; epoch + the pooling allocator with falaj-edge's
# 512 MiB cap; explicit bounds checks (a 512 MiB reservation, which falaj-edge does not use).
# Each wasm setting is compiled once with `wasmtime compile`. Prints one JSON line per run.
#
#   scripts/bench-wasm-ab.sh [RUNS] [ROUNDS]     # defaults 20 and 2
#
# Needs target/py (scripts/test.sh makes it: onnx) for the models; installs wasmtime-cli 48.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
runs=${1:-20}
rounds=${2:-2}
models="$root/target/bench-edge/models"
if [ ! -f "$models/resnet18.onnx" ] || [ ! -f "$models/mobilenet_v2.onnx" ]; then
  mkdir -p "$models"
  target/py/bin/python scripts/bench/make_cnns.py "$models"
fi
wasmtime=$(bash scripts/install-wasmtime.sh | tail -n 1)
rustup target add wasm32-wasip1 >/dev/null
crate=scripts/bench/wasm-ab/Cargo.toml
export CARGO_TARGET_DIR="$root/target/wasm-ab"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
cargo build --quiet --release --locked --manifest-path "$crate"
CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="-C target-feature=+simd128" \
  cargo build --quiet --release --locked --manifest-path "$crate" --target wasm32-wasip1
native="$CARGO_TARGET_DIR/release/falaj-wasm-ab"
wasm="$CARGO_TARGET_DIR/wasm32-wasip1/release/falaj-wasm-ab.wasm"

cap=$((512 << 20))
# How each wasm setting is compiled; `wasmtime run` must repeat these flags to load the code.
declare -A compile_flags=(
  [defaults]="-W simd=y"
  [epoch]="-W simd=y -W epoch-interruption=y"
  [bounds]="-W simd=y -O memory-reservation=$cap -O memory-guard-size=65536"
)
# Each run setting: the compiled code it runs, and what it adds at run time only.
declare -A code=([defaults]=defaults [epoch]=epoch [epoch-pooling]=epoch [bounds]=bounds)
declare -A run_extra=(
  [defaults]=""
  [epoch]="-W timeout=600s"
  [epoch-pooling]="-W timeout=600s -O pooling-allocator=y -W max-memory-size=$cap"
  [bounds]=""
)
for c in "${!compile_flags[@]}"; do
  # shellcheck disable=SC2086
  "$wasmtime" compile ${compile_flags[$c]} "$wasm" -o "$CARGO_TARGET_DIR/$c.cwasm"
  printf '{"compiled":"%s","bytes":%d}\n' "$c" "$(stat -c %s "$CARGO_TARGET_DIR/$c.cwasm")"
done

for round in $(seq 1 "$rounds"); do
  for m in resnet18 mobilenet_v2; do
    printf '{"round":%d,"setting":"native"}\t' "$round"
    "$native" "$models/$m.onnx" "$runs"
    for s in defaults epoch epoch-pooling bounds; do
      printf '{"round":%d,"setting":"%s"}\t' "$round" "$s"
      # shellcheck disable=SC2086
      "$wasmtime" run --allow-precompiled ${compile_flags[${code[$s]}]} ${run_extra[$s]} --dir "$models::/m" \
        "$CARGO_TARGET_DIR/${code[$s]}.cwasm" "/m/$m.onnx" "$runs"
    done
  done
done
