//! `UNet2DConditionModel` as Stable Diffusion 1.x/2.x use it: the noisy latents down through
//! resnet (and, in cross-attention blocks, transformer) levels, a middle, and back up with
//! each level's states joined in, conditioned on the timestep's sinusoidal embedding and, by
//! cross-attention, on the text. Which blocks a level has is read from the weights; widths from
//! their shapes; heads, groups and epsilons from `unet/config.json`.

use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};
use serde::Deserialize;
use serde_json::Value;

use super::DiffusionError;
use super::blocks::{Resnet, SpatialTransformer};
use super::nn::{Conv2d, GroupNorm, linear, resize_nearest};
use super::weights::Component;
use crate::model::layers::{Linear, upload};

/// The fields of `unet/config.json` read here.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_in")]
    pub in_channels: usize,
    #[serde(default)]
    pub attention_head_dim: Option<Value>,
    #[serde(default)]
    pub num_attention_heads: Option<Value>,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub transformer_layers_per_block: Option<Value>,
}

fn default_in() -> usize {
    4
}
fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

impl UNetConfig {
    /// Heads per level, as diffusers reads them: `num_attention_heads`, else (a misnomer it
    /// keeps for old checkpoints) `attention_head_dim`; one number for every level or a list.
    fn heads(&self) -> Result<Vec<usize>, DiffusionError> {
        let levels = self.block_out_channels.len();
        let value = self.num_attention_heads.as_ref().filter(|v| !v.is_null()).or(self.attention_head_dim.as_ref());
        let heads = match value {
            None => vec![8; levels],
            Some(Value::Number(n)) => vec![n.as_u64().unwrap_or(0) as usize; levels],
            Some(Value::Array(list)) => list.iter().map(|v| v.as_u64().unwrap_or(0) as usize).collect(),
            Some(other) => return Err(DiffusionError::Config(format!("attention heads `{other}` are not a number"))),
        };
        if heads.len() != levels || heads.contains(&0) {
            return Err(DiffusionError::Config(format!("{} head counts for {levels} levels", heads.len())));
        }
        Ok(heads)
    }
}

/// One level: its resnets, their transformers (cross-attention levels), and the resampler.
struct Level {
    resnets: Vec<Resnet>,
    attentions: Vec<SpatialTransformer>,
    resample: Option<Conv2d>,
}

impl Level {
    fn load(
        w: &Component,
        name: &str,
        heads: usize,
        config: &UNetConfig,
        stride: usize,
        device: &Device,
    ) -> Result<Self, DiffusionError> {
        let (groups, eps) = (config.norm_num_groups, config.norm_eps);
        let mut resnets = Vec::new();
        while w.contains(&format!("{name}.resnets.{}.conv1.weight", resnets.len())) {
            resnets.push(Resnet::load(w, &format!("{name}.resnets.{}", resnets.len()), groups, eps, device)?);
            if resnets.len() > 16 {
                return Err(DiffusionError::Config(format!("{name} has implausibly many resnets")));
            }
        }
        if resnets.is_empty() {
            return Err(DiffusionError::Missing(w.name_of(&format!("{name}.resnets.0"))));
        }
        let mut attentions = Vec::new();
        if w.contains(&format!("{name}.attentions.0.norm.weight")) {
            for (i, resnet) in resnets.iter().enumerate() {
                let name = format!("{name}.attentions.{i}");
                attentions.push(SpatialTransformer::load(w, &name, resnet.out_channels(), heads, groups, device)?);
            }
        }
        let sampler = if stride == 2 { "downsamplers" } else { "upsamplers" };
        let conv = format!("{name}.{sampler}.0.conv");
        let resample =
            if w.contains(&format!("{conv}.weight")) { Some(Conv2d::load(w, &conv, stride, 1, device)?) } else { None };
        Ok(Self { resnets, attentions, resample })
    }
}

/// The loaded UNet.
pub struct UNet {
    conv_in: Conv2d,
    time_1: Linear,
    time_2: Linear,
    down: Vec<Level>,
    mid_resnets: [Resnet; 2],
    mid_attention: Option<SpatialTransformer>,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    config: UNetConfig,
}

impl UNet {
    pub fn load(w: &Component, config: UNetConfig, device: &Device) -> Result<Self, DiffusionError> {
        if config.time_cond_proj_dim.is_some()
            || config.addition_embed_type.is_some()
            || config.class_embed_type.is_some()
        {
            return Err(DiffusionError::Config(
                "this UNet takes extra conditioning (an LCM-distilled guidance embedding, SDXL's added embeddings \
                 or class labels), which is not supported: Stable Diffusion 1.x/2.x UNets are"
                    .into(),
            ));
        }
        if config.transformer_layers_per_block.as_ref().is_some_and(|v| v.as_u64() != Some(1) && !v.is_null()) {
            return Err(DiffusionError::Config("more than one transformer layer per block is not supported".into()));
        }
        let levels = config.block_out_channels.len();
        if levels == 0 || levels > 8 || !config.block_out_channels[0].is_multiple_of(2) {
            return Err(DiffusionError::Config(format!("block_out_channels {:?}", config.block_out_channels)));
        }
        let heads = config.heads()?;
        let down = (0..levels)
            .map(|i| Level::load(w, &format!("down_blocks.{i}"), heads[i], &config, 2, device))
            .collect::<Result<Vec<_>, _>>()?;
        let up = (0..levels)
            .map(|i| Level::load(w, &format!("up_blocks.{i}"), heads[levels - 1 - i], &config, 1, device))
            .collect::<Result<Vec<_>, _>>()?;
        let (groups, eps) = (config.norm_num_groups, config.norm_eps);
        let mid_resnets = [
            Resnet::load(w, "mid_block.resnets.0", groups, eps, device)?,
            Resnet::load(w, "mid_block.resnets.1", groups, eps, device)?,
        ];
        let mid_channels = mid_resnets[0].out_channels();
        let mid_attention = if w.contains("mid_block.attentions.0.norm.weight") {
            Some(SpatialTransformer::load(
                w,
                "mid_block.attentions.0",
                mid_channels,
                heads[levels - 1],
                groups,
                device,
            )?)
        } else {
            None
        };
        let conv_out = Conv2d::same(w, "conv_out", device)?;
        let norm_out = GroupNorm::load(w, "conv_norm_out", conv_out.in_channels, groups, eps, device)?;
        Ok(Self {
            conv_in: Conv2d::same(w, "conv_in", device)?,
            time_1: linear(w, "time_embedding.linear_1", device)?,
            time_2: linear(w, "time_embedding.linear_2", device)?,
            down,
            mid_resnets,
            mid_attention,
            up,
            norm_out,
            conv_out,
            config,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// How many times the latents are halved (their sides must divide by 2 to this power).
    pub fn downsamplings(&self) -> usize {
        self.down.iter().filter(|l| l.resample.is_some()).count()
    }

    /// The sinusoidal embedding of `timestep` (`get_timestep_embedding`, computed in f32 as torch does).
    fn timestep_embedding(&self, timestep: f64) -> Vec<f32> {
        let dim = self.config.block_out_channels[0];
        let half = dim / 2;
        let t = timestep as f32;
        let log_period = -(10000f64.ln() as f32);
        let args: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = log_period * i as f32 / (half as f32 - self.config.freq_shift as f32);
                t * exponent.exp()
            })
            .collect();
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.iter().map(|a| (a.sin(), a.cos())).unzip();
        if self.config.flip_sin_to_cos { [cos, sin].concat() } else { [sin, cos].concat() }
    }

    /// The predicted noise for `sample` `[n, c, h, w]` at `timestep`, attending to `context`
    /// `[n, len, cross]`.
    pub fn forward(&self, sample: Tensor<4>, timestep: f64, context: &Tensor<3>) -> Result<Tensor<4>, DiffusionError> {
        let device = sample.device();
        let embedding = self.timestep_embedding(timestep);
        let len = embedding.len();
        let temb = self.time_2.forward(silu(self.time_1.forward(upload(embedding, [1, len], &device))?))?;
        let temb = Some(&temb);

        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for level in &self.down {
            for (i, resnet) in level.resnets.iter().enumerate() {
                x = resnet.forward(x, temb)?;
                if let Some(attn) = level.attentions.get(i) {
                    x = attn.forward(x, context)?;
                }
                skips.push(x.clone());
            }
            if let Some(conv) = &level.resample {
                x = conv.forward(x);
                skips.push(x.clone());
            }
        }
        x = self.mid_resnets[0].forward(x, temb)?;
        if let Some(attn) = &self.mid_attention {
            x = attn.forward(x, context)?;
        }
        x = self.mid_resnets[1].forward(x, temb)?;
        for level in &self.up {
            for (i, resnet) in level.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| {
                    DiffusionError::Shape("the up blocks take more skips than the down blocks gave".into())
                })?;
                if x.dims()[2..] != skip.dims()[2..] {
                    return Err(DiffusionError::Shape(format!(
                        "latents of {:?} cannot be joined with {:?}",
                        x.dims(),
                        skip.dims()
                    )));
                }
                x = Tensor::cat(vec![x, skip], 1);
                if x.dims()[1] != resnet.in_channels() {
                    return Err(DiffusionError::Shape(format!(
                        "up block resnet {i} takes {} channels, not {}",
                        resnet.in_channels(),
                        x.dims()[1]
                    )));
                }
                x = resnet.forward(x, temb)?;
                if let Some(attn) = level.attentions.get(i) {
                    x = attn.forward(x, context)?;
                }
            }
            if let Some(conv) = &level.resample {
                // To the next skip's size, as diffusers does for sides that are not a power-of-two
                // multiple (a 2× nearest upsampling when they are).
                let [_, _, h, w] = x.dims();
                let (th, tw) = skips.last().map_or((2 * h, 2 * w), |s| (s.dims()[2], s.dims()[3]));
                x = conv.forward(resize_nearest(x, th, tw));
            }
        }
        Ok(self.conv_out.forward(self.norm_out.forward_silu(x)))
    }
}
