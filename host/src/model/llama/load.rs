//! Building a [`Llama`] from a checkpoint's weights, part by part (embedding, each block's
//! attention and feed-forward, the head), every shape checked against the config. Block-quantized
//! matrices stay quantized (3–7× less to read per token, no f32 copy in memory) in every format
//! the kernels crate computes on, on the CPU and on a GPU; the token embedding in host memory
//! on both, decoded a row per lookup.

use std::sync::Arc;

use hearth_gpu_kernels::decode::MAX_HEAD_DIM;
use hearth_kernels::QuantMatrix;

use super::{Attention, Block, Embedding, Head, Llama, Qkv, head_chunks};
use crate::model::ModelError;
use crate::model::config::{Arch, LlamaConfig};
use crate::model::device::ComputeDevice;
use crate::model::layers::{Linear, Mlp, RmsNorm};
use crate::model::progress::LoadProgress;
use crate::model::rope::Rope;
use crate::model::weights::{HostTensor, LayerWeight, Weight, WeightError, WeightSource};

/// Reads the parts of one model.
struct Parts<'a> {
    source: &'a dyn WeightSource,
    config: &'a LlamaConfig,
    compute: &'a ComputeDevice,
}

impl Parts<'_> {
    fn read(&self, w: Weight) -> Result<HostTensor, ModelError> {
        Ok(self.source.read(w)?)
    }

    /// An optional weight (biases, q/k norms, `output`, rope factors).
    fn read_opt(&self, w: Weight) -> Result<Option<HostTensor>, ModelError> {
        if self.source.contains(w) { self.read(w).map(Some) } else { Ok(None) }
    }

    /// The weight in its block-quantized form, when the file stores it in one Hearth computes on.
    fn quantized(&self, w: Weight) -> Result<Option<QuantMatrix>, ModelError> {
        if self.source.contains(w) { Ok(self.source.read_quantized(w)?) } else { Ok(None) }
    }

    fn name(&self, w: Weight) -> String {
        self.source.file_name_of(w)
    }

    fn norm(&self, w: Weight, dim: usize) -> Result<RmsNorm, ModelError> {
        Ok(RmsNorm::from_host(&self.name(w), self.read(w)?, dim, self.config.rms_norm_eps, &self.compute.device)?)
    }

    /// A projection `[out, inp]` with its optional bias, kept in the form the device computes on.
    fn linear(&self, w: Weight, bias: Option<Weight>, out: usize, inp: usize) -> Result<Linear, ModelError> {
        let device = &self.compute.device;
        let bias = match bias {
            Some(b) => self.read_opt(b)?,
            None => None,
        };
        let name = self.name(w);
        let Some(q) = self.quantized(w)? else {
            return Ok(Linear::from_host(&name, self.read(w)?, bias, [out, inp], device)?);
        };
        if self.compute.is_cpu() {
            return Ok(Linear::quantized(&name, Arc::new(q), bias, [out, inp], device)?);
        }
        Ok(Linear::device_blocks(&name, &q, bias, [out, inp], device)?)
    }

    /// The token embedding, at least the config's vocabulary and exactly its hidden size.
    fn embedding(&self) -> Result<Embedding, ModelError> {
        let c = self.config;
        let embedding = match self.quantized(Weight::TokenEmbedding)? {
            Some(q) => Embedding::Quantized(Arc::new(q)),
            None => {
                let e = self.read(Weight::TokenEmbedding)?;
                let [_, hidden] = e.matrix_dims(&self.name(Weight::TokenEmbedding))?;
                Embedding::Dense { table: e.data, hidden }
            }
        };
        let [vocab, hidden] = embedding.dims();
        if hidden != c.hidden_size || vocab < c.vocab_size {
            return Err(WeightError::Shape {
                name: self.name(Weight::TokenEmbedding),
                expected: format!("[{}, {}] (vocabulary × hidden size from the config)", c.vocab_size, c.hidden_size),
                found: vec![vocab, hidden],
            }
            .into());
        }
        Ok(embedding)
    }

    /// Layer `i`: attention (with Qwen3-style q/k norms where present) and the SwiGLU MLP.
    fn block(&self, i: usize) -> Result<Block, ModelError> {
        let c = self.config;
        let l = |w: LayerWeight| Weight::Layer(i, w);
        let (q_norm, k_norm) = if c.arch == Arch::Qwen3 || self.source.contains(l(LayerWeight::QNorm)) {
            (Some(self.norm(l(LayerWeight::QNorm), c.head_dim)?), Some(self.norm(l(LayerWeight::KNorm), c.head_dim)?))
        } else {
            (None, None)
        };
        let attn = Attention {
            qkv: Qkv::new(
                self.linear(l(LayerWeight::Q), Some(l(LayerWeight::QBias)), c.q_dim(), c.hidden_size)?,
                self.linear(l(LayerWeight::K), Some(l(LayerWeight::KBias)), c.kv_dim(), c.hidden_size)?,
                self.linear(l(LayerWeight::V), Some(l(LayerWeight::VBias)), c.kv_dim(), c.hidden_size)?,
            ),
            o: self.linear(l(LayerWeight::O), None, c.hidden_size, c.q_dim())?,
            q_norm,
            k_norm,
        };
        let mlp = Mlp::new(
            self.linear(l(LayerWeight::Gate), None, c.intermediate_size, c.hidden_size)?,
            self.linear(l(LayerWeight::Up), None, c.intermediate_size, c.hidden_size)?,
            self.linear(l(LayerWeight::Down), None, c.hidden_size, c.intermediate_size)?,
        );
        Ok(Block {
            attn_norm: self.norm(l(LayerWeight::AttnNorm), c.hidden_size)?,
            attn,
            ffn_norm: self.norm(l(LayerWeight::FfnNorm), c.hidden_size)?,
            mlp,
        })
    }

    /// The output head: `output`, or the embedding when they are tied (sharing its blocks, one
    /// copy in memory, when it is quantized).
    fn head(&self, embedding: &Embedding) -> Result<Head, ModelError> {
        let (c, device) = (self.config, &self.compute.device);
        let head_weight = if self.source.contains(Weight::Output) { Weight::Output } else { Weight::TokenEmbedding };
        let name = self.name(head_weight);
        let head_q: Option<Arc<QuantMatrix>> = match (head_weight, embedding) {
            (Weight::TokenEmbedding, Embedding::Quantized(q)) => Some(q.clone()),
            (Weight::Output, _) => self.quantized(Weight::Output)?.map(Arc::new),
            _ => None,
        };
        let head_rows = |q: &QuantMatrix| [q.rows().max(c.vocab_size), c.hidden_size];
        Ok(match head_q {
            Some(q) if self.compute.is_cpu() => {
                Head::Quantized(Linear::quantized(&name, q.clone(), None, head_rows(&q), device)?)
            }
            Some(q) => Head::Quantized(Linear::device_blocks(&name, &q, None, head_rows(&q), device)?),
            None => {
                let output = self.read_opt(Weight::Output)?;
                let (shape, data): (Vec<usize>, &[f32]) = match (&output, embedding) {
                    (Some(o), _) => (o.shape.clone(), &o.data),
                    (None, Embedding::Dense { table, .. }) => (embedding.dims().to_vec(), table),
                    (None, Embedding::Quantized(_)) => return Err(WeightError::Missing(name).into()),
                };
                if shape.len() != 2 || shape[1] != c.hidden_size || shape[0] < c.vocab_size {
                    return Err(WeightError::Shape {
                        name,
                        expected: format!("[{}, {}]", c.vocab_size, c.hidden_size),
                        found: shape,
                    }
                    .into());
                }
                Head::Chunks(head_chunks(&data[..c.vocab_size * c.hidden_size], c.vocab_size, c.hidden_size, device))
            }
        })
    }

    fn rope(&self) -> Result<Rope, ModelError> {
        let c = self.config;
        let freq_factors = self.read_opt(Weight::RopeFreqs)?;
        Ok(Rope::new(
            c.head_dim,
            c.rope_theta,
            c.rope_scaling.as_ref(),
            freq_factors.as_ref().map(|t| t.data.as_slice()),
        ))
    }
}

impl Llama {
    /// Loads every weight from `source`, checking each shape against `config`.
    /// `progress` counts the parts read: the embedding, each block, the head.
    pub fn load(
        source: &dyn WeightSource,
        config: &LlamaConfig,
        compute: &ComputeDevice,
        progress: &LoadProgress,
    ) -> Result<Self, ModelError> {
        let c = config;
        let parts = Parts { source, config, compute };
        progress.begin(c.num_layers + 2);
        let embedding = parts.embedding()?;
        progress.advance();
        let blocks =
            (0..c.num_layers).map(|i| parts.block(i).inspect(|_| progress.advance())).collect::<Result<Vec<_>, _>>()?;
        let norm = parts.norm(Weight::OutputNorm, c.hidden_size)?;
        let head = parts.head(&embedding)?;
        progress.advance();
        let rope = parts.rope()?;
        // The GPU's fused decode step takes the llama shapes its kernels were written for.
        let fused_decode = !compute.is_cpu()
            && c.head_dim.is_multiple_of(2)
            && c.head_dim <= MAX_HEAD_DIM
            && c.num_kv_heads > 0
            && c.num_heads.is_multiple_of(c.num_kv_heads)
            && blocks.iter().all(|b| b.fused_parts().is_some());
        Ok(Self {
            config: c.clone(),
            embedding,
            blocks,
            norm,
            head,
            rope,
            device: compute.device.clone(),
            bucket_prompts: !compute.is_cpu(),
            fused_decode,
        })
    }
}
