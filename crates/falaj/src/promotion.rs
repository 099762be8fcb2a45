//! Roles, gate policies, approvals and promotions over a [`Registry`]: the side effects of
//! the pure rules in `falaj_core::promotion`.
//!
//! Every write checks the actor's roles (`roles.json` at the store root) and is audited; a
//! refused request is audited too, as a `refused` event naming the action and the reason.
//!
//! Bootstrap: while `roles.json` does not exist, the first `falaj roles grant` creates it and
//! makes its caller admin. From then on only admins grant roles.

use falaj_core::deployment::DeployError;
use falaj_core::layout;
use falaj_core::policy::GatePolicy;
use falaj_core::promotion::{
    Action, Actor, Approval, Refusal, Role, RoleBindings, Stage, VersionState,
    authorize as check_roles, check_approval, validate_identity,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::access::refuse;
pub use crate::access::{
    PromotionError, ROLES_AUDIT, approval_key, approvals, archived_key, authorize, mark_archived,
    roles, roles_key,
};
use crate::deploy::{self, DeployKey};
use crate::error::RegistryError;
use crate::registry::{Expect, Registry, now};
use crate::store::Precondition;

type Result<T, E = PromotionError> = std::result::Result<T, E>;

/// Grants `role` to `who`. Bootstrap: if no `roles.json` exists, it is created with the
/// caller as admin.
pub async fn grant(
    reg: &Registry,
    actor: impl Into<Actor>,
    who: &str,
    role: Role,
) -> Result<RoleBindings> {
    validate_identity(who)?;
    change_roles(
        reg,
        &actor.into(),
        who,
        "role.granted",
        json!({"role": role.name()}),
        |b| b.grant(who, role),
    )
    .await
}

/// Maps a verified principal (an AWS ARN) to the identity it acts as; admins only. On an
/// `s3://` store that is how a person gets an identity: their ARN, mapped here.
pub async fn map_principal(
    reg: &Registry,
    actor: impl Into<Actor>,
    principal: &str,
    identity: &str,
) -> Result<RoleBindings> {
    validate_identity(identity)?;
    if principal.is_empty() || principal.len() > 2048 || principal.chars().any(char::is_control) {
        return Err(Refusal::BadIdentity {
            who: principal.into(),
        }
        .into());
    }
    change_roles(
        reg,
        &actor.into(),
        identity,
        "principal.mapped",
        json!({"principal": principal}),
        |b| {
            b.principals.insert(principal.into(), identity.into());
        },
    )
    .await
}

/// Changes `roles.json` by compare-and-swap as `actor`, who must be admin, except while the
/// file does not exist: then the first change creates it and makes its caller admin (and,
/// when STS vouched for the caller, maps the caller's principal to that identity).
async fn change_roles(
    reg: &Registry,
    actor: &Actor,
    subject: &str,
    event: &str,
    detail: serde_json::Value,
    change: impl Fn(&mut RoleBindings),
) -> Result<RoleBindings> {
    let by = actor.identity.as_str();
    validate_identity(by)?;
    for _ in 0..100 {
        let (mut bindings, pre, bootstrap) =
            match reg.get_json::<RoleBindings>(&roles_key()).await? {
                Some((r, etag)) => (r, Precondition::IfMatch(etag), false),
                None => (RoleBindings::default(), Precondition::IfAbsent, true),
            };
        if bootstrap {
            bindings.grant(by, Role::Admin);
            if actor.verified {
                bindings
                    .principals
                    .insert(actor.principal.clone(), by.into());
            }
        } else if let Err(r) = check_roles(&bindings, by, Action::GrantRoles) {
            return Err(refuse(reg, ROLES_AUDIT, by, Action::GrantRoles, subject, r).await);
        }
        change(&mut bindings);
        match reg.put_json(&roles_key(), &bindings, pre).await {
            Err(RegistryError::Store(e)) if e.is_conflict() => continue,
            r => r?,
        };
        let mut detail = detail.clone();
        detail["bootstrap"] = json!(bootstrap);
        detail["by_principal"] = json!(actor.principal);
        reg.append_audit(ROLES_AUDIT, by, event, subject, detail)
            .await?;
        return Ok(bindings);
    }
    Err(RegistryError::Contention {
        what: "roles.json".into(),
        attempts: 100,
    }
    .into())
}

/// Attaches a gate policy (TOML source) to a model, after checking it parses.
pub async fn set_policy(
    reg: &Registry,
    model: &str,
    source_name: &str,
    src: &str,
    actor: &str,
) -> Result<GatePolicy> {
    authorize(reg, model, actor, Action::SetPolicy, model).await?;
    let policy = GatePolicy::parse(src, source_name)?;
    for _ in 0..100 {
        let (mut rec, etag) = reg.model_with_etag(model).await?;
        rec.gate_policy = Some(src.to_string());
        match reg
            .put_json(&layout::model(model), &rec, Precondition::IfMatch(etag))
            .await
        {
            Err(RegistryError::Store(e)) if e.is_conflict() => continue,
            r => r?,
        };
        reg.append_audit(
            model,
            actor,
            "policy.set",
            model,
            serde_json::json!({"source": source_name, "digest": format!("sha256:{}", hex::encode(Sha256::digest(src.as_bytes())))}),
        )
        .await?;
        return Ok(policy);
    }
    Err(RegistryError::Contention {
        what: format!("the gate policy of {model}"),
        attempts: 100,
    }
    .into())
}

/// The derived state of `model@version`, with the facts it came from. Gate evidence counts
/// only when made with the model's attached policy (see [`crate::gatekeeper`]).
pub async fn version_state(reg: &Registry, model: &str, version: u64) -> Result<VersionState> {
    let v = reg.version(model, version).await?;
    let evidence = crate::gatekeeper::evidence(reg, &v).await?;
    crate::gatekeeper::state_with(reg, &v, evidence.passed()).await
}

/// Records `actor`'s approval of `model@version` for `stage`; one approval per identity,
/// and one per principal: the author, or a principal that already approved under another
/// name, is refused (and the refusal audited).
pub async fn approve(
    reg: &Registry,
    model: &str,
    version: u64,
    stage: Stage,
    comment: &str,
    actor: impl Into<Actor>,
) -> Result<Approval> {
    let actor = &actor.into();
    let subject = format!("{model}@{version}");
    let who = actor.identity.as_str();
    authorize(reg, model, who, Action::Approve, &subject).await?;
    let v = reg.version(model, version).await?;
    let state = version_state(reg, model, version).await?;
    let mut given = crate::access::approvals(reg, model, version).await?;
    given.retain(|a| a.stage == stage);
    let author = (v.author.as_str(), v.author_principal.as_deref());
    if let Err(r) = check_approval(&subject, state, author, actor, &given) {
        return Err(refuse(reg, model, who, Action::Approve, &subject, r).await);
    }
    let at = now();
    let approval = |seq: u64| Approval {
        model: model.into(),
        version,
        stage,
        by: who.into(),
        principal: Some(actor.principal.clone()),
        at: at.clone(),
        comment: comment.into(),
        event_seq: Some(seq),
    };
    match reg
        .commit_state(
            model,
            who,
            "version.approved",
            &subject,
            serde_json::json!({"stage": stage, "comment": comment, "principal": actor.principal, "verified": actor.verified}),
            &approval_key(model, version, who),
            Precondition::IfAbsent,
            approval,
        )
        .await
    {
        Ok((a, _)) => Ok(a),
        // Approving twice is harmless: the first approval stands.
        Err(RegistryError::Store(e)) if e.is_conflict() => reg
            .get_json::<Approval>(&approval_key(model, version, who))
            .await?
            .map(|(a, _)| a)
            .ok_or_else(|| RegistryError::Store(e).into()),
        Err(e) => Err(e.into()),
    }
}

/// Records `actor`'s rejection of `model@version` for `stage`: an approver's veto, with the
/// reason, written to the audit chain (`version.rejected`). The gatekeeper reads rejections
/// from the chain and refuses to move a rejected version to that stage, on every path. A
/// rejection is not an approval and never counts as one; it stands for the version (the
/// fix is a new version). Anyone who may approve may reject, the author included.
pub async fn reject(
    reg: &Registry,
    model: &str,
    version: u64,
    stage: Stage,
    comment: &str,
    actor: impl Into<Actor>,
) -> Result<serde_json::Value> {
    let actor = &actor.into();
    let subject = format!("{model}@{version}");
    let who = actor.identity.as_str();
    authorize(reg, model, who, Action::Approve, &subject).await?;
    reg.version(model, version).await?;
    let event = reg
        .append_audit(
            model,
            who,
            "version.rejected",
            &subject,
            serde_json::json!({"stage": stage.alias(), "comment": comment, "principal": actor.principal, "verified": actor.verified}),
        )
        .await?;
    Ok(serde_json::json!({
        "model": model,
        "version": version,
        "stage": stage,
        "rejected_by": who,
        "comment": comment,
        "event_seq": event.seq,
    }))
}

/// A promotion request.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Target stage.
    pub to: Stage,
    /// Canary weight (production only): the version becomes the challenger.
    pub canary: Option<u8>,
    /// Keep the previous champion as a warm standby.
    pub blue_green: bool,
    /// Where the edge runs the graph; `Host` only if the version's policy allows it.
    pub runtime: falaj_core::deployment::Runtime,
    /// What the caller believes the alias holds; `Any` reads it and swaps on what was read.
    pub expect: Expect,
    /// Who promotes.
    pub actor: String,
}

/// What a promotion did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Promoted {
    /// The alias moved.
    pub alias: falaj_core::AliasRecord,
    /// The signed deployment written.
    pub deployment: falaj_core::deployment::DeploymentManifest,
    /// A divergence found and repaired before promoting, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

/// Promotes a version: the gatekeeper checks roles, gates and approvals; then it moves the alias by
/// compare-and-swap (the race is decided there), then writes the signed deployment manifest.
pub async fn promote(reg: &Registry, key: &DeployKey, req: Promotion) -> Result<Promoted> {
    let subject = format!("{}@{}", req.model, req.version);
    let env = req.to.env();
    let admitted = crate::gatekeeper::admit(
        reg,
        &req.model,
        req.version,
        req.to,
        &req.actor,
        req.runtime,
    )
    .await?;
    let repaired = deploy::repair(reg, key, &req.model, env, &req.actor).await?;
    let v = reg.version(&req.model, req.version).await?;
    let have = admitted.approvals;
    let alias = match (req.to, req.canary) {
        (Stage::Production, Some(_)) => deploy::CHALLENGER,
        (stage, _) => stage.alias(),
    };
    let expect = match req.expect {
        Expect::Any => match reg.alias(&req.model, alias).await? {
            Some((a, _)) => a.version.map_or(Expect::Absent, Expect::Version),
            None => Expect::Absent,
        },
        e => e,
    };
    if req.canary.is_some() && req.to == Stage::Staging {
        return Err(DeployError::BadWeight {
            weight: u32::from(req.canary.unwrap_or(0)),
            hint: "canaries run in production only".into(),
        }
        .into());
    }
    let moved = reg
        .move_managed_alias(&req.model, alias, Some(req.version), expect, &req.actor)
        .await?;
    let how = match (req.canary, req.blue_green) {
        (Some(w), _) => falaj_core::deployment::Rollout::Canary(w),
        (None, true) => falaj_core::deployment::Rollout::BlueGreen,
        (None, false) => falaj_core::deployment::Rollout::Direct,
    };
    let deployment =
        deploy::apply_promotion(reg, key, &v, env, how, req.runtime, &req.actor).await?;
    if req.canary.is_none()
        && let Some(old) = moved.previous
        && req.to == Stage::Production
    {
        mark_archived(reg, &req.model, old, &req.actor).await?;
    }
    reg.append_audit(
        &req.model,
        &req.actor,
        "version.promoted",
        &subject,
        serde_json::json!({"to": req.to, "env": env, "canary": req.canary, "blue_green": req.blue_green, "runtime": req.runtime, "generation": deployment.generation, "approvals": have}),
    )
    .await?;
    Ok(Promoted {
        alias: moved,
        deployment,
        repaired,
    })
}
