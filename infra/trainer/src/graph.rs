//! The plain-data description of the network the trainer builds and the exporter writes:
//! activations, dense weights and the inference steps in order. No burn, no protobuf: both
//! `model` (which trains it) and `export` (which writes it as ONNX) import this, never each
//! other.

use std::fmt;

use crate::error::ConfigError;

/// Non-linearity between hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// Exact GELU, `0.5·x·(1 + erf(x/√2))`.
    Gelu,
}

impl Activation {
    /// Parses `relu` or `gelu`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "relu" => Ok(Self::Relu),
            "gelu" => Ok(Self::Gelu),
            _ => Err(ConfigError::Unknown {
                what: "activation",
                value: s.into(),
                expected: "relu, gelu",
            }),
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Gelu => "gelu",
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dense layer's parameters on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseWeights {
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// Row-major `[inputs, outputs]`: `y = x·W + b`, the layout of burn's `Linear` and of ONNX
    /// `Gemm` with `transB = 0`.
    pub weight: Vec<f32>,
    /// `[outputs]`.
    pub bias: Vec<f32>,
}

/// One step of the inference computation, in execution order.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `(x - mean) / scale`, per feature.
    Standardize {
        /// Per-feature mean.
        mean: Vec<f32>,
        /// Per-feature divisor (non-zero).
        scale: Vec<f32>,
    },
    /// `x·W + b`.
    Dense(DenseWeights),
    /// Element-wise activation.
    Activation(Activation),
    /// Dropout with probability `p`: the identity at inference, so no node.
    Dropout {
        /// Probability used in training.
        p: f64,
    },
    /// Softmax over the last axis (class probabilities).
    Softmax,
    /// `x·scale + shift` with scalar constants (undoing target standardisation).
    Affine {
        /// Multiplier.
        scale: f32,
        /// Offset.
        shift: f32,
    },
}

impl Layer {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Standardize { mean, .. } => format!("standardize[{}]", mean.len()),
            Self::Dense(d) => format!("dense {}→{}", d.inputs, d.outputs),
            Self::Activation(a) => a.name().to_string(),
            Self::Dropout { p } => format!("dropout p={p}"),
            Self::Softmax => "softmax".into(),
            Self::Affine { scale, shift } => format!("affine ×{scale} +{shift}"),
        }
    }
}
