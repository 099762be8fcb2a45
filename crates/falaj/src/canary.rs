//! The canary controller: one look at a running challenger, and the step it asks for.
//!
//! It keeps no state of its own: everything is read from the store on each run (the signed
//! deployment, the model's audited `[canary]` policy, the edge nodes' live windows of the
//! current generation, the labels under `datasets/<model>/feedback/`), so a cron job, CI, the
//! `falaj-fn-rollout` schedule or a person may run it as often as they like, and a restarted
//! node or controller resumes where the store says the rollout is. The judge
//! (`falaj_core::canary`) stays valid however often it looks.
//!
//! A step up or a rollback goes through [`crate::deploy::rollout_judged`] and
//! [`crate::deploy::rollback_judged`], the same calls, role checks and signing as a person's
//! `falaj rollout` / `falaj rollback`, with the judge's evidence in the audit event; it is
//! refused if the deployment moved on while it was judged.

use std::collections::BTreeMap;

use falaj_core::canary::{Arm, Judgement, MetricCounts, MetricRule, Verdict, judge};
use falaj_core::deployment::{ChallengerMode, DeploymentManifest};
use falaj_core::layout;
use falaj_core::live::{self, Grading, Label, Tally, VariantWindow};
use serde::Serialize;

use crate::access::PromotionError;
use crate::deploy::{DeployKey, Judged};
use crate::error::RegistryError;
use crate::registry::Registry;
use crate::store::list_all;

type Result<T, E = PromotionError> = std::result::Result<T, E>;

/// What the controller did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// No challenger runs: nothing to judge.
    Idle,
    /// Not enough evidence yet: nothing changed.
    Hold,
    /// The challenger's weight went up a step (or a shadow test became a canary).
    PromoteStep,
    /// The challenger reached 100%: it is the champion.
    Completed,
    /// The challenger was taken out: worse than tolerated, or not shown safe in time.
    Rollback,
}

/// One look, its evidence and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct Look {
    /// Model.
    pub model: String,
    /// Environment.
    pub env: String,
    /// What was done.
    pub action: Action,
    /// Why, in a sentence.
    pub reason: String,
    /// Generation judged.
    pub generation: u64,
    /// `canary` or `shadow`.
    pub mode: ChallengerMode,
    /// Challenger weight before and after.
    pub weight: (u8, u8),
    /// Champion and challenger versions judged.
    pub versions: (u64, Option<u64>),
    /// Seconds since the step began.
    pub elapsed_secs: u64,
    /// Per slot: requests, errors, slow requests, labelled and wrong predictions.
    pub tallies: BTreeMap<String, Tally>,
    /// Shadow only: the share of rows where the shadow agreed with the champion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// The judge's evidence, per metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
    /// Live windows read.
    pub windows: usize,
    /// Labels read.
    pub labels: usize,
    /// Feedback files that could not be read, with why (they are left out, not fatal).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// The deployment written, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentManifest>,
}

/// The live windows of `model` for deployment generation `generation` in `env`, of the
/// versions that generation routes to.
pub async fn windows(
    reg: &Registry,
    env: &str,
    m: &DeploymentManifest,
) -> Result<Vec<VariantWindow>> {
    let keys = list_all(reg.store().as_ref(), &layout::telemetry_prefix(env))
        .await
        .map_err(RegistryError::from)?;
    let challenger = m.challenger.as_ref().map(|c| c.version);
    let mut out = Vec::new();
    for k in keys {
        if live::window_generation(&k, &m.model) != Some(m.generation) {
            continue;
        }
        let key = falaj_core::StoreKey::new(k.clone()).map_err(RegistryError::from)?;
        let Some((w, _)) = reg.get_json::<VariantWindow>(&key).await? else {
            continue;
        };
        let expected = match w.slot.as_str() {
            "champion" => Some(m.champion.version),
            "challenger" | "shadow" => challenger,
            _ => None,
        };
        if w.model == m.model && w.generation == m.generation && Some(w.version) == expected {
            out.push(w);
        } else {
            tracing::warn!(
                key = k,
                "a live window does not match the deployment it is filed under; left out"
            );
        }
    }
    Ok(out)
}

/// Every label under `datasets/<model>/feedback/`, and the files that could not be read.
pub async fn feedback(reg: &Registry, model: &str) -> Result<(Vec<Label>, Vec<String>)> {
    let prefix = format!("{}feedback/", layout::datasets_prefix(model));
    let keys = list_all(reg.store().as_ref(), &prefix)
        .await
        .map_err(RegistryError::from)?;
    let (mut labels, mut skipped) = (Vec::new(), Vec::new());
    for k in keys.into_iter().filter(|k| k.ends_with(".csv")) {
        let key = falaj_core::StoreKey::new(k.clone()).map_err(RegistryError::from)?;
        let Some(obj) = reg.store().get(&key).await.map_err(RegistryError::from)? else {
            continue;
        };
        match std::str::from_utf8(&obj.bytes)
            .map_err(|_| format!("{k} is not UTF-8 text"))
            .and_then(|t| live::parse_feedback(t, &k))
        {
            Ok(mut l) => labels.append(&mut l),
            Err(e) => skipped.push(e),
        }
    }
    Ok((labels, skipped))
}

/// The judge's counts per policy metric, champion against `other` (`challenger` or `shadow`).
fn counts(
    tallies: &BTreeMap<String, Tally>,
    other: &str,
    rules: &[(String, MetricRule)],
) -> Vec<MetricCounts> {
    let t = |slot: &str| tallies.get(slot).copied().unwrap_or_default();
    let (b, c) = (t("champion"), t(other));
    rules
        .iter()
        .map(|(name, _)| {
            let arm = |x: Tally| match name.as_str() {
                "wrong_predictions" => Arm {
                    n: x.labelled,
                    bad: x.wrong,
                },
                "slow_requests" => Arm {
                    n: x.logged,
                    bad: x.slow,
                },
                _ => Arm {
                    n: x.requests,
                    bad: x.errors,
                },
            };
            MetricCounts {
                metric: name.clone(),
                champion: arm(b),
                challenger: arm(c),
            }
        })
        .collect()
}

/// Looks at the running challenger of `model` in `env` once, and promotes it a step, rolls
/// it back, or holds, as `actor` (who needs the rollout and rollback roles).
pub async fn look(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    actor: &str,
) -> Result<Look> {
    let Some((m, _)) = crate::deploy::read(reg, env, model).await? else {
        return Err(falaj_core::deployment::DeployError::NothingDeployed {
            model: model.into(),
            env: env.into(),
        }
        .into());
    };
    let mut look = Look {
        model: model.into(),
        env: env.into(),
        action: Action::Idle,
        reason: String::new(),
        generation: m.generation,
        mode: m.challenger_mode,
        weight: (m.challenger_weight, m.challenger_weight),
        versions: (m.champion.version, m.challenger.as_ref().map(|c| c.version)),
        elapsed_secs: crate::claim::age(&m.updated_at).map_or(0, |a| a.as_secs()),
        tallies: BTreeMap::new(),
        agreement: None,
        judgement: None,
        windows: 0,
        labels: 0,
        skipped: Vec::new(),
        deployment: None,
    };
    if m.challenger.is_none() {
        look.reason = format!(
            "{model} in {env} runs no challenger (champion v{}): nothing to judge",
            m.champion.version
        );
        return Ok(look);
    }
    let policy = crate::gatekeeper::canary_policy(reg, model).await?;
    let shadowing = m.challenger_mode == ChallengerMode::Shadow;
    if !shadowing && m.challenger_weight == 0 {
        look.action = Action::Hold;
        look.reason = "the challenger is paused at weight 0: raise it with `falaj rollout` (or put it in shadow mode) before it can be judged".into();
        return Ok(look);
    }
    let ws = windows(reg, env, &m).await?;
    let (labels, skipped) = feedback(reg, model).await?;
    let grading = Grading {
        slow_ms: policy.slow_request_ms,
        max_abs_error: policy.max_abs_error,
    };
    let tallies = live::tally(&ws, &labels, &grading);
    let other = if shadowing { "shadow" } else { "challenger" };
    // In shadow mode both sides see every request: the share of bad events is judged as if
    // each had half the traffic.
    let weight = if shadowing {
        0.5
    } else {
        f64::from(m.challenger_weight) / 100.0
    };
    let counts = counts(&tallies, other, &policy.metrics);
    let rules: Vec<MetricRule> = policy.metrics.iter().map(|(_, r)| *r).collect();
    let j = judge(
        &policy.step_rule(),
        weight,
        &counts,
        &rules,
        look.elapsed_secs,
    );
    look.agreement = tallies
        .get("shadow")
        .filter(|t| t.compared > 0)
        .map(|t| t.agreed as f64 / t.compared as f64);
    look.windows = ws.len();
    look.labels = labels.len();
    look.skipped = skipped;
    look.tallies = tallies;
    look.reason = j.reason.clone();
    let judged = Judged {
        generation: m.generation,
        evidence: serde_json::json!({
            "verdict": j.verdict,
            "reason": j.reason,
            "mode": m.challenger_mode,
            "weight": m.challenger_weight,
            "elapsed_secs": look.elapsed_secs,
            "metrics": j.metrics,
            "tallies": look.tallies,
            "agreement": look.agreement,
            "windows": look.windows,
            "labels": look.labels,
        }),
    };
    match j.verdict {
        Verdict::Hold => look.action = Action::Hold,
        Verdict::PromoteStep => {
            let current = if shadowing { 0 } else { m.challenger_weight };
            let next = policy.next_weight(current).unwrap_or(100);
            let c = crate::deploy::rollout_judged(
                reg,
                key,
                model,
                env,
                next.into(),
                actor,
                Some(&judged),
            )
            .await?;
            look.action = if next == 100 {
                Action::Completed
            } else {
                Action::PromoteStep
            };
            look.weight.1 = next;
            look.deployment = Some(c.deployment);
        }
        Verdict::Rollback | Verdict::Inconclusive => {
            let c =
                crate::deploy::rollback_judged(reg, key, model, env, actor, Some(&judged)).await?;
            if j.verdict == Verdict::Inconclusive {
                look.reason = format!(
                    "{}: not shown safe within the step's time limit, so it is rolled back",
                    j.reason
                );
            }
            look.action = Action::Rollback;
            look.weight.1 = 0;
            look.deployment = Some(c.deployment);
        }
    }
    look.judgement = Some(j);
    Ok(look)
}

/// The identity the scheduled controller signs its steps as (grant it `ml-engineer`).
pub const ROLLOUT_ACTOR: &str = "falaj-rollout";

/// The scheduled function's job: for every deployment in the event's environments
/// (`{"envs": ["prod"]}`, default prod; an EventBridge scheduled event works as is) that runs
/// a challenger, asks `promoter` (the promote function, the only holder of the signing key)
/// for one look as [`ROLLOUT_ACTOR`]. A failure on one model is reported with it and does
/// not stop the others.
pub async fn schedule(
    reg: &Registry,
    promoter: &dyn crate::calls::Promoter,
    event: &serde_json::Value,
) -> Result<serde_json::Value> {
    let envs: Vec<String> = match event.get("envs").and_then(|e| e.as_array()) {
        Some(a) => a
            .iter()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect(),
        None => vec!["prod".into()],
    };
    let mut looks = Vec::new();
    for st in crate::deploy::list(reg).await? {
        let runs_challenger = st.manifest.as_ref().is_some_and(|m| m.challenger.is_some());
        if !envs.contains(&st.env) || !runs_challenger {
            continue;
        }
        let req = crate::calls::PromoteRequest::CanaryLook {
            model: st.model.clone(),
            env: st.env.clone(),
            actor: ROLLOUT_ACTOR.into(),
        };
        let answer = match promoter.apply(req).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(
                    model = st.model,
                    env = st.env,
                    code = e.code,
                    error = e.message,
                    "canary look failed"
                );
                serde_json::json!({"model": st.model, "env": st.env, "error": e})
            }
        };
        looks.push(answer);
    }
    Ok(serde_json::json!({ "looks": looks }))
}

/// Most labels one feedback call may carry.
pub const MAX_FEEDBACK_LABELS: usize = 100_000;

/// Records labels that arrived later as a new feedback file
/// (`datasets/<model>/feedback/<stamp>-<digest>.csv`, create-only), as `actor`, who needs the
/// rollout role (labels move a rollout); audited as `feedback.recorded`. Returns its key.
pub async fn record_feedback(
    reg: &Registry,
    model: &str,
    labels: &[Label],
    actor: &str,
) -> Result<String> {
    use falaj_core::promotion::Action;
    crate::access::authorize(reg, model, actor, Action::Rollout, model).await?;
    reg.model(model).await?;
    let bad = |reason: String| PromotionError::BadFeedback {
        model: model.into(),
        reason,
    };
    if labels.is_empty() || labels.len() > MAX_FEEDBACK_LABELS {
        return Err(bad(format!(
            "feedback carries 1 to {MAX_FEEDBACK_LABELS} labels, got {}",
            labels.len()
        )));
    }
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 256
            && !s.chars().any(|c| c == ',' || c == '"' || c.is_control())
    };
    let mut csv = String::from("request_id,row,label\n");
    for (i, l) in labels.iter().enumerate() {
        if !plain(&l.request_id) || !plain(&l.label) {
            return Err(bad(format!(
                "label {i}: request_id and label must be 1-256 characters without commas, quotes or control characters"
            )));
        }
        csv += &format!("{},{},{}\n", l.request_id, l.row, l.label);
    }
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(csv.as_bytes()));
    let stamp: String = crate::registry::now()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let key = format!(
        "{}feedback/{stamp}-{}.csv",
        layout::datasets_prefix(model),
        &digest[..16]
    );
    let store_key = falaj_core::StoreKey::new(key.clone()).map_err(RegistryError::from)?;
    reg.store()
        .put(
            &store_key,
            bytes::Bytes::from(csv),
            crate::store::Precondition::IfAbsent,
        )
        .await
        .map_err(RegistryError::from)?;
    reg.append_audit(
        model,
        actor,
        "feedback.recorded",
        model,
        serde_json::json!({"key": key, "labels": labels.len()}),
    )
    .await?;
    Ok(key)
}
