//! Residency rules: which regions data may live in.
//!
//! AWS `me-central-1` (UAE) is the only region allowed unless an operator lists others; a
//! region outside the list is an error, never a warning.

/// The regions that falaj accepts when nothing else is configured.
pub const DEFAULT_ALLOWED: &[&str] = &["me-central-1"];

/// A region or location is not in the allowed list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "residency violation: {what} is in region {region:?}, but only {allowed:?} are allowed (set FALAJ_ALLOWED_REGIONS to change the list)"
)]
pub struct ResidencyError {
    /// What was checked: a bucket, a dataset URI, an endpoint.
    pub what: String,
    /// The region it is in.
    pub region: String,
    /// The allowed regions.
    pub allowed: Vec<String>,
}

/// The list of regions data may live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRegions(Vec<String>);

impl Default for AllowedRegions {
    fn default() -> Self {
        Self(DEFAULT_ALLOWED.iter().map(|s| s.to_string()).collect())
    }
}

impl AllowedRegions {
    /// Parses a comma-separated list such as `me-central-1`. Empty means the default.
    pub fn parse(list: &str) -> Self {
        let v: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if v.is_empty() {
            Self::default()
        } else {
            Self(v)
        }
    }

    /// The regions, in order.
    pub fn regions(&self) -> &[String] {
        &self.0
    }

    /// Whether `region` is allowed.
    pub fn allows(&self, region: &str) -> bool {
        self.0.iter().any(|r| r == region)
    }

    /// Checks `region` for `what`, with an error naming both.
    pub fn check(&self, what: &str, region: &str) -> Result<(), ResidencyError> {
        if self.allows(region) {
            Ok(())
        } else {
            Err(ResidencyError {
                what: what.into(),
                region: region.into(),
                allowed: self.0.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_uae_only() {
        let a = AllowedRegions::default();
        assert!(a.check("bucket b", "me-central-1").is_ok());
        let e = a.check("bucket b", "eu-west-1").unwrap_err();
        assert!(e.to_string().contains("eu-west-1"));
        assert!(e.to_string().contains("bucket b"));
        assert_eq!(AllowedRegions::parse(" , "), a);
        assert!(AllowedRegions::parse("me-central-1,me-south-1").allows("me-south-1"));
    }
}
