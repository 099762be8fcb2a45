//! Our ONNX exporter: turns the trained network, with its preprocessing, into a `ModelProto`
//! built on `falaj_core::onnx`'s prost types. burn has no ONNX export of its own.
//!
//! The graph takes `input: float[batch, n_features]` of *raw* features and produces
//! `output: float[batch, n_outputs]` (class probabilities, or the regression value):
//!
//! ```text
//! input ─ Sub(mean) ─ Div(scale) ─ Gemm ─ Relu | Gelu ─ … ─ Gemm ─ Softmax(axis=-1) | Mul·Add ─ output
//! ```
//!
//! GELU is written out as `0.5·x·(1 + Erf(x/√2))` (Erf is in every opset we emit) in the
//! same operation order as burn's kernel, and dropout emits nothing (it is the identity at
//! inference). Every check happens before any byte is produced: a layer that cannot be
//! expressed, shapes that do not chain or a non-finite weight is an [`ExportError`], never a
//! silently wrong graph.

use falaj_core::onnx::{
    AttributeProto, FLOAT, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, float_tensor, value_info,
};
use prost::Message;

use crate::error::ExportError;
pub use crate::graph::{Activation, DenseWeights, Layer};

/// Lowest opset we emit: Softmax with `axis=-1` over the last axis only needs opset 13.
pub const MIN_OPSET: i64 = 13;
/// Highest opset we have checked against tract and onnxruntime.
pub const MAX_OPSET: i64 = 21;
/// The opset written by default.
pub const DEFAULT_OPSET: i64 = 17;
/// Name of the graph input.
pub const INPUT: &str = "input";
/// Name of the graph output.
pub const OUTPUT: &str = "output";
/// Symbol of the dynamic batch dimension.
pub const BATCH: &str = "batch";

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Number of raw input features.
    pub inputs: usize,
    /// Steps in execution order.
    pub layers: Vec<Layer>,
    /// Opset of the default domain, [`MIN_OPSET`]..=[`MAX_OPSET`].
    pub opset: i64,
    /// Graph name (the model name).
    pub graph_name: String,
    /// Documentation for the input (e.g. the feature names in order).
    pub input_doc: String,
    /// Documentation for the output.
    pub output_doc: String,
    /// `metadata_props` entries, in order.
    pub metadata: Vec<(String, String)>,
}

struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
}

impl GraphBuilder {
    fn constant(&mut self, name: String, dims: &[i64], data: &[f32]) -> String {
        self.initializers.push(float_tensor(&name, dims, data));
        name
    }

    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        prefix: &str,
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.counter += 1;
        let out = format!("{prefix}/{}", op.to_ascii_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("{prefix}/{op}_{}", self.counter),
            op_type: op.into(),
            ..Default::default()
        });
        if let Some(n) = self.nodes.last_mut() {
            n.attribute = attributes;
        }
        out
    }
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 2,
        i: value,
        ..Default::default()
    }
}

fn float_attr(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 1,
        f: value,
        ..Default::default()
    }
}

fn check_finite(tensor: &str, data: &[f32]) -> Result<(), ExportError> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(ExportError::NonFinite {
            tensor: tensor.into(),
            index,
        }),
        None => Ok(()),
    }
}

/// Builds the ONNX model for `req`, or says why it cannot.
pub fn build_model(req: &ExportRequest) -> Result<ModelProto, ExportError> {
    if !(MIN_OPSET..=MAX_OPSET).contains(&req.opset) {
        return Err(ExportError::Invalid {
            reason: format!(
                "opset {} is outside {MIN_OPSET}..={MAX_OPSET}: Softmax over the last axis needs opset 13, and newer opsets are not verified",
                req.opset
            ),
        });
    }
    if req.inputs == 0 {
        return Err(ExportError::Invalid {
            reason: "the model has no input features".into(),
        });
    }
    if !req.layers.iter().any(|l| matches!(l, Layer::Dense(_))) {
        return Err(ExportError::Invalid {
            reason: "the network has no dense layer".into(),
        });
    }
    let mut g = GraphBuilder {
        nodes: Vec::new(),
        initializers: Vec::new(),
        counter: 0,
    };
    let mut x = INPUT.to_string();
    let mut width = req.inputs;
    let mut dense_index = 0usize;
    for (index, layer) in req.layers.iter().enumerate() {
        let unsupported = |reason: &str| ExportError::Unsupported {
            index,
            layer: layer.describe(),
            reason: reason.into(),
        };
        match layer {
            Layer::Standardize { mean, scale } => {
                if mean.len() != width || scale.len() != width {
                    return Err(ExportError::ShapeMismatch {
                        index,
                        expected: mean.len().max(scale.len()),
                        found: width,
                    });
                }
                check_finite("standardization mean", mean)?;
                check_finite("standardization scale", scale)?;
                if let Some(i) = scale.iter().position(|s| *s == 0.0) {
                    return Err(unsupported(&format!(
                        "feature {i} has a zero scale, which would divide by zero"
                    )));
                }
                let m = g.constant("preprocess/mean".into(), &[width as i64], mean);
                let s = g.constant("preprocess/scale".into(), &[width as i64], scale);
                let centred = g.node("Sub", &[&x, &m], "preprocess", vec![]);
                x = g.node("Div", &[&centred, &s], "preprocess", vec![]);
            }
            Layer::Dense(d) => {
                if d.inputs != width {
                    return Err(ExportError::ShapeMismatch {
                        index,
                        expected: d.inputs,
                        found: width,
                    });
                }
                if d.weight.len() != d.inputs * d.outputs
                    || d.bias.len() != d.outputs
                    || d.outputs == 0
                {
                    return Err(unsupported(&format!(
                        "weights hold {} values and bias {} for a {}x{} layer",
                        d.weight.len(),
                        d.bias.len(),
                        d.inputs,
                        d.outputs
                    )));
                }
                let prefix = format!("dense{dense_index}");
                check_finite(&format!("{prefix}.weight"), &d.weight)?;
                check_finite(&format!("{prefix}.bias"), &d.bias)?;
                let w = g.constant(
                    format!("{prefix}.weight"),
                    &[d.inputs as i64, d.outputs as i64],
                    &d.weight,
                );
                let b = g.constant(format!("{prefix}.bias"), &[d.outputs as i64], &d.bias);
                let attrs = vec![
                    float_attr("alpha", 1.0),
                    float_attr("beta", 1.0),
                    int_attr("transA", 0),
                    int_attr("transB", 0),
                ];
                x = g.node("Gemm", &[&x, &w, &b], &prefix, attrs);
                width = d.outputs;
                dense_index += 1;
            }
            Layer::Activation(Activation::Relu) => {
                x = g.node("Relu", &[&x], &format!("act{index}"), vec![]);
            }
            Layer::Activation(Activation::Gelu) => {
                // burn's kernel computes `0.5 * x * (1 + erf(x / √2))` left to right; the nodes
                // below do the same f32 operations in the same order.
                let p = format!("gelu{index}");
                let sqrt2 = g.constant(format!("{p}/sqrt2"), &[1], &[std::f32::consts::SQRT_2]);
                let one = g.constant(format!("{p}/one"), &[1], &[1.0]);
                let half = g.constant(format!("{p}/half"), &[1], &[0.5]);
                let scaled = g.node("Div", &[&x, &sqrt2], &p, vec![]);
                let erf = g.node("Erf", &[&scaled], &p, vec![]);
                let cdf2 = g.node("Add", &[&erf, &one], &p, vec![]);
                let half_x = g.node("Mul", &[&half, &x], &format!("{p}/half_x"), vec![]);
                x = g.node("Mul", &[&half_x, &cdf2], &p, vec![]);
            }
            Layer::Dropout { p } => {
                if !(0.0..1.0).contains(p) {
                    return Err(unsupported("dropout probability must be in [0, 1)"));
                }
            }
            Layer::Softmax => {
                if width < 2 {
                    return Err(unsupported(
                        "softmax over a single output is always 1; a classifier needs at least two outputs",
                    ));
                }
                x = g.node("Softmax", &[&x], "head", vec![int_attr("axis", -1)]);
            }
            Layer::Affine { scale, shift } => {
                check_finite("output scale", &[*scale, *shift])?;
                let s = g.constant(format!("head{index}/scale"), &[1], &[*scale]);
                let t = g.constant(format!("head{index}/shift"), &[1], &[*shift]);
                let scaled = g.node("Mul", &[&x, &s], "head", vec![]);
                x = g.node("Add", &[&scaled, &t], "head", vec![]);
            }
        }
    }
    match g.nodes.last_mut() {
        Some(last) => last.output = vec![OUTPUT.to_string()],
        None => {
            return Err(ExportError::Invalid {
                reason: "the graph would have no nodes".into(),
            });
        }
    }
    let mut input = value_info(INPUT, FLOAT, &[None, Some(req.inputs as i64)], BATCH);
    input.doc_string = req.input_doc.clone();
    let mut output = value_info(OUTPUT, FLOAT, &[None, Some(width as i64)], BATCH);
    output.doc_string = req.output_doc.clone();
    Ok(ModelProto {
        ir_version: ir_version_for(req.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: req.opset,
        }],
        producer_name: "falaj-train".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string:
            "MLP trained by falaj-train; takes raw features, standardisation is in the graph".into(),
        graph: Some(GraphProto {
            node: g.nodes,
            name: req.graph_name.clone(),
            initializer: g.initializers,
            doc_string: String::new(),
            input: vec![input],
            output: vec![output],
            value_info: vec![],
        }),
        metadata_props: req
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    })
}

/// The IR version that the ONNX release introducing `opset` wrote.
fn ir_version_for(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Builds and encodes the model.
pub fn export(req: &ExportRequest) -> Result<Vec<u8>, ExportError> {
    Ok(build_model(req)?.encode_to_vec())
}
