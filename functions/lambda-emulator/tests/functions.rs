//! The compiled function binaries, unmodified, under the Lambda Runtime API: each is started
//! as Lambda starts a `provided.al2023` bootstrap, fetches real event shapes over HTTP and
//! posts its answer; the registry state is checked afterwards.
//!
//! The binaries are the workspace's `falaj-fn-*` builds next to this test's executable
//! (`cargo test --workspace` builds them first); a missing one fails with the command to run.

#[path = "../../../crates/falaj/tests/gates_fixtures/mod.rs"]
mod fx;

use std::path::{Path, PathBuf};
use std::time::Duration;

use falaj::VersionFilter;
use falaj_lambda_emulator::{Emulator, Outcome};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build -p {name}` (`scripts/test.sh` builds every function binary before `cargo test --workspace`)",
        bin.display()
    );
    bin
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn store_uri(e: &fx::Env) -> String {
    format!("dir://{}", e.dir.path().join("store").display())
}

/// An S3 notification for one object, as S3 sends it (key URL-encoded).
fn s3_event(key_encoded: &str, etag: &str) -> Value {
    let mut ev = fixture("s3-put-manifest.json");
    ev["Records"][0]["s3"]["object"]["key"] = json!(key_encoded);
    ev["Records"][0]["s3"]["object"]["eTag"] = json!(etag);
    ev
}

/// An EventBridge "Object Created" event for one object.
fn eventbridge_event(key: &str) -> Value {
    let mut ev = fixture("eventbridge-object-created.json");
    ev["detail"]["object"]["key"] = json!(key);
    ev
}

fn response(o: &Outcome) -> &Value {
    match o {
        Outcome::Response(v) => v,
        Outcome::Error { error_type, body } => panic!("function failed: {error_type}: {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_registers_then_validates_under_the_runtime_api() {
    let e = fx::env().await;
    fx::create(&e.reg, "bc").await;
    let fitted = fx::breast_cancer();
    let policy = std::fs::read_to_string(fx::policy_fixture("breast_cancer.toml")).unwrap()
        + "\n[holdout]\nkey = \"datasets/bc/holdout.csv\"\n";
    let policy = policy.replace("[promotion]\n", "[promotion]\nauto_staging = true\n");
    falaj::promotion::set_policy(&e.reg, "bc", "gates.toml", &policy, "mel")
        .await
        .unwrap();
    fx::put_object(
        &e.reg,
        "datasets/bc/holdout.csv",
        std::fs::read(fx::dataset("breast_cancer.csv")).unwrap(),
    )
    .await;

    // The trainer's upload: model first, manifest last.
    let mut manifest = fitted.manifest.clone();
    manifest.model = "bc".into();
    fx::put_object(&e.reg, "incoming/bc/run 7/model.onnx", fitted.onnx.clone()).await;
    fx::put_object(
        &e.reg,
        "incoming/bc/run 7/manifest.json",
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await;

    let emu = Emulator::start().await.unwrap();
    let uri = store_uri(&e);
    let env = [("FALAJ_STORE", uri.as_str()), ("FALAJ_LOG", "info")];
    let mut ingest = emu.spawn(&binary("falaj-fn-ingest"), &env).unwrap();

    // First delivery registers; a duplicate and a late replay return the same version.
    let ev = s3_event("incoming/bc/run+7/manifest.json", "e1");
    let first = emu.invoke(&ev, WAIT).await.expect("ingest answered");
    assert_eq!(
        response(&first.outcome)["results"][0]["outcome"],
        "registered",
        "{first:?}"
    );
    assert_eq!(response(&first.outcome)["results"][0]["version"], 1);
    for _ in 0..2 {
        let again = emu.invoke(&ev, WAIT).await.expect("ingest answered");
        assert_eq!(
            response(&again.outcome)["results"][0]["outcome"],
            "duplicate",
            "{again:?}"
        );
        assert_eq!(response(&again.outcome)["results"][0]["version"], 1);
    }
    // A batch with a poison record (record 1: its key is a number) fails the invocation,
    // naming the record; record 0 is registered, record 2 (outside incoming/) ignored.
    let mut wine = manifest.clone();
    wine.model = "wine".into();
    fx::put_object(&e.reg, "incoming/wine/run2/model.onnx", fitted.onnx.clone()).await;
    fx::put_object(
        &e.reg,
        "incoming/wine/run2/manifest.json",
        serde_json::to_vec(&wine).unwrap(),
    )
    .await;
    let poison = emu
        .invoke(&fixture("s3-batch-poison.json"), WAIT)
        .await
        .expect("ingest answered");
    match &poison.outcome {
        Outcome::Error { body, .. } => {
            assert_eq!(body["errorType"], "RecordsFailed", "{body}");
            let msg = body["errorMessage"].as_str().unwrap();
            assert!(msg.contains("record 1"), "{msg}");
        }
        other => panic!("a poison record must fail the invocation: {other:?}"),
    }
    // Something that is not an S3 event at all.
    let bad = emu
        .invoke(&json!({"hello": "world"}), WAIT)
        .await
        .expect("ingest answered");
    assert!(
        matches!(&bad.outcome, Outcome::Error { body, .. } if body["errorType"] == "InvalidEvent"),
        "{bad:?}"
    );
    assert_eq!(
        e.reg
            .versions("wine", &VersionFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    ingest.kill().await.unwrap();
    assert!(emu.init_errors().is_empty(), "{:?}", emu.init_errors());
    let versions = e
        .reg
        .versions("bc", &VersionFilter::default())
        .await
        .unwrap();
    assert_eq!(
        versions.len(),
        1,
        "exactly one version however often delivered"
    );
    assert_eq!(versions[0].author, falaj::ingest::INGEST_ACTOR);

    // The version record's creation reaches the validate function.
    let mut validate = emu.spawn(&binary("falaj-fn-validate"), &env).unwrap();
    let out = emu
        .invoke(&eventbridge_event("models/bc/versions/1.json"), WAIT)
        .await
        .expect("validate answered");
    let r = &response(&out.outcome)["results"][0];
    assert_eq!(r["outcome"], "validated", "{r}");
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["promote_to_staging"], true, "{r}");
    assert_eq!(r["report"], "models/bc/versions/1/gates.json");
    // A duplicate delivery writes no second report.
    let again = emu
        .invoke(&eventbridge_event("models/bc/versions/1.json"), WAIT)
        .await
        .expect("validate answered");
    assert_eq!(
        response(&again.outcome)["results"][0]["outcome"],
        "skipped",
        "{again:?}"
    );
    // Other objects under models/ are ignored.
    let other = emu
        .invoke(&eventbridge_event("models/bc/versions/1/gates.json"), WAIT)
        .await
        .expect("validate answered");
    assert_eq!(
        response(&other.outcome)["results"][0]["outcome"],
        "ignored",
        "{other:?}"
    );
    validate.kill().await.unwrap();
    let reports = falaj_gates::reports(&e.reg, "bc", 1).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].passed);
    assert_eq!(reports[0].evaluated_by, falaj_core::promotion::VALIDATOR);

    // Lambda hands validate's response to promote (its on-success destination): staging.
    let seed = [9u8; 32];
    let key_file = e.dir.path().join("signing.key");
    std::fs::write(&key_file, hex(&seed)).unwrap();
    let key_path = key_file.display().to_string();
    let promote_emu = Emulator::start().await.unwrap();
    let promote_env = [
        ("FALAJ_STORE", uri.as_str()),
        ("FALAJ_SIGNING_KEY", key_path.as_str()),
    ];
    let mut promote = promote_emu
        .spawn(&binary("falaj-fn-promote"), &promote_env)
        .unwrap();
    let destination = json!({
        "version": "1.0",
        "timestamp": "2026-11-23T10:06:00.000Z",
        "requestContext": {
            "requestId": out.request_id,
            "functionArn": "arn:aws:lambda:me-central-1:111122223333:function:falaj-fn-validate:$LATEST",
            "condition": "Success",
            "approximateInvokeCount": 1
        },
        "requestPayload": eventbridge_event("models/bc/versions/1.json"),
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": response(&out.outcome)
    });
    let staged = promote_emu
        .invoke(&destination, WAIT)
        .await
        .expect("promote answered");
    response(&staged.outcome);
    let (alias, _) = e
        .reg
        .alias("bc", "staging")
        .await
        .unwrap()
        .expect("staging moved");
    assert_eq!(alias.version, Some(1));
    assert_eq!(alias.moved_by, falaj_core::promotion::VALIDATOR);

    // The webhook function, behind API Gateway, invokes promote over Lambda's Invoke API.
    let tokens = [
        ("ann", "ann-token-0123456789"),
        ("bob", "bob-token-0123456789"),
        ("mel", "mel-token-0123456789"),
        ("sam", "sam-token-0123456789"),
    ];
    let config = json!({"tokens": tokens.iter().map(|(who, t)| json!({"identity": who, "sha256": falaj_webhook::token_digest(t)})).collect::<Vec<_>>()});
    let config_file = e.dir.path().join("webhook.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let config_path = config_file.display().to_string();
    // One Lambda endpoint for the webhook's client, as in AWS: promote polls it, and calls
    // for the validate function go to a validate process of their own.
    let lambda_endpoint = format!("http://{}", promote_emu.endpoint());
    let validate_emu = Emulator::start().await.unwrap();
    let mut validate = validate_emu
        .spawn(&binary("falaj-fn-validate"), &env)
        .unwrap();
    promote_emu.forward_invocations("falaj-fn-validate", &validate_emu);
    let hook_env = [
        ("FALAJ_STORE", uri.as_str()),
        ("FALAJ_WEBHOOK_CONFIG", config_path.as_str()),
        ("FALAJ_PROMOTE_FUNCTION", "falaj-fn-promote"),
        ("FALAJ_VALIDATE_FUNCTION", "falaj-fn-validate"),
        ("AWS_ENDPOINT_URL_LAMBDA", lambda_endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "emulated"),
        ("AWS_SECRET_ACCESS_KEY", "emulated"),
        ("AWS_SESSION_TOKEN", "emulated"),
    ];
    let hook_emu = Emulator::start().await.unwrap();
    let mut hook = hook_emu
        .spawn(&binary("falaj-fn-webhook"), &hook_env)
        .unwrap();
    let call = |method: &str, path: &str, token: Option<&str>, body: Value| {
        let token = token.map(|t| tokens.iter().find(|(w, _)| *w == t).unwrap().1);
        apigw_event(method, path, token, &body)
    };
    let status = |ev: Value| http_status(&hook_emu, ev);
    let (code, body) = status(call(
        "POST",
        "/v1/models/bc/versions/1/approvals",
        None,
        json!({"to": "production"}),
    ))
    .await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = status(call(
        "POST",
        "/v1/models/bc/versions/1/approvals",
        Some("sam"),
        json!({"to": "production"}),
    ))
    .await;
    assert_eq!(code, 403, "a data scientist may not approve: {body}");
    for who in ["ann", "bob"] {
        let (code, body) = status(call(
            "POST",
            "/v1/models/bc/versions/1/approvals",
            Some(who),
            json!({"to": "production"}),
        ))
        .await;
        assert!(code == 200 || code == 201, "{who}: {code} {body}");
    }
    let (code, body) = status(call(
        "POST",
        "/v1/models/bc/versions/1/promote",
        Some("mel"),
        json!({"to": "production"}),
    ))
    .await;
    assert!(code == 200 || code == 201, "{code} {body}");
    let (code, body) = status(call(
        "GET",
        "/v1/models/bc/versions/production",
        Some("sam"),
        Value::Null,
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"]["version"], 1, "{body}");

    // POST …/validate: the webhook (no tract in it) hands the run to the validate function,
    // which writes the second gate report; its errors come back with their status and code.
    let (code, body) = status(call(
        "POST",
        "/v1/models/bc/versions/1/validate",
        Some("sam"),
        json!({"holdout": "datasets/bc/holdout.csv"}),
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["report"]["run"], 2, "{body}");
    assert_eq!(body["report"]["passed"], true, "{body}");
    let reports = falaj_gates::reports(&e.reg, "bc", 1).await.unwrap();
    assert_eq!(reports.len(), 2, "the validate function wrote run 2");
    let (code, body) = status(call(
        "POST",
        "/v1/models/bc/versions/1/validate",
        Some("sam"),
        json!({"holdout": "datasets/bc/missing.csv"}),
    ))
    .await;
    assert!(
        (400..500).contains(&code),
        "a missing holdout is the caller's error: {code} {body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("missing.csv"),
        "{body}"
    );
    assert_eq!(
        falaj_gates::reports(&e.reg, "bc", 1).await.unwrap().len(),
        2
    );
    // Both runs were the validate function's, not the webhook's own.
    let runs = validate_emu.invocations();
    assert_eq!(runs.len(), 2, "validate was invoked twice: {runs:?}");
    assert!(matches!(&runs[0].outcome, Outcome::Response(r) if r["run"] == 2));
    assert!(
        matches!(&runs[1].outcome, Outcome::Error { body, .. } if body["errorType"] == "invalid_holdout"),
        "{:?}",
        runs[1].outcome
    );
    hook.kill().await.unwrap();
    promote.kill().await.unwrap();
    validate.kill().await.unwrap();

    let (alias, _) = e
        .reg
        .alias("bc", "production")
        .await
        .unwrap()
        .expect("production moved");
    assert_eq!(alias.version, Some(1));
    assert_eq!(alias.moved_by, "mel");
    let signed = e
        .reg
        .store()
        .get(&falaj::deploy::deployment_key("prod", "bc"))
        .await
        .unwrap()
        .expect("manifest written");
    let public = falaj::deploy::DeployKey::from_seed(seed).public();
    let m = falaj_core::deployment::verify(&signed.bytes, &public)
        .expect("signed by the promote function's key");
    assert_eq!(m.champion.version, 1);
    assert!(
        e.reg.verify_audit("bc").await.unwrap().is_empty(),
        "audit chain intact"
    );
}

/// Invokes the webhook function with `ev`; its status code and decoded JSON body.
async fn http_status(emu: &Emulator, ev: Value) -> (u64, Value) {
    let r = emu.invoke(&ev, WAIT).await.expect("webhook answered");
    let v = response(&r.outcome).clone();
    let body = v["body"].as_str().unwrap_or("null");
    (
        v["statusCode"].as_u64().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An API Gateway HTTP API (payload v2) event, as the webhook function receives it.
fn apigw_event(method: &str, path: &str, token: Option<&str>, body: &Value) -> Value {
    let mut headers = json!({"content-type": "application/json", "user-agent": "ci/1.0", "host": "abc123.execute-api.me-central-1.amazonaws.com"});
    if let Some(t) = token {
        headers["authorization"] = json!(format!("Bearer {t}"));
    }
    let mut ev = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "111122223333",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.me-central-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "10.0.0.7", "userAgent": "ci/1.0"},
            "requestId": "Jx1aBcDeFgHiJkL=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "23/Nov/2026:10:07:00 +0000",
            "timeEpoch": 1795428420000u64
        },
        "isBase64Encoded": false
    });
    if !body.is_null() {
        ev["body"] = json!(body.to_string());
    }
    ev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_without_its_store_reports_an_init_error() {
    let emu = Emulator::start().await.unwrap();
    let mut child = emu
        .spawn(
            &binary("falaj-fn-ingest"),
            &[("FALAJ_STORE", "dir:///nonexistent/falaj-store")],
        )
        .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(
        !status.success(),
        "a function that cannot open its store must not serve"
    );
    assert_eq!(
        emu.next_polls(),
        0,
        "it must not fetch events it cannot handle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drift_function_answers_its_schedule_under_the_runtime_api() {
    let e = fx::env().await;
    fx::create(&e.reg, "bc").await;
    let emu = Emulator::start().await.unwrap();
    let uri = store_uri(&e);
    let mut drift = emu
        .spawn(&binary("falaj-fn-drift"), &[("FALAJ_STORE", uri.as_str())])
        .unwrap();

    // The schedule's event as EventBridge sends it: every model deployed to prod (none yet).
    let scheduled = fixture("eventbridge-scheduled.json");
    let r = emu.invoke(&scheduled, WAIT).await.expect("drift answered");
    assert_eq!(response(&r.outcome)["env"], "prod", "{r:?}");
    assert_eq!(response(&r.outcome)["models"], json!([]));

    // A named model that is not deployed: a verdict of no data, not a failure.
    let r = emu
        .invoke(&json!({"env": "production", "models": ["bc"]}), WAIT)
        .await
        .expect("drift answered");
    let result = &response(&r.outcome)["models"][0]["result"];
    assert_eq!(result["outcome"], "no_data", "{r:?}");
    assert!(result["reason"].as_str().unwrap().contains("not deployed"));

    // A bad threshold fails the invocation with a named error type.
    let r = emu
        .invoke(&json!({"psi": -1}), WAIT)
        .await
        .expect("drift answered");
    match &r.outcome {
        Outcome::Error { body, .. } => {
            assert_eq!(body["errorType"], "DriftCheckFailed", "{body}");
            assert!(
                body["errorMessage"].as_str().unwrap().contains("psi"),
                "{body}"
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    drift.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_function_asks_promote_for_a_canary_look_on_its_schedule() {
    use falaj_core::deployment::{DeploymentManifest, SCHEMA, Slot, Strategy};
    let e = fx::env().await;
    let policy = "[metrics]\naccuracy = { min = 0.9 }\n[canary]\nsteps = [10, 100]\n";
    fx::attach_policy(&e.reg, "bc", policy).await;
    let f = fx::breast_cancer();
    let (v1, v2) = (
        fx::register(&e.reg, "bc", &f, "sam").await,
        fx::register(&e.reg, "bc", &f, "sam").await,
    );
    let mut slots = Vec::new();
    for v in [v1, v2] {
        let r = e.reg.version("bc", v).await.unwrap();
        slots.push(Slot::new(v, r.digest));
    }
    let seed = [9u8; 32];
    let key = falaj::deploy::DeployKey::from_seed(seed);
    falaj::deploy::publish_key(&e.reg, &key).await.unwrap();
    let m = DeploymentManifest {
        schema: SCHEMA,
        env: "prod".into(),
        model: "bc".into(),
        generation: 3,
        strategy: Strategy::Canary,
        champion: slots[0].clone(),
        challenger: Some(slots[1].clone()),
        challenger_weight: 10,
        standby: None,
        history: Vec::new(),
        updated_by: "mel".into(),
        updated_at: "2026-12-04T10:00:00Z".into(),
        event_seq: None,
        challenger_mode: Default::default(),
        split_key: None,
    };
    fx::put_object(
        &e.reg,
        "deployments/prod/bc.json",
        serde_json::to_vec(&key.sign(&m)).unwrap(),
    )
    .await;

    let uri = store_uri(&e);
    let key_file = e.dir.path().join("signing.key");
    std::fs::write(&key_file, hex(&seed)).unwrap();
    let key_path = key_file.display().to_string();
    let promote_emu = Emulator::start().await.unwrap();
    let mut promote = promote_emu
        .spawn(
            &binary("falaj-fn-promote"),
            &[
                ("FALAJ_STORE", uri.as_str()),
                ("FALAJ_SIGNING_KEY", key_path.as_str()),
            ],
        )
        .unwrap();
    let lambda_endpoint = format!("http://{}", promote_emu.endpoint());
    let rollout_emu = Emulator::start().await.unwrap();
    let mut rollout = rollout_emu
        .spawn(
            &binary("falaj-fn-rollout"),
            &[
                ("FALAJ_STORE", uri.as_str()),
                ("FALAJ_PROMOTE_FUNCTION", "falaj-fn-promote"),
                ("AWS_ENDPOINT_URL_LAMBDA", lambda_endpoint.as_str()),
                ("AWS_ACCESS_KEY_ID", "emulated"),
                ("AWS_SECRET_ACCESS_KEY", "emulated"),
                ("AWS_SESSION_TOKEN", "emulated"),
            ],
        )
        .unwrap();
    // The schedule's event as EventBridge sends it: one look per running challenger, done by
    // promote (the key holder) as falaj-rollout. No traffic yet: it holds, nothing is signed.
    let r = rollout_emu
        .invoke(&fixture("eventbridge-scheduled.json"), WAIT)
        .await
        .expect("rollout answered");
    let looks = &response(&r.outcome)["looks"];
    assert_eq!(looks.as_array().map(Vec::len), Some(1), "{r:?}");
    assert_eq!(looks[0]["action"], "hold", "{looks}");
    assert_eq!(looks[0]["generation"], 3);
    assert!(
        looks[0]["reason"].as_str().unwrap().contains("no traffic"),
        "{looks}"
    );
    assert_eq!(
        promote_emu.invocations().len(),
        1,
        "one look, invoked on promote"
    );

    // A policy without a [canary] section: the look fails with the fix named, and the
    // schedule reports it with the model instead of failing the invocation.
    fx::attach_policy(&e.reg, "bc", "[metrics]\naccuracy = { min = 0.9 }\n").await;
    let r = rollout_emu
        .invoke(&json!({"envs": ["prod"]}), WAIT)
        .await
        .expect("rollout answered");
    let looks = &response(&r.outcome)["looks"];
    assert_eq!(looks[0]["error"]["code"], "invalid_policy", "{looks}");
    assert!(
        looks[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[canary]"),
        "{looks}"
    );
    assert_eq!(
        falaj::deploy::read(&e.reg, "prod", "bc")
            .await
            .unwrap()
            .unwrap()
            .0
            .generation,
        3
    );
    rollout.kill().await.unwrap();
    promote.kill().await.unwrap();
}
