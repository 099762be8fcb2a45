#!/usr/bin/env bash
# The main job on the embedded default (dir://.falaj, no cloud account):
# train on a real dataset with burn (CPU) → export ONNX → register an immutable version →
# gates on a holdout the trainer never saw → staging → two approvals → production (a canary
# when a production version exists, stepped to 100%) → signed deployment manifest → verify
# the edge: falaj-edge pulls, verifies and serves the WASM component → predictions over HTTP →
# shifted traffic → drift detected from the edge's sketches → retraining request → retrain
# on the new data → the new version through the gates → audit chain verified.
# Re-running adds new versions; --clean starts from an empty store.
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

step "build falaj, falaj-train and falaj-edge (first time: several minutes on 2 cores)"
cargo build --quiet --workspace --bins  # same feature set as scripts/test.sh: no second build
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

step "edge: the inference component (wasm32-wasip2 + SIMD; first build ~15 min on 2 cores)"
bash scripts/wasm-component.sh
edge_log=target/demo/edge.log
edge_cache=target/demo/edge-cache
rm -f target/demo/edge.out  # a stale line from a previous run would be read as this one's
$bin/falaj-edge --env prod --listen 127.0.0.1:0 --cache "$edge_cache" --node demo-node \
  --poll-ms 200 --sketch-secs 1 >target/demo/edge.out 2>"$edge_log" &
edge_pid=$!
trap 'kill $edge_pid 2>/dev/null || true' EXIT
# The first start compiles the component with cranelift (30-60 s on 2 cores), then caches it.
for i in $(seq 1 3000); do
  [ -s target/demo/edge.out ] && break
  kill -0 $edge_pid 2>/dev/null || { cat "$edge_log" >&2; echo "falaj-edge exited" >&2; exit 1; }
  [ $((i % 100)) = 0 ] && echo "  falaj-edge is compiling the component... ($((i / 5)) s)"
  sleep 0.2
done
[ -s target/demo/edge.out ] || { cat "$edge_log" >&2; echo "falaj-edge did not start in 10 min" >&2; exit 1; }
edge=$(python3 -c 'import json; print(json.loads(open("target/demo/edge.out").readline())["listening"])')
echo "falaj-edge (pid $edge_pid) on http://$edge, log $edge_log"

step "falaj-edge pulls deployments/prod/$model.json, verifies signature and digests, warms the version up"
python3 - "$edge" "$model" <<'PY'
import json, sys, time, urllib.request
edge, model = sys.argv[1:]
for _ in range(600):
    models = json.load(urllib.request.urlopen(f"http://{edge}/v1/models"))["models"]
    m = next((m for m in models if m["model"] == model and m.get("generation")), None)
    if m:
        print(f"serving {model}: generation {m['generation']}, champion v{m['champion']}, swapped in {m['apply_ms']} ms after the manifest was seen")
        break
    time.sleep(0.2)
else:
    sys.exit(f"falaj-edge never served {model}: see target/demo/edge.log")
PY

step "sample predictions over HTTP (rows by feature name, from the holdout)"
python3 scripts/demo_traffic.py "$edge" "$model" "$out/holdout.csv" --rows 5 --show

step "shifted traffic: 400 rows whose size features are 1.6x larger (a new scanner calibration)"
python3 scripts/demo_traffic.py "$edge" "$model" "$out/train.csv" --rows 400 --scale 1.6 \
  --write-labelled "$out/shifted.csv"
kill -TERM $edge_pid; wait $edge_pid 2>/dev/null || true; trap - EXIT
echo "falaj-edge stopped; its last input sketches are in telemetry/prod/demo-node/$model/"

step "drift check: the edge's sketches against the training distribution (PSI per feature)"
$falaj drift "$model" --env prod
request=$(ls -1 "${FALAJ_STORE#dir://}/retrain/$model/" 2>/dev/null | tail -1)
[ -n "$request" ] || { echo "no retraining request was written" >&2; exit 1; }
echo "retraining request: retrain/$model/$request"

step "retrain on the training data plus the labelled shifted rows (what the request starts)"
retrain=target/demo/$model-retrain
mkdir -p "$retrain"
{ cat "$out/train.csv"; tail -n +2 "$out/shifted.csv"; } > "$retrain/train.csv"
$train --data "$retrain/train.csv" --target diagnosis --model "$model" --hidden 32,16 --epochs "$epochs" --seed 8 --out "$retrain"
$falaj --as dana push "$model" "$retrain/model.onnx" --manifest "$retrain/manifest.json"
n2=$($falaj --json show "$model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"]["version"])')

step "the retrained $model@$n2 goes through the same gates"
$falaj --as dana validate "$model@$n2" --data "$out/holdout.csv" || echo "(gates refused $model@$n2: it stays out of staging)"

step "verify the audit chain"
$falaj audit "$model" --verify

step "done"
cat <<MSG
  versions:      $falaj versions $model
  gate report:   $falaj show $model@$n
  deployments:   $falaj deployments
  edge:          $bin/falaj-edge --env prod   (then curl localhost:8090/v1/models)
  drift:         $falaj drift $model --env prod     request: retrain/$model/
  lineage:       $falaj show $model@$n
  audit log:     $falaj audit $model
  training plot: $out/training_curve.png    metrics: $out/metrics.json
  raw store:     ${FALAJ_STORE#dir://}/ (models/, blobs/, audit/, incoming/)
MSG
