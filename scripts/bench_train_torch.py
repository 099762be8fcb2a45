#!/usr/bin/env python3
"""PyTorch CPU baseline for falaj-train's training throughput.

    python3 scripts/bench_train_torch.py --data tests/fixtures/datasets/breast_cancer.csv \
        --target diagnosis --hidden 64,32 --batch-size 32 --epochs 30

Trains the same network as falaj-train (Linear layers with the given hidden widths, ReLU,
softmax cross-entropy, Adam with eps 1e-8) on the same standardised training split size,
shuffling every epoch, and prints one JSON line with the training samples per second over
all epochs but the first (warm-up). Only the optimiser loop is timed, as in falaj-train's
`samples_per_second`.
"""

import argparse
import csv
import json
import time

import torch


def load(path, target, val_fraction, seed):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    t = header.index(target)
    feats = [i for i in range(len(header)) if i != t]
    classes = sorted({r[t] for r in body})
    x = torch.tensor([[float(r[i]) for i in feats] for r in body], dtype=torch.float32)
    y = torch.tensor([classes.index(r[t]) for r in body], dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(body), generator=g)
    n_val = max(1, round(len(body) * val_fraction))
    train = perm[: len(body) - n_val]
    x, y = x[train], y[train]
    x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp_min(1e-12)
    return x, y, len(classes)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--hidden", default="64,32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    x, y, k = load(a.data, a.target, a.val_fraction, a.seed)
    widths = [x.shape[1]] + [int(h) for h in a.hidden.split(",") if h] + [k]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=a.learning_rate, eps=1e-8)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0]
    rates = []
    for _ in range(a.epochs):
        start = time.perf_counter()
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, a.batch_size):
            idx = perm[i : i + a.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        float(total)  # read the epoch loss, as falaj-train does
        rates.append(n / (time.perf_counter() - start))
    steady = rates[1:] or rates
    print(json.dumps({
        "runtime": f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "train_rows": n,
        "batch_size": a.batch_size,
        "hidden": a.hidden,
        "epochs": a.epochs,
        "samples_per_second": sum(steady) / len(steady),
    }))


if __name__ == "__main__":
    main()
