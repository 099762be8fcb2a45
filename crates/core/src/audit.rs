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

/// `audit/<model>/head.json`: the latest event's `seq` and `hash`. It only moves forward
/// (compare-and-swap), so events removed from the end of the chain are noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Seq of the latest event.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// Action of the event that withdraws an intent whose state write lost a race.
pub const ABORTED: &str = "state.aborted";

/// The state an event says it makes: an intent, written to the chain *before* the state
/// object. The state object carries the event's seq (`event_seq`), so each explains the
/// other; an intent whose state was never written is rolled forward from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// Store key of the state object.
    pub key: String,
    /// ETag the object had when the intent was made; `None`: it did not exist.
    pub expect: Option<String>,
    /// The object's full content, `event_seq` included.
    pub value: serde_json::Value,
}

/// The intent an event carries (`details.state`), if any.
pub fn intent_of(e: &AuditEvent) -> Option<Intent> {
    serde_json::from_value(e.details.get("state")?.clone()).ok()
}

/// The seq of the event a state object names: its `event_seq`, or, for a signed deployment,
/// the `event_seq` inside its signed payload.
pub fn event_seq_of(value: &serde_json::Value) -> Option<u64> {
    if let Some(s) = value.get("event_seq").and_then(|s| s.as_u64()) {
        return Some(s);
    }
    let payload: serde_json::Value = serde_json::from_str(value.get("payload")?.as_str()?).ok()?;
    payload.get("event_seq")?.as_u64()
}

fn aborted(events: &[(String, u64, AuditEvent)]) -> std::collections::HashSet<u64> {
    events
        .iter()
        .filter(|(_, _, e)| e.action == ABORTED)
        .filter_map(|(_, _, e)| e.details.get("intent").and_then(|i| i.as_u64()))
        .collect()
}

/// The intents for `key` that are still standing (not withdrawn), in chain order.
pub fn intents_for<'a>(
    events: &'a [(String, u64, AuditEvent)],
    key: &'a str,
) -> impl Iterator<Item = (u64, Intent)> + 'a {
    let gone = aborted(events);
    events.iter().filter_map(move |(_, seq, e)| {
        let i = intent_of(e)?;
        (i.key == key && !gone.contains(seq)).then_some((*seq, i))
    })
}

/// The intent to roll forward for `key`, given what the object holds now (`(event_seq,
/// etag)`, `None` if absent): the earliest standing intent after the current state that was
/// made against exactly the current object. A writer that crashed between its event and its
/// state write left such an intent; an intent that lost its race was made against an object
/// that is gone, so it never matches.
pub fn roll_forward_candidate(
    events: &[(String, u64, AuditEvent)],
    key: &str,
    current: Option<(Option<u64>, &str)>,
) -> Option<(u64, Intent)> {
    let after = current.and_then(|(s, _)| s).unwrap_or(0);
    let etag = current.map(|(_, e)| e);
    intents_for(events, key).find(|(seq, i)| *seq > after && i.expect.as_deref() == etag)
}

/// Checks state objects against the chain: each must name (by `event_seq`) an intent for its
/// own key with exactly its content, and a key the chain wrote must still exist.
/// `states` is `(key, content)`, `None` for an absent object.
pub fn verify_states(
    events: &[(String, u64, AuditEvent)],
    states: &[(String, Option<serde_json::Value>)],
) -> Vec<AuditProblem> {
    let by_seq: std::collections::HashMap<u64, &AuditEvent> =
        events.iter().map(|(_, s, e)| (*s, e)).collect();
    let mut out = Vec::new();
    for (key, value) in states {
        let unexplained = |reason: String| AuditProblem::StateUnexplained {
            key: key.clone(),
            reason,
        };
        match value {
            None => {
                if let Some((seq, _)) = intents_for(events, key).last() {
                    out.push(AuditProblem::StateMissing {
                        key: key.clone(),
                        seq,
                    });
                }
            }
            Some(v) => match event_seq_of(v) {
                None => out.push(unexplained("it names no audit event (no event_seq)".into())),
                Some(seq) => match by_seq.get(&seq).map(|e| (e, intent_of(e))) {
                    None => out.push(unexplained(format!("its event {seq} is not in the chain"))),
                    Some((e, None)) => out.push(unexplained(format!(
                        "its event {seq} ({}) records no state",
                        e.action
                    ))),
                    Some((_, Some(i))) if i.key != *key => out.push(unexplained(format!(
                        "its event {seq} wrote {} instead",
                        i.key
                    ))),
                    Some((_, Some(i))) if i.value != *v => out.push(unexplained(format!(
                        "its content differs from what event {seq} wrote (edited by hand?)"
                    ))),
                    Some(_) => {}
                },
            },
        }
    }
    out
}

/// Checks the head against the chain: the chain must reach the head's seq, and the event
/// there must carry the head's hash.
pub fn verify_head(
    model: &str,
    events: &[(String, u64, AuditEvent)],
    head: Option<&AuditHead>,
) -> Vec<AuditProblem> {
    let last = events.last().map_or(0, |(_, s, _)| *s);
    let key = crate::layout::audit_head(model).to_string();
    match head {
        None if last > 0 => vec![AuditProblem::HeadMissing { key }],
        None => Vec::new(),
        Some(h) if h.seq > last => vec![AuditProblem::Truncated {
            head: h.seq,
            last,
            key,
        }],
        Some(h) => match events.iter().find(|(_, s, _)| *s == h.seq) {
            Some((k, _, e)) if e.hash != h.hash => vec![AuditProblem::Edited {
                key: k.clone(),
                stored: e.hash.clone(),
                actual: format!("{} (recorded by {key})", h.hash),
            }],
            _ => Vec::new(),
        },
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
    /// The head says the chain is longer than it is: events were removed from its end.
    #[error(
        "the chain ends at event {last} but {key} says it reached event {head}: events {} to {head} were removed",
        last + 1
    )]
    Truncated {
        /// Seq recorded by the head.
        head: u64,
        /// Last seq found.
        last: u64,
        /// Head key.
        key: String,
    },
    /// Events exist but the head object does not.
    #[error("{key} is missing: the chain's end cannot be checked (it was deleted)")]
    HeadMissing {
        /// Head key.
        key: String,
    },
    /// A state object that no audit event explains.
    #[error("{key} was not written by an audited move: {reason}")]
    StateUnexplained {
        /// Store key of the state object.
        key: String,
        /// What does not match.
        reason: String,
    },
    /// An intent whose state write never happened: a writer stopped between the two.
    #[error(
        "event {seq} wrote {key} but the object was not written (a writer stopped between the two); `falaj audit MODEL --verify` completes it"
    )]
    Pending {
        /// Store key.
        key: String,
        /// The intent's event.
        seq: u64,
    },
    /// A state object the chain wrote is gone.
    #[error("{key} is missing but event {seq} wrote it (deleted by hand?)")]
    StateMissing {
        /// Store key.
        key: String,
        /// The last event that wrote it.
        seq: u64,
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

    /// A chain whose events 1.. carry the given details.
    fn with_details(details: Vec<serde_json::Value>) -> Vec<(String, u64, AuditEvent)> {
        let mut out: Vec<(String, u64, AuditEvent)> = Vec::new();
        for (i, d) in details.into_iter().enumerate() {
            let seq = i as u64 + 1;
            let prev = out
                .last()
                .map_or(GENESIS.to_string(), |(_, _, e)| e.hash.clone());
            let action = if d.get("intent").is_some() {
                ABORTED
            } else {
                "alias.moved"
            };
            let e = AuditEvent::new(seq, "m", &prev, "t", "ana", action, "m@a", d);
            out.push((format!("audit/m/{seq:012}.json"), seq, e));
        }
        out
    }

    fn intent(key: &str, expect: Option<&str>, version: u64, seq: u64) -> serde_json::Value {
        serde_json::json!({"state": {"key": key, "expect": expect,
            "value": {"version": version, "event_seq": seq}}})
    }

    #[test]
    fn states_must_be_what_their_event_wrote() {
        let k = "models/m/aliases/a.json";
        let c = with_details(vec![intent(k, None, 1, 1), intent(k, Some("e1"), 2, 2)]);
        let ok = serde_json::json!({"version": 2, "event_seq": 2});
        assert!(verify_states(&c, &[(k.into(), Some(ok))]).is_empty());
        for (bad, why) in [
            (serde_json::json!({"version": 3, "event_seq": 2}), "differs"),
            (serde_json::json!({"version": 2}), "no event_seq"),
            (
                serde_json::json!({"version": 2, "event_seq": 9}),
                "not in the chain",
            ),
        ] {
            let p = verify_states(&c, &[(k.into(), Some(bad))]);
            assert!(
                matches!(&p[..], [AuditProblem::StateUnexplained { reason, .. }] if reason.contains(why)),
                "{p:?}"
            );
        }
        // An event for another key does not explain this one.
        let other = serde_json::json!({"version": 1, "event_seq": 1});
        let p = verify_states(&c, &[("models/m/aliases/b.json".into(), Some(other))]);
        assert!(
            matches!(&p[..], [AuditProblem::StateUnexplained { .. }]),
            "{p:?}"
        );
        // A key the chain wrote that is gone.
        let p = verify_states(&c, &[(k.into(), None)]);
        assert!(
            matches!(&p[..], [AuditProblem::StateMissing { seq: 2, .. }]),
            "{p:?}"
        );
    }

    #[test]
    fn only_an_intent_made_against_the_current_object_rolls_forward() {
        let k = "models/m/aliases/a.json";
        // 1 applied (etag e1); 2 lost its race (made against e1 too) and was withdrawn by 3;
        // 4 made against e1 and never written.
        let c = with_details(vec![
            intent(k, None, 1, 1),
            intent(k, Some("e1"), 2, 2),
            serde_json::json!({"intent": 2}),
            intent(k, Some("e1"), 3, 4),
        ]);
        let (seq, i) = roll_forward_candidate(&c, k, Some((Some(1), "e1"))).unwrap();
        assert_eq!((seq, i.value["version"].as_u64()), (4, Some(3)));
        // Made against another object: nothing to do.
        assert!(roll_forward_candidate(&c, k, Some((Some(1), "e9"))).is_none());
        // The object is already past it.
        assert!(roll_forward_candidate(&c, k, Some((Some(4), "e1"))).is_none());
        // Absent: the first intent, made against nothing.
        assert_eq!(roll_forward_candidate(&c, k, None).unwrap().0, 1);
    }

    #[test]
    fn a_head_past_the_end_is_truncation() {
        let c = chain(3);
        let h = |seq: u64, hash: &str| AuditHead {
            seq,
            hash: hash.into(),
        };
        assert!(verify_head("m", &c, Some(&h(3, &c[2].2.hash))).is_empty());
        // A lagging head (a crash before it moved) is fine.
        assert!(verify_head("m", &c, Some(&h(2, &c[1].2.hash))).is_empty());
        assert!(matches!(
            &verify_head("m", &c[..2], Some(&h(3, &c[2].2.hash)))[..],
            [AuditProblem::Truncated {
                head: 3,
                last: 2,
                ..
            }]
        ));
        assert!(matches!(
            &verify_head("m", &c, None)[..],
            [AuditProblem::HeadMissing { .. }]
        ));
        assert!(matches!(
            &verify_head("m", &c, Some(&h(3, "sha256:00")))[..],
            [AuditProblem::Edited { .. }]
        ));
    }
}
