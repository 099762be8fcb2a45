#!/usr/bin/env bash
# Edge benchmark (docs/benchmarks.md): native tract vs the component in falaj-edge vs
# onnxruntime on the same files — the trainer's MLP (breast cancer, 30-64-32-2), two CNNs
# with torchvision's layer shapes (MobileNetV2, ResNet-18; scripts/bench/make_cnns.py), and the
# torchvision exports of tests/fixtures/models (squeezenet, MobileNetV3-small, ShuffleNetV2).
# Needs target/py (scripts/test.sh makes it: onnx, onnxruntime). Dev profile on purpose: it
# shares the test build, and the root Cargo.toml builds dependencies there without debug
# assertions, with tract at opt-level 3 as in the component, so native tract is a fair baseline.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
models="$root/target/bench-edge/models"
mkdir -p "$models"
bash scripts/wasm-component.sh
cargo build --quiet --workspace --bins  # the workspace feature set, shared with the tests
out="$root/target/bench-edge/mlp"
"${CARGO_TARGET_DIR:-$root/target}"/debug/falaj-train --data tests/fixtures/datasets/breast_cancer.csv --target diagnosis \
  --model breast-cancer --hidden 64,32 --epochs 5 --seed 7 --out "$out" --no-upload >"$out.log" 2>&1 \
  || { cat "$out.log" >&2; exit 1; }
cp "$out/model.onnx" "$models/breast_cancer.onnx"
cp "$out/manifest.json" "$models/breast_cancer.manifest.json"
target/py/bin/python scripts/bench/make_cnns.py "$models"
# The real torchvision exports of the bring-your-own-model cases (random weights, 3x32x32),
# served with raw f32 bodies.
for c in squeezenet mobilenet-v3-small shufflenet-v2; do
  cp "tests/fixtures/models/torchvision-$c/model.onnx" "$models/tv_${c//-/_}.onnx"
done
cargo bench --profile dev --workspace --bench edge
