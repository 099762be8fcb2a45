//! The gatekeeper: the one function that decides whether a version may be signed into a
//! deployment slot.
//!
//! A version is admitted to `stage` when
//! - the actor holds the role for the action (`roles.json`),
//! - its gate evidence counts: the reports made on its artifact with the model's *attached*
//!   policy (by digest), on the holdout that policy names (by digest, unchanged since), all
//!   passed, and each has its audit event (a report written into the store by hand counts
//!   for nothing),
//! - for production, the approvals the policy requires exist from approvers other than the
//!   author, each with its audit event,
//! - the state machine allows the move.
//!
//! [`admit`] is called by promotion; [`admit_slot`] by every other signer (repair, which
//! re-derives a manifest from the aliases, and so the repair that runs before rollout,
//! rollback and promote). Nothing else in falaj signs a deployment. Every refusal is audited.

use std::collections::HashSet;

use falaj_core::deployment::DeploymentManifest;
use falaj_core::policy::{Evidence, GatePolicy, judge_reports, policy_digest};
use falaj_core::promotion::{
    Action, Refusal, RoleBindings, Stage, VALIDATOR, VersionFacts, VersionState, check_promotion,
    state_of, valid_approvals,
};
use falaj_core::{ModelVersion, StoreKey, audit::AuditEvent};
use sha2::{Digest, Sha256};

use crate::access::{PromotionError, approvals, archived_key, authorize, refuse, roles};
use crate::error::RegistryError;
use crate::registry::Registry;

type Result<T, E = PromotionError> = std::result::Result<T, E>;

/// The attached policy of a model: its parsed form and digest.
#[derive(Debug, Clone)]
pub struct AttachedPolicy {
    /// Parsed.
    pub policy: GatePolicy,
    /// `sha256:<hex>` of its source.
    pub digest: String,
}

/// The model's attached policy, if any; an attached policy that no longer parses is an error
/// (never a silent fallback to defaults).
pub async fn attached_policy(reg: &Registry, model: &str) -> Result<Option<AttachedPolicy>> {
    let rec = reg.model(model).await?;
    match rec.gate_policy {
        None => Ok(None),
        Some(src) => Ok(Some(AttachedPolicy {
            policy: GatePolicy::parse(&src, &format!("{model}/gate_policy"))?,
            digest: policy_digest(&src),
        })),
    }
}

/// The `[canary]` section of the model's attached policy, only if that policy is the one the
/// last audited `falaj policy set` attached (a hand-edited model.json counts for nothing).
pub async fn canary_policy(
    reg: &Registry,
    model: &str,
) -> Result<falaj_core::policy::CanaryPolicy> {
    let fail = |reason: String| PromotionError::CanaryPolicy {
        model: model.into(),
        reason,
    };
    let policy = attached_policy(reg, model).await?;
    let audited = audited(model, &reg.audit_events(model).await?);
    if let Some(why) = unaudited_policy(model, policy.as_ref(), &audited) {
        return Err(fail(why));
    }
    let Some(p) = policy else {
        return Err(fail("no gate policy is attached; attach one with a [canary] section (`falaj policy set MODEL gates.toml`, docs/gates.md)".into()));
    };
    p.policy.canary.ok_or_else(|| {
        fail("the gate policy has no [canary] section, so there is nothing to judge a canary by; add one (docs/gates.md) and `falaj policy set` it".into())
    })
}

/// What the audit chain vouches for: reports `(version, run)` and approvals
/// `(version, approver)` that have their event.
#[derive(Debug, Default)]
struct Audited {
    reports: HashSet<(u64, u32)>,
    approvals: HashSet<(u64, String)>,
    /// Rejections, read from the chain itself: removing one means removing its event, which
    /// `audit --verify` names.
    rejections: Vec<Rejection>,
    /// Digest of the policy the last `policy.set` event attached.
    policy: Option<String>,
}

/// An approver's rejection of a version for a stage, as the audit chain records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// Version.
    pub version: u64,
    /// Stage (`staging`, `production`).
    pub stage: String,
    /// The approver.
    pub by: String,
    /// Their reason.
    pub comment: String,
    /// When (RFC 3339).
    pub at: String,
}

fn rejection(version: u64, e: &AuditEvent) -> Rejection {
    let field = |k: &str| {
        e.details
            .get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Rejection {
        version,
        stage: field("stage"),
        by: e.actor.clone(),
        comment: field("comment"),
        at: e.at.clone(),
    }
}

/// Every rejection of `model`'s versions in `events` (its audit chain), oldest first: what the
/// gatekeeper refuses by, and what the console shows.
pub fn rejections(model: &str, events: &[(String, u64, AuditEvent)]) -> Vec<Rejection> {
    audited(model, events).rejections
}

fn subject_version(model: &str, subject: &str) -> Option<u64> {
    subject.strip_prefix(model)?.strip_prefix('@')?.parse().ok()
}

fn audited(model: &str, events: &[(String, u64, AuditEvent)]) -> Audited {
    let mut out = Audited::default();
    for (_, _, e) in events {
        if e.action == "policy.set" && e.subject == model {
            out.policy = e
                .details
                .get("digest")
                .and_then(|d| d.as_str())
                .map(String::from);
        }
        let Some(v) = subject_version(model, &e.subject) else {
            continue;
        };
        match e.action.as_str() {
            "gates.passed" | "gates.failed" => {
                if let Some(run) = e.details.get("run").and_then(|r| r.as_u64()) {
                    out.reports.insert((v, run as u32));
                }
            }
            "version.approved" => {
                out.approvals.insert((v, e.actor.clone()));
            }
            "version.rejected" => out.rejections.push(rejection(v, e)),
            _ => {}
        }
    }
    out
}

/// The version's gate evidence judged against the attached policy (reports only; no audit
/// or holdout check: for showing a state, not for signing).
pub async fn evidence(reg: &Registry, v: &ModelVersion) -> Result<Evidence> {
    let policy = attached_policy(reg, &v.model).await?;
    let reports = crate::reports::reports(reg, &v.model, v.version).await?;
    Ok(judge_reports(
        &reports,
        &v.digest,
        policy.as_ref().map(|p| p.digest.as_str()),
        policy
            .as_ref()
            .and_then(|p| p.policy.holdout_key.as_deref()),
    ))
}

/// Why the attached policy may not be relied on, if it may not: it must be the one the last
/// audited `policy.set` attached, so a model.json edited by hand (a laxer policy) counts for
/// nothing.
fn unaudited_policy(
    model: &str,
    policy: Option<&AttachedPolicy>,
    audited: &Audited,
) -> Option<String> {
    let attached = policy.map(|p| p.digest.as_str());
    (attached != audited.policy.as_deref()).then(|| {
        format!(
            "the gate policy in models/{model}/model.json ({}) is not the one the last audited `falaj policy set` attached ({}): it was changed without an event; set it again with `falaj policy set`",
            attached.unwrap_or("none"),
            audited.policy.as_deref().unwrap_or("none"),
        )
    })
}

/// The evidence a signer may rely on: audited reports only, and the named holdout unchanged
/// since the report scored it.
async fn signing_evidence(
    reg: &Registry,
    v: &ModelVersion,
    policy: Option<&AttachedPolicy>,
    audited: &Audited,
) -> Result<Evidence> {
    if let Some(reason) = unaudited_policy(&v.model, policy, audited) {
        return Ok(Evidence::Stale { reason });
    }
    let reports: Vec<_> = crate::reports::reports(reg, &v.model, v.version)
        .await?
        .into_iter()
        .filter(|r| audited.reports.contains(&(r.version, r.run)))
        .collect();
    let holdout_key = policy.and_then(|p| p.policy.holdout_key.as_deref());
    let ev = judge_reports(
        &reports,
        &v.digest,
        policy.map(|p| p.digest.as_str()),
        holdout_key,
    );
    if let (Evidence::Passed(r), Some(k)) = (&ev, holdout_key) {
        let key = StoreKey::new(k).map_err(RegistryError::from)?;
        let now = match reg.store().get(&key).await.map_err(RegistryError::from)? {
            Some(o) => format!("sha256:{}", hex::encode(Sha256::digest(&o.bytes))),
            None => "absent".into(),
        };
        let then = r.holdout.as_ref().map_or("", |h| h.digest.as_str());
        if now != then {
            return Ok(Evidence::Stale {
                reason: format!(
                    "the holdout store:{k} changed since run {} scored it ({then} → {now}); validate it again",
                    r.run
                ),
            });
        }
    }
    Ok(ev)
}

/// A version admitted to a stage.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Its state before the move.
    pub state: VersionState,
    /// Valid, audited approvals counted (production only).
    pub approvals: u32,
    /// Approvals the policy requires.
    pub needed: u32,
    /// The report run that admitted it.
    pub report_run: u32,
}

/// The first audited rejection of `version` for `stage`, as the refusal it causes.
fn rejected(audited: &Audited, subject: &str, version: u64, stage: Stage) -> Option<Refusal> {
    audited
        .rejections
        .iter()
        .find(|r| r.version == version && r.stage == stage.alias())
        .map(|r| Refusal::Rejected {
            subject: subject.into(),
            to: stage.to_string(),
            by: r.by.clone(),
            comment: if r.comment.is_empty() {
                "no reason given".into()
            } else {
                r.comment.clone()
            },
        })
}

async fn counted_approvals(
    reg: &Registry,
    v: &ModelVersion,
    stage: Stage,
    bindings: &RoleBindings,
    audited: &Audited,
) -> Result<u32> {
    let list: Vec<_> = approvals(reg, &v.model, v.version)
        .await?
        .into_iter()
        .filter(|a| {
            a.model == v.model
                && a.version == v.version
                && audited.approvals.contains(&(v.version, a.by.clone()))
        })
        .collect();
    Ok(valid_approvals(
        &list,
        bindings,
        (&v.author, v.author_principal.as_deref()),
        stage,
    ))
}

/// Decides whether `actor` may move `model@version` to `to` by `action`, auditing a refusal.
pub async fn admit(
    reg: &Registry,
    model: &str,
    version: u64,
    to: Stage,
    actor: &str,
    runtime: falaj_core::deployment::Runtime,
) -> Result<Admission> {
    let subject = format!("{model}@{version}");
    let action = match to {
        Stage::Staging => Action::PromoteStaging,
        Stage::Production => Action::PromoteProduction,
    };
    authorize(reg, model, actor, action, &subject).await?;
    let policy = attached_policy(reg, model).await?;
    if actor == VALIDATOR {
        let auto = policy.as_ref().is_some_and(|p| p.policy.auto_staging);
        if !auto || to != Stage::Staging {
            let why = Refusal::NoAutoStaging {
                model: model.into(),
            };
            return Err(refuse(reg, model, actor, action, &subject, why).await);
        }
    }
    let v = reg.version(model, version).await?;
    let audited = audited(model, &reg.audit_events(model).await?);
    let ev = signing_evidence(reg, &v, policy.as_ref(), &audited).await?;
    if let Evidence::Stale { reason } = &ev {
        let why = Refusal::Evidence {
            subject: subject.clone(),
            to: to.to_string(),
            reason: reason.clone(),
        };
        return Err(refuse(reg, model, actor, action, &subject, why).await);
    }
    if let Some(why) = rejected(&audited, &subject, version, to) {
        return Err(refuse(reg, model, actor, action, &subject, why).await);
    }
    // The host runtime only where the policy the evidence was gated under allows it (a
    // hand-edited policy has another digest, and its evidence is stale above).
    if runtime == falaj_core::deployment::Runtime::Host
        && !policy
            .as_ref()
            .is_some_and(|p| p.policy.edge.allow_host_runtime)
    {
        let why = Refusal::HostRuntime {
            subject: subject.clone(),
        };
        return Err(refuse(reg, model, actor, action, &subject, why).await);
    }
    let state = state_with(reg, &v, ev.passed()).await?;
    let bindings = roles(reg).await?;
    let needed = policy
        .as_ref()
        .map_or(falaj_core::policy::DEFAULT_APPROVALS, |p| {
            p.policy.approvals
        });
    let have = match to {
        Stage::Production => counted_approvals(reg, &v, to, &bindings, &audited).await?,
        Stage::Staging => 0,
    };
    if let Err(r) = check_promotion(&subject, state, to, have, needed, &v.author) {
        return Err(refuse(reg, model, actor, action, &subject, r).await);
    }
    Ok(Admission {
        state,
        approvals: have,
        needed,
        report_run: match &ev {
            Evidence::Passed(r) => r.run,
            _ => 0,
        },
    })
}

/// A version's state from its gate outcome and the aliases and archive marker in the store.
pub(crate) async fn state_with(
    reg: &Registry,
    v: &ModelVersion,
    gates_passed: Option<bool>,
) -> Result<VersionState> {
    let at =
        |a: Option<(falaj_core::AliasRecord, _)>| a.and_then(|(r, _)| r.version) == Some(v.version);
    Ok(state_of(VersionFacts {
        gates_passed,
        at_staging: at(reg.alias(&v.model, "staging").await?),
        at_production: at(reg.alias(&v.model, "production").await?),
        was_replaced: reg
            .store()
            .get(&archived_key(&v.model, v.version))
            .await
            .map_err(RegistryError::from)?
            .is_some(),
    }))
}

/// Decides whether a signer that re-derives a manifest from the aliases (repair) may put
/// `version` into a slot of `stage`: a version the verified manifest already serves or served
/// was admitted when it was signed; any other needs audited, passing evidence with the
/// attached policy and, for production, the required audited approvals.
pub async fn admit_slot(
    reg: &Registry,
    events: &[(String, u64, AuditEvent)],
    model: &str,
    version: u64,
    stage: Stage,
    manifest: Option<&DeploymentManifest>,
    actor: &str,
) -> Result<()> {
    if let Some(m) = manifest {
        let signed_before = m.champion.version == version
            || m.challenger.as_ref().is_some_and(|c| c.version == version)
            || m.history.iter().any(|s| s.version == version);
        if signed_before {
            return Ok(());
        }
    }
    let subject = format!("{model}@{version}");
    let action = Action::Repair;
    let policy = attached_policy(reg, model).await?;
    let v = reg.version(model, version).await?;
    let audited = audited(model, events);
    let ev = signing_evidence(reg, &v, policy.as_ref(), &audited).await?;
    let refusal = |reason: String| Refusal::Evidence {
        subject: subject.clone(),
        to: stage.to_string(),
        reason,
    };
    let why = match &ev {
        Evidence::Passed(_) => None,
        Evidence::Stale { reason } => Some(refusal(reason.clone())),
        Evidence::None => Some(refusal(
            "no audited gate report made with the attached policy passed for it".into(),
        )),
        Evidence::Failed(r) => Some(refusal(format!("its gates failed (run {})", r.run))),
    };
    if let Some(why) = why.or_else(|| rejected(&audited, &subject, version, stage)) {
        return Err(refuse(reg, model, actor, action, &subject, why).await);
    }
    if stage == Stage::Production {
        let bindings = roles(reg).await?;
        let needed = policy
            .as_ref()
            .map_or(falaj_core::policy::DEFAULT_APPROVALS, |p| {
                p.policy.approvals
            });
        let have = counted_approvals(reg, &v, stage, &bindings, &audited).await?;
        if have < needed {
            let why = Refusal::NeedsApprovals {
                subject: subject.clone(),
                have,
                need: needed,
                author: v.author.clone(),
            };
            return Err(refuse(reg, model, actor, action, &subject, why).await);
        }
    }
    Ok(())
}

/// Checks that `model@alias` holds exactly what an audited move wrote: the alias names its
/// event (`event_seq`) and that event's intent wrote this key with this content. A hand
/// edit, or an alias written without its event, is refused with the key named.
pub async fn check_alias_explained(
    reg: &Registry,
    events: &[(String, u64, AuditEvent)],
    model: &str,
    alias: &str,
    actor: &str,
) -> Result<()> {
    let key = falaj_core::layout::alias(model, alias);
    let Some(obj) = reg.store().get(&key).await.map_err(RegistryError::from)? else {
        // Nothing there: nothing to sign from it.
        return Ok(());
    };
    let value = serde_json::from_slice::<serde_json::Value>(&obj.bytes).map_err(|e| {
        RegistryError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        }
    })?;
    let problems = falaj_core::audit::verify_states(events, &[(key.to_string(), Some(value))]);
    let Some(problem) = problems.first() else {
        return Ok(());
    };
    let subject = format!("{model}@{alias}");
    let why = Refusal::Unexplained {
        model: model.into(),
        key: key.to_string(),
        reason: problem.to_string(),
    };
    Err(refuse(reg, model, actor, Action::Repair, &subject, why).await)
}
