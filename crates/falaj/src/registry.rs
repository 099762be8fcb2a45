//! The model registry: models, immutable versions, aliases, tags and the audit log, kept as
//! objects in a [`Store`] (layout in `falaj_core::layout`).
//!
//! Consistency comes from the store's conditional writes alone:
//! - a version number is claimed by a create-only put of `versions/<n>.json`; a writer that
//!   loses the race tries `n + 1`, so numbers are unique and gap-free;
//! - an alias moves only by compare-and-swap on its ETag;
//! - audit event `seq` is claimed create-only and links to the hash of `seq - 1`.
//!
//! Artifacts are written first (content-addressed blobs) and the version record last, so a
//! crash mid-upload leaves no version behind.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use falaj_core::audit::{AuditHead, GENESIS, Intent};
use falaj_core::layout;
use falaj_core::version::{ModelRef, VersionRef};
use falaj_core::{
    AliasRecord, AuditEvent, AuditProblem, Lineage, ModelRecord, ModelVersion, StoreKey,
    TrainingManifest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::RegistryError;
use crate::store::{BlobSource, ETag, Precondition, Progress, Store, list_all};

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// How many times a contended write is retried before giving up.
const MAX_ATTEMPTS: u32 = 10_000;

/// The current time, RFC 3339 in UTC with milliseconds (from `falaj-runtime`).
pub use falaj_runtime::now;

/// A new model.
#[derive(Debug, Clone, Default)]
pub struct NewModel {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Owning team or person.
    pub owner: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Where a version's artifact comes from.
#[derive(Debug, Clone)]
pub enum Artifact {
    /// A local file, streamed.
    File(PathBuf),
    /// Bytes already in memory (an object read from `incoming/`).
    Bytes(Bytes),
}

/// A request to register a version.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Model name.
    pub model: String,
    /// The ONNX artifact.
    pub artifact: Artifact,
    /// Name of the artifact for messages (path or key).
    pub artifact_name: String,
    /// The training manifest (`manifest.json`), raw, with its name for messages.
    pub manifest: Option<(String, Bytes)>,
    /// Semantic version; else the manifest's, else `<n>.0.0`.
    pub semver: Option<String>,
    /// Who registers it.
    pub author: String,
    /// The principal that vouched for `author` (see [`falaj_core::promotion::Actor`]), if any.
    pub author_principal: Option<String>,
    /// Where it came from (`incoming/...` key or a path).
    pub source: Option<String>,
}

/// Which versions to list.
#[derive(Debug, Clone, Default)]
pub struct VersionFilter {
    /// Only versions whose tags include all of these.
    pub tags: Vec<(String, String)>,
    /// Only versions by this author.
    pub author: Option<String>,
}

/// What an alias move expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there: retried until applied.
    Any,
    /// The alias is unset.
    Absent,
    /// The alias points at this version.
    Version(u64),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("anything"),
            Self::Absent => f.write_str("unset"),
            Self::Version(v) => write!(f, "version {v}"),
        }
    }
}

/// The outcome of a registration.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    /// The new version record.
    pub version: ModelVersion,
    /// Whether the artifact blob was new (false: deduplicated).
    pub blob_created: bool,
}

/// The registry over one store.
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn Store>,
    /// Last audit event seen per model: `(seq, hash)`. A hint only; writes re-check.
    audit_heads: Mutex<HashMap<String, (u64, String)>>,
    /// Highest version number seen per model. A hint only; claims re-check.
    latest: Mutex<HashMap<String, u64>>,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            audit_heads: Mutex::default(),
            latest: Mutex::default(),
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads and decodes a JSON object, naming the key if it is corrupt.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &StoreKey) -> Result<Option<(T, ETag)>> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(o) => serde_json::from_slice(&o.bytes)
                .map(|v| Some((v, o.etag)))
                .map_err(|e| RegistryError::Corrupt {
                    key: key.to_string(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Encodes and writes a JSON object.
    pub async fn put_json<T: Serialize>(
        &self,
        key: &StoreKey,
        value: &T,
        pre: Precondition,
    ) -> Result<ETag> {
        let bytes = serde_json::to_vec_pretty(value).expect("records serialise");
        Ok(self.store.put(key, Bytes::from(bytes), pre).await?)
    }

    // ---- models ----

    /// Creates a model; fails if it exists.
    pub async fn create_model(&self, req: NewModel, actor: &str) -> Result<ModelRecord> {
        falaj_core::validate_model_name(&req.name)?;
        for (k, v) in &req.tags {
            falaj_core::validate_tag_key(k)?;
            falaj_core::validate_tag_value(v)?;
        }
        let rec = ModelRecord {
            name: req.name.clone(),
            description: req.description,
            owner: req.owner,
            tags: req.tags,
            created_by: actor.into(),
            created_at: now(),
            gate_policy: None,
        };
        match self
            .put_json(&layout::model(&req.name), &rec, Precondition::IfAbsent)
            .await
        {
            Err(RegistryError::Store(e)) if e.is_conflict() => {
                return Err(RegistryError::ModelExists { model: req.name });
            }
            r => r?,
        };
        self.append_audit(
            &req.name,
            actor,
            "model.created",
            &req.name,
            serde_json::json!({"owner": rec.owner}),
        )
        .await?;
        Ok(rec)
    }

    /// Reads a model and its ETag.
    pub async fn model_with_etag(&self, name: &str) -> Result<(ModelRecord, ETag)> {
        falaj_core::validate_model_name(name)?;
        self.get_json(&layout::model(name))
            .await?
            .ok_or_else(|| RegistryError::ModelNotFound { model: name.into() })
    }

    /// Reads a model.
    pub async fn model(&self, name: &str) -> Result<ModelRecord> {
        Ok(self.model_with_etag(name).await?.0)
    }

    /// Every model, by name.
    pub async fn models(&self) -> Result<Vec<ModelRecord>> {
        let mut out = Vec::new();
        for key in list_all(self.store.as_ref(), layout::MODELS_PREFIX).await? {
            let parts: Vec<&str> = key.split('/').collect();
            if parts.len() == 3
                && parts[2] == "model.json"
                && let Some((m, _)) = self
                    .get_json::<ModelRecord>(&StoreKey::new(key.clone())?)
                    .await?
            {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Changes model-level tags by compare-and-swap.
    pub async fn tag_model(
        &self,
        name: &str,
        set: &[(String, String)],
        remove: &[String],
        actor: &str,
    ) -> Result<ModelRecord> {
        validate_tags(set, remove)?;
        for _ in 0..MAX_ATTEMPTS {
            let (mut rec, etag) = self.model_with_etag(name).await?;
            apply_tags(&mut rec.tags, set, remove);
            match self
                .put_json(&layout::model(name), &rec, Precondition::IfMatch(etag))
                .await
            {
                Err(RegistryError::Store(e)) if e.is_conflict() => continue,
                r => r?,
            };
            self.append_audit(
                name,
                actor,
                "model.tagged",
                name,
                serde_json::json!({"set": set, "removed": remove}),
            )
            .await?;
            return Ok(rec);
        }
        Err(RegistryError::Contention {
            what: format!("tags of {name}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    // ---- versions ----

    /// Registers a version: artifact blob first, manifest blob, then the version record.
    pub async fn register(&self, req: Registration, progress: Progress) -> Result<Registered> {
        self.model(&req.model).await?;
        let manifest = match &req.manifest {
            None => None,
            Some((name, bytes)) => {
                let m: TrainingManifest =
                    serde_json::from_slice(bytes).map_err(|e| RegistryError::InvalidManifest {
                        source_name: name.clone(),
                        reason: e.to_string(),
                    })?;
                if !m.model.is_empty() && m.model != req.model {
                    return Err(RegistryError::InvalidManifest {
                        source_name: name.clone(),
                        reason: format!("it is for model {:?}, not {:?}", m.model, req.model),
                    });
                }
                Some(m)
            }
        };
        // Read the signature before writing anything: a broken file leaves no trace.
        let invalid = |reason: String| RegistryError::InvalidArtifact {
            source_name: req.artifact_name.clone(),
            reason,
        };
        let (summary, source) = match &req.artifact {
            Artifact::File(p) => {
                let f = std::fs::File::open(p).map_err(|e| invalid(format!("cannot open: {e}")))?;
                let s = falaj_core::onnx::summarize_reader(std::io::BufReader::new(f))
                    .map_err(|e| invalid(e.to_string()))?;
                (s, BlobSource::File(p.clone()))
            }
            Artifact::Bytes(b) => {
                let s = falaj_core::onnx::summarize(b).map_err(|e| invalid(e.to_string()))?;
                (
                    s,
                    BlobSource::Reader(Box::new(std::io::Cursor::new(b.clone()))),
                )
            }
        };
        let blob = self.store.put_blob(source, progress).await?;
        let manifest_digest = match &req.manifest {
            Some((_, bytes)) => {
                let b = self
                    .store
                    .put_blob(
                        BlobSource::Reader(Box::new(std::io::Cursor::new(bytes.clone()))),
                        crate::store::no_progress(),
                    )
                    .await?;
                Some(format!("sha256:{}", b.hex))
            }
            None => None,
        };
        let (lineage, metrics, semver) = match manifest {
            Some(m) => (m.lineage, m.metrics, req.semver.clone().or(m.semver)),
            None => (Lineage::default(), BTreeMap::new(), req.semver.clone()),
        };
        let mut record = ModelVersion {
            model: req.model.clone(),
            version: 0,
            semver: String::new(),
            digest: format!("sha256:{}", blob.hex),
            size: blob.size,
            format: summary.format,
            signature: summary.signature,
            manifest_digest,
            lineage,
            metrics,
            author: req.author.clone(),
            author_principal: req.author_principal.clone(),
            created_at: now(),
            region: self.store.region().to_string(),
            source: req.source.clone(),
        };
        let mut n = self.latest_version(&req.model).await? + 1;
        for _ in 0..MAX_ATTEMPTS {
            record.version = n;
            record.semver = semver.clone().unwrap_or_else(|| format!("{n}.0.0"));
            match self
                .put_json(
                    &layout::version(&req.model, n),
                    &record,
                    Precondition::IfAbsent,
                )
                .await
            {
                Ok(_) => {
                    self.note_latest(&req.model, n);
                    self.append_audit(
                        &req.model,
                        &req.author,
                        "version.registered",
                        &format!("{}@{n}", req.model),
                        serde_json::json!({"digest": record.digest, "size": record.size, "semver": record.semver, "source": record.source}),
                    )
                    .await?;
                    return Ok(Registered {
                        version: record,
                        blob_created: blob.created,
                    });
                }
                Err(RegistryError::Store(e)) if e.is_conflict() => n += 1,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Contention {
            what: format!("a version number of {}", req.model),
            attempts: MAX_ATTEMPTS,
        })
    }

    fn note_latest(&self, model: &str, n: u64) {
        let mut l = self.latest.lock().expect("latest lock");
        let e = l.entry(model.to_string()).or_insert(0);
        *e = (*e).max(n);
    }

    /// Highest registered version number, 0 if none.
    pub async fn latest_version(&self, model: &str) -> Result<u64> {
        // Names from callers (an MLflow request, a URL) become store keys: check them first.
        falaj_core::validate_model_name(model)?;
        let hint = self.latest.lock().expect("latest lock").get(model).copied();
        let mut n = match hint {
            Some(n) => n,
            None => list_all(self.store.as_ref(), &layout::versions_prefix(model))
                .await?
                .iter()
                .filter_map(|k| layout::parse_version_key(model, k))
                .max()
                .unwrap_or(0),
        };
        // Others may have registered since the hint: walk forward to the first gap.
        while self
            .store
            .get(&layout::version(model, n + 1))
            .await?
            .is_some()
        {
            n += 1;
        }
        self.note_latest(model, n);
        Ok(n)
    }

    /// A version's training manifest (the one decoder of the manifest blob): `None` when the
    /// version was registered without one; `Corrupt` when its blob is missing or unreadable.
    pub async fn training_manifest(&self, v: &ModelVersion) -> Result<Option<TrainingManifest>> {
        let Some(digest) = v.manifest_digest.as_deref() else {
            return Ok(None);
        };
        let key = layout::blob(digest.strip_prefix("sha256:").unwrap_or(digest));
        let o = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| RegistryError::Corrupt {
                key: key.to_string(),
                reason: "the manifest blob is missing".into(),
            })?;
        serde_json::from_slice(&o.bytes)
            .map(Some)
            .map_err(|e| RegistryError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            })
    }

    /// Reads version `n`.
    pub async fn version(&self, model: &str, n: u64) -> Result<ModelVersion> {
        // Names from callers (an MLflow request, a URL) become store keys: check them first.
        falaj_core::validate_model_name(model)?;
        match self.get_json(&layout::version(model, n)).await? {
            Some((v, _)) => Ok(v),
            None => {
                self.model(model).await?;
                Err(RegistryError::VersionNotFound {
                    model: model.into(),
                    version: n,
                })
            }
        }
    }

    /// Resolves `model@n`, `model@alias` or `model` (latest).
    pub async fn resolve(&self, r: &ModelRef) -> Result<ModelVersion> {
        match &r.version {
            VersionRef::Number(n) => self.version(&r.model, *n).await,
            VersionRef::Alias(a) => match self.alias(&r.model, a).await? {
                Some((
                    AliasRecord {
                        version: Some(n), ..
                    },
                    _,
                )) => self.version(&r.model, n).await,
                _ => {
                    self.model(&r.model).await?;
                    Err(RegistryError::AliasNotFound {
                        model: r.model.clone(),
                        alias: a.clone(),
                    })
                }
            },
            VersionRef::Latest => {
                self.model(&r.model).await?;
                match self.latest_version(&r.model).await? {
                    0 => Err(RegistryError::NoVersions {
                        model: r.model.clone(),
                    }),
                    n => self.version(&r.model, n).await,
                }
            }
        }
    }

    /// Versions of a model, oldest first, filtered.
    pub async fn versions(&self, model: &str, filter: &VersionFilter) -> Result<Vec<ModelVersion>> {
        self.model(model).await?;
        let mut numbers: Vec<u64> = list_all(self.store.as_ref(), &layout::versions_prefix(model))
            .await?
            .iter()
            .filter_map(|k| layout::parse_version_key(model, k))
            .collect();
        numbers.sort_unstable();
        let mut out = Vec::new();
        for n in numbers {
            let v = self.version(model, n).await?;
            if filter.author.as_ref().is_some_and(|a| *a != v.author) {
                continue;
            }
            if !filter.tags.is_empty() {
                let tags = self.version_tags(model, n).await?;
                if !filter.tags.iter().all(|(k, val)| tags.get(k) == Some(val)) {
                    continue;
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Tags of version `n`.
    pub async fn version_tags(&self, model: &str, n: u64) -> Result<BTreeMap<String, String>> {
        // Names from callers (an MLflow request, a URL) become store keys: check them first.
        falaj_core::validate_model_name(model)?;
        Ok(self
            .get_json(&layout::version_tags(model, n))
            .await?
            .map(|(t, _)| t)
            .unwrap_or_default())
    }

    /// Changes the tags of version `n` by compare-and-swap (the version record stays immutable).
    pub async fn tag_version(
        &self,
        model: &str,
        n: u64,
        set: &[(String, String)],
        remove: &[String],
        actor: &str,
    ) -> Result<BTreeMap<String, String>> {
        validate_tags(set, remove)?;
        self.version(model, n).await?;
        let key = layout::version_tags(model, n);
        for _ in 0..MAX_ATTEMPTS {
            let (mut tags, pre) = match self.get_json::<BTreeMap<String, String>>(&key).await? {
                Some((t, e)) => (t, Precondition::IfMatch(e)),
                None => (BTreeMap::new(), Precondition::IfAbsent),
            };
            apply_tags(&mut tags, set, remove);
            match self.put_json(&key, &tags, pre).await {
                Err(RegistryError::Store(e)) if e.is_conflict() => continue,
                r => r?,
            };
            self.append_audit(
                model,
                actor,
                "version.tagged",
                &format!("{model}@{n}"),
                serde_json::json!({"set": set, "removed": remove}),
            )
            .await?;
            return Ok(tags);
        }
        Err(RegistryError::Contention {
            what: format!("tags of {model}@{n}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    // ---- aliases ----

    /// Reads an alias with its ETag (a removed alias reads with `version: None`).
    pub async fn alias(&self, model: &str, alias: &str) -> Result<Option<(AliasRecord, ETag)>> {
        falaj_core::validate_alias(alias)?;
        self.get_json(&layout::alias(model, alias)).await
    }

    /// Every set alias of a model.
    pub async fn aliases(&self, model: &str) -> Result<Vec<AliasRecord>> {
        self.model(model).await?;
        let mut out = Vec::new();
        for key in list_all(self.store.as_ref(), &layout::aliases_prefix(model)).await? {
            if let Some((a, _)) = self.get_json::<AliasRecord>(&StoreKey::new(key)?).await?
                && a.version.is_some()
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Moves `alias` to `to` (`None` removes it) by compare-and-swap.
    ///
    /// With [`Expect::Any`] a lost race is retried; otherwise it is reported as
    /// [`RegistryError::AliasConflict`] with the alias's current value. `staging`,
    /// `production` and `challenger` are refused ([`RegistryError::ManagedAlias`]): only
    /// promotion, rollout and rollback move them, after the gatekeeper.
    pub async fn move_alias(
        &self,
        model: &str,
        alias: &str,
        to: Option<u64>,
        expect: Expect,
        actor: &str,
    ) -> Result<AliasRecord> {
        if let Some(instead) = falaj_core::promotion::managed_alias(alias) {
            return Err(RegistryError::ManagedAlias {
                alias: alias.into(),
                instead: instead.into(),
            });
        }
        self.move_managed_alias(model, alias, to, expect, actor)
            .await
    }

    /// [`Registry::move_alias`] for every alias, the managed ones included: for promotion,
    /// rollout and rollback, which have been through the gatekeeper.
    pub(crate) async fn move_managed_alias(
        &self,
        model: &str,
        alias: &str,
        to: Option<u64>,
        expect: Expect,
        actor: &str,
    ) -> Result<AliasRecord> {
        falaj_core::validate_alias(alias)?;
        self.model(model).await?;
        if let Some(n) = to {
            self.version(model, n).await?;
        }
        let key = layout::alias(model, alias);
        for _ in 0..MAX_ATTEMPTS {
            let current = self.get_json::<AliasRecord>(&key).await?;
            let (cur_version, generation, pre) = match &current {
                Some((a, etag)) => (a.version, a.generation, Precondition::IfMatch(etag.clone())),
                None => (None, 0, Precondition::IfAbsent),
            };
            let holds = match expect {
                Expect::Any => true,
                Expect::Absent => cur_version.is_none(),
                Expect::Version(v) => cur_version == Some(v),
            };
            if !holds {
                return Err(RegistryError::AliasConflict {
                    model: model.into(),
                    alias: alias.into(),
                    expected: expect.to_string(),
                    current: cur_version,
                    generation,
                });
            }
            if to.is_none() && cur_version.is_none() {
                return Err(RegistryError::AliasNotFound {
                    model: model.into(),
                    alias: alias.into(),
                });
            }
            let action = if to.is_some() {
                "alias.moved"
            } else {
                "alias.removed"
            };
            let moved_at = now();
            let rec = |seq: u64| AliasRecord {
                model: model.into(),
                alias: alias.into(),
                version: to,
                previous: cur_version,
                generation: generation + 1,
                moved_by: actor.into(),
                moved_at: moved_at.clone(),
                event_seq: Some(seq),
            };
            match self
                .commit_state(
                    model,
                    actor,
                    action,
                    &format!("{model}@{alias}"),
                    serde_json::json!({"from": cur_version, "to": to, "generation": generation + 1}),
                    &key,
                    pre,
                    rec,
                )
                .await
            {
                Ok((rec, _)) => return Ok(rec),
                Err(RegistryError::Store(e)) if e.is_conflict() && expect == Expect::Any => {
                    continue;
                }
                Err(RegistryError::Store(e)) if e.is_conflict() => {
                    let now = self.get_json::<AliasRecord>(&key).await?.map(|(a, _)| a);
                    return Err(RegistryError::AliasConflict {
                        model: model.into(),
                        alias: alias.into(),
                        expected: expect.to_string(),
                        current: now.as_ref().and_then(|a| a.version),
                        generation: now.map_or(0, |a| a.generation),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Contention {
            what: format!("alias {model}@{alias}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    // ---- audit ----

    async fn audit_head(&self, model: &str) -> Result<(u64, String)> {
        if let Some(h) = self
            .audit_heads
            .lock()
            .expect("audit lock")
            .get(model)
            .cloned()
        {
            return Ok(h);
        }
        // The head object is a hint too (it may lag after a crash): claims walk forward.
        if let Some((h, _)) = self
            .get_json::<AuditHead>(&layout::audit_head(model))
            .await?
        {
            return Ok((h.seq, h.hash));
        }
        let keys = list_all(self.store.as_ref(), &layout::audit_prefix(model)).await?;
        let last = keys
            .iter()
            .filter_map(|k| layout::parse_audit_key(model, k))
            .max();
        match last {
            None => Ok((0, GENESIS.to_string())),
            Some(seq) => {
                let key = layout::audit_event(model, seq);
                let (e, _) = self.get_json::<AuditEvent>(&key).await?.ok_or_else(|| {
                    RegistryError::Corrupt {
                        key: key.to_string(),
                        reason: "listed but not readable".into(),
                    }
                })?;
                Ok((seq, e.hash))
            }
        }
    }

    /// Moves `audit/<model>/head.json` forward to `(seq, hash)` unless it is already past it.
    async fn advance_head(&self, model: &str, seq: u64, hash: &str) -> Result<()> {
        let key = layout::audit_head(model);
        for _ in 0..MAX_ATTEMPTS {
            let pre = match self.get_json::<AuditHead>(&key).await? {
                Some((h, _)) if h.seq >= seq => return Ok(()),
                Some((_, etag)) => Precondition::IfMatch(etag),
                None => Precondition::IfAbsent,
            };
            let head = AuditHead {
                seq,
                hash: hash.into(),
            };
            match self.put_json(&key, &head, pre).await {
                Ok(_) => return Ok(()),
                Err(RegistryError::Store(e)) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Contention {
            what: key.to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Appends an event to a model's audit chain.
    pub async fn append_audit(
        &self,
        model: &str,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Result<AuditEvent> {
        self.append_with(model, actor, action, subject, |_| details.clone())
            .await
    }

    /// Appends an event whose details depend on the seq it gets (an intent names its seq in
    /// the state it will write).
    async fn append_with(
        &self,
        model: &str,
        actor: &str,
        action: &str,
        subject: &str,
        details: impl Fn(u64) -> serde_json::Value,
    ) -> Result<AuditEvent> {
        let (mut seq, mut hash) = self.audit_head(model).await?;
        for _ in 0..MAX_ATTEMPTS {
            let event = AuditEvent::new(
                seq + 1,
                model,
                &hash,
                &now(),
                actor,
                action,
                subject,
                details(seq + 1),
            );
            let key = layout::audit_event(model, seq + 1);
            match self.put_json(&key, &event, Precondition::IfAbsent).await {
                Ok(_) => {
                    self.audit_heads
                        .lock()
                        .expect("audit lock")
                        .insert(model.into(), (event.seq, event.hash.clone()));
                    self.advance_head(model, event.seq, &event.hash).await?;
                    return Ok(event);
                }
                Err(RegistryError::Store(e)) if e.is_conflict() => {
                    let (other, _) = self.get_json::<AuditEvent>(&key).await?.ok_or_else(|| {
                        RegistryError::Corrupt {
                            key: key.to_string(),
                            reason: "conflicting event vanished".into(),
                        }
                    })?;
                    seq += 1;
                    hash = other.hash;
                }
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Contention {
            what: format!("the audit log of {model}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Writes a state object together with the audit event that explains it, crash-safely:
    /// the event goes first, carrying the whole object as an intent (key, the ETag it was made
    /// against, content with `event_seq`); then the object is written under `pre`.
    ///
    /// A crash between the two leaves an intent that [`Registry::settle`] rolls forward (the
    /// next `audit --verify`, repair or promotion). A lost race withdraws the intent with a
    /// [`falaj_core::audit::ABORTED`] event and returns the store's conflict, unless someone
    /// already rolled this very intent forward (then it is a success).
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_state<T: Serialize + DeserializeOwned>(
        &self,
        model: &str,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
        key: &StoreKey,
        pre: Precondition,
        make: impl Fn(u64) -> T,
    ) -> Result<(T, AuditEvent)> {
        let expect = match &pre {
            Precondition::IfMatch(e) => Some(e.0.clone()),
            Precondition::IfAbsent => None,
            Precondition::None => {
                return Err(RegistryError::Corrupt {
                    key: key.to_string(),
                    reason: "a state write must be conditional (internal error)".into(),
                });
            }
        };
        // The object is made once per claimed seq and written exactly as the intent records
        // it, so a `make` that reads the clock cannot make the two differ.
        let made: Mutex<Option<serde_json::Value>> = Mutex::default();
        let event = self
            .append_with(model, actor, action, subject, |seq| {
                let mut d = match details.clone() {
                    serde_json::Value::Object(m) => m,
                    other => {
                        let mut m = serde_json::Map::new();
                        m.insert("details".into(), other);
                        m
                    }
                };
                let value = serde_json::to_value(make(seq)).expect("records serialise");
                *made.lock().expect("made lock") = Some(value.clone());
                let intent = Intent {
                    key: key.to_string(),
                    expect: expect.clone(),
                    value,
                };
                d.insert(
                    "state".into(),
                    serde_json::to_value(intent).expect("intents serialise"),
                );
                serde_json::Value::Object(d)
            })
            .await?;
        failpoint("after-intent");
        let value = made
            .lock()
            .expect("made lock")
            .take()
            .expect("the event was made");
        let typed =
            serde_json::from_value::<T>(value.clone()).map_err(|e| RegistryError::Corrupt {
                key: key.to_string(),
                reason: format!("the state does not read back: {e}"),
            })?;
        match self.put_json(key, &value, pre).await {
            Ok(_) => Ok((typed, event)),
            Err(RegistryError::Store(e)) if e.is_conflict() => {
                let now = self.store.get(key).await?;
                let rolled = now
                    .as_ref()
                    .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.bytes).ok())
                    .and_then(|v| falaj_core::audit::event_seq_of(&v))
                    == Some(event.seq);
                if rolled {
                    return Ok((typed, event));
                }
                self.append_audit(
                    model,
                    actor,
                    falaj_core::audit::ABORTED,
                    subject,
                    serde_json::json!({"intent": event.seq, "key": key.to_string(), "reason": "the object changed first (lost compare-and-swap)"}),
                )
                .await?;
                Err(RegistryError::Store(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Rolls forward every intent whose state write never happened (a writer that crashed
    /// between its event and its state), returning the keys written. Safe to run at any time
    /// and from many processes: each roll-forward is a compare-and-swap against exactly the
    /// object the intent was made against.
    pub async fn settle(&self, model: &str) -> Result<Vec<String>> {
        let events = self.audit_events(model).await?;
        self.settle_events(&events).await
    }

    /// [`Registry::settle`] over a chain the caller has already read.
    pub(crate) async fn settle_events(
        &self,
        events: &[(String, u64, AuditEvent)],
    ) -> Result<Vec<String>> {
        let keys: std::collections::BTreeSet<String> = events
            .iter()
            .filter_map(|(_, _, e)| falaj_core::audit::intent_of(e).map(|i| i.key))
            .collect();
        let mut written = Vec::new();
        for k in keys {
            let key = StoreKey::new(k.clone())?;
            for _ in 0..64 {
                let cur = self.store.get(&key).await?;
                let seq = cur
                    .as_ref()
                    .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.bytes).ok())
                    .and_then(|v| falaj_core::audit::event_seq_of(&v));
                let current = cur.as_ref().map(|o| (seq, o.etag.0.as_str()));
                let Some((_, intent)) =
                    falaj_core::audit::roll_forward_candidate(events, &k, current)
                else {
                    break;
                };
                let pre = match intent.expect {
                    Some(e) => Precondition::IfMatch(ETag(e)),
                    None => Precondition::IfAbsent,
                };
                match self.put_json(&key, &intent.value, pre).await {
                    Ok(_) => written.push(k.clone()),
                    Err(RegistryError::Store(e)) if e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(written)
    }

    /// A model's audit events in order, as `(key, seq from key, event)`.
    pub async fn audit_events(&self, model: &str) -> Result<Vec<(String, u64, AuditEvent)>> {
        audit_chain_name(model)?;
        let mut out = Vec::new();
        for key in list_all(self.store.as_ref(), &layout::audit_prefix(model)).await? {
            let Some(seq) = layout::parse_audit_key(model, &key) else {
                continue;
            };
            if let Some((e, _)) = self
                .get_json::<AuditEvent>(&StoreKey::new(key.clone())?)
                .await?
            {
                out.push((key, seq, e));
            }
        }
        Ok(out)
    }

    /// The state objects of a model that must be explained by the chain: aliases, approvals,
    /// archive markers and deployments, plus every key an intent names.
    async fn state_keys(
        &self,
        model: &str,
        events: &[(String, u64, AuditEvent)],
    ) -> Result<std::collections::BTreeSet<String>> {
        let mut keys: std::collections::BTreeSet<String> = events
            .iter()
            .filter_map(|(_, _, e)| falaj_core::audit::intent_of(e).map(|i| i.key))
            .collect();
        for prefix in [
            layout::aliases_prefix(model),
            layout::approvals_of_model(model),
        ] {
            keys.extend(list_all(self.store.as_ref(), &prefix).await?);
        }
        for k in list_all(self.store.as_ref(), &layout::versions_prefix(model)).await? {
            if k.ends_with("/archived.json") {
                keys.insert(k);
            }
        }
        for env in ["prod", "staging"] {
            let k = layout::deployment(env, model);
            if self.store.get(&k).await?.is_some() {
                keys.insert(k.to_string());
            }
        }
        Ok(keys)
    }

    /// Verifies a model's audit chain and the state it explains, reading only: reports an
    /// edited, missing, reordered or truncated event; any alias, approval, archive marker or
    /// deployment that no event explains, or that an event wrote and is gone; and an intent a
    /// crashed writer left pending (which [`Registry::verify_audit_settled`] completes). An
    /// unreadable event is reported as edited.
    pub async fn verify_audit(&self, model: &str) -> Result<Vec<AuditProblem>> {
        self.verify_inner(model, false).await.map(|(p, _)| p)
    }

    /// [`Registry::verify_audit`] after rolling forward every pending intent (see
    /// [`Registry::settle`]); also returns the keys rolled forward. Needs write access to
    /// the state objects.
    pub async fn verify_audit_settled(
        &self,
        model: &str,
    ) -> Result<(Vec<AuditProblem>, Vec<String>)> {
        self.verify_inner(model, true).await
    }

    async fn verify_inner(
        &self,
        model: &str,
        settle: bool,
    ) -> Result<(Vec<AuditProblem>, Vec<String>)> {
        audit_chain_name(model)?;
        let mut events = Vec::new();
        let mut problems = Vec::new();
        for key in list_all(self.store.as_ref(), &layout::audit_prefix(model)).await? {
            let Some(seq) = layout::parse_audit_key(model, &key) else {
                continue;
            };
            match self
                .get_json::<AuditEvent>(&StoreKey::new(key.clone())?)
                .await
            {
                Ok(Some((e, _))) => events.push((key, seq, e)),
                Ok(None) => {}
                Err(RegistryError::Corrupt { key, reason }) => {
                    problems.push(AuditProblem::Edited {
                        key,
                        stored: "unreadable".into(),
                        actual: reason,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        let mut found = falaj_core::verify_chain(&events);
        found.append(&mut problems);
        let head = match self.get_json::<AuditHead>(&layout::audit_head(model)).await {
            Ok(h) => h.map(|(h, _)| h),
            Err(RegistryError::Corrupt { key, reason }) => {
                found.push(AuditProblem::Edited {
                    key,
                    stored: "unreadable".into(),
                    actual: reason,
                });
                None
            }
            Err(e) => return Err(e),
        };
        found.extend(falaj_core::audit::verify_head(
            model,
            &events,
            head.as_ref(),
        ));
        // A broken chain is not a basis for rolling anything forward.
        let rolled = if settle && found.is_empty() {
            self.settle_events(&events).await?
        } else {
            Vec::new()
        };
        let mut states = Vec::new();
        for k in self.state_keys(model, &events).await? {
            let key = StoreKey::new(k.clone())?;
            let obj = self.store.get(&key).await?;
            let value: Option<serde_json::Value> = obj.as_ref().map(|o| {
                serde_json::from_slice(&o.bytes)
                    .unwrap_or_else(|e| serde_json::Value::String(format!("unreadable JSON: {e}")))
            });
            let current = obj.as_ref().map(|o| {
                (
                    value.as_ref().and_then(falaj_core::audit::event_seq_of),
                    o.etag.0.as_str(),
                )
            });
            if let Some((seq, _)) = falaj_core::audit::roll_forward_candidate(&events, &k, current)
            {
                found.push(AuditProblem::Pending { key: k, seq });
                continue;
            }
            states.push((k, value));
        }
        found.extend(falaj_core::audit::verify_states(&events, &states));
        Ok((found, rolled))
    }
}

/// Test hook: `FALAJ_FAILPOINT=<name>` aborts the process at that point, as a crash would
/// (used to prove that a crash between an intent and its state write is rolled forward).
fn failpoint(name: &str) {
    if std::env::var("FALAJ_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("falaj: failpoint {name}: aborting");
        std::process::abort();
    }
}

fn validate_tags(set: &[(String, String)], remove: &[String]) -> Result<()> {
    for (k, v) in set {
        falaj_core::validate_tag_key(k)?;
        falaj_core::validate_tag_value(v)?;
    }
    for k in remove {
        falaj_core::validate_tag_key(k)?;
    }
    Ok(())
}

fn apply_tags(tags: &mut BTreeMap<String, String>, set: &[(String, String)], remove: &[String]) {
    for k in remove {
        tags.remove(k);
    }
    for (k, v) in set {
        tags.insert(k.clone(), v.clone());
    }
}

/// A chain that can be read: a model's, or `_roles`, the store-wide one (role grants,
/// principal maps, OIDC key pins).
fn audit_chain_name(model: &str) -> Result<()> {
    if model != crate::access::ROLES_AUDIT {
        falaj_core::validate_model_name(model)?;
    }
    Ok(())
}
