#!/usr/bin/env bash
# Proves the inference component under a host we did not write: builds it
# (scripts/wasm-component.sh), makes sure wasmtime-cli 48 is in target/tools/bin (installs it
# once if not), trains a small model with falaj-train, then runs the component's tests
# (wasm-modules/inference/tests/wasmtime_serve.rs): outputs equal native tract's within 1e-5,
# bad input gets 4xx, the model loads once per instance, a tampered model is refused.
#
# Env: FALAJ_WASMTIME (a wasmtime 48 to use instead), WASMTIME_FULL=1 (install with default
# features instead of the reduced serve-only set), FALAJ_BENCH_REQUESTS (latency samples).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
step() { printf '\n==> %s\n' "$*"; }
crate="$root/wasm-modules/inference"

step "inference component: fmt"
(cd "$crate" && cargo fmt --check)

step "inference component: build (wasm32-wasip2, release, +simd128)"
bash scripts/wasm-component.sh
wasm=$(bash scripts/wasm-component.sh --path)

step "wasmtime-cli 48 in target/tools"
tools="$root/target/tools"
wasmtime=${FALAJ_WASMTIME:-$tools/bin/wasmtime}
if ! "$wasmtime" --version 2>/dev/null | grep -q '^wasmtime 48\.'; then
  # serve + cranelift + the component model (sync and async) + wasi-http + the code cache:
  # what `wasmtime serve -Sp3` needs, about half the build of the default feature set.
  features=(--no-default-features --features "$(cat "$root/tests/wasm/wasmtime-features")")
  [ "${WASMTIME_FULL:-}" = 1 ] && features=()
  echo "installing wasmtime-cli 48 into $tools (one time; ${features[*]:-default features})"
  cargo install wasmtime-cli --version '^48' --locked --root "$tools" "${features[@]}"
  wasmtime="$tools/bin/wasmtime"
fi
"$wasmtime" --version

step "a model from the real trainer (falaj-train)"
train="${CARGO_TARGET_DIR:-$root/target}/debug/falaj-train"
[ -x "$train" ] || cargo build --quiet -p falaj-train
trained="$root/target/wasm/trained"
mkdir -p "$trained"
if ! "$train" --data tests/fixtures/datasets/breast_cancer.csv --target diagnosis \
  --model breast-cancer --hidden 16,8 --epochs 3 --seed 7 --out "$trained" --no-upload \
  >"$trained.log" 2>&1; then
  cat "$trained.log" >&2; exit 1
fi
ls -l "$trained/model.onnx" "$trained/manifest.json"

step "inference component: tests under wasmtime serve (native tract as reference)"
# Own target directory: the host build of the crate (tract as the reference) never touches
# the main workspace's.
FALAJ_WASMTIME="$wasmtime" FALAJ_INFERENCE_WASM="$wasm" FALAJ_TRAINED_MODEL_DIR="$trained" \
CARGO_TARGET_DIR="$crate/target" \
  cargo test --locked --manifest-path "$crate/Cargo.toml" -- --test-threads=1 --nocapture
