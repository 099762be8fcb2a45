//! The integrity issue's attacks made the way an attacker would, against the real `falaj`
//! binary on a `dir://` store: a legitimate model reaches production through the CLI, then
//! each attack is refused, production and its signed deployment stay where they were, and
//! `falaj audit --verify` names what was tampered with. (The webhook replay runs against the
//! real `falaj serve` in `serve.rs`, the unpinned edge key against the real `falaj-edge`, the
//! model bomb in `integrity.rs`, the half-made move in `registry.rs`.)

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;

use std::path::{Path, PathBuf};
use std::process::Command;

use gates_fixtures::*;
use serde_json::Value;

const MODEL: &str = "bc";
const POLICY: &str = "[metrics]\naccuracy = { min = 0.9 }\n";

struct Cli {
    dir: tempfile::TempDir,
}

/// What a run printed: exit code, stdout as JSON (or Null), stderr.
struct Ran {
    code: Option<i32>,
    out: Value,
    raw: String,
    err: String,
}

impl Cli {
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn run(&self, who: &str, args: &[&str]) -> Ran {
        self.run_env(who, args, &[])
    }
    fn run_env(&self, who: &str, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let out = Command::new(env!("CARGO_BIN_EXE_falaj"))
            .arg("--store")
            .arg(format!("dir://{}", self.store().display()))
            .args(["--json", "--as", who])
            .args(args)
            .env("FALAJ_SIGNING_KEY", self.dir.path().join("signing.key"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Ran {
            code: out.status.code(),
            out: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            raw: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    #[track_caller]
    fn ok(&self, who: &str, args: &[&str]) -> Value {
        let r = self.run(who, args);
        assert_eq!(r.code, Some(0), "{who}: falaj {args:?}: {}", r.err);
        r.out
    }
    /// The champion of the signed production deployment (its payload).
    fn champion(&self) -> u64 {
        let signed: Value = serde_json::from_slice(
            &std::fs::read(self.object("deployments/prod/bc.json")).unwrap(),
        )
        .unwrap();
        let m: Value = serde_json::from_str(signed["payload"].as_str().unwrap()).unwrap();
        m["champion"]["version"].as_u64().unwrap()
    }
    fn object(&self, key: &str) -> PathBuf {
        self.store().join(key)
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn verify(cli: &Cli) -> Ran {
    cli.run("root", &["audit", MODEL, "--verify"])
}

#[test]
fn each_attack_through_the_cli_is_refused_and_named() {
    let cli = Cli {
        dir: tempfile::tempdir().unwrap(),
    };
    let f = breast_cancer();
    let mut manifest = f.manifest.clone();
    manifest.model = MODEL.into();
    std::fs::write(
        cli.path("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(cli.path("good.onnx"), &f.onnx).unwrap();
    std::fs::write(cli.path("bad.onnx"), degraded(&f).onnx).unwrap();
    std::fs::write(cli.path("policy.toml"), POLICY).unwrap();
    std::fs::write(
        cli.path("lax.toml"),
        "[metrics]\naccuracy = { min = 0.0 }\n",
    )
    .unwrap();
    let holdout = dataset("breast_cancer.csv").display().to_string();

    // The legitimate path: roles, a policy, a good version validated, approved by two
    // approvers who are not its author, promoted by an ml-engineer.
    cli.ok("root", &["roles", "grant", "root", "admin"]);
    for (who, role) in [
        ("mel", "ml-engineer"),
        ("ann", "approver"),
        ("bob", "approver"),
        ("sam", "data-scientist"),
    ] {
        cli.ok("root", &["roles", "grant", who, role]);
    }
    cli.ok("root", &["model", "create", MODEL, "--owner", "ml"]);
    cli.ok("mel", &["policy", "set", MODEL, &cli.path("policy.toml")]);
    let manifest_arg = cli.path("manifest.json");
    for file in ["good.onnx", "bad.onnx"] {
        cli.ok(
            "sam",
            &["push", MODEL, &cli.path(file), "--manifest", &manifest_arg],
        );
    }
    let r = cli.ok("sam", &["validate", "bc@1", "--data", &holdout]);
    assert_eq!(r["passed"], true, "{r}");
    cli.ok("ann", &["approve", "bc@1", "--to", "production"]);
    cli.ok("bob", &["approve", "bc@1", "--to", "production"]);
    cli.ok("mel", &["promote", "bc@1", "--to", "production"]);
    assert_eq!(cli.champion(), 1);
    assert_eq!(verify(&cli).code, Some(0), "{}", verify(&cli).err);

    // The aliases promotion manages cannot be set by hand, whoever asks (exit 6).
    for who in ["mel", "root"] {
        let r = cli.run(who, &["alias", "set", MODEL, "production", "2"]);
        assert_eq!(r.code, Some(6), "{}", r.err);
        assert!(r.err.contains("managed by promotion"), "{}", r.err);
    }
    assert_eq!(cli.champion(), 1);

    // 3. The caller picks the policy: an advisory report, never a promotion.
    let r = cli.ok(
        "sam",
        &[
            "validate",
            "bc@2",
            "--data",
            &holdout,
            "--policy",
            &cli.path("lax.toml"),
        ],
    );
    assert_eq!(
        (r["passed"].as_bool(), r["advisory"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    let r = cli.run("mel", &["promote", "bc@2", "--to", "staging"]);
    assert_eq!(r.code, Some(6), "{}", r.err);

    // 3b. A holdout of NaN rows is refused, naming file, row and column; nothing written.
    let csv = std::fs::read_to_string(&holdout).unwrap();
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    let mut cells: Vec<String> = lines[1].split(',').map(String::from).collect();
    cells[0] = "NaN".into();
    lines[1] = cells.join(",");
    std::fs::write(cli.path("nan.csv"), lines.join("\n") + "\n").unwrap();
    let reports = |cli: &Cli| {
        std::fs::read_dir(cli.object("models/bc/versions/2"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = reports(&cli);
    let r = cli.run("sam", &["validate", "bc@2", "--data", &cli.path("nan.csv")]);
    assert_ne!(r.code, Some(0));
    assert!(
        r.err.contains("nan.csv") && r.err.contains("row 1"),
        "{}",
        r.err
    );
    assert_eq!(reports(&cli), before, "a refused holdout writes nothing");

    // Oversized inputs are refused before they are read, naming the limit.
    let r = cli.run_env(
        "sam",
        &["validate", "bc@2", "--data", &holdout],
        &[("FALAJ_MAX_HOLDOUT_BYTES", "1000")],
    );
    assert_ne!(r.code, Some(0));
    assert!(r.err.contains("FALAJ_MAX_HOLDOUT_BYTES"), "{}", r.err);
    let r = cli.run_env(
        "sam",
        &["validate", "bc@2", "--data", &holdout],
        &[("FALAJ_MAX_ARTIFACT_BYTES", "100")],
    );
    assert_ne!(r.code, Some(0));
    assert!(r.err.contains("FALAJ_MAX_ARTIFACT_BYTES"), "{}", r.err);
    assert_eq!(reports(&cli), before, "a refused input writes nothing");

    // 4. A retraining request naming a local file (the signing key) as its dataset: `falaj
    // serve` refuses it and nothing of the file reaches its output or the store.
    let secret = std::fs::read_to_string(cli.dir.path().join("signing.key")).unwrap();
    let request = serde_json::json!({
        "schema": 1, "model": MODEL, "version": 1, "env": "prod",
        "requested_at": "2026-12-01T00:00:00Z", "requested_by": "falaj-drift",
        "drifted": ["mean radius"],
        "report": {"model": MODEL, "version": 1, "rows": 300, "windows": 1,
                   "rule": {"psi": 0.25, "ks": null, "min_rows": 200}, "features": [],
                   "enough_rows": true, "drifted": ["mean radius"]},
        "dataset": cli.dir.path().join("signing.key"), "labelled": [],
        "target": "diagnosis", "telemetry": []
    });
    let req = cli.object("retrain/bc/20261201T000000Z-v1.json");
    std::fs::create_dir_all(req.parent().unwrap()).unwrap();
    std::fs::write(&req, serde_json::to_vec(&request).unwrap()).unwrap();
    let trainer = Path::new(env!("CARGO_BIN_EXE_falaj")).with_file_name("falaj-train");
    let r = cli.run(
        "root",
        &[
            "serve",
            "--once",
            "--retrain-dir",
            &cli.path("retrain"),
            "--trainer",
            trainer.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, Some(0), "{}", r.err);
    let printed = format!("{}\n{}", r.raw, r.err);
    assert!(
        !printed.contains(secret.trim()),
        "the key leaked: {printed}"
    );
    let refused = r.raw.lines().any(|l| {
        let step: Value = serde_json::from_str(l).unwrap_or(Value::Null);
        step["step"] == "retrain" && step.to_string().contains("datasets/bc/")
    });
    assert!(refused, "no refusal naming datasets/bc/: {printed}");
    for entry in walk(&cli.store()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret.trim()),
            "the key reached {}",
            entry.display()
        );
    }

    // 1. A store writer points production at v2 by hand; no repair signs it.
    let alias = cli.object("models/bc/aliases/production.json");
    let original = std::fs::read(&alias).unwrap();
    let mut rec: Value = serde_json::from_slice(&original).unwrap();
    rec["version"] = 2.into();
    rec["generation"] = (rec["generation"].as_u64().unwrap() + 1).into();
    std::fs::write(&alias, serde_json::to_vec(&rec).unwrap()).unwrap();
    let r = cli.run("nobody", &["deployments", "--repair"]);
    assert_ne!(r.code, Some(0), "repair needs admin");
    assert!(r.err.contains("forbidden"), "{}", r.err);
    let r = cli.run("root", &["deployments", "--repair"]);
    assert_eq!(r.code, Some(6), "{}", r.err);
    assert!(
        r.err.contains("models/bc/aliases/production.json"),
        "{}",
        r.err
    );
    let r = cli.run("mel", &["rollback", MODEL, "--env", "prod"]);
    assert_eq!(r.code, Some(6), "{}", r.err);
    assert_eq!(cli.champion(), 1, "the signed deployment did not move");

    // 6. `audit --verify` names the edited alias though no event was touched...
    let r = verify(&cli);
    assert_eq!(r.code, Some(5), "{}", r.err);
    let problems = r.out["problems"].to_string();
    assert!(
        problems.contains("models/bc/aliases/production.json"),
        "{}",
        r.out
    );
    std::fs::write(&alias, &original).unwrap();
    assert_eq!(verify(&cli).code, Some(0));
    // ...and events removed from the end of the chain.
    let events = cli.object("audit/bc");
    let mut seqs: Vec<PathBuf> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .is_ok()
        })
        .collect();
    seqs.sort();
    let last = seqs.pop().unwrap();
    std::fs::remove_file(&last).unwrap();
    let r = verify(&cli);
    assert_eq!(r.code, Some(5), "{}", r.err);
    assert!(
        r.out["problems"].to_string().contains("were removed"),
        "{}",
        r.out
    );
    assert!(Path::new(&alias).exists());
}
