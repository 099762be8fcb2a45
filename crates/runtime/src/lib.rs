//! falaj-runtime: what every falaj process shares at run time, below the registry, so the
//! edge node links it without linking the registry: JSON log lines CloudWatch Logs Insights
//! can query, the HTTP/1.1 accept loop with its limits ([`httpd`]), and the timestamp every
//! stored record carries ([`now`]).
#![deny(missing_docs)]

pub mod httpd;

/// A limit set in the environment that is not a positive whole number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: expected a positive whole number")]
pub struct BadLimit {
    /// The variable.
    pub var: &'static str,
    /// What it holds.
    pub value: String,
}

/// The positive whole number in `var`, `default` when it is unset; anything else is refused
/// by name (a typo must not silently mean "no limit").
pub fn positive_env(var: &'static str, default: u64) -> Result<u64, BadLimit> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(BadLimit { var, value: v }),
    }
}

/// The current time, RFC 3339 in UTC with milliseconds: the format of every timestamp falaj
/// stores.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// JSON log lines on stderr (one object per line, `level`, `fields`, `target`, timestamp),
/// filtered by `FALAJ_LOG` or `RUST_LOG` (default `info`).
pub fn init_json_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FALAJ_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .try_init();
}
