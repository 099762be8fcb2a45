#!/usr/bin/env bash
# The test command: installs what the tests need, starts a real S3-compatible server on
# loopback, then runs formatting, lints, the wasm build of falaj-core, every test, and the
# Terraform checks. Works on a fresh machine with Rust and Python 3; CI runs exactly this.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
step() { printf '\n==> %s\n' "$*"; }

step "toolchain: rustfmt, clippy, wasm32-wasip2"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-wasip2 >/dev/null

step "python tools (moto S3 server, onnx, onnxruntime, the MLflow client) in target/py"
venv="$root/target/py"
if ! "$venv/bin/python" -c 'import moto, onnx, onnxruntime, mlflow, pandas' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet 'moto[server]>=5' 'onnx>=1.16' 'onnxruntime>=1.18' numpy \
    'mlflow-skinny>=3.18,<4' pandas
fi
export PATH="$venv/bin:$PATH"

step "S3: moto_server on loopback"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >"$root/target/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break
  sleep 0.2
done
export FALAJ_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=falaj-test AWS_SECRET_ACCESS_KEY=falaj-test AWS_REGION=me-central-1
echo "moto_server at $FALAJ_TEST_S3_ENDPOINT"

step "cargo fmt --check"
cargo fmt --all --check
(cd wasm-modules/inference && cargo fmt --check)

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "crate layering: every arrow points down; what each binary links"
bash scripts/check-layers.sh

step "falaj-core builds for wasm32-wasip2"
cargo build --quiet -p falaj-core --target wasm32-wasip2

step "inference component (wasm32-wasip2, release, SIMD): falaj-edge's tests serve it"
bash scripts/wasm-component.sh

step "wasmtime-cli 48 (the component's tests under a host we did not write)"
FALAJ_WASMTIME=$(bash scripts/install-wasmtime.sh)
FALAJ_INFERENCE_WASM=$(bash scripts/wasm-component.sh --path)
export FALAJ_WASMTIME FALAJ_INFERENCE_WASM

step "Chromium and chromedriver (the console's tests drive a real browser)"
if ! command -v "${FALAJ_CHROMEDRIVER:-chromedriver}" >/dev/null 2>&1 || ! [ -x "${FALAJ_CHROMIUM:-/usr/bin/chromium}" ]; then
  as_root=""; [ "$(id -u)" = 0 ] || as_root="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $as_root apt-get update -qq >/dev/null
  $as_root apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
"${FALAJ_CHROMEDRIVER:-chromedriver}" --version

step "cargo build --workspace --bins (the function tests run the real binaries)"
cargo build --quiet --workspace --bins

step "cargo test --workspace"
cargo test --workspace --no-fail-fast

step "the main job end to end (falaj demo via scripts/demo.sh on its own dir:// store), checked in the store"
# Three runs: a fresh store, a re-run (the new version goes out as a canary), and --clean.
demo_store="$root/target/ci-demo/store"
rm -rf "$root/target/ci-demo"
demo() {
  FALAJ_STORE="dir://$demo_store" FALAJ_EDGE_CODE_CACHE="$root/target/edge-tests/code-cache" \
    bash scripts/demo.sh --work-dir "$root/target/ci-demo/work" "$@" >"$root/target/ci-demo.log" 2>&1 \
    || { tail -60 "$root/target/ci-demo.log"; exit 1; }
  grep '^done in' "$root/target/ci-demo.log"
}
demo
python3 scripts/check-demo.py "$demo_store" breast-cancer 1
demo --epochs 20
python3 scripts/check-demo.py "$demo_store" breast-cancer 2
# The console on that store, in headless Chromium: the pages show what the demo did, and an
# approver approves the staged version from its page (the next run starts clean).
python3 scripts/check-console.py "${CARGO_TARGET_DIR:-$root/target}/debug/falaj" "$demo_store" breast-cancer 3 4
demo --clean
python3 scripts/check-demo.py "$demo_store" breast-cancer 1

step "the bring-your-own-model recipes of docs/bring-your-model.md, as written (PyTorch, scikit-learn, torchvision)"
# The real exporters from PyPI, in a venv of their own (torch is large: kept between runs when
# FALAJ_RECIPES_VENV points outside the clone, as .ci/run does).
recipes="${FALAJ_RECIPES_VENV:-$root/target/py-recipes}"
if ! "$recipes/bin/python" -c 'import torch, torchvision, sklearn, skl2onnx, onnx' 2>/dev/null; then
  python3 -m venv "$recipes"
  "$recipes/bin/pip" install --quiet --no-cache-dir --upgrade pip
  "$recipes/bin/pip" install --quiet --no-cache-dir torch==2.15.0 torchvision==0.29.2 \
    scikit-learn==1.9.1 skl2onnx==1.20.0 onnx==1.23.2 numpy
fi
"$recipes/bin/python" scripts/run-doc-recipes.py "${CARGO_TARGET_DIR:-$root/target}/debug/falaj"

step "residency check of terraform/"
# The binary built above (`cargo run -p falaj-cli` would resolve dependency features for that
# package alone and rebuild much of the tree).
"${CARGO_TARGET_DIR:-$root/target}/debug/falaj" residency check terraform/

step "terraform: HCL parse + checkov"
bash scripts/check-terraform.sh
