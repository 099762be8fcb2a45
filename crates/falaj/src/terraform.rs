//! `falaj residency check`: static residency rules over Terraform sources.
//!
//! STUB — to be implemented (issue 7). The signature is the contract with the CLI.

use std::path::{Path, PathBuf};

use falaj_core::AllowedRegions;
use serde::Serialize;

/// One rule broken at one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// File, relative to the checked directory.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Stable rule id, e.g. `region-not-allowed`.
    pub rule: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The result of checking a directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `.tf` files parsed.
    pub files_checked: usize,
    /// Violations, in file and line order.
    pub violations: Vec<Violation>,
}

/// The directory could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// I/O on a file or directory.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A file is not valid HCL.
    #[error("{path}:{line}: not valid HCL: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
}

/// Checks every `.tf` file under `dir` (recursively) against the residency rules.
pub fn check_dir(dir: &Path, allowed: &AllowedRegions) -> Result<Report, CheckError> {
    let _ = (dir, allowed);
    Ok(Report::default())
}
