//! Signed deployments: the signing key, `deployments/<env>/<model>.json` written by
//! compare-and-swap, canary rollouts, rollbacks and the repair of interrupted changes.
//!
//! Order of writes: an alias (`production`, `challenger`, `staging`) is moved first, by
//! compare-and-swap, and decides any race; the deployment manifest follows. A crash between
//! the two leaves the manifest behind the alias; every mutating command first compares the
//! two ([`status`]) and rebuilds the manifest from the aliases ([`repair`]), auditing it,
//! and `falaj deployments` reports the divergence. So the two never differ silently.
//!
//! Keys: in embedded mode the ed25519 signing key is a local file outside the store
//! (`FALAJ_SIGNING_KEY`, else `~/.config/falaj/signing.key`, hex, mode 0600) and its public
//! half is published at `keys/deploy.pub` in the store, which is what edge nodes trust.

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use falaj_core::deployment::{
    self as dep, DeployError, DeploymentManifest, Rollout, SignedDeployment, Slot,
};
use falaj_core::promotion::{Action, Stage};
use falaj_core::{ModelVersion, StoreKey};
use rand::Rng;
use serde::Serialize;

use crate::access::{PromotionError, authorize, mark_archived};
use crate::error::RegistryError;
use crate::gatekeeper;
use crate::registry::{Expect, Registry, now};
use crate::store::{ETag, Precondition, list_all};

type Result<T, E = PromotionError> = std::result::Result<T, E>;

/// The canary alias of production.
pub const CHALLENGER: &str = "challenger";

/// `deployments/<env>/<model>.json`; `production` is spelled `prod` there, as the fleet reads it.
pub fn deployment_key(env: &str, model: &str) -> StoreKey {
    falaj_core::layout::deployment(env, model)
}

/// `keys/deploy.pub`.
pub fn public_key_key() -> StoreKey {
    falaj_core::layout::deploy_public_key()
}

pub use falaj_core::deployment::PublishedKey;

/// The local ed25519 signing key.
#[derive(Clone)]
pub struct DeployKey {
    signing: SigningKey,
}

impl std::fmt::Debug for DeployKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeployKey({})", self.key_id())
    }
}

/// A signing key's text is not 64 hex digits. (The message never quotes the text: it is a
/// secret.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex digits (an ed25519 seed)")]
pub struct BadSeed;

impl DeployKey {
    /// A key from a 32-byte seed (tests, KMS-unwrapped secrets).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// A key from 64 hex digits (an ed25519 seed), as kept in the key file or a secret.
    pub fn from_hex(text: &str) -> std::result::Result<Self, BadSeed> {
        hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Self::from_seed)
            .ok_or(BadSeed)
    }

    /// `FALAJ_SIGNING_KEY`, else `$HOME/.config/falaj/signing.key`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("FALAJ_SIGNING_KEY").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".config").join("falaj").join("signing.key")
    }

    /// Reads the key file, creating it (mode 0600) with a fresh key if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let err = |reason: String| PromotionError::Key {
            path: path.display().to_string(),
            reason,
        };
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "it is readable or writable by group or others (mode {mode:o}); whoever can read it can sign deployments. Run `chmod 600 {}`",
                    path.display()
                )));
            }
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_hex(&text).map_err(|e| {
                err(format!(
                    "{e}; restore the file or point FALAJ_SIGNING_KEY at the right one"
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::rng().fill(&mut seed);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| err(format!("cannot create its directory: {e}")))?;
                }
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts
                    .open(path)
                    .map_err(|e| err(format!("cannot create: {e}")))?;
                std::io::Write::write_all(&mut f, hex::encode(seed).as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| err(format!("cannot write: {e}")))?;
                Ok(Self::from_seed(seed))
            }
            Err(e) => Err(err(format!("cannot read: {e}"))),
        }
    }

    /// The public half.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Its id.
    pub fn key_id(&self) -> String {
        dep::key_id(&self.public())
    }

    /// Signs a manifest.
    pub fn sign(&self, m: &DeploymentManifest) -> SignedDeployment {
        dep::sign(m, &self.signing)
    }
}

/// Publishes `key`'s public half at `keys/deploy.pub` if none is, and refuses a store that
/// trusts another key.
pub async fn publish_key(reg: &Registry, key: &DeployKey) -> Result<()> {
    let published = PublishedKey {
        algorithm: "ed25519".into(),
        key_id: key.key_id(),
        public_key: hex::encode(key.public().as_bytes()),
    };
    match reg.get_json::<PublishedKey>(&public_key_key()).await? {
        Some((p, _)) if p.public_key == published.public_key => Ok(()),
        Some((p, _)) => Err(PromotionError::KeyMismatch {
            published: p.key_id,
            local: published.key_id,
        }),
        None => match reg
            .put_json(&public_key_key(), &published, Precondition::IfAbsent)
            .await
        {
            Err(RegistryError::Store(e)) if e.is_conflict() => {
                Box::pin(publish_key(reg, key)).await
            }
            r => r.map(|_| ()).map_err(Into::into),
        },
    }
}

/// The key edge nodes trust: the one published in the store.
pub async fn trusted_key(reg: &Registry) -> Result<Option<VerifyingKey>> {
    match reg.get_json::<PublishedKey>(&public_key_key()).await? {
        None => Ok(None),
        Some((p, _)) => dep::public_key_from_hex(&p.public_key)
            .map(Some)
            .map_err(|e| PromotionError::Verify {
                key: public_key_key().to_string(),
                source: e,
            }),
    }
}

/// Reads and verifies `deployments/<env>/<model>.json` against the published key.
pub async fn read(
    reg: &Registry,
    env: &str,
    model: &str,
) -> Result<Option<(DeploymentManifest, ETag)>> {
    let key = deployment_key(env, model);
    let Some(obj) = reg.store().get(&key).await.map_err(RegistryError::from)? else {
        return Ok(None);
    };
    let verify_err = |e| PromotionError::Verify {
        key: key.to_string(),
        source: e,
    };
    let public = trusted_key(reg).await?.ok_or_else(|| {
        verify_err(dep::VerifyError::BadKey {
            reason: "no keys/deploy.pub in the store to verify it with".into(),
        })
    })?;
    let m = dep::verify(&obj.bytes, &public).map_err(verify_err)?;
    Ok(Some((m, obj.etag)))
}

fn check_env(env: &str) -> Result<Stage> {
    Stage::for_env(env).ok_or_else(|| PromotionError::BadEnv { env: env.into() })
}

/// `model` has no deployment in `env`.
fn nothing_deployed(model: &str, env: &str) -> DeployError {
    DeployError::NothingDeployed {
        model: model.into(),
        env: env.into(),
    }
}

/// What every change to a running deployment starts with: the environment, `actor` allowed
/// to do `action`, and a repair of what an interrupted change left. Returns the stage and the
/// divergence repaired.
async fn begin_change(
    reg: &Registry,
    key: &DeployKey,
    (model, env, actor): (&str, &str, &str),
    action: Action,
) -> Result<(Stage, Option<String>)> {
    let stage = check_env(env)?;
    authorize(reg, model, actor, action, &format!("{env}/{model}")).await?;
    let repaired = repair(reg, key, model, env, actor).await?;
    Ok((stage, repaired))
}

/// The deployment `model` runs in `env` now.
async fn current(reg: &Registry, env: &str, model: &str) -> Result<DeploymentManifest> {
    Ok(read(reg, env, model)
        .await?
        .map(|(m, _)| m)
        .ok_or_else(|| nothing_deployed(model, env))?)
}

/// The aliases a deployment follows: champion and (prod only) challenger.
fn aliases_for(stage: Stage) -> (&'static str, Option<&'static str>) {
    match stage {
        Stage::Production => ("production", Some(CHALLENGER)),
        Stage::Staging => ("staging", None),
    }
}

/// What a manifest write is audited as.
struct Audit<'a, D: Fn(&DeploymentManifest) -> serde_json::Value> {
    actor: &'a str,
    action: &'a str,
    details: D,
}

/// Writes a transition of the manifest by compare-and-swap, retrying on a concurrent change.
/// The manifest and its audit event are written together ([`Registry::commit_state`]): the
/// event first, then the signed manifest naming it (`event_seq`, inside the signature).
async fn write_with<D: Fn(&DeploymentManifest) -> serde_json::Value>(
    reg: &Registry,
    key: &DeployKey,
    env: &str,
    model: &str,
    audit: Audit<'_, D>,
    f: impl Fn(Option<&DeploymentManifest>) -> std::result::Result<DeploymentManifest, DeployError>,
) -> Result<DeploymentManifest> {
    publish_key(reg, key).await?;
    let store_key = deployment_key(env, model);
    let subject = format!("{env}/{model}");
    for _ in 0..100 {
        let cur = read(reg, env, model).await?;
        let next = f(cur.as_ref().map(|(m, _)| m))?;
        let pre = cur.map_or(Precondition::IfAbsent, |(_, e)| Precondition::IfMatch(e));
        let signed = |seq: u64| {
            let mut m = next.clone();
            m.event_seq = Some(seq);
            key.sign(&m)
        };
        match reg
            .commit_state(
                model,
                audit.actor,
                audit.action,
                &subject,
                (audit.details)(&next),
                &store_key,
                pre,
                signed,
            )
            .await
        {
            Ok((_, event)) => {
                let mut m = next;
                m.event_seq = Some(event.seq);
                return Ok(m);
            }
            Err(RegistryError::Store(e)) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RegistryError::Contention {
        what: store_key.to_string(),
        attempts: 100,
    }
    .into())
}

fn slot(v: &ModelVersion) -> Slot {
    Slot::new(v.version, v.digest.clone())
}

/// Writes the manifest for a promotion whose alias move already happened.
pub async fn apply_promotion(
    reg: &Registry,
    key: &DeployKey,
    v: &ModelVersion,
    env: &str,
    how: Rollout,
    runtime: dep::Runtime,
    actor: &str,
) -> Result<DeploymentManifest> {
    let mut s = slot(v);
    s.runtime = runtime;
    let at = now();
    let audit = Audit {
        actor,
        action: "deployment.written",
        details: |m: &DeploymentManifest| serde_json::json!({"generation": m.generation, "strategy": m.strategy, "champion": m.champion.version, "challenger": m.challenger.as_ref().map(|c| c.version), "weight": m.challenger_weight, "runtime": runtime}),
    };
    match write_with(reg, key, env, &v.model, audit, |prev| {
        dep::promote(prev, env, &v.model, s.clone(), how, actor, &at)
    })
    .await
    {
        // A concurrent repair already signed this very version (it saw the alias move
        // before this manifest write): the promotion is done.
        Err(PromotionError::Deploy(DeployError::AlreadyDeployed { version, .. }))
            if version == v.version =>
        {
            current(reg, env, &v.model).await
        }
        r => r,
    }
}

/// A deployment compared with the aliases it follows.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    /// Environment.
    pub env: String,
    /// Model.
    pub model: String,
    /// The verified manifest, if any.
    pub manifest: Option<DeploymentManifest>,
    /// Champion alias version.
    pub champion_alias: Option<u64>,
    /// Challenger alias version.
    pub challenger_alias: Option<u64>,
    /// Why the manifest and the aliases differ, if they do.
    pub divergence: Option<String>,
}

async fn alias_version(reg: &Registry, model: &str, alias: &str) -> Result<Option<u64>> {
    Ok(reg.alias(model, alias).await?.and_then(|(a, _)| a.version))
}

/// Compares `deployments/<env>/<model>.json` with its aliases.
pub async fn status(reg: &Registry, model: &str, env: &str) -> Result<DeploymentStatus> {
    let stage = check_env(env)?;
    let (champ, chall) = aliases_for(stage);
    let manifest = read(reg, env, model).await?.map(|(m, _)| m);
    let champion_alias = alias_version(reg, model, champ).await?;
    let challenger_alias = match chall {
        Some(a) => alias_version(reg, model, a).await?,
        None => None,
    };
    Ok(DeploymentStatus {
        env: env.into(),
        model: model.into(),
        divergence: dep::divergence(manifest.as_ref(), champion_alias, challenger_alias),
        manifest,
        champion_alias,
        challenger_alias,
    })
}

/// Every deployment in the store, with its status.
pub async fn list(reg: &Registry) -> Result<Vec<DeploymentStatus>> {
    let mut out = Vec::new();
    for key in list_all(reg.store().as_ref(), falaj_core::layout::DEPLOYMENTS_PREFIX)
        .await
        .map_err(RegistryError::from)?
    {
        if let Some((env, model)) = falaj_core::layout::parse_deployment_key(&key) {
            out.push(status(reg, model, env).await?);
        }
    }
    Ok(out)
}

/// `falaj deployments --repair`: an admin re-signs every deployment that lags its aliases.
pub async fn repair_as_admin(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    actor: &str,
) -> Result<Option<String>> {
    authorize(reg, model, actor, Action::Repair, &format!("{env}/{model}")).await?;
    repair(reg, key, model, env, actor).await
}

/// If the manifest lags its aliases (a change interrupted between the alias move and the
/// manifest write), rebuilds it from the aliases, signs, writes and audits it. Returns the
/// divergence repaired, `None` if there was none.
///
/// Repair signs only what the audit chain explains: each alias must hold what its last
/// audited move set (a hand-edited alias is refused,
/// [`falaj_core::promotion::Refusal::Unexplained`]), and each version it names must be admitted by the gatekeeper ([`gatekeeper::admit_slot`]).
pub async fn repair(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    actor: &str,
) -> Result<Option<String>> {
    // A writer that crashed between an audit event and its state write is completed first.
    reg.settle(model).await?;
    let st = status(reg, model, env).await?;
    let Some(reason) = st.divergence else {
        return Ok(None);
    };
    let stage = check_env(env)?;
    let (champ, chall) = aliases_for(stage);
    // Read after the status, never before: every alias it saw then has its event in the chain
    // (events are written first), so a concurrent move is not taken for tampering.
    let events = reg.audit_events(model).await?;
    gatekeeper::check_alias_explained(reg, &events, model, champ, actor).await?;
    if let Some(a) = chall {
        gatekeeper::check_alias_explained(reg, &events, model, a, actor).await?;
    }
    for n in [st.champion_alias, st.challenger_alias]
        .into_iter()
        .flatten()
    {
        gatekeeper::admit_slot(reg, &events, model, n, stage, st.manifest.as_ref(), actor).await?;
    }
    // A version the verified manifest already runs keeps the runtime it was signed with; one
    // it does not gets the sandbox (the host runtime is asked for at promotion, not guessed).
    let signed_slot = |v: &ModelVersion| {
        let mut s = slot(v);
        if let Some(m) = &st.manifest {
            let same = |o: &Slot| o.version == s.version && o.digest == s.digest;
            if let Some(o) = std::iter::once(&m.champion)
                .chain(m.challenger.as_ref())
                .chain(m.standby.as_ref())
                .chain(&m.history)
                .find(|o| same(o))
            {
                s.runtime = o.runtime;
            }
        }
        s
    };
    let champion = match st.champion_alias {
        Some(n) => Some(signed_slot(&reg.version(model, n).await?)),
        None => None,
    };
    let challenger = match st.challenger_alias {
        Some(n) => {
            let w = st
                .manifest
                .as_ref()
                .filter(|m| m.challenger.as_ref().map(|c| c.version) == Some(n))
                .map_or(1, |m| m.challenger_weight);
            Some((signed_slot(&reg.version(model, n).await?), w))
        }
        None => None,
    };
    let at = now();
    let Some(_) = dep::reconcile(
        st.manifest.as_ref(),
        env,
        model,
        champion.clone(),
        challenger.clone(),
        actor,
        &at,
    ) else {
        // Nothing to serve: the aliases were removed by hand; report, don't guess.
        return Err(PromotionError::Deploy(nothing_deployed(model, env)));
    };
    let audit = Audit {
        actor,
        action: "deployment.repaired",
        details: |m: &DeploymentManifest| serde_json::json!({"reason": reason, "generation": m.generation, "champion": m.champion.version}),
    };
    let m = write_with(reg, key, env, model, audit, |prev| {
        dep::reconcile(
            prev,
            env,
            model,
            champion.clone(),
            challenger.clone(),
            actor,
            &at,
        )
        .ok_or_else(|| nothing_deployed(model, env))
    })
    .await?;
    for s in &m.history {
        mark_archived(reg, model, s.version, actor).await?;
    }
    Ok(Some(reason))
}

/// The outcome of a rollout or rollback.
#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    /// The manifest written.
    pub deployment: DeploymentManifest,
    /// A divergence repaired first, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<String>,
}

/// A change the canary judge asked for: the generation it judged (the change is refused if
/// the deployment moved on) and its evidence, recorded in the audit event.
#[derive(Debug, Clone)]
pub struct Judged {
    /// Generation judged.
    pub generation: u64,
    /// The judge's evidence.
    pub evidence: serde_json::Value,
}

fn judged_details(judged: Option<&Judged>, mut details: serde_json::Value) -> serde_json::Value {
    if let (Some(j), Some(obj)) = (judged, details.as_object_mut()) {
        obj.insert("judged_generation".into(), j.generation.into());
        obj.insert("judge".into(), j.evidence.clone());
    }
    details
}

/// Sets the canary weight; at 100 the challenger becomes champion (aliases first).
pub async fn rollout(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    weight: u32,
    actor: &str,
) -> Result<Changed> {
    rollout_judged(reg, key, model, env, weight, actor, None).await
}

/// [`rollout`], as the canary judge asked (`judged`), or as a person (`None`).
pub async fn rollout_judged(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    weight: u32,
    actor: &str,
    judged: Option<&Judged>,
) -> Result<Changed> {
    let expected = judged.map(|j| j.generation);
    let (stage, repaired) = begin_change(reg, key, (model, env, actor), Action::Rollout).await?;
    let cur = current(reg, env, model).await?;
    // Check the transition before touching any alias.
    dep::check_generation(&cur, expected)?;
    dep::set_weight(&cur, weight, actor, &now())?;
    if weight == 100
        && let Some(ch) = &cur.challenger
    {
        let (champ, chall) = aliases_for(stage);
        reg.move_managed_alias(
            model,
            champ,
            Some(ch.version),
            Expect::Version(cur.champion.version),
            actor,
        )
        .await?;
        if let Some(a) = chall {
            reg.move_managed_alias(model, a, None, Expect::Version(ch.version), actor)
                .await?;
        }
        mark_archived(reg, model, cur.champion.version, actor).await?;
    }
    let at = now();
    let audit = Audit {
        actor,
        action: "deployment.rollout",
        details: |m: &DeploymentManifest| {
            judged_details(
                judged,
                serde_json::json!({"weight": weight, "generation": m.generation, "champion": m.champion.version}),
            )
        },
    };
    let m = write_with(reg, key, env, model, audit, |prev| {
        let prev = prev.ok_or_else(|| nothing_deployed(model, env))?;
        dep::check_generation(prev, expected)?;
        dep::set_weight(prev, weight, actor, &at)
    })
    .await?;
    Ok(Changed {
        deployment: m,
        repaired,
    })
}

/// Rolls back: aborts a running canary, else moves the champion alias back to the previous
/// champion by one compare-and-swap, then rewrites the manifest.
pub async fn rollback(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    actor: &str,
) -> Result<Changed> {
    rollback_judged(reg, key, model, env, actor, None).await
}

/// [`rollback`], as the canary judge asked (`judged`), or as a person (`None`).
pub async fn rollback_judged(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    actor: &str,
    judged: Option<&Judged>,
) -> Result<Changed> {
    let expected = judged.map(|j| j.generation);
    let (stage, repaired) = begin_change(reg, key, (model, env, actor), Action::Rollback).await?;
    let cur = current(reg, env, model).await?;
    dep::check_generation(&cur, expected)?;
    dep::rollback(&cur, actor, &now())?;
    let (champ, chall) = aliases_for(stage);
    match (&cur.challenger, chall) {
        (Some(ch), Some(a)) => {
            reg.move_managed_alias(model, a, None, Expect::Version(ch.version), actor)
                .await?;
        }
        _ => {
            if let Some(back) = dep::rollback_target(&cur) {
                reg.move_managed_alias(
                    model,
                    champ,
                    Some(back),
                    Expect::Version(cur.champion.version),
                    actor,
                )
                .await?;
                mark_archived(reg, model, cur.champion.version, actor).await?;
            }
        }
    }
    let at = now();
    let audit = Audit {
        actor,
        action: "deployment.rollback",
        details: |m: &DeploymentManifest| {
            judged_details(
                judged,
                serde_json::json!({"from": cur.champion.version, "to": m.champion.version, "aborted_canary": cur.challenger.as_ref().map(|c| c.version), "generation": m.generation}),
            )
        },
    };
    let m = write_with(reg, key, env, model, audit, |prev| {
        let prev = prev.ok_or_else(|| nothing_deployed(model, env))?;
        dep::check_generation(prev, expected)?;
        dep::rollback(prev, actor, &at)
    })
    .await?;
    Ok(Changed {
        deployment: m,
        repaired,
    })
}

/// Puts the running challenger in shadow mode: the champion answers everything and the
/// challenger gets a copy of each prediction request (its answers logged, never sent).
pub async fn shadow(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    actor: &str,
) -> Result<Changed> {
    change_challenger(
        reg,
        key,
        (model, env, actor),
        "deployment.shadow",
        |prev, at| dep::set_shadow(prev, actor, at),
    )
    .await
}

/// Sets (or clears) what the running challenger's split is sticky on: `header:<name>` or
/// `cookie:<name>`, for A/B tests that need stable groups.
pub async fn split_key(
    reg: &Registry,
    key: &DeployKey,
    model: &str,
    env: &str,
    split: Option<&str>,
    actor: &str,
) -> Result<Changed> {
    if let Some(k) = split {
        dep::check_split_key(k)?;
    }
    change_challenger(
        reg,
        key,
        (model, env, actor),
        "deployment.split-key",
        |prev, at| dep::set_split_key(prev, split, actor, at),
    )
    .await
}

/// A change to how the running challenger gets traffic, as `actor` with the rollout role.
async fn change_challenger(
    reg: &Registry,
    key: &DeployKey,
    (model, env, actor): (&str, &str, &str),
    action: &str,
    f: impl Fn(&DeploymentManifest, &str) -> std::result::Result<DeploymentManifest, DeployError>,
) -> Result<Changed> {
    let (_, repaired) = begin_change(reg, key, (model, env, actor), Action::Rollout).await?;
    let at = now();
    let audit = Audit {
        actor,
        action,
        details: |m: &DeploymentManifest| serde_json::json!({"generation": m.generation, "challenger": m.challenger.as_ref().map(|c| c.version), "mode": m.challenger_mode, "split_key": m.split_key}),
    };
    let m = write_with(reg, key, env, model, audit, |prev| {
        let prev = prev.ok_or_else(|| nothing_deployed(model, env))?;
        f(prev, &at)
    })
    .await?;
    Ok(Changed {
        deployment: m,
        repaired,
    })
}
