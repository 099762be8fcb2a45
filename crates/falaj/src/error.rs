//! Errors of the registry. Each message says what was wrong and, where there is one, the fix.

use crate::store::StoreError;

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A name, alias or tag was invalid.
    #[error(transparent)]
    Name(#[from] falaj_core::NameError),
    /// A `model@ref` was malformed.
    #[error(transparent)]
    Ref(#[from] falaj_core::version::RefError),
    /// No such model.
    #[error("model {model:?} does not exist; create it with `falaj model create {model}`")]
    ModelNotFound {
        /// Model name.
        model: String,
    },
    /// The model exists already.
    #[error("model {model:?} already exists")]
    ModelExists {
        /// Model name.
        model: String,
    },
    /// No such version.
    #[error("{model}@{version} does not exist; list versions with `falaj versions {model}`")]
    VersionNotFound {
        /// Model name.
        model: String,
        /// Number asked for.
        version: u64,
    },
    /// The model has no versions.
    #[error(
        "model {model:?} has no versions yet; register one with `falaj push {model} model.onnx`"
    )]
    NoVersions {
        /// Model name.
        model: String,
    },
    /// No such alias.
    #[error(
        "alias {model}@{alias} is not set; set it with `falaj alias set {model} {alias} <version>`"
    )]
    AliasNotFound {
        /// Model name.
        model: String,
        /// Alias.
        alias: String,
    },
    /// Someone else moved the alias first.
    #[error("conflict: {model}@{alias} is now at {} (generation {generation}), not at {expected} as expected; re-read it and retry", current.map_or("nothing".to_string(), |v| format!("version {v}")))]
    AliasConflict {
        /// Model name.
        model: String,
        /// Alias.
        alias: String,
        /// What the caller expected.
        expected: String,
        /// Where it points now.
        current: Option<u64>,
        /// Its generation now.
        generation: u64,
    },
    /// A stored object could not be decoded.
    #[error("corrupt object {key} in the store: {reason}")]
    Corrupt {
        /// Store key.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// The artifact is not a usable model.
    #[error("{source_name} is not a usable model: {reason}")]
    InvalidArtifact {
        /// File or key.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// The manifest is invalid.
    #[error("manifest {source_name} is invalid: {reason}")]
    InvalidManifest {
        /// File or key.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// A write kept losing races.
    #[error("gave up on {what} after {attempts} attempts under contention; retry")]
    Contention {
        /// What was being written.
        what: String,
        /// Attempts made.
        attempts: u32,
    },
    /// `staging`, `production` and `challenger` move only through promotion (gates,
    /// approvals, a signed deployment): the registry's alias API refuses them, whoever calls.
    #[error("alias {alias:?} is managed by promotion and cannot be moved by hand: use {instead}")]
    ManagedAlias {
        /// The alias.
        alias: String,
        /// What to do instead.
        instead: String,
    },
}

impl From<falaj_core::layout::KeyError> for RegistryError {
    fn from(e: falaj_core::layout::KeyError) -> Self {
        Self::Store(StoreError::InvalidKey(e))
    }
}

impl RegistryError {
    /// A stable, machine-readable code for JSON output and HTTP APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(StoreError::Conflict { .. })
            | Self::AliasConflict { .. }
            | Self::ModelExists { .. } => "conflict",
            Self::Store(StoreError::Residency(_)) => "residency_violation",
            Self::Store(StoreError::Missing { .. }) => "store_missing",
            Self::Store(StoreError::InvalidUri { .. }) => "invalid_store_uri",
            Self::Store(StoreError::InvalidKey(_)) | Self::Name(_) | Self::Ref(_) => "invalid_name",
            Self::Store(StoreError::NoConditionalWrites { .. }) => "store_unsupported",
            Self::Store(_) => "store_error",
            Self::ModelNotFound { .. }
            | Self::VersionNotFound { .. }
            | Self::AliasNotFound { .. }
            | Self::NoVersions { .. } => "not_found",
            Self::Corrupt { .. } => "corrupt_object",
            Self::InvalidArtifact { .. } => "invalid_artifact",
            Self::InvalidManifest { .. } => "invalid_manifest",
            Self::Contention { .. } => "contention",
            Self::ManagedAlias { .. } => "refused",
        }
    }

    /// Whether the same call may succeed if tried again (a retryable store failure, or
    /// contention that outlasted the retries); every other error is decided by what is stored
    /// or asked, and fails the same way again. Lambda retries, and a watcher re-polls, only
    /// these.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Contention { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_a_retry_can_cure_are_retryable() {
        let io = || StoreError::Io {
            what: "read",
            path: "x".into(),
            source: std::io::Error::other("disk"),
        };
        let cases: Vec<(RegistryError, bool)> = vec![
            (io().into(), true),
            (
                StoreError::S3 {
                    op: "PutObject",
                    key: "k".into(),
                    message: "503 SlowDown".into(),
                }
                .into(),
                true,
            ),
            (
                StoreError::Conflict {
                    key: "k".into(),
                    current: None,
                }
                .into(),
                true,
            ),
            (
                RegistryError::Contention {
                    what: "w".into(),
                    attempts: 3,
                },
                true,
            ),
            (
                StoreError::Missing {
                    uri: "dir:///x".into(),
                    hint: "h".into(),
                }
                .into(),
                false,
            ),
            (StoreError::Symlink { path: "x".into() }.into(), false),
            (RegistryError::ModelNotFound { model: "bc".into() }, false),
            (
                RegistryError::InvalidArtifact {
                    source_name: "m.onnx".into(),
                    reason: "r".into(),
                },
                false,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.is_retryable(), want, "{e} ({})", e.code());
        }
    }
}
