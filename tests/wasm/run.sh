#!/usr/bin/env bash
# Proves the inference component under a host we did not write, on its own (scripts/test.sh
# runs the same tests in CI): builds the component (scripts/wasm-component.sh), makes sure
# wasmtime-cli 48 is in target/tools/bin (scripts/install-wasmtime.sh), builds falaj-train,
# then runs infra/edge-node/tests/wasmtime_serve.rs (outputs equal native tract's within
# 1e-5, bad input gets 4xx, the model loads once per instance, a tampered model is refused,
# a falaj-train model by feature name) and tests/component_native.rs.
#
#   tests/wasm/run.sh            # the tests
#   tests/wasm/run.sh --bench    # and the figures (benches/wasmtime_serve.rs)
#
# Env: FALAJ_WASMTIME, WASMTIME_FULL=1 (see scripts/install-wasmtime.sh), FALAJ_BENCH_REQUESTS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
step() { printf '\n==> %s\n' "$*"; }

step "inference component: build (wasm32-wasip2, release, +simd128)"
bash scripts/wasm-component.sh
export FALAJ_INFERENCE_WASM=$(bash scripts/wasm-component.sh --path)

step "wasmtime-cli 48 in target/tools"
FALAJ_WASMTIME=$(bash scripts/install-wasmtime.sh)
export FALAJ_WASMTIME

step "falaj-train (the trained-model case runs it)"
cargo build --quiet --workspace --bins

step "the component under wasmtime serve, and its API natively (native tract as reference)"
cargo test --workspace --test wasmtime_serve --test component_native -- --nocapture

if [ "${1:-}" = --bench ]; then
  step "figures: cargo bench --profile dev --workspace --bench wasmtime_serve"
  cargo bench --profile dev --workspace --bench wasmtime_serve
fi
