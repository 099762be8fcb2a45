#!/usr/bin/env bash
# Gates on an image holdout: `falaj validate` on 1,000 images against onnxruntime scoring the
# same .npz in Python with one thread, same model (tests/fixtures/models/torchvision-*), same
# machine, one run each after a warm-up. Prints images/s and the ratio; docs/benchmarks.md
# keeps the figures.
#   bash scripts/bench-image-gates.sh [torchvision-squeezenet]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
case=${1:-torchvision-squeezenet}
py=${PY:-$root/target/py/bin/python}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --quiet --release -p falaj-cli --bin falaj
falaj=$CARGO_TARGET_DIR/release/falaj
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=$root/tests/fixtures/models/$case/model.onnx
"$py" - "$model" "$tmp/h.npz" <<'PY'
import sys, numpy as np, onnxruntime as ort
model, out = sys.argv[1], sys.argv[2]
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
shape = [d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape][1:]
x = np.random.default_rng(1).normal(0, 1, [1000] + shape).astype(np.float32)
y = np.arange(1000) % 10
np.savez(out, x=x, y=y.astype(np.int64))
PY
S=(--store "dir://$tmp/s" --as bench)
"$falaj" "${S[@]}" roles grant bench admin >/dev/null 2>&1
"$falaj" "${S[@]}" model create cnn >/dev/null 2>&1
printf '[metrics]\ntop1_accuracy = { min = 0.0 }\n[edge]\ncheck_ops = true\n' > "$tmp/p.toml"
"$falaj" "${S[@]}" policy set cnn "$tmp/p.toml" >/dev/null 2>&1
"$falaj" "${S[@]}" push cnn "$model" --holdout "$tmp/h.npz" >/dev/null 2>&1
# Warm-up (page cache), then the timed run.
"$falaj" "${S[@]}" --json validate cnn@1 --data "$tmp/h.npz" >/dev/null 2>&1 || true
t0=$(date +%s.%N)
"$falaj" "${S[@]}" --json validate cnn@1 --data "$tmp/h.npz" >/dev/null 2>&1 || true
t1=$(date +%s.%N)
falaj_s=$(echo "$t1 - $t0" | bc -l)
ort_s=$("$py" - "$model" "$tmp/h.npz" <<'PY'
import sys, time, numpy as np, onnxruntime as ort
model, npz = sys.argv[1], sys.argv[2]
def run():
    t = time.perf_counter()
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
    d = np.load(npz); x, y = d["x"], d["y"]
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i:i + 64]})[0].argmax(1) for i in range(0, len(x), 64)])
    (pred == y).mean()
    return time.perf_counter() - t
run()
print(run())
PY
)
echo "case $case, 1000 images"
printf 'falaj validate (end to end: load, parse, score, report)  %8.2f s  %8.1f images/s\n' "$falaj_s" "$(echo "1000 / $falaj_s" | bc -l)"
printf 'onnxruntime 1 thread (load, read .npz, score, accuracy)   %8.2f s  %8.1f images/s\n' "$ort_s" "$(echo "1000 / $ort_s" | bc -l)"
printf 'ratio falaj / onnxruntime: %.2fx the time\n' "$(echo "$falaj_s / $ort_s" | bc -l)"
