//! Requests that cross from one function to another, and the one error they come back with.
//!
//! In AWS only the promote function may decrypt the deployment signing key, so the webhook
//! does not promote itself: it hands a [`PromoteRequest`] to a [`Promoter`]. The promote
//! function's handler is [`apply_promote_request`]; [`LocalPromoter`] calls it in process
//! (embedded mode, `falaj serve`, tests). Running a model takes tract, so the webhook hands a
//! [`ValidateCall`] to a [`Validator`] the same way (`falaj-gates` runs it in process,
//! `falaj-lambda` invokes the validate function).
//!
//! Errors cross the wire as a [`PromoteError`]: a stable code (the library error's `code()`),
//! the HTTP status and the message; the status of every library error is chosen here, by
//! matching the error's variant, never by the wording of a message.

use std::sync::Arc;

use falaj_core::deployment::{DeployError, Runtime};
use falaj_core::policy::GateReport;
use falaj_core::promotion::{Actor, Refusal, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::deploy::{self, DeployKey};
use crate::error::RegistryError;
use crate::promotion::{self, Promotion, PromotionError};
use crate::registry::{Expect, Registry};
use crate::reports::GateError;
use crate::store::StoreError;

/// What a promotion expects the alias it moves to hold (compare-and-swap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectAlias {
    /// Whatever it holds when read.
    #[default]
    Any,
    /// The alias is unset.
    Absent,
    /// This version.
    Version(u64),
}

impl From<ExpectAlias> for Expect {
    fn from(e: ExpectAlias) -> Self {
        match e {
            ExpectAlias::Any => Expect::Any,
            ExpectAlias::Absent => Expect::Absent,
            ExpectAlias::Version(v) => Expect::Version(v),
        }
    }
}

/// An approver's decision on a version for a stage: what an approval and a rejection carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
    /// The authenticated identity.
    pub actor: String,
    /// The principal that proved it, when the caller verified one (the webhook does);
    /// else the identity stands for itself, unverified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Stage decided for.
    pub to: Stage,
    /// Free text: the reason, for a rejection.
    #[serde(default)]
    pub comment: String,
}

impl Decision {
    /// The deciding actor, verified when a principal proved it.
    fn by(&self) -> Actor {
        match &self.principal {
            Some(p) => Actor::verified(self.actor.clone(), p.clone()),
            None => Actor::unverified(self.actor.clone()),
        }
    }
}

/// A request to the promote function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromoteRequest {
    /// Record `actor`'s approval of `model@version` for a stage.
    Approve(Decision),
    /// Record `actor`'s rejection of `model@version` for a stage: a veto the gatekeeper
    /// honours on every path ([`promotion::reject`]).
    Reject(Decision),
    /// Promote `model@version` to a stage.
    Promote {
        /// Model.
        model: String,
        /// Version.
        version: u64,
        /// The authenticated identity.
        actor: String,
        /// Target stage.
        to: Stage,
        /// Canary weight 1-99 (production only).
        #[serde(default)]
        canary: Option<u8>,
        /// Keep the previous champion as a standby.
        #[serde(default)]
        blue_green: bool,
        /// Where the edge runs the graph (`host` only if the version's policy allows it).
        #[serde(default, skip_serializing_if = "Runtime::is_sandbox")]
        runtime: Runtime,
        /// What the alias is expected to hold.
        #[serde(default)]
        expect: ExpectAlias,
    },
    /// Set the canary weight of a deployment.
    Rollout {
        /// Model.
        model: String,
        /// `prod` or `staging`.
        env: String,
        /// The authenticated identity.
        actor: String,
        /// Challenger weight 0-100 (100 completes the rollout).
        weight: u32,
    },
    /// Roll a deployment back.
    Rollback {
        /// Model.
        model: String,
        /// `prod` or `staging`.
        env: String,
        /// The authenticated identity.
        actor: String,
    },
    /// Let the canary judge look at a running challenger once and step it up, roll it back
    /// or hold ([`crate::canary::look`]).
    CanaryLook {
        /// Model.
        model: String,
        /// `prod` or `staging`.
        env: String,
        /// The identity the steps are signed as (needs the rollout and rollback roles).
        actor: String,
    },
}

impl PromoteRequest {
    /// What follows a passing validation whose policy says `auto_staging`: promote
    /// `model@version` to staging as the validator (the identity that may do only that).
    pub fn auto_staging(model: &str, version: u64) -> Self {
        Self::Promote {
            model: model.into(),
            version,
            actor: falaj_core::promotion::VALIDATOR.into(),
            to: Stage::Staging,
            canary: None,
            blue_green: false,
            runtime: Runtime::Sandbox,
            expect: ExpectAlias::Any,
        }
    }

    /// An authenticated approver's decision on `model@version` for `to`, as the webhook and
    /// the console take it: `"approve"` or `"reject"`; `None` for any other word. The
    /// identity the caller verified stands as its principal.
    pub fn decision(
        decision: &str,
        (model, version): (&str, u64),
        actor: &str,
        to: Stage,
        comment: String,
    ) -> Option<Self> {
        let d = Decision {
            model: model.to_string(),
            version,
            actor: actor.to_string(),
            principal: Some(actor.to_string()),
            to,
            comment,
        };
        Some(match decision {
            "approve" => Self::Approve(d),
            "reject" => Self::Reject(d),
            _ => return None,
        })
    }

    /// The model it is about.
    pub fn model(&self) -> &str {
        match self {
            Self::Approve(d) | Self::Reject(d) => &d.model,
            Self::Promote { model, .. }
            | Self::Rollout { model, .. }
            | Self::Rollback { model, .. }
            | Self::CanaryLook { model, .. } => model,
        }
    }

    /// The identity it acts as.
    pub fn actor(&self) -> &str {
        match self {
            Self::Approve(d) | Self::Reject(d) => &d.actor,
            Self::Promote { actor, .. }
            | Self::Rollout { actor, .. }
            | Self::Rollback { actor, .. }
            | Self::CanaryLook { actor, .. } => actor,
        }
    }
}

/// A promote request failed: a stable code, the HTTP status it maps to, and the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PromoteError {
    /// Stable code (the library error's `code()`).
    pub code: String,
    /// HTTP status for the webhook to answer with.
    pub status: u16,
    /// What was wrong, and the fix.
    pub message: String,
    /// Structured context, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl PromoteError {
    /// An error from parts.
    pub fn new(code: impl Into<String>, status: u16, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            status,
            message: message.into(),
            details: None,
        }
    }
}

/// Applies approvals, promotions, rollouts and rollbacks; the webhook's only way to them.
#[async_trait::async_trait]
pub trait Promoter: Send + Sync {
    /// Applies `req`: the JSON result, or why it failed.
    async fn apply(&self, req: PromoteRequest) -> Result<Value, PromoteError>;
}

/// `prod`/`production` → `prod`, `staging` → `staging`: the key deployments are stored under.
fn env_of(env: &str) -> Result<&'static str, PromoteError> {
    Stage::for_env(env)
        .map(Stage::env)
        .ok_or_else(|| PromotionError::BadEnv { env: env.into() }.into())
}

fn to_json<T: Serialize>(v: &T) -> Result<Value, PromoteError> {
    serde_json::to_value(v)
        .map_err(|e| PromoteError::new("internal", 500, format!("cannot encode the result: {e}")))
}

/// Does the work of a [`PromoteRequest`] with the registry and the signing key: the promote
/// function's handler. Roles are checked (and refusals audited) by `crate::promotion` and
/// `crate::deploy`, against `roles.json`, for the request's `actor`.
///
/// Results: approve `{"approval": …}`; promote `{"alias", "deployment", "repaired"?}`;
/// rollout and rollback `{"deployment", "repaired"?}`.
pub async fn apply_promote_request(
    reg: &Registry,
    key: &DeployKey,
    req: PromoteRequest,
) -> Result<Value, PromoteError> {
    falaj_core::validate_model_name(req.model())
        .map_err(|e| PromotionError::from(crate::RegistryError::from(e)))?;
    match req {
        PromoteRequest::Approve(d) => {
            let a = promotion::approve(reg, &d.model, d.version, d.to, &d.comment, d.by()).await?;
            Ok(json!({ "approval": a }))
        }
        PromoteRequest::Reject(d) => {
            let r = promotion::reject(reg, &d.model, d.version, d.to, &d.comment, d.by()).await?;
            Ok(json!({ "rejection": r }))
        }
        PromoteRequest::Promote {
            model,
            version,
            actor,
            to,
            canary,
            blue_green,
            runtime,
            expect,
        } => {
            let p = promotion::promote(
                reg,
                key,
                Promotion {
                    model,
                    version,
                    to,
                    canary,
                    blue_green,
                    runtime,
                    expect: expect.into(),
                    actor,
                },
            )
            .await?;
            to_json(&p)
        }
        PromoteRequest::Rollout {
            model,
            env,
            actor,
            weight,
        } => {
            let env = env_of(&env)?;
            to_json(&deploy::rollout(reg, key, &model, env, weight, &actor).await?)
        }
        PromoteRequest::Rollback { model, env, actor } => {
            let env = env_of(&env)?;
            to_json(&deploy::rollback(reg, key, &model, env, &actor).await?)
        }
        PromoteRequest::CanaryLook { model, env, actor } => {
            let env = env_of(&env)?;
            to_json(&crate::canary::look(reg, key, &model, env, &actor).await?)
        }
    }
}

/// A [`Promoter`] that applies requests in this process.
#[derive(Debug, Clone)]
pub struct LocalPromoter {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The deployment signing key.
    pub key: DeployKey,
}

impl LocalPromoter {
    /// A promoter over `registry` signing with `key`.
    pub fn new(registry: Arc<Registry>, key: DeployKey) -> Self {
        Self { registry, key }
    }
}

#[async_trait::async_trait]
impl Promoter for LocalPromoter {
    async fn apply(&self, req: PromoteRequest) -> Result<Value, PromoteError> {
        apply_promote_request(&self.registry, &self.key, req).await
    }
}

/// One validation the webhook was asked for, as it travels to the validate function (under
/// the event's `webhook_validate` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateCall {
    /// Model.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Store key of the holdout CSV.
    pub holdout: String,
    /// A gate policy (TOML) from the request body, instead of the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The authenticated caller, whose role is checked.
    pub actor: String,
}

/// Runs a [`ValidateCall`]: the report written (passed or not), or why none could be.
#[async_trait::async_trait]
pub trait Validator: Send + Sync {
    /// Validates `call` against `reg`.
    async fn validate(
        &self,
        reg: &Registry,
        call: ValidateCall,
    ) -> Result<GateReport, PromoteError>;
}

/// HTTP status of a registry error.
pub fn registry_status(e: &RegistryError) -> u16 {
    match e {
        RegistryError::Store(s) => match s {
            StoreError::Conflict { .. } => 409,
            StoreError::InvalidKey(_) => 400,
            _ => 500,
        },
        RegistryError::AliasConflict { .. } | RegistryError::ModelExists { .. } => 409,
        RegistryError::Name(_) | RegistryError::Ref(_) => 400,
        RegistryError::ModelNotFound { .. }
        | RegistryError::VersionNotFound { .. }
        | RegistryError::AliasNotFound { .. }
        | RegistryError::NoVersions { .. } => 404,
        RegistryError::InvalidArtifact { .. } | RegistryError::InvalidManifest { .. } => 422,
        RegistryError::Corrupt { .. } => 500,
        RegistryError::Contention { .. } => 503,
        RegistryError::ManagedAlias { .. } => 422,
    }
}

/// HTTP status of a promotion error.
pub fn promotion_status(e: &PromotionError) -> u16 {
    match e {
        PromotionError::Registry(r) => registry_status(r),
        PromotionError::Refused(Refusal::Forbidden { .. } | Refusal::BadIdentity { .. }) => 403,
        // State, self-approval, missing approvals, policy: refused for what the version is.
        PromotionError::Refused(_) => 422,
        PromotionError::Deploy(DeployError::NothingDeployed { .. }) => 404,
        PromotionError::Deploy(_)
        | PromotionError::Policy(_)
        | PromotionError::CanaryPolicy { .. } => 422,
        PromotionError::BadEnv { .. } | PromotionError::BadFeedback { .. } => 400,
        PromotionError::Key { .. }
        | PromotionError::KeyMismatch { .. }
        | PromotionError::Verify { .. } => 500,
    }
}

/// HTTP status of a validation error.
pub fn gate_status(e: &GateError) -> u16 {
    match e {
        GateError::Registry(r) => registry_status(r),
        GateError::Promotion(p) => promotion_status(p),
        GateError::Policy(_)
        | GateError::NoPolicy { .. }
        | GateError::NoManifest { .. }
        | GateError::Holdout { .. }
        | GateError::HoldoutMismatch { .. }
        | GateError::MissingSensitiveColumn { .. }
        | GateError::Incompatible { .. } => 422,
    }
}

fn registry_details(e: &RegistryError) -> Option<Value> {
    match e {
        RegistryError::AliasConflict {
            alias,
            current,
            generation,
            ..
        } => Some(json!({"alias": alias, "current": current, "generation": generation})),
        _ => None,
    }
}

fn promotion_details(e: &PromotionError) -> Option<Value> {
    match e {
        PromotionError::Registry(r) => registry_details(r),
        PromotionError::Refused(Refusal::NeedsApprovals { have, need, .. }) => {
            Some(json!({"approvals": have, "needed": need}))
        }
        PromotionError::Refused(Refusal::State { state, to, .. }) => {
            Some(json!({"state": state, "to": to}))
        }
        _ => None,
    }
}

impl From<RegistryError> for PromoteError {
    fn from(e: RegistryError) -> Self {
        Self {
            details: registry_details(&e),
            ..Self::new(e.code(), registry_status(&e), e.to_string())
        }
    }
}

impl From<PromotionError> for PromoteError {
    fn from(e: PromotionError) -> Self {
        Self {
            details: promotion_details(&e),
            ..Self::new(e.code(), promotion_status(&e), e.to_string())
        }
    }
}

impl From<GateError> for PromoteError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Registry(r) => r.into(),
            GateError::Promotion(p) => p.into(),
            e => Self::new(e.code(), gate_status(&e), e.to_string()),
        }
    }
}

/// How the promote function reports a [`PromoteError`] to Lambda: the error's code as the
/// error type, the whole error as JSON in the message, so the invoking side (`falaj-lambda`) gets it back.
pub fn promote_error_message(e: &PromoteError) -> (String, String) {
    (
        e.code.clone(),
        serde_json::to_string(e).unwrap_or_else(|_| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_keep_their_wire_shape_and_refuse_unknown_fields() {
        let wire = json!({"op": "reject", "model": "bc", "version": 3, "actor": "ann",
            "to": "production", "comment": "calibration is off"});
        let req: PromoteRequest = serde_json::from_value(wire.clone()).unwrap();
        let PromoteRequest::Reject(d) = &req else {
            panic!("{req:?}")
        };
        assert_eq!(
            (d.version, d.actor.as_str(), d.principal.as_deref()),
            (3, "ann", None)
        );
        assert_eq!(serde_json::to_value(&req).unwrap(), wire);
        assert_eq!(d.by(), Actor::unverified("ann"));
        let approve = PromoteRequest::decision(
            "approve",
            ("bc", 3),
            "ann",
            Stage::Production,
            String::new(),
        )
        .unwrap();
        assert_eq!(serde_json::to_value(&approve).unwrap()["op"], "approve");
        let mut typo = wire;
        typo["coment"] = json!("x");
        let err = serde_json::from_value::<PromoteRequest>(typo).unwrap_err();
        assert!(err.to_string().contains("coment"), "{err}");
    }
}
