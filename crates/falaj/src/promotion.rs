//! Roles, gate policies, approvals and promotions over a [`Registry`]: the side effects of
//! the pure rules in `falaj_core::promotion`.
//!
//! Every write checks the actor's roles (`roles.json` at the store root) and is audited; a
//! refused request is audited too, as a `refused` event naming the action and the reason.
//!
//! Bootstrap: while `roles.json` does not exist, the first `falaj roles grant` creates it and
//! makes its caller admin. From then on only admins grant roles.

use falaj_core::deployment::{DeployError, VerifyError};
use falaj_core::policy::{GatePolicy, PolicyError};
use falaj_core::promotion::{
    Action, Approval, Refusal, Role, RoleBindings, Stage, VersionState, authorize as check_roles,
    check_approval, validate_identity,
};
use falaj_core::{StoreKey, layout};
use sha2::{Digest, Sha256};

use crate::deploy::{self, DeployKey};
use crate::error::RegistryError;
use crate::registry::{Expect, Registry, now};
use crate::store::{Precondition, list_all};

/// Model name under which store-wide events (role grants) are audited.
pub const ROLES_AUDIT: &str = "_roles";

/// A promotion, approval or deployment failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    /// The registry failed (a lost compare-and-swap is `AliasConflict`).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Roles or the state machine refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The deployment transition is impossible.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The gate policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The local signing key is unusable.
    #[error("signing key {path}: {reason}")]
    Key {
        /// Key file.
        path: String,
        /// Why, and how to fix it.
        reason: String,
    },
    /// The store trusts another deploy key.
    #[error(
        "the store's published deploy key is {published} but the local signing key is {local}; use the key the store was set up with (FALAJ_SIGNING_KEY) or rotate keys/deploy.pub deliberately"
    )]
    KeyMismatch {
        /// Key id in `keys/deploy.pub`.
        published: String,
        /// Local key id.
        local: String,
    },
    /// A stored deployment manifest failed verification.
    #[error("{key}: {source}")]
    Verify {
        /// Store key.
        key: String,
        /// Why.
        source: VerifyError,
    },
    /// An environment falaj does not manage.
    #[error("unknown environment {env:?}: use prod or staging")]
    BadEnv {
        /// As given.
        env: String,
    },
}

impl PromotionError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Registry(e) => e.code(),
            Self::Refused(Refusal::Forbidden { .. } | Refusal::BadIdentity { .. }) => "forbidden",
            Self::Refused(_) => "refused",
            Self::Deploy(DeployError::NothingDeployed { .. }) => "not_found",
            Self::Deploy(_) => "refused",
            Self::Policy(_) => "invalid_policy",
            Self::Key { .. } | Self::KeyMismatch { .. } => "signing_key",
            Self::Verify { .. } => "bad_signature",
            Self::BadEnv { .. } => "invalid_name",
        }
    }
}

type Result<T, E = PromotionError> = std::result::Result<T, E>;

/// `roles.json` at the store root.
pub fn roles_key() -> StoreKey {
    StoreKey::new("roles.json").expect("valid key")
}

/// `models/<m>/approvals/<n>/<who>.json`.
pub fn approval_key(model: &str, version: u64, who: &str) -> StoreKey {
    StoreKey::new(format!("models/{model}/approvals/{version}/{who}.json"))
        .expect("validated model name and identity")
}

/// `models/<m>/versions/<n>/archived.json`: written once a version is replaced at production.
pub fn archived_key(model: &str, version: u64) -> StoreKey {
    StoreKey::new(format!("models/{model}/versions/{version}/archived.json"))
        .expect("validated model name")
}

/// The role bindings (empty before bootstrap).
pub async fn roles(reg: &Registry) -> Result<RoleBindings> {
    Ok(reg
        .get_json::<RoleBindings>(&roles_key())
        .await?
        .map(|(r, _)| r)
        .unwrap_or_default())
}

/// Checks `actor` may do `action`; a refusal is audited under `model` and returned.
pub async fn authorize(
    reg: &Registry,
    model: &str,
    actor: &str,
    action: Action,
    subject: &str,
) -> Result<()> {
    let bindings = roles(reg).await?;
    match check_roles(&bindings, actor, action) {
        Ok(()) => Ok(()),
        Err(r) => Err(refuse(reg, model, actor, action, subject, r).await),
    }
}

/// Audits a refusal and turns it into the error to return.
pub(crate) async fn refuse(
    reg: &Registry,
    model: &str,
    actor: &str,
    action: Action,
    subject: &str,
    why: Refusal,
) -> PromotionError {
    // An identity unusable as a key is still recorded, by its debug form.
    let who = if validate_identity(actor).is_ok() {
        actor.to_string()
    } else {
        format!("{actor:?}")
    };
    match reg
        .append_audit(
            model,
            &who,
            "refused",
            subject,
            serde_json::json!({"action": action.name(), "reason": why.to_string()}),
        )
        .await
    {
        Ok(_) => PromotionError::Refused(why),
        Err(e) => PromotionError::Registry(e),
    }
}

/// Grants `role` to `who`. Bootstrap: if no `roles.json` exists, it is created with the
/// caller as admin.
pub async fn grant(reg: &Registry, actor: &str, who: &str, role: Role) -> Result<RoleBindings> {
    validate_identity(actor)?;
    validate_identity(who)?;
    for _ in 0..100 {
        let (mut bindings, pre, bootstrap) =
            match reg.get_json::<RoleBindings>(&roles_key()).await? {
                Some((r, etag)) => (r, Precondition::IfMatch(etag), false),
                None => (RoleBindings::default(), Precondition::IfAbsent, true),
            };
        if bootstrap {
            bindings.grant(actor, Role::Admin);
        } else if let Err(r) = check_roles(&bindings, actor, Action::GrantRoles) {
            return Err(refuse(reg, ROLES_AUDIT, actor, Action::GrantRoles, who, r).await);
        }
        bindings.grant(who, role);
        match reg.put_json(&roles_key(), &bindings, pre).await {
            Err(RegistryError::Store(e)) if e.is_conflict() => continue,
            r => r?,
        };
        reg.append_audit(
            ROLES_AUDIT,
            actor,
            "role.granted",
            who,
            serde_json::json!({"role": role.name(), "bootstrap": bootstrap}),
        )
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

/// Approvals recorded for `model@version`.
pub async fn approvals(reg: &Registry, model: &str, version: u64) -> Result<Vec<Approval>> {
    let prefix = format!("models/{model}/approvals/{version}/");
    let mut out = Vec::new();
    for key in list_all(reg.store().as_ref(), &prefix)
        .await
        .map_err(RegistryError::from)?
    {
        if let Some((a, _)) = reg
            .get_json::<Approval>(&StoreKey::new(key).map_err(RegistryError::from)?)
            .await?
        {
            out.push(a);
        }
    }
    Ok(out)
}

/// Records `actor`'s approval of `model@version` for `stage`; one approval per identity.
pub async fn approve(
    reg: &Registry,
    model: &str,
    version: u64,
    stage: Stage,
    comment: &str,
    actor: &str,
) -> Result<Approval> {
    let subject = format!("{model}@{version}");
    authorize(reg, model, actor, Action::Approve, &subject).await?;
    let v = reg.version(model, version).await?;
    let state = version_state(reg, model, version).await?;
    if let Err(r) = check_approval(&subject, state, &v.author, actor) {
        return Err(refuse(reg, model, actor, Action::Approve, &subject, r).await);
    }
    let at = now();
    let approval = |seq: u64| Approval {
        model: model.into(),
        version,
        stage,
        by: actor.into(),
        at: at.clone(),
        comment: comment.into(),
        event_seq: Some(seq),
    };
    match reg
        .commit_state(
            model,
            actor,
            "version.approved",
            &subject,
            serde_json::json!({"stage": stage, "comment": comment}),
            &approval_key(model, version, actor),
            Precondition::IfAbsent,
            approval,
        )
        .await
    {
        Ok((a, _)) => Ok(a),
        // Approving twice is harmless: the first approval stands.
        Err(RegistryError::Store(e)) if e.is_conflict() => reg
            .get_json::<Approval>(&approval_key(model, version, actor))
            .await?
            .map(|(a, _)| a)
            .ok_or_else(|| RegistryError::Store(e).into()),
        Err(e) => Err(e.into()),
    }
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
    let admitted =
        crate::gatekeeper::admit(reg, &req.model, req.version, req.to, &req.actor).await?;
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
    let deployment = deploy::apply_promotion(reg, key, &v, env, how, &req.actor).await?;
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
        serde_json::json!({"to": req.to, "env": env, "canary": req.canary, "blue_green": req.blue_green, "generation": deployment.generation, "approvals": have}),
    )
    .await?;
    Ok(Promoted {
        alias: moved,
        deployment,
        repaired,
    })
}

/// Marks a version as replaced at production (create-only; a second mark is a no-op).
pub async fn mark_archived(reg: &Registry, model: &str, version: u64, actor: &str) -> Result<()> {
    let key = archived_key(model, version);
    if reg
        .store()
        .get(&key)
        .await
        .map_err(RegistryError::from)?
        .is_some()
    {
        return Ok(());
    }
    let at = now();
    match reg
        .commit_state(
            model,
            actor,
            "version.archived",
            &format!("{model}@{version}"),
            serde_json::json!({}),
            &key,
            Precondition::IfAbsent,
            |seq| serde_json::json!({"model": model, "version": version, "at": at, "event_seq": seq}),
        )
        .await
    {
        Err(RegistryError::Store(e)) if e.is_conflict() => Ok(()),
        r => r.map(|_| ()).map_err(Into::into),
    }
}
