//! The model registry in MLflow's terms, on falaj's registry.
//!
//! - A registered model is a falaj model; a model version is a falaj version. Creating one
//!   reads the model directory the source names (a logged model, a run's artifacts, or an
//!   `mlflow-artifacts:` path on this server), registers its ONNX file as an immutable,
//!   content-addressed version, as the caller, who needs a role that may register, and copies
//!   every file of the directory into `blobs/` (`mlflow/versions/<model>/<n>.json` keeps the
//!   digests). A directory with no usable ONNX model is answered `FAILED_REGISTRATION` with
//!   the reason, kept under `mlflow/rejected/`.
//! - `falaj.state`, `falaj.gates`, `falaj.approvals`, `falaj.digest` and `falaj.manifest`
//!   tags are computed from the store on every `get`; they cannot be set.
//! - Free aliases move by compare-and-swap. `staging`, `production` and `challenger` (a 10%
//!   canary) are promotions: they go through the promoter (the one gatekeeper, which holds
//!   the signing key) as the caller, and every refusal is `PERMISSION_DENIED` with falaj's
//!   reason. Nothing is deleted or renamed through this API.

use std::collections::BTreeMap;

use bytes::Bytes;
use falaj::RegistryError;
use falaj::calls::{ExpectAlias, PromoteRequest};
use falaj::promotion;
use falaj::registry::{Artifact, Expect, NewModel, Registration};
use falaj::store::{BlobSource, Precondition, no_progress};
use falaj_core::promotion::{Action, Stage, VersionState};
use falaj_core::{ModelVersion, layout};
use falaj_webhook::ApiError;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model_files::{self, Hints, RunFacts};
use crate::search::{self, Filter, Ident};
use crate::{Answer, Cx, MlError, Params, millis, ok, page, paged, read, tag_list, write};

/// The tags falaj computes; a client cannot set them.
pub const RESERVED_TAGS: &[&str] = &[
    "falaj.state",
    "falaj.gates",
    "falaj.approvals",
    "falaj.digest",
    "falaj.manifest",
];

/// How many versions a search reads at once.
const SEARCH_READS_IN_FLIGHT: usize = 32;

/// The canary weight `challenger` is set at through MLflow.
pub const CHALLENGER_WEIGHT: u8 = 10;

/// `mlflow/versions/<model>/<n>.json`: the MLflow side of a version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VersionSide {
    /// The source the client gave.
    #[serde(default)]
    pub source: String,
    /// The MLflow run.
    #[serde(default)]
    pub run_id: String,
    /// The logged model.
    #[serde(default)]
    pub model_id: String,
    /// Description (the only thing `update` changes).
    #[serde(default)]
    pub description: String,
    /// Each file of the model directory: relative path → `sha256:<hex>`.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Each file's size.
    #[serde(default)]
    pub sizes: BTreeMap<String, u64>,
    /// How the manifest came about (`falaj.manifest`).
    #[serde(default)]
    pub manifest: String,
}

/// `mlflow/rejected/<model>/<id>.json`: a create that found no usable model.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rejected {
    name: String,
    id: String,
    source: String,
    run_id: String,
    user_id: String,
    created_ms: i64,
    status_message: String,
}

impl Rejected {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "version": format!("rejected-{}", self.id),
            "creation_timestamp": self.created_ms,
            "last_updated_timestamp": self.created_ms,
            "user_id": self.user_id,
            "current_stage": "None",
            "source": self.source,
            "run_id": self.run_id,
            "status": "FAILED_REGISTRATION",
            "status_message": self.status_message,
            "tags": [],
            "aliases": [],
        })
    }
}

/// The MLflow side of `model@n`: its record, or (for a version pushed another way, or one
/// whose record a crash left unwritten) its ONNX file alone.
pub(crate) async fn version_side(
    cx: &Cx<'_>,
    model: &str,
    n: u64,
) -> Result<Option<VersionSide>, MlError> {
    if let Some((s, _)) = read::<VersionSide>(cx.reg, &layout::mlflow_version(model, n)?).await? {
        return Ok(Some(s));
    }
    match cx.reg.version(model, n).await {
        Ok(v) => Ok(Some(VersionSide {
            source: v.source.clone().unwrap_or_default(),
            files: [("model.onnx".to_string(), v.digest.clone())].into(),
            sizes: [("model.onnx".to_string(), v.size)].into(),
            ..VersionSide::default()
        })),
        Err(RegistryError::ModelNotFound { .. } | RegistryError::VersionNotFound { .. }) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

// ---- routes ----

pub(crate) async fn route(cx: &Cx<'_>, method: &str, rest: &str, p: &Params) -> Option<Answer> {
    Some(match (method, rest) {
        ("POST", "registered-models/create") => create_model(cx, p).await,
        ("GET", "registered-models/get") => match p.need("name") {
            Ok(n) => registered_model(cx, &n)
                .await
                .map(|m| ok(json!({"registered_model": m}))),
            Err(e) => Err(e),
        },
        ("GET" | "POST", "registered-models/search") => search_models(cx, p).await,
        ("PATCH", "registered-models/update") => update_model(cx, p).await,
        ("GET" | "POST", "registered-models/get-latest-versions") => latest_versions(cx, p).await,
        ("POST", "registered-models/set-tag") => model_tag(cx, p, true).await,
        ("DELETE", "registered-models/delete-tag") => model_tag(cx, p, false).await,
        ("POST", "registered-models/alias") => set_alias(cx, p).await,
        ("DELETE", "registered-models/alias") => delete_alias(cx, p).await,
        ("GET", "registered-models/alias") => alias_version(cx, p).await,
        ("DELETE", "registered-models/delete" | "model-versions/delete")
        | ("POST", "registered-models/rename") => Err(MlError::new(
            "PERMISSION_DENIED",
            "falaj never deletes or renames a model or version: versions are immutable and audited (archive with `falaj`, and retire a deployment with a rollback)",
        )),
        ("POST", "model-versions/transition-stage") => Err(MlError::new(
            "PERMISSION_DENIED",
            "stages are not used by falaj: set the alias `staging` or `production` instead, which promotes through the gates and approvals",
        )),
        ("POST", "model-versions/create") => create_version(cx, p).await,
        ("GET", "model-versions/get") => match (p.need("name"), p.need("version")) {
            (Ok(n), Ok(v)) => get_version(cx, &n, &v)
                .await
                .map(|v| ok(json!({"model_version": v}))),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        ("GET" | "POST", "model-versions/search") => search_versions(cx, p).await,
        ("POST", "model-versions/set-tag") => version_tag(cx, p, true).await,
        ("DELETE", "model-versions/delete-tag") => version_tag(cx, p, false).await,
        ("PATCH", "model-versions/update") => update_version(cx, p).await,
        ("GET", "model-versions/get-download-uri") => match (p.need("name"), p.need("version")) {
            (Ok(n), Ok(v)) => match number(&n, &v) {
                Ok(k) => cx.reg.version(&n, k).await.map_err(Into::into).map(|_| {
                    ok(json!({"artifact_uri": format!("mlflow-artifacts:/{}/{n}/{k}", crate::artifacts::REGISTRY_DIR)}))
                }),
                Err(e) => Err(e),
            },
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        _ => return None,
    })
}

fn number(model: &str, v: &str) -> Result<u64, MlError> {
    v.parse().map_err(|_| {
        MlError::missing(format!(
            "Model Version (name={model}, version={v}) not found"
        ))
    })
}

fn not_found(e: MlError, what: String) -> MlError {
    if e.code == "RESOURCE_DOES_NOT_EXIST" {
        MlError::missing(what)
    } else {
        e
    }
}

async fn authorize(cx: &Cx<'_>, model: &str, action: Action) -> Result<(), MlError> {
    falaj::access::authorize(cx.reg, model, &cx.caller, action, model)
        .await
        .map_err(|e| MlError::from_api(ApiError::from(e), true))
}

// ---- registered models ----

async fn create_model(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    falaj_core::validate_model_name(&name).map_err(|e| MlError::invalid(e.to_string()))?;
    let tags: BTreeMap<String, String> = p.key_values("tags")?.into_iter().collect();
    for (k, v) in &tags {
        falaj_core::validate_tag_key(k).map_err(|e| MlError::invalid(e.to_string()))?;
        falaj_core::validate_tag_value(v).map_err(|e| MlError::invalid(e.to_string()))?;
    }
    authorize(cx, &name, Action::Register).await?;
    match cx
        .reg
        .create_model(
            NewModel {
                name: name.clone(),
                description: p.str("description").unwrap_or_default(),
                owner: cx.caller.clone(),
                tags,
            },
            &cx.caller,
        )
        .await
    {
        Ok(_) => {}
        Err(RegistryError::ModelExists { .. }) => {
            return Err(MlError::new(
                "RESOURCE_ALREADY_EXISTS",
                format!("Registered Model (name={name}) already exists."),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ok(
        json!({"registered_model": registered_model(cx, &name).await?}),
    ))
}

async fn registered_model(cx: &Cx<'_>, name: &str) -> Result<Value, MlError> {
    let m = cx.reg.model(name).await.map_err(|e| {
        not_found(
            e.into(),
            format!("Registered Model with name={name} not found"),
        )
    })?;
    let records = cx.reg.aliases(name).await?;
    let aliases: Vec<Value> = records
        .iter()
        .filter_map(|a| {
            a.version
                .map(|v| json!({"alias": a.alias, "version": v.to_string()}))
        })
        .collect();
    let latest = cx.reg.latest_version(name).await?;
    let mut latest_versions = Vec::new();
    let mut updated = millis(&m.created_at);
    if latest > 0
        && let Ok(v) = cx.reg.version(name, latest).await
    {
        updated = updated.max(millis(&v.created_at));
        latest_versions.push(version_json_with(cx, &v, false, &records).await?);
    }
    Ok(json!({
        "name": m.name,
        "creation_timestamp": millis(&m.created_at),
        "last_updated_timestamp": updated,
        "description": m.description,
        "user_id": m.created_by,
        "tags": tag_list(&m.tags),
        "aliases": aliases,
        "latest_versions": latest_versions,
    }))
}

async fn search_models(cx: &Cx<'_>, p: &Params) -> Answer {
    let filter = Filter::parse(&p.str("filter").unwrap_or_default())?;
    let (offset, size) = page(p, 100, 1000)?;
    let mut names: Vec<String> = Vec::new();
    for m in cx.reg.models().await? {
        let keep = filter.matches(|i| match (i.kind.as_str(), i.key.as_str()) {
            ("attributes", "name") => Some(search::Value::Str(m.name.clone())),
            ("tags", k) => m.tags.get(k).map(|v| search::Value::Str(v.clone())),
            _ => None,
        });
        if keep {
            names.push(m.name);
        }
    }
    names.sort();
    let (items, next) = paged(names, offset, size);
    let mut models = Vec::new();
    for n in items {
        models.push(registered_model(cx, &n).await?);
    }
    let mut out = json!({"registered_models": models});
    if let Some(n) = next {
        out["next_page_token"] = json!(n);
    }
    Ok(ok(out))
}

async fn update_model(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    let description = p.str("description").unwrap_or_default();
    authorize(cx, &name, Action::Register).await?;
    for _ in 0..1000 {
        let (mut m, etag) = cx.reg.model_with_etag(&name).await.map_err(|e| {
            not_found(
                e.into(),
                format!("Registered Model with name={name} not found"),
            )
        })?;
        m.description = description.clone();
        if write(
            cx.reg,
            &layout::model(&name),
            &m,
            Precondition::IfMatch(etag),
        )
        .await?
        {
            cx.reg
                .append_audit(
                    &name,
                    &cx.caller,
                    "model.updated",
                    &name,
                    json!({"description": description}),
                )
                .await?;
            return Ok(ok(
                json!({"registered_model": registered_model(cx, &name).await?}),
            ));
        }
    }
    Err(MlError::new(
        "TEMPORARILY_UNAVAILABLE",
        "the model is being changed by many writers; try again",
    ))
}

async fn model_tag(cx: &Cx<'_>, p: &Params, set: bool) -> Answer {
    let name = p.need("name")?;
    let key = p.need("key")?;
    authorize(cx, &name, Action::Register).await?;
    let (s, r) = tag_change(p, key, set);
    cx.reg
        .tag_model(&name, &s, &r, &cx.caller)
        .await
        .map_err(|e| {
            not_found(
                e.into(),
                format!("Registered Model with name={name} not found"),
            )
        })?;
    Ok(ok(json!({})))
}

/// A set-tag (the key and the request's value) or a delete-tag, as the registry takes them.
fn tag_change(p: &Params, key: String, set: bool) -> (Vec<(String, String)>, Vec<String>) {
    if set {
        (vec![(key, p.str("value").unwrap_or_default())], Vec::new())
    } else {
        (Vec::new(), vec![key])
    }
}

async fn latest_versions(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    let stages = p.strings("stages");
    let latest = cx.reg.latest_version(&name).await.map_err(|e| {
        not_found(
            e.into(),
            format!("Registered Model with name={name} not found"),
        )
    })?;
    let mut out = Vec::new();
    if latest > 0 {
        let v = cx.reg.version(&name, latest).await?;
        let j = version_json(cx, &v, true).await?;
        if stages.is_empty()
            || stages
                .iter()
                .any(|s| s.eq_ignore_ascii_case(j["current_stage"].as_str().unwrap_or("None")))
        {
            out.push(j);
        }
    }
    Ok(ok(json!({"model_versions": out})))
}

// ---- aliases ----

fn managed(alias: &str) -> Option<(Stage, Option<u8>)> {
    match alias {
        "production" => Some((Stage::Production, None)),
        "staging" => Some((Stage::Staging, None)),
        "challenger" => Some((Stage::Production, Some(CHALLENGER_WEIGHT))),
        _ => None,
    }
}

async fn set_alias(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    let alias = p.need("alias")?;
    let v = p.need("version")?;
    let n = number(&name, &v)?;
    if let Some((to, canary)) = managed(&alias) {
        // A promotion: the promoter decides (roles, gates, approvals) and signs.
        let req = PromoteRequest::Promote {
            model: name.clone(),
            version: n,
            actor: cx.caller.clone(),
            to,
            canary,
            blue_green: false,
            runtime: falaj_core::deployment::Runtime::Sandbox,
            expect: ExpectAlias::Any,
        };
        return match cx.hook.promoter().apply(req).await {
            Ok(_) => Ok(ok(json!({}))),
            Err(e) => Err(MlError::from_api(ApiError::from(e), true)),
        };
    }
    authorize(cx, &name, Action::Register).await?;
    cx.reg
        .move_alias(&name, &alias, Some(n), Expect::Any, &cx.caller)
        .await?;
    Ok(ok(json!({})))
}

async fn delete_alias(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    let alias = p.need("alias")?;
    if managed(&alias).is_some() {
        return Err(MlError::new(
            "PERMISSION_DENIED",
            format!(
                "{alias} is moved only by promotion, rollout and rollback: use `falaj rollback {name} --env prod` (or POST /v1/models/{name}/deployments/prod/rollback)"
            ),
        ));
    }
    authorize(cx, &name, Action::Register).await?;
    cx.reg
        .move_alias(&name, &alias, None, Expect::Any, &cx.caller)
        .await?;
    Ok(ok(json!({})))
}

async fn alias_version(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    let alias = p.need("alias")?;
    cx.reg.model(&name).await.map_err(|e| {
        not_found(
            e.into(),
            format!("Registered Model with name={name} not found"),
        )
    })?;
    let n = match cx.reg.alias(&name, &alias).await {
        Ok(Some((a, _))) => a.version,
        Ok(None) => None,
        Err(RegistryError::Name(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(n) = n else {
        return Err(MlError::invalid(format!(
            "Registered model alias {alias} not found."
        )));
    };
    let v = cx.reg.version(&name, n).await?;
    Ok(ok(
        json!({"model_version": version_json(cx, &v, true).await?}),
    ))
}

// ---- versions ----

async fn get_version(cx: &Cx<'_>, name: &str, v: &str) -> Result<Value, MlError> {
    if let Some(id) = v.strip_prefix("rejected-") {
        let valid = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
        if valid
            && let Some((r, _)) =
                read::<Rejected>(cx.reg, &layout::mlflow_rejected(name, id)?).await?
        {
            return Ok(r.json());
        }
    }
    let n = number(name, v)?;
    let ver = cx.reg.version(name, n).await.map_err(|e| {
        not_found(
            e.into(),
            format!("Model Version (name={name}, version={v}) not found"),
        )
    })?;
    version_json(cx, &ver, true).await
}

/// A version as MLflow's `ModelVersion`; `full` adds the state, stage and `falaj.*` tags
/// (a few more reads), which `search` leaves out.
async fn version_json(cx: &Cx<'_>, v: &ModelVersion, full: bool) -> Result<Value, MlError> {
    let aliases = cx.reg.aliases(&v.model).await?;
    version_json_with(cx, v, full, &aliases).await
}

/// [`version_json`] with the model's aliases already read (a search reads them once).
async fn version_json_with(
    cx: &Cx<'_>,
    v: &ModelVersion,
    full: bool,
    aliases: &[falaj_core::AliasRecord],
) -> Result<Value, MlError> {
    let side_key = layout::mlflow_version(&v.model, v.version)?;
    let (side, tags) = futures::try_join!(
        async { read::<VersionSide>(cx.reg, &side_key).await },
        async { Ok(cx.reg.version_tags(&v.model, v.version).await?) },
    )?;
    let side = side.map(|(s, _)| s).unwrap_or_default();
    let mut tags = tags;
    let aliases: Vec<&str> = aliases
        .iter()
        .filter(|a| a.version == Some(v.version))
        .map(|a| a.alias.as_str())
        .collect();
    let mut stage = "None";
    if full {
        tags.insert("falaj.digest".into(), v.digest.clone());
        let state = promotion::version_state(cx.reg, &v.model, v.version).await?;
        stage = match state {
            VersionState::Production => "Production",
            VersionState::Staging => "Staging",
            VersionState::Archived => "Archived",
            _ => "None",
        };
        tags.insert("falaj.state".into(), state.to_string());
        let gates = match falaj::reports::latest_report(cx.reg, &v.model, v.version).await? {
            None => format!(
                "not run: falaj validate {}@{} --data <holdout>",
                v.model, v.version
            ),
            Some(r) if r.passed => format!("passed (run {})", r.run),
            Some(r) => match &r.error {
                Some(e) => format!("error (run {}): {e}", r.run),
                None => format!(
                    "failed (run {}): {}",
                    r.run,
                    r.failures()
                        .iter()
                        .map(|g| g.gate.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        };
        tags.insert("falaj.gates".into(), gates);
        let approvals = promotion::approvals(cx.reg, &v.model, v.version).await?;
        tags.insert(
            "falaj.approvals".into(),
            approvals
                .iter()
                .map(|a| format!("{} ({})", a.by, a.stage))
                .collect::<Vec<_>>()
                .join(", "),
        );
        if !side.manifest.is_empty() {
            tags.insert("falaj.manifest".into(), side.manifest.clone());
        }
    }
    let created = millis(&v.created_at);
    let mut out = json!({
        "name": v.model,
        "version": v.version.to_string(),
        "creation_timestamp": created,
        "last_updated_timestamp": created,
        "user_id": v.author,
        "current_stage": stage,
        "description": side.description,
        "source": if side.source.is_empty() { v.source.clone().unwrap_or_default() } else { side.source.clone() },
        "run_id": side.run_id,
        "status": "READY",
        "tags": tag_list(&tags),
        "aliases": aliases,
    });
    if !side.model_id.is_empty() {
        out["model_id"] = json!(side.model_id);
    }
    Ok(out)
}

/// Version records are written once and never change (`models/<m>/versions/<n>.json`,
/// create-only), so a process keeps those it has read: a search then reads only what can
/// change (tags, the MLflow side). Bounded; emptied when full.
async fn cached_version(cx: &Cx<'_>, model: &str, n: u64) -> Result<ModelVersion, MlError> {
    type Cache = std::sync::Mutex<std::collections::HashMap<(String, String, u64), ModelVersion>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    const MAX: usize = 100_000;
    let cache = CACHE.get_or_init(Default::default);
    let key = (cx.reg.store().uri().to_string(), model.to_string(), n);
    if let Some(v) = cache.lock().expect("version cache").get(&key) {
        return Ok(v.clone());
    }
    let v = cx.reg.version(model, n).await?;
    let mut c = cache.lock().expect("version cache");
    if c.len() >= MAX {
        c.clear();
    }
    c.insert(key, v.clone());
    Ok(v)
}

fn version_attr(v: &Value, id: &Ident) -> Option<search::Value> {
    use search::Value::{Num, Str};
    match (id.kind.as_str(), id.key.as_str()) {
        ("attributes", "name") => v["name"].as_str().map(|s| Str(s.into())),
        ("attributes", "version_number" | "version") => {
            v["version"].as_str().and_then(|s| s.parse().ok()).map(Num)
        }
        ("attributes", "run_id") => v["run_id"].as_str().map(|s| Str(s.into())),
        ("attributes", "source_path" | "source") => v["source"].as_str().map(|s| Str(s.into())),
        ("attributes", "user_id") => v["user_id"].as_str().map(|s| Str(s.into())),
        ("attributes", "creation_timestamp") => v["creation_timestamp"].as_f64().map(Num),
        ("tags", k) => v["tags"]
            .as_array()?
            .iter()
            .find(|t| t["key"] == k)
            .and_then(|t| t["value"].as_str())
            .map(|s| Str(s.into())),
        _ => None,
    }
}

async fn search_versions(cx: &Cx<'_>, p: &Params) -> Answer {
    let filter = Filter::parse(&p.str("filter").unwrap_or_default())?;
    let (offset, size) = page(p, 10_000, 200_000)?;
    // A filter that names one model reads only that model's versions.
    let named: Option<String> =
        filter
            .clauses
            .iter()
            .find_map(|c| match (&c.ident, c.op.as_str(), &c.value) {
                (i, "=", search::Value::Str(n)) if i.kind == "attributes" && i.key == "name" => {
                    Some(n.clone())
                }
                _ => None,
            });
    let models: Vec<String> = match named {
        Some(n) => match cx.reg.model(&n).await {
            Ok(_) => vec![n],
            Err(RegistryError::ModelNotFound { .. } | RegistryError::Name(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
        None => cx.reg.models().await?.into_iter().map(|m| m.name).collect(),
    };
    let mut found = Vec::new();
    for m in models {
        let aliases = cx.reg.aliases(&m).await?;
        let mut numbers: Vec<u64> = crate::list(cx.reg, &layout::versions_prefix(&m))
            .await?
            .iter()
            .filter_map(|k| layout::parse_version_key(&m, k))
            .collect();
        numbers.sort_unstable();
        // Each version is three small reads: many at once, which is what an object store
        // (and the blocking pool behind a directory) serves well.
        let rows: Vec<Value> = stream::iter(numbers)
            .map(|n| {
                let (m, aliases) = (&m, &aliases);
                async move {
                    let v = cached_version(cx, m, n).await?;
                    version_json_with(cx, &v, false, aliases).await
                }
            })
            .buffered(SEARCH_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        found.extend(
            rows.into_iter()
                .filter(|j| filter.matches(|i| version_attr(j, i))),
        );
    }
    let (items, next) = paged(found, offset, size);
    let mut out = json!({"model_versions": items});
    if let Some(n) = next {
        out["next_page_token"] = json!(n);
    }
    Ok(ok(out))
}

async fn version_tag(cx: &Cx<'_>, p: &Params, set: bool) -> Answer {
    let name = p.need("name")?;
    let v = p.need("version")?;
    let key = p.need("key")?;
    if RESERVED_TAGS.contains(&key.as_str()) {
        return Err(MlError::new(
            "PERMISSION_DENIED",
            format!("{key} is computed by falaj from the store and cannot be set"),
        ));
    }
    let n = number(&name, &v)?;
    authorize(cx, &name, Action::Register).await?;
    let (s, r) = tag_change(p, key, set);
    cx.reg
        .tag_version(&name, n, &s, &r, &cx.caller)
        .await
        .map_err(|e| {
            not_found(
                e.into(),
                format!("Model Version (name={name}, version={v}) not found"),
            )
        })?;
    Ok(ok(json!({})))
}

async fn update_version(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    let v = p.need("version")?;
    let n = number(&name, &v)?;
    let description = p.str("description").unwrap_or_default();
    authorize(cx, &name, Action::Register).await?;
    let ver = cx.reg.version(&name, n).await?;
    let key = layout::mlflow_version(&name, n)?;
    for _ in 0..1000 {
        let (mut side, pre) = match read::<VersionSide>(cx.reg, &key).await? {
            Some((s, e)) => (s, Precondition::IfMatch(e)),
            None => (
                version_side(cx, &name, n).await?.unwrap_or_default(),
                Precondition::IfAbsent,
            ),
        };
        side.description = description.clone();
        if write(cx.reg, &key, &side, pre).await? {
            return Ok(ok(
                json!({"model_version": version_json(cx, &ver, true).await?}),
            ));
        }
    }
    Err(MlError::new(
        "TEMPORARILY_UNAVAILABLE",
        "the version is being changed by many writers; try again",
    ))
}

/// What a model-version source names: its artifact directory, and the run and logged model
/// it comes from (those read on the way, so they are not read again).
struct Source {
    dir: String,
    run_id: String,
    run: Option<crate::tracking::Run>,
    logged: Option<crate::tracking::LoggedModel>,
}

async fn resolve_source(cx: &Cx<'_>, source: &str) -> Result<Source, MlError> {
    let strip = |uri: &str| -> Option<String> {
        uri.strip_prefix("mlflow-artifacts:")
            .map(|p| p.trim_start_matches('/').to_string())
            .or_else(|| {
                uri.split_once("/api/2.0/mlflow-artifacts/artifacts/")
                    .filter(|(h, _)| h.starts_with("http://") || h.starts_with("https://"))
                    .map(|(_, p)| p.to_string())
            })
    };
    if let Some(rest) = source.strip_prefix("models:/m-") {
        let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let id = format!("m-{id}");
        let m = crate::tracking::logged_model(cx, &id).await?;
        let dir = strip(&m.artifact_uri).unwrap_or_default();
        let dir = if sub.is_empty() {
            dir
        } else {
            format!("{dir}/{sub}")
        };
        return Ok(Source {
            dir,
            run_id: m.source_run_id.clone(),
            run: None,
            logged: Some(m),
        });
    }
    if let Some(rest) = source.strip_prefix("runs:/") {
        let (run, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let r = crate::tracking::get_run(cx, run).await?;
        let dir = strip(&r.info.artifact_uri).unwrap_or_default();
        let dir = if sub.is_empty() {
            dir
        } else {
            format!("{dir}/{}", sub.trim_matches('/'))
        };
        return Ok(Source {
            dir,
            run_id: run.to_string(),
            run: Some(r),
            logged: None,
        });
    }
    if let Some(dir) = strip(source) {
        return Ok(Source {
            dir: dir.trim_end_matches('/').to_string(),
            run_id: String::new(),
            run: None,
            logged: None,
        });
    }
    Err(MlError::invalid(format!(
        "falaj registers models from its own artifact store: the source must be models:/m-<id>, runs:/<run>/<path> or mlflow-artifacts:/<path> (log the model to this server with mlflow.onnx.log_model), not {source:?}"
    )))
}

async fn create_version(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    let source = p.need("source")?;
    authorize(cx, &name, Action::Register).await?;
    cx.reg.model(&name).await.map_err(|e| {
        not_found(
            e.into(),
            format!("Registered Model with name={name} not found"),
        )
    })?;
    let Source {
        dir,
        mut run_id,
        run,
        logged,
    } = resolve_source(cx, &source).await?;
    let mut model_id = logged
        .as_ref()
        .map(|m| m.model_id.clone())
        .unwrap_or_default();
    if let Some(r) = p.str("run_id") {
        if !run_id.is_empty() && r != run_id {
            return Err(MlError::invalid(format!(
                "run_id {r} does not match the source's run {run_id}"
            )));
        }
        run_id = r;
    }
    if let Some(m) = p.str("model_id") {
        if !model_id.is_empty() && m != model_id {
            return Err(MlError::invalid(format!(
                "model_id {m} does not match the source's logged model {model_id}"
            )));
        }
        model_id = m;
    }
    let tags: Vec<(String, String)> = p.key_values("tags")?;
    for (k, v) in &tags {
        if RESERVED_TAGS.contains(&k.as_str()) {
            return Err(MlError::new(
                "PERMISSION_DENIED",
                format!("{k} is computed by falaj from the store and cannot be set"),
            ));
        }
        falaj_core::validate_tag_key(k).map_err(|e| MlError::invalid(e.to_string()))?;
        falaj_core::validate_tag_value(v).map_err(|e| MlError::invalid(e.to_string()))?;
    }
    let files = crate::artifacts::read_dir(cx, &dir).await?;
    if files.is_empty() {
        return Err(MlError::invalid(format!(
            "nothing was uploaded under {source} ({dir}); log the model's files before registering it"
        )));
    }
    // The hints for the manifest: the create's tags, the logged model's, the run's.
    let mut hints = Hints::default();
    hints.add(&tags.iter().cloned().collect());
    let mut facts = RunFacts {
        run_id: run_id.clone(),
        ..RunFacts::default()
    };
    let logged = match logged {
        None if !model_id.is_empty() => crate::tracking::logged_model(cx, &model_id).await.ok(),
        known => known,
    };
    if let Some(m) = &logged {
        hints.add(&m.tags);
        hints.add(&m.params);
    }
    let run = match run {
        None if !run_id.is_empty() => Some(crate::tracking::get_run(cx, &run_id).await?),
        known => known,
    };
    if let Some(r) = &run {
        hints.add(&r.tags);
        hints.add(&r.params);
        facts.metrics = r.metric_values();
        facts.code_commit = r.tags.get("mlflow.source.git.commit").cloned();
        facts.datasets = r.dataset_inputs.clone();
        facts.params = r.params.clone();
    }
    let rejected = |why: String| Rejected {
        name: name.clone(),
        id: crate::random_hex(8),
        source: source.clone(),
        run_id: run_id.clone(),
        user_id: cx.caller.clone(),
        created_ms: crate::now_ms(),
        status_message: format!("{source} is not a model falaj can register: {why}"),
    };
    let mlmodel = match files.iter().find(|(f, _)| f == "MLmodel") {
        Some((_, b)) => match model_files::parse_mlmodel(&String::from_utf8_lossy(b)) {
            Ok(m) => Some(m),
            Err(why) => return reject(cx, rejected(why)).await,
        },
        None => None,
    };
    // No signature (MLflow's ONNX flavor infers none): a DataFrame input example names the
    // columns instead.
    let mut mlmodel = mlmodel;
    let mut from = "the MLflow signature";
    if let Some(m) = mlmodel.as_mut()
        && m.columns.is_none()
        && !m.tensor_input
        && let Some((_, ex)) = files.iter().find(|(f, _)| f == "input_example.json")
        && let Some(cols) = model_files::example_columns(ex)
    {
        m.columns = Some(cols);
        from = "the MLflow input example";
    }
    let (onnx_name, onnx) = match model_files::find_onnx(&files, mlmodel.as_ref()) {
        Ok((n, b)) => (n.clone(), b.clone()),
        Err(why) => return reject(cx, rejected(why)).await,
    };
    // mlflow.onnx.log_model keeps the weights beside the graph by default: falaj registers
    // one self-contained file, with them inside.
    let onnx = match falaj_core::onnx::has_external_data(&onnx) {
        Ok(true) => {
            let dir = onnx_name.rsplit_once('/').map_or("", |(d, _)| d);
            let beside = |f: &str| {
                let path = if dir.is_empty() {
                    f.to_string()
                } else {
                    format!("{dir}/{f}")
                };
                files.iter().find(|(n, _)| *n == path).map(|(_, b)| &b[..])
            };
            match falaj_core::onnx::inline_external_data(&onnx, beside) {
                Ok(b) => Bytes::from(b),
                Err(e) => return reject(cx, rejected(format!("{onnx_name}: {e}"))).await,
            }
        }
        Ok(false) => onnx,
        Err(e) => return reject(cx, rejected(format!("{onnx_name}: {e}"))).await,
    };
    let summary = match falaj_core::onnx::summarize(&onnx) {
        Ok(s) => s,
        Err(e) => return reject(cx, rejected(format!("{onnx_name}: {e}"))).await,
    };
    let (manifest, note) = match model_files::manifest(
        &name,
        &cx.caller,
        mlmodel.as_ref(),
        &summary,
        &hints,
        &facts,
    ) {
        Ok(Ok(m)) => (Some(m), format!("from {from}")),
        Ok(Err(note)) => (None, note),
        Err(why) => return reject(cx, rejected(why)).await,
    };
    let manifest = manifest
        .map(|m| serde_json::to_vec_pretty(&m).map(Bytes::from))
        .transpose()
        .map_err(|e| MlError::new("INTERNAL_ERROR", e.to_string()))?;
    let registered = falaj::access::register(
        cx.reg,
        Registration {
            model: name.clone(),
            artifact: Artifact::Bytes(onnx),
            artifact_name: format!("{source} ({onnx_name})"),
            manifest: manifest.map(|m| (format!("{from} of {source}"), m)),
            semver: None,
            author: cx.caller.clone(),
            author_principal: Some(cx.caller.clone()),
            source: Some(source.clone()),
        },
        no_progress(),
    )
    .await
    .map_err(|e| MlError::from_api(ApiError::from(e), false))?;
    let v = registered.version;
    // Every file of the directory, content-addressed: what models:/<name>/<n> downloads.
    let mut side = VersionSide {
        source: source.clone(),
        run_id,
        model_id,
        description: p.str("description").unwrap_or_default(),
        manifest: note,
        ..VersionSide::default()
    };
    let copied: Vec<(String, String, u64)> = stream::iter(files)
        .map(|(f, b)| async move {
            let size = b.len() as u64;
            let blob = cx
                .reg
                .store()
                .put_blob(
                    BlobSource::Reader(Box::new(std::io::Cursor::new(b))),
                    no_progress(),
                )
                .await
                .map_err(RegistryError::from)?;
            Ok::<_, MlError>((f, format!("sha256:{}", blob.hex), size))
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    for (f, digest, size) in copied {
        side.files.insert(f.clone(), digest);
        side.sizes.insert(f, size);
    }
    write(
        cx.reg,
        &layout::mlflow_version(&name, v.version)?,
        &side,
        Precondition::IfAbsent,
    )
    .await?;
    if !tags.is_empty() {
        cx.reg
            .tag_version(&name, v.version, &tags, &[], &cx.caller)
            .await?;
    }
    Ok(ok(
        json!({"model_version": version_json(cx, &v, false).await?}),
    ))
}

async fn reject(cx: &Cx<'_>, r: Rejected) -> Answer {
    write(
        cx.reg,
        &layout::mlflow_rejected(&r.name, &r.id)?,
        &r,
        Precondition::IfAbsent,
    )
    .await?;
    tracing::warn!(model = %r.name, source = %r.source, reason = %r.status_message, "mlflow model version not registered");
    Ok(ok(json!({"model_version": r.json()})))
}
