//! falaj-runtime: what every falaj process shares at run time, below the registry, so the
//! edge node links it without linking the registry: JSON log lines CloudWatch Logs Insights
//! can query, the HTTP/1.1 accept loop with its limits ([`httpd`]), and the timestamp every
//! stored record carries ([`now`]).
#![deny(missing_docs)]

pub mod httpd;

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
