//! People on an `s3://` store are who AWS says they are: the real `falaj` binary against a
//! real S3 and STS (moto) on loopback. Each person is an assumed-role session, with its own
//! credentials from STS `AssumeRole`; the CLI asks STS `GetCallerIdentity` who is calling,
//! and `roles.json` maps that ARN to an identity. Four-eyes binds to those principals.

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;
#[path = "../../falaj/tests/support/mod.rs"]
mod support;

use std::process::Command;

use serde_json::Value;

const MODEL: &str = "bc";
const POLICY: &str = "[metrics]\naccuracy = { min = 0.9 }\n";
const ACCOUNT: &str = "123456789012";

/// Credentials of one STS session.
#[derive(Clone)]
struct Session {
    key: String,
    secret: String,
    token: Option<String>,
}

impl Session {
    /// The static test credentials (moto names them `user/moto`).
    fn platform() -> Self {
        Self {
            key: "falaj-test".into(),
            secret: "falaj-test".into(),
            token: None,
        }
    }
}

/// A new session of `role` named `name`, from STS `AssumeRole`.
async fn assume(role: &str, name: &str) -> Session {
    let conf = aws_sdk_sts::config::Builder::new()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("me-central-1"))
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "falaj-test",
            "falaj-test",
            None,
            None,
            "test",
        ))
        .endpoint_url(support::s3_endpoint())
        .build();
    let out = aws_sdk_sts::Client::from_conf(conf)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/{role}"))
        .role_session_name(name)
        .send()
        .await
        .unwrap();
    let c = out.credentials.unwrap();
    Session {
        key: c.access_key_id,
        secret: c.secret_access_key,
        token: Some(c.session_token),
    }
}

fn arn(role: &str, name: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{name}")
}

struct Ran {
    code: Option<i32>,
    out: Value,
    err: String,
}

struct Cli {
    uri: String,
    dir: tempfile::TempDir,
}

impl Cli {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, s: &Session, args: &[&str]) -> Ran {
        let mut c = Command::new(env!("CARGO_BIN_EXE_falaj"));
        c.arg("--store")
            .arg(&self.uri)
            .arg("--json")
            .args(args)
            .env("FALAJ_S3_ENDPOINT", support::s3_endpoint())
            .env("FALAJ_SIGNING_KEY", self.dir.path().join("signing.key"))
            .env("AWS_ACCESS_KEY_ID", &s.key)
            .env("AWS_SECRET_ACCESS_KEY", &s.secret)
            .env("AWS_REGION", "me-central-1")
            .env_remove("FALAJ_IDENTITY")
            .env_remove("AWS_PROFILE");
        match &s.token {
            Some(t) => c.env("AWS_SESSION_TOKEN", t),
            None => c.env_remove("AWS_SESSION_TOKEN"),
        };
        let out = c.output().unwrap();
        Ran {
            code: out.status.code(),
            out: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn ok(&self, s: &Session, args: &[&str]) -> Value {
        let r = self.run(s, args);
        assert_eq!(r.code, Some(0), "falaj {args:?}: {}", r.err);
        r.out
    }

    #[track_caller]
    fn refused(&self, s: &Session, args: &[&str], code: &str) -> String {
        let r = self.run(s, args);
        assert_eq!(r.code, Some(6), "falaj {args:?} must be refused: {}", r.err);
        assert!(r.err.contains(&format!("\"{code}\"")), "{}", r.err);
        r.err
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_eyes_binds_to_the_principals_sts_names() {
    let bucket = support::s3_bucket("me-central-1").await;
    let cli = Cli {
        uri: format!("s3://{bucket}/reg"),
        dir: tempfile::tempdir().unwrap(),
    };
    let platform = Session::platform();
    let dana = assume("falaj-trainer", "dana").await;
    let ann = assume("falaj-approver", "ann").await;
    let ann_again = assume("falaj-approver", "ann").await;
    let bob = assume("falaj-approver", "bob").await;
    let mel = assume("falaj-engineer", "mel").await;
    let mallory = assume("falaj-approver", "mallory").await;

    // Bootstrap: before roles.json exists, the first grant makes its caller admin and maps
    // the caller's ARN to the identity it chose.
    let me = cli.ok(&platform, &["--as", "platform", "whoami"]);
    assert_eq!(me["verified"], true);
    assert_eq!(me["principal"], support::MOTO_USER_ARN);
    cli.ok(
        &platform,
        &["--as", "platform", "roles", "grant", "platform", "admin"],
    );
    let me = cli.ok(&platform, &["whoami"]);
    assert_eq!(me["identity"], "platform", "{me}");
    assert_eq!(me["roles"], serde_json::json!(["admin"]));
    for (role, name, identity, grant) in [
        ("falaj-trainer", "dana", "dana", "data-scientist"),
        ("falaj-approver", "ann", "ann", "approver"),
        ("falaj-approver", "bob", "bob", "approver"),
        ("falaj-engineer", "mel", "mel", "ml-engineer"),
    ] {
        cli.ok(&platform, &["roles", "map", &arn(role, name), identity]);
        cli.ok(&platform, &["roles", "grant", identity, grant]);
    }
    // dana may approve too, just not what she uploaded.
    cli.ok(&platform, &["roles", "grant", "dana", "approver"]);

    // Who each session is, as the store sees it.
    let who = cli.ok(&ann, &["whoami"]);
    assert_eq!(who["identity"], "ann");
    assert_eq!(who["principal"], arn("falaj-approver", "ann"));
    assert_eq!(who["verified"], true);
    assert_eq!(who["roles"], serde_json::json!(["approver"]));
    // A session nobody mapped has no identity, whatever name it picked.
    let err = cli.refused(&mallory, &["whoami"], "unknown_principal");
    assert!(err.contains("falaj roles map"), "{err}");
    // --as is not a way to become someone else, unless you are admin.
    let err = cli.refused(&ann, &["--as", "bob", "whoami"], "forbidden");
    assert!(err.contains("only an admin"), "{err}");

    // dana pushes; the version records her identity and her ARN.
    let f = gates_fixtures::breast_cancer();
    let mut manifest = f.manifest.clone();
    manifest.model = MODEL.into();
    std::fs::write(
        cli.path("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(cli.path("m.onnx"), &f.onnx).unwrap();
    std::fs::write(cli.path("policy.toml"), POLICY).unwrap();
    let holdout = gates_fixtures::dataset("breast_cancer.csv")
        .display()
        .to_string();
    cli.ok(&platform, &["model", "create", MODEL]);
    cli.ok(&mel, &["policy", "set", MODEL, &cli.path("policy.toml")]);
    let push = |s: &Session, extra: &[&str]| {
        let mut args = extra.to_vec();
        let (m, onnx) = (cli.path("manifest.json"), cli.path("m.onnx"));
        args.extend(["push", MODEL, &onnx, "--manifest", &m]);
        let out = cli.ok(s, &args);
        let v = out["version"]["version"].as_u64().unwrap();
        cli.ok(
            &mel,
            &["validate", &format!("{MODEL}@{v}"), "--data", &holdout],
        );
        (v, out)
    };
    let (v1, out) = push(&dana, &[]);
    assert_eq!(out["version"]["author"], "dana");
    assert_eq!(
        out["version"]["author_principal"],
        arn("falaj-trainer", "dana")
    );
    let approve = |v: u64| -> Vec<String> {
        ["approve", &format!("{MODEL}@{v}"), "--to", "production"]
            .map(String::from)
            .to_vec()
    };
    let strs = |a: &[String]| a.iter().map(String::clone).collect::<Vec<String>>();
    let run = |s: &Session, pre: &[&str], a: &[String]| {
        let mut all: Vec<&str> = pre.to_vec();
        all.extend(a.iter().map(String::as_str));
        cli.run(s, &all)
    };
    let ok = |s: &Session, pre: &[&str], a: &[String]| {
        let r = run(s, pre, a);
        assert_eq!(r.code, Some(0), "falaj {pre:?} {a:?}: {}", r.err);
        r.out
    };
    let refused = |s: &Session, pre: &[&str], a: &[String]| {
        let r = run(s, pre, a);
        assert_eq!(
            r.code,
            Some(6),
            "falaj {pre:?} {a:?} must be refused: {}",
            r.err
        );
        assert!(r.err.contains("\"refused\""), "{}", r.err);
        r.err
    };

    // The uploader cannot approve.
    let err = refused(&dana, &[], &approve(v1));
    assert!(err.contains("bc@1 was registered by dana"), "{err}");
    // One approval, even from two sessions of the same person, is one.
    let a = ok(&ann, &[], &approve(v1));
    assert_eq!(a["principal"], arn("falaj-approver", "ann"));
    ok(&ann_again, &[], &approve(v1));
    let promote =
        strs(&["promote", &format!("{MODEL}@{v1}"), "--to", "production"].map(String::from));
    let err = refused(&mel, &[], &promote);
    assert!(err.contains("1 of 2 approvals"), "{err}");
    // Two principals: it promotes.
    ok(&bob, &[], &approve(v1));
    ok(&mel, &[], &promote);

    // An admin who uploads (acting as dana) cannot approve it under another name.
    let (v2, out) = push(&platform, &["--as", "dana"]);
    assert_eq!(out["version"]["author"], "dana");
    assert_eq!(out["version"]["author_principal"], support::MOTO_USER_ARN);
    let err = refused(&platform, &["--as", "ann"], &approve(v2));
    assert!(err.contains("registered by dana (principal arn:aws:sts::123456789012:user/moto), who cannot approve it under any name (here as ann)"), "{err}");

    // An admin approves once, and not again under a second name.
    let (v3, _) = push(&dana, &[]);
    ok(&platform, &["--as", "ann"], &approve(v3));
    let err = refused(&platform, &["--as", "bob"], &approve(v3));
    assert!(err.contains("not another name"), "{err}");

    // Every refusal is in the audit chain, under the identity that tried.
    let events = cli.ok(&platform, &["audit", MODEL]);
    let refused = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "refused")
        .count();
    assert!(refused >= 3, "{events}");
    let v = cli.ok(&platform, &["audit", MODEL, "--verify"]);
    assert_eq!(v["ok"], true, "{v}");
}

/// Serves `routes` (path → body) over HTTP on loopback, for as many requests as come.
fn serve_http(routes: Vec<(&'static str, Vec<u8>)>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut line = String::new();
            let mut r = BufReader::new(c.try_clone().unwrap());
            if r.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut h = String::new();
            while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let (status, body) = routes
                .iter()
                .find(|(p, _)| *p == path)
                .map_or(("404 Not Found", &b""[..]), |(_, b)| ("200 OK", &b[..]));
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(body);
        }
    });
    format!("http://{addr}")
}

/// `falaj oidc refresh` pins an issuer's RS256 keys where the webhook reads them, for admins
/// only, audited; a set with no usable key, a non-https issuer or a non-https URL off
/// loopback is refused with its own code, and nothing is written.
#[test]
fn oidc_refresh_pins_the_issuers_rs256_keys_for_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let fixture = |n: &str| {
        std::fs::read(format!(
            "{}/../../tests/fixtures/oidc/{n}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let jwks = fixture("jwks.json");
    let hs_only = br#"{"keys":[{"kty":"oct","kid":"h","alg":"HS256","k":"c2VjcmV0"}]}"#.to_vec();
    let base = serve_http(vec![("/jwks", jwks.clone()), ("/hs", hs_only)]);
    let run = |who: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_falaj"))
            .arg("--store")
            .arg(format!("dir://{}", store.display()))
            .args(["--json", "--as", who])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    const GITHUB: &str = "https://token.actions.githubusercontent.com";
    let pinned = store.join("keys/oidc/token.actions.githubusercontent.com.json");
    let (code, _, err) = run("root", &["roles", "grant", "eve", "viewer"]);
    assert_eq!(code, Some(0), "{err}");

    let url = format!("{base}/jwks");
    let (code, _, err) = run("eve", &["oidc", "refresh", GITHUB, "--jwks-url", &url]);
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("\"forbidden\""), "{err}");
    assert!(!pinned.exists());

    for (args, code_name) in [
        (
            vec![GITHUB, "--jwks-url", &format!("{base}/hs")],
            "invalid_keys",
        ),
        (
            vec!["http://token.example", "--jwks-url", &url],
            "invalid_issuer",
        ),
        (
            vec![GITHUB, "--jwks-url", "http://example.com/jwks"],
            "fetch_failed",
        ),
        (
            vec![GITHUB, "--jwks-url", &format!("{base}/gone")],
            "fetch_failed",
        ),
    ] {
        let mut a = vec!["oidc", "refresh"];
        a.extend(args.iter().copied());
        let (code, _, err) = run("root", &a);
        assert_ne!(code, Some(0), "{a:?}");
        assert!(err.contains(&format!("\"{code_name}\"")), "{a:?}: {err}");
        assert!(!pinned.exists(), "{a:?} wrote the key set");
    }

    let (code, out, err) = run("root", &["oidc", "refresh", GITHUB, "--jwks-url", &url]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out["kids"], serde_json::json!(["test-kid-1"]), "{out}");
    let stored: Value = serde_json::from_slice(&std::fs::read(&pinned).unwrap()).unwrap();
    let given: Value = serde_json::from_slice(&jwks).unwrap();
    assert_eq!(stored["keys"][0]["n"], given["keys"][0]["n"]);
    // Again (a rotation): the event names the keys before.
    let (code, out, err) = run("root", &["oidc", "refresh", GITHUB, "--jwks-url", &url]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out["previous"], serde_json::json!(["test-kid-1"]));
    let (code, events, err) = run("root", &["audit", "_roles", "--verify"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(events["ok"], true, "{events}");
    let (_, events, _) = run("root", &["audit", "_roles"]);
    let pins: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "oidc.keys_pinned")
        .collect();
    assert_eq!(pins.len(), 2, "{events}");
    assert_eq!(pins[1]["actor"], "root");
}
