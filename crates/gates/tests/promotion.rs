//! Promotion, approvals, roles and signed deployments on a `dir://` store: the happy path,
//! refusals (audited), a race for the production alias, canary/blue-green/rollback, and the
//! repair of a crash between the alias move and the manifest write.

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;

use falaj::deploy::{self, DeployKey};
use falaj::promotion::{self, Promotion, PromotionError};
use falaj::{Expect, RegistryError};
use falaj_core::deployment::{self as dep, Strategy};
use falaj_core::promotion::{Refusal, Stage};
use falaj_gates::{self as gates, Holdout, Validation};
use gates_fixtures::*;

const MODEL: &str = "bc";

fn key() -> DeployKey {
    DeployKey::from_seed([7; 32])
}

const POLICY: &str = "[metrics]\naccuracy = { min = 0.9 }\n";

async fn validated(e: &Env, f: &Fitted) -> u64 {
    attach_policy(&e.reg, MODEL, POLICY).await;
    let v = register(&e.reg, MODEL, f, "sam").await;
    let r = gate(e, v).await;
    assert!(r.passed, "{:?}", r.gates);
    v
}

/// The deployment of `env` as an edge node reads it: verified against the published key
/// from its raw bytes (returned too).
async fn as_the_edge_reads(e: &Env, env: &str) -> (dep::DeploymentManifest, bytes::Bytes) {
    let bytes = e
        .reg
        .store()
        .get(&deploy::deployment_key(env, MODEL))
        .await
        .unwrap()
        .unwrap()
        .bytes;
    let public = deploy::trusted_key(&e.reg).await.unwrap().unwrap();
    (dep::verify(&bytes, &public).unwrap(), bytes)
}

/// The gates on version `v` over the breast-cancer holdout, under the attached policy.
async fn gate(e: &Env, v: u64) -> falaj_core::policy::GateReport {
    gates::validate(
        &e.reg,
        Validation {
            model: MODEL.into(),
            version: v,
            holdout: Holdout::Path(dataset("breast_cancer.csv")),
            policy: None,
            actor: "sam".into(),
        },
    )
    .await
    .unwrap()
}

fn promo(v: u64, to: Stage, actor: &str) -> Promotion {
    Promotion {
        model: MODEL.into(),
        version: v,
        to,
        canary: None,
        blue_green: false,
        runtime: falaj_core::deployment::Runtime::Sandbox,
        expect: Expect::Any,
        actor: actor.into(),
    }
}

async fn approve_both(e: &Env, v: u64) {
    for who in ["ann", "bob"] {
        promotion::approve(&e.reg, MODEL, v, Stage::Production, "", who)
            .await
            .unwrap();
    }
}

async fn actions(e: &Env) -> Vec<(String, String)> {
    e.reg
        .audit_events(MODEL)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, _, ev)| (ev.actor, ev.action))
        .collect()
}

async fn setup() -> (Env, Fitted) {
    let e = env().await;
    create(&e.reg, MODEL).await;
    (e, breast_cancer())
}

#[tokio::test]
async fn staging_then_production_with_two_approvals_writes_a_signed_manifest() {
    let (e, f) = setup().await;
    let v = validated(&e, &f).await;
    let k = key();
    let s = promotion::promote(&e.reg, &k, promo(v, Stage::Staging, "mel"))
        .await
        .unwrap();
    assert_eq!(s.alias.version, Some(v));
    assert_eq!(
        promotion::version_state(&e.reg, MODEL, v)
            .await
            .unwrap()
            .to_string(),
        "staging"
    );

    // One approval is not enough (default 2).
    promotion::approve(&e.reg, MODEL, v, Stage::Production, "looks good", "ann")
        .await
        .unwrap();
    let err = promotion::promote(&e.reg, &k, promo(v, Stage::Production, "mel"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PromotionError::Refused(Refusal::NeedsApprovals {
                have: 1,
                need: 2,
                ..
            })
        ),
        "{err}"
    );
    promotion::approve(&e.reg, MODEL, v, Stage::Production, "", "bob")
        .await
        .unwrap();
    let p = promotion::promote(&e.reg, &k, promo(v, Stage::Production, "mel"))
        .await
        .unwrap();
    assert_eq!(p.deployment.champion.version, v);
    assert_eq!(
        promotion::version_state(&e.reg, MODEL, v)
            .await
            .unwrap()
            .to_string(),
        "production"
    );

    // The edge's view: raw bytes + the published key.
    let (m, bytes) = as_the_edge_reads(&e, "prod").await;
    assert_eq!(
        m.champion.digest,
        e.reg.version(MODEL, v).await.unwrap().digest
    );
    assert!(dep::verify(&bytes, &DeployKey::from_seed([8; 32]).public()).is_err());
    // A tampered manifest is refused on read.
    let mut env: dep::SignedDeployment = serde_json::from_slice(&bytes).unwrap();
    env.payload = env
        .payload
        .replace(&format!("\"version\":{v}"), "\"version\":99");
    e.reg
        .put_json(
            &deploy::deployment_key("prod", MODEL),
            &env,
            falaj::store::Precondition::None,
        )
        .await
        .unwrap();
    assert!(matches!(
        deploy::read(&e.reg, "prod", MODEL).await,
        Err(PromotionError::Verify { .. })
    ));

    let acts = actions(&e).await;
    for a in [
        "version.approved",
        "version.promoted",
        "deployment.written",
        "alias.moved",
    ] {
        assert!(
            acts.iter().any(|(_, x)| x == a),
            "{a} missing from {acts:?}"
        );
    }
    // A different local key is refused by a store that published another one.
    let err = promotion::promote(
        &e.reg,
        &DeployKey::from_seed([9; 32]),
        promo(v, Stage::Staging, "mel"),
    )
    .await;
    assert!(err.is_err());
}

#[tokio::test]
async fn refusals_are_refused_and_audited() {
    let (e, f) = setup().await;
    let v = validated(&e, &f).await;
    let k = key();
    // The author approving their own version (sam holds no approver role; give it one).
    promotion::grant(&e.reg, "root", "sam", falaj_core::promotion::Role::Approver)
        .await
        .unwrap();
    let err = promotion::approve(&e.reg, MODEL, v, Stage::Production, "", "sam")
        .await
        .unwrap_err();
    assert!(
        matches!(err, PromotionError::Refused(Refusal::SelfApproval { .. })),
        "{err}"
    );
    // A viewer promoting.
    let err = promotion::promote(&e.reg, &k, promo(v, Stage::Staging, "eve"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "forbidden", "{err}");
    // An approval for a rejected version.
    let bad = register(&e.reg, MODEL, &degraded(&f), "sam").await;
    let rep = gate(&e, bad).await;
    assert!(!rep.passed);
    let err = promotion::approve(&e.reg, MODEL, bad, Stage::Production, "", "ann")
        .await
        .unwrap_err();
    assert!(
        matches!(err, PromotionError::Refused(Refusal::State { .. })),
        "{err}"
    );
    let err = promotion::promote(&e.reg, &k, promo(bad, Stage::Staging, "mel"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
    // A version never validated.
    let raw = register(&e.reg, MODEL, &f, "sam").await;
    let err = promotion::promote(&e.reg, &k, promo(raw, Stage::Staging, "mel"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("validate it first"), "{err}");

    let refused: Vec<String> = actions(&e)
        .await
        .into_iter()
        .filter(|(_, a)| a == "refused")
        .map(|(w, _)| w)
        .collect();
    assert_eq!(refused, vec!["sam", "eve", "ann", "mel", "mel"]);
    // Nothing moved.
    assert!(e.reg.alias(MODEL, "staging").await.unwrap().is_none());
    // Only admins grant roles, once bootstrapped.
    assert!(
        promotion::grant(&e.reg, "mel", "mel", falaj_core::promotion::Role::Admin)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_promotions_racing_for_production_one_wins() {
    let (e, f) = setup().await;
    let v1 = validated(&e, &f).await;
    let v2 = validated(&e, &f).await;
    approve_both(&e, v1).await;
    approve_both(&e, v2).await;
    let e = std::sync::Arc::new(e);
    let k = key();
    // Both read "no production yet" and race to claim it.
    let race = |v: u64| {
        let (e, k) = (e.clone(), k.clone());
        tokio::spawn(async move {
            let mut p = promo(v, Stage::Production, "mel");
            p.expect = Expect::Absent;
            promotion::promote(&e.reg, &k, p).await
        })
    };
    let (a, b) = (race(v1), race(v2));
    let results = [a.await.unwrap(), b.await.unwrap()];
    let wins: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|p| p.deployment.champion.version)
        .collect();
    assert_eq!(wins.len(), 1, "exactly one wins: {results:?}");
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    match loser {
        PromotionError::Registry(RegistryError::AliasConflict { current, .. }) => {
            assert_eq!(*current, Some(wins[0]));
        }
        other => panic!("expected an alias conflict, got {other}"),
    }
    assert!(
        loser
            .to_string()
            .contains(&format!("now at version {}", wins[0])),
        "{loser}"
    );
    assert_eq!(loser.code(), "conflict");
    let st = deploy::status(&e.reg, MODEL, "prod").await.unwrap();
    assert_eq!(st.divergence, None);
    assert_eq!(st.manifest.unwrap().champion.version, wins[0]);
}

#[tokio::test]
async fn canary_blue_green_and_rollback() {
    let (e, f) = setup().await;
    let k = key();
    let v1 = validated(&e, &f).await;
    let v2 = validated(&e, &f).await;
    let v3 = validated(&e, &f).await;
    for v in [v1, v2, v3] {
        approve_both(&e, v).await;
    }
    promotion::promote(&e.reg, &k, promo(v1, Stage::Production, "mel"))
        .await
        .unwrap();
    // Canary v2 at 10%, stepped to 50, then 100.
    let mut p = promo(v2, Stage::Production, "mel");
    p.canary = Some(10);
    let c = promotion::promote(&e.reg, &k, p).await.unwrap();
    assert_eq!(
        (
            c.deployment.champion.version,
            c.deployment.challenger.as_ref().unwrap().version
        ),
        (v1, v2)
    );
    assert_eq!(c.deployment.challenger_weight, 10);
    let r = deploy::rollout(&e.reg, &k, MODEL, "prod", 50, "mel")
        .await
        .unwrap();
    assert_eq!(r.deployment.challenger_weight, 50);
    assert_eq!(
        e.reg
            .alias(MODEL, "production")
            .await
            .unwrap()
            .unwrap()
            .0
            .version,
        Some(v1)
    );
    let r = deploy::rollout(&e.reg, &k, MODEL, "prod", 100, "mel")
        .await
        .unwrap();
    assert_eq!(r.deployment.champion.version, v2);
    assert!(r.deployment.challenger.is_none());
    assert_eq!(
        e.reg
            .alias(MODEL, "production")
            .await
            .unwrap()
            .unwrap()
            .0
            .version,
        Some(v2)
    );
    assert_eq!(
        promotion::version_state(&e.reg, MODEL, v1)
            .await
            .unwrap()
            .to_string(),
        "archived"
    );
    // Blue-green to v3 keeps v2 as standby.
    let mut p = promo(v3, Stage::Production, "mel");
    p.blue_green = true;
    let bg = promotion::promote(&e.reg, &k, p).await.unwrap();
    assert_eq!(bg.deployment.strategy, Strategy::BlueGreen);
    assert_eq!(bg.deployment.standby.as_ref().unwrap().version, v2);
    // Rollback: back to v2 in one alias swap.
    let gen_before = bg.deployment.generation;
    let rb = deploy::rollback(&e.reg, &k, MODEL, "prod", "mel")
        .await
        .unwrap();
    assert_eq!(rb.deployment.champion.version, v2);
    assert_eq!(rb.deployment.generation, gen_before + 1);
    assert_eq!(
        e.reg
            .alias(MODEL, "production")
            .await
            .unwrap()
            .unwrap()
            .0
            .version,
        Some(v2)
    );
    assert_eq!(
        promotion::version_state(&e.reg, MODEL, v2)
            .await
            .unwrap()
            .to_string(),
        "production"
    );
    // A viewer may not roll back; a rollout without a canary is refused.
    assert_eq!(
        deploy::rollback(&e.reg, &k, MODEL, "prod", "eve")
            .await
            .unwrap_err()
            .code(),
        "forbidden"
    );
    assert!(
        deploy::rollout(&e.reg, &k, MODEL, "prod", 30, "mel")
            .await
            .is_err()
    );
    assert!(
        actions(&e)
            .await
            .iter()
            .any(|(_, a)| a == "deployment.rollback")
    );
}

#[tokio::test]
async fn a_crash_between_alias_and_manifest_is_detected_and_repaired() {
    let (e, f) = setup().await;
    let k = key();
    let v1 = validated(&e, &f).await;
    let v2 = validated(&e, &f).await;
    approve_both(&e, v1).await;
    approve_both(&e, v2).await;
    promotion::promote(&e.reg, &k, promo(v1, Stage::Production, "mel"))
        .await
        .unwrap();
    // The promotion of v2 "crashes" right after its alias move: the manifest still says v1.
    force_alias(&e.reg, MODEL, "production", v2).await;
    let st = deploy::status(&e.reg, MODEL, "prod").await.unwrap();
    let why = st.divergence.clone().expect("divergence detected");
    assert!(
        why.contains(&v2.to_string()) && why.contains(&v1.to_string()),
        "{why}"
    );
    let listed = deploy::list(&e.reg).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].divergence.is_some());
    // The next command repairs before acting, and says so.
    let rb = deploy::rollback(&e.reg, &k, MODEL, "prod", "mel")
        .await
        .unwrap();
    assert_eq!(rb.repaired.as_deref(), Some(why.as_str()));
    // The repaired manifest served v2 (history v1), so the rollback went back to v1.
    assert_eq!(rb.deployment.champion.version, v1);
    let st = deploy::status(&e.reg, MODEL, "prod").await.unwrap();
    assert_eq!(st.divergence, None);
    assert!(
        actions(&e)
            .await
            .iter()
            .any(|(_, a)| a == "deployment.repaired")
    );
    // repair() on a consistent deployment does nothing.
    assert_eq!(
        deploy::repair(&e.reg, &k, MODEL, "prod", "mel")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn signing_keys_are_created_once_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg/signing.key");
    let a = DeployKey::load_or_create(&path).unwrap();
    let b = DeployKey::load_or_create(&path).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A key file others can read is refused: whoever reads it can sign.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = DeployKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(&path, "not hex").unwrap();
    let err = DeployKey::load_or_create(&path).unwrap_err();
    assert!(err.to_string().contains("64 hex digits"), "{err}");
}

#[tokio::test]
async fn the_host_runtime_is_signed_only_where_the_version_policy_allows_it() {
    use falaj_core::deployment::Runtime;
    let (e, f) = setup().await;
    let v = validated(&e, &f).await;
    let k = key();
    let host = |to| Promotion {
        runtime: Runtime::Host,
        ..promo(v, to, "mel")
    };
    // The policy says nothing of the host: refused, audited, nothing signed.
    let err = promotion::promote(&e.reg, &k, host(Stage::Staging))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PromotionError::Refused(Refusal::HostRuntime { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("allow_host_runtime"), "{err}");
    assert_eq!(actions(&e).await.last().unwrap().1, "refused");
    assert!(e.reg.alias(MODEL, "staging").await.unwrap().is_none());

    // A policy that allows it, attached and gated again: the signed slot asks for the host.
    attach_policy(
        &e.reg,
        MODEL,
        "[metrics]\naccuracy = { min = 0.9 }\n[edge]\nallow_host_runtime = true\n",
    )
    .await;
    let r = gate(&e, v).await;
    assert!(r.passed);
    let p = promotion::promote(&e.reg, &k, host(Stage::Staging))
        .await
        .unwrap();
    assert_eq!(p.deployment.champion.runtime, Runtime::Host);
    let (signed, _) = as_the_edge_reads(&e, "staging").await;
    assert_eq!(
        signed.champion.runtime,
        Runtime::Host,
        "inside the signature"
    );

    // A sandbox promotion of the same version to production stays in the sandbox.
    approve_both(&e, v).await;
    let p = promotion::promote(&e.reg, &k, promo(v, Stage::Production, "mel"))
        .await
        .unwrap();
    assert_eq!(p.deployment.champion.runtime, Runtime::Sandbox);
}
