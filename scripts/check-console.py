"""The console on the store the demo left (CI runs it after the demo's second run).

    check-console.py FALAJ_BINARY STORE_DIR MODEL PRODUCTION_VERSION STAGED_VERSION

Starts the real `falaj serve` on the demo's store, then drives headless Chromium over WebDriver
(chromedriver, standard library only). It signs in as ann, an approver in the demo, and reads
the models, version and deployments pages from the DOM:
- the production version's gate rows, its two approvals and its training curve;
- the deployments' champion and challenger weights.
Then ann approves the staged version from its page, and the approval count goes up.
Screenshots go to target/console/demo-*.png.
"""
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

falaj, store, model = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
prod_v, staged_v = int(sys.argv[4]), int(sys.argv[5])
root = Path(__file__).resolve().parent.parent
shots = root / "target" / "console"
shots.mkdir(parents=True, exist_ok=True)
failures = []


def check(what, ok, detail=""):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if not ok and detail else ""))
    if not ok:
        failures.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


token = "ann-demo-console-" + os.urandom(8).hex()
cfg = Path(tempfile.mkdtemp()) / "webhook.json"
cfg.write_text(json.dumps({"tokens": [{"identity": "ann", "sha256": hashlib.sha256(token.encode()).hexdigest()}]}))
serve = subprocess.Popen(
    [falaj, "--store", f"dir://{store}", "--json", "serve", "--listen", "127.0.0.1:0",
     "--poll-ms", "60000", "--webhook-config", str(cfg)],
    stdout=subprocess.PIPE, text=True)
base = json.loads(serve.stdout.readline())["listening"]
port = free_port()
driver = subprocess.Popen([os.environ.get("FALAJ_CHROMEDRIVER", "chromedriver"), f"--port={port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wd(method, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["value"]


try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            time.sleep(0.1)
    sid = wd("POST", "/session", {"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": os.environ.get("FALAJ_CHROMIUM", "/usr/bin/chromium"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"]}}}})["sessionId"]
    s = f"/session/{sid}"
    key = "element-6066-11e4-a52e-4f735466cecf"

    def goto(path):
        wd("POST", f"{s}/url", {"url": base + path})

    def find_all(css):
        return [e[key] for e in wd("POST", f"{s}/elements", {"using": "css selector", "value": css})]

    def texts(css):
        return [wd("GET", f"{s}/element/{e}/text") for e in find_all(css)]

    def text(css):
        t = texts(css)
        return t[0] if t else ""

    def submit(css):
        e = find_all(css)[0]
        wd("POST", f"{s}/execute/sync", {"script": "document.documentElement.dataset.stale = '1'", "args": []})
        wd("POST", f"{s}/element/{e}/click", {})
        for _ in range(300):
            fresh = wd("POST", f"{s}/execute/sync", {"script": "return document.readyState === 'complete' && !document.documentElement.dataset.stale", "args": []})
            if fresh:
                return
            time.sleep(0.05)
        raise RuntimeError(f"no page answered the click on {css}")

    def screenshot(name):
        h = wd("POST", f"{s}/execute/sync", {"script": "return document.documentElement.scrollHeight", "args": []})
        wd("POST", f"{s}/window/rect", {"width": 1280, "height": h + 140})
        (shots / f"demo-{name}.png").write_bytes(base64.b64decode(wd("GET", f"{s}/screenshot")))
        wd("POST", f"{s}/window/rect", {"width": 1280, "height": 1000})

    goto("/ui/login")
    e = find_all("#token")[0]
    wd("POST", f"{s}/element/{e}/value", {"text": token})
    submit("#signin")
    check("signed in as ann", text("#identity") == "ann", text("main"))

    goto("/ui/models")
    row = f"tr[data-model='{model}']"
    check(f"the models page lists {model} with production at v{prod_v}",
          text(f"{row} td.production") == f"v{prod_v}", text(row))
    screenshot("models")

    goto(f"/ui/models/{model}/versions/{prod_v}")
    gates = texts("#gates tbody tr")
    check(f"v{prod_v}'s gate rows, every one passed", len(gates) >= 3 and all(g.endswith("pass") for g in gates), gates)
    check(f"v{prod_v}'s metrics.accuracy row has its threshold", any(g.startswith("metrics.accuracy") and "≥" in g for g in gates), gates)
    approvers = sorted(texts("#approvals tr.approval td.by"))
    check(f"v{prod_v} approved by ann and bob", approvers == ["ann", "bob"], approvers)
    check(f"v{prod_v}'s training curve from falaj-train", len(find_all("figure.plot svg polyline")) >= 2
          and "training manifest" in text("#curve-from"), text("#curve-from"))
    check("the audit chain verifies", text("#chain").startswith("Audit chain verified"), text("#chain"))
    screenshot("version")

    goto("/ui/deployments")
    prod = f"div.deployment[data-env=prod][data-model='{model}']"
    check(f"prod: champion v{prod_v} at 100%, no challenger",
          text(f"{prod} td.champion") == f"v{prod_v} (100%)" and text(f"{prod} td.challenger") == "none",
          [text(f"{prod} td.champion"), text(f"{prod} td.challenger")])
    staging = f"div.deployment[data-env=staging][data-model='{model}']"
    check(f"staging: champion v{staged_v}", text(f"{staging} td.champion").startswith(f"v{staged_v} "), text(staging))
    check("the edge node that served the demo is listed", len(find_all(f"{prod} table.nodes tbody tr")) >= 1)
    screenshot("deployments")

    goto(f"/ui/models/{model}/versions/{staged_v}")
    before = text("#approval-count")
    submit("#approve")
    check(f"ann approves v{staged_v} from its page", text("#flash").startswith(f"Approved {model}@{staged_v}"), text("#flash"))
    check("the approval count went up by one", before == "0" and text("#approval-count") == "1", [before, text("#approval-count")])
    wd("DELETE", s)
finally:
    driver.kill()
    serve.kill()

if failures:
    print(f"check-console: {len(failures)} check(s) failed")
    sys.exit(1)
print("check-console: the console shows what the demo did")
