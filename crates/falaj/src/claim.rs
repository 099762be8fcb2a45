//! The one claim helper: a create-only object that says "this process is doing it", taken over
//! by compare-and-swap once its holder may be dead. Ingest claims uploads with it
//! (`idempotency/ingest/…`), the retrainer retraining requests (`retrain/…/claim.json`).
//!
//! One rule for a claim's age: a timestamp that does not parse (a hand-edited or truncated
//! claim) counts as stale, so nothing waits forever on a claim no one can read, and the
//! idempotency of the work itself (a version is found by its source before one is registered)
//! keeps a takeover harmless. A timestamp in the future is not stale.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::RegistryError;
use crate::registry::Registry;
use crate::store::{ETag, Precondition};
use falaj_core::StoreKey;

/// Attempts before giving up to concurrent claimers.
const ATTEMPTS: u32 = 3;

/// Whether a claim made at `at` (RFC 3339) is older than `after`.
pub fn is_stale(at: &str, after: Duration) -> bool {
    age(at).is_none_or(|a| a > after)
}

/// How long ago `at` (RFC 3339) was: zero for a time in the future, `None` when unreadable.
pub fn age(at: &str) -> Option<Duration> {
    let fmt = time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(at, &fmt).ok()?;
    let age = time::OffsetDateTime::now_utc() - t;
    Some(if age.is_positive() {
        age.unsigned_abs()
    } else {
        Duration::ZERO
    })
}

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claimed<T> {
    /// This caller holds it now; the claim object's ETag.
    Ours(ETag),
    /// Someone else's claim that may not be taken over (in progress, or finished).
    Theirs(T),
}

/// Claims `key` with `fresh`: created if absent, else taken over (by ETag) when `free` says
/// the current claim may be; [`Claimed::Theirs`] when it may not. Gives up with
/// [`RegistryError::Contention`] (retryable) after a few lost races.
pub async fn claim<T: Serialize + DeserializeOwned>(
    registry: &Registry,
    key: &StoreKey,
    fresh: &T,
    free: impl Fn(&T) -> bool,
) -> Result<Claimed<T>, RegistryError> {
    for _ in 0..ATTEMPTS {
        let pre = match registry.get_json::<T>(key).await? {
            None => Precondition::IfAbsent,
            Some((held, _)) if !free(&held) => return Ok(Claimed::Theirs(held)),
            Some((_, etag)) => Precondition::IfMatch(etag),
        };
        match registry.put_json(key, fresh, pre).await {
            Ok(etag) => return Ok(Claimed::Ours(etag)),
            Err(RegistryError::Store(e)) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(RegistryError::Contention {
        what: format!("the claim {key}"),
        attempts: ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_or_old_claim_is_stale_a_recent_or_future_one_is_not() {
        let hour = Duration::from_secs(3600);
        assert!(is_stale("not a time", hour));
        assert!(is_stale("", hour));
        assert!(is_stale("2020-01-01T00:00:00Z", hour));
        assert!(!is_stale(&crate::registry::now(), hour));
        assert!(!is_stale("2999-01-01T00:00:00Z", hour));
    }
}
