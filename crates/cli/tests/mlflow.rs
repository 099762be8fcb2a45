//! MLflow clients against falaj: the real `mlflow` client (mlflow-skinny from PyPI) runs an
//! unmodified training script (`tests/mlflow/client.py`) against the real `falaj serve` on
//! loopback, on a `dir://` store and on an `s3://` one (moto). The model it logs and
//! registers is governed by falaj: production through MLflow is refused, naming the role,
//! then the gates, then the approvals, until each holds; then it is a signed deployment.

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;
mod serve_support;
#[path = "../../falaj/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use falaj::Registry;
use falaj::store::{self, OpenOptions};
use falaj_core::promotion::Role;
use serde_json::{Value, json};
use serve_support::{bearer, http, start_serve};

const TOKENS: [(&str, &str); 4] = [
    ("dana", "dana-token-0123456789"),
    ("mel", "mel-token-0123456789"),
    ("ann", "ann-token-0123456789"),
    ("bob", "bob-token-0123456789"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

/// Runs a phase of the client script as the MLflow client would be run: only
/// `MLFLOW_TRACKING_*` point it at falaj. Its last line of output is its JSON.
fn client(addr: &str, creds: &[(&str, &str)], args: &[&str]) -> Value {
    let out = Command::new(std::env::var("FALAJ_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(root().join("tests/mlflow/client.py"))
        .args(args)
        .env("MLFLOW_TRACKING_URI", format!("http://{addr}"))
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        // Fail fast on a 5xx instead of retrying for minutes.
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .envs(creds.iter().copied())
        .current_dir(root())
        .output()
        .expect("python3 with mlflow-skinny (scripts/test.sh installs it in target/py)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client.py {args:?} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client.py {args:?} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// The body of a plain HTTP GET of `url` (a presigned URL on the loopback S3).
fn fetch(url: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .expect("an http:// URL on loopback");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    raw[head_end..].to_vec()
}

fn token(who: &str) -> &'static str {
    TOKENS.iter().find(|(w, _)| *w == who).unwrap().1
}

fn tag<'a>(v: &'a Value, k: &str) -> &'a str {
    v["tags"][k].as_str().unwrap_or_default()
}

async fn scenario(uri: &str, endpoint: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        allowed: falaj_core::AllowedRegions::default(),
        create: true,
        endpoint: endpoint.clone(),
    };
    let reg = Registry::new(store::open(uri, &opts).await.unwrap());
    for (who, role) in [
        ("root", Role::Admin),
        ("dana", Role::DataScientist),
        ("mel", Role::MlEngineer),
        ("ann", Role::Approver),
        ("bob", Role::Approver),
    ] {
        falaj::promotion::grant(&reg, "root", who, role)
            .await
            .unwrap();
    }
    let cfg = dir.path().join("webhook.json");
    let config = json!({"tokens": TOKENS.iter().map(|(w, t)| json!({"identity": w, "sha256": falaj_webhook::token_digest(t)})).collect::<Vec<_>>()});
    std::fs::write(&cfg, config.to_string()).unwrap();
    let mut env = vec![];
    let ep;
    if let Some(e) = &endpoint {
        ep = e.clone();
        env.push(("FALAJ_S3_ENDPOINT", ep.as_str()));
    }
    let (_server, _lines, addr) = start_serve(uri, &cfg, dir.path(), &env);

    // The data scientist's script: run, params, metrics, log_model(registered_model_name=).
    let data = root().join("tests/fixtures/datasets/breast_cancer.csv");
    let model = root().join("tests/fixtures/models/pytorch-mlp/model.onnx");
    let dana = [("MLFLOW_TRACKING_TOKEN", token("dana"))];
    let logged = client(
        &addr,
        &dana,
        &["log", data.to_str().unwrap(), model.to_str().unwrap()],
    );
    assert_eq!(logged["version"], "1");
    assert!(
        logged["production_refused"]
            .as_str()
            .unwrap()
            .contains("ml-engineer"),
        "{logged}"
    );
    assert!(
        logged["failed_registration"]
            .as_str()
            .unwrap()
            .contains("FAILED_REGISTRATION")
    );
    assert!(logged["mlmodel_downloaded"].as_bool().unwrap());
    assert_eq!(tag(&logged, "falaj.state"), "registered");
    assert_eq!(
        tag(&logged, "falaj.manifest"),
        "from the MLflow input example"
    );

    // In falaj: version 1, by dana, self-contained (the weights MLflow kept beside the graph
    // are inside it), with the manifest and lineage from the run.
    let v = reg.version("clinic", 1).await.unwrap();
    assert_eq!(v.author, "dana");
    assert_eq!(v.lineage.hyperparameters["lr"], "0.01");
    assert_eq!(v.lineage.datasets.len(), 1);
    assert!(
        v.lineage.datasets[0].uri.ends_with("breast_cancer.csv"),
        "{:?}",
        v.lineage
    );
    assert!(v.lineage.datasets[0].digest.starts_with("mlflow:"));
    assert!((v.metrics["accuracy"] - 0.96).abs() < 1e-12);
    let m = falaj::reports::manifest_of(&reg, &v).await.unwrap();
    assert_eq!(m.features.len(), 30);
    assert_eq!(m.target, "diagnosis");
    assert_eq!(m.classes, ["benign", "malignant"]);
    assert_eq!(m.run_id, logged["run_id"].as_str().unwrap());
    let blob = falaj::reports::artifact_of(&reg, &v).await.unwrap();
    assert!(!falaj_core::onnx::has_external_data(&blob).unwrap());

    // The console draws the run's metric history (loss at steps 0..4) as the version's
    // training curve.
    let (code, page) = http(
        &addr,
        "GET",
        "/ui/models/clinic/versions/1",
        &[
            ("Authorization", format!("Bearer {}", token("mel"))),
            ("Accept", "application/json".into()),
        ],
        b"",
    );
    assert_eq!(code, 200, "{page}");
    let from = page["curve_from"].as_str().unwrap_or_default();
    assert_eq!(
        from,
        format!("MLflow run {}", logged["run_id"].as_str().unwrap())
    );
    let losses: Vec<f64> = page["curve"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["values"]["loss"].as_f64())
        .collect();
    assert_eq!(losses, [1.0, 0.5, 1.0 / 3.0, 0.25, 0.2]);

    // On S3 a download is a presigned URL into the store (the server-info tells the client),
    // so no large body passes through the function; on dir:// there is none (501).
    let (code, info) = http(&addr, "GET", "/api/3.0/mlflow/server-info", &[], b"");
    assert_eq!(code, 200);
    assert_eq!(info["multipart_downloads_enabled"], endpoint.is_some());
    let (code, p) = http(
        &addr,
        "GET",
        "/api/2.0/mlflow-artifacts/presigned/_registry/clinic/1/model.onnx",
        &bearer(token("dana")),
        b"",
    );
    if endpoint.is_some() {
        assert_eq!(code, 200, "{p}");
        let url = p["url"].as_str().unwrap();
        let fetched = fetch(url);
        assert_eq!(fetched.len() as u64, p["file_size"].as_u64().unwrap());
        // The file as logged (its weights in the file beside it), as recorded at registration.
        let side_key = falaj_core::layout::mlflow_version("clinic", 1).unwrap();
        let (side, _) = reg.get_json::<Value>(&side_key).await.unwrap().unwrap();
        use sha2::Digest;
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&fetched)));
        assert_eq!(side["files"]["model.onnx"], json!(digest));
        assert!(falaj_core::onnx::has_external_data(&fetched).unwrap());
    } else {
        assert_eq!(
            (code, p["error_code"].as_str()),
            (501, Some("NOT_IMPLEMENTED")),
            "{p}"
        );
    }

    // The ML engineer, through MLflow: refused until the gates pass, then until approved.
    let policy =
        std::fs::read_to_string(root().join("tests/fixtures/policies/breast_cancer.toml")).unwrap();
    falaj::promotion::set_policy(&reg, "clinic", "gates.toml", &policy, "mel")
        .await
        .unwrap();
    let mel = [("MLFLOW_TRACKING_TOKEN", token("mel"))];
    let r = client(&addr, &mel, &["refused"]);
    assert!(r["refused"].as_str().unwrap().contains("validat"), "{r}");
    gates_fixtures::put_object(
        &reg,
        "datasets/clinic/holdout.csv",
        std::fs::read(&data).unwrap(),
    )
    .await;
    let (code, body) = http(
        &addr,
        "POST",
        "/v1/models/clinic/versions/1/validate",
        &bearer(token("mel")),
        br#"{"holdout": "datasets/clinic/holdout.csv"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let r = client(&addr, &mel, &["refused"]);
    assert!(r["refused"].as_str().unwrap().contains("approv"), "{r}");
    assert!(tag(&r, "falaj.gates").starts_with("passed"), "{r}");
    assert_eq!(tag(&r, "falaj.state"), "validated");
    for who in ["ann", "bob"] {
        let (code, body) = http(
            &addr,
            "POST",
            "/v1/models/clinic/versions/1/approvals",
            &bearer(token(who)),
            br#"{"to": "production"}"#,
        );
        assert_eq!(code, 200, "{body}");
    }

    // Basic credentials (identity + token), as MLFLOW_TRACKING_USERNAME/PASSWORD send them.
    let basic = [
        ("MLFLOW_TRACKING_USERNAME", "mel"),
        ("MLFLOW_TRACKING_PASSWORD", token("mel")),
    ];
    let p = client(&addr, &basic, &["promote"]);
    assert!(
        p["aliases"]
            .as_array()
            .unwrap()
            .contains(&json!("production")),
        "{p}"
    );
    assert_eq!(tag(&p, "falaj.state"), "production");
    assert_eq!(p["stage"], "Production");
    assert!(tag(&p, "falaj.approvals").contains("ann"), "{p}");
    // A signed deployment names it.
    let d = falaj::deploy::status(&reg, "clinic", "prod").await.unwrap();
    assert_eq!(d.champion_alias, Some(1));
    assert!(d.manifest.is_some() && d.divergence.is_none(), "{d:?}");

    // Wrong credentials: the client's own exception, UNAUTHENTICATED.
    let denied = client(
        &addr,
        &[("MLFLOW_TRACKING_TOKEN", "not-a-token")],
        &["denied"],
    );
    assert!(
        denied["denied"]
            .as_str()
            .unwrap()
            .contains("not recognised")
    );
    let wrong_user = [
        ("MLFLOW_TRACKING_USERNAME", "ann"),
        ("MLFLOW_TRACKING_PASSWORD", token("mel")),
    ];
    client(&addr, &wrong_user, &["denied"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mlflow_training_script_registers_and_falaj_governs_the_promotion_on_dir() {
    let d = tempfile::tempdir().unwrap();
    scenario(&format!("dir://{}", d.path().join("store").display()), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mlflow_training_script_registers_and_falaj_governs_the_promotion_on_s3() {
    let bucket = support::s3_bucket("me-central-1").await;
    scenario(&format!("s3://{bucket}/reg"), Some(support::s3_endpoint())).await;
}
