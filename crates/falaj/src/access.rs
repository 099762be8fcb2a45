//! Who may do what, and the store objects that record it: roles (`roles.json`), approvals,
//! archive markers, and the error every promotion-side call returns. Below promotion,
//! deployments, the gatekeeper and the gates, which all import it and which it imports
//! none of.

use falaj_core::StoreKey;
use falaj_core::deployment::{DeployError, VerifyError};
use falaj_core::policy::PolicyError;
use falaj_core::promotion::{
    Action, Approval, Refusal, RoleBindings, authorize as check_roles, validate_identity,
};

use crate::error::RegistryError;
use crate::registry::{Registry, now};
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
    /// Feedback labels that cannot be recorded.
    #[error("feedback for {model}: {reason}")]
    BadFeedback {
        /// Model.
        model: String,
        /// What was wrong.
        reason: String,
    },
    /// The canary controller has no audited `[canary]` policy to judge by.
    #[error("{model}: {reason}")]
    CanaryPolicy {
        /// Model.
        model: String,
        /// Why, and how to fix it.
        reason: String,
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
            Self::Policy(_) | Self::CanaryPolicy { .. } => "invalid_policy",
            Self::Key { .. } | Self::KeyMismatch { .. } => "signing_key",
            Self::Verify { .. } => "bad_signature",
            Self::BadEnv { .. } => "invalid_name",
            Self::BadFeedback { .. } => "invalid_request",
        }
    }

    /// Whether the same call may succeed if tried again: only a retryable registry failure;
    /// a refusal stands until roles, approvals or the version change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Registry(e) if e.is_retryable())
    }
}

type Result<T, E = PromotionError> = std::result::Result<T, E>;

/// `roles.json` at the store root.
pub fn roles_key() -> StoreKey {
    falaj_core::layout::roles()
}

/// `models/<m>/approvals/<n>/<who>.json`.
pub fn approval_key(model: &str, version: u64, who: &str) -> StoreKey {
    falaj_core::layout::approval(model, version, who)
}

/// `models/<m>/versions/<n>/archived.json`: written once a version is replaced at production.
pub fn archived_key(model: &str, version: u64) -> StoreKey {
    falaj_core::layout::archived(model, version)
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

/// Registers a version as its author, who must hold a role that may register
/// (data-scientist, ml-engineer, admin). Every registration path checks it: `falaj push`
/// calls this, the webhook too (after checking the same role before it reads anything),
/// and ingest checks the uploader's role before it claims the upload. A refusal is audited
/// and nothing is written.
pub async fn register(
    reg: &Registry,
    req: crate::Registration,
    progress: crate::store::Progress,
) -> Result<crate::Registered> {
    let model = req.model.clone();
    authorize(reg, &model, &req.author, Action::Register, &model).await?;
    Ok(reg.register(req, progress).await?)
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

/// Approvals recorded for `model@version`.
pub async fn approvals(reg: &Registry, model: &str, version: u64) -> Result<Vec<Approval>> {
    let prefix = falaj_core::layout::approvals_prefix(model, version);
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
