//! Gates on real datasets: models fitted on breast_cancer.csv and diabetes.csv, run in tract,
//! measured against policies from tests/fixtures/policies/.

#[path = "../../falaj/tests/gates_fixtures/mod.rs"]
mod gates_fixtures;

use falaj::promotion::{self, PromotionError};
use falaj_core::policy::GateReport;
use falaj_gates::{self as gates, GateError, Holdout, Validation};
use gates_fixtures::*;

fn policy(name: &str) -> Option<(String, String)> {
    let p = policy_fixture(name);
    Some((name.to_string(), std::fs::read_to_string(p).unwrap()))
}

fn req(model: &str, v: u64, data: &str, pol: &str, actor: &str) -> Validation {
    Validation {
        model: model.into(),
        version: v,
        holdout: Holdout::Path(dataset(data)),
        policy: policy(pol),
        actor: actor.into(),
    }
}

fn gate<'a>(r: &'a GateReport, name: &str) -> &'a falaj_core::policy::GateResult {
    r.gates
        .iter()
        .find(|g| g.gate == name)
        .unwrap_or_else(|| panic!("no gate {name} in {:?}", r.gates))
}

#[tokio::test]
async fn a_good_classifier_passes_every_gate_and_reports_are_immutable() {
    let e = env().await;
    create(&e.reg, "bc").await;
    attach_policy(&e.reg, "bc", &policy("breast_cancer.toml").unwrap().1).await;
    let v = register(&e.reg, "bc", &breast_cancer(), "sam").await;
    let r = gates::validate(
        &e.reg,
        req("bc", v, "breast_cancer.csv", "breast_cancer.toml", "sam"),
    )
    .await
    .unwrap();
    assert!(r.passed, "{:#?}", r.gates);
    assert_eq!(r.run, 1);
    assert!(r.error.is_none());
    let acc = gate(&r, "metrics.accuracy").measured.unwrap();
    assert!(acc > 0.9 && acc <= 1.0, "accuracy {acc}");
    assert!(gate(&r, "metrics.roc_auc").measured.unwrap() > 0.95);
    assert!(gate(&r, "edge.latency_p99_ms").measured.unwrap() > 0.0);
    assert_eq!(gate(&r, "edge.ops").measured, Some(0.0));
    assert_eq!(gate(&r, "residency").measured, Some(0.0));
    assert!(gate(&r, "no_regression").passed);
    assert_eq!(r.holdout.as_ref().unwrap().rows, 569);
    assert!(r.holdout.as_ref().unwrap().digest.starts_with("sha256:"));
    assert!(r.evaluator.starts_with("falaj-gates"));
    assert_eq!(
        promotion::version_state(&e.reg, "bc", v)
            .await
            .unwrap()
            .to_string(),
        "validated"
    );

    // A second run writes gates-2.json; gates.json is untouched.
    let first = e
        .reg
        .store()
        .get(&gates::report_key("bc", v, 1))
        .await
        .unwrap()
        .unwrap();
    let r2 = gates::validate(
        &e.reg,
        req("bc", v, "breast_cancer.csv", "breast_cancer.toml", "mel"),
    )
    .await
    .unwrap();
    assert_eq!(r2.run, 2);
    let again = e
        .reg
        .store()
        .get(&gates::report_key("bc", v, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.bytes, again.bytes);
    assert_eq!(gates::reports(&e.reg, "bc", v).await.unwrap().len(), 2);
    // The same holdout and seed measure the same quality.
    assert_eq!(
        gate(&r, "robustness.noise_drop").measured,
        gate(&r2, "robustness.noise_drop").measured
    );
    let events = e.reg.audit_events("bc").await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|(_, _, ev)| ev.action == "gates.passed")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_strict_threshold_rejects_the_version() {
    let e = env().await;
    create(&e.reg, "bc").await;
    let v = register(&e.reg, "bc", &breast_cancer(), "sam").await;
    let strict = "[metrics]\naccuracy = { min = 0.9999 }\n";
    attach_policy(&e.reg, "bc", strict).await;
    let mut r = req("bc", v, "breast_cancer.csv", "breast_cancer.toml", "sam");
    r.policy = None;
    let rep = gates::validate(&e.reg, r).await.unwrap();
    assert!(!rep.passed);
    assert!(!gate(&rep, "metrics.accuracy").passed);
    assert_eq!(
        promotion::version_state(&e.reg, "bc", v)
            .await
            .unwrap()
            .to_string(),
        "rejected"
    );
}

#[tokio::test]
async fn regression_with_fairness_on_sex() {
    let e = env().await;
    create(&e.reg, "diab").await;
    let v = register(&e.reg, "diab", &diabetes(), "sam").await;
    let rep = gates::validate(
        &e.reg,
        req("diab", v, "diabetes.csv", "diabetes.toml", "sam"),
    )
    .await
    .unwrap();
    let rmse = gate(&rep, "metrics.rmse").measured.unwrap();
    assert!(rmse > 40.0 && rmse < 70.0, "rmse {rmse}");
    let r2 = gate(&rep, "metrics.r2").measured.unwrap();
    assert!(r2 > 0.3 && r2 < 1.0, "r2 {r2}");
    let dp = gate(&rep, "fairness.demographic_parity");
    assert!(dp.detail.contains("2 groups"), "{}", dp.detail);
    assert!((0.0..=1.0).contains(&dp.measured.unwrap()));
    assert!(gate(&rep, "fairness.equal_opportunity").measured.is_some());
    assert_eq!(rep.passed, rep.gates.iter().all(|g| g.passed));
}

#[tokio::test]
async fn policy_errors_name_the_line() {
    let e = env().await;
    create(&e.reg, "bc").await;
    let v = register(&e.reg, "bc", &breast_cancer(), "sam").await;
    for (file, line, words) in [
        ("unknown_gate.toml", 3, "balanced_accuracy"),
        ("bad_threshold.toml", 6, "between 0 and 1"),
    ] {
        let err = gates::validate(&e.reg, req("bc", v, "breast_cancer.csv", file, "sam"))
            .await
            .unwrap_err();
        match &err {
            GateError::Policy(p) => assert_eq!(p.line, line, "{err}"),
            other => panic!("expected a policy error, got {other}"),
        }
        assert!(err.to_string().contains(words), "{err}");
        assert!(
            err.to_string().starts_with(&format!("{file}:{line}:")),
            "{err}"
        );
    }
    // The sensitive column is only known missing once the holdout is read.
    let err = gates::validate(
        &e.reg,
        req("bc", v, "breast_cancer.csv", "missing_column.toml", "sam"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, GateError::MissingSensitiveColumn { line: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ethnicity"), "{err}");
    // Attaching a bad policy is refused with its line too.
    let src = std::fs::read_to_string(policy_fixture("unknown_gate.toml")).unwrap();
    let err = promotion::set_policy(&e.reg, "bc", "unknown_gate.toml", &src, "mel")
        .await
        .unwrap_err();
    assert!(
        matches!(err, PromotionError::Policy(ref p) if p.line == 3),
        "{err}"
    );
    assert!(e.reg.model("bc").await.unwrap().gate_policy.is_none());
}

#[tokio::test]
async fn a_holdout_that_does_not_match_the_signature_is_a_clear_error() {
    let e = env().await;
    create(&e.reg, "bc").await;
    let v = register(&e.reg, "bc", &breast_cancer(), "sam").await;
    let err = gates::validate(
        &e.reg,
        req("bc", v, "wine.csv", "breast_cancer.toml", "sam"),
    )
    .await
    .unwrap_err();
    match &err {
        GateError::HoldoutMismatch { missing, .. } => {
            assert!(missing.contains(&"mean_radius".to_string()));
            assert!(missing.contains(&"diagnosis".to_string()));
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    assert!(err.to_string().contains("mean_radius"), "{err}");
    // Nothing was written.
    assert!(
        gates::latest_report(&e.reg, "bc", v)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_signature_that_disagrees_with_the_manifest_is_a_clear_error() {
    let e = env().await;
    create(&e.reg, "bc").await;
    let good = breast_cancer();
    // Valid ONNX taking 3 features, while the manifest lists 30.
    let broken = Fitted {
        onnx: export(3, 2, &[0.1; 6], &[0.0; 2], true),
        manifest: good.manifest.clone(),
    };
    let v = register(&e.reg, "bc", &broken, "sam").await;
    let err = gates::validate(
        &e.reg,
        req("bc", v, "breast_cancer.csv", "breast_cancer.toml", "sam"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, GateError::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("takes rows of [3]"), "{err}");
}

#[tokio::test]
async fn a_model_with_a_broken_graph_is_rejected_not_panicking() {
    let e = env().await;
    create(&e.reg, "bc").await;
    attach_policy(&e.reg, "bc", &policy("breast_cancer.toml").unwrap().1).await;
    let good = breast_cancer();
    let n = good.manifest.features.len();
    // The declared input fits, but the weights are 3 x 2: tract's shape inference fails.
    let mut m = <falaj_core::onnx::ModelProto as prost::Message>::decode(
        &export(3, 2, &[0.1; 6], &[0.0; 2], true)[..],
    )
    .unwrap();
    let g = m.graph.as_mut().unwrap();
    g.input = vec![falaj_core::onnx::value_info(
        "input",
        falaj_core::onnx::FLOAT,
        &[None, Some(n as i64)],
        "batch",
    )];
    let broken = Fitted {
        onnx: prost::Message::encode_to_vec(&m),
        manifest: good.manifest.clone(),
    };
    let v = register(&e.reg, "bc", &broken, "sam").await;
    let rep = gates::validate(
        &e.reg,
        req("bc", v, "breast_cancer.csv", "breast_cancer.toml", "sam"),
    )
    .await
    .unwrap();
    assert!(!rep.passed);
    let msg = rep.error.clone().unwrap();
    assert!(!msg.is_empty());
    assert_eq!(rep.gates[0].gate, "edge.load");
    assert_eq!(rep.gates[0].detail, msg);
    assert_eq!(
        promotion::version_state(&e.reg, "bc", v)
            .await
            .unwrap()
            .to_string(),
        "rejected"
    );
}

#[tokio::test]
async fn no_regression_and_residency_gates_fail_when_they_should() {
    let e = env().await;
    create(&e.reg, "bc").await;
    let good = breast_cancer();
    let v1 = register(&e.reg, "bc", &good, "sam").await;
    assert!(
        gates::validate(
            &e.reg,
            req("bc", v1, "breast_cancer.csv", "breast_cancer.toml", "sam")
        )
        .await
        .unwrap()
        .passed
    );
    force_alias(&e.reg, "bc", "production", v1).await;
    let mut worse = degraded(&good);
    worse
        .manifest
        .lineage
        .datasets
        .push(falaj_core::DatasetRef {
            uri: "s3://somewhere/else.csv".into(),
            digest: "sha256:11".into(),
            region: Some("eu-west-1".into()),
        });
    let v2 = register(&e.reg, "bc", &worse, "sam").await;
    let rep = gates::validate(
        &e.reg,
        req("bc", v2, "breast_cancer.csv", "breast_cancer.toml", "sam"),
    )
    .await
    .unwrap();
    assert!(!rep.passed);
    let nr = gate(&rep, "no_regression");
    assert!(!nr.passed, "{nr:?}");
    assert!(nr.measured.unwrap() > 0.01);
    assert!(nr.detail.contains(&format!("bc@{v1}")), "{}", nr.detail);
    let res = gate(&rep, "residency");
    assert!(!res.passed);
    assert!(res.detail.contains("eu-west-1"), "{}", res.detail);
}

#[tokio::test]
async fn a_viewer_cannot_validate_and_the_refusal_is_audited() {
    let e = env().await;
    create(&e.reg, "bc").await;
    let v = register(&e.reg, "bc", &breast_cancer(), "sam").await;
    let err = gates::validate(
        &e.reg,
        req("bc", v, "breast_cancer.csv", "breast_cancer.toml", "eve"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "forbidden", "{err}");
    let events = e.reg.audit_events("bc").await.unwrap();
    assert!(
        events
            .iter()
            .any(|(_, _, ev)| ev.action == "refused" && ev.actor == "eve")
    );
}

#[tokio::test]
async fn a_model_without_a_policy_is_refused_no_policy() {
    let e = env().await;
    create(&e.reg, "bc").await;
    let v = register(&e.reg, "bc", &breast_cancer(), "sam").await;
    let mut r = req("bc", v, "breast_cancer.csv", "breast_cancer.toml", "sam");
    r.policy = None;
    let err = gates::validate(&e.reg, r).await.unwrap_err();
    assert_eq!(err.code(), "no_policy", "{err}");
    assert!(err.to_string().contains("has no gate policy"), "{err}");
}

/// A model whose manifest leaves standardisation to whoever runs it (`folded_into_graph:
/// false`, the graph takes standardised rows) is scored on standardised rows, exactly as the
/// edge component serves it: it scores as the same fit with standardisation in its graph.
#[tokio::test]
async fn unfolded_standardisation_is_applied_as_the_edge_applies_it() {
    use falaj_core::manifest::Task;
    let e = env().await;
    create(&e.reg, "bc").await;
    attach_policy(&e.reg, "bc", &policy("breast_cancer.toml").unwrap().1).await;
    let fitted = |fold| {
        fit_with(
            "breast_cancer.csv",
            "diagnosis",
            Task::Classification,
            150,
            fold,
        )
    };
    let folded = register(&e.reg, "bc", &fitted(true), "sam").await;
    let unfolded_fit = fitted(false);
    assert!(
        !unfolded_fit
            .manifest
            .standardization
            .as_ref()
            .unwrap()
            .folded_into_graph
    );
    let unfolded = register(&e.reg, "bc", &unfolded_fit, "sam").await;
    let run = |v| {
        gates::validate(
            &e.reg,
            req("bc", v, "breast_cancer.csv", "breast_cancer.toml", "sam"),
        )
    };
    let (rf, ru) = (run(folded).await.unwrap(), run(unfolded).await.unwrap());
    assert!(ru.passed, "{:#?}", ru.gates);
    for g in [
        "metrics.accuracy",
        "metrics.roc_auc",
        "robustness.noise_drop",
    ] {
        let (a, b) = (
            gate(&rf, g).measured.unwrap(),
            gate(&ru, g).measured.unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "{g}: folded {a}, unfolded {b}");
    }
}
