#!/usr/bin/env bash
# The main job on the embedded default (dir://.falaj, no cloud account):
# train on a real dataset with burn (CPU) → export ONNX → register an immutable version →
# gates on a holdout the trainer never saw → staging → two approvals → production (a canary
# when a production version exists, stepped to 100%) → signed deployment manifest → verify
# the audit chain. Re-running adds a new version; --clean starts from an empty store.
# (The ingest path, the edge and drift join this flow as their issues land; see README.)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export FALAJ_STORE=${FALAJ_STORE:-dir://.falaj}
model=${FALAJ_DEMO_MODEL:-breast-cancer}
data=tests/fixtures/datasets/breast_cancer.csv
policy=tests/fixtures/policies/breast_cancer.toml
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

step "roles: platform (admin), dana (data-scientist), mel (ml-engineer), ann and bob (approvers)"
# The first grant in a store makes the caller admin; later runs re-grant as that admin.
$falaj --as platform roles grant platform admin >/dev/null
for who_role in dana:data-scientist mel:ml-engineer ann:approver bob:approver; do
  $falaj --as platform roles grant "${who_role%%:*}" "${who_role#*:}" >/dev/null
done
$falaj roles list

step "model $model in $FALAJ_STORE, gate policy $policy"
if ! $falaj model show "$model" >/dev/null 2>&1; then
  $falaj --as dana model create "$model" --owner demo --description "Wisconsin breast cancer classifier (scikit-learn's bundled copy)"
else
  echo "model $model exists; adding a new version"
fi
$falaj --as mel policy set "$model" "$policy"

out=target/demo/$model
mkdir -p "$out"
step "split $data: every 5th row is the holdout the gates use, the rest is for training"
awk 'NR == 1 || (NR - 2) % 5 != 0' "$data" > "$out/train.csv"
awk 'NR == 1 || (NR - 2) % 5 == 0' "$data" > "$out/holdout.csv"
echo "train $(($(wc -l < "$out/train.csv") - 1)) rows, holdout $(($(wc -l < "$out/holdout.csv") - 1)) rows"

step "train: target 'diagnosis', MLP 32-16 ReLU, $epochs epochs, seed 7 (burn, CPU)"
$train --data "$out/train.csv" --target diagnosis --model "$model" --hidden 32,16 --epochs "$epochs" --seed 7 --out "$out"

step "register the version from $out (model.onnx + manifest.json) as dana"
$falaj --as dana push "$model" "$out/model.onnx" --manifest "$out/manifest.json"
n=$($falaj --json show "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"]["version"])')

step "gates for $model@$n on the holdout (metrics, robustness, latency, size, edge ops, residency, no regression)"
$falaj --as dana validate "$model@$n" --data "$out/holdout.csv"

step "promote $model@$n to staging (gates passed) as mel"
$falaj --as mel promote "$model@$n" --to staging

step "two approvers who are not the author approve $model@$n for production"
$falaj --as ann approve "$model@$n" --to production
$falaj --as bob approve "$model@$n" --to production

has_production=$($falaj --json alias list "$model" | python3 -c 'import json,sys; print(any(a["alias"] == "production" and a.get("version") for a in json.load(sys.stdin)))')
if [ "$has_production" = True ]; then
  step "production exists: $model@$n goes out as a 20% canary, then is rolled out to 100%"
  $falaj --as mel promote "$model@$n" --to production --canary 20
  $falaj --as mel rollout "$model" --env prod --weight 100
else
  step "promote $model@$n to production (first production version)"
  $falaj --as mel promote "$model@$n" --to production
fi

step "signed deployment manifests (what the edge fleet pulls)"
$falaj deployments

step "verify the audit chain"
$falaj audit "$model" --verify

step "done"
cat <<MSG
  versions:      $falaj versions $model
  gate report:   $falaj show $model@$n
  deployments:   $falaj deployments
  lineage:       $falaj show $model@$n
  audit log:     $falaj audit $model
  training plot: $out/training_curve.png    metrics: $out/metrics.json
  raw store:     ${FALAJ_STORE#dir://}/ (models/, blobs/, audit/, incoming/)
MSG
