#!/usr/bin/env bash
# The main job on the embedded default (dir://.falaj, no cloud account):
# train on a real dataset with burn (CPU) → export ONNX → upload to incoming/ → register an
# immutable version → move the staging alias by compare-and-swap → verify the audit chain.
# Re-running adds a new version; --clean starts from an empty store.
# (Gates, approvals, the edge and drift join this flow as their issues land; see README.)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export FALAJ_STORE=${FALAJ_STORE:-dir://.falaj}
model=${FALAJ_DEMO_MODEL:-breast-cancer}
data=tests/fixtures/datasets/breast_cancer.csv
epochs=${FALAJ_DEMO_EPOCHS:-30}

if [ "${1:-}" = "--clean" ]; then
  case "$FALAJ_STORE" in dir://*) rm -rf "${FALAJ_STORE#dir://}"; echo "cleaned ${FALAJ_STORE}";; esac
fi

t0=$(date +%s%N)
step() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '\n[%4d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"; }

step "build falaj and falaj-train (first time: several minutes on 2 cores)"
cargo build --quiet -p falaj -p falaj-train
bin=${CARGO_TARGET_DIR:-target}/debug
falaj=$bin/falaj
train=$bin/falaj-train

step "model $model in $FALAJ_STORE"
if ! $falaj model show "$model" >/dev/null 2>&1; then
  $falaj model create "$model" --owner demo --description "Wisconsin breast cancer classifier (scikit-learn's bundled copy)"
else
  echo "model $model exists; adding a new version"
fi

out=target/demo/$model
step "train: $data, target 'diagnosis', MLP 32-16 ReLU, $epochs epochs, seed 7 (burn, CPU)"
$train --data "$data" --target diagnosis --model "$model" --hidden 32,16 --epochs "$epochs" --seed 7 --out "$out"

step "register the version from $out (model.onnx + manifest.json)"
$falaj push "$model" "$out/model.onnx" --manifest "$out/manifest.json"
n=$($falaj --json show "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"]["version"])')

step "move staging to version $n (compare-and-swap on the alias)"
$falaj alias set "$model" staging "$n"
$falaj show "$model@staging"

step "verify the audit chain"
$falaj audit "$model" --verify

step "done"
cat <<MSG
  versions:      $falaj versions $model
  lineage:       $falaj show $model@$n
  audit log:     $falaj audit $model
  training plot: $out/training_curve.png    metrics: $out/metrics.json
  raw store:     ${FALAJ_STORE#dir://}/ (models/, blobs/, audit/, incoming/)
MSG
