//! The exporter refuses what it cannot express, with a clear error, instead of writing a
//! wrong graph; and it writes exactly the graph described (dropout emits nothing).

use falaj_core::onnx::summarize;
use falaj_train::error::ExportError;
use falaj_train::export::{self, ExportRequest, Layer};
use falaj_train::model::{Activation, DenseWeights};

fn dense(inputs: usize, outputs: usize) -> Layer {
    Layer::Dense(DenseWeights {
        inputs,
        outputs,
        weight: (0..inputs * outputs).map(|i| i as f32 * 0.01).collect(),
        bias: vec![0.1; outputs],
    })
}

fn request(inputs: usize, layers: Vec<Layer>) -> ExportRequest {
    ExportRequest {
        inputs,
        layers,
        opset: export::DEFAULT_OPSET,
        graph_name: "g".into(),
        input_doc: String::new(),
        output_doc: String::new(),
        metadata: vec![("falaj.task".into(), "classification".into())],
    }
}

fn standardize(n: usize) -> Layer {
    Layer::Standardize {
        mean: vec![1.0; n],
        scale: vec![2.0; n],
    }
}

#[test]
fn a_full_classifier_graph_has_the_expected_ops_and_no_dropout() {
    let layers = vec![
        standardize(3),
        dense(3, 4),
        Layer::Activation(Activation::Gelu),
        Layer::Dropout { p: 0.5 },
        dense(4, 2),
        Layer::Softmax,
    ];
    let bytes = export::export(&request(3, layers)).expect("exports");
    let s = summarize(&bytes).expect("summarize");
    assert_eq!(
        s.ops,
        vec!["Add", "Div", "Erf", "Gemm", "Mul", "Softmax", "Sub"]
    );
    assert_eq!(s.signature.inputs[0].shape, vec!["batch", "3"]);
    assert_eq!(s.signature.outputs[0].shape, vec!["batch", "2"]);
    assert_eq!(
        s.format.producer,
        format!("falaj-train {}", env!("CARGO_PKG_VERSION"))
    );
    let model = export::build_model(&request(
        3,
        vec![standardize(3), dense(3, 2), Layer::Softmax],
    ))
    .expect("builds");
    let graph = model.graph.expect("graph");
    let softmax = graph
        .node
        .iter()
        .find(|n| n.op_type == "Softmax")
        .expect("softmax node");
    assert_eq!(softmax.attribute[0].name, "axis");
    assert_eq!(softmax.attribute[0].i, -1);
    assert_eq!(graph.node.last().expect("nodes").output, vec!["output"]);
    assert_eq!(model.metadata_props[0].key, "falaj.task");
}

fn refused(req: ExportRequest) -> String {
    let err = export::export(&req).expect_err("export must refuse");
    err.to_string()
}

#[test]
fn opsets_outside_the_verified_range_are_refused() {
    let mut req = request(3, vec![dense(3, 2), Layer::Softmax]);
    req.opset = 12;
    assert!(refused(req.clone()).contains("opset 12 is outside 13..=21"));
    req.opset = 22;
    assert!(refused(req).contains("opset 22"));
}

#[test]
fn shapes_that_do_not_chain_are_refused() {
    let msg = refused(request(3, vec![dense(3, 4), dense(5, 2)]));
    assert!(
        msg.contains("layer 1: expects 5 inputs but receives 4"),
        "{msg}"
    );
    let msg = refused(request(3, vec![standardize(4), dense(3, 1)]));
    assert!(msg.contains("layer 0"), "{msg}");
}

#[test]
fn layers_that_cannot_be_expressed_are_refused() {
    let msg = refused(request(3, vec![dense(3, 1), Layer::Softmax]));
    assert!(msg.contains("cannot export layer 1 (softmax)"), "{msg}");
    let msg = refused(request(
        3,
        vec![
            Layer::Standardize {
                mean: vec![0.0; 3],
                scale: vec![1.0, 0.0, 1.0],
            },
            dense(3, 2),
        ],
    ));
    assert!(msg.contains("feature 1 has a zero scale"), "{msg}");
    let msg = refused(request(3, vec![dense(3, 2), Layer::Dropout { p: 1.0 }]));
    assert!(msg.contains("dropout probability"), "{msg}");
    let msg = refused(request(3, vec![standardize(3)]));
    assert!(msg.contains("no dense layer"), "{msg}");
    let mut bad = dense(3, 2);
    if let Layer::Dense(d) = &mut bad {
        d.bias.pop();
    }
    let msg = refused(request(3, vec![bad]));
    assert!(msg.contains("bias 1 for a 3x2 layer"), "{msg}");
}

#[test]
fn non_finite_weights_are_refused() {
    let mut layer = dense(3, 2);
    if let Layer::Dense(d) = &mut layer {
        d.weight[4] = f32::NAN;
    }
    let err = export::export(&request(3, vec![layer])).expect_err("NaN weight");
    assert!(
        matches!(&err, ExportError::NonFinite { tensor, index: 4 } if tensor == "dense0.weight"),
        "{err:?}"
    );
    assert!(err.to_string().contains("training diverged"));
}
