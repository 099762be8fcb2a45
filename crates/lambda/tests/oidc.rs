//! CI signs in with its OIDC token: register → validate → approve → promote driven by tokens
//! only (no shared secret), and every token we know to be bad refused with its own code,
//! writing nothing. Keys are local (`tests/fixtures/oidc/`: a test-only RSA key and its JWKS,
//! pinned in the store as the issuer's key set).

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use falaj::Registry;
use falaj::deploy::DeployKey;
use falaj::store::list_all;
use falaj_core::StoreKey;
use falaj_core::promotion::Role;
use falaj_webhook::{HttpRequest, LocalPromoter, Webhook, WebhookAuth, handle};
use gates_fixtures::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The server's clock: 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const AUD: &str = "falaj-test";
const REPO_ID: &str = "4242";
const SHA: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
const MODEL: &str = "bc";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/oidc")
            .join(name),
    )
    .unwrap()
}

fn config() -> String {
    let entry = |identity: &str, extra: &str| {
        format!(
            "[[oidc]]\nissuer = \"{ISSUER}\"\naudience = \"{AUD}\"\nidentity = \"{identity}\"\nbind = [\"repository\", \"sha\"]\n[oidc.claims]\nrepository_id = \"{REPO_ID}\"\nref_protected = true\n{extra}\n"
        )
    };
    [
        entry(
            "github-acme",
            "ref = \"refs/heads/main\"\nenvironment = \"ci\"",
        ),
        entry("ann", "environment = \"approve-ann\""),
        entry("bob", "environment = \"approve-bob\""),
    ]
    .concat()
}

/// GitHub's claims for a push to main of acme/models at [`SHA`].
fn claims(jti: &str) -> BTreeMap<String, Value> {
    serde_json::from_value(json!({
        "iss": ISSUER,
        "aud": AUD,
        "sub": "repo:acme/models:ref:refs/heads/main",
        "repository": "acme/models",
        "repository_id": REPO_ID,
        "repository_owner_id": "77",
        "ref": "refs/heads/main",
        "ref_protected": "true",
        "sha": SHA,
        "event_name": "push",
        "environment": "ci",
        "jti": jti,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 300,
    }))
    .unwrap()
}

fn sign_with(claims: &BTreeMap<String, Value>, der: &[u8], kid: &str) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_rsa_der(der)).unwrap()
}

fn token(claims: &BTreeMap<String, Value>) -> String {
    sign_with(claims, &fixture("test-ci-key.der"), "test-kid-1")
}

fn b64url(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

struct T {
    _env: Env,
    reg: Arc<Registry>,
    wh: Webhook,
}

async fn setup() -> T {
    let e = env().await;
    promotion_grant(&e.reg, "github-acme", Role::MlEngineer).await;
    put_object(
        &e.reg,
        "keys/oidc/token.actions.githubusercontent.com.json",
        fixture("jwks.json"),
    )
    .await;
    let reg = Arc::new(Registry::new(e.reg.store().clone()));
    let auth = WebhookAuth::parse(&config(), "webhook.toml").unwrap();
    let wh = Webhook::new(
        reg.clone(),
        Arc::new(LocalPromoter::new(
            reg.clone(),
            DeployKey::from_seed([9; 32]),
        )),
        auth,
    )
    .with_validator(Arc::new(falaj_gates::LocalValidator))
    .with_clock(|| NOW);
    T { _env: e, reg, wh }
}

async fn promotion_grant(reg: &Registry, who: &str, role: Role) {
    falaj::promotion::grant(reg, "root", who, role)
        .await
        .unwrap();
}

impl T {
    async fn call(&self, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        let req = HttpRequest::new(method, path)
            .with_header("Authorization", format!("Bearer {token}"))
            .with_header("Content-Type", "application/json")
            .with_body(if body.is_null() {
                String::new()
            } else {
                body.to_string()
            });
        let r = handle(&self.wh, req).await;
        (r.status, r.json_body())
    }

    async fn snapshot(&self) -> BTreeMap<String, Bytes> {
        let mut out = BTreeMap::new();
        for k in list_all(self.reg.store().as_ref(), "").await.unwrap() {
            let o = self
                .reg
                .store()
                .get(&StoreKey::new(k.clone()).unwrap())
                .await
                .unwrap()
                .unwrap();
            out.insert(k, o.bytes);
        }
        out
    }
}

fn ci() -> Value {
    json!({"repository": "acme/models", "sha": SHA})
}

async fn upload(reg: &Registry) {
    let f = breast_cancer();
    let mut m = f.manifest.clone();
    m.model = MODEL.into();
    put_object(reg, "incoming/bc/run-1/model.onnx", f.onnx.clone()).await;
    put_object(
        reg,
        "incoming/bc/run-1/manifest.json",
        serde_json::to_vec(&m).unwrap(),
    )
    .await;
    put_object(
        reg,
        "holdout/bc.csv",
        std::fs::read(dataset("breast_cancer.csv")).unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_drives_register_validate_approve_promote_with_oidc_tokens_only() {
    let t = setup().await;
    upload(&t.reg).await;
    attach_policy(&t.reg, MODEL, "[metrics]\naccuracy = { min = 0.9 }\n").await;
    let reg_body = json!({"artifact": "incoming/bc/run-1/model.onnx", "manifest": "incoming/bc/run-1/manifest.json", "ci": ci()});
    let (s, b) = t
        .call(
            &token(&claims("j-1")),
            "POST",
            "/v1/models/bc/versions",
            reg_body,
        )
        .await;
    assert_eq!(s, 201, "{b:#}");
    let v = t.reg.version(MODEL, 1).await.unwrap();
    assert_eq!(
        v.author, "github-acme",
        "the version records the token's identity"
    );

    let (s, b) = t
        .call(
            &token(&claims("j-2")),
            "POST",
            "/v1/models/bc/versions/1/validate",
            json!({"holdout": "holdout/bc.csv", "ci": ci()}),
        )
        .await;
    assert_eq!(s, 200, "{b:#}");
    for (who, jti) in [("ann", "j-3"), ("bob", "j-4")] {
        let mut c = claims(jti);
        c.insert("environment".into(), json!(format!("approve-{who}")));
        c.insert("ref".into(), json!("refs/heads/main"));
        let (s, b) = t
            .call(
                &token(&c),
                "POST",
                "/v1/models/bc/versions/1/approvals",
                json!({"to": "production", "ci": ci()}),
            )
            .await;
        assert_eq!(s, 200, "{who}: {b:#}");
        assert_eq!(b["approval"]["by"], who, "{b:#}");
    }
    let (s, b) = t
        .call(
            &token(&claims("j-5")),
            "POST",
            "/v1/models/bc/versions/1/promote",
            json!({"to": "production", "ci": ci()}),
        )
        .await;
    assert_eq!(s, 200, "{b:#}");
    let events = t.reg.audit_events(MODEL).await.unwrap();
    let actors: Vec<&str> = events.iter().map(|(_, _, e)| e.actor.as_str()).collect();
    assert!(actors.contains(&"github-acme") && actors.contains(&"ann") && actors.contains(&"bob"));
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_own_code_and_nothing_is_written() {
    let t = setup().await;
    upload(&t.reg).await;
    let body = json!({"artifact": "incoming/bc/run-1/model.onnx", "manifest": "incoming/bc/run-1/manifest.json", "ci": ci()});
    let with = |f: &dyn Fn(&mut BTreeMap<String, Value>)| {
        let mut c = claims("bad");
        f(&mut c);
        token(&c)
    };
    let header_none = b64url(br#"{"alg":"none","typ":"JWT","kid":"test-kid-1"}"#);
    let payload = b64url(&serde_json::to_vec(&claims("none-1")).unwrap());
    let alg_none = format!("{header_none}.{payload}.");
    let alg_none_sig = format!("{header_none}.{payload}.c2ln");
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("test-kid-1".into());
        jsonwebtoken::encode(
            &h,
            &claims("hs-1"),
            &EncodingKey::from_secret(&fixture("jwks.json")),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "expired",
            with(&|c| {
                c.insert("exp".into(), json!(NOW - 120));
            }),
            401,
            "token_expired",
        ),
        (
            "not yet valid",
            with(&|c| {
                c.insert("nbf".into(), json!(NOW + 600));
            }),
            401,
            "token_not_yet_valid",
        ),
        (
            "issued in the future",
            with(&|c| {
                c.insert("iat".into(), json!(NOW + 600));
            }),
            401,
            "token_not_yet_valid",
        ),
        (
            "wrong audience",
            with(&|c| {
                c.insert("aud".into(), json!("sts.amazonaws.com"));
            }),
            401,
            "wrong_audience",
        ),
        (
            "wrong issuer",
            with(&|c| {
                c.insert("iss".into(), json!("https://gitlab.example.com"));
            }),
            401,
            "wrong_issuer",
        ),
        (
            "unknown kid",
            sign_with(&claims("k-1"), &fixture("test-ci-key.der"), "rotated-kid"),
            401,
            "unknown_kid",
        ),
        (
            "another key under the pinned kid",
            sign_with(&claims("k-2"), &fixture("other-key.der"), "test-kid-1"),
            401,
            "bad_signature",
        ),
        (
            "alg none, empty signature",
            alg_none.clone(),
            401,
            "algorithm_refused",
        ),
        (
            "alg none, some signature",
            alg_none_sig,
            401,
            "algorithm_refused",
        ),
        (
            "HS256 signed with the public key set",
            hs256,
            401,
            "algorithm_refused",
        ),
        (
            "no jti",
            with(&|c| {
                c.remove("jti");
            }),
            401,
            "malformed_token",
        ),
        (
            "a fork's pull request",
            with(&|c| {
                c.insert("ref".into(), json!("refs/pull/7/merge"));
                c.insert("event_name".into(), json!("pull_request"));
                c.insert("ref_protected".into(), json!("false"));
            }),
            403,
            "no_identity_for_claims",
        ),
        (
            "another repository with the same name",
            with(&|c| {
                c.insert("repository_id".into(), json!("9999"));
            }),
            403,
            "no_identity_for_claims",
        ),
    ];
    let before = t.snapshot().await;
    for (what, tok, status, code) in &cases {
        let (s, b) = t
            .call(tok, "POST", "/v1/models/bc/versions", body.clone())
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{what}: {b:#}"
        );
    }
    // A valid token whose request does not repeat its commit: refused, nothing written.
    let (s, b) = t
        .call(&token(&claims("unbound")), "POST", "/v1/models/bc/versions", json!({"artifact": "incoming/bc/run-1/model.onnx", "manifest": "incoming/bc/run-1/manifest.json", "ci": {"repository": "acme/models", "sha": "ffff"}}))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("unbound_request")),
        "{b:#}"
    );
    assert_eq!(t.snapshot().await, before, "a refused token writes nothing");

    // The same token twice: the second use is a replay.
    let once = token(&claims("once"));
    let (s, b) = t
        .call(&once, "POST", "/v1/models/bc/versions", body.clone())
        .await;
    assert_eq!(s, 201, "{b:#}");
    let after_first = t.snapshot().await;
    let (s, b) = t
        .call(&once, "POST", "/v1/models/bc/versions", body.clone())
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("token_replayed")),
        "{b:#}"
    );
    assert_eq!(t.snapshot().await, after_first, "a replay writes nothing");
}

#[test]
fn a_configuration_must_match_an_immutable_id() {
    let by_name = format!(
        "[[oidc]]\nissuer = \"{ISSUER}\"\naudience = \"{AUD}\"\nidentity = \"x\"\n[oidc.claims]\nrepository = \"acme/models\"\n"
    );
    let e = WebhookAuth::parse(&by_name, "w.toml").unwrap_err();
    assert!(e.reason.contains("immutable id claim"), "{e}");
    let http = format!(
        "[[oidc]]\nissuer = \"http://token.actions.githubusercontent.com\"\naudience = \"{AUD}\"\nidentity = \"x\"\n[oidc.claims]\nrepository_id = \"1\"\n"
    );
    assert!(WebhookAuth::parse(&http, "w.toml").is_err());
}
