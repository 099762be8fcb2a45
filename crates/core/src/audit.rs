//! The audit log: a hash chain of events per model.
//!
//! Event `seq` is stored at `audit/<model>/<seq>.json` and carries the hash of event
//! `seq - 1`. Its own hash covers every field but itself, so editing an event breaks its
//! hash, removing one breaks the sequence and the next event's link, and swapping two breaks
//! the links on both sides. [`verify_chain`] names the first event where that happens.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first event of a chain.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the chain, 1-based.
    pub seq: u64,
    /// Model the event belongs to.
    pub model: String,
    /// Hash of event `seq - 1`, or [`GENESIS`].
    pub prev_hash: String,
    /// RFC 3339.
    pub at: String,
    /// Identity that made the change.
    pub actor: String,
    /// What happened: `model.created`, `version.registered`, `alias.moved`, ...
    pub action: String,
    /// What it happened to: `wine@3`, `wine:production`, ...
    pub subject: String,
    /// Action-specific details.
    #[serde(default)]
    pub details: serde_json::Value,
    /// `sha256:<hex>` over every other field.
    pub hash: String,
}

#[derive(Serialize)]
struct HashedFields<'a> {
    seq: u64,
    model: &'a str,
    prev_hash: &'a str,
    at: &'a str,
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    details: &'a serde_json::Value,
}

impl AuditEvent {
    /// Builds event `seq` linked to `prev_hash`, with its hash filled in.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        seq: u64,
        model: &str,
        prev_hash: &str,
        at: &str,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Self {
        let mut e = Self {
            seq,
            model: model.into(),
            prev_hash: prev_hash.into(),
            at: at.into(),
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            details,
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    /// The hash this event should carry.
    pub fn compute_hash(&self) -> String {
        let fields = HashedFields {
            seq: self.seq,
            model: &self.model,
            prev_hash: &self.prev_hash,
            at: &self.at,
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            details: &self.details,
        };
        // serde_json without `preserve_order` writes maps sorted, so this is canonical.
        let bytes = serde_json::to_vec(&fields).expect("audit fields serialise");
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }
}

/// What is wrong with a chain, naming the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditProblem {
    /// The event's content does not match its hash: it was edited.
    #[error("event {key} was edited: its hash is {stored} but its content hashes to {actual}")]
    Edited {
        /// Store key of the event.
        key: String,
        /// Hash written in the event.
        stored: String,
        /// Hash of its content.
        actual: String,
    },
    /// A sequence number is missing.
    #[error("event {missing} is missing: the chain jumps from {before} to {after} ({key})")]
    Missing {
        /// The missing sequence number.
        missing: u64,
        /// Last seq before the gap.
        before: u64,
        /// First seq after the gap.
        after: u64,
        /// Store key of the event after the gap.
        key: String,
    },
    /// An event's `seq` does not match its key: it was moved or swapped.
    #[error("event {key} holds seq {inner}: events were reordered or renamed")]
    Misplaced {
        /// Store key.
        key: String,
        /// `seq` inside the event.
        inner: u64,
    },
    /// The link to the previous event is broken.
    #[error(
        "event {key} does not link to event {prev_seq}: expected prev_hash {expected}, found {found} (an earlier event was changed, removed or reordered)"
    )]
    BrokenLink {
        /// Store key.
        key: String,
        /// Seq it should link to.
        prev_seq: u64,
        /// Hash of the previous event.
        expected: String,
        /// `prev_hash` written in the event.
        found: String,
    },
}

/// Verifies a chain given as `(key, seq from key, event)` in key order.
///
/// Returns every problem found, first problem first; an empty list means the chain holds.
pub fn verify_chain(events: &[(String, u64, AuditEvent)]) -> Vec<AuditProblem> {
    let mut problems = Vec::new();
    let mut prev: Option<(u64, &AuditEvent)> = None;
    for (key, seq, e) in events {
        if e.seq != *seq {
            problems.push(AuditProblem::Misplaced {
                key: key.clone(),
                inner: e.seq,
            });
        }
        let actual = e.compute_hash();
        if actual != e.hash {
            problems.push(AuditProblem::Edited {
                key: key.clone(),
                stored: e.hash.clone(),
                actual,
            });
        }
        let expected_seq = prev.map_or(1, |(s, _)| s + 1);
        if *seq != expected_seq {
            problems.push(AuditProblem::Missing {
                missing: expected_seq,
                before: expected_seq - 1,
                after: *seq,
                key: key.clone(),
            });
        }
        let expected_prev = prev.map_or(GENESIS, |(_, p)| p.hash.as_str());
        if e.prev_hash != expected_prev && *seq == expected_seq {
            problems.push(AuditProblem::BrokenLink {
                key: key.clone(),
                prev_seq: seq - 1,
                expected: expected_prev.into(),
                found: e.prev_hash.clone(),
            });
        }
        prev = Some((*seq, e));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<(String, u64, AuditEvent)> {
        let mut out: Vec<(String, u64, AuditEvent)> = Vec::new();
        for seq in 1..=n {
            let prev = out
                .last()
                .map_or(GENESIS.to_string(), |(_, _, e)| e.hash.clone());
            let e = AuditEvent::new(
                seq,
                "m",
                &prev,
                "2026-01-01T00:00:00Z",
                "ana",
                "x",
                "m@1",
                serde_json::json!({"n": seq}),
            );
            out.push((format!("audit/m/{seq:012}.json"), seq, e));
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        assert!(verify_chain(&chain(5)).is_empty());
    }

    #[test]
    fn float_details_survive_a_store_round_trip() {
        // The hash is over the re-serialised fields, so reading an event back must give the
        // very same floats: serde_json needs `float_roundtrip` for that (without it, values
        // such as drift PSIs came back one ulp off and verified as edited).
        let psi: Vec<f64> = (1..200)
            .map(|i| (i as f64 * 0.7311).ln() / 7.0 + 1e-3 / i as f64)
            .collect();
        let e = AuditEvent::new(
            1,
            "m",
            GENESIS,
            "2026-01-01T00:00:00Z",
            "falaj-drift",
            "drift.retrain_requested",
            "m@1",
            serde_json::json!({"psi": psi}),
        );
        let back: AuditEvent = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back.compute_hash(), e.hash);
        assert!(verify_chain(&[("audit/m/000000000001.json".into(), 1, back)]).is_empty());
    }

    #[test]
    fn edit_is_named() {
        let mut c = chain(4);
        c[2].2.actor = "mallory".into();
        let p = verify_chain(&c);
        assert!(
            matches!(&p[0], AuditProblem::Edited { key, .. } if key.ends_with("000000000003.json")),
            "{p:?}"
        );
    }

    #[test]
    fn edit_with_rehash_breaks_next_link() {
        let mut c = chain(4);
        c[1].2.actor = "mallory".into();
        c[1].2.hash = c[1].2.compute_hash();
        let p = verify_chain(&c);
        assert!(
            matches!(&p[0], AuditProblem::BrokenLink { key, .. } if key.ends_with("000000000003.json")),
            "{p:?}"
        );
    }

    #[test]
    fn removal_is_named() {
        let mut c = chain(4);
        c.remove(1);
        let p = verify_chain(&c);
        assert!(
            matches!(&p[0], AuditProblem::Missing { missing: 2, .. }),
            "{p:?}"
        );
    }

    #[test]
    fn reorder_is_named() {
        let mut c = chain(4);
        let (a, b) = (c[1].2.clone(), c[2].2.clone());
        c[1].2 = b;
        c[2].2 = a;
        let p = verify_chain(&c);
        assert!(
            matches!(&p[0], AuditProblem::Misplaced { inner: 3, .. }),
            "{p:?}"
        );
    }
}
