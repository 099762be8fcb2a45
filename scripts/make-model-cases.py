#!/usr/bin/env python3
"""Writes tests/fixtures/models/: the model cases every runner of a model must agree on.

Each case is a directory with model.onnx, manifest.json (a falaj training manifest),
inputs.json ({"rows": [[raw features]...]}) and expected.json ({"outputs": [[...]...]}): what
onnxruntime (an implementation we did not write) computes for those rows, after the
preprocessing the manifest asks of the edge. cases.json lists the cases and the one tolerance
the runners use: the gates' loaded model (crates/gates/tests/cases.rs), the inference
component's API natively and the component under wasmtime (infra/edge-node/tests/cases.rs).

Run once to (re)make the fixtures; the files are committed:
    target/py/bin/python scripts/make-model-cases.py [path/to/falaj-train]
"""
import csv
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/models"
TOLERANCE = 1e-5


def mlp(n, hidden, k, seed, softmax):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.6, (n, hidden)).astype(np.float32)
    b1 = rng.normal(0, 0.1, hidden).astype(np.float32)
    w2 = rng.normal(0, 0.6, (hidden, k)).astype(np.float32)
    b2 = rng.normal(0, 0.1, k).astype(np.float32)
    inits = [numpy_helper.from_array(a, name) for a, name in
             [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]]
    out = "probabilities" if softmax else "value"
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits" if softmax else out]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], [out], axis=1))
    graph = helper.make_graph(
        nodes, "case",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", k])],
        inits)
    model = helper.make_model(graph, producer_name="falaj-model-cases",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def manifest(name, task, features, classes, standardization):
    m = {"model": name, "run_id": "model-cases", "task": task, "target": "y",
         "features": features, "classes": classes}
    if standardization is not None:
        m["standardization"] = standardization
    return m


def preprocess(m, x):
    st = m.get("standardization")
    if not st or st["folded_into_graph"]:
        return x
    mean = np.array(st["mean"], dtype=np.float32)
    std = np.array([s if s != 0 else 1.0 for s in st["std"]], dtype=np.float32)
    return (x - mean) / std


def write_case(name, onnx_bytes, m, rows, about):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(onnx_bytes)
    (d / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    x = np.asarray(rows, dtype=np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: preprocess(m, x)})[0]
    (d / "inputs.json").write_text(json.dumps({"rows": x.tolist()}) + "\n")
    (d / "expected.json").write_text(json.dumps(
        {"outputs": out.astype(np.float32).tolist(), "by": f"onnxruntime {ort.__version__}"}) + "\n")
    return {"name": name, "about": about}


def main():
    cases = []
    rng = np.random.default_rng(11)
    n, k = 5, 3
    feats = [f"f{i}" for i in range(n)]
    mean = [10.0, -3.0, 0.5, 100.0, 7.0]
    std = [2.0, 0.5, 1.0, 25.0, 3.0]
    raw = (rng.normal(0, 1, (12, n)) * std + mean).astype(np.float32)
    graph = mlp(n, 8, k, 3, softmax=True)
    cases.append(write_case(
        "mlp-folded", graph,
        manifest("mlp-folded", "classification", feats, ["a", "b", "c"],
                 {"mean": mean, "std": std, "folded_into_graph": True}),
        raw, "MLP classifier whose standardisation is folded into the graph: raw rows in"))
    cases.append(write_case(
        "mlp-unfolded", graph,
        manifest("mlp-unfolded", "classification", feats, ["a", "b", "c"],
                 {"mean": mean, "std": std, "folded_into_graph": False}),
        raw, "the same graph with folded_into_graph: false: every runner standardises first"))
    cases.append(write_case(
        "mlp-regression", mlp(n, 6, 1, 5, softmax=False),
        manifest("mlp-regression", "regression", feats, [], None),
        raw, "MLP regressor, one output, no standardisation"))

    train = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if train is not None:
        with tempfile.TemporaryDirectory() as t:
            subprocess.run([str(train), "--data", str(ROOT / "tests/fixtures/datasets/breast_cancer.csv"),
                            "--target", "diagnosis", "--model", "falaj-train-mlp", "--hidden", "16,8",
                            "--epochs", "3", "--seed", "7", "--no-upload", "--out", t],
                           check=True, stdout=subprocess.DEVNULL)
            onnx_bytes = pathlib.Path(t, "model.onnx").read_bytes()
            m = json.loads(pathlib.Path(t, "manifest.json").read_text())
        with open(ROOT / "tests/fixtures/datasets/breast_cancer.csv") as f:
            rows = list(csv.DictReader(f))[:16]
        x = [[float(r[c]) for c in m["features"]] for r in rows]
        cases.append(write_case("falaj-train-mlp", onnx_bytes, m, x,
                                "the trainer's MLP on breast_cancer.csv (falaj-train --hidden 16,8 --epochs 3 --seed 7)"))
    else:
        prev = json.loads((OUT / "cases.json").read_text())["cases"] if (OUT / "cases.json").exists() else []
        cases += [c for c in prev if c["name"] == "falaj-train-mlp"]

    (OUT / "cases.json").write_text(json.dumps(
        {"tolerance": TOLERANCE,
         "tolerance_is": "absolute, per output value, against expected.json (onnxruntime)",
         "cases": cases}, indent=2) + "\n")


if __name__ == "__main__":
    main()
