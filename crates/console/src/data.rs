//! What each page shows, read from the store through the library: the same structs are
//! rendered as HTML and answered as JSON (`Accept: application/json`).

use std::collections::BTreeMap;

use falaj::RegistryError;
use falaj::deploy;
use falaj::gatekeeper::Rejection;
use falaj::registry::{Registry, VersionFilter};
use falaj::store::list_all;
use falaj_core::audit::AuditEvent;
use falaj_core::deployment::DeploymentManifest;
use falaj_core::drift::DriftRule;
use falaj_core::policy::GateReport;
use falaj_core::promotion::Approval;
use falaj_core::version::{DatasetRef, ModelVersion};
use falaj_core::{StoreKey, layout};
use serde::Serialize;

/// A failure to read what a page needs.
pub type Result<T> = std::result::Result<T, RegistryError>;

fn other(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt {
        key: "-".into(),
        reason: e.to_string(),
    }
}

/// What an environment serves.
#[derive(Debug, Clone, Serialize)]
pub struct Serving {
    /// `prod` or `staging`.
    pub env: String,
    /// Champion version.
    pub champion: u64,
    /// Challenger version, if one runs.
    pub challenger: Option<u64>,
    /// Challenger's share, percent.
    pub weight: u8,
    /// `canary` or `shadow`.
    pub mode: String,
    /// Deployment generation.
    pub generation: u64,
    /// Where the edge runs each slot's graph: `champion` and, if one runs, `challenger`, each
    /// `sandbox` or `host` (the node's native tract, which the version's policy allowed).
    pub runtime: Vec<(String, String)>,
    /// How the manifest and the aliases differ, if they do.
    pub divergence: Option<String>,
}

/// A version's last gate outcome.
#[derive(Debug, Clone, Serialize)]
pub struct GateOutcome {
    /// Version.
    pub version: u64,
    /// Report run.
    pub run: u32,
    /// Every gate passed.
    pub passed: bool,
    /// When.
    pub evaluated_at: String,
}

/// A model's drift, as the retraining requests say.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftStatus {
    /// Retraining requests drift made.
    pub retrain_requests: usize,
    /// The newest request's key.
    pub last_request: Option<String>,
    /// The features it named.
    pub drifted: Vec<String>,
}

/// One row of the models page.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    /// Name.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Description.
    pub description: String,
    /// Alias → version.
    pub aliases: BTreeMap<String, u64>,
    /// Highest version number.
    pub latest: Option<u64>,
    /// What each environment serves.
    pub serving: Vec<Serving>,
    /// The latest version's last gate outcome.
    pub last_gate: Option<GateOutcome>,
    /// Drift.
    pub drift: DriftStatus,
}

/// The models page.
#[derive(Debug, Clone, Serialize)]
pub struct ModelsPage {
    /// The filter applied (empty: none).
    pub query: String,
    /// Models that match it.
    pub models: Vec<ModelRow>,
    /// Models in the store.
    pub total: usize,
}

async fn serving(reg: &Registry, model: &str) -> Result<Vec<Serving>> {
    let mut out = Vec::new();
    for env in ["prod", "staging"] {
        let s = deploy::status(reg, model, env).await.map_err(other)?;
        if let Some(m) = &s.manifest {
            out.push(serving_of(m, s.divergence.clone()));
        }
    }
    Ok(out)
}

fn serving_of(m: &DeploymentManifest, divergence: Option<String>) -> Serving {
    Serving {
        env: m.env.clone(),
        champion: m.champion.version,
        challenger: m.challenger.as_ref().map(|c| c.version),
        weight: m.challenger_weight,
        mode: if m.challenger_mode.is_canary() {
            "canary".into()
        } else {
            "shadow".into()
        },
        generation: m.generation,
        runtime: std::iter::once(("champion", &m.champion))
            .chain(m.challenger.as_ref().map(|c| ("challenger", c)))
            .map(|(slot, s)| (slot.to_string(), s.runtime.as_str().to_string()))
            .collect(),
        divergence,
    }
}

async fn drift_status(reg: &Registry, model: &str) -> Result<DriftStatus> {
    let keys = list_all(reg.store().as_ref(), &layout::retrain_prefix(model)).await?;
    let mut out = DriftStatus {
        retrain_requests: keys.len(),
        ..DriftStatus::default()
    };
    if let Some(last) = keys.iter().max() {
        out.last_request = Some(last.clone());
        if let Ok(Some((r, _))) = reg
            .get_json::<falaj::drift::RetrainRequest>(&StoreKey::new(last.clone()).map_err(other)?)
            .await
        {
            out.drifted = r.drifted;
        }
    }
    Ok(out)
}

async fn aliases(reg: &Registry, model: &str) -> Result<BTreeMap<String, u64>> {
    Ok(reg
        .aliases(model)
        .await?
        .into_iter()
        .filter_map(|a| a.version.map(|v| (a.alias, v)))
        .collect())
}

/// Every model whose name, owner or description contains `query` (case-insensitive).
pub async fn models(reg: &Registry, query: &str) -> Result<ModelsPage> {
    let all = reg.models().await?;
    let total = all.len();
    let q = query.trim().to_lowercase();
    let mut rows = Vec::new();
    for m in all {
        let hay = format!("{} {} {}", m.name, m.owner, m.description).to_lowercase();
        if !q.is_empty() && !hay.contains(&q) {
            continue;
        }
        let latest = match reg.latest_version(&m.name).await {
            Ok(0) | Err(RegistryError::ModelNotFound { .. }) => None,
            Ok(n) => Some(n),
            Err(e) => return Err(e),
        };
        let last_gate = match latest {
            Some(v) => falaj::reports::latest_report(reg, &m.name, v)
                .await?
                .map(|r| GateOutcome {
                    version: v,
                    run: r.run,
                    passed: r.passed,
                    evaluated_at: r.evaluated_at,
                }),
            None => None,
        };
        rows.push(ModelRow {
            aliases: aliases(reg, &m.name).await?,
            serving: serving(reg, &m.name).await?,
            drift: drift_status(reg, &m.name).await?,
            latest,
            last_gate,
            owner: m.owner,
            description: m.description,
            name: m.name,
        });
    }
    Ok(ModelsPage {
        query: query.into(),
        models: rows,
        total,
    })
}

/// One version in a model's list.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    /// Number.
    pub version: u64,
    /// Semantic version.
    pub semver: String,
    /// Lifecycle state.
    pub state: String,
    /// Author.
    pub author: String,
    /// Registered at.
    pub created_at: String,
    /// Aliases that point at it.
    pub aliases: Vec<String>,
    /// Last gate outcome.
    pub gates: Option<bool>,
}

/// A model's page.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPage {
    /// The model's row (aliases, serving, drift).
    pub model: ModelRow,
    /// Newest first.
    pub versions: Vec<VersionRow>,
}

/// A model and its versions, newest first.
pub async fn model(reg: &Registry, name: &str) -> Result<ModelPage> {
    let m = reg.model(name).await?;
    let aliases = aliases(reg, name).await?;
    let mut versions = Vec::new();
    for v in reg
        .versions(name, &VersionFilter::default())
        .await?
        .into_iter()
        .rev()
    {
        let state = falaj::promotion::version_state(reg, name, v.version)
            .await
            .map_or_else(|e| format!("unknown ({e})"), |s| s.to_string());
        let gates = falaj::reports::latest_report(reg, name, v.version)
            .await?
            .map(|r| r.passed);
        versions.push(VersionRow {
            version: v.version,
            semver: v.semver,
            state,
            author: v.author,
            created_at: v.created_at,
            aliases: aliases
                .iter()
                .filter(|(_, n)| **n == v.version)
                .map(|(a, _)| a.clone())
                .collect(),
            gates,
        });
    }
    let latest = versions.first().map(|v| v.version);
    let last_gate = match versions.first() {
        Some(v) => falaj::reports::latest_report(reg, name, v.version)
            .await?
            .map(|r| GateOutcome {
                version: v.version,
                run: r.run,
                passed: r.passed,
                evaluated_at: r.evaluated_at,
            }),
        None => None,
    };
    Ok(ModelPage {
        model: ModelRow {
            serving: serving(reg, name).await?,
            drift: drift_status(reg, name).await?,
            aliases,
            latest,
            last_gate,
            owner: m.owner,
            description: m.description,
            name: m.name,
        },
        versions,
    })
}

/// One epoch of the training curve.
#[derive(Debug, Clone, Serialize)]
pub struct Epoch {
    /// 1-based (an MLflow run's step, as logged).
    pub epoch: u64,
    /// Every numeric value recorded for it (`train_loss`, `val_loss`, `val_accuracy`, ...).
    pub values: BTreeMap<String, f64>,
}

/// Where a deployment names a version.
#[derive(Debug, Clone, Serialize)]
pub struct DeployedAs {
    /// Environment.
    pub env: String,
    /// `champion`, `challenger`, `standby` or `history`.
    pub slot: String,
    /// The deployment's generation now.
    pub generation: u64,
    /// The challenger's share when the slot is `challenger`.
    pub weight: Option<u8>,
}

/// The audit chain's verification.
#[derive(Debug, Clone, Serialize)]
pub struct ChainCheck {
    /// No problem found.
    pub intact: bool,
    /// Every problem, first broken link first.
    pub problems: Vec<String>,
    /// Events in the chain.
    pub events: usize,
}

/// A version's lineage.
#[derive(Debug, Clone, Serialize)]
pub struct LineageView {
    /// Datasets it was trained on, with their digests.
    pub datasets: Vec<DatasetRef>,
    /// Training code commit.
    pub code_commit: Option<String>,
    /// Trainer image or binary.
    pub trainer_image: Option<String>,
    /// The version it was derived from.
    pub parent_version: Option<u64>,
    /// Signed deployments that name it.
    pub deployments: Vec<DeployedAs>,
}

/// A version's page: everything an approver decides on.
#[derive(Debug, Clone, Serialize)]
pub struct VersionPage {
    /// The version record.
    pub version: ModelVersion,
    /// Lifecycle state.
    pub state: String,
    /// Aliases that point at it.
    pub aliases: Vec<String>,
    /// The latest gate report.
    pub report: Option<GateReport>,
    /// Gate report runs there are.
    pub report_runs: usize,
    /// Training curve, per epoch (from the training manifest, or the MLflow run's metric
    /// history by step).
    pub curve: Vec<Epoch>,
    /// Where the curve came from.
    pub curve_from: Option<String>,
    /// Lineage.
    pub lineage: LineageView,
    /// Approvals recorded.
    pub approvals: Vec<Approval>,
    /// Approvals the policy asks for production.
    pub approvals_needed: u32,
    /// Rejections recorded.
    pub rejections: Vec<Rejection>,
    /// Its audit events (subject `model@n`), oldest first.
    pub events: Vec<AuditEvent>,
    /// The model's audit chain, verified.
    pub chain: ChainCheck,
}

/// Verifies `model`'s chain.
pub async fn chain(reg: &Registry, model: &str, events: usize) -> Result<ChainCheck> {
    let problems: Vec<String> = reg
        .verify_audit(model)
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(ChainCheck {
        intact: problems.is_empty(),
        problems,
        events,
    })
}

fn curve_of(extra: &BTreeMap<String, serde_json::Value>) -> Vec<Epoch> {
    let Some(epochs) = extra.get("epochs").and_then(|e| e.as_array()) else {
        return Vec::new();
    };
    epochs
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let o = e.as_object()?;
            let epoch = o
                .get("epoch")
                .and_then(|x| x.as_u64())
                .unwrap_or(i as u64 + 1);
            let values = o
                .iter()
                .filter(|(k, _)| *k != "epoch")
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect();
            Some(Epoch { epoch, values })
        })
        .collect()
}

fn deployed_as(m: &DeploymentManifest, version: u64) -> Vec<DeployedAs> {
    let mut out = Vec::new();
    let mut add = |slot: &str, weight: Option<u8>| {
        out.push(DeployedAs {
            env: m.env.clone(),
            slot: slot.into(),
            generation: m.generation,
            weight,
        });
    };
    if m.champion.version == version {
        add("champion", None);
    }
    if m.challenger.as_ref().is_some_and(|c| c.version == version) {
        add("challenger", Some(m.challenger_weight));
    }
    if m.standby.as_ref().is_some_and(|c| c.version == version) {
        add("standby", None);
    }
    if m.history.iter().any(|s| s.version == version) {
        add("history", None);
    }
    out
}

/// Everything about `model@version`.
pub async fn version(reg: &Registry, model: &str, n: u64) -> Result<VersionPage> {
    let v = reg.version(model, n).await?;
    let state = falaj::promotion::version_state(reg, model, n)
        .await
        .map_or_else(|e| format!("unknown ({e})"), |s| s.to_string());
    let aliases = aliases(reg, model)
        .await?
        .into_iter()
        .filter(|(_, x)| *x == n)
        .map(|(a, _)| a)
        .collect();
    let mut reports = falaj::reports::reports(reg, model, n).await?;
    let report_runs = reports.len();
    let report = reports.pop();
    let manifest = reg.training_manifest(&v).await?;
    let mut curve = manifest
        .as_ref()
        .map_or_else(Vec::new, |m| curve_of(&m.extra));
    let mut curve_from = (!curve.is_empty()).then(|| "training manifest (falaj-train)".to_string());
    if curve.is_empty()
        && let Ok(Some((run, steps))) = falaj_mlflow::tracking::version_curve(reg, model, n).await
    {
        curve = steps
            .into_iter()
            .map(|(step, values)| Epoch {
                epoch: step.max(0) as u64,
                values,
            })
            .collect();
        curve_from = Some(format!("MLflow run {run}"));
    }
    let mut deployments = Vec::new();
    for env in ["prod", "staging"] {
        if let Some(m) = deploy::status(reg, model, env)
            .await
            .map_err(other)?
            .manifest
        {
            deployments.extend(deployed_as(&m, n));
        }
    }
    let approvals = falaj::access::approvals(reg, model, n)
        .await
        .map_err(other)?;
    let approvals_needed = match falaj::gatekeeper::attached_policy(reg, model).await {
        Ok(Some(p)) => p.policy.approvals,
        _ => falaj_core::policy::DEFAULT_APPROVALS,
    };
    let subject = format!("{model}@{n}");
    let all = reg.audit_events(model).await?;
    let total = all.len();
    let rejections = falaj::gatekeeper::rejections(model, &all)
        .into_iter()
        .filter(|r| r.version == n)
        .collect();
    let events: Vec<AuditEvent> = all
        .into_iter()
        .map(|(_, _, e)| e)
        .filter(|e| e.subject == subject)
        .collect();
    Ok(VersionPage {
        lineage: LineageView {
            datasets: v.lineage.datasets.clone(),
            code_commit: v.lineage.code_commit.clone(),
            trainer_image: v.lineage.trainer_image.clone(),
            parent_version: v.lineage.parent_version,
            deployments,
        },
        chain: chain(reg, model, total).await?,
        version: v,
        state,
        aliases,
        report,
        report_runs,
        curve,
        curve_from,
        approvals,
        approvals_needed,
        rejections,
        events,
    })
}

/// What one edge node reported for a deployment, from its telemetry keys.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSeen {
    /// Node name.
    pub node: String,
    /// The first window it wrote for the current generation: when it had applied it.
    pub applied_at: Option<String>,
    /// Its newest window's stamp.
    pub last_seen: String,
    /// The generation of its newest live window, if it wrote any.
    pub generation: Option<u64>,
    /// Versions in its newest windows.
    pub versions: Vec<u64>,
}

/// A deployment, as signed and as the nodes report it.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentView {
    /// Model.
    pub model: String,
    /// The verified manifest's summary.
    pub serving: Serving,
    /// How the last change was made.
    pub strategy: String,
    /// Who made it.
    pub updated_by: String,
    /// When.
    pub updated_at: String,
    /// The signing key's id.
    pub key_id: String,
    /// Previous champions, oldest first.
    pub history: Vec<u64>,
    /// Edge nodes that reported on it.
    pub nodes: Vec<NodeSeen>,
    /// Divergence and lagging nodes, in words.
    pub warnings: Vec<String>,
}

/// The deployments page.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentsPage {
    /// Only this model's (all when `None`).
    pub model: Option<String>,
    /// Every signed deployment, by environment then model.
    pub deployments: Vec<DeploymentView>,
}

/// `telemetry/<env>/<node>/<model>/<file>`: (node, stamp, version, generation of a live window).
fn telemetry_entry<'a>(key: &'a str, model: &str) -> Option<(&'a str, &'a str, u64, Option<u64>)> {
    let mut p = key.split('/');
    let (Some("telemetry"), Some(_), Some(node), Some(m), Some(file), None) =
        (p.next(), p.next(), p.next(), p.next(), p.next(), p.next())
    else {
        return None;
    };
    if m != model {
        return None;
    }
    let generation = falaj_core::live::window_generation(key, model);
    let stem = file
        .strip_suffix(".live.json")
        .or_else(|| file.strip_suffix(".json"))?;
    let (stamp, rest) = stem.split_once("-v")?;
    let version = rest.split('-').next()?.parse().ok()?;
    Some((node, stamp, version, generation))
}

async fn nodes(reg: &Registry, m: &DeploymentManifest) -> Result<Vec<NodeSeen>> {
    let mut by: BTreeMap<String, NodeSeen> = BTreeMap::new();
    for k in list_all(reg.store().as_ref(), &layout::telemetry_prefix(&m.env)).await? {
        let Some((node, stamp, version, generation)) = telemetry_entry(&k, &m.model) else {
            continue;
        };
        let e = by.entry(node.to_string()).or_insert_with(|| NodeSeen {
            node: node.to_string(),
            applied_at: None,
            last_seen: String::new(),
            generation: None,
            versions: Vec::new(),
        });
        if generation == Some(m.generation) && e.applied_at.as_deref().is_none_or(|f| stamp < f) {
            e.applied_at = Some(stamp.to_string());
        }
        match stamp.cmp(e.last_seen.as_str()) {
            std::cmp::Ordering::Greater => {
                e.last_seen = stamp.to_string();
                e.generation = generation;
                e.versions = vec![version];
            }
            std::cmp::Ordering::Equal => {
                if !e.versions.contains(&version) {
                    e.versions.push(version);
                    e.versions.sort_unstable();
                }
                e.generation = e.generation.max(generation);
            }
            std::cmp::Ordering::Less => {}
        }
    }
    Ok(by.into_values().collect())
}

/// Every signed deployment (of `model`, if given), with what the nodes report.
pub async fn deployments(reg: &Registry, model: Option<&str>) -> Result<DeploymentsPage> {
    let mut out = Vec::new();
    for s in deploy::list(reg).await.map_err(other)? {
        if model.is_some_and(|m| m != s.model) {
            continue;
        }
        let Some(m) = &s.manifest else { continue };
        let key_id = reg
            .store()
            .get(&deploy::deployment_key(&s.env, &s.model))
            .await?
            .and_then(|o| {
                serde_json::from_slice::<falaj_core::deployment::SignedDeployment>(&o.bytes).ok()
            })
            .map(|d| d.key_id)
            .unwrap_or_default();
        let nodes = nodes(reg, m).await?;
        let mut warnings: Vec<String> = s.divergence.iter().cloned().collect();
        let serving_now: Vec<u64> = std::iter::once(m.champion.version)
            .chain(m.challenger.as_ref().map(|c| c.version))
            .collect();
        for n in &nodes {
            if let Some(g) = n.generation.filter(|g| *g < m.generation) {
                warnings.push(format!(
                    "node {} last reported generation {g} (at {}); the signed deployment is generation {}",
                    n.node, n.last_seen, m.generation
                ));
            } else if n.versions.iter().any(|v| !serving_now.contains(v)) && n.generation.is_none()
            {
                warnings.push(format!(
                    "node {} last reported v{:?} (at {}); the deployment serves {:?}",
                    n.node, n.versions, n.last_seen, serving_now
                ));
            }
        }
        out.push(DeploymentView {
            model: s.model.clone(),
            serving: serving_of(m, s.divergence.clone()),
            strategy: format!("{:?}", m.strategy).to_lowercase(),
            updated_by: m.updated_by.clone(),
            updated_at: m.updated_at.clone(),
            key_id,
            history: m.history.iter().map(|h| h.version).collect(),
            nodes,
            warnings,
        });
    }
    Ok(DeploymentsPage {
        model: model.map(String::from),
        deployments: out,
    })
}

/// A retraining request, in a line.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    /// Its key.
    pub key: String,
    /// When.
    pub requested_at: String,
    /// The version that drifted.
    pub version: u64,
    /// Features named.
    pub drifted: Vec<String>,
}

/// The drift page.
#[derive(Debug, Clone, Serialize)]
pub struct DriftPage {
    /// Model.
    pub model: String,
    /// Environment.
    pub env: String,
    /// The served champion.
    pub version: Option<u64>,
    /// The rule (threshold) the line shows.
    pub rule: DriftRule,
    /// PSI per feature, per window, oldest first.
    pub points: Vec<falaj::drift::DriftPoint>,
    /// Retraining requests, newest first.
    pub requests: Vec<RequestRow>,
    /// Why there is no history, when there is none.
    pub note: Option<String>,
}

/// The windows the drift page plots at most.
pub const DRIFT_WINDOWS: usize = 60;

/// Drift of `model`'s served champion in `env`.
pub async fn drift(reg: &Registry, model: &str, env: &str) -> Result<DriftPage> {
    reg.model(model).await?;
    let rule = DriftRule::default();
    let (version, points, note) =
        match falaj::drift::history(reg, env, model, rule, DRIFT_WINDOWS).await {
            Ok((v, p)) => (v, p, None),
            Err(e) => (None, Vec::new(), Some(e.to_string())),
        };
    let mut requests = Vec::new();
    for k in list_all(reg.store().as_ref(), &layout::retrain_prefix(model)).await? {
        if let Ok(Some((r, _))) = reg
            .get_json::<falaj::drift::RetrainRequest>(&StoreKey::new(k.clone()).map_err(other)?)
            .await
        {
            requests.push(RequestRow {
                key: k,
                requested_at: r.requested_at,
                version: r.version,
                drifted: r.drifted,
            });
        }
    }
    requests.reverse();
    Ok(DriftPage {
        model: model.into(),
        env: falaj::drift::env_name(env),
        note: note.or_else(|| match (version, points.is_empty()) {
            (None, _) => Some(format!("{model} is not deployed in {env}")),
            (Some(v), true) => Some(format!("no feature sketches of v{v} in telemetry/ yet")),
            _ => None,
        }),
        version,
        rule,
        points,
        requests,
    })
}

/// Audit events a page shows.
pub const AUDIT_PAGE: usize = 50;

/// The audit page.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    /// Model.
    pub model: String,
    /// 1-based page, newest events first.
    pub page: usize,
    /// Pages.
    pub pages: usize,
    /// The page's events, newest first.
    pub events: Vec<AuditEvent>,
    /// The chain, verified.
    pub chain: ChainCheck,
}

/// Page `page` of `model`'s audit log.
pub async fn audit(reg: &Registry, model: &str, page: usize) -> Result<AuditPage> {
    reg.model(model).await?;
    let mut all: Vec<AuditEvent> = reg
        .audit_events(model)
        .await?
        .into_iter()
        .map(|(_, _, e)| e)
        .collect();
    let total = all.len();
    all.reverse();
    let pages = total.div_ceil(AUDIT_PAGE).max(1);
    let page = page.clamp(1, pages);
    let events = all
        .into_iter()
        .skip((page - 1) * AUDIT_PAGE)
        .take(AUDIT_PAGE)
        .collect();
    Ok(AuditPage {
        model: model.into(),
        page,
        pages,
        events,
        chain: chain(reg, model, total).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_keys_name_node_stamp_version_and_generation() {
        assert_eq!(
            telemetry_entry("telemetry/prod/n1/wine/20261204T101500Z-v3.json", "wine"),
            Some(("n1", "20261204T101500Z", 3, None))
        );
        assert_eq!(
            telemetry_entry(
                "telemetry/prod/n1/wine/20261204T101500Z-v3-challenger-g7.live.json",
                "wine"
            ),
            Some(("n1", "20261204T101500Z", 3, Some(7)))
        );
        assert_eq!(
            telemetry_entry("telemetry/prod/n1/other/x-v3.json", "wine"),
            None
        );
        assert_eq!(
            telemetry_entry("telemetry/prod/n1/wine/garbage.json", "wine"),
            None
        );
    }

    #[test]
    fn the_curve_reads_every_number_of_every_epoch() {
        let extra: BTreeMap<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "epochs": [{"epoch": 1, "train_loss": 0.7, "val_accuracy": 0.8}, {"epoch": 2, "train_loss": 0.5, "note": "x"}]
        }))
        .unwrap();
        let c = curve_of(&extra);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].values["val_accuracy"], 0.8);
        assert_eq!(c[1].values.len(), 1);
        assert!(curve_of(&BTreeMap::new()).is_empty());
    }
}
