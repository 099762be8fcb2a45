//! What the MLflow API must refuse, through the same handler `falaj serve` and the webhook
//! function run: each known attack is a test that fails if it comes back.

use std::sync::Arc;

use falaj::Registry;
use falaj::store::{self, OpenOptions};
use falaj_core::StoreKey;
use falaj_core::promotion::Role;
use falaj_webhook::{HttpRequest, Webhook, WebhookAuth};
use serde_json::{Value, json};

const TOKENS: [(&str, &str); 4] = [
    ("dana", "dana-token-0123456789"),
    ("eve", "eve-token-0123456789"),
    ("sam", "sam-token-0123456789"),
    ("mel", "mel-token-0123456789"),
];

struct World {
    hook: Webhook,
    reg: Arc<Registry>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("dir://{}", dir.path().join("store").display());
    let opts = OpenOptions {
        create: true,
        ..Default::default()
    };
    let reg = Arc::new(Registry::new(store::open(&uri, &opts).await.unwrap()));
    for (who, role) in [
        ("root", Role::Admin),
        ("dana", Role::DataScientist),
        ("sam", Role::DataScientist),
        ("mel", Role::MlEngineer),
        ("eve", Role::Viewer),
    ] {
        falaj::promotion::grant(&reg, "root", who, role)
            .await
            .unwrap();
    }
    let promoter = Arc::new(falaj_webhook::LocalPromoter::new(
        reg.clone(),
        falaj::deploy::DeployKey::from_seed([5; 32]),
    ));
    let config = json!({
        "tokens": TOKENS.iter().map(|(w, t)| json!({"identity": w, "sha256": falaj_webhook::token_digest(t)})).collect::<Vec<_>>(),
        "ci": [{"identity": "ci", "secret": "0123456789abcdef0123456789"}],
        "max_artifact_bytes": 1 << 20,
    });
    let auth = WebhookAuth::parse(&config.to_string(), "w.json").unwrap();
    World {
        hook: Webhook::new(reg.clone(), promoter, auth),
        reg,
        _dir: dir,
    }
}

fn token(who: &str) -> &'static str {
    TOKENS.iter().find(|(w, _)| *w == who).unwrap().1
}

async fn call(hook: &Webhook, who: &str, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    let req = HttpRequest::new(method, target)
        .with_header("authorization", format!("Bearer {}", token(who)))
        .with_body(body.to_vec());
    let r = falaj_mlflow::handle(hook, req).await;
    (r.status, r.json_body())
}

async fn api(hook: &Webhook, who: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let target = format!("/api/2.0/mlflow/{path}");
    if method == "GET" {
        let q: Vec<String> = body
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect();
        call(hook, who, "GET", &format!("{target}?{}", q.join("&")), b"").await
    } else {
        call(hook, who, method, &target, body.to_string().as_bytes()).await
    }
}

fn artifact(path: &str) -> String {
    format!("/api/2.0/mlflow-artifacts/artifacts/{path}")
}

impl World {
    async fn call(&self, who: &str, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
        call(&self.hook, who, method, target, body).await
    }

    async fn api(&self, who: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        api(&self.hook, who, method, path, body).await
    }

    /// dana's run with a real ONNX model logged in it, registered as clinic@1.
    async fn registered(&self) -> String {
        let (_, r) = self
            .api("dana", "POST", "runs/create", json!({"experiment_id": "0"}))
            .await;
        let run = r["run"]["info"]["run_id"].as_str().unwrap().to_string();
        let onnx = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/models/pytorch-mlp/model.onnx"),
        )
        .unwrap();
        let path = artifact(&format!("0/{run}/artifacts/model/model.onnx"));
        assert_eq!(self.call("dana", "PUT", &path, &onnx).await.0, 200);
        let (code, _) = self
            .api(
                "dana",
                "POST",
                "registered-models/create",
                json!({"name": "clinic"}),
            )
            .await;
        assert_eq!(code, 200);
        let body = json!({"name": "clinic", "source": format!("runs:/{run}/model"), "run_id": run});
        let (code, v) = self
            .api("dana", "POST", "model-versions/create", body)
            .await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["model_version"]["status"], "READY", "{v}");
        run
    }
}

fn code(v: &Value) -> &str {
    v["error_code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn artifact_paths_cannot_leave_the_artifact_store_or_reach_anothers_run() {
    let w = world().await;
    let run = w.registered().await;
    let roles = StoreKey::new("roles.json").unwrap();
    let before = w.reg.store().get(&roles).await.unwrap().unwrap().bytes;
    for path in [
        "..%2F..%2Froles.json",
        "0/../../roles.json",
        "0/%2e%2e/%2e%2e/roles.json",
        "/etc/passwd",
        "0//x",
        "0\\..\\roles.json",
    ] {
        let (status, body) = w.call("dana", "PUT", &artifact(path), b"{}").await;
        assert!(matches!(status, 400 | 403), "{path}: {status} {body}");
    }
    let after = w.reg.store().get(&roles).await.unwrap().unwrap().bytes;
    assert_eq!(before, after);
    // Reading through a path trick is refused the same way: a download, a listing, or a
    // presigned URL (on S3 a URL to any key would bypass every check).
    for target in [
        artifact("..%2F..%2Froles.json"),
        artifact("0/%2e%2e/%2e%2e/roles.json"),
        "/api/2.0/mlflow-artifacts/artifacts?path=../..".to_string(),
        "/api/2.0/mlflow-artifacts/presigned/..%2F..%2Froles.json".to_string(),
        "/api/2.0/mlflow-artifacts/presigned/_registry/..%2F..%2Froles.json".to_string(),
    ] {
        let (status, body) = w.call("sam", "GET", &target, b"").await;
        assert!(matches!(status, 400 | 404), "{target}: {status} {body}");
        assert!(!body.to_string().contains("\"roles\""), "{target}: {body}");
    }
    // Another data scientist cannot write into dana's run, nor anyone into a registered
    // version's files, nor delete anything.
    let danas = artifact(&format!("0/{run}/artifacts/model/model.onnx"));
    let (status, body) = w.call("sam", "PUT", &danas, b"evil").await;
    assert_eq!((status, code(&body)), (403, "PERMISSION_DENIED"), "{body}");
    let registered = artifact("_registry/clinic/1/model.onnx");
    let (status, body) = w.call("dana", "PUT", &registered, b"evil").await;
    assert_eq!((status, code(&body)), (403, "PERMISSION_DENIED"), "{body}");
    assert_eq!(w.call("dana", "DELETE", &danas, b"").await.0, 403);
    // Outside a run or logged model: refused.
    let (status, _) = w.call("dana", "PUT", &artifact("0/notes.txt"), b"x").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_registered_version_downloads_what_was_registered_whatever_the_run_holds_later() {
    let w = world().await;
    let run = w.registered().await;
    let file = artifact("_registry/clinic/1/model.onnx");
    let get = || {
        HttpRequest::new("GET", &file)
            .with_header("authorization", format!("Bearer {}", token("sam")))
    };
    let before = falaj_mlflow::handle(&w.hook, get()).await;
    assert_eq!(before.status, 200);
    // The creator overwrites the run's file afterwards (allowed: the run's files are hers).
    let runs = artifact(&format!("0/{run}/artifacts/model/model.onnx"));
    assert_eq!(w.call("dana", "PUT", &runs, b"not the model").await.0, 200);
    let after = falaj_mlflow::handle(&w.hook, get()).await;
    assert_eq!(after.body, before.body);
    let v = w.reg.version("clinic", 1).await.unwrap();
    use sha2::Digest;
    assert_eq!(
        v.digest,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&after.body)))
    );
    // The listing names the file with its size.
    let (_, l) = w
        .call(
            "sam",
            "GET",
            "/api/2.0/mlflow-artifacts/artifacts?path=_registry/clinic/1",
            b"",
        )
        .await;
    assert_eq!(l["files"][0]["path"], "model.onnx");
    assert_eq!(l["files"][0]["file_size"], json!(after.body.len()));
}

#[tokio::test]
async fn computed_tags_and_managed_aliases_cannot_be_set_around_the_gatekeeper() {
    let w = world().await;
    w.registered().await;
    let v1 = |extra: Value| {
        let mut b = json!({"name": "clinic", "version": "1"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (who, method, path, body) in [
        (
            "dana",
            "POST",
            "model-versions/set-tag",
            v1(json!({"key": "falaj.state", "value": "production"})),
        ),
        (
            "dana",
            "POST",
            "model-versions/set-tag",
            v1(json!({"key": "falaj.gates", "value": "passed"})),
        ),
        (
            "mel",
            "POST",
            "registered-models/alias",
            v1(json!({"alias": "production"})),
        ),
        (
            "mel",
            "POST",
            "registered-models/alias",
            v1(json!({"alias": "staging"})),
        ),
        (
            "mel",
            "POST",
            "registered-models/alias",
            v1(json!({"alias": "challenger"})),
        ),
        (
            "mel",
            "DELETE",
            "registered-models/alias",
            json!({"name": "clinic", "alias": "production"}),
        ),
        (
            "mel",
            "DELETE",
            "registered-models/delete",
            json!({"name": "clinic"}),
        ),
        ("mel", "DELETE", "model-versions/delete", v1(json!({}))),
        (
            "mel",
            "POST",
            "model-versions/transition-stage",
            v1(json!({"stage": "Production"})),
        ),
    ] {
        let (status, r) = w.api(who, method, path, body.clone()).await;
        assert_eq!(
            (status, code(&r)),
            (403, "PERMISSION_DENIED"),
            "{path} {body}: {r}"
        );
    }
    // Nothing moved: no alias, no stage.
    assert!(
        w.reg
            .aliases("clinic")
            .await
            .unwrap()
            .iter()
            .all(|a| a.version.is_none())
    );
    let (_, v) = w
        .api("mel", "GET", "model-versions/get", v1(json!({})))
        .await;
    let tags = v["model_version"]["tags"].as_array().unwrap();
    let state = tags.iter().find(|t| t["key"] == "falaj.state").unwrap();
    assert_eq!(state["value"], "registered");
    assert_eq!(v["model_version"]["current_stage"], "None");
    // A free alias moves, on its own.
    let (status, _) = w
        .api(
            "dana",
            "POST",
            "registered-models/alias",
            v1(json!({"alias": "champion"})),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn runs_belong_to_their_creator_and_params_do_not_change() {
    let w = world().await;
    let (_, r) = w
        .api(
            "dana",
            "POST",
            "runs/create",
            json!({"experiment_id": "0", "user_id": "mel"}),
        )
        .await;
    let run = r["run"]["info"]["run_id"].as_str().unwrap().to_string();
    // The client's user_id is not believed.
    assert_eq!(r["run"]["info"]["user_id"], "dana");
    let lr = |v: &str| json!({"run_id": run, "key": "lr", "value": v});
    let (status, body) = w.api("sam", "POST", "runs/log-parameter", lr("1")).await;
    assert_eq!((status, code(&body)), (403, "PERMISSION_DENIED"));
    assert_eq!(
        w.api("dana", "POST", "runs/log-parameter", lr("0.1"))
            .await
            .0,
        200
    );
    let batch = json!({"run_id": run, "params": [{"key": "lr", "value": "0.2"}], "metrics": [{"key": "m", "value": 1.0, "timestamp": 1, "step": 0}]});
    let (status, body) = w.api("dana", "POST", "runs/log-batch", batch).await;
    assert_eq!(
        (status, code(&body)),
        (400, "INVALID_PARAMETER_VALUE"),
        "{body}"
    );
    // The refused batch left no metric behind.
    let (_, h) = w
        .api(
            "dana",
            "GET",
            "metrics/get-history",
            json!({"run_id": run, "metric_key": "m"}),
        )
        .await;
    assert_eq!(h["metrics"], json!([]));
    // A run id that is a path trick is not found, not followed.
    let (status, body) = w
        .api("dana", "GET", "runs/get", json!({"run_id": "../../roles"}))
        .await;
    assert_eq!((status, code(&body)), (404, "RESOURCE_DOES_NOT_EXIST"));
    let bad = json!({"run_id": run, "metrics": [{"key": "m", "value": "x", "timestamp": 1}]});
    let (status, body) = w.api("dana", "POST", "runs/log-batch", bad).await;
    assert_eq!(
        (status, code(&body)),
        (400, "INVALID_PARAMETER_VALUE"),
        "{body}"
    );
}

#[tokio::test]
async fn sources_outside_falaj_and_directories_without_a_model_are_refused() {
    let w = world().await;
    let run = w.registered().await;
    for source in [
        "s3://other-bucket/model",
        "file:///etc/passwd",
        "/etc/passwd",
        "models:/clinic/1",
    ] {
        let (status, body) = w
            .api(
                "dana",
                "POST",
                "model-versions/create",
                json!({"name": "clinic", "source": source}),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (400, "INVALID_PARAMETER_VALUE"),
            "{source}: {body}"
        );
    }
    let pkl = artifact(&format!("0/{run}/artifacts/pickled/model.pkl"));
    assert_eq!(w.call("dana", "PUT", &pkl, b"\x80\x04").await.0, 200);
    let create = |dir: &str| json!({"name": "clinic", "source": format!("runs:/{run}/{dir}")});
    let (status, body) = w
        .api("dana", "POST", "model-versions/create", create("pickled"))
        .await;
    assert_eq!(status, 200);
    let mv = &body["model_version"];
    assert_eq!(mv["status"], "FAILED_REGISTRATION");
    assert!(
        mv["status_message"]
            .as_str()
            .unwrap()
            .contains("no ONNX model")
    );
    let get = json!({"name": "clinic", "version": mv["version"]});
    let (_, again) = w.api("dana", "GET", "model-versions/get", get).await;
    assert_eq!(again["model_version"]["status"], "FAILED_REGISTRATION");
    // A broken ONNX file: the same, with the decoder's reason; no version was made.
    let broken = artifact(&format!("0/{run}/artifacts/broken/model.onnx"));
    w.call("dana", "PUT", &broken, b"\x0a\xff\xff").await;
    let (_, body) = w
        .api("dana", "POST", "model-versions/create", create("broken"))
        .await;
    assert_eq!(body["model_version"]["status"], "FAILED_REGISTRATION");
    assert_eq!(w.reg.latest_version("clinic").await.unwrap(), 1);
    // Only a role that may register creates versions.
    let (status, body) = w
        .api("eve", "POST", "model-versions/create", create("model"))
        .await;
    assert_eq!((status, code(&body)), (403, "PERMISSION_DENIED"), "{body}");
}

#[tokio::test]
async fn credentials_other_than_a_token_and_oversized_or_unknown_requests_are_refused() {
    let w = world().await;
    // A signed (single-use) request is for /v1 only; no credentials at all is 401 too.
    let search = "/api/2.0/mlflow/registered-models/search";
    let signed = HttpRequest::new("GET", search)
        .with_header("x-falaj-signature", "v2=00")
        .with_header("x-falaj-timestamp", "0");
    for req in [signed, HttpRequest::new("GET", search)] {
        let r = falaj_mlflow::handle(&w.hook, req).await;
        assert_eq!((r.status, code(&r.json_body())), (401, "UNAUTHENTICATED"));
    }
    let (status, body) = w
        .call("dana", "GET", "/api/2.0/mlflow/no-such/endpoint", b"")
        .await;
    assert_eq!((status, code(&body)), (404, "ENDPOINT_NOT_FOUND"));
    let (status, body) = w
        .call("dana", "POST", "/api/2.0/mlflow/runs/create", b"{not json")
        .await;
    assert_eq!(status, 400, "{body}");
    let big = vec![b'x'; (1 << 20) + 10];
    assert_eq!(
        w.call("dana", "POST", "/api/2.0/mlflow/runs/create", &big)
            .await
            .0,
        413
    );
    // The webhook keeps its own routes on the same handler.
    let r = falaj_mlflow::handle(&w.hook, HttpRequest::new("GET", "/v1/health")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_experiment_name_is_created_once_under_concurrent_creates() {
    let w = world().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let hook = w.hook.clone();
        tasks.push(tokio::spawn(async move {
            api(
                &hook,
                "dana",
                "POST",
                "experiments/create",
                json!({"name": "race"}),
            )
            .await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|(s, b)| *s == 200 || code(b) == "RESOURCE_ALREADY_EXISTS")
    );
    // A name claim left without its experiment object (a crash between the two writes) is
    // completed by the next read.
    let by_name = json!({"experiment_name": "race"});
    let (_, e) = w
        .api("dana", "GET", "experiments/get-by-name", by_name.clone())
        .await;
    let id = e["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = falaj_core::layout::mlflow_experiment(&id).unwrap();
    let root = w.reg.store().uri().trim_start_matches("dir://").to_string();
    std::fs::remove_file(std::path::Path::new(&root).join(key.as_str())).unwrap();
    let (status, again) = w
        .api("dana", "GET", "experiments/get-by-name", by_name)
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["experiment"]["experiment_id"], json!(id));
    assert!(w.reg.store().get(&key).await.unwrap().is_some());
}
