//! Tracking: experiments, runs (params, metrics, tags, dataset inputs, model outputs) and
//! MLflow 3's logged models, kept under `mlflow/` in the store.
//!
//! - An experiment is `mlflow/experiments/<id>.json`; its name is claimed create-only at
//!   `mlflow/experiment-names/<sha256>.json` first, so two creates of one name cannot both
//!   win. A claim whose experiment object is missing (a crash between the writes) is
//!   completed by the next read.
//! - A run is `mlflow/runs/<id>/run.json`, changed by compare-and-swap; each batch of
//!   metrics is one more create-only object under `mlflow/runs/<id>/metrics/`, and the run
//!   keeps each metric's latest value (MLflow's rule: highest step, then time, then value).
//! - Only a run's or logged model's creator writes to it.

use std::collections::BTreeMap;

use falaj::store::Precondition;
use falaj_core::layout;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::search::{self, Filter, Ident};
use crate::{
    Answer, Cx, MlError, Params, now_ms, ok, page, paged, random_hex, read, update, write,
};

/// Longest param value MLflow accepts.
const MAX_PARAM_VALUE: usize = 6000;
/// Longest tag value accepted.
const MAX_TAG_VALUE: usize = 8000;
/// Longest key.
const MAX_KEY: usize = 250;
/// What one `log-batch` may carry (MLflow's own limits).
const MAX_BATCH_METRICS: usize = 1000;
const MAX_BATCH_PARAMS: usize = 100;
const MAX_BATCH_TAGS: usize = 100;

/// The experiment every run without one lands in.
pub const DEFAULT_EXPERIMENT: &str = "0";

// ---- records ----

/// `mlflow/experiments/<id>.json`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Experiment {
    /// Id (digits).
    pub experiment_id: String,
    /// Unique name.
    pub name: String,
    /// `mlflow-artifacts:/<id>`.
    pub artifact_location: String,
    /// `active`.
    pub lifecycle_stage: String,
    /// Milliseconds.
    pub creation_time: i64,
    /// Milliseconds.
    pub last_update_time: i64,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl Experiment {
    fn json(&self) -> Value {
        json!({
            "experiment_id": self.experiment_id,
            "name": self.name,
            "artifact_location": self.artifact_location,
            "lifecycle_stage": self.lifecycle_stage,
            "creation_time": self.creation_time,
            "last_update_time": self.last_update_time,
            "tags": crate::tag_list(&self.tags),
        })
    }
}

/// A run's info.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// 32 hex digits.
    pub run_id: String,
    /// Name.
    pub run_name: String,
    /// Experiment.
    pub experiment_id: String,
    /// The falaj identity that created it (not what the client claimed).
    pub user_id: String,
    /// `RUNNING`, `FINISHED`, `FAILED`, `KILLED`, `SCHEDULED`.
    pub status: String,
    /// Milliseconds.
    pub start_time: i64,
    /// Milliseconds.
    #[serde(default)]
    pub end_time: Option<i64>,
    /// `mlflow-artifacts:/<experiment>/<run>/artifacts`.
    pub artifact_uri: String,
    /// `active`.
    pub lifecycle_stage: String,
}

/// `mlflow/runs/<id>/run.json`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Info.
    pub info: RunInfo,
    /// Params: set once each.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Each metric's latest entry.
    #[serde(default)]
    pub latest: BTreeMap<String, Value>,
    /// `DatasetInput`s, as logged.
    #[serde(default)]
    pub dataset_inputs: Vec<Value>,
    /// `ModelInput`s.
    #[serde(default)]
    pub model_inputs: Vec<Value>,
    /// `ModelOutput`s.
    #[serde(default)]
    pub model_outputs: Vec<Value>,
}

impl Run {
    /// The run as MLflow's `Run` message.
    pub fn json(&self) -> Value {
        let info = self.info_json();
        json!({
            "info": info,
            "data": {
                "metrics": self.latest.values().collect::<Vec<_>>(),
                "params": self.params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                "tags": crate::tag_list(&self.tags),
            },
            "inputs": {"dataset_inputs": self.dataset_inputs, "model_inputs": self.model_inputs},
            "outputs": {"model_outputs": self.model_outputs},
        })
    }

    fn info_json(&self) -> Value {
        let mut info = serde_json::to_value(&self.info).unwrap_or(Value::Null);
        info["run_uuid"] = json!(self.info.run_id);
        if self.info.end_time.is_none()
            && let Value::Object(o) = &mut info
        {
            o.remove("end_time");
        }
        info
    }

    /// Latest value of each metric, as numbers (NaN and infinities as strings are skipped).
    pub fn metric_values(&self) -> BTreeMap<String, f64> {
        self.latest
            .iter()
            .filter_map(|(k, m)| m["value"].as_f64().map(|v| (k.clone(), v)))
            .collect()
    }
}

/// `mlflow/logged-models/<id>.json`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedModel {
    /// `m-` and 32 hex digits.
    pub model_id: String,
    /// Experiment.
    pub experiment_id: String,
    /// Name.
    pub name: String,
    /// `mlflow-artifacts:/<experiment>/models/<id>/artifacts`.
    pub artifact_uri: String,
    /// Milliseconds.
    pub creation_timestamp_ms: i64,
    /// Milliseconds.
    pub last_updated_timestamp_ms: i64,
    /// `LOGGED_MODEL_PENDING`, `LOGGED_MODEL_READY`, `LOGGED_MODEL_UPLOAD_FAILED`.
    pub status: String,
    /// Flavor (`onnx`, ...).
    #[serde(default)]
    pub model_type: String,
    /// The run that logged it.
    #[serde(default)]
    pub source_run_id: String,
    /// Who created it.
    pub creator: String,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Params.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl LoggedModel {
    fn json(&self) -> Value {
        json!({
            "info": {
                "model_id": self.model_id,
                "experiment_id": self.experiment_id,
                "name": self.name,
                "artifact_uri": self.artifact_uri,
                "creation_timestamp_ms": self.creation_timestamp_ms,
                "last_updated_timestamp_ms": self.last_updated_timestamp_ms,
                "status": self.status,
                "model_type": self.model_type,
                "source_run_id": self.source_run_id,
                "tags": crate::tag_list(&self.tags),
            },
            "data": {
                "params": self.params.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                "metrics": [],
            },
        })
    }
}

// ---- ids ----

fn experiment_key(id: &str) -> Result<falaj_core::StoreKey, MlError> {
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MlError::missing(format!(
            "No Experiment with id={id} exists"
        )));
    }
    Ok(layout::mlflow_experiment(id)?)
}

fn run_key(id: &str) -> Result<falaj_core::StoreKey, MlError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(MlError::missing(format!("Run with id={id} not found")));
    }
    Ok(layout::mlflow_run(id)?)
}

fn logged_model_key(id: &str) -> Result<falaj_core::StoreKey, MlError> {
    let ok = id
        .strip_prefix("m-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(MlError::missing(format!(
            "Logged model with ID '{id}' not found."
        )));
    }
    Ok(layout::mlflow_logged_model(id)?)
}

fn check_key(what: &str, key: &str) -> Result<(), MlError> {
    if key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(MlError::invalid(format!(
            "invalid {what} key {key:?}: 1 to {MAX_KEY} characters, no control characters"
        )));
    }
    Ok(())
}

/// Checks each key and value of `pairs` (`tag`s or `param`s) against MLflow's limits.
fn check_pairs(what: &str, pairs: &[(String, String)]) -> Result<(), MlError> {
    let max = if what == "param" {
        MAX_PARAM_VALUE
    } else {
        MAX_TAG_VALUE
    };
    for (k, v) in pairs {
        check_key(what, k)?;
        check_value(what, k, v, max)?;
    }
    Ok(())
}

/// The request's `[{key, value}]` list `field` (`tags` or `params`), checked.
fn checked(p: &Params, field: &str) -> Result<Vec<(String, String)>, MlError> {
    let pairs = p.key_values(field)?;
    check_pairs(if field == "params" { "param" } else { "tag" }, &pairs)?;
    Ok(pairs)
}

fn check_value(what: &str, key: &str, value: &str, max: usize) -> Result<(), MlError> {
    if value.len() > max {
        return Err(MlError::invalid(format!(
            "the {what} {key:?} is {} characters long; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

// ---- routes ----

/// Answers the tracking routes, `None` for any other path.
pub(crate) async fn route(cx: &Cx<'_>, method: &str, rest: &str, p: &Params) -> Option<Answer> {
    let parts: Vec<&str> = rest.split('/').collect();
    Some(match (method, parts.as_slice()) {
        ("POST", ["experiments", "create"]) => create_experiment(cx, p).await,
        ("GET", ["experiments", "get"]) => match p.need("experiment_id") {
            Ok(id) => experiment(cx, &id)
                .await
                .map(|e| ok(json!({"experiment": e.json()}))),
            Err(e) => Err(e),
        },
        ("GET", ["experiments", "get-by-name"]) => match p.need("experiment_name") {
            Ok(name) => experiment_by_name(cx, &name).await.and_then(|e| match e {
                Some(e) => Ok(ok(json!({"experiment": e.json()}))),
                None => Err(MlError::missing(format!(
                    "Could not find experiment with name '{name}'"
                ))),
            }),
            Err(e) => Err(e),
        },
        ("POST" | "GET", ["experiments", "search"]) => search_experiments(cx, p).await,
        ("POST", ["experiments", "set-experiment-tag"]) => set_experiment_tag(cx, p).await,
        ("POST", ["runs", "create"]) => create_run(cx, p).await,
        ("POST", ["runs", "update"]) => update_run(cx, p).await,
        ("GET", ["runs", "get"]) => match p.str("run_id").or_else(|| p.str("run_uuid")) {
            Some(id) => get_run(cx, &id).await.map(|r| ok(json!({"run": r.json()}))),
            None => Err(MlError::invalid(
                "Missing value for required parameter 'run_id'.",
            )),
        },
        ("POST" | "GET", ["runs", "search"]) => search_runs(cx, p).await,
        ("POST", ["runs", "log-metric"]) => match p.need("key") {
            Ok(_) => {
                let mut m = Map::new();
                for k in [
                    "key",
                    "value",
                    "timestamp",
                    "step",
                    "dataset_name",
                    "dataset_digest",
                    "model_id",
                ] {
                    if let Some(v) = p.raw(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
                log_batch(cx, p, vec![m], Vec::new(), Vec::new()).await
            }
            Err(e) => Err(e),
        },
        ("POST", ["runs", "log-parameter"]) => match (p.need("key"), p.str("value")) {
            (Ok(k), v) => {
                log_batch(
                    cx,
                    p,
                    Vec::new(),
                    vec![(k, v.unwrap_or_default())],
                    Vec::new(),
                )
                .await
            }
            (Err(e), _) => Err(e),
        },
        ("POST", ["runs", "set-tag"]) => match p.need("key") {
            Ok(k) => {
                log_batch(
                    cx,
                    p,
                    Vec::new(),
                    Vec::new(),
                    vec![(k, p.str("value").unwrap_or_default())],
                )
                .await
            }
            Err(e) => Err(e),
        },
        ("POST", ["runs", "log-batch"]) => match (
            p.objects("metrics"),
            p.key_values("params"),
            p.key_values("tags"),
        ) {
            (Ok(m), Ok(ps), Ok(t)) => log_batch(cx, p, m, ps, t).await,
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        },
        ("POST", ["runs", "delete-tag"]) => delete_run_tag(cx, p).await,
        ("POST", ["runs", "log-inputs"]) => log_inputs(cx, p).await,
        ("POST", ["runs", "outputs"]) => log_outputs(cx, p).await,
        ("POST", ["runs", "log-model"]) => {
            run_write(cx, p, |_| Ok(())).await.map(|_| ok(json!({})))
        }
        ("GET", ["metrics", "get-history"]) => metric_history(cx, p).await,
        ("POST", ["logged-models"]) => create_logged_model(cx, p).await,
        ("POST" | "GET", ["logged-models", "search"]) => search_logged_models(cx, p).await,
        ("GET", ["logged-models", id]) => logged_model(cx, id)
            .await
            .map(|m| ok(json!({"model": m.json()}))),
        ("PATCH", ["logged-models", id]) => finalize_logged_model(cx, id, p).await,
        ("PATCH", ["logged-models", id, "tags"]) => match checked(p, "tags") {
            Ok(tags) => logged_model_write(cx, id, |m| {
                m.tags.extend(tags.iter().cloned());
                Ok(())
            })
            .await
            .map(|_| ok(json!({}))),
            Err(e) => Err(e),
        },
        ("DELETE", ["logged-models", id, "tags", key]) => {
            let key = falaj_webhook::http::percent_decode(key, false);
            logged_model_write(cx, id, |m| {
                m.tags.remove(&key);
                Ok(())
            })
            .await
            .map(|_| ok(json!({})))
        }
        ("POST", ["logged-models", id, "params"]) => match checked(p, "params") {
            Ok(params) => logged_model_write(cx, id, |m| {
                m.params.extend(params.iter().cloned());
                Ok(())
            })
            .await
            .map(|_| ok(json!({}))),
            Err(e) => Err(e),
        },
        _ => return None,
    })
}

// ---- experiments ----

fn name_claim_key(name: &str) -> Result<falaj_core::StoreKey, MlError> {
    Ok(layout::mlflow_experiment_name(&hex::encode(
        Sha256::digest(name.as_bytes()),
    ))?)
}

/// The create-only record that makes a name unique; it carries the whole experiment, so a
/// crash before the experiment object is written loses nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NameClaim {
    experiment: Experiment,
}

async fn create_experiment(cx: &Cx<'_>, p: &Params) -> Answer {
    let name = p.need("name")?;
    if name.len() > 500 || name.trim().is_empty() {
        return Err(MlError::invalid(
            "an experiment name is 1 to 500 characters",
        ));
    }
    let tags: BTreeMap<String, String> = checked(p, "tags")?.into_iter().collect();
    // Ids are 15 digits, never 0 (the default experiment's).
    let id = (100_000_000_000_000 + rand::random::<u64>() % 900_000_000_000_000).to_string();
    let now = now_ms();
    let e = Experiment {
        artifact_location: format!("mlflow-artifacts:/{id}"),
        experiment_id: id.clone(),
        name: name.clone(),
        lifecycle_stage: "active".into(),
        creation_time: now,
        last_update_time: now,
        tags,
    };
    let claim = NameClaim {
        experiment: e.clone(),
    };
    if !write(
        cx.reg,
        &name_claim_key(&name)?,
        &claim,
        Precondition::IfAbsent,
    )
    .await?
    {
        return Err(MlError::new(
            "RESOURCE_ALREADY_EXISTS",
            format!("Experiment '{name}' already exists."),
        ));
    }
    write(
        cx.reg,
        &layout::mlflow_experiment(&id)?,
        &e,
        Precondition::IfAbsent,
    )
    .await?;
    Ok(ok(json!({"experiment_id": id})))
}

fn default_experiment() -> Experiment {
    Experiment {
        experiment_id: DEFAULT_EXPERIMENT.into(),
        name: "Default".into(),
        artifact_location: format!("mlflow-artifacts:/{DEFAULT_EXPERIMENT}"),
        lifecycle_stage: "active".into(),
        creation_time: now_ms(),
        last_update_time: now_ms(),
        tags: BTreeMap::new(),
    }
}

/// The experiment `id`; the default one (`0`, `Default`) is made on first use.
pub(crate) async fn experiment(cx: &Cx<'_>, id: &str) -> Result<Experiment, MlError> {
    let key = experiment_key(id)?;
    if let Some((e, _)) = read::<Experiment>(cx.reg, &key).await? {
        return Ok(e);
    }
    if id == DEFAULT_EXPERIMENT {
        return ensure_claimed(cx, default_experiment()).await;
    }
    Err(MlError::missing(format!(
        "No Experiment with id={id} exists"
    )))
}

/// Claims `e`'s name (or finds the claim) and writes the experiment object.
async fn ensure_claimed(cx: &Cx<'_>, e: Experiment) -> Result<Experiment, MlError> {
    let claim_key = name_claim_key(&e.name)?;
    write(
        cx.reg,
        &claim_key,
        &NameClaim { experiment: e },
        Precondition::IfAbsent,
    )
    .await?;
    let (claim, _) = read::<NameClaim>(cx.reg, &claim_key)
        .await?
        .ok_or_else(|| {
            MlError::new(
                "TEMPORARILY_UNAVAILABLE",
                "the experiment name claim vanished; try again",
            )
        })?;
    let key = layout::mlflow_experiment(&claim.experiment.experiment_id)?;
    write(cx.reg, &key, &claim.experiment, Precondition::IfAbsent).await?;
    Ok(read::<Experiment>(cx.reg, &key)
        .await?
        .map(|(e, _)| e)
        .unwrap_or(claim.experiment))
}

async fn experiment_by_name(cx: &Cx<'_>, name: &str) -> Result<Option<Experiment>, MlError> {
    match read::<NameClaim>(cx.reg, &name_claim_key(name)?).await? {
        Some((claim, _)) => Ok(Some(ensure_claimed(cx, claim.experiment).await?)),
        None if name == "Default" => Ok(Some(experiment(cx, DEFAULT_EXPERIMENT).await?)),
        None => Ok(None),
    }
}

async fn all_experiments(cx: &Cx<'_>) -> Result<Vec<Experiment>, MlError> {
    let mut out = vec![experiment(cx, DEFAULT_EXPERIMENT).await?];
    for k in crate::list(cx.reg, layout::MLFLOW_EXPERIMENTS_PREFIX).await? {
        if k == layout::mlflow_experiment(DEFAULT_EXPERIMENT)?.as_str() {
            continue;
        }
        if let Some((e, _)) = read::<Experiment>(cx.reg, &falaj_core::StoreKey::new(k)?).await? {
            out.push(e);
        }
    }
    Ok(out)
}

async fn search_experiments(cx: &Cx<'_>, p: &Params) -> Answer {
    let filter = Filter::parse(&p.str("filter").unwrap_or_default())?;
    let (offset, size) = page(p, 1000, 50_000)?;
    let mut found: Vec<Experiment> = all_experiments(cx)
        .await?
        .into_iter()
        .filter(|e| {
            filter.matches(|id| match (id.kind.as_str(), id.key.as_str()) {
                ("attributes", "name") => Some(search::Value::Str(e.name.clone())),
                ("attributes", "experiment_id") => {
                    Some(search::Value::Str(e.experiment_id.clone()))
                }
                ("attributes", "creation_time") => Some(search::Value::Num(e.creation_time as f64)),
                ("attributes", "last_update_time") => {
                    Some(search::Value::Num(e.last_update_time as f64))
                }
                ("tags", k) => e.tags.get(k).map(|v| search::Value::Str(v.clone())),
                _ => None,
            })
        })
        .collect();
    found.sort_by(|a, b| {
        b.creation_time
            .cmp(&a.creation_time)
            .then(a.name.cmp(&b.name))
    });
    let (items, next) = paged(found, offset, size);
    let mut out = json!({"experiments": items.iter().map(Experiment::json).collect::<Vec<_>>()});
    if let Some(n) = next {
        out["next_page_token"] = json!(n);
    }
    Ok(ok(out))
}

async fn set_experiment_tag(cx: &Cx<'_>, p: &Params) -> Answer {
    let id = p.need("experiment_id")?;
    let key = p.need("key")?;
    let value = p.str("value").unwrap_or_default();
    check_pairs("tag", &[(key.clone(), value.clone())])?;
    experiment(cx, &id).await?;
    update(
        cx.reg,
        &experiment_key(&id)?,
        "experiment",
        |e: &mut Experiment| {
            e.tags.insert(key.clone(), value.clone());
            e.last_update_time = now_ms();
            Ok(())
        },
    )
    .await?;
    Ok(ok(json!({})))
}

// ---- runs ----

async fn create_run(cx: &Cx<'_>, p: &Params) -> Answer {
    let exp = p
        .str("experiment_id")
        .unwrap_or_else(|| DEFAULT_EXPERIMENT.into());
    experiment(cx, &exp).await?;
    let tags: BTreeMap<String, String> = checked(p, "tags")?.into_iter().collect();
    let id = random_hex(16);
    let run_name = p
        .str("run_name")
        .or_else(|| tags.get("mlflow.runName").cloned())
        .unwrap_or_else(|| format!("run-{}", &id[..8]));
    let mut tags = tags;
    tags.insert("mlflow.runName".into(), run_name.clone());
    // Who ran it is who authenticated, whatever the client says.
    tags.insert("mlflow.user".into(), cx.caller.clone());
    let run = Run {
        info: RunInfo {
            run_id: id.clone(),
            run_name,
            experiment_id: exp.clone(),
            user_id: cx.caller.clone(),
            status: "RUNNING".into(),
            start_time: p.int("start_time")?.unwrap_or_else(now_ms),
            end_time: None,
            artifact_uri: format!("mlflow-artifacts:/{exp}/{id}/artifacts"),
            lifecycle_stage: "active".into(),
        },
        params: BTreeMap::new(),
        tags,
        latest: BTreeMap::new(),
        dataset_inputs: Vec::new(),
        model_inputs: Vec::new(),
        model_outputs: Vec::new(),
    };
    write(cx.reg, &run_key(&id)?, &run, Precondition::IfAbsent).await?;
    let marker = falaj_core::StoreKey::new(format!(
        "{}{id}",
        layout::mlflow_experiment_runs_prefix(&exp)
    ))?;
    write(cx.reg, &marker, &json!({}), Precondition::IfAbsent).await?;
    Ok(ok(json!({"run": run.json()})))
}

/// The run `id`.
pub(crate) async fn get_run(cx: &Cx<'_>, id: &str) -> Result<Run, MlError> {
    read::<Run>(cx.reg, &run_key(id)?)
        .await?
        .map(|(r, _)| r)
        .ok_or_else(|| MlError::missing(format!("Run with id={id} not found")))
}

/// Changes the run named by `run_id` (or `run_uuid`) as its creator.
async fn run_write<R>(
    cx: &Cx<'_>,
    p: &Params,
    mut change: impl FnMut(&mut Run) -> Result<R, MlError>,
) -> Result<R, MlError> {
    let id = p
        .str("run_id")
        .or_else(|| p.str("run_uuid"))
        .ok_or_else(|| MlError::invalid("Missing value for required parameter 'run_id'."))?;
    let caller = cx.caller.clone();
    update(
        cx.reg,
        &run_key(&id)?,
        &format!("Run with id={id}"),
        |r: &mut Run| {
            if r.info.user_id != caller {
                return Err(MlError::new(
                    "PERMISSION_DENIED",
                    format!(
                        "run {id} belongs to {}; only its creator writes to it",
                        r.info.user_id
                    ),
                ));
            }
            change(r)
        },
    )
    .await
}

async fn update_run(cx: &Cx<'_>, p: &Params) -> Answer {
    let status = p.str("status");
    if let Some(s) = &status
        && !["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"].contains(&s.as_str())
    {
        return Err(MlError::invalid(format!("unknown run status {s:?}")));
    }
    let end_time = p.int("end_time")?;
    let run_name = p.str("run_name");
    let run = run_write(cx, p, |r| {
        if let Some(s) = &status {
            r.info.status = s.clone();
        }
        if end_time.is_some() {
            r.info.end_time = end_time;
        }
        if let Some(n) = &run_name {
            r.info.run_name = n.clone();
            r.tags.insert("mlflow.runName".into(), n.clone());
        }
        Ok(r.clone())
    })
    .await?;
    Ok(ok(json!({"run_info": run.info_json()})))
}

/// A metric entry checked and normalised: `{key, value, timestamp, step, ...}`.
fn metric_entry(m: &Map<String, Value>) -> Result<Value, MlError> {
    let key = m.get("key").and_then(Value::as_str).unwrap_or_default();
    check_key("metric", key)?;
    let value = match m.get("value") {
        Some(Value::Number(n)) => Value::Number(n.clone()),
        // How protobuf's JSON writes NaN and the infinities.
        Some(Value::String(s)) if ["NaN", "Infinity", "-Infinity"].contains(&s.as_str()) => {
            Value::String(s.clone())
        }
        Some(Value::String(s)) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() => json!(v),
            _ => {
                return Err(MlError::invalid(format!(
                    "metric {key:?} has value {s:?}, which is not a number"
                )));
            }
        },
        other => {
            return Err(MlError::invalid(format!(
                "metric {key:?} needs a numeric value, not {}",
                other.map_or("nothing".to_string(), Value::to_string)
            )));
        }
    };
    let int = |k: &str| -> Result<i64, MlError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| MlError::invalid(format!("metric {key:?}: {k} must be an integer"))),
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| MlError::invalid(format!("metric {key:?}: {k} must be an integer"))),
            Some(_) => Err(MlError::invalid(format!(
                "metric {key:?}: {k} must be an integer"
            ))),
        }
    };
    let mut out =
        json!({"key": key, "value": value, "timestamp": int("timestamp")?, "step": int("step")?});
    for k in ["dataset_name", "dataset_digest", "model_id"] {
        if let Some(Value::String(s)) = m.get(k)
            && !s.is_empty()
        {
            out[k] = json!(s);
        }
    }
    Ok(out)
}

/// MLflow's "latest": the highest step, then the latest time, then the highest value.
fn newer(a: &Value, b: &Value) -> bool {
    let key = |m: &Value| {
        (
            m["step"].as_i64().unwrap_or(0),
            m["timestamp"].as_i64().unwrap_or(0),
            m["value"].as_f64().unwrap_or(f64::NEG_INFINITY),
        )
    };
    let (x, y) = (key(a), key(b));
    (x.0, x.1) > (y.0, y.1) || ((x.0, x.1) == (y.0, y.1) && x.2 >= y.2)
}

async fn log_batch(
    cx: &Cx<'_>,
    p: &Params,
    metrics: Vec<Map<String, Value>>,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
) -> Answer {
    if metrics.len() > MAX_BATCH_METRICS
        || params.len() > MAX_BATCH_PARAMS
        || tags.len() > MAX_BATCH_TAGS
    {
        return Err(MlError::invalid(format!(
            "a batch carries at most {MAX_BATCH_METRICS} metrics, {MAX_BATCH_PARAMS} params and {MAX_BATCH_TAGS} tags; this one has {}, {} and {}",
            metrics.len(),
            params.len(),
            tags.len()
        )));
    }
    let entries: Vec<Value> = metrics.iter().map(metric_entry).collect::<Result<_, _>>()?;
    check_pairs("param", &params)?;
    check_pairs("tag", &tags)?;
    // The run is checked (and changed) first: a refused batch leaves no metrics behind.
    let run = run_write(cx, p, |r| {
        for (k, v) in &params {
            match r.params.get(k) {
                Some(old) if old != v => {
                    return Err(MlError::invalid(format!(
                        "Changing param values is not allowed. Param with key='{k}' was already logged with value='{old}' for run ID='{}'. Attempted logging new value '{v}'.",
                        r.info.run_id
                    )));
                }
                _ => {
                    r.params.insert(k.clone(), v.clone());
                }
            }
        }
        for (k, v) in &tags {
            r.tags.insert(k.clone(), v.clone());
        }
        for m in &entries {
            let k = m["key"].as_str().unwrap_or_default().to_string();
            match r.latest.get(&k) {
                Some(old) if !newer(m, old) => {}
                _ => {
                    r.latest.insert(k, m.clone());
                }
            }
        }
        Ok(r.info.run_id.clone())
    })
    .await?;
    if !entries.is_empty() {
        let key = falaj_core::StoreKey::new(format!(
            "{}{:016}-{}.json",
            layout::mlflow_run_metrics_prefix(&run),
            now_ms(),
            random_hex(4)
        ))?;
        write(
            cx.reg,
            &key,
            &json!({"metrics": entries}),
            Precondition::IfAbsent,
        )
        .await?;
    }
    Ok(ok(json!({})))
}

async fn delete_run_tag(cx: &Cx<'_>, p: &Params) -> Answer {
    let key = p.need("key")?;
    run_write(cx, p, |r| match r.tags.remove(&key) {
        Some(_) => Ok(()),
        None => Err(MlError::missing(format!(
            "No tag with name: {key} in run with id {}",
            r.info.run_id
        ))),
    })
    .await?;
    Ok(ok(json!({})))
}

async fn log_inputs(cx: &Cx<'_>, p: &Params) -> Answer {
    let datasets = p.objects("datasets")?;
    let models = p.objects("models")?;
    for d in &datasets {
        let ds = d.get("dataset").and_then(Value::as_object);
        let named = ds.is_some_and(|ds| {
            ds.get("name")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
                && ds
                    .get("digest")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
        });
        if !named {
            return Err(MlError::invalid(
                "every dataset input needs a dataset with a name and a digest",
            ));
        }
        if serde_json::to_vec(d).map_or(0, |v| v.len()) > 1 << 20 {
            return Err(MlError::invalid(
                "a dataset input (with its schema and profile) is limited to 1 MiB",
            ));
        }
    }
    run_write(cx, p, |r| {
        add_new(&mut r.dataset_inputs, &datasets);
        add_new(&mut r.model_inputs, &models);
        Ok(())
    })
    .await?;
    Ok(ok(json!({})))
}

/// Appends each of `items` that `list` does not hold yet (a re-sent input counts once).
fn add_new(list: &mut Vec<Value>, items: &[Map<String, Value>]) {
    for i in items {
        let v = Value::Object(i.clone());
        if !list.contains(&v) {
            list.push(v);
        }
    }
}

async fn log_outputs(cx: &Cx<'_>, p: &Params) -> Answer {
    let models = p.objects("models")?;
    run_write(cx, p, |r| {
        add_new(&mut r.model_outputs, &models);
        Ok(())
    })
    .await?;
    Ok(ok(json!({})))
}

async fn metric_history(cx: &Cx<'_>, p: &Params) -> Answer {
    let id = p
        .str("run_id")
        .or_else(|| p.str("run_uuid"))
        .ok_or_else(|| MlError::invalid("Missing value for required parameter 'run_id'."))?;
    let key = p.need("metric_key")?;
    get_run(cx, &id).await?;
    let mut out = Vec::new();
    for k in crate::list(cx.reg, &layout::mlflow_run_metrics_prefix(&id)).await? {
        if let Some((batch, _)) = read::<Value>(cx.reg, &falaj_core::StoreKey::new(k)?).await? {
            for m in batch["metrics"].as_array().into_iter().flatten() {
                if m["key"] == key.as_str() {
                    out.push(m.clone());
                }
            }
        }
    }
    out.sort_by_key(|m| (m["step"].as_i64(), m["timestamp"].as_i64()));
    Ok(ok(json!({"metrics": out})))
}

/// A run's metrics by step: step → metric → the last value logged at that step.
pub type Curve = BTreeMap<i64, BTreeMap<String, f64>>;

/// The metric history of the MLflow run a registered version came from, with the run's id;
/// `None` when the version was not registered through MLflow. What the console draws as the
/// version's training curve.
pub async fn version_curve(
    reg: &falaj::registry::Registry,
    model: &str,
    version: u64,
) -> Result<Option<(String, Curve)>, MlError> {
    let key = layout::mlflow_version(model, version)?;
    let Some((side, _)) = read::<crate::registry::VersionSide>(reg, &key).await? else {
        return Ok(None);
    };
    if side.run_id.is_empty() {
        return Ok(None);
    }
    let mut points: Vec<(i64, i64, String, f64)> = Vec::new();
    for k in crate::list(reg, &layout::mlflow_run_metrics_prefix(&side.run_id)).await? {
        if let Some((batch, _)) = read::<Value>(reg, &falaj_core::StoreKey::new(k)?).await? {
            for m in batch["metrics"].as_array().into_iter().flatten() {
                if let (Some(name), Some(value)) = (m["key"].as_str(), m["value"].as_f64()) {
                    let step = m["step"].as_i64().unwrap_or(0);
                    let at = m["timestamp"].as_i64().unwrap_or(0);
                    points.push((step, at, name.to_string(), value));
                }
            }
        }
    }
    points.sort_by_key(|(step, at, _, _)| (*step, *at));
    let mut curve = Curve::new();
    for (step, _, name, value) in points {
        curve.entry(step).or_default().insert(name, value);
    }
    Ok(Some((side.run_id, curve)))
}

fn run_attr(r: &Run, id: &Ident) -> Option<search::Value> {
    use search::Value::{Num, Str};
    match (id.kind.as_str(), id.key.as_str()) {
        ("params", k) => r.params.get(k).map(|v| Str(v.clone())),
        ("tags", k) => r.tags.get(k).map(|v| Str(v.clone())),
        ("metrics", k) => r.latest.get(k).and_then(|m| m["value"].as_f64()).map(Num),
        ("attributes", "run_id" | "run_uuid") => Some(Str(r.info.run_id.clone())),
        ("attributes", "run_name" | "name") => Some(Str(r.info.run_name.clone())),
        ("attributes", "status") => Some(Str(r.info.status.clone())),
        ("attributes", "user_id") => Some(Str(r.info.user_id.clone())),
        ("attributes", "start_time") => Some(Num(r.info.start_time as f64)),
        ("attributes", "end_time") => r.info.end_time.map(|t| Num(t as f64)),
        ("attributes", "artifact_uri") => Some(Str(r.info.artifact_uri.clone())),
        ("attributes", "lifecycle_stage") => Some(Str(r.info.lifecycle_stage.clone())),
        _ => None,
    }
}

async fn search_runs(cx: &Cx<'_>, p: &Params) -> Answer {
    let filter = Filter::parse(&p.str("filter").unwrap_or_default())?;
    let (offset, size) = page(p, 1000, 50_000)?;
    let mut runs = Vec::new();
    for exp in p.strings("experiment_ids") {
        experiment_key(&exp)?;
        for k in crate::list(cx.reg, &layout::mlflow_experiment_runs_prefix(&exp)).await? {
            let id = k.rsplit('/').next().unwrap_or_default();
            if let Ok(r) = get_run(cx, id).await
                && filter.matches(|i| run_attr(&r, i))
            {
                runs.push(r);
            }
        }
    }
    runs.sort_by(|a, b| {
        b.info
            .start_time
            .cmp(&a.info.start_time)
            .then(a.info.run_id.cmp(&b.info.run_id))
    });
    let (items, next) = paged(runs, offset, size);
    let mut out = json!({"runs": items.iter().map(Run::json).collect::<Vec<_>>()});
    if let Some(n) = next {
        out["next_page_token"] = json!(n);
    }
    Ok(ok(out))
}

// ---- logged models ----

async fn create_logged_model(cx: &Cx<'_>, p: &Params) -> Answer {
    let exp = p
        .str("experiment_id")
        .unwrap_or_else(|| DEFAULT_EXPERIMENT.into());
    experiment(cx, &exp).await?;
    let source_run_id = p.str("source_run_id").unwrap_or_default();
    if !source_run_id.is_empty() {
        get_run(cx, &source_run_id).await?;
    }
    let tags: BTreeMap<String, String> = checked(p, "tags")?.into_iter().collect();
    let params: BTreeMap<String, String> = checked(p, "params")?.into_iter().collect();
    let id = format!("m-{}", random_hex(16));
    let now = now_ms();
    let m = LoggedModel {
        artifact_uri: format!("mlflow-artifacts:/{exp}/models/{id}/artifacts"),
        model_id: id.clone(),
        experiment_id: exp,
        name: p.str("name").unwrap_or_else(|| "model".into()),
        creation_timestamp_ms: now,
        last_updated_timestamp_ms: now,
        status: "LOGGED_MODEL_PENDING".into(),
        model_type: p.str("model_type").unwrap_or_default(),
        source_run_id,
        creator: cx.caller.clone(),
        tags,
        params,
    };
    write(cx.reg, &logged_model_key(&id)?, &m, Precondition::IfAbsent).await?;
    Ok(ok(json!({"model": m.json()})))
}

/// The logged model `id`.
pub(crate) async fn logged_model(cx: &Cx<'_>, id: &str) -> Result<LoggedModel, MlError> {
    read::<LoggedModel>(cx.reg, &logged_model_key(id)?)
        .await?
        .map(|(m, _)| m)
        .ok_or_else(|| MlError::missing(format!("Logged model with ID '{id}' not found.")))
}

async fn logged_model_write(
    cx: &Cx<'_>,
    id: &str,
    mut change: impl FnMut(&mut LoggedModel) -> Result<(), MlError>,
) -> Result<LoggedModel, MlError> {
    let caller = cx.caller.clone();
    update(
        cx.reg,
        &logged_model_key(id)?,
        &format!("Logged model with ID '{id}'"),
        |m: &mut LoggedModel| {
            if m.creator != caller {
                return Err(MlError::new(
                    "PERMISSION_DENIED",
                    format!(
                        "logged model {id} belongs to {}; only its creator changes it",
                        m.creator
                    ),
                ));
            }
            change(m)?;
            m.last_updated_timestamp_ms = now_ms();
            Ok(m.clone())
        },
    )
    .await
}

async fn finalize_logged_model(cx: &Cx<'_>, id: &str, p: &Params) -> Answer {
    let status = p.need("status")?;
    if !["LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"].contains(&status.as_str()) {
        return Err(MlError::invalid(format!(
            "a logged model is finalized as LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED, not {status}"
        )));
    }
    let m = logged_model_write(cx, id, |m| {
        m.status = status.clone();
        Ok(())
    })
    .await?;
    Ok(ok(json!({"model": m.json()})))
}

async fn search_logged_models(cx: &Cx<'_>, p: &Params) -> Answer {
    let exps = p.strings("experiment_ids");
    let filter = Filter::parse(&p.str("filter").unwrap_or_default())?;
    let (offset, size) = page(p, 100, 10_000)?;
    let mut found = Vec::new();
    for k in crate::list(cx.reg, layout::MLFLOW_LOGGED_MODELS_PREFIX).await? {
        if let Some((m, _)) = read::<LoggedModel>(cx.reg, &falaj_core::StoreKey::new(k)?).await? {
            let keep = (exps.is_empty() || exps.contains(&m.experiment_id))
                && filter.matches(|i| {
                    use search::Value::{Num, Str};
                    match (i.kind.as_str(), i.key.as_str()) {
                        ("attributes", "name") => Some(Str(m.name.clone())),
                        ("attributes", "model_id") => Some(Str(m.model_id.clone())),
                        ("attributes", "source_run_id") => Some(Str(m.source_run_id.clone())),
                        ("attributes", "status") => Some(Str(m.status.clone())),
                        ("attributes", "creation_timestamp" | "creation_time") => {
                            Some(Num(m.creation_timestamp_ms as f64))
                        }
                        ("tags", k) => m.tags.get(k).map(|v| Str(v.clone())),
                        ("params", k) => m.params.get(k).map(|v| Str(v.clone())),
                        _ => None,
                    }
                });
            if keep {
                found.push(m);
            }
        }
    }
    found.sort_by_key(|m| std::cmp::Reverse(m.creation_timestamp_ms));
    let (items, next) = paged(found, offset, size);
    let mut out = json!({"models": items.iter().map(LoggedModel::json).collect::<Vec<_>>()});
    if let Some(n) = next {
        out["next_page_token"] = json!(n);
    }
    Ok(ok(out))
}
