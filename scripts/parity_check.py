#!/usr/bin/env python3
"""Second-runtime check of falaj-train's ONNX files.

    python3 scripts/parity_check.py DIR

DIR holds one sub-directory per case, each with `model.onnx` and `case.json`:

    {"rows": R, "features": F, "outputs": O, "tolerance": 1e-5, "unit": 1.0,
     "inputs": [R*F floats, row-major], "expected": [R*O floats, burn's outputs]}

Differences are measured in `unit`s (max |Δ| / max(1, unit) <= tolerance): 1 for class
probabilities and standardised outputs; the target's standard deviation for regression
outputs in target units, where f32 cannot resolve 1e-5 (one f32 step at 150 is 1.5e-5).

For every case this runs `onnx.checker.check_model(model, full_check=True)`, checks the
signature (input `input` float[batch, F], output `output` float[batch, O], batch symbolic),
runs the model in onnxruntime and compares with burn's outputs. Exit status 0 only if every
case passes; a missing `onnx` or `onnxruntime` is a failure (exit 2), never a skip.
"""

import json
import os
import sys

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
except ImportError as e:  # the Rust test shows this message
    print(
        f"parity_check: cannot import {e.name!r}: run `pip install onnx onnxruntime` "
        "(CI installs them) and retry",
        file=sys.stderr,
    )
    sys.exit(2)


def dims(value_info):
    out = []
    for d in value_info.type.tensor_type.shape.dim:
        out.append(d.dim_param if d.HasField("dim_param") else d.dim_value)
    return out


def check_case(path):
    with open(os.path.join(path, "case.json")) as f:
        case = json.load(f)
    rows, features, outputs = case["rows"], case["features"], case["outputs"]
    unit = max(1.0, float(case.get("unit", 1.0)))
    model_path = os.path.join(path, "model.onnx")
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)

    graph = model.graph
    problems = []
    if [i.name for i in graph.input] != ["input"] or [o.name for o in graph.output] != ["output"]:
        problems.append(f"names: inputs {[i.name for i in graph.input]}, outputs {[o.name for o in graph.output]}")
    in_dims, out_dims = dims(graph.input[0]), dims(graph.output[0])
    if not isinstance(in_dims[0], str) or in_dims[1:] != [features]:
        problems.append(f"input shape {in_dims}, expected [batch, {features}]")
    if not isinstance(out_dims[0], str) or out_dims[1:] != [outputs]:
        problems.append(f"output shape {out_dims}, expected [batch, {outputs}]")
    if graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        problems.append("input is not float32")

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    x = np.asarray(case["inputs"], dtype=np.float32).reshape(rows, features)
    (got,) = session.run(["output"], {"input": x})
    expected = np.asarray(case["expected"], dtype=np.float32).reshape(rows, outputs)
    if got.shape != expected.shape:
        problems.append(f"onnxruntime output shape {got.shape}, burn {expected.shape}")
        diff = float("inf")
    else:
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) / unit
        if not np.all(np.isfinite(got)) or diff > case["tolerance"]:
            problems.append(f"max |onnxruntime - burn| = {diff:.3e} (in units of {unit:g}) > {case['tolerance']:.0e}")
    return diff, unit, problems


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = sys.argv[1]
    cases = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "case.json")))
    if not cases:
        print(f"parity_check: no cases (sub-directories with case.json) in {root}", file=sys.stderr)
        return 1
    failed = 0
    for name in cases:
        try:
            diff, unit, problems = check_case(os.path.join(root, name))
        except Exception as e:  # checker or runtime refused the model
            diff, unit, problems = float("nan"), 1.0, [f"{type(e).__name__}: {e}"]
        status = "ok" if not problems else "FAIL"
        failed += bool(problems)
        print(f"{status:4} {name}: checker (full_check) and onnxruntime, max |onnxruntime - burn| = {diff:.3e} (in units of {unit:g})")
        for p in problems:
            print(f"     {p}")
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}: {len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
