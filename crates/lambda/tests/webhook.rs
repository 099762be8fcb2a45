//! The webhook API on a `dir://` store, without the Lambda runtime: authentication (HMAC
//! with a replay window and single-use signatures, bearer tokens), roles from `roles.json`,
//! JSON errors with stable codes, nothing written on a rejected request, the adapters for
//! API Gateway HTTP API and Function URL events (real event fixtures through `invoke`), and
//! the happy path from uploaded objects to a production rollback.

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use falaj::Registry;
use falaj::deploy::DeployKey;
use falaj::promotion;
use falaj::store::list_all;
use falaj_core::StoreKey;
use falaj_core::promotion::{Role, Stage};
use falaj_lambda::apigw::invoke;
use falaj_lambda::apigw::{self as lambda, EventShape};
use falaj_webhook::{
    self as webhook, ExpectAlias, HttpRequest, HttpResponse, LocalPromoter, PromoteError,
    PromoteRequest, Promoter, Webhook, WebhookAuth, apply_promote_request, handle,
};
use gates_fixtures::*;
use serde_json::{Value, json};

/// The time the event fixtures were signed at: 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;
const CI: &str = "github-ci";
const CI_SECRET: &str = "falaj-test-ci-secret-0123456789abcdef";
const OTHER_CI: &str = "gitlab-ci";
const OTHER_SECRET: &str = "gitlab-ci-secret-fedcba9876543210";
const MODEL: &str = "bc";
const POLICY: &str = "[metrics]\naccuracy = { min = 0.9 }\n";
const TOKENS: [(&str, &str); 6] = [
    ("ann", "ann-token-9b3e5d7a1c2f4e60"),
    ("bob", "bob-token-1e7c0a4f5d2b9e83"),
    ("mel", "mel-token-4f0a9c2e71d8b356"),
    ("eve", "eve-token-c3a1f9e07b5d2468"),
    ("sam", "sam-token-8d6b4f2a0e9c7531"),
    ("root", "root-token-5e3c1a9f7d0b8642"),
];

fn token(who: &str) -> &'static str {
    TOKENS.iter().find(|(w, _)| *w == who).unwrap().1
}

fn config_toml(max_body: usize) -> String {
    let mut s = format!(
        "replay_window_secs = 120\nmax_body_bytes = {max_body}\n\n\
         [[ci]]\nidentity = \"{CI}\"\nsecret = \"{CI_SECRET}\"\n\n\
         [[ci]]\nidentity = \"{OTHER_CI}\"\nsecret = \"{OTHER_SECRET}\"\n"
    );
    for (who, t) in TOKENS {
        s.push_str(&format!(
            "\n[[tokens]]\nidentity = \"{who}\"\nsha256 = \"{}\"\n",
            webhook::token_digest(t)
        ));
    }
    s
}

struct T {
    _env: Env,
    reg: Arc<Registry>,
    wh: Webhook,
    clock: Arc<AtomicI64>,
    key: DeployKey,
}

impl T {
    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Moves the clock on by a second, so that two signed requests never share a timestamp.
    fn tick(&self) -> i64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn call(&self, req: HttpRequest) -> (u16, Value, HttpResponse) {
        let r = handle(&self.wh, req).await;
        let body = r.json_body();
        assert!(
            !body.is_null(),
            "every answer is JSON: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        (r.status, body, r)
    }

    /// A request signed by `CI` at the next tick.
    fn signed(&self, method: &str, path: &str, body: &str) -> HttpRequest {
        let ts = self.tick();
        signed_at(method, path, body, CI, CI_SECRET, ts)
    }

    async fn snapshot(&self) -> BTreeMap<String, Bytes> {
        snapshot(&self.reg).await
    }
}

fn signed_at(
    method: &str,
    path: &str,
    body: &str,
    identity: &str,
    secret: &str,
    ts: i64,
) -> HttpRequest {
    HttpRequest::new(method, path)
        .with_header("Content-Type", "application/json")
        .with_header("X-Falaj-Identity", identity)
        .with_header("X-Falaj-Timestamp", ts.to_string())
        .with_header(
            "X-Falaj-Signature",
            webhook::sign(secret, ts, method, path, body.as_bytes()),
        )
        .with_body(body.to_string())
}

fn bearer(method: &str, path: &str, body: &str, who: &str) -> HttpRequest {
    HttpRequest::new(method, path)
        .with_header("Authorization", format!("Bearer {}", token(who)))
        .with_body(body.to_string())
}

/// Every object in the store with its bytes.
async fn snapshot(reg: &Registry) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    for k in list_all(reg.store().as_ref(), "").await.unwrap() {
        let o = reg
            .store()
            .get(&StoreKey::new(k.clone()).unwrap())
            .await
            .unwrap()
            .unwrap();
        out.insert(k, o.bytes);
    }
    assert!(!out.is_empty(), "the snapshot lists the store");
    out
}

/// Keys written since `before`; nothing else may change, except the audit chain's head,
/// which moves with every event.
fn new_keys(before: &BTreeMap<String, Bytes>, after: &BTreeMap<String, Bytes>) -> Vec<String> {
    let head = |k: &str| k.starts_with("audit/") && k.ends_with("/head.json");
    for (k, v) in before.iter().filter(|(k, _)| !head(k)) {
        assert_eq!(after.get(k), Some(v), "{k} was changed or removed");
    }
    after
        .keys()
        .filter(|k| !before.contains_key(*k) && !head(k))
        .cloned()
        .collect()
}

#[track_caller]
fn assert_error(got: &(u16, Value, HttpResponse), status: u16, code: &str, says: &[&str]) {
    let (s, body, _) = got;
    assert_eq!(*s, status, "{body:#}");
    assert_eq!(body["error"]["code"], code, "{body:#}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    for w in says {
        assert!(msg.contains(w), "message {msg:?} should say {w:?}");
    }
    assert!(body["error"]["request_id"].is_string(), "{body:#}");
}

async fn setup_with(max_body: usize) -> T {
    let e = env().await;
    promotion::grant(&e.reg, "root", CI, Role::MlEngineer)
        .await
        .unwrap();
    let reg = Arc::new(Registry::new(e.reg.store().clone()));
    let key = DeployKey::from_seed([9; 32]);
    let auth = WebhookAuth::parse(&config_toml(max_body), "webhook.toml").unwrap();
    let clock = Arc::new(AtomicI64::new(NOW));
    let c = clock.clone();
    let wh = Webhook::new(
        reg.clone(),
        Arc::new(LocalPromoter::new(reg.clone(), key.clone())),
        auth,
    )
    .with_validator(Arc::new(falaj_gates::LocalValidator))
    .with_clock(move || c.load(Ordering::SeqCst));
    T {
        _env: e,
        reg,
        wh,
        clock,
        key,
    }
}

async fn setup() -> T {
    setup_with(1 << 20).await
}

/// Uploads `incoming/bc/<run>/model.onnx` and `manifest.json`, as the trainer does.
async fn upload_run(reg: &Registry, run: &str, f: &Fitted) {
    let mut m = f.manifest.clone();
    m.model = MODEL.into();
    m.run_id = run.into();
    put_object(
        reg,
        &format!("incoming/{MODEL}/{run}/model.onnx"),
        f.onnx.clone(),
    )
    .await;
    put_object(
        reg,
        &format!("incoming/{MODEL}/{run}/manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .await;
}

async fn upload_holdout(reg: &Registry) {
    put_object(
        reg,
        "holdout/bc.csv",
        std::fs::read(dataset("breast_cancer.csv")).unwrap(),
    )
    .await;
}

fn register_body(run: &str) -> String {
    json!({"artifact": format!("incoming/{MODEL}/{run}/model.onnx"), "manifest": format!("incoming/{MODEL}/{run}/manifest.json")}).to_string()
}

fn validate_body() -> String {
    json!({"holdout": "holdout/bc.csv"}).to_string()
}

/// A signed validation of `bc@v` with the model's own policy, attached first: reports made
/// with it are the ones that count.
async fn validate_req(t: &T, v: u64) -> HttpRequest {
    attach_policy(&t.reg, MODEL, POLICY).await;
    t.signed(
        "POST",
        &format!("/v1/models/{MODEL}/versions/{v}/validate"),
        &validate_body(),
    )
}

fn event_fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The HTTP status and parsed JSON body of a Lambda response.
fn lambda_response(v: &Value) -> (u16, Value) {
    let status = v["statusCode"].as_u64().unwrap() as u16;
    assert_eq!(v["isBase64Encoded"], false, "{v:#}");
    assert_eq!(v["headers"]["content-type"], "application/json", "{v:#}");
    let body = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    (status, body)
}

/// Registers run `run` through the API as `CI`, validates it and has ann and bob approve it.
async fn registered_validated_approved(t: &T, run: &str) -> u64 {
    let (s, b, _) = t
        .call(t.signed(
            "POST",
            &format!("/v1/models/{MODEL}/versions"),
            &register_body(run),
        ))
        .await;
    assert_eq!(s, 201, "{b:#}");
    let v = b["version"]["version"].as_u64().unwrap();
    let (s, b, _) = t.call(validate_req(t, v).await).await;
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["report"]["passed"], true, "{b:#}");
    for who in ["ann", "bob"] {
        let (s, b, _) = t
            .call(bearer(
                "POST",
                &format!("/v1/models/{MODEL}/versions/{v}/approvals"),
                r#"{"to":"production"}"#,
                who,
            ))
            .await;
        assert_eq!(s, 200, "{b:#}");
        assert_eq!(b["approval"]["by"], who);
    }
    v
}

// ---- the happy path ----

#[tokio::test]
async fn from_uploaded_objects_to_production_and_back_through_the_api() {
    let t = setup().await;
    upload_run(&t.reg, "run-1", &breast_cancer()).await;
    upload_holdout(&t.reg).await;

    // Health needs no credentials.
    let (s, b, r) = t.call(HttpRequest::new("GET", "/v1/health")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ok")));
    assert!(r.header("x-request-id").is_some());

    // 1. Register from the uploaded objects: a real API Gateway HTTP API event, signed by CI,
    //    base64 body, through `invoke`.
    let ev = event_fixture("apigw_v2_register_signed.json");
    assert_eq!(lambda::detect(&ev), Some(EventShape::ApiGatewayV2));
    let out = invoke(&t.wh, ev).await;
    let (s, b) = lambda_response(&out);
    assert_eq!(s, 201, "{b:#}");
    assert_eq!(b["duplicate"], false);
    assert_eq!(b["version"]["version"], 1);
    assert_eq!(b["version"]["author"], CI, "the signer is the author");
    assert!(
        b["version"]["source"]
            .as_str()
            .unwrap()
            .starts_with("store:incoming/bc/run-1/model.onnx#"),
        "{b:#}"
    );
    assert_eq!(
        out["headers"]["x-request-id"], "Yx3kQhG2oAMEbXw=",
        "API Gateway's request id is the request id"
    );
    assert!(
        out.get("multiValueHeaders").is_some(),
        "API Gateway's response shape: {out:#}"
    );

    // 2. Validate with the holdout in the store and the model's attached policy.
    let (s, b, _) = t.call(validate_req(&t, 1).await).await;
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["report"]["passed"], true);
    assert_eq!(b["report"]["evaluated_by"], CI);
    let (s, b, _) = t
        .call(bearer("GET", "/v1/models/bc/versions/1/gates", "", "eve"))
        .await;
    assert_eq!((s, b["runs"].as_u64()), (200, Some(1)), "{b:#}");
    assert_eq!(b["report"]["holdout"]["uri"], "store:holdout/bc.csv");

    // 3. Two approvals by approvers who are not the author: ann through a real Function URL
    //    event, bob through `handle`.
    let ev = event_fixture("function_url_approve_bearer.json");
    assert_eq!(lambda::detect(&ev), Some(EventShape::FunctionUrl));
    let out = invoke(&t.wh, ev).await;
    let (s, b) = lambda_response(&out);
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["approval"]["by"], "ann");
    assert_eq!(b["approval"]["comment"], "metrics and fairness look right");
    assert!(
        out.get("multiValueHeaders").is_none(),
        "the Function URL response shape, not API Gateway's: {out:#}"
    );
    let (s, b, _) = t
        .call(bearer(
            "POST",
            "/v1/models/bc/versions/1/approvals",
            r#"{"to":"production"}"#,
            "bob",
        ))
        .await;
    assert_eq!(s, 200, "{b:#}");
    let (s, b, _) = t
        .call(bearer("GET", "/v1/models/bc/versions/1", "", "mel"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["state"], "validated");
    assert_eq!(b["approvals"].as_array().unwrap().len(), 2, "{b:#}");

    // 4. Promote to production (CI holds ml-engineer), expecting the alias unset.
    let (s, b, _) = t
        .call(t.signed(
            "POST",
            "/v1/models/bc/versions/1/promote",
            r#"{"to":"production","expect":null}"#,
        ))
        .await;
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["alias"]["version"], 1);
    assert_eq!(b["deployment"]["champion"]["version"], 1);
    let (s, b, _) = t
        .call(bearer(
            "GET",
            "/v1/models/bc/versions/production",
            "",
            "eve",
        ))
        .await;
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(
        (b["version"]["version"].as_u64(), b["state"].as_str()),
        (Some(1), Some("production"))
    );
    assert_eq!(b["aliases"], json!(["production"]));

    // 5. A second version as a 10% canary, rolled out to 50% and then 100%.
    upload_run(
        &t.reg,
        "run-2",
        &fit(
            "breast_cancer.csv",
            "diagnosis",
            falaj_core::Task::Classification,
            120,
        ),
    )
    .await;
    let v2 = registered_validated_approved(&t, "run-2").await;
    assert_eq!(v2, 2);
    let (s, b, _) = t
        .call(t.signed(
            "POST",
            "/v1/models/bc/versions/2/promote",
            r#"{"to":"production","canary":10}"#,
        ))
        .await;
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["deployment"]["challenger"]["version"], 2);
    assert_eq!(b["deployment"]["challenger_weight"], 10);
    // The canary judge through the webhook: this policy has no [canary] section, so the look
    // is refused naming the fix; a body that asks for a weight and the judge at once is 400.
    assert_error(
        &t.call(t.signed(
            "POST",
            "/v1/models/bc/deployments/prod/rollout",
            r#"{"auto":true}"#,
        ))
        .await,
        422,
        "invalid_policy",
        &["no [canary] section"],
    );
    assert_error(
        &t.call(t.signed(
            "POST",
            "/v1/models/bc/deployments/prod/rollout",
            r#"{"auto":true,"weight":50}"#,
        ))
        .await,
        400,
        "invalid_request",
        &["not both"],
    );
    for w in [50, 100] {
        let (s, b, _) = t
            .call(t.signed(
                "POST",
                "/v1/models/bc/deployments/prod/rollout",
                &json!({ "weight": w }).to_string(),
            ))
            .await;
        assert_eq!(s, 200, "{b:#}");
        if w == 100 {
            assert_eq!(b["deployment"]["champion"]["version"], 2, "{b:#}");
        } else {
            assert_eq!(b["deployment"]["challenger_weight"], 50, "{b:#}");
        }
    }

    // 6. Roll back: a signed Function URL event (base64 body, signed at NOW).
    assert!(t.now() - NOW < 120, "still inside the fixture's window");
    let out = invoke(&t.wh, event_fixture("function_url_rollback_signed.json")).await;
    let (s, b) = lambda_response(&out);
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["deployment"]["champion"]["version"], 1, "{b:#}");
    let (s, b, _) = t
        .call(bearer(
            "GET",
            "/v1/models/bc/deployments/production",
            "",
            "eve",
        ))
        .await;
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["champion_alias"], 1);
    assert_eq!(b["divergence"], Value::Null);

    // 7. Lists and states.
    let (s, b, _) = t.call(bearer("GET", "/v1/models", "", "eve")).await;
    assert_eq!(s, 200);
    assert_eq!(b["models"][0]["name"], MODEL);
    assert_eq!(b["models"][0]["created_by"], CI);
    let (s, b, _) = t.call(bearer("GET", "/v1/models/bc", "", "eve")).await;
    assert_eq!((s, b["latest_version"].as_u64()), (200, Some(2)));
    let (s, b, _) = t
        .call(bearer("GET", "/v1/models/bc/versions", "", "eve"))
        .await;
    assert_eq!(s, 200);
    let states: Vec<&str> = b["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["production", "archived"], "{b:#}");

    // 8. The audit chain, verified: an API Gateway event on a named stage with a query.
    let out = invoke(
        &t.wh,
        event_fixture("apigw_v2_named_stage_audit_bearer.json"),
    )
    .await;
    let (s, b) = lambda_response(&out);
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["verify"]["ok"], true, "{b:#}");
    let events: Vec<(String, String)> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        (CI, "version.registered"),
        (CI, "gates.passed"),
        ("ann", "version.approved"),
        ("bob", "version.approved"),
        (CI, "version.promoted"),
        (CI, "deployment.rollout"),
        (CI, "deployment.rollback"),
    ] {
        assert!(
            events.iter().any(|(a, x)| a == want.0 && x == want.1),
            "{want:?} in {events:?}"
        );
    }
    assert!(!events.iter().any(|(_, a)| a == "refused"), "{events:?}");
    // Paging.
    let (s, b, _) = t
        .call(bearer(
            "GET",
            "/v1/models/bc/audit?after=2&limit=3",
            "",
            "eve",
        ))
        .await;
    assert_eq!(s, 200);
    let seqs: Vec<u64> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!((seqs, b["next"].as_u64()), (vec![3, 4, 5], Some(5)));
}

// ---- rejected requests ----

#[tokio::test]
async fn rejected_requests_get_the_right_status_and_write_nothing() {
    let t = setup_with(4096).await;
    upload_run(&t.reg, "run-1", &breast_cancer()).await;
    // The model exists, so that the 404s below are about versions, not models.
    create(&t.reg, MODEL).await;
    let path = "/v1/models/bc/versions";
    let body = register_body("run-1");
    let before = t.snapshot().await;

    let cases: Vec<(&str, HttpRequest, u16, &str, Vec<&str>)> = vec![
        (
            "wrong signature",
            signed_at(
                "POST",
                path,
                &body,
                CI,
                "not-the-secret-0123456789",
                t.now(),
            ),
            401,
            "signature_mismatch",
            vec!["does not match", CI],
        ),
        (
            "stale timestamp",
            signed_at("POST", path, &body, CI, CI_SECRET, t.now() - 121),
            401,
            "stale_timestamp",
            vec!["121 s behind", "±120 s"],
        ),
        (
            "timestamp from the future",
            signed_at("POST", path, &body, CI, CI_SECRET, t.now() + 121),
            401,
            "stale_timestamp",
            vec!["121 s ahead of"],
        ),
        (
            "missing credentials",
            HttpRequest::new("POST", path).with_body(body.clone()),
            401,
            "missing_credentials",
            vec!["Authorization: Bearer"],
        ),
        (
            "unknown token",
            HttpRequest::new("POST", path)
                .with_header("Authorization", "Bearer not-a-configured-token")
                .with_body(body.clone()),
            401,
            "unknown_token",
            vec!["not recognised"],
        ),
        (
            "not a bearer token",
            HttpRequest::new("POST", path)
                .with_header("Authorization", "Digest username=\"ann\"")
                .with_body(body.clone()),
            401,
            "malformed_authorization",
            vec!["Bearer <token>"],
        ),
        (
            "Basic credentials whose password is not that identity's token",
            HttpRequest::new("POST", path)
                .with_header("Authorization", "Basic YWxpY2U6c2VjcmV0")
                .with_body(body.clone()),
            401,
            "unknown_token",
            vec!["not a token of \"alice\""],
        ),
        (
            "Basic credentials naming ann with mel's token",
            HttpRequest::new("POST", path)
                .with_header(
                    "Authorization",
                    format!(
                        "Basic {}",
                        webhook::http::base64_encode(format!("ann:{}", token("mel")).as_bytes())
                    ),
                )
                .with_body(body.clone()),
            401,
            "unknown_token",
            vec!["not a token of \"ann\""],
        ),
        (
            "unknown CI identity",
            signed_at("POST", path, &body, "jenkins", CI_SECRET, t.now()),
            401,
            "unknown_identity",
            vec!["\"jenkins\""],
        ),
        (
            "no identity with two CI identities configured",
            {
                let mut r = signed_at("POST", path, &body, CI, CI_SECRET, t.now());
                r.headers.retain(|(n, _)| n != "x-falaj-identity");
                r
            },
            401,
            "missing_identity",
            vec!["X-Falaj-Identity is required"],
        ),
        (
            "another identity's secret",
            signed_at("POST", path, &body, OTHER_CI, CI_SECRET, t.now()),
            401,
            "signature_mismatch",
            vec![OTHER_CI],
        ),
        (
            "no timestamp",
            {
                let mut r = signed_at("POST", path, &body, CI, CI_SECRET, t.now());
                r.headers.retain(|(n, _)| n != "x-falaj-timestamp");
                r
            },
            401,
            "missing_timestamp",
            vec!["X-Falaj-Timestamp"],
        ),
        (
            "malformed signature",
            HttpRequest::new("POST", path)
                .with_header("X-Falaj-Identity", CI)
                .with_header("X-Falaj-Timestamp", t.now().to_string())
                .with_header("X-Falaj-Signature", "sha1=abcdef")
                .with_body(body.clone()),
            401,
            "malformed_signature",
            vec!["64 hex digits"],
        ),
        (
            "both credentials",
            signed_at("POST", path, &body, CI, CI_SECRET, t.now())
                .with_header("Authorization", format!("Bearer {}", token("mel"))),
            401,
            "ambiguous_credentials",
            vec!["exactly one"],
        ),
        (
            "oversized body, even when signed",
            signed_at("POST", path, &"x".repeat(4097), CI, CI_SECRET, t.now()),
            413,
            "payload_too_large",
            vec!["4097 bytes", "4096 bytes"],
        ),
        (
            "malformed JSON",
            signed_at("POST", path, r#"{"artifact": "#, CI, CI_SECRET, t.now()),
            400,
            "malformed_json",
            vec!["not valid JSON", "EOF"],
        ),
        (
            "a field of the wrong type",
            bearer("POST", path, r#"{"artifact": 5, "manifest": "x"}"#, "sam"),
            400,
            "invalid_body",
            vec!["invalid type"],
        ),
        (
            "a misspelt field",
            bearer(
                "POST",
                "/v1/models/bc/versions/1/promote",
                r#"{"to":"production","cannary":10}"#,
                "mel",
            ),
            400,
            "invalid_body",
            vec!["unknown field `cannary`"],
        ),
        (
            "not a runtime",
            bearer(
                "POST",
                "/v1/models/bc/versions/1/promote",
                r#"{"to":"production","runtime":"gpu"}"#,
                "mel",
            ),
            400,
            "invalid_body",
            vec!["unknown variant `gpu`", "sandbox", "host"],
        ),
        (
            "a missing field",
            bearer(
                "POST",
                path,
                r#"{"artifact": "incoming/bc/run-1/model.onnx"}"#,
                "sam",
            ),
            400,
            "invalid_body",
            vec!["missing field `manifest`"],
        ),
        (
            "not a stage",
            bearer(
                "POST",
                "/v1/models/bc/versions/1/approvals",
                r#"{"to":"prodution"}"#,
                "ann",
            ),
            400,
            "invalid_stage",
            vec!["\"prodution\"", "staging"],
        ),
        (
            "an alias where a write needs a number",
            bearer(
                "POST",
                "/v1/models/bc/versions/production/promote",
                r#"{"to":"production"}"#,
                "mel",
            ),
            400,
            "invalid_version",
            vec!["\"production\""],
        ),
        (
            "an invalid model name",
            bearer("POST", "/v1/models/BC/versions", &body, "sam"),
            400,
            "invalid_name",
            vec!["\"BC\""],
        ),
        (
            "an unknown environment",
            bearer("POST", "/v1/models/bc/deployments/qa/rollback", "", "mel"),
            400,
            "invalid_name",
            vec!["\"qa\"", "prod or staging"],
        ),
        (
            "an artifact outside incoming/<model>/",
            bearer(
                "POST",
                path,
                r#"{"artifact":"roles.json","manifest":"incoming/bc/run-1/manifest.json"}"#,
                "sam",
            ),
            400,
            "invalid_key",
            vec!["incoming/bc/"],
        ),
        (
            "a path that escapes",
            bearer(
                "POST",
                path,
                r#"{"artifact":"incoming/bc/../../roles.json","manifest":"incoming/bc/run-1/manifest.json"}"#,
                "sam",
            ),
            400,
            "invalid_key",
            vec!["'..'"],
        ),
        (
            "an artifact not uploaded",
            bearer("POST", path, &register_body("run-9"), "sam"),
            422,
            "object_missing",
            vec!["incoming/bc/run-9/model.onnx does not exist"],
        ),
        (
            "an unknown route",
            bearer("GET", "/v1/modells", "", "eve"),
            404,
            "not_found",
            vec!["/v1/modells"],
        ),
        (
            "an unknown model",
            bearer("GET", "/v1/models/nope/versions", "", "eve"),
            404,
            "not_found",
            vec!["\"nope\" does not exist"],
        ),
        (
            "an unknown version",
            bearer("GET", "/v1/models/bc/versions/7", "", "eve"),
            404,
            "not_found",
            vec!["bc@7"],
        ),
        (
            "the wrong method",
            bearer("DELETE", "/v1/models/bc/versions", "", "mel"),
            405,
            "method_not_allowed",
            vec!["GET or POST"],
        ),
    ];
    for (what, req, status, code, says) in cases {
        let got = t.call(req).await;
        println!("{what}: {}", got.1);
        assert_error(&got, status, code, &says);
        if status == 401 {
            assert_eq!(
                got.2.header("www-authenticate"),
                Some("Bearer realm=\"falaj\""),
                "{what}"
            );
        }
        if status == 405 {
            assert_eq!(got.2.header("allow"), Some("GET, POST"), "{what}");
        }
        let after = t.snapshot().await;
        assert_eq!(
            new_keys(&before, &after),
            Vec::<String>::new(),
            "{what} wrote"
        );
    }

    // A rejected signed request did not use its signature: the same malformed request is a
    // 400 again, not a replay.
    let again = signed_at("POST", path, r#"{"artifact": "#, CI, CI_SECRET, t.now());
    assert_error(&t.call(again.clone()).await, 400, "malformed_json", &[]);
    assert_error(&t.call(again).await, 400, "malformed_json", &[]);
    // An invalid manifest for a model that does not exist yet creates no model.
    put_object(
        &t.reg,
        "incoming/new/run-1/model.onnx",
        breast_cancer().onnx,
    )
    .await;
    put_object(
        &t.reg,
        "incoming/new/run-1/manifest.json",
        b"{not json".to_vec(),
    )
    .await;
    let before = t.snapshot().await;
    let got = t
        .call(bearer(
            "POST",
            "/v1/models/new/versions",
            r#"{"artifact":"incoming/new/run-1/model.onnx","manifest":"incoming/new/run-1/manifest.json"}"#,
            "sam",
        ))
        .await;
    assert_error(
        &got,
        422,
        "invalid_manifest",
        &["incoming/new/run-1/manifest.json"],
    );
    assert_eq!(new_keys(&before, &t.snapshot().await), Vec::<String>::new());
}

#[tokio::test]
async fn a_replayed_signature_is_refused_and_writes_nothing() {
    let t = setup().await;
    upload_run(&t.reg, "run-1", &breast_cancer()).await;
    let req = t.signed("POST", "/v1/models/bc/versions", &register_body("run-1"));
    let (s, b, _) = t.call(req.clone()).await;
    assert_eq!(s, 201, "{b:#}");
    // The claim is named by the signature's digest.
    let sig = req.header("x-falaj-signature").unwrap();
    let raw = hex::decode(sig.strip_prefix("v2=").unwrap()).unwrap();
    let claim = format!(
        "idempotency/webhook/{}.json",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw))
    );
    let before = t.snapshot().await;
    assert!(before.contains_key(&claim), "{claim}");
    let claimed: Value = serde_json::from_slice(&before[&claim]).unwrap();
    assert_eq!(claimed["identity"], CI);
    assert_eq!(claimed["timestamp"], (NOW + 1).to_string());
    assert!(claimed["request_id"].is_string(), "{claimed}");
    assert_eq!(claimed["path"], "/v1/models/bc/versions");

    let got = t.call(req.clone()).await;
    assert_error(&got, 409, "replayed", &["already received"]);
    assert_eq!(new_keys(&before, &t.snapshot().await), Vec::<String>::new());
    // Later, inside the window, it is still a replay.
    t.clock.fetch_add(100, Ordering::SeqCst);
    assert_error(&t.call(req.clone()).await, 409, "replayed", &[]);
    // After the window it is stale.
    t.clock.fetch_add(100, Ordering::SeqCst);
    assert_error(&t.call(req).await, 401, "stale_timestamp", &[]);

    // A fresh signature over the same body is a new request: the same objects give the same
    // version, not a second one.
    let (s, b, _) = t
        .call(t.signed("POST", "/v1/models/bc/versions", &register_body("run-1")))
        .await;
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(
        (b["duplicate"].as_bool(), b["version"]["version"].as_u64()),
        (Some(true), Some(1))
    );
    assert_eq!(t.reg.latest_version(MODEL).await.unwrap(), 1);

    // Reads are claimed too: a signed GET seen once (in a CI log) is spent.
    let get = t.signed("GET", "/v1/models/bc", "");
    assert_eq!(t.call(get.clone()).await.0, 200);
    assert_eq!(t.call(get).await.0, 409);
}

#[tokio::test]
async fn the_replay_window_is_inclusive_at_120_seconds() {
    let t = setup().await;
    for (skew, status) in [(-120, 200), (120, 200), (-121, 401), (121, 401)] {
        let r = signed_at("GET", "/v1/models", "", CI, CI_SECRET, NOW + skew);
        assert_eq!(t.call(r).await.0, status, "skew {skew}");
    }
}

#[tokio::test]
async fn roles_come_from_the_store_and_refusals_are_audited() {
    let t = setup().await;
    upload_run(&t.reg, "run-1", &breast_cancer()).await;
    upload_holdout(&t.reg).await;
    let v = registered_validated_approved(&t, "run-1").await;
    let promote = format!("/v1/models/bc/versions/{v}/promote");

    // A viewer's token: 403, and the only write is the audited refusal.
    let before = t.snapshot().await;
    let got = t
        .call(
            bearer("POST", &promote, r#"{"to":"production"}"#, "eve")
                // A claimed role is ignored.
                .with_header("X-Falaj-Role", "admin"),
        )
        .await;
    assert_error(
        &got,
        403,
        "forbidden",
        &["eve may not promote to production", "holds: viewer"],
    );
    let after = t.snapshot().await;
    let written = new_keys(&before, &after);
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(written[0].starts_with("audit/bc/"), "{written:?}");
    let ev: Value = serde_json::from_slice(&after[&written[0]]).unwrap();
    assert_eq!(
        (ev["actor"].as_str(), ev["action"].as_str()),
        (Some("eve"), Some("refused"))
    );
    assert_eq!(ev["details"]["action"], "promote to production");

    // A data scientist cannot approve; an approver cannot promote.
    assert_error(
        &t.call(bearer(
            "POST",
            &format!("/v1/models/bc/versions/{v}/approvals"),
            r#"{"to":"production"}"#,
            "sam",
        ))
        .await,
        403,
        "forbidden",
        &["sam may not approve"],
    );
    assert_error(
        &t.call(bearer("POST", &promote, r#"{"to":"production"}"#, "ann"))
            .await,
        403,
        "forbidden",
        &["ann may not promote"],
    );

    // A signed request from a CI identity without roles: 403; it used its signature (the
    // claim) and the refusal is audited; nothing else.
    let before = t.snapshot().await;
    let req = signed_at(
        "POST",
        &promote,
        r#"{"to":"production"}"#,
        OTHER_CI,
        OTHER_SECRET,
        t.tick(),
    );
    assert_error(
        &t.call(req).await,
        403,
        "forbidden",
        &["gitlab-ci may not", "holds: none"],
    );
    let mut written = new_keys(&before, &t.snapshot().await);
    written.sort();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(
        written[0].starts_with("audit/bc/") && written[1].starts_with("idempotency/webhook/"),
        "{written:?}"
    );

    // Granting the role in roles.json is what lets it through.
    promotion::grant(&t.reg, "root", OTHER_CI, Role::MlEngineer)
        .await
        .unwrap();
    let req = signed_at(
        "POST",
        &promote,
        r#"{"to":"production"}"#,
        OTHER_CI,
        OTHER_SECRET,
        t.tick(),
    );
    let (s, b, _) = t.call(req).await;
    assert_eq!(s, 200, "{b:#}");
    assert_eq!(b["alias"]["moved_by"], OTHER_CI);
}

#[tokio::test]
async fn refusals_for_state_are_422_and_lost_races_409() {
    let t = setup().await;
    upload_run(&t.reg, "run-1", &breast_cancer()).await;
    upload_run(&t.reg, "run-bad", &degraded(&breast_cancer())).await;
    upload_holdout(&t.reg).await;

    // Registered as root (admin): root may not approve its own version.
    let (s, b, _) = t
        .call(bearer(
            "POST",
            "/v1/models/bc/versions",
            &register_body("run-1"),
            "root",
        ))
        .await;
    assert_eq!(s, 201, "{b:#}");
    // Not validated yet: approving is refused for its state.
    let got = t
        .call(bearer(
            "POST",
            "/v1/models/bc/versions/1/approvals",
            r#"{"to":"production"}"#,
            "ann",
        ))
        .await;
    assert_error(
        &got,
        422,
        "refused",
        &["bc@1 is registered", "validate it first"],
    );
    assert_eq!(got.1["error"]["details"]["state"], "registered");
    let (s, _, _) = t.call(validate_req(&t, 1).await).await;
    assert_eq!(s, 200);
    let got = t
        .call(bearer(
            "POST",
            "/v1/models/bc/versions/1/approvals",
            r#"{"to":"production"}"#,
            "root",
        ))
        .await;
    assert_error(
        &got,
        422,
        "refused",
        &[
            "bc@1 was registered by root",
            "cannot approve it under any name",
        ],
    );

    // Not enough approvals.
    let got = t
        .call(t.signed(
            "POST",
            "/v1/models/bc/versions/1/promote",
            r#"{"to":"production"}"#,
        ))
        .await;
    assert_error(&got, 422, "refused", &["0 of 2 approvals"]);
    assert_eq!(
        got.1["error"]["details"],
        json!({"approvals": 0, "needed": 2})
    );

    // A lost compare-and-swap: expecting version 5 where nothing is.
    let got = t
        .call(t.signed(
            "POST",
            "/v1/models/bc/versions/1/promote",
            r#"{"to":"staging","expect":5}"#,
        ))
        .await;
    assert_error(&got, 409, "conflict", &["bc@staging", "not at version 5"]);
    assert_eq!(got.1["error"]["details"]["current"], Value::Null);
    let (s, b, _) = t
        .call(t.signed(
            "POST",
            "/v1/models/bc/versions/1/promote",
            r#"{"to":"staging","expect":null}"#,
        ))
        .await;
    assert_eq!(s, 200, "{b:#}");
    let got = t
        .call(t.signed(
            "POST",
            "/v1/models/bc/versions/1/promote",
            r#"{"to":"staging","expect":null}"#,
        ))
        .await;
    assert_error(&got, 422, "refused", &["already there"]);

    // Failed gates: 422 with the report, which is kept.
    let (s, b, _) = t
        .call(t.signed("POST", "/v1/models/bc/versions", &register_body("run-bad")))
        .await;
    assert_eq!(s, 201, "{b:#}");
    let got = t.call(validate_req(&t, 2).await).await;
    assert_error(
        &got,
        422,
        "gates_failed",
        &["bc@2 is rejected", "metrics.accuracy"],
    );
    assert_eq!(got.1["error"]["details"]["report"]["passed"], false);
    let (s, b, _) = t
        .call(bearer("GET", "/v1/models/bc/versions/2", "", "eve"))
        .await;
    assert_eq!((s, b["state"].as_str()), (200, Some("rejected")));

    // Nothing deployed in production yet: 404; a validation without a holdout: 422.
    assert_error(
        &t.call(t.signed(
            "POST",
            "/v1/models/bc/deployments/prod/rollout",
            r#"{"weight":50}"#,
        ))
        .await,
        404,
        "not_found",
        &["no deployment in prod"],
    );
    // (A model without a policy is refused `no_policy`: tests/gates.rs; bc has one here.)
    assert_error(
        &t.call(t.signed(
            "POST",
            "/v1/models/bc/versions/1/validate",
            r#"{"holdout":"holdout/none.csv","policy":"[metrics]\naccuracy = { min = 0.9 }\n"}"#,
        ))
        .await,
        422,
        "invalid_holdout",
        &["store:holdout/none.csv"],
    );
    assert_error(
        &t.call(t.signed(
            "POST",
            "/v1/models/bc/versions/1/validate",
            r#"{"holdout":"holdout/bc.csv","policy":"[metrics]\nbalanced = { min = 0.9 }\n"}"#,
        ))
        .await,
        422,
        "invalid_policy",
        &["balanced"],
    );
    assert_error(
        &t.call(bearer("GET", "/v1/models/bc/versions/3/gates", "", "eve"))
            .await,
        404,
        "not_found",
        &["bc@3"],
    );
}

// ---- the promoter boundary ----

/// A promoter that, like a Lambda invocation, only passes JSON text both ways.
struct JsonPromoter {
    reg: Arc<Registry>,
    key: DeployKey,
}

#[async_trait::async_trait]
impl Promoter for JsonPromoter {
    async fn apply(&self, req: PromoteRequest) -> Result<Value, PromoteError> {
        let wire = serde_json::to_string(&req).unwrap();
        let req: PromoteRequest = serde_json::from_str(&wire).unwrap();
        let reply = match apply_promote_request(&self.reg, &self.key, req).await {
            Ok(v) => json!({ "ok": v }),
            Err(e) => json!({ "error": e }),
        };
        let reply: Value = serde_json::from_str(&reply.to_string()).unwrap();
        match reply.get("error") {
            Some(e) => Err(serde_json::from_value(e.clone()).unwrap()),
            None => Ok(reply["ok"].clone()),
        }
    }
}

struct PanickingPromoter;

#[async_trait::async_trait]
impl Promoter for PanickingPromoter {
    async fn apply(&self, _: PromoteRequest) -> Result<Value, PromoteError> {
        panic!("the promoter fell over");
    }
}

#[tokio::test]
async fn promote_requests_and_errors_round_trip_as_json() {
    let req = PromoteRequest::Promote {
        model: "bc".into(),
        version: 3,
        actor: CI.into(),
        to: Stage::Production,
        canary: Some(10),
        blue_green: false,
        runtime: falaj_core::deployment::Runtime::Host,
        expect: ExpectAlias::Version(2),
    };
    let wire = serde_json::to_value(&req).unwrap();
    assert_eq!(wire["op"], "promote");
    assert_eq!(wire["to"], "production");
    assert_eq!(serde_json::from_value::<PromoteRequest>(wire).unwrap(), req);
    let rb: PromoteRequest =
        serde_json::from_str(r#"{"op":"rollback","model":"bc","env":"prod","actor":"mel"}"#)
            .unwrap();
    assert_eq!(rb.model(), "bc");
    assert_eq!(rb.actor(), "mel");
    assert!(serde_json::from_str::<PromoteRequest>(r#"{"op":"delete","model":"bc"}"#).is_err());

    let t = setup().await;
    upload_run(&t.reg, "run-1", &breast_cancer()).await;
    upload_holdout(&t.reg).await;
    let (s, _, _) = t
        .call(t.signed("POST", "/v1/models/bc/versions", &register_body("run-1")))
        .await;
    assert_eq!(s, 201);
    let (s, _, _) = t.call(validate_req(&t, 1).await).await;
    assert_eq!(s, 200);

    // The same refusal, in process and across a JSON boundary.
    let remote = Webhook::new(
        t.reg.clone(),
        Arc::new(JsonPromoter {
            reg: t.reg.clone(),
            key: t.key.clone(),
        }),
        t.wh.auth().clone(),
    )
    .with_clock(|| NOW);
    let body = r#"{"to":"production"}"#;
    let local = t
        .call(bearer(
            "POST",
            "/v1/models/bc/versions/1/promote",
            body,
            "mel",
        ))
        .await;
    let over_json = handle(
        &remote,
        bearer("POST", "/v1/models/bc/versions/1/promote", body, "mel"),
    )
    .await;
    assert_error(&local, 422, "refused", &["0 of 2 approvals"]);
    let j = over_json.json_body();
    assert_eq!(over_json.status, 422);
    assert_eq!(j["error"]["code"], local.1["error"]["code"]);
    assert_eq!(j["error"]["message"], local.1["error"]["message"]);
    assert_eq!(j["error"]["details"], local.1["error"]["details"]);
    // And a success.
    let r = handle(
        &remote,
        bearer("POST", "/v1/models/bc/versions/1/approvals", body, "ann"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json_body());
    // The promote function's own checks: a bad model name or environment is refused there
    // too, not only by the webhook.
    let e = apply_promote_request(
        &t.reg,
        &t.key,
        PromoteRequest::Rollback {
            model: "../x".into(),
            env: "prod".into(),
            actor: "mel".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("invalid_name", 400));
    let e = apply_promote_request(
        &t.reg,
        &t.key,
        PromoteRequest::Rollback {
            model: "bc".into(),
            env: "qa".into(),
            actor: "mel".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("invalid_name", 400));
    let back: PromoteError = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(back, e);

    // A panic below the handler is a JSON 500, not a crash.
    let broken = Webhook::new(
        t.reg.clone(),
        Arc::new(PanickingPromoter),
        t.wh.auth().clone(),
    );
    let r = handle(
        &broken,
        bearer("POST", "/v1/models/bc/deployments/prod/rollback", "", "mel"),
    )
    .await;
    assert_eq!(r.status, 500);
    let j = r.json_body();
    assert_eq!(j["error"]["code"], "internal");
    assert!(
        !j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fell over"),
        "{j}"
    );
    assert_eq!(
        Some(j["error"]["request_id"].as_str().unwrap()),
        r.header("x-request-id")
    );
}

// ---- events ----

#[tokio::test]
async fn events_that_are_not_http_api_or_function_url_are_answered_with_400() {
    let t = setup().await;
    // An API Gateway REST API (payload 1.0) event.
    let rest = json!({
        "resource": "/v1/health", "path": "/v1/health", "httpMethod": "GET",
        "headers": {}, "requestContext": {"httpMethod": "GET", "stage": "prod"}, "body": null,
        "isBase64Encoded": false
    });
    assert_eq!(lambda::detect(&rest), None);
    let (s, b) = lambda_response(&invoke(&t.wh, rest).await);
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "invalid_event");
    let (s, b) = lambda_response(&invoke(&t.wh, json!("hello")).await);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_event"))
    );

    // A Function URL event whose base64 body is not base64.
    let mut ev = event_fixture("function_url_rollback_signed.json");
    ev["body"] = json!("not*base64!");
    let (s, b) = lambda_response(&invoke(&t.wh, ev).await);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_body_encoding")),
        "{b:#}"
    );

    // A structurally broken API Gateway event (no isBase64Encoded handled, method missing).
    let mut ev = event_fixture("apigw_v2_register_signed.json");
    ev["requestContext"]["http"]["method"] = json!(42);
    let (s, b) = lambda_response(&invoke(&t.wh, ev).await);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_event")),
        "{b:#}"
    );

    // Health through both shapes, without credentials; a named stage prefix is removed.
    let mut ev = event_fixture("apigw_v2_named_stage_audit_bearer.json");
    ev["rawPath"] = json!("/prod/v1/health");
    ev["headers"]
        .as_object_mut()
        .unwrap()
        .remove("authorization");
    let (s, b) = lambda_response(&invoke(&t.wh, ev).await);
    assert_eq!((s, b["status"].as_str()), (200, Some("ok")), "{b:#}");
    let mut ev = event_fixture("function_url_approve_bearer.json");
    ev["rawPath"] = json!("/v1/health");
    ev["requestContext"]["http"]["method"] = json!("GET");
    let (s, _) = lambda_response(&invoke(&t.wh, ev).await);
    assert_eq!(s, 200);
}

#[test]
fn the_signed_fixtures_are_signed_as_documented() {
    for name in [
        "apigw_v2_register_signed.json",
        "function_url_rollback_signed.json",
    ] {
        let ev = event_fixture(name);
        let h = &ev["headers"];
        let ts: i64 = h["x-falaj-timestamp"].as_str().unwrap().parse().unwrap();
        assert_eq!(ts, NOW);
        let body = webhook::http::base64_decode(ev["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            h["x-falaj-signature"].as_str().unwrap(),
            webhook::sign(
                CI_SECRET,
                ts,
                ev["requestContext"]["http"]["method"].as_str().unwrap(),
                ev["rawPath"].as_str().unwrap(),
                &body
            ),
            "{name}"
        );
    }
    // Vectors computed with Python's hmac and hashlib (docs/webhook.md's example).
    assert_eq!(
        webhook::sign(
            "0123456789abcdef",
            1_700_000_000,
            "POST",
            "/v1/models/bc/versions/1/approvals",
            b"{}"
        ),
        "v2=335206b391579fbe14f0dd04f0f4f0f556f04cc9b58e85aae2393f22a326d3a0"
    );
    assert_eq!(
        webhook::token_digest("ann-token-9b3e5d7a1c2f4e60"),
        "9ba3b4d8c2bdf14f5ccf43bfd3d3d9552d9d26210d67715057492654815a1f2a"
    );
}

#[test]
fn decoders_handle_the_edge_cases() {
    use webhook::http::{base64_decode, parse_query, percent_decode};
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes(), "{enc}");
        assert_eq!(
            base64_decode(enc.trim_end_matches('=')).unwrap(),
            plain.as_bytes()
        );
    }
    for bad in ["Zm9v!", "Z", "Zg==Zg", "Zg==="] {
        assert!(base64_decode(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_query("verify=1&a=x%20y+z&flag"),
        vec![
            ("verify".into(), "1".into()),
            ("a".into(), "x y z".into()),
            ("flag".into(), String::new())
        ]
    );
    assert_eq!(percent_decode("a%2Fb+c%zz%4", false), "a/b+c%zz%4");
    assert_eq!(percent_decode("caf%C3%A9", false), "café");
    let r = HttpRequest::new("get", "/v1/models?x=1");
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query_param("x")),
        ("GET", "/v1/models", Some("1"))
    );
    let routes = webhook::routes();
    assert_eq!(routes.len(), 13);
    assert_eq!(routes["/v1/models/{m}/versions"], ["GET", "POST"]);
}

// ---- configuration ----

#[test]
fn configuration_loads_from_toml_or_json_and_refuses_plaintext_tokens() {
    let toml_cfg = WebhookAuth::parse(&config_toml(2048), "webhook.toml").unwrap();
    assert_eq!(toml_cfg.ci.len(), 2);
    assert_eq!(toml_cfg.tokens.len(), TOKENS.len());
    assert_eq!(toml_cfg.max_body_bytes, 2048);
    let json_cfg = WebhookAuth::parse(&serde_json::to_string(&toml_cfg).unwrap(), "param").unwrap();
    assert_eq!(json_cfg, toml_cfg);
    // Defaults.
    let d = WebhookAuth::parse("{}", "empty").unwrap();
    assert_eq!((d.replay_window_secs, d.max_body_bytes), (120, 1 << 20));
    // From a file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("webhook.toml");
    std::fs::write(&p, config_toml(1024)).unwrap();
    assert_eq!(WebhookAuth::load(&p).unwrap().max_body_bytes, 1024);
    // Secrets never show in debug output.
    let dbg = format!("{toml_cfg:?}");
    assert!(
        !dbg.contains(CI_SECRET) && dbg.contains("redacted"),
        "{dbg}"
    );

    for (text, says) in [
        (
            "[[tokens]]\nidentity = \"ann\"\nsha256 = \"ann-token-9b3e5d7a1c2f4e60\"\n",
            "never the token itself",
        ),
        (
            "[[ci]]\nidentity = \"ci\"\nsecret = \"short\"\n",
            "at least 16",
        ),
        (
            "[[ci]]\nidentity = \"../ci\"\nsecret = \"0123456789abcdef0\"\n",
            "identity",
        ),
        (
            "[[ci]]\nidentity = \"ci\"\nsecret = \"0123456789abcdef0\"\n[[ci]]\nidentity = \"ci\"\nsecret = \"0123456789abcdef1\"\n",
            "listed twice",
        ),
        ("role = \"admin\"\n", "unknown field"),
        ("replay_window_secs = 0\n", "1 to 120"),
        ("replay_window_secs = 300\n", "1 to 120"),
        ("{\"tokens\": 5}", "invalid JSON"),
    ] {
        let e = WebhookAuth::parse(text, "webhook.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("webhook configuration webhook.toml: "),
            "{msg}"
        );
        assert!(msg.contains(says), "{msg:?} should say {says:?}");
    }
    assert!(
        WebhookAuth::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string()
            .contains("cannot read")
    );
}

#[test]
fn the_handler_future_is_send() {
    // `falaj serve` runs requests on tokio tasks.
    fn assert_send<F: std::future::Future + Send>(_: F) {}
    fn check(w: &Webhook) {
        assert_send(handle(w, HttpRequest::new("GET", "/v1/health")));
        assert_send(invoke(w, Value::Null));
    }
    let _ = check;
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_request_is_logged_with_its_id_route_identity_and_status() {
    let t = setup().await;
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut req = bearer("GET", "/v1/models/bc/versions/1", "", "eve");
    req.request_id = Some("req-42".into());
    assert_eq!(t.call(req).await.0, 404);
    let (s, _, r) = t
        .call(signed_at(
            "POST",
            "/v1/models/bc/versions",
            "{",
            CI,
            "wrong-secret-0123456789",
            NOW,
        ))
        .await;
    assert_eq!(s, 401);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["fields"]["message"] == "webhook request")
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let f = &lines[0]["fields"];
    assert_eq!(f["request_id"], "req-42");
    assert_eq!(f["route"], "/v1/models/{m}/versions/{v}");
    assert_eq!(f["identity"], "eve");
    assert_eq!(f["status"], 404);
    assert_eq!(f["code"], "not_found");
    let f = &lines[1]["fields"];
    assert_eq!(f["request_id"].as_str(), r.header("x-request-id"));
    assert_eq!(
        (f["identity"].as_str(), f["status"].as_u64()),
        (Some("-"), Some(401))
    );
    assert_eq!(f["code"], "signature_mismatch");
    assert!(
        !text.contains(CI_SECRET) && !text.contains(token("eve")),
        "no secrets in logs"
    );
}

#[test]
fn a_config_error_names_the_line_but_never_echoes_a_secret() {
    let text = "[[ci]]\nidentity = \"ci\"\nsecret = \"hunter2-very-secret-value\" trailing\n";
    let e = WebhookAuth::parse(text, "webhook.toml")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "the secret leaked: {e}");
    assert!(e.contains("line 3"), "{e}");
}

/// An MLflow call in an API Gateway event, as the webhook function gets it.
fn mlflow_event(method: &str, path: &str, query: &str, who: &str, body: &[u8]) -> Value {
    let mut ev = event_fixture("apigw_v2_named_stage_audit_bearer.json");
    ev["rawPath"] = json!(format!("/prod{path}"));
    ev["rawQueryString"] = json!(query);
    ev["requestContext"]["http"]["method"] = json!(method);
    ev["headers"]["authorization"] = json!(format!("Bearer {}", token(who)));
    ev["body"] = json!(webhook::http::base64_encode(body));
    ev["isBase64Encoded"] = json!(true);
    ev
}

#[tokio::test]
async fn mlflow_calls_arrive_through_api_gateway_and_artifacts_come_back_as_base64() {
    let t = setup().await;
    let ev = mlflow_event(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name",
        "experiment_name=Default",
        "sam",
        b"",
    );
    let (s, b) = lambda_response(&invoke(&t.wh, ev).await);
    assert_eq!(
        (s, b["experiment"]["experiment_id"].as_str()),
        (200, Some("0")),
        "{b:#}"
    );
    let ev = mlflow_event("POST", "/api/2.0/mlflow/runs/create", "", "sam", b"{}");
    let (s, b) = lambda_response(&invoke(&t.wh, ev).await);
    assert_eq!(s, 200, "{b:#}");
    let run = b["run"]["info"]["run_id"].as_str().unwrap().to_string();
    // Bytes that are not UTF-8 go up and come back intact.
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let path = format!("/api/2.0/mlflow-artifacts/artifacts/0/{run}/artifacts/blob.bin");
    let ev = mlflow_event("PUT", &path, "", "sam", &bytes);
    assert_eq!(lambda_response(&invoke(&t.wh, ev).await).0, 200);
    let out = invoke(&t.wh, mlflow_event("GET", &path, "", "sam", b"")).await;
    assert_eq!(out["statusCode"], 200);
    assert_eq!(out["isBase64Encoded"], true);
    let got = webhook::http::base64_decode(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(got, bytes);
    // MLflow's errors keep MLflow's shape through the adapter.
    let ev = mlflow_event("GET", "/api/2.0/mlflow/runs/get", "run_id=nope", "sam", b"");
    let (s, b) = lambda_response(&invoke(&t.wh, ev).await);
    assert_eq!(
        (s, b["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
}

/// Labels that arrive later, posted by someone who may move a rollout: written as one
/// create-only feedback file the canary controller reads, and audited. A viewer is refused,
/// and a malformed body writes nothing.
#[tokio::test]
async fn feedback_labels_are_recorded_by_those_who_may_roll_out() {
    let t = setup().await;
    create(&t.reg, MODEL).await;
    let path = "/v1/models/bc/feedback";
    // Refusals are audited (the viewer's is); nothing else may change.
    let outside_audit = |m: BTreeMap<String, Bytes>| -> BTreeMap<String, Bytes> {
        m.into_iter()
            .filter(|(k, _)| !k.starts_with("audit/"))
            .collect()
    };
    let before = outside_audit(t.snapshot().await);
    for (body, who, status, code) in [
        (
            r#"{"labels":[{"request_id":"a","label":"benign"}]}"#,
            "eve",
            403,
            "forbidden",
        ),
        (r#"{"labels":[]}"#, "mel", 400, "invalid_request"),
        (
            r#"{"labels":[{"request_id":"a,b","label":"benign"}]}"#,
            "mel",
            400,
            "invalid_request",
        ),
        (
            r#"{"labels":[{"request_id":"a","label":"x","extra":1}]}"#,
            "mel",
            400,
            "invalid_body",
        ),
    ] {
        let got = t.call(bearer("POST", path, body, who)).await;
        assert_eq!(
            (got.0, got.1["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {}",
            got.1
        );
    }
    assert_eq!(
        outside_audit(t.snapshot().await),
        before,
        "refused feedback writes nothing"
    );

    let body = r#"{"labels":[{"request_id":"3f1c","row":0,"label":"benign"},{"request_id":"3f1c","row":1,"label":"malignant"},{"request_id":"9a0b","label":2.5}]}"#;
    let (s, b, _) = t.call(bearer("POST", path, body, "mel")).await;
    assert_eq!(s, 200, "{b}");
    let key = b["key"].as_str().unwrap();
    assert!(
        key.starts_with("datasets/bc/feedback/") && key.ends_with(".csv"),
        "{key}"
    );
    let obj = t
        .reg
        .store()
        .get(&StoreKey::new(key).unwrap())
        .await
        .unwrap()
        .unwrap();
    let labels =
        falaj_core::live::parse_feedback(std::str::from_utf8(&obj.bytes).unwrap(), key).unwrap();
    let got: Vec<(&str, usize, &str)> = labels
        .iter()
        .map(|l| (l.request_id.as_str(), l.row, l.label.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("3f1c", 0, "benign"),
            ("3f1c", 1, "malignant"),
            ("9a0b", 0, "2.5")
        ]
    );
    let events = t.reg.audit_events(MODEL).await.unwrap();
    let (_, _, ev) = events.last().unwrap();
    assert_eq!(
        (ev.action.as_str(), ev.actor.as_str()),
        ("feedback.recorded", "mel")
    );
    assert_eq!(ev.details["key"], key);
}

/// The console through API Gateway: payload 2.0 carries cookies apart from the headers, both
/// ways, and a page comes back as text, not base64.
#[tokio::test]
async fn the_console_signs_in_and_serves_pages_through_api_gateway() {
    let t = setup().await;
    let page = |method: &str, path: &str, query: &str, cookies: Option<Vec<String>>, body: &str| {
        let mut ev = event_fixture("apigw_v2_named_stage_audit_bearer.json");
        ev["rawPath"] = json!(format!("/prod{path}"));
        ev["rawQueryString"] = json!(query);
        ev["requestContext"]["http"]["method"] = json!(method);
        ev["headers"]
            .as_object_mut()
            .unwrap()
            .remove("authorization");
        ev["headers"]["accept"] = json!("text/html");
        ev["headers"]["content-type"] = json!("application/x-www-form-urlencoded");
        ev["headers"]["x-forwarded-proto"] = json!("https");
        if let Some(c) = cookies {
            ev["cookies"] = json!(c);
        }
        ev["body"] = json!(body);
        ev["isBase64Encoded"] = json!(false);
        ev
    };
    // Without a session: sent to sign in.
    let out = invoke(&t.wh, page("GET", "/ui/models", "", None, "")).await;
    assert_eq!(out["statusCode"], 303, "{out:#}");
    assert_eq!(out["headers"]["location"], "/ui/login?next=%2Fui%2Fmodels");
    // Signing in sets the session cookie in `cookies`, Secure because the request was HTTPS.
    let body = format!("token={}&next=%2Fui%2Fmodels", token("ann"));
    let out = invoke(&t.wh, page("POST", "/ui/login", "", None, &body)).await;
    assert_eq!(out["statusCode"], 303, "{out:#}");
    let cookie = out["cookies"][0].as_str().unwrap().to_string();
    assert!(
        cookie.starts_with("falaj_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(
        out["headers"].get("set-cookie").is_none(),
        "cookies travel in `cookies` only"
    );
    // The cookie signs the next request in; the page is HTML, as text.
    let session = cookie.split(';').next().unwrap().to_string();
    let out = invoke(
        &t.wh,
        page(
            "GET",
            "/ui/models",
            "",
            Some(vec!["theme=dark".into(), session]),
            "",
        ),
    )
    .await;
    assert_eq!(out["statusCode"], 200, "{out:#}");
    assert_eq!(out["isBase64Encoded"], false);
    assert!(
        out["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .contains("Signed in as <strong id=\"identity\">ann</strong>")
    );
    // A wrong token sets no cookie.
    let out = invoke(&t.wh, page("POST", "/ui/login", "", None, "token=guess")).await;
    assert_eq!(out["statusCode"], 401);
    assert!(
        out["cookies"].as_array().is_none_or(|c| c.is_empty()),
        "{out:#}"
    );
}

/// An approver's rejection through the webhook: audited, a veto for that stage on every path,
/// and a decision that is neither approve nor reject is a 400 that writes nothing.
#[tokio::test]
async fn a_rejection_is_audited_and_stops_promotion_to_that_stage() {
    let t = setup().await;
    upload_run(&t.reg, "run-reject", &breast_cancer()).await;
    upload_holdout(&t.reg).await;
    let v = registered_validated_approved(&t, "run-reject").await;
    let before = snapshot(&t.reg).await;
    let bad = bearer(
        "POST",
        &format!("/v1/models/{MODEL}/versions/{v}/approvals"),
        r#"{"to":"production","decision":"veto"}"#,
        "bob",
    );
    assert_error(
        &t.call(bad).await,
        400,
        "invalid_body",
        &["approve", "reject"],
    );
    assert!(new_keys(&before, &snapshot(&t.reg).await).is_empty());
    let reject = bearer(
        "POST",
        &format!("/v1/models/{MODEL}/versions/{v}/approvals"),
        r#"{"to":"production","decision":"reject","comment":"calibration is off"}"#,
        "bob",
    );
    let (s, b, _) = t.call(reject).await;
    assert_eq!(
        (s, b["rejection"]["rejected_by"].as_str()),
        (200, Some("bob")),
        "{b:#}"
    );
    let events = t.reg.audit_events(MODEL).await.unwrap();
    assert!(
        events
            .iter()
            .any(|(_, _, e)| e.action == "version.rejected" && e.actor == "bob")
    );
    // Production is refused, naming who and why, even with the approvals it has.
    let promote = bearer(
        "POST",
        &format!("/v1/models/{MODEL}/versions/{v}/promote"),
        r#"{"to":"production"}"#,
        "mel",
    );
    assert_error(
        &t.call(promote).await,
        422,
        "refused",
        &["rejected for production by bob", "calibration is off"],
    );
    // Staging was not rejected.
    let staging = bearer(
        "POST",
        &format!("/v1/models/{MODEL}/versions/{v}/promote"),
        r#"{"to":"staging"}"#,
        "mel",
    );
    assert_eq!(t.call(staging).await.0, 200);
}
