//! Where a llama-family checkpoint's weights come from: a GGUF file or a Hugging Face
//! safetensors folder, both read through one [`WeightSource`] that speaks canonical weight names
//! and hands out row-major f32 matrices in Hugging Face's `[out, in]` layout.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::config::Arch;
use crate::gguf::{GgufError, GgufFile, kernel_type};
use hearth_kernels::QuantMatrix;

/// A weight of one transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerWeight {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    FfnNorm,
    Gate,
    Up,
    Down,
}

/// A weight of the model, by its role rather than any file's naming scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    TokenEmbedding,
    OutputNorm,
    Output,
    /// Llama 3's per-frequency RoPE factors (GGUF only; HF folders carry them in config.json).
    RopeFreqs,
    Layer(usize, LayerWeight),
}

impl Weight {
    pub fn gguf_name(self) -> String {
        match self {
            Weight::TokenEmbedding => "token_embd.weight".into(),
            Weight::OutputNorm => "output_norm.weight".into(),
            Weight::Output => "output.weight".into(),
            Weight::RopeFreqs => "rope_freqs.weight".into(),
            Weight::Layer(i, w) => {
                let suffix = match w {
                    LayerWeight::AttnNorm => "attn_norm.weight",
                    LayerWeight::Q => "attn_q.weight",
                    LayerWeight::K => "attn_k.weight",
                    LayerWeight::V => "attn_v.weight",
                    LayerWeight::O => "attn_output.weight",
                    LayerWeight::QBias => "attn_q.bias",
                    LayerWeight::KBias => "attn_k.bias",
                    LayerWeight::VBias => "attn_v.bias",
                    LayerWeight::QNorm => "attn_q_norm.weight",
                    LayerWeight::KNorm => "attn_k_norm.weight",
                    LayerWeight::FfnNorm => "ffn_norm.weight",
                    LayerWeight::Gate => "ffn_gate.weight",
                    LayerWeight::Up => "ffn_up.weight",
                    LayerWeight::Down => "ffn_down.weight",
                };
                format!("blk.{i}.{suffix}")
            }
        }
    }

    pub fn hf_name(self) -> String {
        match self {
            Weight::TokenEmbedding => "model.embed_tokens.weight".into(),
            Weight::OutputNorm => "model.norm.weight".into(),
            Weight::Output => "lm_head.weight".into(),
            Weight::RopeFreqs => "rope_freqs.weight".into(),
            Weight::Layer(i, w) => {
                let suffix = match w {
                    LayerWeight::AttnNorm => "input_layernorm.weight",
                    LayerWeight::Q => "self_attn.q_proj.weight",
                    LayerWeight::K => "self_attn.k_proj.weight",
                    LayerWeight::V => "self_attn.v_proj.weight",
                    LayerWeight::O => "self_attn.o_proj.weight",
                    LayerWeight::QBias => "self_attn.q_proj.bias",
                    LayerWeight::KBias => "self_attn.k_proj.bias",
                    LayerWeight::VBias => "self_attn.v_proj.bias",
                    LayerWeight::QNorm => "self_attn.q_norm.weight",
                    LayerWeight::KNorm => "self_attn.k_norm.weight",
                    LayerWeight::FfnNorm => "post_attention_layernorm.weight",
                    LayerWeight::Gate => "mlp.gate_proj.weight",
                    LayerWeight::Up => "mlp.up_proj.weight",
                    LayerWeight::Down => "mlp.down_proj.weight",
                };
                format!("model.layers.{i}.{suffix}")
            }
        }
    }
}

/// A weight read into memory: row-major f32 with its shape (outermost first).
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// `[rows, cols]` of a matrix, or an error naming the weight when it is not 2-D.
    pub fn matrix_dims(&self, name: &str) -> Result<[usize; 2], WeightError> {
        match self.shape.as_slice() {
            [r, c] => Ok([*r, *c]),
            other => {
                Err(WeightError::Shape { name: name.to_owned(), expected: "a matrix".into(), found: other.to_vec() })
            }
        }
    }
}

/// A weight that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("{0}")]
    Gguf(#[from] GgufError),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("weight `{0}` is missing")]
    Missing(String),
    #[error("weight `{name}` has dtype {dtype}, which Hearth cannot read")]
    Dtype { name: String, dtype: String },
    #[error("weight `{name}` should be {expected} but has shape {found:?}")]
    Shape { name: String, expected: String, found: Vec<usize> },
    #[error("weight `{name}` cannot be used: {reason}")]
    Invalid { name: String, reason: String },
}

/// A checkpoint's weights, by canonical name.
pub trait WeightSource {
    /// Whether the checkpoint has this weight (biases, q/k norms and `output` are optional).
    fn contains(&self, weight: Weight) -> bool;
    /// Reads a weight as f32, in Hugging Face layout.
    fn read(&self, weight: Weight) -> Result<HostTensor, WeightError>;
    /// Reads a matrix in its block-quantized form (Hugging Face layout), when the checkpoint
    /// stores it in a format Hearth computes on directly; `None` otherwise.
    fn read_quantized(&self, _weight: Weight) -> Result<Option<QuantMatrix>, WeightError> {
        Ok(None)
    }
    /// The name the weight has in the file, for error messages.
    fn file_name_of(&self, weight: Weight) -> String;
}

/// Weights from a GGUF file.
pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    /// llama.cpp permutes Q and K rows of `llama`-arch checkpoints for interleaved rotary pairs;
    /// we undo it so every source shares Hugging Face's rotate-half layout.
    unpermute_qk: Option<(usize, usize)>,
}

impl<'a> GgufWeights<'a> {
    pub fn new(file: &'a GgufFile, arch: Arch, num_heads: usize, num_kv_heads: usize) -> Self {
        let unpermute_qk = (arch == Arch::Llama).then_some((num_heads, num_kv_heads));
        Self { file, unpermute_qk }
    }
}

impl WeightSource for GgufWeights<'_> {
    fn contains(&self, weight: Weight) -> bool {
        self.file.has_tensor(&weight.gguf_name())
    }

    fn read(&self, weight: Weight) -> Result<HostTensor, WeightError> {
        let name = weight.gguf_name();
        if !self.file.has_tensor(&name) {
            return Err(WeightError::Missing(name));
        }
        let (shape, mut data) = self.file.tensor_f32(&name)?;
        if let (Some((heads, kv_heads)), Weight::Layer(_, w)) = (self.unpermute_qk, weight) {
            let heads = match w {
                LayerWeight::Q | LayerWeight::QBias => Some(heads),
                LayerWeight::K | LayerWeight::KBias => Some(kv_heads),
                _ => None,
            };
            if let Some(heads) = heads {
                let rows = shape[0];
                let cols = data.len() / rows.max(1);
                if rows % (2 * heads) != 0 {
                    return Err(WeightError::Shape {
                        name,
                        expected: format!("rows divisible into {heads} heads of even size"),
                        found: shape,
                    });
                }
                data = unpermute_rows(&data, rows, cols, heads);
            }
        }
        Ok(HostTensor { shape, data })
    }

    fn read_quantized(&self, weight: Weight) -> Result<Option<QuantMatrix>, WeightError> {
        let name = weight.gguf_name();
        let Some(info) = self.file.tensor_info(&name) else {
            return Err(WeightError::Missing(name));
        };
        let Some(ty) = kernel_type(info.ty) else {
            return Ok(None);
        };
        let shape = info.shape();
        let [rows, cols] = shape[..] else {
            return Ok(None);
        };
        let (_, bytes) = self.file.tensor_bytes(&name)?;
        let matrix = QuantMatrix::new(ty, rows, cols, bytes.to_vec()).map_err(|e| WeightError::Shape {
            name: name.clone(),
            expected: e.to_string(),
            found: shape.clone(),
        })?;
        let heads = match (self.unpermute_qk, weight) {
            (Some((heads, _)), Weight::Layer(_, LayerWeight::Q)) => heads,
            (Some((_, kv_heads)), Weight::Layer(_, LayerWeight::K)) => kv_heads,
            _ => return Ok(Some(matrix)),
        };
        if rows % (2 * heads) != 0 {
            return Err(WeightError::Shape {
                name,
                expected: format!("rows divisible into {heads} heads of even size"),
                found: shape,
            });
        }
        Ok(Some(matrix.permute_rows(&unpermute_order(rows, heads))))
    }

    fn file_name_of(&self, weight: Weight) -> String {
        weight.gguf_name()
    }
}

/// Inverse of llama.cpp's `permute(w, n_head)`: GGUF rows of one head are ordered
/// `[half, pair, 2]` (interleaved pairs); Hugging Face orders them `[2, half]` (rotate-half).
pub fn unpermute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    for src in unpermute_order(rows, heads) {
        out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
    }
    out
}

/// For each Hugging Face row, the GGUF row it comes from (see [`unpermute_rows`]).
pub fn unpermute_order(rows: usize, heads: usize) -> Vec<usize> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut order = vec![0; rows];
    for h in 0..heads {
        for i in 0..half {
            for pair in 0..2 {
                order[h * head_dim + pair * half + i] = h * head_dim + i * 2 + pair;
            }
        }
    }
    order
}

/// Weights from a Hugging Face folder: `model.safetensors` or shards listed in
/// `model.safetensors.index.json`.
pub struct SafetensorsWeights {
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name → index into `files` and the name the file stores it under. A multimodal
    /// checkpoint's tensors are also listed under their canonical names ([`canonical_name`]).
    index: HashMap<String, (usize, String)>,
}

/// The name a multimodal checkpoint's tensor is read by: the decoder's as a text-only model
/// names them (`model.layers.…`, `lm_head.…`), the vision tower's as `vision_tower.…`, the
/// projector's as `multi_modal_projector.…` — whichever of transformers' layouts saved it
/// (`language_model.model.…` in LLaVA checkpoints, `model.language_model.…` in transformers
/// 5's own, `vision_tower.vision_model.…` for a CLIP tower).
pub fn canonical_name(name: &str) -> Option<String> {
    // Idefics3 / SmolVLM: the decoder is `model.text_model.…`.
    if let Some(rest) = name.strip_prefix("model.text_model.") {
        return Some(format!("model.{rest}"));
    }
    let inner = name.strip_prefix("model.").filter(|rest| {
        ["language_model.", "vision_tower.", "multi_modal_projector."].iter().any(|p| rest.starts_with(p))
    });
    let name = inner.unwrap_or(name);
    let renamed = if let Some(rest) = name.strip_prefix("language_model.model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("language_model.lm_head.") {
        format!("lm_head.{rest}")
    } else if let Some(rest) = name.strip_prefix("language_model.") {
        format!("model.{rest}")
    } else if let Some(rest) = name.strip_prefix("vision_tower.vision_model.") {
        format!("vision_tower.{rest}")
    } else if inner.is_some() {
        name.to_owned()
    } else {
        return None;
    };
    Some(renamed)
}

impl SafetensorsWeights {
    pub fn open(dir: &Path) -> Result<Self, WeightError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| WeightError::Io { path: dir.to_path_buf(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(WeightError::Missing(format!("*.safetensors in {}", dir.display())));
        }
        Self::open_files(paths)
    }

    /// One `.safetensors` file (a single-file checkpoint).
    pub fn open_file(path: &Path) -> Result<Self, WeightError> {
        Self::open_files(vec![path.to_path_buf()])
    }

    fn open_files(paths: Vec<PathBuf>) -> Result<Self, WeightError> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in paths {
            let file = File::open(&path).map_err(|source| WeightError::Io { path: path.clone(), source })?;
            // SAFETY: read-only map of a weights file that is not modified while loaded.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|source| WeightError::Io { path: path.clone(), source })?;
            let names = SafeTensors::read_metadata(&mmap)
                .map_err(|e| WeightError::Safetensors { path: path.clone(), reason: e.to_string() })?
                .1
                .tensors()
                .into_keys()
                .collect::<Vec<_>>();
            for name in names {
                if let Some(canonical) = canonical_name(&name) {
                    index.entry(canonical).or_insert((files.len(), name.clone()));
                }
                index.insert(name.clone(), (files.len(), name));
            }
            files.push((path, mmap));
        }
        Ok(Self { files, index })
    }

    /// Every tensor name in the folder (for diagnostics).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether the folder holds `name`.
    pub fn contains_named(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The shape `name` is stored with, read from the header alone.
    pub fn shape_named(&self, name: &str) -> Result<Vec<usize>, WeightError> {
        let (i, stored) = self.index.get(name).ok_or_else(|| WeightError::Missing(name.to_owned()))?;
        let (path, mmap) = &self.files[*i];
        let st = SafeTensors::deserialize(mmap)
            .map_err(|e| WeightError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        let view =
            st.tensor(stored).map_err(|e| WeightError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        Ok(view.shape().to_vec())
    }

    pub fn read_named(&self, name: &str) -> Result<HostTensor, WeightError> {
        let (i, stored) = self.index.get(name).ok_or_else(|| WeightError::Missing(name.to_owned()))?;
        let name = stored.as_str();
        let (path, mmap) = &self.files[*i];
        let st = SafeTensors::deserialize(mmap)
            .map_err(|e| WeightError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        let view =
            st.tensor(name).map_err(|e| WeightError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(WeightError::Dtype { name: name.to_owned(), dtype: format!("{other:?}") });
            }
        };
        Ok(HostTensor { shape: view.shape().to_vec(), data })
    }
}

impl WeightSource for SafetensorsWeights {
    fn contains(&self, weight: Weight) -> bool {
        self.index.contains_key(&weight.hf_name())
    }

    fn read(&self, weight: Weight) -> Result<HostTensor, WeightError> {
        self.read_named(&weight.hf_name())
    }

    fn file_name_of(&self, weight: Weight) -> String {
        weight.hf_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multimodal_checkpoints_are_read_by_canonical_names() {
        let c = |n: &str| canonical_name(n);
        assert_eq!(
            c("language_model.model.layers.0.mlp.up_proj.weight").as_deref(),
            Some("model.layers.0.mlp.up_proj.weight")
        );
        assert_eq!(c("language_model.lm_head.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(c("model.language_model.norm.weight").as_deref(), Some("model.norm.weight"));
        assert_eq!(
            c("model.vision_tower.vision_model.pre_layrnorm.bias").as_deref(),
            Some("vision_tower.pre_layrnorm.bias")
        );
        assert_eq!(c("multi_modal_projector.linear_1.weight").as_deref(), None);
        assert_eq!(
            c("model.multi_modal_projector.linear_1.weight").as_deref(),
            Some("multi_modal_projector.linear_1.weight")
        );
        assert_eq!(c("model.layers.0.mlp.up_proj.weight"), None);
        assert_eq!(
            c("model.text_model.layers.1.self_attn.q_proj.weight").as_deref(),
            Some("model.layers.1.self_attn.q_proj.weight")
        );
    }

    /// llama.cpp's permute, as its converter applies it (HF → GGUF).
    fn permute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
        let head_dim = rows / heads;
        let half = head_dim / 2;
        let mut out = vec![0f32; data.len()];
        for h in 0..heads {
            for pair in 0..2 {
                for i in 0..half {
                    let src = h * head_dim + pair * half + i;
                    let dst = h * head_dim + i * 2 + pair;
                    out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (rows, cols, heads) = (24, 3, 3);
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let gguf = permute_rows(&hf, rows, cols, heads);
        assert_ne!(gguf, hf);
        assert_eq!(unpermute_rows(&gguf, rows, cols, heads), hf);
    }

    #[test]
    fn names_follow_both_conventions() {
        let w = Weight::Layer(3, LayerWeight::Gate);
        assert_eq!(w.gguf_name(), "blk.3.ffn_gate.weight");
        assert_eq!(w.hf_name(), "model.layers.3.mlp.gate_proj.weight");
    }
}
