//! MLflow's artifact service (`/api/2.0/mlflow-artifacts/artifacts[/<path>]`): uploads,
//! downloads and listings under `mlflow/artifacts/` in the store.
//!
//! - A path is a store key below `mlflow/artifacts/`, so `..`, empty segments, backslashes
//!   and absolute paths are refused before anything is read.
//! - Uploads go only into a run's artifact directory (`<experiment>/<run>/artifacts/...`) or
//!   a logged model's (`<experiment>/models/<id>/artifacts/...`), by that run's or model's
//!   creator.
//! - `_registry/<model>/<n>/` is a registered version's model directory, read back from the
//!   blobs its files were copied to at registration (the digests are in
//!   `mlflow/versions/<model>/<n>.json`): what `models:/<model>/<n>` downloads cannot change
//!   after registration, whatever is written to the run's artifacts later. Nothing is
//!   written there through this API.

use bytes::Bytes;
use falaj::store::Precondition;
use falaj_core::{StoreKey, layout};
use falaj_webhook::{HttpRequest, HttpResponse};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::registry::VersionSide;
use crate::{Answer, Cx, MlError, ok};

/// The top directory of registered versions' files.
pub const REGISTRY_DIR: &str = "_registry";

pub(crate) async fn route(cx: &Cx<'_>, req: &HttpRequest, rest: &str) -> Answer {
    let method = req.method.as_str();
    if rest == "/artifacts" && method == "GET" {
        let path = req.query_param("path").unwrap_or("").trim_matches('/');
        return list(cx, path).await;
    }
    if let (Some(raw), "GET") = (rest.strip_prefix("/presigned/"), method) {
        let path = falaj_webhook::http::percent_decode(raw, false);
        return presigned(cx, path.trim_end_matches('/')).await;
    }
    let Some(raw) = rest.strip_prefix("/artifacts/") else {
        return Err(crate::not_found_endpoint(method, &req.path));
    };
    let path = falaj_webhook::http::percent_decode(raw, false);
    let path = path.trim_end_matches('/');
    match method {
        "GET" => download(cx, path).await,
        "PUT" => upload(cx, path, req.body.clone()).await,
        _ => Err(MlError::new(
            "PERMISSION_DENIED",
            format!(
                "{method} on artifacts is not allowed: falaj keeps what was logged (objects under mlflow/ are never deleted through the API)"
            ),
        )),
    }
}

/// The store key of artifact `path`, or why it is refused.
pub(crate) fn key_of(path: &str) -> Result<StoreKey, MlError> {
    StoreKey::new(format!("{}{path}", layout::MLFLOW_ARTIFACTS_PREFIX))
        .map_err(|e| MlError::invalid(format!("invalid artifact path {path:?}: {}", e.reason)))
}

/// Who may write under `path`: the creator of the run or logged model it belongs to.
async fn owner_of(cx: &Cx<'_>, path: &str) -> Result<String, MlError> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [_exp, "models", id, "artifacts", _, ..] => {
            Ok(crate::tracking::logged_model(cx, id).await?.creator)
        }
        [_exp, run, "artifacts", _, ..] => {
            Ok(crate::tracking::get_run(cx, run).await?.info.user_id)
        }
        _ => Err(MlError::new(
            "PERMISSION_DENIED",
            format!(
                "artifacts are uploaded into a run's or a logged model's artifact directory (<experiment>/<run>/artifacts/... or <experiment>/models/<id>/artifacts/...), not {path:?}"
            ),
        )),
    }
}

async fn upload(cx: &Cx<'_>, path: &str, body: Bytes) -> Answer {
    let key = key_of(path)?;
    if path.split('/').next() == Some(REGISTRY_DIR) {
        return Err(MlError::new(
            "PERMISSION_DENIED",
            format!("{REGISTRY_DIR}/ holds registered versions' files, which never change"),
        ));
    }
    let owner = owner_of(cx, path).await?;
    if owner != cx.caller {
        return Err(MlError::new(
            "PERMISSION_DENIED",
            format!("{path} belongs to {owner}'s run or model; only its creator uploads there"),
        ));
    }
    cx.reg
        .store()
        .put(&key, body, Precondition::None)
        .await
        .map_err(falaj::RegistryError::from)?;
    Ok(ok(json!({})))
}

fn bytes_response(body: Bytes) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        body,
    }
}

/// `_registry/<model>/<n>` split, if `path` is in it.
fn registry_path(path: &str) -> Option<(&str, &str, Option<&str>)> {
    let rest = path.strip_prefix(REGISTRY_DIR)?.strip_prefix('/')?;
    let mut it = rest.splitn(3, '/');
    let model = it.next()?;
    let n = it.next()?;
    Some((model, n, it.next()))
}

async fn version_side(cx: &Cx<'_>, model: &str, n: &str) -> Result<VersionSide, MlError> {
    let n: u64 = n
        .parse()
        .map_err(|_| MlError::missing(format!("no registered version {model}/{n}")))?;
    falaj_core::validate_model_name(model)
        .map_err(|_| MlError::missing(format!("no registered model {model}")))?;
    crate::registry::version_side(cx, model, n)
        .await?
        .ok_or_else(|| MlError::missing(format!("{model} version {n} has no files here")))
}

/// How long a presigned download URL is good for.
pub const PRESIGNED_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Whether this store hands out presigned downloads (S3 does), which `server-info` tells the
/// client so that it fetches large files from the store, not through the function.
pub(crate) fn presigns(hook: &falaj_webhook::Webhook) -> bool {
    hook.registry().store().uri().starts_with("s3://")
}

/// `GET /mlflow-artifacts/presigned/<path>`: a URL to read the file straight from the store
/// for 15 minutes, with its size when it is known (a registered version's files). 501 where
/// the store has none, and the client then downloads through the server.
async fn presigned(cx: &Cx<'_>, path: &str) -> Answer {
    let (key, size) = match registry_path(path) {
        Some((model, n, file)) => {
            let side = version_side(cx, model, n).await?;
            let file = file.unwrap_or_default();
            let digest = side.files.get(file).ok_or_else(|| {
                MlError::missing(format!("{model} version {n} has no file {file:?}"))
            })?;
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            (layout::blob(hex), side.sizes.get(file).copied())
        }
        None => (key_of(path)?, None),
    };
    let url = cx
        .reg
        .store()
        .presign_get(&key, PRESIGNED_FOR)
        .await
        .map_err(falaj::RegistryError::from)?
        .ok_or_else(|| {
            MlError::new(
                "NOT_IMPLEMENTED",
                "this store has no presigned downloads (dir://); download through /api/2.0/mlflow-artifacts/artifacts",
            )
        })?;
    let mut out = json!({"url": url, "headers": {}});
    if let Some(n) = size {
        out["file_size"] = json!(n);
    }
    Ok(ok(out))
}

async fn download(cx: &Cx<'_>, path: &str) -> Answer {
    if let Some((model, n, file)) = registry_path(path) {
        let side = version_side(cx, model, n).await?;
        let file = file.unwrap_or_default();
        let Some(digest) = side.files.get(file) else {
            return Err(MlError::missing(format!(
                "{model} version {n} has no file {file:?}"
            )));
        };
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let obj = cx
            .reg
            .store()
            .get(&layout::blob(hex))
            .await
            .map_err(falaj::RegistryError::from)?
            .ok_or_else(|| MlError::missing(format!("the blob of {path} is missing")))?;
        return Ok(bytes_response(obj.bytes));
    }
    let key = key_of(path)?;
    match cx
        .reg
        .store()
        .get(&key)
        .await
        .map_err(falaj::RegistryError::from)?
    {
        Some(o) => Ok(bytes_response(o.bytes)),
        None => Err(MlError::missing(format!("no artifact at {path}"))),
    }
}

async fn list(cx: &Cx<'_>, path: &str) -> Answer {
    if let Some((model, n, sub)) = registry_path(path) {
        let side = version_side(cx, model, n).await?;
        let prefix = sub.map(|s| format!("{s}/")).unwrap_or_default();
        let names: Vec<(String, Option<u64>)> = side
            .files
            .keys()
            .filter_map(|f| {
                f.strip_prefix(&prefix)
                    .map(|r| (r.to_string(), side.sizes.get(f).copied()))
            })
            .collect();
        return Ok(ok(json!({"files": children(names)})));
    }
    let prefix = if path.is_empty() {
        layout::MLFLOW_ARTIFACTS_PREFIX.to_string()
    } else {
        format!("{}/", key_of(path)?)
    };
    // A listing says no size for these files: the store lists keys only, and reading each
    // file to measure it would download the whole directory. MLflow's `file_size` is
    // optional; registered versions' files have theirs (above).
    let names = crate::list(cx.reg, &prefix)
        .await?
        .into_iter()
        .map(|k| (k[prefix.len()..].to_string(), None))
        .collect();
    Ok(ok(json!({"files": children(names)})))
}

/// The immediate children of a directory, from the relative paths of everything below it.
fn children(names: Vec<(String, Option<u64>)>) -> Vec<serde_json::Value> {
    let mut out: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for (rel, size) in names {
        match rel.split_once('/') {
            Some((dir, _)) => {
                out.insert(dir.to_string(), json!({"path": dir, "is_dir": true}));
            }
            None if !rel.is_empty() => {
                let mut file = json!({"path": rel, "is_dir": false});
                if let Some(n) = size {
                    file["file_size"] = json!(n);
                }
                out.insert(rel, file);
            }
            None => {}
        }
    }
    out.into_values().collect()
}

/// The files of the model directory `dir` (an artifact path), relative to it, with bytes.
pub(crate) async fn read_dir(cx: &Cx<'_>, dir: &str) -> Result<Vec<(String, Bytes)>, MlError> {
    let prefix = format!("{}/", key_of(dir)?);
    let keys = crate::list(cx.reg, &prefix).await?;
    let files: Vec<Option<(String, Bytes)>> = futures::stream::iter(keys)
        .map(|k| {
            let prefix = &prefix;
            async move {
                let key = StoreKey::new(k.clone())?;
                let obj = cx
                    .reg
                    .store()
                    .get(&key)
                    .await
                    .map_err(falaj::RegistryError::from)?;
                Ok::<_, MlError>(obj.map(|o| (k[prefix.len()..].to_string(), o.bytes)))
            }
        })
        .buffered(8)
        .try_collect()
        .await?;
    Ok(files.into_iter().flatten().collect())
}
