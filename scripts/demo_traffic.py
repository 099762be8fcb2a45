"""Sends rows of a CSV to falaj-edge as predictions by feature name (the demo's traffic).

    demo_traffic.py EDGE MODEL CSV [--rows N] [--scale F] [--show] [--write-labelled OUT]

--scale multiplies the "size" features (radius, perimeter, area: a recalibrated scanner) so
the edge sees shifted inputs; --write-labelled writes the rows sent, with their labels, for
retraining on the new data.
"""
import argparse
import csv
import json
import urllib.request

p = argparse.ArgumentParser()
p.add_argument("edge")
p.add_argument("model")
p.add_argument("csv")
p.add_argument("--rows", type=int, default=5)
p.add_argument("--scale", type=float, default=1.0)
p.add_argument("--show", action="store_true")
p.add_argument("--write-labelled")
a = p.parse_args()

with open(a.csv) as f:
    reader = csv.DictReader(f)
    rows = [r for _, r in zip(range(a.rows), reader)]
    fields = reader.fieldnames
sized = [c for c in fields if any(k in c for k in ("radius", "perimeter", "area"))]
sent, answers = [], []
for start in range(0, len(rows), 20):
    batch = []
    for r in rows[start:start + 20]:
        r = dict(r)
        for c in sized:
            r[c] = str(float(r[c]) * a.scale)
        sent.append(r)
        batch.append({k: float(v) for k, v in r.items() if k != "diagnosis"})
    req = urllib.request.Request(
        f"http://{a.edge}/v1/models/{a.model}/predict",
        data=json.dumps({"inputs": batch}).encode(),
        headers={"content-type": "application/json", "x-falaj-request-key": f"demo-{start}"},
    )
    with urllib.request.urlopen(req) as resp:
        body = json.load(resp)
        version = resp.headers["x-falaj-model-version"]
    answers += [(p, version) for p in body["predictions"]]
if a.show:
    for r, (pred, version) in zip(sent, answers):
        print(f"  v{version}: {pred.get('label')} p={max(pred.get('probabilities', [0])):.3f}  (true: {r['diagnosis']})")
else:
    print(f"sent {len(sent)} rows in {(len(sent) + 19) // 20} requests; answered by versions {sorted({v for _, v in answers})}")
if a.write_labelled:
    with open(a.write_labelled, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(sent)
