//! The network `falaj-train` builds: a multi-layer perceptron, its seeded initialisation, its
//! forward pass (training and inference), and the inference pipeline the ONNX file mirrors.
//!
//! Weights are initialised from our own seeded ChaCha stream rather than the backend's global
//! RNG, and dropout masks come from a second stream, so two runs with the same seed produce
//! the same weights even when tests run in parallel threads.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use falaj_core::manifest::Task;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

pub use crate::graph::{Activation, DenseWeights, Layer};

impl Activation {
    fn apply(self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Relu => relu(x),
            Self::Gelu => gelu(x),
        }
    }
}

/// The shape of an MLP: what the trainer builds and the exporter describes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MlpSpec {
    /// Number of input features.
    pub inputs: usize,
    /// Width of each hidden layer, in order (empty: a linear model).
    pub hidden: Vec<usize>,
    /// Number of outputs (classes, or 1 for regression).
    pub outputs: usize,
    /// Activation after each hidden layer.
    pub activation: Activation,
    /// Dropout probability after each hidden activation (training only).
    pub dropout: f64,
}

impl MlpSpec {
    /// `(inputs, outputs)` of each dense layer.
    pub fn dense_shapes(&self) -> Vec<(usize, usize)> {
        let mut widths = Vec::with_capacity(self.hidden.len() + 2);
        widths.push(self.inputs);
        widths.extend(&self.hidden);
        widths.push(self.outputs);
        widths.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

/// The trainable part of the network: one dense layer per entry.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Dense layers, input to output.
    pub layers: Vec<Linear>,
}

fn tensor2(data: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, [rows, cols]), device)
}

impl Mlp {
    /// Builds the network with PyTorch's default `Linear` initialisation,
    /// `U(-1/√fan_in, 1/√fan_in)` for weights and biases, drawn from `rng`.
    pub fn init(spec: &MlpSpec, rng: &mut ChaCha8Rng, device: &Device) -> Self {
        let layers = spec
            .dense_shapes()
            .into_iter()
            .map(|(fan_in, fan_out)| {
                let k = 1.0 / (fan_in as f32).sqrt();
                let w: Vec<f32> = (0..fan_in * fan_out)
                    .map(|_| rng.random_range(-k..k))
                    .collect();
                let b: Vec<f32> = (0..fan_out).map(|_| rng.random_range(-k..k)).collect();
                Linear {
                    weight: Param::from_tensor(tensor2(w, fan_in, fan_out, device)),
                    bias: Some(Param::from_tensor(Tensor::from_data(
                        TensorData::new(b, [fan_out]),
                        device,
                    ))),
                }
            })
            .collect();
        Self { layers }
    }

    /// Builds the network from explicit weights (row-major `[inputs, outputs]`) and biases.
    pub fn from_weights(weights: &[DenseWeights], device: &Device) -> Self {
        let layers = weights
            .iter()
            .map(|d| Linear {
                weight: Param::from_tensor(tensor2(d.weight.clone(), d.inputs, d.outputs, device)),
                bias: Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(d.bias.clone(), [d.outputs]),
                    device,
                ))),
            })
            .collect();
        Self { layers }
    }

    /// Forward pass to logits (classification) or standardised values (regression).
    ///
    /// `dropout` is `Some((p, rng))` while training: each hidden activation is multiplied by a
    /// Bernoulli(1-p) mask scaled by `1/(1-p)` (inverted dropout, so inference is the identity).
    pub fn forward(
        &self,
        mut x: Tensor<2>,
        activation: Activation,
        mut dropout: Option<(f64, &mut ChaCha8Rng)>,
    ) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i == last {
                break;
            }
            x = activation.apply(x);
            if let Some((p, rng)) = dropout.as_mut()
                && *p > 0.0
            {
                let [rows, cols] = x.dims();
                let keep = 1.0 - *p;
                let scale = (1.0 / keep) as f32;
                let mask: Vec<f32> = (0..rows * cols)
                    .map(|_| {
                        if rng.random::<f64>() < keep {
                            scale
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = tensor2(mask, rows, cols, &x.device());
                x = x * mask;
            }
        }
        x
    }

    /// Copies the weights out of the backend.
    pub fn weights(&self) -> Vec<DenseWeights> {
        self.layers
            .iter()
            .map(|l| {
                let w = l.weight.val();
                let [inputs, outputs] = w.dims();
                DenseWeights {
                    inputs,
                    outputs,
                    weight: w
                        .into_data()
                        .try_into_vec::<f32>()
                        .expect("linear weights are f32"),
                    bias: l
                        .bias
                        .as_ref()
                        .map(|b| {
                            b.val()
                                .into_data()
                                .try_into_vec::<f32>()
                                .expect("linear bias is f32")
                        })
                        .unwrap_or_else(|| vec![0.0; outputs]),
                }
            })
            .collect()
    }
}

/// `sha256:<hex>` over every weight and bias in order, as little-endian f32: equal digests
/// mean bit-identical networks.
pub fn weights_digest(weights: &[DenseWeights]) -> String {
    let mut h = Sha256::new();
    for d in weights {
        h.update((d.inputs as u64).to_le_bytes());
        h.update((d.outputs as u64).to_le_bytes());
        for v in d.weight.iter().chain(&d.bias) {
            h.update(v.to_le_bytes());
        }
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// How raw inputs are prepared and raw outputs finished, in f32 as the graph computes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Task (decides the output head).
    pub task: Task,
    /// Per-feature mean subtracted from raw inputs.
    pub mean: Vec<f32>,
    /// Per-feature scale the centred inputs are divided by.
    pub scale: Vec<f32>,
    /// Regression only: `(std, mean)` of the training target; the output is `z·std + mean`.
    pub target_scale: Option<(f32, f32)>,
}

impl Pipeline {
    /// The layer list the exporter turns into ONNX nodes, in execution order.
    pub fn layers(&self, spec: &MlpSpec, weights: &[DenseWeights]) -> Vec<Layer> {
        let mut out = vec![Layer::Standardize {
            mean: self.mean.clone(),
            scale: self.scale.clone(),
        }];
        let last = weights.len().saturating_sub(1);
        for (i, d) in weights.iter().enumerate() {
            out.push(Layer::Dense(d.clone()));
            if i < last {
                out.push(Layer::Activation(spec.activation));
                if spec.dropout > 0.0 {
                    out.push(Layer::Dropout { p: spec.dropout });
                }
            }
        }
        match (self.task, self.target_scale) {
            (Task::Classification, _) => out.push(Layer::Softmax),
            (Task::Regression, Some((std, mean))) => out.push(Layer::Affine {
                scale: std,
                shift: mean,
            }),
            (Task::Regression, None) => {}
        }
        out
    }
}

/// The whole inference computation in burn: raw features in, the exported graph's output out.
/// It applies the same f32 operations in the same order as the ONNX graph, so the two can be
/// compared to within rounding.
#[derive(Debug)]
pub struct Predictor {
    model: Mlp,
    activation: Activation,
    pipeline: Pipeline,
    device: Device,
}

impl Predictor {
    /// Wraps a trained network (moved off autodiff).
    pub fn new(model: &Mlp, activation: Activation, pipeline: Pipeline, device: &Device) -> Self {
        let device = device.clone().inner();
        Self {
            model: model.valid().to_device(&device),
            activation,
            pipeline,
            device,
        }
    }

    /// The pipeline this predictor applies.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Predicts for `rows` rows of raw features (row-major); returns row-major outputs.
    pub fn predict(&self, raw: &[f32], rows: usize) -> Vec<f32> {
        let n = self.pipeline.mean.len();
        assert_eq!(raw.len(), rows * n, "raw input must be rows x features");
        let x = tensor2(raw.to_vec(), rows, n, &self.device);
        let mean = tensor2(self.pipeline.mean.clone(), 1, n, &self.device);
        let scale = tensor2(self.pipeline.scale.clone(), 1, n, &self.device);
        let z = self
            .model
            .forward((x - mean) / scale, self.activation, None);
        let y = match (self.pipeline.task, self.pipeline.target_scale) {
            (Task::Classification, _) => softmax(z, 1),
            (Task::Regression, Some((std, mean))) => z.mul_scalar(std).add_scalar(mean),
            (Task::Regression, None) => z,
        };
        y.into_data()
            .try_into_vec::<f32>()
            .expect("outputs are f32")
    }
}
