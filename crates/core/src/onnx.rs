//! The part of the ONNX protobuf schema falaj reads and writes.
//!
//! Field numbers follow `onnx/onnx.proto` (IR version 10). Fields falaj does not need are
//! left out; protobuf decoders skip unknown fields, so real files from any producer decode.
//! The trainer's exporter writes models with these types, and the registry reads their
//! signature with them, so both agree on one schema.

use std::io::{Read, Seek, SeekFrom};

use prost::Message;

use crate::version::{ArtifactFormat, Signature, TensorSpec};

/// `onnx.ModelProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// IR version.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets used.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Producer name.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Producer version.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Domain.
    #[prost(string, tag = "4")]
    pub domain: String,
    /// Model version.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Documentation.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Free-form metadata.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `onnx.OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// Empty for the default `ai.onnx` domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Opset version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `onnx.StringStringEntryProto`.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `onnx.GraphProto`.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// Nodes in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors (weights).
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Documentation.
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// Inputs (in old IR versions, initializers may be listed here too).
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    /// Intermediate value types.
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// `onnx.NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Input value names.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output value names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Operator domain, empty for `ai.onnx`.
    #[prost(string, tag = "7")]
    pub domain: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    /// Documentation.
    #[prost(string, tag = "6")]
    pub doc_string: String,
}

/// `onnx.AttributeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `AttributeType` value: 1 float, 2 int, 3 string, 4 tensor, 6 floats, 7 ints, 8 strings.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    /// Float value.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// Int value.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// String value.
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// Tensor value.
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    /// Floats value.
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    /// Ints value.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// Strings value.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
}

/// `onnx.TensorProto` (dense tensors only).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// Shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// `TensorProto.DataType` value (1 = float, 7 = int64, 11 = double).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Float data.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// Int32 data.
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    /// Int64 data.
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    /// Tensor name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian raw data.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// Double data.
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// Documentation.
    #[prost(string, tag = "12")]
    pub doc_string: String,
}

/// `onnx.ValueInfoProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    /// Value name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    /// Documentation.
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// `onnx.TypeProto` (tensor types only).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// Tensor type.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

/// `onnx.TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProtoTensor {
    /// Element type (`TensorProto.DataType`).
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Shape, if known.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `onnx.TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// Dimensions.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `onnx.TensorShapeProto.Dimension`.
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    /// Fixed size or symbol.
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    pub value: Option<DimensionValue>,
}

/// The value of a [`Dimension`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum DimensionValue {
    /// Fixed size.
    #[prost(int64, tag = "1")]
    DimValue(i64),
    /// Symbolic size, e.g. `batch`.
    #[prost(string, tag = "2")]
    DimParam(String),
}

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;

/// Lower-case ONNX name of a `TensorProto.DataType`.
pub fn dtype_name(t: i32) -> &'static str {
    match t {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "unknown",
    }
}

/// A file could not be read as an ONNX model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnnxError {
    /// Not protobuf, or not a ModelProto.
    #[error("not a valid ONNX model: {reason}")]
    Decode {
        /// The decoder's message.
        reason: String,
    },
    /// Decodes, but is not a usable model.
    #[error("not a usable ONNX model: {reason}")]
    Invalid {
        /// What is missing.
        reason: String,
    },
}

/// What the registry records about an ONNX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxSummary {
    /// Format and producer.
    pub format: ArtifactFormat,
    /// Inputs and outputs.
    pub signature: Signature,
    /// Operators used, sorted, without duplicates (`domain:op` for non-default domains).
    pub ops: Vec<String>,
}

fn spec(v: &ValueInfoProto) -> TensorSpec {
    let tt = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
    let shape = tt
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(DimensionValue::DimValue(n)) => n.to_string(),
                    Some(DimensionValue::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect()
        })
        .unwrap_or_default();
    TensorSpec {
        name: v.name.clone(),
        dtype: dtype_name(tt.map_or(0, |t| t.elem_type)).into(),
        shape,
    }
}

/// Decodes `bytes` and summarises the model, refusing what is not a usable ONNX model.
pub fn summarize(bytes: &[u8]) -> Result<OnnxSummary, OnnxError> {
    summarize_reader(std::io::Cursor::new(bytes))
}

/// Summarises a model read from `r` without loading its weights.
///
/// Initializers are skipped by seeking past them (only their names are read), so a
/// multi-gigabyte model is summarised in a few kilobytes of memory.
pub fn summarize_reader<R: Read + Seek>(mut r: R) -> Result<OnnxSummary, OnnxError> {
    let io = |e: std::io::Error| OnnxError::Decode {
        reason: format!("truncated or unreadable: {e}"),
    };
    let end = r.seek(SeekFrom::End(0)).map_err(io)?;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut pb = Skim { r, pos: 0 };
    let mut top = Vec::new();
    let mut graph = None;
    while pb.pos < end {
        let (field, wire) = pb.key(end)?;
        if field == 7 && wire == 2 {
            let len = pb.varint(end)?;
            let stop = pb.limit(len, end)?;
            graph = Some(skim_graph(&mut pb, stop)?);
        } else {
            pb.copy_field(field, wire, end, &mut top)?;
        }
    }
    let mut m = ModelProto::decode(top.as_slice()).map_err(|e| OnnxError::Decode {
        reason: e.to_string(),
    })?;
    m.graph = graph;
    summarize_model(&m)
}

/// A forward-only protobuf walker over a seekable reader.
struct Skim<R> {
    r: R,
    pos: u64,
}

const MAX_INLINE: u64 = 256 * 1024 * 1024;

impl<R: Read + Seek> Skim<R> {
    fn bad(&self, what: &str) -> OnnxError {
        OnnxError::Decode {
            reason: format!("{what} at byte {}", self.pos),
        }
    }

    fn byte(&mut self, end: u64) -> Result<u8, OnnxError> {
        if self.pos >= end {
            return Err(self.bad("unexpected end of message"));
        }
        let mut b = [0u8];
        self.r
            .read_exact(&mut b)
            .map_err(|_| self.bad("unexpected end of file"))?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self, end: u64) -> Result<u64, OnnxError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(end)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint too long"))
    }

    fn key(&mut self, end: u64) -> Result<(u64, u8), OnnxError> {
        let k = self.varint(end)?;
        let (field, wire) = (k >> 3, (k & 7) as u8);
        if field == 0 || !matches!(wire, 0 | 1 | 2 | 5) {
            return Err(self.bad("invalid protobuf field key"));
        }
        Ok((field, wire))
    }

    fn limit(&self, len: u64, end: u64) -> Result<u64, OnnxError> {
        match self.pos.checked_add(len) {
            Some(stop) if stop <= end => Ok(stop),
            _ => Err(self.bad("length runs past the end of the message")),
        }
    }

    fn bytes(&mut self, len: u64, end: u64) -> Result<Vec<u8>, OnnxError> {
        self.limit(len, end)?;
        if len > MAX_INLINE {
            return Err(self.bad("a non-weight field larger than 256 MiB"));
        }
        let mut buf = vec![0u8; len as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| self.bad("unexpected end of file"))?;
        self.pos += len;
        Ok(buf)
    }

    fn skip(&mut self, wire: u8, end: u64) -> Result<(), OnnxError> {
        let len = match wire {
            0 => return self.varint(end).map(drop),
            1 => 8,
            5 => 4,
            _ => self.varint(end)?,
        };
        let stop = self.limit(len, end)?;
        self.r
            .seek(SeekFrom::Start(stop))
            .map_err(|_| self.bad("cannot seek"))?;
        self.pos = stop;
        Ok(())
    }

    /// Re-encodes one field (key and payload) into `out`.
    fn copy_field(
        &mut self,
        field: u64,
        wire: u8,
        end: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), OnnxError> {
        prost::encoding::encode_varint((field << 3) | u64::from(wire), out);
        match wire {
            0 => prost::encoding::encode_varint(self.varint(end)?, out),
            1 => out.extend(self.bytes(8, end)?),
            5 => out.extend(self.bytes(4, end)?),
            _ => {
                let len = self.varint(end)?;
                prost::encoding::encode_varint(len, out);
                out.extend(self.bytes(len, end)?);
            }
        }
        Ok(())
    }
}

/// Reads a graph, keeping only the names of its initializers.
fn skim_graph<R: Read + Seek>(pb: &mut Skim<R>, stop: u64) -> Result<GraphProto, OnnxError> {
    let mut kept = Vec::new();
    let mut names = Vec::new();
    while pb.pos < stop {
        let (field, wire) = pb.key(stop)?;
        if field == 5 && wire == 2 {
            let len = pb.varint(stop)?;
            let t_stop = pb.limit(len, stop)?;
            let mut name = String::new();
            while pb.pos < t_stop {
                let (f, w) = pb.key(t_stop)?;
                if f == 8 && w == 2 {
                    let n = pb.varint(t_stop)?;
                    name = String::from_utf8(pb.bytes(n, t_stop)?)
                        .map_err(|_| pb.bad("initializer name is not UTF-8"))?;
                } else {
                    pb.skip(w, t_stop)?;
                }
            }
            names.push(name);
        } else {
            pb.copy_field(field, wire, stop, &mut kept)?;
        }
    }
    let mut g = GraphProto::decode(kept.as_slice()).map_err(|e| OnnxError::Decode {
        reason: e.to_string(),
    })?;
    g.initializer = names
        .into_iter()
        .map(|name| TensorProto {
            name,
            ..Default::default()
        })
        .collect();
    Ok(g)
}

/// Summarises a decoded model.
pub fn summarize_model(m: &ModelProto) -> Result<OnnxSummary, OnnxError> {
    if m.ir_version <= 0 {
        return Err(OnnxError::Invalid {
            reason: "ir_version is missing".into(),
        });
    }
    let graph = m.graph.as_ref().ok_or_else(|| OnnxError::Invalid {
        reason: "it has no graph".into(),
    })?;
    if graph.output.is_empty() {
        return Err(OnnxError::Invalid {
            reason: "the graph has no outputs".into(),
        });
    }
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| OnnxError::Invalid {
            reason: "no opset_import for the default domain".into(),
        })?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !inits.contains(v.name.as_str()))
        .map(spec)
        .collect();
    let outputs = graph.output.iter().map(spec).collect();
    let mut ops: Vec<String> = graph
        .node
        .iter()
        .map(|n| {
            if n.domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            }
        })
        .collect();
    ops.sort();
    ops.dedup();
    let producer = match (m.producer_name.as_str(), m.producer_version.as_str()) {
        ("", _) => "unknown".to_string(),
        (n, "") => n.to_string(),
        (n, v) => format!("{n} {v}"),
    };
    Ok(OnnxSummary {
        format: ArtifactFormat {
            kind: "onnx".into(),
            opset,
            ir_version: m.ir_version,
            producer,
        },
        signature: Signature { inputs, outputs },
        ops,
    })
}

/// Builds a tensor value info `name: float[batch, n]`-style, `None` dims become symbols.
pub fn value_info(
    name: &str,
    elem_type: i32,
    dims: &[Option<i64>],
    symbol: &str,
) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(n) => DimensionValue::DimValue(*n),
                                None => DimensionValue::DimParam(symbol.into()),
                            }),
                        })
                        .collect(),
                }),
            }),
        }),
        doc_string: String::new(),
    }
}

/// A float tensor initializer with raw little-endian data.
pub fn float_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: FLOAT,
        name: name.into(),
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A small linear model `y = x·W + b` (one Gemm) used by tests and the demo fixtures.
pub fn linear_model(inputs: usize, outputs: usize, weights: &[f32], bias: &[f32]) -> ModelProto {
    assert_eq!(
        weights.len(),
        inputs * outputs,
        "weights must be inputs x outputs"
    );
    assert_eq!(bias.len(), outputs, "bias must have one value per output");
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "falaj".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            name: "linear".into(),
            node: vec![NodeProto {
                input: vec!["input".into(), "W".into(), "b".into()],
                output: vec!["output".into()],
                name: "gemm".into(),
                op_type: "Gemm".into(),
                ..Default::default()
            }],
            initializer: vec![
                float_tensor("W", &[inputs as i64, outputs as i64], weights),
                float_tensor("b", &[outputs as i64], bias),
            ],
            input: vec![value_info(
                "input",
                FLOAT,
                &[None, Some(inputs as i64)],
                "batch",
            )],
            output: vec![value_info(
                "output",
                FLOAT,
                &[None, Some(outputs as i64)],
                "batch",
            )],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes a valid model (a 1x1 Gemm) padded with an unused initializer of about
/// `pad_bytes` bytes, streaming, so benchmarks and tests get large artifacts cheaply.
pub fn write_padded_model<W: std::io::Write>(mut w: W, pad_bytes: u64) -> std::io::Result<()> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let n = pad_bytes / 4;
    let mut head = linear_model(1, 1, &[1.0], &[0.0]);
    let graph = head.graph.take().expect("linear_model has a graph");
    // The pad tensor's header: everything but its raw bytes, which are streamed after it.
    let mut tensor = TensorProto {
        dims: vec![n as i64],
        data_type: FLOAT,
        name: "pad".into(),
        ..Default::default()
    }
    .encode_to_vec();
    encode_key(9, WireType::LengthDelimited, &mut tensor);
    encode_varint(n * 4, &mut tensor);
    let tensor_len = tensor.len() as u64 + n * 4;
    let mut g = graph.encode_to_vec();
    encode_key(5, WireType::LengthDelimited, &mut g);
    encode_varint(tensor_len, &mut g);
    let mut key = Vec::new();
    encode_key(7, WireType::LengthDelimited, &mut key);
    encode_varint(g.len() as u64 + tensor_len, &mut key);
    for part in [head.encode_to_vec(), key, g, tensor] {
        w.write_all(&part)?;
    }
    // Not all zeros, so no layer below can cheat with sparse files or compression.
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(7) % 251) as u8)
        .collect();
    let mut left = n * 4;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..k])?;
        left -= k as u64;
    }
    w.flush()
}

// ---- external data ----

/// A protobuf field as it sits on the wire: its number, wire type and the bytes of its
/// value (for length-delimited fields, without the length).
struct WireField<'a> {
    number: u64,
    wire: u8,
    /// The whole field, key included, as it was read.
    raw: &'a [u8],
    /// The payload of a length-delimited field, or the varint's value.
    payload: &'a [u8],
    varint: u64,
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn wire_fields(b: &[u8]) -> Result<Vec<WireField<'_>>, OnnxError> {
    let bad = || OnnxError::Decode {
        reason: "truncated or malformed protobuf".into(),
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let key = read_varint(b, &mut pos).ok_or_else(bad)?;
        let wire = (key & 7) as u8;
        let (payload, varint) = match wire {
            0 => {
                let v = read_varint(b, &mut pos).ok_or_else(bad)?;
                (&b[pos..pos], v)
            }
            1 => {
                pos = pos
                    .checked_add(8)
                    .filter(|&p| p <= b.len())
                    .ok_or_else(bad)?;
                (&b[pos - 8..pos], 0)
            }
            2 => {
                let len = read_varint(b, &mut pos).ok_or_else(bad)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= b.len())
                    .ok_or_else(bad)?;
                let p = &b[pos..end];
                pos = end;
                (p, 0)
            }
            5 => {
                pos = pos
                    .checked_add(4)
                    .filter(|&p| p <= b.len())
                    .ok_or_else(bad)?;
                (&b[pos - 4..pos], 0)
            }
            _ => return Err(bad()),
        };
        out.push(WireField {
            number: key >> 3,
            wire,
            raw: &b[start..pos],
            payload,
            varint,
        });
    }
    Ok(out)
}

fn push_bytes_field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    write_varint(out, number << 3 | 2);
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Whether `model` keeps any initializer's data in an external file (`data_location =
/// EXTERNAL`), as `torch.onnx.export` of a large model and `mlflow.onnx.log_model` (by
/// default) write it.
pub fn has_external_data(model: &[u8]) -> Result<bool, OnnxError> {
    let mut found = false;
    for f in wire_fields(model)? {
        if f.number == 7 && f.wire == 2 {
            for g in wire_fields(f.payload)? {
                if g.number == 5 && g.wire == 2 {
                    found |= wire_fields(g.payload)?
                        .iter()
                        .any(|t| t.number == 14 && t.wire == 0 && t.varint == 1);
                }
            }
        }
    }
    Ok(found)
}

/// The model with every external initializer's bytes moved inside it (`raw_data`), so it
/// is one self-contained file: what falaj registers, gates and serves. `file` gives the
/// bytes of a file named by an initializer's `location`, which must be a plain name in the
/// model's own directory (no `/`, no `..`); offsets and lengths are checked against it.
/// Every other byte of the model is kept as it was.
pub fn inline_external_data<'a>(
    model: &[u8],
    file: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<Vec<u8>, OnnxError> {
    let invalid = |reason: String| OnnxError::Invalid { reason };
    let mut out = Vec::with_capacity(model.len());
    for f in wire_fields(model)? {
        if !(f.number == 7 && f.wire == 2) {
            out.extend_from_slice(f.raw);
            continue;
        }
        let mut graph = Vec::with_capacity(f.payload.len());
        for g in wire_fields(f.payload)? {
            if !(g.number == 5 && g.wire == 2) {
                graph.extend_from_slice(g.raw);
                continue;
            }
            let fields = wire_fields(g.payload)?;
            if !fields
                .iter()
                .any(|t| t.number == 14 && t.wire == 0 && t.varint == 1)
            {
                graph.extend_from_slice(g.raw);
                continue;
            }
            let (mut location, mut offset, mut length) = (None, 0usize, None);
            let mut tensor = Vec::with_capacity(g.payload.len());
            let mut name = String::new();
            for t in &fields {
                match (t.number, t.wire) {
                    (13, 2) => {
                        let (mut k, mut v) = (String::new(), String::new());
                        for e in wire_fields(t.payload)? {
                            let s = String::from_utf8_lossy(e.payload).into_owned();
                            match e.number {
                                1 => k = s,
                                2 => v = s,
                                _ => {}
                            }
                        }
                        let num = |v: &str| {
                            v.parse::<usize>().map_err(|_| {
                                invalid(format!("external data {k} {v:?} is not a number"))
                            })
                        };
                        match k.as_str() {
                            "location" => location = Some(v),
                            "offset" => offset = num(&v)?,
                            "length" => length = Some(num(&v)?),
                            _ => {}
                        }
                    }
                    (14, 0) | (9, 2) => {}
                    (8, 2) => {
                        name = String::from_utf8_lossy(t.payload).into_owned();
                        tensor.extend_from_slice(t.raw);
                    }
                    _ => tensor.extend_from_slice(t.raw),
                }
            }
            let location = location.ok_or_else(|| {
                invalid(format!(
                    "initializer {name:?} has external data with no location"
                ))
            })?;
            if location.is_empty()
                || location.contains('/')
                || location.contains('\\')
                || location == "."
                || location == ".."
            {
                return Err(invalid(format!(
                    "initializer {name:?} keeps its data at {location:?}, outside the model's own directory"
                )));
            }
            let data = file(&location).ok_or_else(|| {
                invalid(format!(
                    "initializer {name:?} keeps its data in {location}, which is not beside the model"
                ))
            })?;
            let end = match length {
                Some(l) => offset.checked_add(l),
                None => Some(data.len()),
            };
            let bytes = end
                .filter(|&e| e <= data.len() && offset <= e)
                .map(|e| &data[offset..e])
                .ok_or_else(|| {
                    invalid(format!(
                        "initializer {name:?} reads past the end of {location} ({} bytes)",
                        data.len()
                    ))
                })?;
            push_bytes_field(&mut tensor, 9, bytes);
            push_bytes_field(&mut graph, 5, &tensor);
        }
        push_bytes_field(&mut out, 7, &graph);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_model_round_trips() {
        let m = linear_model(3, 2, &[1.0; 6], &[0.5, -0.5]);
        let bytes = m.encode_to_vec();
        let s = summarize(&bytes).unwrap();
        assert_eq!(s.format.opset, 17);
        assert_eq!(s.signature.inputs.len(), 1);
        assert_eq!(
            s.signature.inputs[0].shape,
            vec!["batch".to_string(), "3".into()]
        );
        assert_eq!(s.signature.outputs[0].dtype, "float");
        assert_eq!(s.ops, vec!["Gemm".to_string()]);
    }

    #[test]
    fn skimming_matches_full_decode_and_skips_weights() {
        let m = linear_model(4, 3, &[0.25; 12], &[1.0, 2.0, 3.0]);
        let bytes = m.encode_to_vec();
        let skimmed = summarize_reader(std::io::Cursor::new(&bytes)).unwrap();
        let full = summarize_model(&m).unwrap();
        assert_eq!(skimmed, full);
        // Truncation anywhere is an error, never a panic.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(summarize(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn padded_model_is_valid_and_sized() {
        let mut buf = Vec::new();
        write_padded_model(&mut buf, 4 << 20).unwrap();
        assert!(buf.len() as u64 > 4 << 20);
        let s = summarize(&buf).unwrap();
        assert_eq!(s.ops, vec!["Gemm".to_string()]);
        assert_eq!(
            s.signature.inputs.len(),
            1,
            "the pad initializer is not an input"
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            summarize(b"this is not protobuf \xff\xff\xff"),
            Err(OnnxError::Decode { .. })
        ));
        assert!(matches!(summarize(&[]), Err(OnnxError::Invalid { .. })));
        let mut m = linear_model(1, 1, &[1.0], &[0.0]);
        m.graph = None;
        assert!(matches!(
            summarize(&m.encode_to_vec()),
            Err(OnnxError::Invalid { .. })
        ));
    }
}

#[cfg(test)]
mod external_data_tests {
    use super::*;

    /// A model whose one initializer keeps its data in `location` at `offset`/`length`.
    fn external_model(location: &str, offset: usize, length: usize) -> Vec<u8> {
        let entry = |k: &str, v: &str| {
            let mut e = Vec::new();
            push_bytes_field(&mut e, 1, k.as_bytes());
            push_bytes_field(&mut e, 2, v.as_bytes());
            e
        };
        let mut tensor = Vec::new();
        write_varint(&mut tensor, 1 << 3);
        write_varint(&mut tensor, 2);
        write_varint(&mut tensor, 2 << 3);
        write_varint(&mut tensor, 1);
        push_bytes_field(&mut tensor, 8, b"w");
        for (k, v) in [
            ("location", location.to_string()),
            ("offset", offset.to_string()),
            ("length", length.to_string()),
        ] {
            let e = entry(k, &v);
            push_bytes_field(&mut tensor, 13, &e);
        }
        write_varint(&mut tensor, 14 << 3);
        write_varint(&mut tensor, 1);
        let mut graph = Vec::new();
        push_bytes_field(&mut graph, 2, b"g");
        push_bytes_field(&mut graph, 5, &tensor);
        let mut model = Vec::new();
        write_varint(&mut model, 1 << 3);
        write_varint(&mut model, 8);
        push_bytes_field(&mut model, 7, &graph);
        model
    }

    #[test]
    fn external_initializers_are_moved_inside_the_model() {
        let data: Vec<u8> = [0f32, 1.5, -2.0, 7.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let m = external_model("w.data", 8, 8);
        assert!(has_external_data(&m).unwrap());
        let inlined = inline_external_data(&m, |f| (f == "w.data").then_some(&data[..])).unwrap();
        assert!(!has_external_data(&inlined).unwrap());
        let decoded = ModelProto::decode(&inlined[..]).unwrap();
        let g = decoded.graph.unwrap();
        assert_eq!(g.name, "g");
        assert_eq!(g.initializer[0].name, "w");
        assert_eq!(g.initializer[0].dims, vec![2]);
        assert_eq!(g.initializer[0].raw_data, data[8..16].to_vec());
        // A self-contained model is kept byte for byte.
        let plain = linear_model(2, 1, &[1.0, 2.0], &[0.5]).encode_to_vec();
        assert_eq!(inline_external_data(&plain, |_| None).unwrap(), plain);
    }

    #[test]
    fn external_data_outside_the_directory_or_the_file_is_refused() {
        let data = [0u8; 16];
        for (loc, off, len, why) in [
            ("../secret", 0, 4, "outside the model's own directory"),
            ("/etc/passwd", 0, 4, "outside the model's own directory"),
            ("missing.data", 0, 4, "not beside the model"),
            ("w.data", 12, 8, "past the end"),
            ("w.data", usize::MAX, 2, "past the end"),
        ] {
            let m = external_model(loc, off, len);
            let e = inline_external_data(&m, |f| (f == "w.data").then_some(&data[..]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{loc}: {e}");
        }
        assert!(inline_external_data(&[0x0a, 0xff], |_| None).is_err());
    }
}
