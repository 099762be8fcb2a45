"""Times onnxruntime (CPU) on one model, single requests, as the edge benchmark's baseline.

    python ort_time.py MODEL.onnx ITEM_SHAPE(comma-separated) N THREADS

Prints one JSON line: load_ms, p50_ms, p99_ms, n, threads, version.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

path, shape, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
item = [int(d) for d in shape.split(",")]
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
t0 = time.perf_counter()
sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
load_ms = (time.perf_counter() - t0) * 1000
name = sess.get_inputs()[0].name
x = np.random.default_rng(7).random([1] + item, dtype=np.float32)
for _ in range(3):
    sess.run(None, {name: x})
times = []
for _ in range(n):
    t = time.perf_counter()
    sess.run(None, {name: x})
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(json.dumps({
    "load_ms": load_ms,
    "p50_ms": times[len(times) // 2],
    "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
    "n": n,
    "threads": threads,
    "version": ort.__version__,
}))
