//! Validation of user-chosen names: models, aliases and tags.
//!
//! Names become parts of store keys, URLs and log lines, so they are kept to a small,
//! boring charset. Errors say which name, what was wrong and what is allowed.

/// A user-chosen name was not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason} ({rule})")]
pub struct NameError {
    /// What the name is for: "model name", "alias", "tag key".
    pub kind: &'static str,
    /// The offending value, as given.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
    /// What is allowed.
    pub rule: &'static str,
}

const NAME_RULE: &str = "1-64 chars of a-z, 0-9, '-', '_', '.', starting with a letter or digit";
const TAG_RULE: &str = "1-64 chars of a-z, A-Z, 0-9, '-', '_', '.', ':', '/'";

fn check(
    kind: &'static str,
    value: &str,
    rule: &'static str,
    max: usize,
    ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    let err = |reason: String| NameError {
        kind,
        value: value.to_string(),
        reason,
        rule,
    };
    if value.is_empty() {
        return Err(err("it is empty".into()));
    }
    if value.chars().count() > max {
        return Err(err(format!("it is {} chars long", value.chars().count())));
    }
    if let Some(c) = value.chars().find(|c| !ok(*c)) {
        return Err(err(format!("character {c:?} is not allowed")));
    }
    if value.starts_with(['.', '-', '_', ':', '/']) {
        return Err(err("it must start with a letter or digit".into()));
    }
    if value.contains("..") {
        return Err(err("it contains '..'".into()));
    }
    Ok(())
}

/// Checks a model name (also used for environment names).
pub fn validate_model_name(name: &str) -> Result<(), NameError> {
    check("model name", name, NAME_RULE, 64, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
    })
}

/// Checks an alias such as `production` or `champion`.
pub fn validate_alias(alias: &str) -> Result<(), NameError> {
    check("alias", alias, NAME_RULE, 64, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
    })?;
    if alias.chars().all(|c| c.is_ascii_digit()) {
        return Err(NameError {
            kind: "alias",
            value: alias.into(),
            reason: "an all-digit alias would be read as a version number".into(),
            rule: NAME_RULE,
        });
    }
    Ok(())
}

/// Checks a tag key.
pub fn validate_tag_key(key: &str) -> Result<(), NameError> {
    check("tag key", key, TAG_RULE, 64, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')
    })
}

/// Checks a tag value: up to 256 chars, no control characters.
pub fn validate_tag_value(value: &str) -> Result<(), NameError> {
    let err = |reason: String| NameError {
        kind: "tag value",
        value: value.into(),
        reason,
        rule: "up to 256 printable chars",
    };
    if value.chars().count() > 256 {
        return Err(err("it is too long".into()));
    }
    if value.chars().any(char::is_control) {
        return Err(err("it contains a control character".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for n in ["churn", "wine-quality", "diabetes_v2", "a", "m.1"] {
            validate_model_name(n).unwrap();
        }
    }

    #[test]
    fn refuses_tricky_names() {
        let long = "a".repeat(65);
        for n in [
            "",
            "../etc",
            "a/b",
            "A",
            "-x",
            "a\0b",
            "a\nb",
            "a..b",
            "é",
            long.as_str(),
            " x",
        ] {
            let e = validate_model_name(n).unwrap_err();
            assert_eq!(e.kind, "model name", "{n:?}");
        }
        assert!(validate_alias("42").is_err());
        assert!(validate_alias("production").is_ok());
        assert!(validate_tag_key("team/owner").is_ok());
        assert!(validate_tag_key("bad key").is_err());
        assert!(validate_tag_value("x\u{7}").is_err());
    }
}
