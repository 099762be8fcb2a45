#!/usr/bin/env bash
# Makes sure wasmtime-cli 48 (the host we did not write, for the component's tests under
# `wasmtime serve`) is in target/tools/bin, installing it once with the reduced feature set in
# tests/wasm/wasmtime-features (about 1,340 CPU-s on 2 cores; see docs/edge.md). Prints the
# path of the binary on its last line.
#
# Env: FALAJ_WASMTIME (a wasmtime 48 to use instead), WASMTIME_FULL=1 (default features),
# FALAJ_TOOLS_DIR (where to install, default target/tools).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="${FALAJ_TOOLS_DIR:-$root/target/tools}"
wasmtime=${FALAJ_WASMTIME:-$tools/bin/wasmtime}
if ! "$wasmtime" --version 2>/dev/null | grep -q '^wasmtime 48\.'; then
  if [ -n "${FALAJ_WASMTIME:-}" ]; then
    echo "install-wasmtime: FALAJ_WASMTIME=$FALAJ_WASMTIME is not wasmtime 48" >&2
    exit 1
  fi
  # serve + cranelift + the component model (sync and async) + wasi-http + the code cache:
  # what `wasmtime serve -Sp3` needs.
  features=(--no-default-features --features "$(cat "$root/tests/wasm/wasmtime-features")")
  [ "${WASMTIME_FULL:-}" = 1 ] && features=()
  echo "installing wasmtime-cli 48 into $tools (one time; ${features[*]:-default features})" >&2
  cargo install wasmtime-cli --version '^48' --locked --quiet --root "$tools" "${features[@]}" >&2
fi
"$wasmtime" --version >&2
echo "$wasmtime"
