//! The decoder half of `AutoencoderKL`: latents (divided by the VAE's `scaling_factor`)
//! through `post_quant_conv`, a middle of two resnets around a single-head self-attention, up
//! levels of resnets with 2× nearest upsampling, and a normalised 3×3 convolution to RGB.

use burn::tensor::{Device, Tensor};
use serde::Deserialize;

use super::DiffusionError;
use super::blocks::{Resnet, SpatialSelfAttention};
use super::nn::{Conv2d, GroupNorm, upsample_nearest2};
use super::weights::Component;

/// diffusers builds every VAE norm with this epsilon.
const EPS: f64 = 1e-6;

/// The fields of `vae/config.json` read here.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "default_latents")]
    pub latent_channels: usize,
}

fn default_groups() -> usize {
    32
}
fn default_scaling() -> f64 {
    0.18215
}
fn default_latents() -> usize {
    4
}

struct UpLevel {
    resnets: Vec<Resnet>,
    upsample: Option<Conv2d>,
}

/// The loaded decoder.
pub struct VaeDecoder {
    post_quant: Option<Conv2d>,
    conv_in: Conv2d,
    mid: [Resnet; 2],
    mid_attention: Option<SpatialSelfAttention>,
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    config: VaeConfig,
}

impl VaeDecoder {
    pub fn load(w: &Component, config: VaeConfig, device: &Device) -> Result<Self, DiffusionError> {
        let groups = config.norm_num_groups;
        let post_quant =
            if w.contains("post_quant_conv.weight") { Some(Conv2d::same(w, "post_quant_conv", device)?) } else { None };
        let conv_in = Conv2d::same(w, "decoder.conv_in", device)?;
        if conv_in.in_channels != config.latent_channels {
            return Err(DiffusionError::Shape(format!(
                "the decoder takes {} latent channels, the config says {}",
                conv_in.in_channels, config.latent_channels
            )));
        }
        let mid = [
            Resnet::load(w, "decoder.mid_block.resnets.0", groups, EPS, device)?,
            Resnet::load(w, "decoder.mid_block.resnets.1", groups, EPS, device)?,
        ];
        let mid_attention = if w.contains("decoder.mid_block.attentions.0.group_norm.weight") {
            let channels = mid[0].out_channels();
            Some(SpatialSelfAttention::load(w, "decoder.mid_block.attentions.0", channels, groups, EPS, device)?)
        } else {
            None
        };
        let mut up = Vec::new();
        while w.contains(&format!("decoder.up_blocks.{}.resnets.0.conv1.weight", up.len())) {
            let name = format!("decoder.up_blocks.{}", up.len());
            let mut resnets = Vec::new();
            while w.contains(&format!("{name}.resnets.{}.conv1.weight", resnets.len())) && resnets.len() < 16 {
                resnets.push(Resnet::load(w, &format!("{name}.resnets.{}", resnets.len()), groups, EPS, device)?);
            }
            let conv = format!("{name}.upsamplers.0.conv");
            let upsample =
                if w.contains(&format!("{conv}.weight")) { Some(Conv2d::same(w, &conv, device)?) } else { None };
            up.push(UpLevel { resnets, upsample });
            if up.len() > 8 {
                return Err(DiffusionError::Config("the VAE has implausibly many levels".into()));
            }
        }
        let conv_out = Conv2d::same(w, "decoder.conv_out", device)?;
        let norm_out = GroupNorm::load(w, "decoder.conv_norm_out", conv_out.in_channels, groups, EPS, device)?;
        Ok(Self { post_quant, conv_in, mid, mid_attention, up, norm_out, conv_out, config })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// How many times the decoder doubles the latents' sides.
    pub fn upsamplings(&self) -> usize {
        self.up.iter().filter(|l| l.upsample.is_some()).count()
    }

    /// The image `[n, 3, H, W]` (in −1..1) of `latents` as the sampler leaves them (scaled by
    /// `1/scaling_factor` here).
    pub fn decode(&self, latents: Tensor<4>) -> Result<Tensor<4>, DiffusionError> {
        let mut z = latents.mul_scalar(1.0 / self.config.scaling_factor);
        if let Some(shift) = self.config.shift_factor {
            z = z.add_scalar(shift);
        }
        if let Some(conv) = &self.post_quant {
            z = conv.forward(z);
        }
        self.decode_scaled(z)
    }

    /// The decoder proper, on latents already scaled (and through `post_quant_conv`).
    fn decode_scaled(&self, z: Tensor<4>) -> Result<Tensor<4>, DiffusionError> {
        let mut x = self.conv_in.forward(z);
        x = self.mid[0].forward(x, None)?;
        if let Some(attn) = &self.mid_attention {
            x = attn.forward(x)?;
        }
        x = self.mid[1].forward(x, None)?;
        for level in &self.up {
            for resnet in &level.resnets {
                x = resnet.forward(x, None)?;
            }
            if let Some(conv) = &level.upsample {
                x = conv.forward(upsample_nearest2(x));
            }
        }
        Ok(self.conv_out.forward(self.norm_out.forward_silu(x)))
    }
}
