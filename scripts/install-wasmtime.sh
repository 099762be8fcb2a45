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
# The features a cached install was built with are kept beside it: a change to the list (wasi-nn
# was added for the component's wasi:nn build) installs again.
want=$(cat "$root/tests/wasm/wasmtime-features")
[ "${WASMTIME_FULL:-}" = 1 ] && want=default
stamp="$tools/wasmtime-features"
if ! "$wasmtime" --version 2>/dev/null | grep -q '^wasmtime 48\.' \
  || { [ -z "${FALAJ_WASMTIME:-}" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; }; then
  if [ -n "${FALAJ_WASMTIME:-}" ]; then
    echo "install-wasmtime: FALAJ_WASMTIME=$FALAJ_WASMTIME is not wasmtime 48" >&2
    exit 1
  fi
  # serve + cranelift + the component model (sync and async) + wasi-http + the code cache:
  # what `wasmtime serve -Sp3` needs; and wasi-nn, so the component's wasi:nn build is
  # tested under a host that offers it (`-S nn`).
  features=(--no-default-features --features "$want")
  [ "${WASMTIME_FULL:-}" = 1 ] && features=()
  echo "installing wasmtime-cli 48 into $tools (${features[*]:-default features})" >&2
  cargo install wasmtime-cli --version '^48' --locked --quiet --force --root "$tools" "${features[@]}" >&2
  mkdir -p "$tools"
  echo "$want" >"$stamp"
fi
"$wasmtime" --version >&2
echo "$wasmtime"
