//! JSON errors with stable codes, and the HTTP status of every library error.
//!
//! The status is chosen by matching the error's variant, the code is the error's own
//! `code()`: nothing depends on the wording of a message.

use falaj_core::deployment::DeployError;
use falaj_core::promotion::Refusal;
use serde_json::{Value, json};

use super::http::HttpResponse;
use crate::error::RegistryError;
use crate::gates::GateError;
use crate::promotion::PromotionError;
use crate::store::StoreError;

/// An error answered as `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable, machine-readable code.
    pub code: String,
    /// What was wrong and, where there is one, the fix.
    pub message: String,
    /// Structured context (a failed gate report, a conflict's current value).
    pub details: Option<Value>,
    /// Extra response headers (`allow`, `www-authenticate`).
    pub headers: Vec<(String, String)>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The JSON response.
    pub fn into_response(self, request_id: &str) -> HttpResponse {
        let mut err = json!({"code": self.code, "message": self.message, "request_id": request_id});
        if let Some(d) = self.details {
            err["details"] = d;
        }
        let mut r = HttpResponse::json(self.status, &json!({ "error": err }));
        for (n, v) in self.headers {
            r.set_header(&n, v);
        }
        r
    }

    /// A 400 for a bad path or body parameter.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
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
        PromotionError::Deploy(_) | PromotionError::Policy(_) => 422,
        PromotionError::BadEnv { .. } => 400,
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

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let details = registry_details(&e);
        Self {
            details,
            ..Self::new(registry_status(&e), e.code(), e.to_string())
        }
    }
}

impl From<PromotionError> for ApiError {
    fn from(e: PromotionError) -> Self {
        let details = promotion_details(&e);
        Self {
            details,
            ..Self::new(promotion_status(&e), e.code(), e.to_string())
        }
    }
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Registry(r) => r.into(),
            GateError::Promotion(p) => p.into(),
            e => Self::new(gate_status(&e), e.code(), e.to_string()),
        }
    }
}
