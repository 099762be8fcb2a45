//! How a command fails: a stable code, an exit status (one rule, `exit_for`) and a message
//! that names the fix.

use falaj::RegistryError;
use falaj::store::{self};

/// What a command failed with, with its exit code.
pub(crate) struct Failure {
    pub(crate) code: &'static str,
    pub(crate) exit: u8,
    pub(crate) message: String,
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Self {
            code: e.code(),
            exit: exit_for(e.code()),
            message: e.to_string(),
        }
    }
}

pub(crate) fn exit_for(code: &str) -> u8 {
    match code {
        "conflict" => 3,
        "not_found" => 4,
        "forbidden" | "refused" | "gates_failed" => 6,
        _ => 1,
    }
}

impl From<falaj::reports::GateError> for Failure {
    fn from(e: falaj::reports::GateError) -> Self {
        Self {
            code: e.code(),
            exit: exit_for(e.code()),
            message: e.to_string(),
        }
    }
}

impl From<falaj::promotion::PromotionError> for Failure {
    fn from(e: falaj::promotion::PromotionError) -> Self {
        Self {
            code: e.code(),
            exit: exit_for(e.code()),
            message: e.to_string(),
        }
    }
}

impl From<store::StoreError> for Failure {
    fn from(e: store::StoreError) -> Self {
        RegistryError::from(e).into()
    }
}

pub(crate) fn fail(code: &'static str, exit: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        exit,
        message: message.into(),
    }
}
