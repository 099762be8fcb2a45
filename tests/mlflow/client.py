"""An unmodified MLflow training script and registry calls, run against falaj.

Used by crates/cli/tests/mlflow.rs with the real `mlflow` client (mlflow-skinny from PyPI)
against `falaj serve` on loopback. Each phase prints one JSON line of what it saw; any
assertion that fails exits non-zero with the reason.

  client.py log DATA.csv MODEL.onnx      train-side: experiment, run, params, metrics,
                                         dataset input, mlflow.onnx.log_model(...,
                                         registered_model_name="clinic"), search, a free
                                         alias, production refused, download by alias, a
                                         non-ONNX source refused as FAILED_REGISTRATION
  client.py refused                      production through MLflow refused, and why
  client.py promote                      production set through MLflow once approved
  client.py denied                       wrong credentials: 401 through the client
"""

import json
import os
import sys
import tempfile

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

MODEL = "clinic"


def fail(msg):
    print(f"client.py: {msg}", file=sys.stderr)
    sys.exit(1)


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except MlflowException as e:
        if e.error_code != code:
            fail(f"expected {code}, got {e.error_code}: {e.message}")
        return e.message
    fail(f"expected {code}, but the call succeeded")


def log(data_csv, model_onnx):
    import onnx
    import onnx.numpy_helper
    import pandas as pd

    df = pd.read_csv(data_csv)
    features = [c for c in df.columns if c != "diagnosis"]
    mlflow.set_experiment("clinic-exp")
    with mlflow.start_run(run_name="mlp") as run:
        mlflow.log_params({"lr": 0.01, "epochs": 30, "hidden": 16})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"accuracy": 0.96, "f1": 0.95})
        mlflow.set_tags({"falaj.target": "diagnosis", "falaj.classes": "benign,malignant"})
        dataset = mlflow.data.from_pandas(df, source=data_csv, name="breast_cancer", targets="diagnosis")
        mlflow.log_input(dataset, context="training")
        info = mlflow.onnx.log_model(
            onnx.load(model_onnx),
            name="model",
            input_example=df[features].head(3),
            registered_model_name=MODEL,
        )
        # A file that is not a model: registering it is refused, with the reason.
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "notes.txt")
            open(p, "w").write("not a model")
            mlflow.log_artifact(p, artifact_path="notes")
    client = MlflowClient()
    run_data = client.get_run(run.info.run_id).data
    if run_data.params.get("lr") != "0.01" or abs(run_data.metrics["loss"] - 0.2) > 1e-9:
        fail(f"the run reads back wrong: {run_data}")
    history = client.get_metric_history(run.info.run_id, "loss")
    # log_model logs the run's metrics again, linked to the model: the steps stay 0..4.
    if sorted({m.step for m in history}) != list(range(5)):
        fail(f"loss history: {history}")
    versions = client.search_model_versions(f"name='{MODEL}'")
    if len(versions) != 1 or versions[0].status != "READY":
        fail(f"search found {versions}")
    v = versions[0]
    if v.run_id != run.info.run_id:
        fail(f"version {v.version} has run {v.run_id}, not {run.info.run_id}")
    client.set_registered_model_alias(MODEL, "champion", v.version)
    by_alias = client.get_model_version_by_alias(MODEL, "champion")
    if by_alias.version != v.version or "champion" not in by_alias.aliases:
        fail(f"champion is {by_alias}")
    refused = expect_error(
        "PERMISSION_DENIED", client.set_registered_model_alias, MODEL, "production", v.version
    )
    # The model directory as logged (mlflow.onnx keeps the weights in a file beside the
    # graph), read back by alias: the same graph and the same weights as the ONNX file.
    with tempfile.TemporaryDirectory() as d:
        path = mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=d)
        got = onnx.load(os.path.join(path, "model.onnx"))
        mlmodel = os.path.exists(os.path.join(path, "MLmodel"))
        files = sorted(os.listdir(path))
    want = onnx.load(model_onnx)
    weights = lambda m: {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in m.graph.initializer}
    if weights(got) != weights(want) or [n.op_type for n in got.graph.node] != [n.op_type for n in want.graph.node]:
        fail(f"models:/{MODEL}@champion downloads a model that differs from the logged one ({files})")
    failed = None
    try:
        client.create_model_version(MODEL, f"runs:/{run.info.run_id}/notes", run_id=run.info.run_id)
        fail("a directory without ONNX was registered")
    except MlflowException as e:
        failed = e.message
        if "FAILED_REGISTRATION" not in failed or "no ONNX model" not in failed:
            fail(f"the non-model source failed oddly: {failed}")
    tags = client.get_model_version(MODEL, v.version).tags
    print(json.dumps({
        "version": v.version,
        "run_id": run.info.run_id,
        "model_id": info.model_id,
        "production_refused": refused,
        "failed_registration": failed,
        "downloaded": files,
        "mlmodel_downloaded": mlmodel,
        "tags": tags,
        "features": len(features),
    }))


def refused():
    client = MlflowClient()
    v = client.get_model_version_by_alias(MODEL, "champion")
    message = expect_error(
        "PERMISSION_DENIED", client.set_registered_model_alias, MODEL, "production", v.version
    )
    after = client.get_model_version(MODEL, v.version)
    if "production" in after.aliases:
        fail("a refused promotion moved the alias")
    print(json.dumps({"refused": message, "tags": after.tags}))


def promote():
    client = MlflowClient()
    v = client.get_model_version_by_alias(MODEL, "champion")
    client.set_registered_model_alias(MODEL, "production", v.version)
    after = client.get_model_version(MODEL, v.version)
    print(json.dumps({
        "version": v.version,
        "aliases": sorted(after.aliases),
        "tags": after.tags,
        "stage": after.current_stage,
    }))


def denied():
    message = expect_error("UNAUTHENTICATED", MlflowClient().search_registered_models)
    print(json.dumps({"denied": message}))


if __name__ == "__main__":
    phase = sys.argv[1]
    {"log": lambda: log(sys.argv[2], sys.argv[3]), "refused": refused, "promote": promote, "denied": denied}[phase]()
