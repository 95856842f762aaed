//! The blocks the UNet and the VAE share, as diffusers names and runs them: `ResnetBlock2D`
//! (two normalised 3×3 convolutions, the timestep's embedding added between them, a 1×1
//! shortcut where the width changes), `Transformer2DModel` (self-attention, cross-attention to
//! the text and a GEGLU feed-forward over the image's positions) and the VAE's single-head
//! spatial self-attention.

use burn::tensor::activation::{gelu, silu};
use burn::tensor::{Device, Tensor};

use super::DiffusionError;
use super::nn::{Conv2d, GroupNorm, attention, layer_norm, linear, linear3, to_image, to_sequence};
use super::weights::Component;
use crate::model::layers::{LayerNorm, Linear};

/// `ResnetBlock2D`.
pub struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    /// The block `name` (`down_blocks.0.resnets.0`), its widths read from its convolutions.
    pub fn load(w: &Component, name: &str, groups: usize, eps: f64, device: &Device) -> Result<Self, DiffusionError> {
        let conv1 = Conv2d::same(w, &format!("{name}.conv1"), device)?;
        let conv2 = Conv2d::same(w, &format!("{name}.conv2"), device)?;
        let (inp, out) = (conv1.in_channels, conv1.out_channels);
        if conv2.in_channels != out {
            return Err(DiffusionError::Shape(format!(
                "{name}: conv2 takes {} channels, conv1 gives {out}",
                conv2.in_channels
            )));
        }
        let time = format!("{name}.time_emb_proj");
        let time_proj = if w.contains(&format!("{time}.weight")) { Some(linear(w, &time, device)?) } else { None };
        let shortcut_name = format!("{name}.conv_shortcut");
        let shortcut = if w.contains(&format!("{shortcut_name}.weight")) {
            Some(Conv2d::same(w, &shortcut_name, device)?)
        } else if inp != out {
            return Err(DiffusionError::Missing(w.name_of(&format!("{shortcut_name}.weight"))));
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::load(w, &format!("{name}.norm1"), inp, groups, eps, device)?,
            conv1,
            time_proj,
            norm2: GroupNorm::load(w, &format!("{name}.norm2"), out, groups, eps, device)?,
            conv2,
            shortcut,
        })
    }

    pub fn in_channels(&self) -> usize {
        self.conv1.in_channels
    }

    pub fn out_channels(&self) -> usize {
        self.conv2.out_channels
    }

    /// `x` `[n, in, h, w]` with the timestep's embedding `temb` `[1, d]` (the UNet's; `None` in the VAE).
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Result<Tensor<4>, DiffusionError> {
        let mut h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_proj, temb) {
            let t = proj.forward(silu(temb.clone()))?;
            let [rows, c] = t.dims();
            h = h + t.reshape([rows, c, 1, 1]);
        }
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        Ok(skip + h)
    }
}

/// diffusers' `Attention` as the UNet uses it: `to_q`, `to_k`, `to_v` (unbiased), `to_out.0`.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(w: &Component, name: &str, heads: usize, device: &Device) -> Result<Self, DiffusionError> {
        Ok(Self {
            q: linear(w, &format!("{name}.to_q"), device)?,
            k: linear(w, &format!("{name}.to_k"), device)?,
            v: linear(w, &format!("{name}.to_v"), device)?,
            out: linear(w, &format!("{name}.to_out.0"), device)?,
            heads,
        })
    }

    fn forward(&self, x: Tensor<3>, context: Option<&Tensor<3>>) -> Result<Tensor<3>, DiffusionError> {
        let q = linear3(&self.q, x.clone())?;
        let source = context.cloned().unwrap_or(x);
        let k = linear3(&self.k, source.clone())?;
        let v = linear3(&self.v, source)?;
        linear3(&self.out, attention(q, k, v, self.heads, false))
    }
}

/// `BasicTransformerBlock`.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    /// GEGLU's projection to twice the inner width.
    ff_in: Linear,
    ff_out: Linear,
}

/// `Transformer2DModel`: the image's positions through transformer blocks, between a group norm
/// and projections in and out (1×1 convolutions, or linear layers under `use_linear_projection`).
pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: ProjIn,
    blocks: Vec<TransformerBlock>,
    proj_out: ProjIn,
}

enum ProjIn {
    Conv(Box<Conv2d>),
    Linear(Box<Linear>),
}

impl SpatialTransformer {
    /// `name` (`down_blocks.0.attentions.0`) over `channels` with `heads` heads.
    pub fn load(
        w: &Component,
        name: &str,
        channels: usize,
        heads: usize,
        groups: usize,
        device: &Device,
    ) -> Result<Self, DiffusionError> {
        if heads == 0 || !channels.is_multiple_of(heads) {
            return Err(DiffusionError::Config(format!("{channels} channels cannot be split into {heads} heads")));
        }
        let projection = |part: &str| -> Result<ProjIn, DiffusionError> {
            let full = format!("{name}.{part}");
            let shape = w.read(&format!("{full}.weight"))?.shape;
            Ok(if shape.len() == 4 {
                ProjIn::Conv(Box::new(Conv2d::same(w, &full, device)?))
            } else {
                ProjIn::Linear(Box::new(linear(w, &full, device)?))
            })
        };
        let mut blocks = Vec::new();
        while w.contains(&format!("{name}.transformer_blocks.{}.norm1.weight", blocks.len())) {
            let p = format!("{name}.transformer_blocks.{}", blocks.len());
            blocks.push(TransformerBlock {
                norm1: layer_norm(w, &format!("{p}.norm1"), channels, 1e-5, device)?,
                attn1: Attention::load(w, &format!("{p}.attn1"), heads, device)?,
                norm2: layer_norm(w, &format!("{p}.norm2"), channels, 1e-5, device)?,
                attn2: Attention::load(w, &format!("{p}.attn2"), heads, device)?,
                norm3: layer_norm(w, &format!("{p}.norm3"), channels, 1e-5, device)?,
                ff_in: linear(w, &format!("{p}.ff.net.0.proj"), device)?,
                ff_out: linear(w, &format!("{p}.ff.net.2"), device)?,
            });
        }
        if blocks.is_empty() {
            return Err(DiffusionError::Missing(w.name_of(&format!("{name}.transformer_blocks.0"))));
        }
        Ok(Self {
            // diffusers builds this norm with eps 1e-6 whatever the UNet's `norm_eps`.
            norm: GroupNorm::load(w, &format!("{name}.norm"), channels, groups, 1e-6, device)?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    /// `x` `[n, c, h, w]` attending to `context` `[n, len, cross]`.
    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>) -> Result<Tensor<4>, DiffusionError> {
        let [_, _, h, w] = x.dims();
        let normed = self.norm.forward(x.clone());
        let mut seq = match &self.proj_in {
            ProjIn::Conv(conv) => to_sequence(conv.forward(normed)),
            ProjIn::Linear(l) => linear3(l, to_sequence(normed))?,
        };
        for b in &self.blocks {
            seq = seq.clone() + b.attn1.forward(b.norm1.forward(seq), None)?;
            seq = seq.clone() + b.attn2.forward(b.norm2.forward(seq), Some(context))?;
            let projected = linear3(&b.ff_in, b.norm3.forward(seq.clone()))?;
            let [n, len, two] = projected.dims();
            let hidden = projected.clone().slice([0..n, 0..len, 0..two / 2]);
            let gate = projected.slice([0..n, 0..len, two / 2..two]);
            seq = seq + linear3(&b.ff_out, hidden * gelu(gate))?;
        }
        let out = match &self.proj_out {
            ProjIn::Conv(conv) => conv.forward(to_image(seq, h, w)),
            ProjIn::Linear(l) => to_image(linear3(l, seq)?, h, w),
        };
        Ok(out + x)
    }
}

/// The VAE's mid-block attention: one head over the image's positions, a group norm before
/// and the input added after. Read under diffusers' names (`to_q`, …, `to_out.0`) or the older
/// ones (`query`, `key`, `value`, `proj_attn`).
pub struct SpatialSelfAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl SpatialSelfAttention {
    pub fn load(
        w: &Component,
        name: &str,
        channels: usize,
        groups: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, DiffusionError> {
        let part = |new: &str, old: &str| {
            let modern = format!("{name}.{new}");
            if w.contains(&format!("{modern}.weight")) {
                linear(w, &modern, device)
            } else {
                linear(w, &format!("{name}.{old}"), device)
            }
        };
        Ok(Self {
            norm: GroupNorm::load(w, &format!("{name}.group_norm"), channels, groups, eps, device)?,
            q: part("to_q", "query")?,
            k: part("to_k", "key")?,
            v: part("to_v", "value")?,
            out: part("to_out.0", "proj_attn")?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>, DiffusionError> {
        let [_, _, h, w] = x.dims();
        let seq = to_sequence(self.norm.forward(x.clone()));
        let q = linear3(&self.q, seq.clone())?;
        let k = linear3(&self.k, seq.clone())?;
        let v = linear3(&self.v, seq)?;
        let out = linear3(&self.out, attention(q, k, v, 1, false))?;
        Ok(to_image(out, h, w) + x)
    }
}
