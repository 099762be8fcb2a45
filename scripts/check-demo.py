"""Checks what scripts/demo.sh must leave in its store, step by step (CI runs it after the demo).

    check-demo.py STORE_DIR MODEL
"""
import json
import sys
from pathlib import Path

store, model = Path(sys.argv[1]), sys.argv[2]
m = store / "models" / model
failures = []


def check(what, ok):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def load(p):
    return json.loads(p.read_text())


versions = sorted(int(p.stem) for p in (m / "versions").glob("*.json"))
check("two versions registered (trained, then retrained)", versions[:2] == [1, 2])
for n in versions[:2]:
    reports = list((m / "versions" / str(n)).glob("gates*.json"))
    check(f"v{n} has a gate report that passed", any(load(r).get("passed") for r in reports))
approvals = list((m / "approvals").rglob("*.json")) if (m / "approvals").exists() else []
check("two approvals recorded", len(approvals) >= 2)
prod = m / "aliases" / "production.json"
check("production alias points at v1", prod.exists() and load(prod).get("version") == 1)
dep = store / "deployments" / "prod" / f"{model}.json"
check("signed deployment manifest", dep.exists() and load(dep).get("signature", "").startswith("ed25519:"))
windows = list((store / "telemetry" / "prod").rglob("*.json"))
rows = sum(load(w)["rows"] for w in windows)
check(f"edge sketches in telemetry/prod/ ({len(windows)} windows, {rows} rows)", rows >= 400)
requests = list((store / "retrain" / model).glob("*.json")) if (store / "retrain").exists() else []
check("a retraining request naming drifted size features",
      len(requests) == 1 and any("radius" in f for f in load(requests[0])["drifted"]))
actions = [load(p)["action"] for p in sorted((store / "audit" / model).glob("*.json"))]
for action in ["version.registered", "drift.retrain_requested"]:
    check(f"audit has {action}", action in actions)
if failures:
    sys.exit(f"the demo left {len(failures)} wrong outcome(s) in {store}")
print("every step of the demo left its outcome in the store")
