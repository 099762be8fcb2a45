//! What a logged MLflow model directory holds, for falaj: the ONNX file (the `onnx`
//! flavor's `data`, else the directory's one `.onnx` file), and the training manifest written
//! from the model's MLflow signature (input column names and types), so a version logged with
//! `mlflow.onnx.log_model(..., input_example=a DataFrame)` goes straight to the gates.
//!
//! What a signature cannot say comes from `falaj.*` tags or params on the run, the logged
//! model or the version create: `falaj.target` (the holdout's target column; without it no
//! manifest is written, and the version says so in its `falaj.manifest` tag),
//! `falaj.classes` (class labels in output order, comma-separated) and `falaj.task`
//! (`classification` or `regression`; else the output width decides).

use std::collections::BTreeMap;

use bytes::Bytes;
use falaj_core::manifest::Task;
use falaj_core::{DatasetRef, Lineage, TrainingManifest};
use serde_json::Value;

/// The parts of an `MLmodel` file falaj reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MlModel {
    /// The `onnx` flavor's model file, relative to the directory.
    pub onnx_file: Option<String>,
    /// The signature's input columns (`name`, `type`), when it is column-based.
    pub columns: Option<Vec<(String, String)>>,
    /// Whether the signature's inputs are a tensor (no column names).
    pub tensor_input: bool,
}

/// Reads an `MLmodel` (YAML). The signature's inputs are a JSON string inside it.
pub fn parse_mlmodel(text: &str) -> Result<MlModel, String> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("MLmodel is not YAML: {e}"))?;
    let onnx_file = doc
        .get("flavors")
        .and_then(|f| f.get("onnx"))
        .and_then(|o| o.get("data"))
        .and_then(|d| d.as_str())
        .map(str::to_string);
    let mut out = MlModel {
        onnx_file,
        ..MlModel::default()
    };
    let inputs = doc
        .get("signature")
        .and_then(|s| s.get("inputs"))
        .and_then(|i| i.as_str());
    if let Some(inputs) = inputs {
        let specs: Vec<Value> = serde_json::from_str(inputs)
            .map_err(|e| format!("the MLmodel signature's inputs are not JSON: {e}"))?;
        if specs.iter().any(|s| s["type"] == "tensor") {
            out.tensor_input = true;
        } else {
            let cols: Vec<(String, String)> = specs
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        s["type"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            if cols.iter().any(|(n, _)| n.is_empty()) {
                return Err("the MLmodel signature has an input column without a name".to_string());
            }
            out.columns = Some(cols);
        }
    }
    Ok(out)
}

/// The columns of a saved DataFrame input example (`input_example.json` in pandas' `split`
/// orient), typed from its values: what names the features when the model was logged with
/// `input_example=` and no signature (MLflow's ONNX flavor infers none).
pub fn example_columns(json_text: &[u8]) -> Option<Vec<(String, String)>> {
    let doc: Value = serde_json::from_slice(json_text).ok()?;
    let cols = doc["columns"].as_array()?;
    let rows = doc["data"].as_array()?;
    let names: Vec<String> = cols
        .iter()
        .map(|c| c.as_str().map(str::to_string))
        .collect::<Option<_>>()?;
    let ty = |i: usize| {
        let numeric = rows.iter().all(|r| r[i].is_number() || r[i].is_null());
        if numeric { "double" } else { "string" }.to_string()
    };
    Some(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), ty(i)))
            .collect(),
    )
}

/// The ONNX file of a model directory, with its relative path; or why there is none.
pub fn find_onnx<'a>(
    files: &'a [(String, Bytes)],
    mlmodel: Option<&MlModel>,
) -> Result<&'a (String, Bytes), String> {
    if let Some(name) = mlmodel.and_then(|m| m.onnx_file.as_deref()) {
        return files.iter().find(|(f, _)| f == name).ok_or_else(|| {
            format!("the MLmodel's onnx flavor names {name}, which was not uploaded")
        });
    }
    let onnx: Vec<&(String, Bytes)> = files.iter().filter(|(f, _)| f.ends_with(".onnx")).collect();
    match onnx.as_slice() {
        [one] => Ok(one),
        [] => Err(
            "no ONNX model in it: falaj gates and serves ONNX. Log it with mlflow.onnx.log_model (export a PyTorch model with torch.onnx.export, a scikit-learn one with skl2onnx); docs/mlflow.md"
                .into(),
        ),
        many => Err(format!(
            "it holds {} .onnx files and no MLmodel onnx flavor to say which is the model",
            many.len()
        )),
    }
}

/// Hints from `falaj.*` tags and params, first found wins.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// `falaj.target`.
    pub target: Option<String>,
    /// `falaj.classes`.
    pub classes: Option<String>,
    /// `falaj.task`.
    pub task: Option<String>,
}

impl Hints {
    /// Fills what is still unknown from `kv`.
    pub fn add(&mut self, kv: &BTreeMap<String, String>) {
        let get = |k: &str| kv.get(k).filter(|v| !v.trim().is_empty()).cloned();
        self.target = self.target.take().or_else(|| get("falaj.target"));
        self.classes = self.classes.take().or_else(|| get("falaj.classes"));
        self.task = self.task.take().or_else(|| get("falaj.task"));
    }
}

/// What a run contributes to lineage.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// MLflow run id.
    pub run_id: String,
    /// Params (hyperparameters).
    pub params: BTreeMap<String, String>,
    /// Latest metric values.
    pub metrics: BTreeMap<String, f64>,
    /// Dataset inputs as logged.
    pub datasets: Vec<Value>,
    /// `mlflow.source.git.commit`.
    pub code_commit: Option<String>,
}

/// Where a logged dataset came from: its source's `uri` (MLflow writes the source as JSON,
/// `{"uri": "s3://..."}` or a local path), so the residency gate judges the real location;
/// else `mlflow-dataset:<name>`.
fn dataset_uri(ds: &Value) -> Option<String> {
    let name = ds["name"].as_str()?;
    let source: Value = ds["source"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    Some(match source["uri"].as_str().filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        None => format!("mlflow-dataset:{name}"),
    })
}

/// The training manifest of `model` from its MLflow signature, or why there is none
/// (`Ok(Err(note))`: registered without one; `Err`: the signature is unusable).
pub fn manifest(
    model: &str,
    author: &str,
    mlmodel: Option<&MlModel>,
    summary: &falaj_core::onnx::OnnxSummary,
    hints: &Hints,
    run: &RunFacts,
) -> Result<Result<TrainingManifest, String>, String> {
    let Some(cols) = mlmodel.and_then(|m| m.columns.as_ref()) else {
        let why = if mlmodel.is_some_and(|m| m.tensor_input) {
            "the MLflow signature is a tensor, without column names"
        } else {
            "the model has neither an MLflow signature nor a DataFrame input example"
        };
        return Ok(Err(format!(
            "none: {why}; log it with input_example as a pandas DataFrame, or write one with `falaj manifest init`"
        )));
    };
    for (name, ty) in cols {
        if !["double", "float", "long", "integer", "boolean"].contains(&ty.as_str()) {
            return Err(format!(
                "input column {name:?} is of type {ty}; falaj's gates and edge take numeric columns only"
            ));
        }
    }
    let Some(target) = hints.target.clone() else {
        return Ok(Err(
            "none: set the run tag falaj.target to the holdout's target column (mlflow.set_tag(\"falaj.target\", \"diagnosis\")) so falaj can write the manifest from the signature".into(),
        ));
    };
    let width: Option<usize> = summary
        .signature
        .inputs
        .first()
        .and_then(|i| i.shape.last().and_then(|d| d.parse().ok()));
    if let Some(w) = width
        && w != cols.len()
    {
        return Err(format!(
            "the MLflow signature names {} input columns but the ONNX input takes {w} features",
            cols.len()
        ));
    }
    let output = if summary.signature.outputs.len() > 1 {
        summary
            .signature
            .outputs
            .iter()
            .find(|o| o.name == "probabilities")
            .map(|o| o.name.clone())
    } else {
        None
    };
    let out_spec = match &output {
        Some(n) => summary.signature.outputs.iter().find(|o| &o.name == n),
        None => summary.signature.outputs.first(),
    };
    let out_width: Option<usize> =
        out_spec.and_then(|o| o.shape.last().and_then(|d| d.parse().ok()));
    let task = match hints.task.as_deref() {
        Some("classification") => Task::Classification,
        Some("regression") => Task::Regression,
        Some(other) => {
            return Err(format!(
                "falaj.task is {other:?}; it is classification or regression"
            ));
        }
        None if out_width.is_some_and(|w| w > 1) => Task::Classification,
        None => Task::Regression,
    };
    let classes: Vec<String> = hints
        .classes
        .as_deref()
        .map(|c| c.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    if let (Some(w), false) = (out_width, classes.is_empty())
        && w != classes.len()
    {
        return Err(format!(
            "falaj.classes names {} classes but the model outputs {w}",
            classes.len()
        ));
    }
    let lineage = Lineage {
        datasets: run
            .datasets
            .iter()
            .filter_map(|d| {
                let ds = &d["dataset"];
                Some(DatasetRef {
                    uri: dataset_uri(ds)?,
                    digest: format!("mlflow:{}", ds["digest"].as_str()?),
                    region: None,
                })
            })
            .collect(),
        code_commit: run.code_commit.clone(),
        trainer_image: Some("mlflow".into()),
        hyperparameters: run
            .params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
        parent_version: None,
    };
    let mut extra = BTreeMap::new();
    extra.insert(
        "written_by".into(),
        Value::String("falaj-mlflow (from the MLflow signature)".into()),
    );
    Ok(Ok(TrainingManifest {
        model: model.into(),
        author: Some(author.into()),
        semver: None,
        run_id: run.run_id.clone(),
        task,
        target,
        features: cols.iter().map(|(n, _)| n.clone()).collect(),
        classes,
        image: None,
        output,
        standardization: None,
        lineage,
        seed: None,
        backend: None,
        device: None,
        metrics: run.metrics.clone(),
        started_at: None,
        finished_at: None,
        extra,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLMODEL: &str = r#"artifact_path: model
flavors:
  onnx:
    code: null
    data: model.onnx
    onnx_version: 1.17.0
  python_function:
    data: model.onnx
    loader_module: mlflow.onnx
model_id: m-0123
signature:
  inputs: '[{"type": "double", "name": "mean_radius", "required": true}, {"type":
    "double", "name": "mean_texture", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1,
    2]}}]'
  params: null
"#;

    #[test]
    fn an_mlmodel_gives_the_onnx_file_and_the_columns_even_when_yaml_folds_them() {
        let m = parse_mlmodel(MLMODEL).unwrap();
        assert_eq!(m.onnx_file.as_deref(), Some("model.onnx"));
        assert_eq!(
            m.columns.unwrap(),
            vec![
                ("mean_radius".to_string(), "double".to_string()),
                ("mean_texture".to_string(), "double".to_string())
            ]
        );
        assert!(parse_mlmodel("flavors: [").is_err());
    }

    #[test]
    fn a_logged_datasets_lineage_uri_is_its_sources_uri() {
        let ds = serde_json::json!({"name": "bc", "digest": "1a2b", "source": "{\"uri\": \"s3://data/bc.csv\"}"});
        assert_eq!(dataset_uri(&ds).unwrap(), "s3://data/bc.csv");
        let ds = serde_json::json!({"name": "bc", "digest": "1a2b", "source": "{\"tags\": {}}"});
        assert_eq!(dataset_uri(&ds).unwrap(), "mlflow-dataset:bc");
        assert!(dataset_uri(&serde_json::json!({"digest": "x"})).is_none());
    }

    #[test]
    fn a_dataframe_input_example_names_and_types_the_columns() {
        let ex = br#"{"columns": ["a", "b", "c"], "data": [[1.5, 2, "x"], [0.1, null, "y"]]}"#;
        assert_eq!(
            example_columns(ex).unwrap(),
            vec![
                ("a".to_string(), "double".to_string()),
                ("b".to_string(), "double".to_string()),
                ("c".to_string(), "string".to_string())
            ]
        );
        assert!(example_columns(br#"{"inputs": [[1, 2]]}"#).is_none());
    }

    #[test]
    fn a_directory_without_onnx_is_named_as_such() {
        let files = vec![("model.pkl".to_string(), Bytes::from_static(b"x"))];
        let e = find_onnx(&files, None).unwrap_err();
        assert!(e.contains("no ONNX model"), "{e}");
        let m = MlModel {
            onnx_file: Some("model.onnx".into()),
            ..MlModel::default()
        };
        assert!(
            find_onnx(&files, Some(&m))
                .unwrap_err()
                .contains("not uploaded")
        );
    }
}
