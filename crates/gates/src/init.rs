//! A training manifest for a model trained elsewhere (PyTorch, scikit-learn, anything that
//! exports ONNX): written from the model's signature and a holdout CSV's header, with the
//! checks a user would otherwise learn from a failed gate. `falaj manifest init` and
//! `falaj push --holdout --target` call it; `docs/manifest.md` documents what it writes.

use std::collections::BTreeMap;

use falaj_core::manifest::{Task, TrainingManifest};
use falaj_core::version::Lineage;

/// What the user knows that the files do not say.
#[derive(Debug, Clone, Default)]
pub struct ManifestInit {
    /// Model name.
    pub model: String,
    /// The holdout column the model predicts.
    pub target: String,
    /// Classification or regression; inferred from the output width when absent.
    pub task: Option<Task>,
    /// Class names in the model's output order; for classification, the holdout's target
    /// values sorted (numerically when they are numbers) when absent.
    pub classes: Option<Vec<String>>,
    /// Dataset, code commit and hyperparameters, as the user gives them.
    pub lineage: Lineage,
    /// Semantic version to register under.
    pub semver: Option<String>,
    /// For a 3-channel image model: how images become its input (`crop` is set from the
    /// model's H and W).
    pub image: ImageRule,
}

/// What the user says of an image model's preprocessing (see `falaj_core::image`).
#[derive(Debug, Clone, Default)]
pub struct ImageRule {
    /// Shorter side after resizing.
    pub resize: Option<u32>,
    /// Multiplier of 0-255 values (default 1/255).
    pub scale: Option<f32>,
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel std.
    pub std: Vec<f32>,
    /// Channel order.
    pub channel_order: falaj_core::image::ChannelOrder,
}

/// The model and the holdout disagree, or one of them cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InitError(pub String);

/// The one input falaj can serve, and the first output: names, widths (`None` when dynamic).
struct Io {
    input: String,
    /// The input's dimensions after the batch, as declared (numbers or symbols).
    dims: Vec<String>,
    width: Option<usize>,
    output: String,
    out_width: Option<usize>,
    /// Whether the model has other outputs (then the manifest names this one).
    several: bool,
}

fn read_io(onnx: &[u8]) -> Result<Io, InitError> {
    let s = falaj_core::onnx::summarize(onnx).map_err(|e| InitError(e.to_string()))?;
    let sig = s.signature;
    let names = |v: &[falaj_core::version::TensorSpec]| {
        v.iter()
            .map(|t| format!("{} {} [{}]", t.name, t.dtype, t.shape.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let [input] = &sig.inputs[..] else {
        return Err(InitError(format!(
            "the model has {} inputs ({}); falaj serves a model with one float input of shape [batch, features]: export it with one input",
            sig.inputs.len(),
            names(&sig.inputs)
        )));
    };
    if input.dtype != "float" || input.shape.len() < 2 {
        return Err(InitError(format!(
            "the model's input is {}; falaj takes one float input of shape [batch, features] (a table) or [batch, C, H, W] (images)",
            names(std::slice::from_ref(input))
        )));
    }
    // The output to read: the only one, or among several (scikit-learn's label beside its
    // probabilities) the only float one of shape [batch, values].
    let candidates: Vec<_> = sig
        .outputs
        .iter()
        .filter(|o| o.dtype == "float" && o.shape.len() == 2)
        .collect();
    let output = match (&sig.outputs[..], &candidates[..]) {
        ([only], [_]) => only,
        (_, [one]) if sig.outputs.len() > 1 => one,
        _ => {
            return Err(InitError(format!(
                "the model's outputs are {}; falaj reads one float output of shape [batch, values] (class probabilities or one value). For scikit-learn, export with options {{\"zipmap\": False}}; for PyTorch, return one tensor",
                names(&sig.outputs)
            )));
        }
    };
    Ok(Io {
        input: input.name.clone(),
        dims: input.shape[1..].to_vec(),
        width: input.shape[1].parse().ok(),
        output: output.name.clone(),
        out_width: output.shape.get(1).and_then(|d| d.parse().ok()),
        several: sig.outputs.len() > 1,
    })
}

/// The manifest's record of how it was written (`written_by`), with `more` fields.
fn written_by(
    holdout_name: &str,
    io: &Io,
    mut more: serde_json::Value,
) -> BTreeMap<String, serde_json::Value> {
    more["tool"] = "falaj manifest init".into();
    more["holdout"] = holdout_name.into();
    more["input"] = io.input.clone().into();
    more["output"] = io.output.clone().into();
    BTreeMap::from([("written_by".to_string(), more)])
}

/// Sorts class labels as a person expects: numerically when every label is a number.
fn sort_classes(mut classes: Vec<String>) -> Vec<String> {
    if classes.iter().all(|c| c.parse::<f64>().is_ok()) {
        classes.sort_by(|a, b| {
            let (a, b) = (
                a.parse::<f64>().unwrap_or(0.0),
                b.parse::<f64>().unwrap_or(0.0),
            );
            a.total_cmp(&b)
        });
    } else {
        classes.sort();
    }
    classes
}

/// Writes the manifest of `onnx` from `holdout` (a CSV with a header; `holdout_name` names it
/// in messages): the features are the header's columns other than the target, in header
/// order, and they must be as many as the model's input width; a classifier's outputs must be
/// as many as its classes, a regressor's one.
pub fn init_manifest(
    onnx: &[u8],
    holdout: &[u8],
    holdout_name: &str,
    opts: ManifestInit,
) -> Result<TrainingManifest, InitError> {
    let io = read_io(onnx)?;
    if holdout.starts_with(crate::npz::ZIP_MAGIC) {
        return init_image(io, holdout, holdout_name, opts);
    }
    if io.dims.len() != 1 {
        return Err(InitError(format!(
            "the model's input {} is [batch, {}], an image model's: give an .npz holdout (x: [N, {}] float32, y: class indices)",
            io.input,
            io.dims.join(", "),
            io.dims.join(", ")
        )));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(holdout);
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| InitError(format!("{holdout_name}: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let Some(t) = header.iter().position(|h| *h == opts.target) else {
        return Err(InitError(format!(
            "{holdout_name} has no column {:?}; its columns are {}",
            opts.target,
            header.join(", ")
        )));
    };
    let features: Vec<String> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != t)
        .map(|(_, h)| h.clone())
        .collect();
    if let Some(w) = io.width
        && w != features.len()
    {
        return Err(InitError(format!(
            "the model's input {} takes {w} features, but {holdout_name} has {} columns besides {:?} ({}); the holdout must hold exactly the model's features, in its input order, and the target",
            io.input,
            features.len(),
            opts.target,
            features.join(", ")
        )));
    }
    let mut seen = Vec::new();
    for (row, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| InitError(format!("{holdout_name}: {e}")))?;
        let v = rec.get(t).unwrap_or("").trim().to_string();
        if v.is_empty() {
            return Err(InitError(format!(
                "{holdout_name} row {}: the target {:?} is empty",
                row + 1,
                opts.target
            )));
        }
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    if seen.is_empty() {
        return Err(InitError(format!("{holdout_name} has no rows")));
    }
    let task = match (opts.task, io.out_width) {
        (Some(t), _) => t,
        (None, Some(1)) => Task::Regression,
        (None, Some(_)) => Task::Classification,
        (None, None) => {
            return Err(InitError(format!(
                "the model's output {} has a dynamic width, so the task cannot be told from it; pass --task classification or --task regression",
                io.output
            )));
        }
    };
    let classes = match task {
        Task::Regression => {
            if let Some(w) = io.out_width.filter(|w| *w != 1) {
                return Err(InitError(format!(
                    "a regression model outputs one value per row; {} outputs {w}",
                    io.output
                )));
            }
            Vec::new()
        }
        Task::Classification => {
            let classes = match opts.classes {
                Some(c) => {
                    if let Some(bad) = seen.iter().find(|v| !c.contains(v)) {
                        return Err(InitError(format!(
                            "{holdout_name}'s {:?} holds {bad:?}, which is not one of the classes given ({})",
                            opts.target,
                            c.join(", ")
                        )));
                    }
                    c
                }
                None => sort_classes(seen),
            };
            if let Some(w) = io.out_width
                && w != classes.len()
            {
                return Err(InitError(format!(
                    "the model's output {} gives {w} values per row, but there are {} classes ({}); pass --classes with the model's classes in its output order",
                    io.output,
                    classes.len(),
                    classes.join(", ")
                )));
            }
            classes
        }
    };
    let extra = written_by(holdout_name, &io, serde_json::json!({}));
    Ok(TrainingManifest {
        model: opts.model,
        semver: opts.semver,
        task,
        target: opts.target,
        features,
        classes,
        output: io.several.then(|| io.output.clone()),
        lineage: opts.lineage,
        extra,
        ..Default::default()
    })
}

/// The manifest of an image classifier from an `.npz` holdout: the input's dimensions after
/// the batch must be the items' shape; the classes are `--classes`, else the output's indices.
fn init_image(
    io: Io,
    holdout: &[u8],
    holdout_name: &str,
    opts: ManifestInit,
) -> Result<TrainingManifest, InitError> {
    let h =
        crate::npz::parse_npz(holdout).map_err(|e| InitError(format!("{holdout_name}: {e}")))?;
    let fits = io.dims.len() == h.item.len()
        && io
            .dims
            .iter()
            .zip(&h.item)
            .all(|(d, n)| d.parse::<usize>().map_or(true, |d| d == *n));
    if !fits {
        return Err(InitError(format!(
            "the model's input {} takes items of [{}], but {holdout_name}'s x holds items of {:?}",
            io.input,
            io.dims.join(", "),
            h.item
        )));
    }
    if opts.task == Some(Task::Regression) {
        return Err(InitError(
            "an .npz holdout is for image classifiers; regression takes a CSV holdout".into(),
        ));
    }
    let classes = match (opts.classes, io.out_width) {
        (Some(c), Some(w)) if c.len() != w => {
            return Err(InitError(format!(
                "the model's output {} gives {w} values per item, but {} classes were given",
                io.output,
                c.len()
            )));
        }
        (Some(c), _) => c,
        (None, Some(w)) => (0..w).map(|i| i.to_string()).collect(),
        (None, None) => {
            return Err(InitError(format!(
                "the model's output {} has a dynamic width; pass --classes in its output order",
                io.output
            )));
        }
    };
    if let Some(bad) = h.y.iter().find(|c| **c >= classes.len()) {
        return Err(InitError(format!(
            "{holdout_name}'s y holds class index {bad}, but the model has {} classes",
            classes.len()
        )));
    }
    // A 3-channel model can take images: the rule the edge applies to PNG and JPEG bodies.
    let image = match &h.item[..] {
        [3, ih, iw] => {
            let r = &opts.image;
            let rule = falaj_core::image::ImagePreprocess {
                resize: r.resize,
                crop: [*ih as u32, *iw as u32],
                scale: r.scale.unwrap_or(1.0 / 255.0),
                mean: r.mean.clone(),
                std: r.std.clone(),
                channel_order: r.channel_order,
            };
            rule.check(&h.item).map_err(|e| InitError(e.to_string()))?;
            Some(rule)
        }
        _ => None,
    };
    let extra = written_by(holdout_name, &io, serde_json::json!({"item_shape": h.item}));
    Ok(TrainingManifest {
        model: opts.model,
        semver: opts.semver,
        task: Task::Classification,
        target: "y".into(),
        classes,
        image,
        output: io.several.then(|| io.output.clone()),
        lineage: opts.lineage,
        extra,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_sort_numerically_when_they_are_numbers() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(sort_classes(v(&["10", "2", "1"])), v(&["1", "2", "10"]));
        assert_eq!(sort_classes(v(&["b", "a"])), v(&["a", "b"]));
    }
}
