//! `falaj serve`, the embedded default: the real CLI binary, real HTTP on loopback. An upload
//! into `incoming/` becomes a registered, validated, staged version with no other command;
//! approvals and the production promotion then go through the webhook API over HTTP.

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

mod serve_support;

use gates_fixtures::*;
use serde_json::{Value, json};
use serve_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_registered_validated_and_staged_without_any_other_command() {
    let e = env().await;
    create(&e.reg, "bc").await;
    let policy = std::fs::read_to_string(policy_fixture("breast_cancer.toml")).unwrap()
        + "\n[holdout]\nkey = \"datasets/bc/holdout.csv\"\n";
    let policy = policy.replace("[promotion]\n", "[promotion]\nauto_staging = true\n");
    falaj::promotion::set_policy(&e.reg, "bc", "gates.toml", &policy, "mel")
        .await
        .unwrap();
    put_object(
        &e.reg,
        "datasets/bc/holdout.csv",
        std::fs::read(dataset("breast_cancer.csv")).unwrap(),
    )
    .await;

    let tokens = [
        ("ann", "ann-token-0123456789"),
        ("bob", "bob-token-0123456789"),
        ("mel", "mel-token-0123456789"),
    ];
    let ci_secret = "ci-secret-0123456789abcdef";
    let config = json!({
        "ci": [{"identity": "mel", "secret": ci_secret}],
        "tokens": tokens.iter().map(|(w, t)| json!({"identity": w, "sha256": falaj_webhook::token_digest(t)})).collect::<Vec<_>>(),
    });
    let cfg = e.dir.path().join("webhook.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let store = format!("dir://{}", e.dir.path().join("store").display());
    let (server, mut lines, addr) = start_serve(&store, &cfg, e.dir.path(), &[]);
    let (code, _) = http(&addr, "GET", "/v1/health", &[], b"");
    assert_eq!(code, 200);

    // The trainer's upload: model first, manifest last. Nothing else is run.
    let fitted = breast_cancer();
    let mut manifest = fitted.manifest.clone();
    manifest.model = "bc".into();
    put_object(&e.reg, "incoming/bc/run 1/model.onnx", fitted.onnx.clone()).await;
    put_object(
        &e.reg,
        "incoming/bc/run 1/manifest.json",
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await;
    let mut steps = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !steps.iter().any(|s: &Value| s["step"] == "staged") {
        assert!(
            Instant::now() < deadline,
            "no staging after the upload; steps so far: {steps:?}"
        );
        let line = lines.next().expect("serve is running").unwrap();
        steps.push(serde_json::from_str(&line).unwrap());
    }
    assert_eq!(steps[0]["step"], "ingest", "{steps:?}");
    assert_eq!(steps[0]["outcome"], "registered", "{steps:?}");
    assert_eq!(steps[1]["step"], "validate", "{steps:?}");
    assert_eq!(steps[1]["passed"], true, "{steps:?}");
    assert!(steps[2]["result"].get("error").is_none(), "{steps:?}");
    let v = e.reg.version("bc", 1).await.unwrap();
    assert_eq!(v.author, falaj::ingest::INGEST_ACTOR);
    assert!(
        falaj_gates::latest_report(&e.reg, "bc", 1)
            .await
            .unwrap()
            .unwrap()
            .passed
    );
    assert_eq!(
        e.reg
            .alias("bc", "staging")
            .await
            .unwrap()
            .unwrap()
            .0
            .version,
        Some(1)
    );

    // Approvals and the production promotion through the webhook over HTTP.
    let body = br#"{"to":"production"}"#;
    let (code, err) = http(
        &addr,
        "POST",
        "/v1/models/bc/versions/1/promote",
        &bearer(tokens[2].1),
        body,
    );
    assert_eq!(code, 422, "production needs two approvals first: {err}");
    for (_, t) in &tokens[..2] {
        let (code, b) = http(
            &addr,
            "POST",
            "/v1/models/bc/versions/1/approvals",
            &bearer(t),
            body,
        );
        assert!(code == 200 || code == 201, "{code} {b}");
    }
    let (code, b) = http(
        &addr,
        "POST",
        "/v1/models/bc/versions/1/promote",
        &bearer(tokens[2].1),
        body,
    );
    assert!(code == 200 || code == 201, "{code} {b}");
    assert_eq!(
        e.reg
            .alias("bc", "production")
            .await
            .unwrap()
            .unwrap()
            .0
            .version,
        Some(1)
    );

    // A signed CI request (mel holds ml-engineer, not approver: 403), then the same bytes
    // replayed: refused as a replay before anything else is looked at.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signed_body = br#"{"to":"production","nonce":"ci-run-42"}"#;
    let signed = vec![
        ("X-Falaj-Identity", "mel".to_string()),
        ("X-Falaj-Timestamp", ts.to_string()),
        (
            "X-Falaj-Signature",
            falaj_webhook::sign(
                ci_secret,
                ts,
                "POST",
                "/v1/models/bc/versions/1/approvals",
                signed_body,
            ),
        ),
        ("Content-Type", "application/json".to_string()),
    ];
    let (code, b) = http(
        &addr,
        "POST",
        "/v1/models/bc/versions/1/approvals",
        &signed,
        signed_body,
    );
    assert_eq!(code, 403, "{b}");
    let (code, b) = http(
        &addr,
        "POST",
        "/v1/models/bc/versions/1/approvals",
        &signed,
        signed_body,
    );
    assert_eq!(code, 409, "a replayed signature is refused: {b}");
    let mut forged = signed.clone();
    forged[2].1 = falaj_webhook::sign(
        "not-the-secret-0123456789",
        ts,
        "POST",
        "/v1/models/bc/versions/1/approvals",
        signed_body,
    );
    let (code, _) = http(
        &addr,
        "POST",
        "/v1/models/bc/versions/1/approvals",
        &forged,
        signed_body,
    );
    assert_eq!(code, 401);
    // Attack: a signed GET seen in a CI log, replayed as a rollback. The v2 signature binds
    // the method and path, so the POST is refused; the GET itself is spent after one use.
    let get_sig = |path: &str| {
        vec![
            ("X-Falaj-Identity", "mel".to_string()),
            ("X-Falaj-Timestamp", ts.to_string()),
            (
                "X-Falaj-Signature",
                falaj_webhook::sign(ci_secret, ts, "GET", path, b""),
            ),
        ]
    };
    let seen = get_sig("/v1/models/bc/deployments/prod");
    let (code, b) = http(&addr, "GET", "/v1/models/bc/deployments/prod", &seen, b"");
    assert!(code == 200 || code == 404, "{code} {b}");
    let (code, b) = http(
        &addr,
        "POST",
        "/v1/models/bc/deployments/prod/rollback",
        &seen,
        b"",
    );
    assert_eq!(code, 401, "a GET's signature does not sign a rollback: {b}");
    assert_eq!(b["error"]["code"], "signature_mismatch", "{b}");
    let (code, b) = http(&addr, "GET", "/v1/models/bc/deployments/prod", &seen, b"");
    assert_eq!(code, 409, "a signed GET is accepted once: {b}");
    let (code, b) = http(&addr, "GET", "/v1/models/bc", &seen, b"");
    assert_eq!(code, 401, "nor on another GET route: {b}");
    // The body-only signature of earlier releases is refused, saying how to sign v2.
    let v1 = vec![
        ("X-Falaj-Identity", "mel".to_string()),
        ("X-Falaj-Timestamp", ts.to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64))),
    ];
    let (code, b) = http(&addr, "GET", "/v1/models/bc", &v1, b"");
    assert_eq!(code, 401, "{b}");
    assert_eq!(b["error"]["code"], "signature_v1_refused", "{b}");
    assert!(b.to_string().contains("X-Falaj-Signature"), "{b}");
    // An oversized body is refused before it is read whole.
    let big = vec![b'x'; 2 << 20];
    let (code, _) = http(
        &addr,
        "POST",
        "/v1/models/bc/versions/1/approvals",
        &bearer(tokens[0].1),
        &big,
    );
    assert_eq!(code, 413);
    drop(server);
    assert!(e.reg.verify_audit("bc").await.unwrap().is_empty());
}

/// `falaj-train`, built beside `falaj` by `cargo build --workspace --bins` (scripts/test.sh).
fn trainer() -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_falaj")).with_file_name("falaj-train");
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Runs `falaj serve --once --json` and returns the steps it printed.
fn serve_once(store: &str, dir: &std::path::Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_falaj"))
        .args([
            "--store",
            store,
            "--json",
            "serve",
            "--once",
            "--retrain-dir",
        ])
        .arg(dir.join("retrain"))
        .arg("--trainer")
        .arg(trainer())
        .env("FALAJ_SIGNING_KEY", dir.join("signing.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn serve_once_runs_a_retraining_request_and_registers_what_it_trained() {
    let e = env().await;
    let store = format!("dir://{}", e.dir.path().join("store").display());
    let wine = std::fs::read(dataset("wine.csv")).unwrap();
    put_object(&e.reg, "datasets/wine/train.csv", wine.clone()).await;
    let data = format!("{store}/datasets/wine/train.csv");
    let trained = Command::new(trainer())
        .args(["--data", &data, "--target", "cultivar", "--model", "wine"])
        .args(["--hidden", "8", "--epochs", "2", "--run-id", "first"])
        .args(["--store", &store, "--out"])
        .arg(e.dir.path().join("out"))
        .output()
        .unwrap();
    assert!(trained.status.success(), "{trained:?}");
    let steps = serve_once(&store, e.dir.path());
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "ingest" && s["outcome"] == "registered" && s["version"] == 1),
        "{steps:?}"
    );

    let text = String::from_utf8(wine).unwrap();
    let labelled: Vec<&str> = text.lines().take(11).collect();
    put_object(
        &e.reg,
        "datasets/wine/labelled/l.csv",
        (labelled.join("\n") + "\n").into_bytes(),
    )
    .await;
    let request = json!({
        "schema": 1, "model": "wine", "version": 1, "env": "prod",
        "requested_at": "2026-12-01T00:00:00Z", "requested_by": "falaj-drift",
        "drifted": ["alcohol"],
        "report": {"model": "wine", "version": 1, "rows": 300, "windows": 1,
                   "rule": {"psi": 0.25, "ks": null, "min_rows": 200}, "features": [],
                   "enough_rows": true, "drifted": ["alcohol"]},
        "dataset": data, "labelled": ["datasets/wine/labelled/l.csv"],
        "target": "cultivar", "telemetry": []
    });
    put_object(
        &e.reg,
        "retrain/wine/20261201T000000Z-v1.json",
        serde_json::to_vec(&request).unwrap(),
    )
    .await;
    let steps = serve_once(&store, e.dir.path());
    let kinds: Vec<String> = steps
        .iter()
        .map(|s| format!("{}:{}", s["step"], s["outcome"]).replace('"', ""))
        .collect();
    assert!(
        kinds.ends_with(&[
            "retrain:started".into(),
            "retrain:trained".into(),
            "ingest:registered".into(),
            "validate:skipped".into(),
        ]),
        "{kinds:?}"
    );
    let v2 = e.reg.version("wine", 2).await.unwrap();
    assert_eq!(v2.lineage.parent_version, Some(1));
    // A second pass trains nothing: the request is claimed and done.
    let again = serve_once(&store, e.dir.path());
    assert!(again.iter().all(|s| s["step"] != "retrain"), "{again:?}");
}

/// Slowloris: clients that send half a request and stall are cut off after the header
/// timeout, and past the connection cap new clients wait for a slot instead of piling up.
#[tokio::test]
async fn stalled_clients_are_cut_off_and_the_connection_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("webhook.json");
    std::fs::write(&cfg, json!({"tokens": []}).to_string()).unwrap();
    let store = format!("dir://{}", dir.path().join("store").display());
    let (_server, _lines, addr) = start_serve(
        &store,
        &cfg,
        dir.path(),
        &[
            ("FALAJ_HTTP_HEADER_TIMEOUT_MS", "400"),
            ("FALAJ_HTTP_MAX_CONNECTIONS", "4"),
        ],
    );
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // Every slot is held: a fifth client is answered only once the stalled ones are cut off.
    let t = Instant::now();
    let (code, _) = http(&addr, "GET", "/v1/health", &[], b"");
    assert_eq!(code, 200);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "the fifth connection was served at once ({waited:?}): no connection cap"
    );
    // The server closed every stalled connection (a read sees the end, not a time-out).
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        assert!(r.is_ok(), "a stalled client was never cut off: {r:?}");
    }
}
