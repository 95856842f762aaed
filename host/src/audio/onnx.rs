//! The parts of an ONNX file a voice's weights are read from: its initializers (f32 tensors by
//! name) and its convolution nodes (which weight each one applies, with its stride, padding,
//! dilation and groups). Piper's exporter folds weight-normalised convolutions into unnamed
//! initializers (`onnx::Conv_8168`), so a layer is found by its node's name, which keeps the
//! PyTorch module path (`/flow/flows.0/enc/in_layers.0/Conv` → `flow.flows.0.enc.in_layers.0`).
//!
//! The messages below are the subset of `onnx.proto` this reads, with its field numbers; prost
//! skips every other field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::model::weights::HostTensor;

/// ONNX's tensor element types this reads.
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;
/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an ONNX model: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("the voice has no weight `{0}`")]
    Missing(String),
    #[error("weight `{name}` cannot be read: {reason}")]
    Tensor { name: String, reason: String },
    #[error("layer `{layer}` is not a usable convolution: {reason}")]
    Conv { layer: String, reason: String },
}

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    op_type: Option<String>,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int64, optional, tag = "3")]
    i: Option<i64>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    ints: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, optional, tag = "2")]
    data_type: Option<i32>,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    int32_data: Vec<i32>,
    #[prost(string, optional, tag = "8")]
    name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "9")]
    raw_data: Option<Vec<u8>>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    #[prost(int32, optional, tag = "14")]
    data_location: Option<i32>,
}

/// A convolution as the file runs it.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    /// `[out, in / groups, kernel]` (a transposed one: `[in, out / groups, kernel]`).
    pub weight: HostTensor,
    pub bias: Option<HostTensor>,
    pub stride: usize,
    /// Padding before and after.
    pub pads: (usize, usize),
    pub dilation: usize,
    pub groups: usize,
    pub transposed: bool,
}

/// A convolution node's attributes and the names of its weight and bias.
#[derive(Debug, Clone)]
struct ConvNode {
    weight: String,
    bias: Option<String>,
    attributes: Vec<AttributeProto>,
    transposed: bool,
}

/// An ONNX file's weights, read whole.
pub struct OnnxWeights {
    tensors: HashMap<String, TensorProto>,
    /// Convolution nodes by module path.
    convs: HashMap<String, ConvNode>,
    /// Every node's inputs by node name, for weights only a node names.
    nodes: HashMap<String, Vec<String>>,
}

impl OnnxWeights {
    pub fn open(path: &Path) -> Result<Self, OnnxError> {
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.to_owned(), source })?;
        Self::parse(&bytes).map_err(|reason| OnnxError::Decode { path: path.to_owned(), reason })
    }

    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let model = ModelProto::decode(bytes).map_err(|e| e.to_string())?;
        let graph = model.graph.ok_or("it has no graph")?;
        let tensors =
            graph.initializer.into_iter().map(|t| (t.name.clone().unwrap_or_default(), t)).collect::<HashMap<_, _>>();
        let mut convs = HashMap::new();
        let mut nodes = HashMap::new();
        for node in graph.node {
            let name = node.name.clone().unwrap_or_default();
            let op = node.op_type.as_deref().unwrap_or_default();
            if matches!(op, "Conv" | "ConvTranspose")
                && let Some(path) = module_path(&name)
                && let Some(weight) = node.input.get(1)
            {
                convs.insert(
                    path,
                    ConvNode {
                        weight: weight.clone(),
                        bias: node.input.get(2).filter(|b| !b.is_empty()).cloned(),
                        attributes: node.attribute.clone(),
                        transposed: op == "ConvTranspose",
                    },
                );
            }
            nodes.insert(name, node.input);
        }
        Ok(Self { tensors, convs, nodes })
    }

    /// Whether an initializer of this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// An initializer as f32.
    pub fn tensor(&self, name: &str) -> Result<HostTensor, OnnxError> {
        let t = self.tensors.get(name).ok_or_else(|| OnnxError::Missing(name.to_owned()))?;
        to_host(name, t)
    }

    /// The `index`th input of the node called `node`, read as an initializer (for weights the
    /// exporter renamed, such as an embedding table it called `sid`).
    pub fn node_input(&self, node: &str, index: usize) -> Result<HostTensor, OnnxError> {
        let name = self
            .nodes
            .get(node)
            .and_then(|inputs| inputs.get(index))
            .ok_or_else(|| OnnxError::Missing(format!("{node} (input {index})")))?;
        self.tensor(name)
    }

    /// Whether a convolution node runs the layer at this module path.
    pub fn has_conv(&self, layer: &str) -> bool {
        self.convs.contains_key(layer)
    }

    /// The convolution at a module path (`dec.ups.0`).
    pub fn conv(&self, layer: &str) -> Result<ConvLayer, OnnxError> {
        let node = self.convs.get(layer).ok_or_else(|| OnnxError::Missing(format!("{layer} (a convolution)")))?;
        let bad = |reason: String| OnnxError::Conv { layer: layer.to_owned(), reason };
        let weight = self.tensor(&node.weight)?;
        let bias = node.bias.as_deref().map(|b| self.tensor(b)).transpose()?;
        let [_, _, kernel] = weight.shape[..] else {
            return Err(bad(format!("its weight has shape {:?}, not [out, in, kernel]", weight.shape)));
        };
        let ints = |name: &str| node.attributes.iter().find(|a| a.name.as_deref() == Some(name)).map(|a| &a.ints);
        let one = |name: &str| -> Result<usize, OnnxError> {
            match ints(name).map(Vec::as_slice) {
                None => Ok(1),
                Some([v]) if *v >= 1 => Ok(*v as usize),
                Some(v) => Err(bad(format!("{name} {v:?} is not one positive value"))),
            }
        };
        let pads = match ints("pads").map(Vec::as_slice) {
            None => (0, 0),
            Some([a, b]) if *a >= 0 && *b >= 0 => (*a as usize, *b as usize),
            Some(v) => Err(bad(format!("pads {v:?} are not two values ≥ 0")))?,
        };
        if let Some(shape) = ints("kernel_shape")
            && shape.as_slice() != [kernel as i64]
        {
            return Err(bad(format!("kernel_shape {shape:?} differs from the weight's {kernel}")));
        }
        let groups = node.attributes.iter().find(|a| a.name.as_deref() == Some("group")).and_then(|a| a.i).unwrap_or(1);
        if groups < 1 {
            return Err(bad(format!("group {groups}")));
        }
        Ok(ConvLayer {
            weight,
            bias,
            stride: one("strides")?,
            pads,
            dilation: one("dilations")?,
            groups: groups as usize,
            transposed: node.transposed,
        })
    }

    /// How many layers `{prefix}.{i}` exist, counting from 0, by convolution or initializer.
    pub fn count(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|i| {
                let name = format!("{prefix}.{i}{suffix}");
                self.convs.contains_key(&name) || self.tensors.contains_key(&name)
            })
            .count()
    }
}

/// `/flow/flows.0/enc/in_layers.0/Conv` → `flow.flows.0.enc.in_layers.0`.
fn module_path(node: &str) -> Option<String> {
    let (scope, _op) = node.strip_prefix('/')?.rsplit_once('/')?;
    Some(scope.replace('/', "."))
}

fn to_host(name: &str, t: &TensorProto) -> Result<HostTensor, OnnxError> {
    let bad = |reason: String| OnnxError::Tensor { name: name.to_owned(), reason };
    if t.data_location == Some(EXTERNAL) {
        return Err(bad("its data is in an external file, which Hearth does not read".into()));
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| bad("too large".into()))?;
    let raw = t.raw_data.as_deref().filter(|r| !r.is_empty());
    let data: Vec<f32> = match (t.data_type.unwrap_or(0), raw) {
        (FLOAT, Some(raw)) => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        (FLOAT, None) => t.float_data.clone(),
        (FLOAT16, Some(raw)) => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        // float16 values without raw_data sit in int32_data, one per element.
        (FLOAT16, None) => t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f32()).collect(),
        (DOUBLE, Some(raw)) => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        (DOUBLE, None) => t.double_data.iter().map(|&v| v as f32).collect(),
        (other, _) => return Err(bad(format!("element type {other} is not a float type"))),
    };
    if data.len() != count {
        return Err(bad(format!("{} values for shape {shape:?}", data.len())));
    }
    Ok(HostTensor { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(FLOAT),
            name: Some(name.into()),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        }
    }

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto { name: Some(name.into()), i: None, ints: v.to_vec() }
    }

    fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> Vec<u8> {
        ModelProto { graph: Some(GraphProto { node: nodes, initializer: inits }) }.encode_to_vec()
    }

    #[test]
    fn a_convolution_is_found_by_its_node_with_an_unnamed_weight() {
        let bytes = model(
            vec![NodeProto {
                input: vec!["x".into(), "onnx::Conv_7".into(), "flow.flows.0.pre.bias".into()],
                name: Some("/flow/flows.0/pre/Conv".into()),
                op_type: Some("Conv".into()),
                attribute: vec![ints("dilations", &[3]), ints("pads", &[3, 3]), ints("kernel_shape", &[3])],
            }],
            vec![
                tensor("onnx::Conv_7", &[2, 1, 3], &[1., 2., 3., 4., 5., 6.]),
                tensor("flow.flows.0.pre.bias", &[2], &[0.5, -0.5]),
            ],
        );
        let w = OnnxWeights::parse(&bytes).unwrap();
        let conv = w.conv("flow.flows.0.pre").unwrap();
        assert_eq!(conv.weight.shape, vec![2, 1, 3]);
        assert_eq!(conv.weight.data[5], 6.0);
        assert_eq!(conv.bias.unwrap().data, vec![0.5, -0.5]);
        assert_eq!((conv.stride, conv.pads, conv.dilation, conv.groups), (1, (3, 3), 3, 1));
        assert_eq!(w.count("flow.flows", ".pre"), 1);
    }

    #[test]
    fn broken_files_and_weights_are_errors() {
        assert!(OnnxWeights::parse(b"\xff\xff\xff\xff not protobuf").is_err());
        let bytes = model(vec![], vec![tensor("short", &[4], &[1., 2.])]);
        let w = OnnxWeights::parse(&bytes).unwrap();
        assert!(matches!(w.tensor("short"), Err(OnnxError::Tensor { .. })));
        assert!(matches!(w.tensor("absent"), Err(OnnxError::Missing(_))));
        assert!(matches!(w.conv("absent"), Err(OnnxError::Missing(_))));
    }

    #[test]
    fn zero_strides_are_refused_rather_than_reaching_burn() {
        let bytes = model(
            vec![NodeProto {
                input: vec!["x".into(), "w".into()],
                name: Some("/dec/conv_post/Conv".into()),
                op_type: Some("Conv".into()),
                attribute: vec![ints("strides", &[0])],
            }],
            vec![tensor("w", &[1, 1, 1], &[1.])],
        );
        let w = OnnxWeights::parse(&bytes).unwrap();
        assert!(matches!(w.conv("dec.conv_post"), Err(OnnxError::Conv { .. })));
    }
}
