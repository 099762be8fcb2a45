//! Store keys and the store layout.
//!
//! A [`StoreKey`] is a relative, `/`-separated path that cannot escape the store root
//! whatever backend it lands on: no absolute paths, no `.`/`..` segments, no empty segments,
//! no NUL or control characters, no backslashes. Segments starting with `.` are reserved
//! for the backends' own bookkeeping (temporary files, locks).
//!
//! The functions below are the only place the layout of `DESIGN.md` is spelled out.

use std::fmt;

/// Longest key accepted (S3's own limit is 1024 bytes).
pub const MAX_KEY_LEN: usize = 1024;

/// A validated store key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct StoreKey(String);

/// A key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store key {key:?}: {reason}")]
pub struct KeyError {
    /// The key as given.
    pub key: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl StoreKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        let reason = if key.is_empty() {
            Some("it is empty")
        } else if key.len() > MAX_KEY_LEN {
            Some("it is longer than 1024 bytes")
        } else if key.starts_with('/') {
            Some("it is an absolute path")
        } else if key.chars().any(|c| c.is_control()) {
            Some("it contains NUL or a control character")
        } else if key.contains('\\') {
            Some("it contains a backslash")
        } else if key.split('/').any(|s| s.is_empty()) {
            Some("it has an empty path segment")
        } else if key.split('/').any(|s| s == "." || s == "..") {
            Some("it has a '.' or '..' segment")
        } else if key.split('/').any(|s| s.starts_with('.')) {
            Some("segments starting with '.' are reserved")
        } else if key.len() >= 2 && key.as_bytes()[1] == b':' {
            Some("it looks like a drive path")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(KeyError { key, reason }),
            None => Ok(Self(key)),
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StoreKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn key(s: String) -> StoreKey {
    // Only called with validated names and numbers; a failure here is a bug in this module.
    StoreKey::new(s).expect("layout builds only valid keys")
}

/// `blobs/sha256/<hex>`
pub fn blob(hex: &str) -> StoreKey {
    key(format!("blobs/sha256/{hex}"))
}
/// `models/<name>/model.json`
pub fn model(name: &str) -> StoreKey {
    key(format!("models/{name}/model.json"))
}
/// `models/` — prefix of every model.
pub const MODELS_PREFIX: &str = "models/";
/// `models/<name>/versions/<n>.json`
pub fn version(name: &str, n: u64) -> StoreKey {
    key(format!("models/{name}/versions/{n}.json"))
}
/// `models/<name>/versions/` — prefix of the version records (and their reports).
pub fn versions_prefix(name: &str) -> String {
    format!("models/{name}/versions/")
}
/// `models/<name>/versions/<n>/tags.json` — mutable tags of an immutable version.
pub fn version_tags(name: &str, n: u64) -> StoreKey {
    key(format!("models/{name}/versions/{n}/tags.json"))
}
/// `models/<name>/versions/<n>/gates.json`
pub fn gate_report(name: &str, n: u64) -> StoreKey {
    key(format!("models/{name}/versions/{n}/gates.json"))
}
/// `models/<name>/aliases/<alias>.json`
pub fn alias(name: &str, alias: &str) -> StoreKey {
    key(format!("models/{name}/aliases/{alias}.json"))
}
/// `models/<name>/aliases/`
pub fn aliases_prefix(name: &str) -> String {
    format!("models/{name}/aliases/")
}
/// `audit/<name>/<seq>.json`, `seq` zero-padded so listings sort in order.
pub fn audit_event(name: &str, seq: u64) -> StoreKey {
    key(format!("audit/{name}/{seq:012}.json"))
}
/// `audit/<name>/`
pub fn audit_prefix(name: &str) -> String {
    format!("audit/{name}/")
}
/// `audit/<name>/head.json` — the chain's latest `(seq, hash)`, moved forward by
/// compare-and-swap after every append, so a truncated chain is noticed.
pub fn audit_head(name: &str) -> StoreKey {
    key(format!("audit/{name}/head.json"))
}
/// `keys/deploy.pub` — the deployment public key falaj publishes (edge nodes pin their own).
pub fn deploy_public_key() -> StoreKey {
    key("keys/deploy.pub".into())
}
/// `incoming/` — where uploads wait to be registered.
pub const INCOMING_PREFIX: &str = "incoming/";
/// `deployments/` — the signed deployment manifests, one directory per environment.
pub const DEPLOYMENTS_PREFIX: &str = "deployments/";
/// `deployments/<env>/` (`prod`, `staging`).
pub fn deployments_prefix(env: &str) -> String {
    format!("{DEPLOYMENTS_PREFIX}{env}/")
}
/// `deployments/<env>/<model>.json`; `production` is spelled `prod` there, as the fleet reads it.
pub fn deployment(env: &str, model: &str) -> StoreKey {
    let env = crate::promotion::Stage::for_env(env).map_or(env, |s| s.env());
    key(format!("{}{model}.json", deployments_prefix(env)))
}
/// The one rule for deployment keys: `(env, model)` out of exactly
/// `deployments/<env>/<model>.json` with a valid model name; anything else (a deeper key, a
/// hand-made object) is no deployment.
pub fn parse_deployment_key(key: &str) -> Option<(&str, &str)> {
    let (env, file) = key.strip_prefix(DEPLOYMENTS_PREFIX)?.split_once('/')?;
    let model = file.strip_suffix(".json")?;
    (!env.is_empty() && crate::validate_model_name(model).is_ok()).then_some((env, model))
}

/// `models/<name>/versions/<n>/` — what belongs to one version (reports, tags, markers).
pub fn version_dir(name: &str, n: u64) -> String {
    format!("models/{name}/versions/{n}/")
}
/// `models/<name>/versions/<n>/gates.json` for run 1, `gates-<run>.json` after.
pub fn gate_report_run(name: &str, n: u64, run: u32) -> StoreKey {
    if run <= 1 {
        gate_report(name, n)
    } else {
        key(format!("{}gates-{run}.json", version_dir(name, n)))
    }
}
/// The run of a gate report key of `name@n` (`gates.json` is run 1), `None` for any other key.
pub fn parse_gate_report_run(name: &str, n: u64, key: &str) -> Option<u32> {
    let rest = key.strip_prefix(&version_dir(name, n))?;
    if rest == "gates.json" {
        return Some(1);
    }
    rest.strip_prefix("gates-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}
/// `models/<name>/versions/<n>/archived.json` — written once a version leaves production.
pub fn archived(name: &str, n: u64) -> StoreKey {
    key(format!("{}archived.json", version_dir(name, n)))
}
/// `models/<name>/approvals/`
pub fn approvals_of_model(name: &str) -> String {
    format!("models/{name}/approvals/")
}
/// `models/<name>/approvals/<n>/`
pub fn approvals_prefix(name: &str, n: u64) -> String {
    format!("{}{n}/", approvals_of_model(name))
}
/// `models/<name>/approvals/<n>/<who>.json` (`who` a validated identity).
pub fn approval(name: &str, n: u64, who: &str) -> StoreKey {
    key(format!("{}{who}.json", approvals_prefix(name, n)))
}
/// `roles.json` — who holds which role, store-wide.
pub fn roles() -> StoreKey {
    key("roles.json".into())
}
/// `incoming/<name>/` — where uploads of one model wait.
pub fn incoming_prefix(name: &str) -> String {
    format!("{INCOMING_PREFIX}{name}/")
}
/// `incoming/<name>/<run>/<file>`; `run` is the uploader's and may be refused.
pub fn incoming_file(name: &str, run: &str, file: &str) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("{}{run}/{file}", incoming_prefix(name)))
}
/// `idempotency/ingest/<hex>.json` — the claim of one upload.
pub fn ingest_claim(hex: &str) -> StoreKey {
    key(format!("idempotency/ingest/{hex}.json"))
}
/// `idempotency/webhook/<hex>.json` — a signed request, claimed once.
pub fn webhook_claim(hex: &str) -> StoreKey {
    key(format!("idempotency/webhook/{hex}.json"))
}
/// `keys/oidc/<issuer host>.json` — the pinned JSON Web Key Set of a CI platform's tokens.
pub fn oidc_keys(host: &str) -> StoreKey {
    key(format!("keys/oidc/{host}.json"))
}
/// `idempotency/<request key>` — the claim of a retraining request.
pub fn retrain_claim(request: &str) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("idempotency/{request}"))
}
/// `retrain/<name>/` — retraining requests of one model.
pub fn retrain_prefix(name: &str) -> String {
    format!("retrain/{name}/")
}
/// `datasets/<name>/` — the data a model may be trained or retrained on.
pub fn datasets_prefix(name: &str) -> String {
    format!("datasets/{name}/")
}
/// `datasets/<name>/<file>`; `file` may be refused.
pub fn dataset(name: &str, file: &str) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("{}{file}", datasets_prefix(name)))
}
/// `datasets/<name>/labelled/` — labelled rows that arrived after training.
pub fn labelled_prefix(name: &str) -> String {
    format!("{}labelled/", datasets_prefix(name))
}
/// `telemetry/<env>/`
pub fn telemetry_prefix(env: &str) -> String {
    format!("telemetry/{env}/")
}
/// `telemetry/<env>/<node>/<model>/<stamp>-v<version>.json` — one node's sketches of a window.
pub fn telemetry(env: &str, node: &str, model: &str, stamp: &str, version: u64) -> String {
    format!(
        "{}{node}/{model}/{stamp}-v{version}.json",
        telemetry_prefix(env)
    )
}
/// `mlflow/` — what the MLflow API (`falaj-mlflow`) keeps: experiments, runs, logged
/// models, artifacts, and the MLflow side of registered versions. Nothing under it is read by
/// the gates or the edge: a version's bytes are copied into `blobs/` when it is registered.
pub const MLFLOW_PREFIX: &str = "mlflow/";
/// `mlflow/experiments/` — one JSON object per experiment.
pub const MLFLOW_EXPERIMENTS_PREFIX: &str = "mlflow/experiments/";
/// `mlflow/experiments/<id>.json`
pub fn mlflow_experiment(id: &str) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("{MLFLOW_EXPERIMENTS_PREFIX}{id}.json"))
}
/// `mlflow/experiment-names/<sha256 of the name>.json` — created once: a name is unique.
pub fn mlflow_experiment_name(name_sha256: &str) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("mlflow/experiment-names/{name_sha256}.json"))
}
/// `mlflow/experiment-runs/<experiment>/` — one empty marker per run of an experiment.
pub fn mlflow_experiment_runs_prefix(experiment: &str) -> String {
    format!("mlflow/experiment-runs/{experiment}/")
}
/// `mlflow/runs/<run>/run.json` — a run's info, params, tags, inputs and outputs.
pub fn mlflow_run(run: &str) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("mlflow/runs/{run}/run.json"))
}
/// `mlflow/runs/<run>/metrics/` — one create-only object per batch of logged metrics.
pub fn mlflow_run_metrics_prefix(run: &str) -> String {
    format!("mlflow/runs/{run}/metrics/")
}
/// `mlflow/logged-models/<model id>.json`
pub fn mlflow_logged_model(id: &str) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("mlflow/logged-models/{id}.json"))
}
/// `mlflow/logged-models/`
pub const MLFLOW_LOGGED_MODELS_PREFIX: &str = "mlflow/logged-models/";
/// `mlflow/artifacts/` — what clients upload through `mlflow-artifacts`.
pub const MLFLOW_ARTIFACTS_PREFIX: &str = "mlflow/artifacts/";
/// `mlflow/versions/<name>/<n>.json` — the MLflow side of a registered version (run, source,
/// the model directory's files as blob digests).
pub fn mlflow_version(name: &str, n: u64) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("mlflow/versions/{name}/{n}.json"))
}
/// `mlflow/rejected/<name>/<id>.json` — a model-version create that found no usable model.
pub fn mlflow_rejected(name: &str, id: &str) -> Result<StoreKey, KeyError> {
    StoreKey::new(format!("mlflow/rejected/{name}/{id}.json"))
}
/// `tmp/falaj-probe/<hex>` — the throw-away object that checks a store's conditional writes.
pub fn probe(hex: &str) -> StoreKey {
    key(format!("tmp/falaj-probe/{hex}"))
}

/// Parses a version number out of `models/<name>/versions/<n>.json`.
pub fn parse_version_key(name: &str, key: &str) -> Option<u64> {
    key.strip_prefix(&versions_prefix(name))?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// Parses a sequence number out of `audit/<name>/<seq>.json`.
pub fn parse_audit_key(name: &str, key: &str) -> Option<u64> {
    key.strip_prefix(&audit_prefix(name))?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        for k in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a/./b",
            "a//b",
            "a\0b",
            "a\nb",
            "a\\b",
            "C:/x",
            ".tmp/x",
            "a/.locks/1",
            "a/",
        ] {
            assert!(StoreKey::new(k).is_err(), "{k:?} should be refused");
        }
        assert!(StoreKey::new("x".repeat(1025)).is_err());
    }

    #[test]
    fn accepts_real_keys() {
        for k in [
            "blobs/sha256/ab",
            "incoming/m/run 1/model.onnx",
            "incoming/m/r+1/é.onnx",
            "a..b/c",
        ] {
            StoreKey::new(k).unwrap();
        }
        assert_eq!(audit_event("m", 7).as_str(), "audit/m/000000000007.json");
        assert_eq!(
            parse_version_key("m", "models/m/versions/12.json"),
            Some(12)
        );
        assert_eq!(
            parse_version_key("m", "models/m/versions/12/gates.json"),
            None
        );
        assert_eq!(parse_audit_key("m", audit_event("m", 3).as_str()), Some(3));
    }

    #[test]
    fn deployment_keys_have_one_rule() {
        assert_eq!(
            deployment("production", "bc").as_str(),
            "deployments/prod/bc.json"
        );
        assert_eq!(
            deployment("staging", "bc").as_str(),
            "deployments/staging/bc.json"
        );
        assert_eq!(
            parse_deployment_key("deployments/prod/bc.json"),
            Some(("prod", "bc"))
        );
        for k in [
            "deployments/prod/a/bc.json",
            "deployments/prod/bc.txt",
            "deployments/bc.json",
            "deployments//bc.json",
            "deployments/prod/.json",
            "deployments/prod/Bad Name.json",
            "models/bc/model.json",
        ] {
            assert_eq!(parse_deployment_key(k), None, "{k}");
        }
    }
}
