//! JSON errors with stable codes. The status and code of every library error are chosen once,
//! in `falaj::calls` ([`PromoteError`]); an [`ApiError`] is that plus response headers.

use falaj::RegistryError;
use falaj::calls::PromoteError;
use falaj::promotion::PromotionError;
use falaj::reports::GateError;
use serde_json::{Value, json};

use super::http::HttpResponse;

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

impl From<PromoteError> for ApiError {
    fn from(e: PromoteError) -> Self {
        Self {
            details: e.details,
            ..Self::new(e.status, e.code, e.message)
        }
    }
}

impl From<ApiError> for PromoteError {
    fn from(a: ApiError) -> Self {
        Self {
            code: a.code,
            status: a.status,
            message: a.message,
            details: a.details,
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        PromoteError::from(e).into()
    }
}

impl From<PromotionError> for ApiError {
    fn from(e: PromotionError) -> Self {
        PromoteError::from(e).into()
    }
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        PromoteError::from(e).into()
    }
}
