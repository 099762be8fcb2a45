"""Writes two torchvision CNN architectures as ONNX, built layer by layer with onnx.helper
(PyTorch is not installable on these machines): MobileNetV2 and ResNet-18 with the layer
shapes of torchvision.models, batch norm folded into the convolutions (as an exporter with
constant folding leaves them), random He-initialised weights from a fixed seed, input
`input` [N, 3, 224, 224], output logits [N, 1000].

    python make_cnns.py OUT_DIR
"""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(20261123)


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, p):
        self.n += 1
        return f"{p}_{self.n}"

    def const(self, arr, p):
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), n))
        return n

    def conv(self, x, cin, cout, k, s=1, groups=1, act=None):
        fan_in = cin // groups * k * k
        w = rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k))
        b = rng.normal(0, 0.01, (cout,))
        y = self.name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const(w, "w"), self.const(b, "b")], [y],
            kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, group=groups))
        return self.act(y, act)

    def act(self, x, act):
        if act is None:
            return x
        y = self.name(act)
        if act == "relu":
            self.nodes.append(helper.make_node("Relu", [x], [y]))
        else:  # relu6
            lo = self.const(np.array(0.0), "lo")
            hi = self.const(np.array(6.0), "hi")
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
        return y

    def add(self, a, b, act=None):
        y = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        return self.act(y, act)

    def head(self, x, cin):
        p = self.name("pool")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [p]))
        f = self.name("flat")
        self.nodes.append(helper.make_node("Flatten", [p], [f], axis=1))
        w = rng.normal(0, np.sqrt(1.0 / cin), (1000, cin))
        self.nodes.append(helper.make_node(
            "Gemm", [f, self.const(w, "fc_w"), self.const(np.zeros(1000), "fc_b")],
            ["logits"], transB=1))

    def model(self, name):
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
        g = helper.make_graph(self.nodes, name, [inp], [out], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="falaj-bench")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def mobilenet_v2():
    g = Graph()
    x = g.conv("input", 3, 32, 3, 2, act="relu6")
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x if t == 1 else g.conv(x, cin, hidden, 1, act="relu6")
            y = g.conv(y, hidden, hidden, 3, stride, groups=hidden, act="relu6")
            y = g.conv(y, hidden, c, 1)
            x = g.add(x, y) if stride == 1 and cin == c else y
            cin = c
    x = g.conv(x, cin, 1280, 1, act="relu6")
    g.head(x, 1280)
    return g.model("mobilenet_v2")


def resnet18():
    g = Graph()
    x = g.conv("input", 3, 64, 7, 2, act="relu")
    p = g.name("maxpool")
    g.nodes.append(helper.make_node("MaxPool", [x], [p], kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1]))
    x, cin = p, 64
    for c, s in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for i in range(2):
            stride = s if i == 0 else 1
            y = g.conv(x, cin, c, 3, stride, act="relu")
            y = g.conv(y, c, c, 3)
            short = g.conv(x, cin, c, 1, stride) if stride != 1 or cin != c else x
            x = g.add(y, short, act="relu")
            cin = c
    g.head(x, 512)
    return g.model("resnet18")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, build in [("mobilenet_v2", mobilenet_v2), ("resnet18", resnet18)]:
        m = build()
        path = out / f"{name}.onnx"
        onnx.save(m, path)
        params = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
        print(f"{path}: {len(m.graph.node)} nodes, {params / 1e6:.1f} M parameters")
