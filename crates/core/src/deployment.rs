//! Deployment manifests: the signed desired state the edge fleet pulls from
//! `deployments/<env>/<model>.json`, and the pure transitions between them.
//!
//! The object in the store is a [`SignedDeployment`] envelope: the manifest's canonical JSON
//! as a string (`payload`), its ed25519 signature and the signing key's id. The signature
//! covers the exact payload bytes, so the edge never has to re-serialise anything to check
//! it; [`verify`] refuses an unsigned, mis-signed or malformed object.
//!
//! Strategies: a direct switch, blue-green (switch in one write, keep the previous champion
//! as `standby`), canary (a challenger with a traffic weight, stepped up by command; at 100
//! it becomes champion) and rollback (back to the previous champion in one write).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Manifest schema version.
pub const SCHEMA: u32 = 1;

/// Previous champions kept for rollback.
pub const HISTORY: usize = 10;

/// One deployable version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Version number.
    pub version: u64,
    /// `sha256:<hex>` of the artifact, checked by the edge after download.
    pub digest: String,
    /// Where the edge runs the graph (absent: in the sandbox). Inside the signed payload, so
    /// only a promotion the gatekeeper admitted can ask for the host.
    #[serde(default, skip_serializing_if = "Runtime::is_sandbox")]
    pub runtime: Runtime,
}

impl Slot {
    /// A slot for `version` with artifact `digest`, run in the sandbox.
    pub fn new(version: u64, digest: impl Into<String>) -> Self {
        Self {
            version,
            digest: digest.into(),
            runtime: Runtime::Sandbox,
        }
    }
}

/// Where an edge node runs a deployed version's graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// tract inside the WebAssembly sandbox, as every node can (the default).
    #[default]
    Sandbox,
    /// The node's native tract through wasi:nn, for artifacts the node verified itself; the
    /// component still parses, preprocesses and answers. The version's policy must allow it
    /// (`[edge] allow_host_runtime = true`).
    Host,
}

impl Runtime {
    /// Serde's skip test.
    pub fn is_sandbox(&self) -> bool {
        *self == Self::Sandbox
    }

    /// `sandbox` or `host`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Host => "host",
        }
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sandbox" => Ok(Self::Sandbox),
            "host" => Ok(Self::Host),
            other => Err(format!("runtime {other:?} is not one of: sandbox, host")),
        }
    }
}

/// How the last change was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Switched in one write, nothing kept.
    Direct,
    /// A challenger takes a share of the traffic.
    Canary,
    /// Switched in one write, previous champion kept warm as standby.
    BlueGreen,
    /// Back to the previous champion.
    Rollback,
    /// Rebuilt from the aliases after an interrupted change.
    Repair,
}

/// The desired state of one model in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentManifest {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Environment (`prod`, `staging`).
    pub env: String,
    /// Model.
    pub model: String,
    /// Incremented on every change; the edge ignores a manifest older than the one it runs.
    pub generation: u64,
    /// How the last change was made.
    pub strategy: Strategy,
    /// Serves all traffic not sent to the challenger.
    pub champion: Slot,
    /// Canary challenger.
    pub challenger: Option<Slot>,
    /// Percentage of traffic for the challenger, 0-100.
    pub challenger_weight: u8,
    /// Blue-green standby (the previous champion, kept loaded).
    pub standby: Option<Slot>,
    /// Previous champions, oldest first, for rollback.
    pub history: Vec<Slot>,
    /// Who made the change.
    pub updated_by: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Seq of the audit event that wrote this manifest (inside the signed payload, so it
    /// cannot be changed without the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_seq: Option<u64>,
    /// How the challenger gets its traffic (absent: a canary share).
    #[serde(default, skip_serializing_if = "ChallengerMode::is_canary")]
    pub challenger_mode: ChallengerMode,
    /// What the split is sticky on, for A/B tests that need stable groups: `header:<name>`
    /// or `cookie:<name>` (absent: the `x-falaj-request-key` header, else random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_key: Option<String>,
}

/// How a challenger gets traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChallengerMode {
    /// `challenger_weight` percent of requests are answered by the challenger.
    #[default]
    Canary,
    /// Every request is answered by the champion and copied to the challenger, whose
    /// answer is logged and thrown away (`challenger_weight` is 0).
    Shadow,
}

impl ChallengerMode {
    /// Serde's skip test.
    pub fn is_canary(&self) -> bool {
        *self == Self::Canary
    }
}

/// Checks a split key: `header:<name>` or `cookie:<name>`, the name a plain token.
pub fn check_split_key(key: &str) -> Result<(), DeployError> {
    let bad = || DeployError::BadSplitKey { key: key.into() };
    let (kind, name) = key.split_once(':').ok_or_else(bad)?;
    let token = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !matches!(kind, "header" | "cookie") || !token {
        return Err(bad());
    }
    Ok(())
}

/// A change could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    /// Canary or rollout with nothing deployed.
    #[error(
        "{model} has no deployment in {env} yet; promote a version first (`falaj promote {model}@N --to production`)"
    )]
    NothingDeployed {
        /// Model.
        model: String,
        /// Environment.
        env: String,
    },
    /// A weight outside 0-100 (or 1-99 for a new canary).
    #[error("weight {weight} is out of range: {hint}")]
    BadWeight {
        /// As given.
        weight: u32,
        /// Allowed range.
        hint: String,
    },
    /// Rollout without a canary.
    #[error(
        "{model} in {env} has no canary to roll out; start one with `falaj promote {model}@N --to production --canary 10`"
    )]
    NoCanary {
        /// Model.
        model: String,
        /// Environment.
        env: String,
    },
    /// Rollback with nothing to go back to.
    #[error("{model} in {env} has no previous version to roll back to")]
    NoPrevious {
        /// Model.
        model: String,
        /// Environment.
        env: String,
    },
    /// The deployment changed between a judgement and the change it asked for.
    #[error(
        "{model} in {env} moved on to generation {found} while generation {expected} was being judged; judge it again"
    )]
    Moved {
        /// Model.
        model: String,
        /// Environment.
        env: String,
        /// The generation judged.
        expected: u64,
        /// The generation found.
        found: u64,
    },
    /// A split key that is neither `header:<name>` nor `cookie:<name>`.
    #[error(
        "split key {key:?} is not `header:<name>` or `cookie:<name>` (a name of letters, digits, '-', '_' or '.', at most 64)"
    )]
    BadSplitKey {
        /// As given.
        key: String,
    },
    /// The version is already the champion.
    #[error("{model}@{version} already serves {env}")]
    AlreadyDeployed {
        /// Model.
        model: String,
        /// Environment.
        env: String,
        /// Version.
        version: u64,
    },
}

/// How a promotion is rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// Switch at once.
    Direct,
    /// Switch at once, keep the old champion as standby.
    BlueGreen,
    /// Send this percentage (1-99) to the new version as challenger.
    Canary(u8),
}

fn base(prev: &DeploymentManifest, strategy: Strategy, by: &str, at: &str) -> DeploymentManifest {
    DeploymentManifest {
        generation: prev.generation + 1,
        strategy,
        updated_by: by.into(),
        updated_at: at.into(),
        event_seq: None,
        ..prev.clone()
    }
}

/// Refuses a change computed for `expected` when the manifest is now at another generation.
pub fn check_generation(
    prev: &DeploymentManifest,
    expected: Option<u64>,
) -> Result<(), DeployError> {
    match expected {
        Some(g) if g != prev.generation => Err(DeployError::Moved {
            model: prev.model.clone(),
            env: prev.env.clone(),
            expected: g,
            found: prev.generation,
        }),
        _ => Ok(()),
    }
}

/// The challenger a change to it needs, or why there is none.
fn running_challenger(prev: &DeploymentManifest) -> Result<&Slot, DeployError> {
    prev.challenger
        .as_ref()
        .ok_or_else(|| DeployError::NoCanary {
            model: prev.model.clone(),
            env: prev.env.clone(),
        })
}

/// Takes the challenger out, with what only it used (its mode, the split key).
fn drop_challenger(m: &mut DeploymentManifest) {
    m.challenger = None;
    m.challenger_weight = 0;
    m.challenger_mode = ChallengerMode::Canary;
    m.split_key = None;
}

fn push_history(history: &mut Vec<Slot>, old: Slot) {
    history.retain(|s| s.version != old.version);
    history.push(old);
    if history.len() > HISTORY {
        history.remove(0);
    }
}

/// Promotes `slot` in `env`, after `prev` (the manifest now in the store, if any).
pub fn promote(
    prev: Option<&DeploymentManifest>,
    env: &str,
    model: &str,
    slot: Slot,
    how: Rollout,
    by: &str,
    at: &str,
) -> Result<DeploymentManifest, DeployError> {
    let Some(prev) = prev else {
        return match how {
            Rollout::Canary(_) => Err(DeployError::NothingDeployed {
                model: model.into(),
                env: env.into(),
            }),
            _ => Ok(DeploymentManifest {
                schema: SCHEMA,
                env: env.into(),
                model: model.into(),
                generation: 1,
                strategy: if how == Rollout::BlueGreen {
                    Strategy::BlueGreen
                } else {
                    Strategy::Direct
                },
                champion: slot,
                challenger: None,
                challenger_weight: 0,
                standby: None,
                history: Vec::new(),
                updated_by: by.into(),
                updated_at: at.into(),
                event_seq: None,
                challenger_mode: ChallengerMode::Canary,
                split_key: None,
            }),
        };
    };
    if prev.champion.version == slot.version {
        return Err(DeployError::AlreadyDeployed {
            model: model.into(),
            env: env.into(),
            version: slot.version,
        });
    }
    match how {
        Rollout::Canary(w) => {
            if !(1..=99).contains(&w) {
                return Err(DeployError::BadWeight {
                    weight: w.into(),
                    hint: "a new canary takes 1-99 percent of the traffic".into(),
                });
            }
            let mut m = base(prev, Strategy::Canary, by, at);
            m.challenger = Some(slot);
            m.challenger_weight = w;
            Ok(m)
        }
        Rollout::Direct | Rollout::BlueGreen => {
            let mut m = base(
                prev,
                if how == Rollout::BlueGreen {
                    Strategy::BlueGreen
                } else {
                    Strategy::Direct
                },
                by,
                at,
            );
            let old = std::mem::replace(&mut m.champion, slot);
            push_history(&mut m.history, old.clone());
            m.standby = (how == Rollout::BlueGreen).then_some(old);
            drop_challenger(&mut m);
            Ok(m)
        }
    }
}

/// Sets the canary's weight; at 100 the challenger becomes the champion.
pub fn set_weight(
    prev: &DeploymentManifest,
    weight: u32,
    by: &str,
    at: &str,
) -> Result<DeploymentManifest, DeployError> {
    let challenger = running_challenger(prev)?.clone();
    if weight > 100 {
        return Err(DeployError::BadWeight {
            weight,
            hint: "use 0-100; 100 completes the rollout".into(),
        });
    }
    let mut m = base(prev, Strategy::Canary, by, at);
    if weight == 100 {
        let old = std::mem::replace(&mut m.champion, challenger);
        push_history(&mut m.history, old);
        drop_challenger(&mut m);
        m.standby = None;
    } else {
        m.challenger_weight = weight as u8;
        // A weight ends a shadow test: the challenger now answers its share.
        if weight > 0 {
            m.challenger_mode = ChallengerMode::Canary;
        }
    }
    Ok(m)
}

/// Puts the running challenger in shadow mode: the champion answers every request and the
/// challenger gets a copy (weight 0). A weight from [`set_weight`] ends it.
pub fn set_shadow(
    prev: &DeploymentManifest,
    by: &str,
    at: &str,
) -> Result<DeploymentManifest, DeployError> {
    running_challenger(prev)?;
    let mut m = base(prev, Strategy::Canary, by, at);
    m.challenger_mode = ChallengerMode::Shadow;
    m.challenger_weight = 0;
    Ok(m)
}

/// Sets (or, with `None`, clears) what the running challenger's split is sticky on.
pub fn set_split_key(
    prev: &DeploymentManifest,
    key: Option<&str>,
    by: &str,
    at: &str,
) -> Result<DeploymentManifest, DeployError> {
    running_challenger(prev)?;
    if let Some(k) = key {
        check_split_key(k)?;
    }
    let mut m = base(prev, Strategy::Canary, by, at);
    m.split_key = key.map(str::to_owned);
    Ok(m)
}

/// Rolls back: aborts a canary if one runs, else restores the previous champion.
pub fn rollback(
    prev: &DeploymentManifest,
    by: &str,
    at: &str,
) -> Result<DeploymentManifest, DeployError> {
    let mut m = base(prev, Strategy::Rollback, by, at);
    if m.challenger.is_some() {
        drop_challenger(&mut m);
        return Ok(m);
    }
    let Some(back) = m.history.pop() else {
        return Err(DeployError::NoPrevious {
            model: prev.model.clone(),
            env: prev.env.clone(),
        });
    };
    m.champion = back;
    m.standby = None;
    Ok(m)
}

/// The version a rollback would restore, if any (`None` when it aborts a canary).
pub fn rollback_target(m: &DeploymentManifest) -> Option<u64> {
    if m.challenger.is_some() {
        None
    } else {
        m.history.last().map(|s| s.version)
    }
}

/// Compares a manifest with the aliases it should follow; `Some(reason)` when they differ.
pub fn divergence(
    manifest: Option<&DeploymentManifest>,
    champion_alias: Option<u64>,
    challenger_alias: Option<u64>,
) -> Option<String> {
    let (mc, mch) = match manifest {
        Some(m) => (
            Some(m.champion.version),
            m.challenger.as_ref().map(|s| s.version),
        ),
        None => (None, None),
    };
    let show = |v: Option<u64>| v.map_or("nothing".to_string(), |v| v.to_string());
    if mc != champion_alias {
        return Some(format!(
            "the champion alias names {} but the deployment manifest serves {}",
            show(champion_alias),
            show(mc)
        ));
    }
    if mch != challenger_alias {
        return Some(format!(
            "the challenger alias names {} but the deployment manifest's challenger is {}",
            show(challenger_alias),
            show(mch)
        ));
    }
    None
}

/// Rebuilds the manifest the aliases imply after an interrupted change, keeping the history.
/// `None` when there is nothing to serve (no champion alias).
pub fn reconcile(
    prev: Option<&DeploymentManifest>,
    env: &str,
    model: &str,
    champion: Option<Slot>,
    challenger: Option<(Slot, u8)>,
    by: &str,
    at: &str,
) -> Option<DeploymentManifest> {
    let champion = champion?;
    let mut m = match prev {
        Some(p) => base(p, Strategy::Repair, by, at),
        None => DeploymentManifest {
            schema: SCHEMA,
            env: env.into(),
            model: model.into(),
            generation: 1,
            strategy: Strategy::Repair,
            champion: champion.clone(),
            challenger: None,
            challenger_weight: 0,
            standby: None,
            history: Vec::new(),
            updated_by: by.into(),
            updated_at: at.into(),
            event_seq: None,
            challenger_mode: ChallengerMode::Canary,
            split_key: None,
        },
    };
    if m.champion.version != champion.version {
        let old = std::mem::replace(&mut m.champion, champion);
        // A rollback moved the alias back: drop what we left, else remember the old one.
        if m.history.last().map(|s| s.version) == Some(m.champion.version) {
            m.history.pop();
        } else {
            push_history(&mut m.history, old);
        }
        m.standby = None;
    }
    match challenger {
        Some((slot, w)) => {
            if m.challenger.as_ref() != Some(&slot) {
                m.challenger_mode = ChallengerMode::Canary;
                m.split_key = None;
            }
            m.challenger = Some(slot);
            m.challenger_weight = match m.challenger_mode {
                ChallengerMode::Shadow => 0,
                ChallengerMode::Canary => w.clamp(1, 99),
            };
        }
        None => drop_challenger(&mut m),
    }
    Some(m)
}

/// The deployment public key as published in the store (`keys/deploy.pub`, see
/// [`crate::layout::deploy_public_key`]) and as `--trust-key-file` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    /// `ed25519`.
    pub algorithm: String,
    /// Key id (see [`key_id`]).
    pub key_id: String,
    /// 64 hex digits.
    pub public_key: String,
}

/// The stored envelope: payload, signature and key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDeployment {
    /// The manifest's canonical JSON; the signature covers exactly these bytes.
    pub payload: String,
    /// `ed25519:<hex of 64 bytes>`.
    pub signature: String,
    /// [`key_id`] of the signing key.
    pub key_id: String,
}

/// A manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a signed deployment envelope.
    #[error("not a signed deployment manifest: {reason}")]
    Malformed {
        /// Decoder message.
        reason: String,
    },
    /// No signature.
    #[error("the deployment manifest is unsigned; refusing it")]
    Unsigned,
    /// Signed by another key.
    #[error(
        "the deployment manifest was signed by key {found}, but this node trusts {expected}; refusing it"
    )]
    WrongKey {
        /// Key id in the envelope.
        found: String,
        /// Key id trusted.
        expected: String,
    },
    /// Signature does not verify.
    #[error(
        "the deployment manifest's signature does not verify (tampered or corrupt); refusing it"
    )]
    BadSignature,
    /// The public key is not an ed25519 key.
    #[error("invalid ed25519 public key: {reason}")]
    BadKey {
        /// Why.
        reason: String,
    },
}

/// Short id of a public key: the first 16 hex digits of its sha256.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// The canonical bytes signed for `m`: its compact JSON (fields in declaration order).
pub fn canonical_bytes(m: &DeploymentManifest) -> Vec<u8> {
    serde_json::to_vec(m).expect("manifests serialise")
}

/// Signs `m`.
pub fn sign(m: &DeploymentManifest, key: &SigningKey) -> SignedDeployment {
    let payload = String::from_utf8(canonical_bytes(m)).expect("JSON is UTF-8");
    let sig = key.sign(payload.as_bytes());
    SignedDeployment {
        payload,
        signature: format!("ed25519:{}", hex::encode(sig.to_bytes())),
        key_id: key_id(&key.verifying_key()),
    }
}

/// Parses a public key given as 64 hex digits.
pub fn public_key_from_hex(s: &str) -> Result<VerifyingKey, VerifyError> {
    let bytes: [u8; 32] = hex::decode(s.trim())
        .map_err(|e| VerifyError::BadKey {
            reason: e.to_string(),
        })?
        .try_into()
        .map_err(|_| VerifyError::BadKey {
            reason: "expected 32 bytes (64 hex digits)".into(),
        })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| VerifyError::BadKey {
        reason: e.to_string(),
    })
}

/// Verifies a stored envelope against the trusted `public` key and returns the manifest.
pub fn verify(
    manifest_bytes: &[u8],
    public: &VerifyingKey,
) -> Result<DeploymentManifest, VerifyError> {
    let v: serde_json::Value =
        serde_json::from_slice(manifest_bytes).map_err(|e| VerifyError::Malformed {
            reason: e.to_string(),
        })?;
    let sig_field = v.get("signature").and_then(|s| s.as_str()).unwrap_or("");
    if sig_field.is_empty() {
        return Err(VerifyError::Unsigned);
    }
    let env: SignedDeployment = serde_json::from_value(v).map_err(|e| VerifyError::Malformed {
        reason: e.to_string(),
    })?;
    let expected = key_id(public);
    if env.key_id != expected {
        return Err(VerifyError::WrongKey {
            found: env.key_id,
            expected,
        });
    }
    let hex_sig = env
        .signature
        .strip_prefix("ed25519:")
        .ok_or(VerifyError::BadSignature)?;
    let bytes: [u8; 64] = hex::decode(hex_sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(VerifyError::BadSignature)?;
    public
        .verify(env.payload.as_bytes(), &Signature::from_bytes(&bytes))
        .map_err(|_| VerifyError::BadSignature)?;
    serde_json::from_str(&env.payload).map_err(|e| VerifyError::Malformed {
        reason: format!("signed payload: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(v: u64) -> Slot {
        Slot::new(v, format!("sha256:{v:064x}"))
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn first() -> DeploymentManifest {
        promote(None, "prod", "m", slot(1), Rollout::Direct, "a", "t0").unwrap()
    }

    #[test]
    fn sign_and_verify_round_trip_and_refuse_tampering() {
        let m = first();
        let k = key(1);
        let signed = sign(&m, &k);
        let bytes = serde_json::to_vec(&signed).unwrap();
        assert_eq!(verify(&bytes, &k.verifying_key()).unwrap(), m);
        // Wrong key.
        assert!(matches!(
            verify(&bytes, &key(2).verifying_key()),
            Err(VerifyError::WrongKey { .. })
        ));
        // Tampered payload.
        let mut t = signed.clone();
        t.payload = t.payload.replace("\"version\":1", "\"version\":9");
        assert_ne!(t.payload, signed.payload);
        let tb = serde_json::to_vec(&t).unwrap();
        assert_eq!(
            verify(&tb, &k.verifying_key()),
            Err(VerifyError::BadSignature)
        );
        // Unsigned.
        let mut u = signed.clone();
        u.signature.clear();
        let ub = serde_json::to_vec(&u).unwrap();
        assert_eq!(verify(&ub, &k.verifying_key()), Err(VerifyError::Unsigned));
        let raw = serde_json::to_vec(&m).unwrap();
        assert_eq!(verify(&raw, &k.verifying_key()), Err(VerifyError::Unsigned));
        // Garbage.
        assert!(matches!(
            verify(b"\xff{", &k.verifying_key()),
            Err(VerifyError::Malformed { .. })
        ));
        let hexkey = hex::encode(k.verifying_key().as_bytes());
        assert_eq!(public_key_from_hex(&hexkey).unwrap(), k.verifying_key());
        assert!(public_key_from_hex("abcd").is_err());
    }

    #[test]
    fn canary_steps_and_completes() {
        let m1 = first();
        assert!(matches!(
            promote(None, "prod", "m", slot(2), Rollout::Canary(10), "a", "t"),
            Err(DeployError::NothingDeployed { .. })
        ));
        let m2 = promote(
            Some(&m1),
            "prod",
            "m",
            slot(2),
            Rollout::Canary(10),
            "a",
            "t1",
        )
        .unwrap();
        assert_eq!(m2.generation, 2);
        assert_eq!(m2.champion.version, 1);
        assert_eq!(m2.challenger_weight, 10);
        let m3 = set_weight(&m2, 50, "a", "t2").unwrap();
        assert_eq!(m3.challenger_weight, 50);
        assert!(set_weight(&m3, 101, "a", "t").is_err());
        let m4 = set_weight(&m3, 100, "a", "t3").unwrap();
        assert_eq!(m4.champion.version, 2);
        assert!(m4.challenger.is_none());
        assert_eq!(m4.history, vec![slot(1)]);
        assert!(matches!(
            set_weight(&m4, 20, "a", "t"),
            Err(DeployError::NoCanary { .. })
        ));
        assert!(
            promote(
                Some(&m4),
                "prod",
                "m",
                slot(3),
                Rollout::Canary(0),
                "a",
                "t"
            )
            .is_err()
        );
    }

    #[test]
    fn blue_green_and_rollback() {
        let m1 = first();
        assert!(matches!(
            rollback(&m1, "a", "t"),
            Err(DeployError::NoPrevious { .. })
        ));
        let m2 = promote(
            Some(&m1),
            "prod",
            "m",
            slot(2),
            Rollout::BlueGreen,
            "a",
            "t1",
        )
        .unwrap();
        assert_eq!(m2.champion.version, 2);
        assert_eq!(m2.standby, Some(slot(1)));
        assert_eq!(rollback_target(&m2), Some(1));
        let m3 = rollback(&m2, "a", "t2").unwrap();
        assert_eq!(m3.champion.version, 1);
        assert!(m3.history.is_empty());
        assert_eq!(m3.generation, 3);
        // Rollback during a canary aborts it and keeps the champion.
        let c = promote(
            Some(&m3),
            "prod",
            "m",
            slot(3),
            Rollout::Canary(5),
            "a",
            "t",
        )
        .unwrap();
        assert_eq!(rollback_target(&c), None);
        let r = rollback(&c, "a", "t").unwrap();
        assert_eq!(r.champion.version, 1);
        assert!(r.challenger.is_none());
        assert!(matches!(
            promote(Some(&m3), "prod", "m", slot(1), Rollout::Direct, "a", "t"),
            Err(DeployError::AlreadyDeployed { .. })
        ));
    }

    #[test]
    fn divergence_is_detected_and_reconciled() {
        let m1 = first();
        assert_eq!(divergence(Some(&m1), Some(1), None), None);
        assert!(divergence(Some(&m1), Some(2), None).is_some());
        assert!(divergence(None, Some(2), None).is_some());
        assert!(divergence(Some(&m1), Some(1), Some(3)).is_some());
        let r = reconcile(Some(&m1), "prod", "m", Some(slot(2)), None, "fix", "t").unwrap();
        assert_eq!(r.champion.version, 2);
        assert_eq!(r.history, vec![slot(1)]);
        assert_eq!(r.strategy, Strategy::Repair);
        assert_eq!(divergence(Some(&r), Some(2), None), None);
        // An interrupted rollback: the alias went back to 1.
        let back = reconcile(Some(&r), "prod", "m", Some(slot(1)), None, "fix", "t").unwrap();
        assert_eq!(back.champion.version, 1);
        assert!(back.history.is_empty());
        assert!(reconcile(None, "prod", "m", None, None, "fix", "t").is_none());
    }

    #[test]
    fn shadow_and_split_keys_belong_to_the_running_challenger() {
        let m = first();
        assert!(matches!(
            set_shadow(&m, "a", "t"),
            Err(DeployError::NoCanary { .. })
        ));
        let c = promote(
            Some(&m),
            "prod",
            "m",
            slot(2),
            Rollout::Canary(5),
            "a",
            "t1",
        )
        .unwrap();
        let s = set_shadow(&c, "a", "t2").unwrap();
        assert_eq!(
            (s.challenger_mode, s.challenger_weight),
            (ChallengerMode::Shadow, 0)
        );
        // A manifest without the new fields reads as a canary (old signatures stay valid).
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("challenger_mode") && !json.contains("split_key"));
        // A weight ends the shadow test.
        let w = set_weight(&s, 5, "a", "t3").unwrap();
        assert_eq!(
            (w.challenger_mode, w.challenger_weight),
            (ChallengerMode::Canary, 5)
        );
        let k = set_split_key(&w, Some("cookie:uid"), "a", "t4").unwrap();
        assert_eq!(k.split_key.as_deref(), Some("cookie:uid"));
        for bad in ["uid", "query:uid", "header:", "header:a b", "cookie:x;y"] {
            assert!(
                matches!(
                    set_split_key(&w, Some(bad), "a", "t"),
                    Err(DeployError::BadSplitKey { .. })
                ),
                "{bad}"
            );
        }
        // The challenger leaving takes its mode and split key with it.
        for gone in [
            rollback(&k, "a", "t5").unwrap(),
            set_weight(&k, 100, "a", "t5").unwrap(),
        ] {
            assert_eq!(
                (gone.challenger_mode, gone.split_key),
                (ChallengerMode::Canary, None)
            );
        }
        // A judgement of an older generation is refused.
        assert!(check_generation(&k, Some(k.generation)).is_ok());
        assert!(matches!(
            check_generation(&k, Some(k.generation - 1)),
            Err(DeployError::Moved { .. })
        ));
    }
}
