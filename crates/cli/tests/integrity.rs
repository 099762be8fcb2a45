//! The integrity issue's attacks on a `dir://` store, each refused: production and the signed
//! deployment stay where they were. (The webhook replay attack runs against the real
//! `falaj serve` in `serve.rs`; the edge's pinned key against the real `falaj-edge`.)

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;

use falaj::Expect;
use falaj::deploy::{self, DeployKey};
use falaj::promotion::{self, Promotion, PromotionError};
use falaj_core::promotion::{Refusal, Stage};
use falaj_gates::{self as gates, Holdout, Validation};
use gates_fixtures::*;

const MODEL: &str = "bc";
const POLICY: &str = "[metrics]\naccuracy = { min = 0.9 }\n";

fn key() -> DeployKey {
    DeployKey::from_seed([5; 32])
}

fn promo(v: u64, to: Stage) -> Promotion {
    Promotion {
        model: MODEL.into(),
        version: v,
        to,
        canary: None,
        blue_green: false,
        runtime: falaj_core::deployment::Runtime::Sandbox,
        expect: Expect::Any,
        actor: "mel".into(),
    }
}

async fn validate(
    e: &Env,
    v: u64,
    holdout: Holdout,
    policy: Option<&str>,
) -> falaj_core::policy::GateReport {
    gates::validate(
        &e.reg,
        Validation {
            model: MODEL.into(),
            version: v,
            holdout,
            policy: policy.map(|p| ("lax.toml".to_string(), p.to_string())),
            actor: "sam".into(),
        },
    )
    .await
    .unwrap()
}

/// v1 in production (validated, approved by ann and bob) and v2 registered only.
async fn production_v1(e: &Env) -> (u64, u64) {
    attach_policy(&e.reg, MODEL, POLICY).await;
    let f = breast_cancer();
    let v1 = register(&e.reg, MODEL, &f, "sam").await;
    let r = validate(e, v1, Holdout::Path(dataset("breast_cancer.csv")), None).await;
    assert!(r.passed && !r.advisory, "{r:?}");
    for who in ["ann", "bob"] {
        promotion::approve(&e.reg, MODEL, v1, Stage::Production, "", who)
            .await
            .unwrap();
    }
    promotion::promote(&e.reg, &key(), promo(v1, Stage::Production))
        .await
        .unwrap();
    let v2 = register(&e.reg, MODEL, &degraded(&f), "sam").await;
    (v1, v2)
}

async fn champion(e: &Env) -> u64 {
    deploy::read(&e.reg, "prod", MODEL)
        .await
        .unwrap()
        .unwrap()
        .0
        .champion
        .version
}

#[tokio::test]
async fn a_hand_edited_alias_is_not_signed_by_repair() {
    let e = env().await;
    let (v1, v2) = production_v1(&e).await;
    // A store writer points production at the never-validated v2.
    let k = falaj_core::layout::alias(MODEL, "production");
    let (mut rec, _) = e
        .reg
        .get_json::<falaj_core::AliasRecord>(&k)
        .await
        .unwrap()
        .unwrap();
    rec.version = Some(v2);
    rec.generation += 1;
    put_object(&e.reg, k.as_str(), serde_json::to_vec(&rec).unwrap()).await;

    // `deployments --repair` needs admin; the admin's repair refuses the unexplained alias.
    let err = deploy::repair_as_admin(&e.reg, &key(), MODEL, "prod", "mel")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forbidden", "{err}");
    let err = deploy::repair_as_admin(&e.reg, &key(), MODEL, "prod", "root")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PromotionError::Refused(Refusal::Unexplained { key, .. }) if key.ends_with("aliases/production.json")),
        "{err}"
    );
    // So does the repair before a rollback.
    let err = deploy::rollback(&e.reg, &key(), MODEL, "prod", "mel")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "refused", "{err}");
    assert_eq!(champion(&e).await, v1, "the signed deployment did not move");
    // `audit --verify` names the edited alias, though no event was touched.
    let problems = e.reg.verify_audit(MODEL).await.unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().starts_with(k.as_str())),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_callers_own_policy_is_advisory_and_never_promotes() {
    let e = env().await;
    let (v1, v2) = production_v1(&e).await;
    // v2 fails the attached policy...
    let r = validate(&e, v2, Holdout::Path(dataset("breast_cancer.csv")), None).await;
    assert!(!r.passed);
    // ...so its author brings a lax one.
    let lax = "[metrics]\naccuracy = { min = 0.0 }\n";
    let r = validate(
        &e,
        v2,
        Holdout::Path(dataset("breast_cancer.csv")),
        Some(lax),
    )
    .await;
    assert!(r.passed && r.advisory, "{r:?}");
    assert_eq!(
        promotion::version_state(&e.reg, MODEL, v2)
            .await
            .unwrap()
            .to_string(),
        "rejected"
    );
    for who in ["ann", "bob"] {
        let err = promotion::approve(&e.reg, MODEL, v2, Stage::Production, "", who)
            .await
            .unwrap_err();
        assert!(
            matches!(err, PromotionError::Refused(Refusal::State { .. })),
            "{err}"
        );
    }
    let err = promotion::promote(&e.reg, &key(), promo(v2, Stage::Staging))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
    assert_eq!(champion(&e).await, v1);
}

#[tokio::test]
async fn nan_and_constant_holdouts_are_refused_and_write_nothing() {
    let e = env().await;
    let (_, v2) = production_v1(&e).await;
    let (header, rows) = read_csv(&dataset("breast_cancer.csv"));
    let dir = tempfile::tempdir().unwrap();
    let nan = dir.path().join("nan.csv");
    let mut text = header.join(",") + "\n";
    for r in rows.iter().take(20) {
        text += &r.iter().map(|_| "NaN").collect::<Vec<_>>().join(",");
        text += "\n";
    }
    std::fs::write(&nan, &text).unwrap();
    let constant = dir.path().join("constant.csv");
    let target = header.iter().position(|h| h == "diagnosis").unwrap();
    let mut text = header.join(",") + "\n";
    let one_class = rows[0][target].clone();
    for r in rows.iter().filter(|r| r[target] == one_class).take(20) {
        text += &r.join(",");
        text += "\n";
    }
    std::fs::write(&constant, &text).unwrap();
    for (path, says) in [(&nan, "not a finite number"), (&constant, "same target")] {
        let before = gates::reports(&e.reg, MODEL, v2).await.unwrap().len();
        let err = gates::validate(
            &e.reg,
            Validation {
                model: MODEL.into(),
                version: v2,
                holdout: Holdout::Path(path.clone()),
                policy: None,
                actor: "sam".into(),
            },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(says) && err.contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(
            gates::reports(&e.reg, MODEL, v2).await.unwrap().len(),
            before
        );
    }
}

#[tokio::test]
async fn a_hand_written_report_and_approval_count_for_nothing() {
    let e = env().await;
    let (v1, v2) = production_v1(&e).await;
    // A copy of v1's passing report, re-addressed to v2, and two approvals, all without events.
    let mut rep = gates::latest_report(&e.reg, MODEL, v1)
        .await
        .unwrap()
        .unwrap();
    let v2rec = e.reg.version(MODEL, v2).await.unwrap();
    rep.version = v2;
    rep.digest = v2rec.digest.clone();
    put_object(
        &e.reg,
        gates::report_key(MODEL, v2, 1).as_str(),
        serde_json::to_vec(&rep).unwrap(),
    )
    .await;
    for who in ["ann", "bob"] {
        let a = falaj_core::promotion::Approval {
            model: MODEL.into(),
            version: v2,
            stage: Stage::Production,
            by: who.into(),
            principal: None,
            at: falaj::registry::now(),
            comment: String::new(),
            event_seq: None,
        };
        put_object(
            &e.reg,
            promotion::approval_key(MODEL, v2, who).as_str(),
            serde_json::to_vec(&a).unwrap(),
        )
        .await;
    }
    let err = promotion::promote(&e.reg, &key(), promo(v2, Stage::Production))
        .await
        .unwrap_err();
    assert!(matches!(err, PromotionError::Refused(_)), "{err}");
    assert_eq!(champion(&e).await, v1);
    // Nothing of v2 reached an alias.
    let prod = e.reg.alias(MODEL, "production").await.unwrap().unwrap().0;
    assert_eq!(prod.version, Some(v1));
    // And the verifier names both hand-written approvals.
    let problems: Vec<String> = e
        .reg
        .verify_audit(MODEL)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    for who in ["ann", "bob"] {
        let key = promotion::approval_key(MODEL, v2, who).to_string();
        assert!(
            problems.iter().any(|p| p.starts_with(&key)),
            "{key} not named in {problems:?}"
        );
    }
}

#[tokio::test]
async fn a_policy_swapped_into_model_json_by_hand_counts_for_nothing() {
    let e = env().await;
    let (v1, v2) = production_v1(&e).await;
    // v2 (degraded) fails the attached policy; a store writer swaps in a lax one, no event.
    let k = falaj_core::layout::model(MODEL);
    let (mut rec, _) = e
        .reg
        .get_json::<falaj_core::ModelRecord>(&k)
        .await
        .unwrap()
        .unwrap();
    rec.gate_policy = Some("[metrics]\naccuracy = { min = 0.0 }\n".into());
    put_object(&e.reg, k.as_str(), serde_json::to_vec(&rec).unwrap()).await;
    // A validation now runs with the swapped policy and passes...
    let r = validate(&e, v2, Holdout::Path(dataset("breast_cancer.csv")), None).await;
    assert!(r.passed && !r.advisory, "{r:?}");
    // ...but the gatekeeper stages and signs nothing on it.
    let err = promotion::promote(&e.reg, &key(), promo(v2, Stage::Staging))
        .await
        .unwrap_err();
    assert!(matches!(err, PromotionError::Refused(_)), "{err}");
    assert!(err.to_string().contains("model.json"), "{err}");
    assert!(e.reg.alias(MODEL, "staging").await.unwrap().is_none());
    assert_eq!(champion(&e).await, v1);
}

/// `f`'s model with a `ConstantOfShape` of `n x n` floats folded into its output: a few
/// hundred bytes that cost `4 n²` bytes and seconds of tract's time to load.
fn bomb(f: &Fitted, n: i64) -> Vec<u8> {
    use falaj_core::onnx::{ModelProto, NodeProto, TensorProto};
    use prost::Message;
    let mut m = ModelProto::decode(&f.onnx[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    let out = g.output[0].name.clone();
    for node in &mut g.node {
        for o in &mut node.output {
            if *o == out {
                *o = "pre_bomb".into();
            }
        }
    }
    g.initializer.push(TensorProto {
        name: "bomb_shape".into(),
        dims: vec![2],
        data_type: 7, // INT64
        int64_data: vec![n, n],
        ..Default::default()
    });
    let node = |op: &str, inputs: &[&str], output: &str| NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        ..Default::default()
    };
    g.node
        .push(node("ConstantOfShape", &["bomb_shape"], "bomb"));
    g.node.push(node("ReduceMean", &["bomb"], "bomb_mean"));
    g.node.push(node("Add", &["pre_bomb", "bomb_mean"], &out));
    m.encode_to_vec()
}

/// A model that asks for gigabytes, and one that takes too long, each validated by the real
/// `falaj validate`: the gates measure in a child process under a memory cap and a deadline,
/// and each ends in a failed report naming the limit.
#[test]
fn a_model_bomb_is_stopped_by_the_memory_cap_and_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("dir://{}", dir.path().join("store").display());
    let falaj = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_falaj"))
            .args(["--store", &store, "--json", "--as", "root"])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let f = breast_cancer();
    let mut manifest = f.manifest.clone();
    manifest.model = MODEL.into();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        path("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(path("policy.toml"), POLICY).unwrap();
    std::fs::write(path("big.onnx"), bomb(&f, 20_000)).unwrap(); // 1.6 GB of floats
    std::fs::write(path("slow.onnx"), bomb(&f, 12_000)).unwrap(); // 0.6 GB, seconds to fold
    assert!(std::fs::metadata(path("big.onnx")).unwrap().len() < 20_000);
    for args in [
        vec!["roles", "grant", "root", "admin"],
        vec!["model", "create", MODEL, "--owner", "ml"],
        vec!["policy", "set", MODEL, &path("policy.toml")],
    ] {
        let (code, _, err) = falaj(&args, &[]);
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    for file in ["big.onnx", "slow.onnx"] {
        let (code, _, err) = falaj(
            &[
                "push",
                MODEL,
                &path(file),
                "--manifest",
                &path("manifest.json"),
            ],
            &[],
        );
        assert_eq!(code, Some(0), "push {file}: {err}");
    }
    let holdout = dataset("breast_cancer.csv").display().to_string();
    let validate = |v: &str, env: &[(&str, &str)]| {
        let t = std::time::Instant::now();
        let (_, out, err) = falaj(
            &["validate", &format!("{MODEL}@{v}"), "--data", &holdout],
            env,
        );
        let report: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("validate {v}: {e}: {out} {err}"));
        (report, t.elapsed())
    };
    let (r, _) = validate("1", &[("FALAJ_GATES_MAX_MEMORY_BYTES", "1073741824")]);
    assert_eq!(r["passed"], false, "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("FALAJ_GATES_MAX_MEMORY_BYTES"), "{r}");
    let (r, took) = validate("2", &[("FALAJ_GATES_DEADLINE_SECS", "1")]);
    assert_eq!(r["passed"], false, "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("FALAJ_GATES_DEADLINE_SECS"), "{r}");
    assert!(
        took.as_secs() < 30,
        "the deadline did not stop it: {took:?}"
    );
    // Both reports are written and audited: nothing about the bombs can be promoted.
    let (code, _, err) = falaj(&["audit", MODEL, "--verify"], &[]);
    assert_eq!(code, Some(0), "{err}");
}

const CANARY_POLICY: &str = "[metrics]\naccuracy = { min = 0.9 }\n[canary]\nsteps = [10, 50, 100]\nmin_samples = 50\n[canary.tolerate]\nerrors = 1.5\n";

/// v1 in production and v2 a 10% canary, both validated and approved, under CANARY_POLICY.
async fn canary_running(e: &Env) -> Vec<u64> {
    attach_policy(&e.reg, MODEL, CANARY_POLICY).await;
    let mut versions = Vec::new();
    for (f, canary) in [
        (breast_cancer(), None),
        (
            fit(
                "breast_cancer.csv",
                "diagnosis",
                falaj_core::manifest::Task::Classification,
                120,
            ),
            Some(10),
        ),
    ] {
        let v = register(&e.reg, MODEL, &f, "sam").await;
        let r = validate(e, v, Holdout::Path(dataset("breast_cancer.csv")), None).await;
        assert!(r.passed, "{r:?}");
        for who in ["ann", "bob"] {
            promotion::approve(&e.reg, MODEL, v, Stage::Production, "", who)
                .await
                .unwrap();
        }
        let p = Promotion {
            canary,
            ..promo(v, Stage::Production)
        };
        promotion::promote(&e.reg, &key(), p).await.unwrap();
        versions.push(v);
    }
    versions
}

/// A live window of node n1 in prod: `n` answered requests (ids `<prefix><slot>-<i>`), each
/// predicting "benign" in 1 ms.
fn benign_window(
    (model, version, slot, generation): (&str, u64, &str, u64),
    n: usize,
    prefix: &str,
) -> falaj_core::live::VariantWindow {
    use falaj_core::live::{Logged, VariantWindow};
    let mut w = VariantWindow::new(("prod", "n1", model), version, slot, generation, "t");
    for i in 0..n {
        let entry = Logged {
            id: format!("{prefix}{slot}-{i}"),
            ms: 1.0,
            status: 200,
            pred: vec!["benign".into()],
        };
        w.add(entry, |_| 0);
    }
    w
}

/// Windows that do not match the running deployment, written by someone who can write the
/// store: another version in the challenger's slot, an older generation, another model in
/// the body. The controller leaves every one out, so nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_live_windows_that_do_not_match_the_deployment_move_nothing() {
    use falaj_core::live::window_key;
    let e = env().await;
    let versions = canary_running(&e).await;
    let (m, _) = deploy::read(&e.reg, "prod", MODEL).await.unwrap().unwrap();
    let forged = |version: u64, slot: &str, generation: u64, model: &str| {
        benign_window((model, version, slot, generation), 600, "f-")
    };
    let champion = forged(versions[0], "champion", m.generation, MODEL);
    for (w, filed_as) in [
        // The champion's version claiming the challenger's slot.
        (forged(versions[0], "challenger", m.generation, MODEL), None),
        // The challenger's traffic of an older generation (another weight).
        (
            forged(versions[1], "challenger", m.generation - 1, MODEL),
            None,
        ),
        // Another model's window filed under this model's generation.
        (
            forged(versions[1], "challenger", m.generation, "other"),
            Some(MODEL),
        ),
    ] {
        let mut key = window_key(&w, "20261204T000000Z");
        if let Some(model) = filed_as {
            key = key.replace("/other/", &format!("/{model}/"));
        }
        put_object(&e.reg, &key, serde_json::to_vec(&w).unwrap()).await;
    }
    put_object(
        &e.reg,
        &window_key(&champion, "20261204T000000Z"),
        serde_json::to_vec(&champion).unwrap(),
    )
    .await;
    let look = falaj::canary::look(&e.reg, &key(), MODEL, "prod", "mel")
        .await
        .unwrap();
    assert_eq!(look.action, falaj::canary::Action::Hold, "{look:?}");
    assert!(look.reason.contains("no traffic"), "{}", look.reason);
    assert_eq!(look.windows, 1, "only the champion's real window counts");
    assert_eq!(
        deploy::read(&e.reg, "prod", MODEL)
            .await
            .unwrap()
            .unwrap()
            .0
            .generation,
        m.generation
    );
}

/// `falaj rollout --auto` as a person runs it: it holds without traffic, steps the canary on
/// evidence (JSON for scripts), signs as the caller with the judge's evidence in the audit
/// event, and stops when the attached policy is not the audited one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_auto_holds_without_traffic_steps_on_evidence_and_refuses_a_hand_edited_policy() {
    let e = env().await;
    let policy = CANARY_POLICY;
    let versions = canary_running(&e).await;
    let key_file = e.dir.path().join("signing.key");
    std::fs::write(&key_file, "05".repeat(32)).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let store = format!("dir://{}", e.dir.path().join("store").display());
    let falaj = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_falaj"))
            .args(["--store", &store, "--json", "--as", "mel"])
            .args(args)
            .env("FALAJ_SIGNING_KEY", &key_file)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            serde_json::from_slice(&out.stderr).unwrap_or(serde_json::Value::Null)
        });
        (
            out.status.code(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, look, err) = falaj(&["rollout", MODEL, "--auto"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(look["action"], "hold", "{look}");
    assert!(
        look["reason"].as_str().unwrap().contains("no traffic"),
        "{look}"
    );

    // The node's windows of this generation: the challenger served 60 requests cleanly.
    let (m, _) = deploy::read(&e.reg, "prod", MODEL).await.unwrap().unwrap();
    for (slot, version, n) in [
        ("champion", versions[0], 540),
        ("challenger", versions[1], 60),
    ] {
        let w = benign_window((MODEL, version, slot, m.generation), n, "");
        let k = falaj_core::live::window_key(&w, "20261204T000000Z");
        put_object(&e.reg, &k, serde_json::to_vec(&w).unwrap()).await;
    }
    let (code, look, err) = falaj(&["rollout", MODEL, "--auto"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (look["action"].as_str(), look["weight"][1].as_u64()),
        (Some("promote-step"), Some(50)),
        "{look}"
    );
    assert_eq!(look["deployment"]["updated_by"], "mel");
    let ev = e
        .reg
        .audit_events(MODEL)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, ev)| ev)
        .rfind(|ev| ev.action == "deployment.rollout")
        .unwrap();
    assert_eq!(
        ev.details["judge"]["tallies"]["challenger"]["requests"], 60,
        "{:?}",
        ev.details
    );
    assert_eq!(ev.details["judged_generation"], m.generation);

    // --weight and --auto together is a usage error.
    let (code, _, _) = falaj(&["rollout", MODEL, "--auto", "--weight", "100"]);
    assert_eq!(code, Some(2));

    // A laxer policy written into model.json by hand: the controller will not judge by it.
    let key_mj = falaj_core::layout::model(MODEL);
    let (mut rec, _) = e
        .reg
        .get_json::<serde_json::Value>(&key_mj)
        .await
        .unwrap()
        .unwrap();
    rec["gate_policy"] =
        serde_json::Value::String(policy.replace("min_samples = 50", "min_samples = 1"));
    put_object(&e.reg, key_mj.as_str(), serde_json::to_vec(&rec).unwrap()).await;
    let before = deploy::read(&e.reg, "prod", MODEL)
        .await
        .unwrap()
        .unwrap()
        .0
        .generation;
    let (code, body, err) = falaj(&["rollout", MODEL, "--auto"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("falaj policy set"), "{body} {err}");
    assert_eq!(
        deploy::read(&e.reg, "prod", MODEL)
            .await
            .unwrap()
            .unwrap()
            .0
            .generation,
        before
    );
}
