#!/usr/bin/env python3
"""Baseline for `cargo bench -p falaj --bench gates`: the same gate evaluation in onnxruntime.

Usage: bench_gates_ort.py MODEL.onnx HOLDOUT.csv MANIFEST.json [BATCH]

Reads the holdout once (not timed, like the tract figure "from parsed rows"), then times
inference in batches of BATCH rows (default 8192, as falaj-gates) plus accuracy, precision,
recall, F1 and ROC-AUC in numpy. Prints one JSON line: rows, seconds, rows_per_s (best of 5),
and the parse time separately.
"""
import csv
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def auc(scores, pos):
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j + 2) / 2.0
        i = j + 1
    p = pos[order]
    npos = p.sum()
    nneg = len(p) - npos
    return (ranks[p].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def main():
    model, holdout, manifest = sys.argv[1:4]
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 8192
    m = json.load(open(manifest))
    t0 = time.perf_counter()
    with open(holdout) as f:
        r = csv.reader(f)
        header = next(r)
        fi = [header.index(c) for c in m["features"]]
        ti = header.index(m["target"])
        rows = list(r)
    x = np.array([[float(row[i]) for i in fi] for row in rows], dtype=np.float32)
    y = np.array([m["classes"].index(row[ti]) for row in rows])
    parse_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    best = None
    for _ in range(5):
        t = time.perf_counter()
        outs = [sess.run(None, {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
        probs = np.concatenate(outs)
        pred = probs.argmax(1)
        pos_c = len(m["classes"]) - 1
        acc = (pred == y).mean()
        tp = ((pred == pos_c) & (y == pos_c)).sum()
        prec = tp / max((pred == pos_c).sum(), 1)
        rec = tp / max((y == pos_c).sum(), 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-12)
        a = auc(probs[:, pos_c].astype(np.float64), y == pos_c)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    print(json.dumps({
        "engine": f"onnxruntime {ort.__version__}",
        "rows": len(x),
        "seconds": best,
        "rows_per_s": len(x) / best,
        "parse_seconds": parse_s,
        "accuracy": float(acc),
        "f1": float(f1),
        "roc_auc": float(a),
    }))


if __name__ == "__main__":
    main()
