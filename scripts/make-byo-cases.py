#!/usr/bin/env python3
"""Writes the bring-your-own-model cases into tests/fixtures/models/: models trained and
exported by the real exporters, not built by hand, with the manifest `falaj manifest init`
writes for them (no hand-written JSON), the rows to run and onnxruntime's outputs.

- pytorch-mlp: a PyTorch MLP on breast_cancer.csv (standardisation inside the module, so the
  graph takes raw features), trained with a fixed seed and exported by torch.onnx.export.
- sklearn-forest: a scikit-learn random forest exported by skl2onnx (zipmap off): a label and
  the probabilities, `ai.onnx.ml` TreeEnsembleClassifier, which tract runs when the classes are
  integer codes (fitted on LabelEncoder codes; tract refuses string class labels).
- torchvision-squeezenet, torchvision-mobilenet-v3-small, torchvision-shufflenet-v2:
  torchvision's squeezenet1_1, mobilenet_v3_small and shufflenet_v2_x0_5 with random weights
  (seeded), 10 classes, 3x32x32 images, exported by torch.onnx.export, each with an .npz image
  holdout of 32 random images labelled with onnxruntime's own top class for 24 of them and
  another class for 8 (so top-1 accuracy is 0.75 exactly); squeezenet with a PNG body too.
- tests/fixtures/models-unsupported/sklearn-logreg.onnx: StandardScaler + LogisticRegression
  by skl2onnx, whose `ai.onnx.ml` Scaler and LinearClassifier the edge-ops gate must name.

The recipe is the one docs/bring-your-model.md gives. The files are committed; CI uses them
(it does not install torch). To remake them:
    python3 -m venv target/py-export
    target/py-export/bin/pip install torch torchvision scikit-learn skl2onnx onnx onnxruntime numpy
    target/py-export/bin/python scripts/make-byo-cases.py target/debug/falaj
"""
import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/models"
DATA = ROOT / "tests/fixtures/datasets/breast_cancer.csv"


def load(path, target):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    features = [c for c in rows[0] if c != target]
    x = np.array([[float(r[c]) for c in features] for r in rows], dtype=np.float32)
    classes = sorted({r[target] for r in rows})
    y = np.array([classes.index(r[target]) for r in rows], dtype=np.int64)
    return x, y, features, classes


class Classifier(torch.nn.Module):
    """Standardises raw features itself, so the exported graph takes what the edge receives."""

    def __init__(self, mean, std, n_in, n_out):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_out))

    def forward(self, x):
        return torch.softmax(self.net((x - self.mean) / self.std), dim=1)


def write_case(d, name, falaj, rows, extra_args=()):
    """The manifest from `falaj manifest init`, the rows, onnxruntime's outputs."""
    subprocess.run([falaj, "manifest", "init", str(d / "model.onnx"), "--model", name,
                    "--holdout", str(DATA), "--target", "diagnosis", *extra_args,
                    "--out", str(d / "manifest.json")],
                   check=True, stdout=subprocess.DEVNULL)
    m = json.loads((d / "manifest.json").read_text())
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    output = m.get("output") or sess.get_outputs()[0].name
    out = sess.run([output], {sess.get_inputs()[0].name: rows})[0]
    (d / "inputs.json").write_text(json.dumps({"rows": rows.tolist()}) + "\n")
    (d / "expected.json").write_text(json.dumps(
        {"outputs": out.astype(np.float32).tolist(), "by": f"onnxruntime {ort.__version__}"}) + "\n")
    return sess, output


def sklearn_cases(falaj):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skl2onnx import to_onnx
    x, y, features, classes = load(DATA, "diagnosis")
    labels = np.array(classes)[y]
    # Integer class labels (a LabelEncoder's codes, in sorted class order): tract runs
    # TreeEnsembleClassifier with classlabels_int64s, not with string labels.
    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(x, y)
    d = OUT / "sklearn-forest"
    d.mkdir(parents=True, exist_ok=True)
    onx = to_onnx(forest, x[:1], options={"zipmap": False},
                  target_opset={"": 17, "ai.onnx.ml": 3})
    (d / "model.onnx").write_bytes(onx.SerializeToString())
    write_case(d, "sklearn-forest", falaj, x[:16], ("--param", "n_estimators=20"))
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, labels)
    bad = ROOT / "tests/fixtures/models-unsupported"
    bad.mkdir(parents=True, exist_ok=True)
    onx = to_onnx(logreg, x[:1], options={"zipmap": False},
                  target_opset={"": 17, "ai.onnx.ml": 3})
    (bad / "sklearn-logreg.onnx").write_bytes(onx.SerializeToString())
    return [{"name": "sklearn-forest",
             "about": "a scikit-learn random forest by skl2onnx (label + probabilities, TreeEnsembleClassifier); manifest by `falaj manifest init`"}]


MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def image_rule(rgb, short, crop, mean, std):
    """falaj_core::image in NumPy, float32 step for step: resize the shorter side to `short`
    (bilinear, half-pixel centres, no antialiasing, rounded half away from zero to uint8),
    centre-crop, scale by 1/255, subtract the mean and divide by the std per channel; CHW."""
    h, w, _ = rgb.shape
    k = short / min(w, h)
    nw, nh = int(np.floor(w * k + 0.5)), int(np.floor(h * k + 0.5))
    f = np.float32
    sx, sy = f(w) / f(nw), f(h) / f(nh)
    out = np.zeros((nh, nw, 3), dtype=np.uint8)
    src = rgb.astype(np.float32)
    for y in range(nh):
        fy = max(f((f(y) + f(0.5)) * sy - f(0.5)), f(0))
        y0 = min(int(np.floor(fy)), h - 1)
        y1 = min(y0 + 1, h - 1)
        wy = f(fy - f(y0))
        for x in range(nw):
            fx = max(f((f(x) + f(0.5)) * sx - f(0.5)), f(0))
            x0 = min(int(np.floor(fx)), w - 1)
            x1 = min(x0 + 1, w - 1)
            wx = f(fx - f(x0))
            top = src[y0, x0] * (f(1) - wx) + src[y0, x1] * wx
            bottom = src[y1, x0] * (f(1) - wx) + src[y1, x1] * wx
            v = top * (f(1) - wy) + bottom * wy
            out[y, x] = np.clip(np.floor(v + f(0.5)), 0, 255).astype(np.uint8)
    ch, cw = crop
    y0, x0 = (nh - ch) // 2, (nw - cw) // 2
    c = out[y0:y0 + ch, x0:x0 + cw].astype(np.float32)
    scale = f(1.0) / f(255.0)
    t = (c * scale - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return t.transpose(2, 0, 1).astype(np.float32)


def write_png(path, rgb):
    import struct
    import zlib
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def torchvision_case(falaj, name, arch, png=False):
    """torchvision `arch` with random weights (seeded), 10 classes, 3x32x32, exported by
    torch.onnx.export; an .npz holdout of 32 random images labelled with onnxruntime's own top
    class for 24 of them and another class for 8; with `png`, a PNG body too."""
    import torchvision
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(d / "model.onnx"),
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=17, dynamo=False)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (32, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    top = sess.run(None, {"input": x})[0].argmax(axis=1)
    y = top.copy()
    y[:8] = (y[:8] + 1) % 10
    np.savez(d / "holdout.npz", x=x, y=y.astype(np.int64))
    subprocess.run([falaj, "manifest", "init", str(d / "model.onnx"), "--model", name,
                    "--holdout", str(d / "holdout.npz"),
                    "--image-resize", "36", "--image-mean", ",".join(map(str, MEAN)),
                    "--image-std", ",".join(map(str, STD)),
                    "--out", str(d / "manifest.json")], check=True, stdout=subprocess.DEVNULL)
    if png:
        # A PNG body for the edge: its tensor by the manifest's rule, onnxruntime's outputs.
        rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        write_png(d / "image.png", rgb)
        t = image_rule(rgb, 36, (32, 32), MEAN, STD)[None]
        (d / "image-expected.json").write_text(json.dumps(
            {"outputs": sess.run(None, {"input": t})[0].astype(np.float32).tolist(),
             "by": f"onnxruntime {ort.__version__} on the tensor scripts/make-byo-cases.py image_rule makes"}) + "\n")
        # A JPEG body: encoded and decoded by Pillow (libjpeg), the reference decoder.
        from PIL import Image
        Image.fromarray(rgb).save(d / "image.jpg", quality=95, subsampling=0)
        decoded = np.asarray(Image.open(d / "image.jpg").convert("RGB"))
        t = image_rule(decoded, 36, (32, 32), MEAN, STD)[None]
        (d / "image-jpeg-expected.json").write_text(json.dumps(
            {"outputs": sess.run(None, {"input": t})[0].astype(np.float32).tolist(),
             "by": f"onnxruntime {ort.__version__} on image_rule of Pillow's decoding"}) + "\n")
    rows = x[:2].reshape(2, -1)
    out = sess.run(None, {"input": x[:2]})[0]
    (d / "inputs.json").write_text(json.dumps({"rows": rows.tolist()}) + "\n")
    (d / "expected.json").write_text(json.dumps(
        {"outputs": out.astype(np.float32).tolist(), "by": f"onnxruntime {ort.__version__}"}) + "\n")
    print(f"{name}: top classes {np.bincount(top, minlength=10).tolist()}")
    return {"name": name,
            "about": f"torchvision {arch}, random weights, 10 classes, 3x32x32, by torch.onnx.export; manifest by `falaj manifest init` from an .npz holdout"}


def pytorch_mlp(falaj):
    torch.manual_seed(7)
    x, y, features, classes = load(DATA, "diagnosis")
    std = x.std(axis=0)
    std[std == 0] = 1.0
    model = Classifier(x.mean(axis=0), std, len(features), len(classes))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(model(xt) + 1e-9), yt)
        loss.backward()
        opt.step()
    model.eval()
    d = OUT / "pytorch-mlp"
    d.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (xt[:1],), str(d / "model.onnx"), input_names=["input"],
                      output_names=["probabilities"],
                      dynamic_axes={"input": {0: "N"}, "probabilities": {0: "N"}},
                      opset_version=17, dynamo=False)
    # The manifest: written by falaj from the model's signature and the holdout's header.
    subprocess.run([falaj, "manifest", "init", str(d / "model.onnx"), "--model", "pytorch-mlp",
                    "--holdout", str(DATA), "--target", "diagnosis",
                    "--code-commit", "make-byo-cases", "--param", "epochs=200",
                    "--param", "lr=0.01", "--out", str(d / "manifest.json")],
                   check=True, stdout=subprocess.DEVNULL)
    rows = x[:16]
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": rows})[0]
    (d / "inputs.json").write_text(json.dumps({"rows": rows.tolist()}) + "\n")
    (d / "expected.json").write_text(json.dumps(
        {"outputs": out.astype(np.float32).tolist(), "by": f"onnxruntime {ort.__version__}"}) + "\n")
    acc = float((sess.run(None, {"input": x})[0].argmax(axis=1) == y).mean())
    print(f"pytorch-mlp: training accuracy {acc:.3f}, torch {torch.__version__}")
    return {"name": "pytorch-mlp",
            "about": "a PyTorch MLP on breast_cancer.csv exported by torch.onnx.export; manifest by `falaj manifest init`"}


def main():
    falaj = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/debug/falaj")
    made = [pytorch_mlp(falaj)] + sklearn_cases(falaj) + [
        torchvision_case(falaj, "torchvision-squeezenet", "squeezenet1_1", png=True),
        torchvision_case(falaj, "torchvision-mobilenet-v3-small", "mobilenet_v3_small"),
        torchvision_case(falaj, "torchvision-shufflenet-v2", "shufflenet_v2_x0_5"),
    ]
    index = json.loads((OUT / "cases.json").read_text())
    names = {c["name"] for c in made}
    index["cases"] = [c for c in index["cases"] if c["name"] not in names] + made
    (OUT / "cases.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
