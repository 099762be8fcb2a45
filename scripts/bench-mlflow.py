"""The same MLflow client operations against falaj and against MLflow's own tracking server,
in one run, on loopback: p50/p99 per operation and the ratio (falaj / MLflow).

  python scripts/bench-mlflow.py --falaj target/debug/falaj [--versions 1000] [--batches 50]

Run it with a Python that has the full `mlflow` package (its server) and `onnx`; the client
calls are identical for both servers. Each server gets a fresh store: falaj a `dir://`
store (no database), MLflow a sqlite backend with `--serve-artifacts` into a folder. The
model logged is tests/fixtures/models/pytorch-mlp/model.onnx.

Operations (each timed call is one client call, so both sides pay the same client cost):
  create version     client.create_model_version(name, source=models:/<logged model>)
                     (the first --versions of them also build the search set)
  get by alias       client.get_model_version_by_alias(name, "champion")
  search versions    client.search_model_versions("name='bench'") over --versions versions
  log batch          client.log_batch(run, 1,000 metrics)
"""

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, timeout=60):
    import urllib.request

    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception as e:  # noqa: BLE001 - any answer (even 401/404) means it is up
            if hasattr(e, "code"):
                return
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def start_falaj(binary, work):
    store = f"dir://{work}/store"
    for who, role in [("root", "admin"), ("bench", "ml-engineer")]:
        subprocess.run([binary, "--store", store, "--as", "root", "roles", "grant", who, role],
                       check=True, capture_output=True)
    token = "bench-token-0123456789"
    cfg = os.path.join(work, "webhook.json")
    json.dump({"tokens": [{"identity": "bench", "sha256": hashlib.sha256(token.encode()).hexdigest()}]},
              open(cfg, "w"))
    port = free_port()
    env = dict(os.environ, FALAJ_SIGNING_KEY=os.path.join(work, "signing.key"), RUST_LOG="error")
    p = subprocess.Popen([binary, "--store", store, "--json", "serve", "--listen", f"127.0.0.1:{port}",
                          "--webhook-config", cfg], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/health")
    return p, url, {"MLFLOW_TRACKING_TOKEN": token}


def start_mlflow(work):
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{work}/mlflow.db", "--serve-artifacts",
         "--artifacts-destination", f"{work}/artifacts", "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", timeout=180)
    return p, url, {}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def bench(url, creds, versions, batches, searches, gets):
    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    os.environ.update(creds)
    os.environ["MLFLOW_TRACKING_URI"] = url
    import mlflow
    import onnx
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(url)
    client = MlflowClient(url, url)
    mlflow.set_experiment("bench")
    model = onnx.load(os.path.join(ROOT, "tests/fixtures/models/pytorch-mlp/model.onnx"))
    with mlflow.start_run() as run:
        info = mlflow.onnx.log_model(model, name="model")
    client.create_registered_model("bench")
    source = f"models:/{info.model_id}"
    times = {"create version": [], "get by alias": [], "search versions": [], "log batch (1,000 metrics)": []}
    for _ in range(versions):
        t = time.perf_counter()
        v = client.create_model_version("bench", source, run_id=run.info.run_id, model_id=info.model_id)
        times["create version"].append(time.perf_counter() - t)
    client.set_registered_model_alias("bench", "champion", v.version)
    for _ in range(gets):
        t = time.perf_counter()
        got = client.get_model_version_by_alias("bench", "champion")
        times["get by alias"].append(time.perf_counter() - t)
    assert got.version == v.version
    for _ in range(searches):
        t = time.perf_counter()
        found = client.search_model_versions("name='bench'")
        times["search versions"].append(time.perf_counter() - t)
    assert len(found) == versions, len(found)
    now = int(time.time() * 1000)
    for b in range(batches):
        metrics = [Metric("loss", 1.0 / (i + 1), now, b * 1000 + i) for i in range(1000)]
        t = time.perf_counter()
        client.log_batch(run.info.run_id, metrics=metrics)
        times["log batch (1,000 metrics)"].append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--falaj", required=True, help="the falaj binary (cargo build -p falaj-cli)")
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--searches", type=int, default=20)
    ap.add_argument("--gets", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = {}
    for side in ["falaj", "mlflow"]:
        with tempfile.TemporaryDirectory() as work:
            proc, url, creds = start_falaj(a.falaj, work) if side == "falaj" else start_mlflow(work)
            try:
                # Each side in its own interpreter state: run in a child Python so module
                # caches (tracking URI, experiment ids) do not leak between the two.
                out = subprocess.run(
                    [sys.executable, "-c",
                     "import json,sys; sys.path.insert(0, %r); import importlib.util as u; "
                     "s=u.spec_from_file_location('b', %r); m=u.module_from_spec(s); s.loader.exec_module(m); "
                     "print(json.dumps(m.bench(%r, %r, %d, %d, %d, %d)))"
                     % (ROOT, os.path.abspath(__file__), url, creds, a.versions, a.batches, a.searches, a.gets)],
                    capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{side}: {out.stderr[-3000:]}")
                results[side] = json.loads(out.stdout.strip().splitlines()[-1])
            finally:
                proc.terminate()
                proc.wait()
    rows = []
    for op in results["falaj"]:
        f, m = results["falaj"][op], results["mlflow"][op]
        row = {"operation": op, "n": len(f),
               "falaj_p50_ms": pct(f, 0.5) * 1e3, "falaj_p99_ms": pct(f, 0.99) * 1e3,
               "mlflow_p50_ms": pct(m, 0.5) * 1e3, "mlflow_p99_ms": pct(m, 0.99) * 1e3}
        row["ratio_p50"] = row["falaj_p50_ms"] / row["mlflow_p50_ms"]
        row["ratio_p99"] = row["falaj_p99_ms"] / row["mlflow_p99_ms"]
        rows.append(row)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'operation':28} {'n':>5} {'falaj p50':>10} {'p99':>8} {'MLflow p50':>11} {'p99':>8} {'ratio p50':>10} {'p99':>6}")
    for r in rows:
        print(f"{r['operation']:28} {r['n']:>5} {r['falaj_p50_ms']:>8.2f}ms {r['falaj_p99_ms']:>6.2f}ms "
              f"{r['mlflow_p50_ms']:>9.2f}ms {r['mlflow_p99_ms']:>6.2f}ms {r['ratio_p50']:>9.2f}x {r['ratio_p99']:>5.2f}x")
    print("ratio = falaj / MLflow (below 1: falaj faster). falaj: dir:// store, no database; "
          "MLflow: sqlite backend, 1 worker.")


if __name__ == "__main__":
    main()
