//! The fused decode step on a GPU: what it reads of a block, and the step itself — per layer
//! four products over every decode token of the step and one attention per sequence, each a
//! kernel of `hearth_gpu_kernels::decode`.

use burn::tensor::Tensor;
use hearth_gpu_kernels::DeviceBlocks;
use hearth_gpu_kernels::decode::{AttentionDims, NormWeight, decode_attention};

use super::{Block, Head, Llama, Qkv};
use crate::model::layers::upload;
use crate::model::{KvCache, ModelError};

/// What the fused decode step reads of a block: the norms' weights and the four block-quantized
/// GPU matrices (q/k/v stacked, with their bias; gate/up stacked).
pub(super) struct FusedBlock<'a> {
    attn_norm: NormWeight<'a>,
    qkv: &'a DeviceBlocks,
    qkv_bias: Option<&'a Tensor<2>>,
    o: &'a DeviceBlocks,
    ffn_norm: NormWeight<'a>,
    gate_up: &'a DeviceBlocks,
    down: &'a DeviceBlocks,
}

impl Block {
    /// The block's parts for the fused decode step, when it has that shape.
    pub(super) fn fused_parts(&self) -> Option<FusedBlock<'_>> {
        if self.attn.q_norm.is_some() || self.attn.k_norm.is_some() {
            return None;
        }
        let Qkv::Stacked(qkv) = &self.attn.qkv else { return None };
        let (qkv, qkv_bias) = qkv.device_parts()?;
        let (o, None) = self.attn.o.device_parts()? else { return None };
        let (gate_up, down) = self.mlp.device_parts()?;
        let (down, None) = down.device_parts()? else { return None };
        Some(FusedBlock {
            attn_norm: NormWeight { weight: self.attn_norm.weight(), eps: self.attn_norm.eps() },
            qkv,
            qkv_bias,
            o,
            ffn_norm: NormWeight { weight: self.ffn_norm.weight(), eps: self.ffn_norm.eps() },
            gate_up,
            down,
        })
    }
}

impl Llama {
    /// One token of each of `steps` (a token and its sequence's cache) through the fused GPU
    /// kernels: per layer four products over all the tokens at once (q/k/v with its norm; the
    /// output projection with its residual; gate/up with its norm and SiLU; down with its
    /// residual) and one attention per sequence (rope, the cache write and attention over its
    /// cache), then one product for the norm and head. Each token's numbers are the same as
    /// alone. Returns the logits `[tokens, vocab]`.
    pub(super) fn decode_fused(&self, steps: &mut [(u32, &mut KvCache)]) -> Result<Tensor<2>, ModelError> {
        let c = &self.config;
        let n = steps.len();
        let mut starts = Vec::with_capacity(n);
        for (_, cache) in steps.iter_mut() {
            let start = cache.len();
            cache.reserve(start + 1)?;
            starts.push(start);
        }
        let (cos, sin) = self.rope.host_tables(&starts);
        let cos: Tensor<2> = upload(cos, [n, c.head_dim], &self.device);
        let sin: Tensor<2> = upload(sin, [n, c.head_dim], &self.device);
        let dims = AttentionDims { heads: c.num_heads, kv_heads: c.num_kv_heads, head_dim: c.head_dim };
        let tokens: Vec<u32> = steps.iter().map(|(t, _)| *t).collect();
        let mut x = self.embedding.rows(&tokens, &self.device);
        for (layer, block) in self.blocks.iter().enumerate() {
            let f = block
                .fused_parts()
                .ok_or_else(|| ModelError::Execution(format!("layer {layer} has no fused decode form")))?;
            let bias = f.qkv_bias.map(|b| if n == 1 { b.clone() } else { b.clone().repeat_dim(0, n) });
            let qkv = f.qkv.norm_matmul(x.clone(), Some(f.attn_norm), bias);
            let mut attended = Tensor::<2>::empty([n, c.q_dim()], &self.device);
            for (row, ((_, cache), &start)) in steps.iter_mut().zip(&starts).enumerate() {
                attended = cache.update_device_layer(layer, |keys, values| {
                    decode_attention(qkv.clone(), keys, values, cos.clone(), sin.clone(), attended, row, start, dims)
                })?;
            }
            let h = f.o.norm_matmul(attended, None, Some(x));
            let gated = f.gate_up.norm_gate_up(h.clone(), f.ffn_norm);
            x = f.down.norm_matmul(gated, None, Some(h));
        }
        for (token, cache) in steps.iter_mut() {
            cache.commit(&[*token], 1);
        }
        // The final norm fused into a block-quantized head; other heads as the unfused path.
        if let Head::Quantized(linear) = &self.head
            && let Some((w, None)) = linear.device_parts()
        {
            let norm = NormWeight { weight: self.norm.weight(), eps: self.norm.eps() };
            return Ok(self.vocab_columns(w.norm_matmul(x, Some(norm), None)));
        }
        self.device_head(self.norm.forward(x)?)
    }
}
