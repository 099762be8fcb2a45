//! `validate`: the request checked, the policy, holdout, model and baseline read, the gates
//! measured in the worker process under its limits, the report written and audited.

use falaj::RegistryError;
use falaj::registry::{Registry, now};
use falaj::store::Precondition;
use falaj_core::policy::{GatePolicy, GateReport, GateResult, HoldoutRef, policy_digest};
use falaj_core::promotion::Action;
use sha2::{Digest, Sha256};

use crate::holdout::*;
use crate::sandbox;
use falaj::reports::{GateError, Validation, artifact_of, manifest_of, report_key, reports};

/// Name and version of this evaluator, recorded in every report.
pub const EVALUATOR: &str = concat!(
    "falaj-gates ",
    env!("CARGO_PKG_VERSION"),
    " (tract-onnx 0.23)"
);

async fn write_report(reg: &Registry, mut report: GateReport) -> Result<GateReport, RegistryError> {
    let existing = reports(reg, &report.model, report.version).await?;
    let mut run = existing.last().map_or(1, |r| r.run + 1);
    for _ in 0..1000 {
        report.run = run;
        let key = report_key(&report.model, report.version, run);
        match reg.put_json(&key, &report, Precondition::IfAbsent).await {
            Ok(_) => return Ok(report),
            Err(RegistryError::Store(e)) if e.is_conflict() => run += 1,
            Err(e) => return Err(e),
        }
    }
    Err(RegistryError::Contention {
        what: format!("a gate report of {}@{}", report.model, report.version),
        attempts: 1000,
    })
}

/// Validates `model@version`: checks the actor's role, reads the policy, holdout, model and
/// the production baseline, measures every gate, writes the report and audits it.
///
/// Returns the report; `report.passed` is false when the version is rejected (including a
/// model tract cannot load, whose message is in `report.error`).
pub async fn validate(reg: &Registry, req: Validation) -> Result<GateReport, GateError> {
    let subject = format!("{}@{}", req.model, req.version);
    falaj::access::authorize(reg, &req.model, &req.actor, Action::Validate, &subject).await?;
    let model_rec = reg.model(&req.model).await?;
    let version = reg.version(&req.model, req.version).await?;
    let (policy_name, policy_src) = match req.policy.clone() {
        Some(p) => p,
        None => (
            format!("{}/gate_policy", req.model),
            model_rec
                .gate_policy
                .clone()
                .ok_or_else(|| GateError::NoPolicy {
                    model: req.model.clone(),
                })?,
        ),
    };
    let policy = GatePolicy::parse(&policy_src, &policy_name)?;
    // A policy of the caller's own is advisory: its report is kept, never counted.
    let attached_digest = model_rec.gate_policy.as_deref().map(policy_digest);
    let advisory = attached_digest.as_deref() != Some(policy_digest(&policy_src).as_str());
    let manifest = manifest_of(reg, &version).await?;
    if let Some(t) = policy.task()
        && t != manifest.task
    {
        return Err(GateError::Incompatible {
            model: req.model.clone(),
            version: req.version,
            reason: format!(
                "the policy's metrics are for {t:?} but the model was trained for {:?}",
                manifest.task
            ),
        });
    }
    let source_name = req.holdout.name();
    let csv_bytes = req.holdout.read(reg).await?;
    let holdout_digest = format!("sha256:{}", hex::encode(Sha256::digest(&csv_bytes)));
    let sensitive = policy.fairness.as_ref().map(|f| f.sensitive_column.clone());
    let data = {
        let (m, s) = (manifest.clone(), sensitive.clone());
        let b = csv_bytes.clone();
        tokio::task::spawn_blocking(move || parse_holdout(&b, &m, s.as_deref()))
            .await
            .map_err(|e| GateError::Holdout {
                source_name: source_name.clone(),
                reason: e.to_string(),
            })?
    };
    let data = data.map_err(|e| match e {
        HoldoutParseError::Missing(missing) => GateError::HoldoutMismatch {
            source_name: source_name.clone(),
            missing,
            features: manifest.features.clone(),
            target: manifest.target.clone(),
        },
        HoldoutParseError::NoSensitive(columns) => {
            let f = policy
                .fairness
                .as_ref()
                .expect("only asked with a fairness gate");
            GateError::MissingSensitiveColumn {
                policy: policy_name.clone(),
                line: f.sensitive_line,
                column: f.sensitive_column.clone(),
                source_name: source_name.clone(),
                columns,
            }
        }
        other => GateError::Holdout {
            source_name: source_name.clone(),
            reason: other.to_string(),
        },
    })?;
    // The input's fixed dimensions after the batch must be the holdout's rows: `[features]`
    // for a table, `[C, H, W]` for images.
    if let Some(input) = version.signature.inputs.first() {
        let declared = &input.shape[1.min(input.shape.len())..];
        let fits = declared.len() == data.item_shape.len()
            && declared
                .iter()
                .zip(&data.item_shape)
                .all(|(d, n)| d.parse::<usize>().map_or(true, |d| d == *n));
        if !fits {
            return Err(GateError::Incompatible {
                model: req.model.clone(),
                version: req.version,
                reason: format!(
                    "the ONNX input {:?} takes rows of [{}] but the holdout gives rows of {:?} (a table's features as the manifest lists them, or an .npz's items)",
                    input.name,
                    declared.join(", "),
                    data.item_shape
                ),
            });
        }
    }
    let max_artifact = limit("FALAJ_MAX_ARTIFACT_BYTES", MAX_ARTIFACT_BYTES);
    if version.size > max_artifact {
        return Err(GateError::Incompatible {
            model: req.model.clone(),
            version: req.version,
            reason: format!(
                "the artifact is {} bytes; the gates load at most {max_artifact} (FALAJ_MAX_ARTIFACT_BYTES)",
                version.size
            ),
        });
    }
    let onnx = artifact_of(reg, &version).await?;
    let baseline = match &policy.no_regression {
        None => None,
        Some(_) => match reg.alias(&req.model, "production").await? {
            Some((a, _)) if a.version.is_some_and(|p| p != req.version) => {
                let pv = reg
                    .version(&req.model, a.version.unwrap_or_default())
                    .await?;
                let pm = manifest_of(reg, &pv).await?;
                Some((pv.version, artifact_of(reg, &pv).await?, pm))
            }
            _ => None,
        },
    };
    let limits = sandbox::Limits::from_env().map_err(|e| GateError::Incompatible {
        model: req.model.clone(),
        version: req.version,
        reason: e.to_string(),
    })?;
    let rows = data.rows;
    let measured = sandbox::measure_within(
        sandbox::Measurement {
            version: version.clone(),
            manifest: manifest.clone(),
            policy: (policy_name.clone(), policy_src.clone()),
            holdout: (csv_bytes.clone(), sensitive.clone()),
            data,
            onnx: onnx.clone(),
            baseline,
        },
        &limits,
    )
    .await
    .map(|g| (g, rows));
    let (gates, error, rows) = match measured {
        Ok((g, rows)) => (g, None, rows as u64),
        Err(e) => (
            vec![GateResult {
                gate: "edge.load".into(),
                measured: None,
                bound: None,
                passed: false,
                detail: e.message.clone(),
                groups: Vec::new(),
            }],
            Some(e.message),
            0,
        ),
    };
    let report = GateReport {
        model: req.model.clone(),
        version: req.version,
        digest: version.digest.clone(),
        run: 0,
        policy_digest: policy_digest(&policy_src),
        holdout: Some(HoldoutRef {
            uri: source_name,
            digest: holdout_digest,
            rows,
        }),
        evaluator: EVALUATOR.into(),
        evaluated_at: now(),
        evaluated_by: req.actor.clone(),
        passed: GateReport::decide(&error, &gates),
        error,
        gates,
        advisory,
    };
    let report = write_report(reg, report).await?;
    reg.append_audit(
        &req.model,
        &req.actor,
        match (report.advisory, report.passed) {
            (true, _) => "gates.advisory",
            (false, true) => "gates.passed",
            (false, false) => "gates.failed",
        },
        &subject,
        serde_json::json!({
            "run": report.run,
            "failed": report.failures().iter().map(|g| g.gate.clone()).collect::<Vec<_>>(),
            "error": report.error,
            "holdout": report.holdout.as_ref().map(|h| h.digest.clone()),
            "policy": report.policy_digest,
            "passed": report.passed,
        }),
    )
    .await?;
    Ok(report)
}
