"""Checks what `falaj demo` must leave in its store, step by step (CI runs it after the demo).

    check-demo.py STORE_DIR MODEL [RUNS]

RUNS is how many demo runs the store has seen since it was made (default 1): each run trains
one version and retrains one, so run k leaves versions 2k-1 (trained, promoted to production)
and 2k (retrained from it after drift, staged).
"""
import json
import sys
from pathlib import Path

store, model = Path(sys.argv[1]), sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
m = store / "models" / model
failures = []


def check(what, ok):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def load(p):
    return json.loads(p.read_text())


trained, retrained = 2 * runs - 1, 2 * runs
versions = sorted(int(p.stem) for p in (m / "versions").glob("*.json"))
check(f"{2 * runs} versions registered ({runs} run(s): trained, then retrained)",
      versions == list(range(1, 2 * runs + 1)))
records = {n: load(m / "versions" / f"{n}.json") for n in versions}
for n in versions:
    check(f"v{n} came through incoming/ and the ingest handler",
          f"/incoming/{model}/" in (records[n].get("source") or ""))
    reports = list((m / "versions" / str(n)).glob("gates*.json"))
    check(f"v{n} has a gate report that passed", any(load(r).get("passed") for r in reports))
approvals = list((m / "approvals" / str(trained)).glob("*.json")) if (m / "approvals").exists() else []
check(f"two approvals of v{trained}", len(approvals) == 2)
prod = m / "aliases" / "production.json"
check(f"production alias points at v{trained}", prod.exists() and load(prod).get("version") == trained)
dep = store / "deployments" / "prod" / f"{model}.json"
signed = load(dep) if dep.exists() else {}
check("signed deployment manifest", signed.get("signature", "").startswith("ed25519:"))
payload = json.loads(signed.get("payload", "{}"))
# A later run goes out as a canary that is then rolled out: two more generations.
check(f"deployment generation {2 * runs - 1}, champion v{trained}, no challenger left",
      payload.get("generation") == 2 * runs - 1
      and payload.get("champion", {}).get("version") == trained and not payload.get("challenger"))
files = list((store / "telemetry" / "prod").rglob("*.json"))
windows = [w for w in files if not w.name.endswith(".live.json")]
rows = sum(load(w)["rows"] for w in windows)
check(f"edge sketches in telemetry/prod/ ({len(windows)} windows, {rows} rows)", rows >= 400 * runs)
live = [load(w) for w in files if w.name.endswith(".live.json")]
logged = sum(len(w["log"]) for w in live)
check(f"edge live windows with request ids ({len(live)} windows, {logged} requests logged)",
      logged > 0 and all(len(e["id"]) == 32 for w in live for e in w["log"]))
requests = sorted((store / "retrain" / model).glob("*.json")) if (store / "retrain").exists() else []
check(f"{runs} retraining request(s), the last naming drifted size features",
      len(requests) == runs and any("radius" in f for f in load(requests[-1])["drifted"]))
if requests:
    req = load(requests[-1])
    check("the request is about the served version and names the labelled rows that arrived since",
          req.get("version") == trained
          and any(k.startswith(f"datasets/{model}/labelled/") for k in req.get("labelled", [])))
    for r in requests:
        claim = store / "idempotency" / "retrain" / model / r.name
        check(f"the retrainer claimed {r.name} once and finished it",
              claim.exists() and load(claim).get("state") == "done")
if retrained in records:
    lineage = records[retrained].get("lineage", {})
    datasets = [d.get("uri", "") for d in lineage.get("datasets", [])]
    check(f"v{retrained} is the retrain: parent v{trained}, trained on datasets/<model>/retrain/*.csv",
          lineage.get("parent_version") == trained
          and any(f"/datasets/{model}/retrain/" in u for u in datasets)
          and f"/incoming/{model}/retrain-" in (records[retrained].get("source") or ""))
staging = m / "aliases" / "staging.json"
check(f"the passing retrain v{retrained} was staged by the policy (auto_staging)",
      staging.exists() and load(staging).get("version") == retrained)
events = [p for p in sorted((store / "audit" / model).glob("*.json")) if p.stem.isdigit()]
actions = [load(p)["action"] for p in events]
head = store / "audit" / model / "head.json"
check("the audit head names the last event", head.exists() and events
      and load(head).get("seq") == int(events[-1].stem) and load(head).get("hash") == load(events[-1])["hash"])
for action, count in [("version.registered", 2 * runs), ("drift.retrain_requested", runs)]:
    check(f"audit has {count} {action}", actions.count(action) == count)
if failures:
    sys.exit(f"the demo left {len(failures)} wrong outcome(s) in {store}")
print(f"every step of the demo ({runs} run(s)) left its outcome in the store")
