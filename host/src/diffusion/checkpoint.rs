//! Single-file Stable Diffusion 1.x/2.x checkpoints: one `.safetensors` holding the UNet
//! (`model.diffusion_model.*`), the VAE (`first_stage_model.*`) and the text encoder under the
//! original CompVis/Stability names — OpenAI CLIP as transformers names it
//! (`cond_stage_model.transformer.*`, SD 1.x) or OpenCLIP's tower (`cond_stage_model.model.*`,
//! SD 2.x, q/k/v fused in `in_proj`). Each diffusers name is mapped to the stored one, and what
//! the file does not say is inferred as diffusers' `from_single_file` and A1111 infer it: widths
//! and block counts from shapes, the rest from the ldm `.yaml` beside the file where there is one
//! (`parameterization`, `num_heads`/`num_head_channels`, `scale_factor`, the training schedule),
//! else SD's own values. Pickled `.ckpt` files are refused: loading one runs code from it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::DiffusionError;
use super::clip_text::ClipTextConfig;
use super::schedule::SchedulerConfig;
use super::unet::UNetConfig;
use super::vae::VaeConfig;
use super::weights::{Component, Stored};
use crate::model::weights::SafetensorsWeights;

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const CLIP: &str = "cond_stage_model.transformer.";
const OPEN_CLIP: &str = "cond_stage_model.model.";

/// Which text encoder the checkpoint conditions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFamily {
    /// OpenAI's CLIP ViT-L/14 text model (SD 1.x): quick GELU, the last layer's states.
    Clip,
    /// OpenCLIP's ViT-H/14 text tower (SD 2.x): exact GELU, the penultimate block's states.
    OpenClip,
}

/// What the ldm config beside the checkpoint (`model.yaml` for `model.safetensors`) says.
#[derive(Debug, Clone, Default)]
pub struct LdmConfig {
    pub parameterization: Option<String>,
    pub scale_factor: Option<f64>,
    pub linear_start: Option<f64>,
    pub linear_end: Option<f64>,
    pub timesteps: Option<usize>,
    pub num_heads: Option<i64>,
    pub num_head_channels: Option<i64>,
    /// The UNet's native latent side.
    pub image_size: Option<usize>,
}

impl LdmConfig {
    /// Reads the fields above from ldm's layout (`model.params`, `model.params.unet_config.params`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let root: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let params = &root["model"]["params"];
        let unet = &params["unet_config"]["params"];
        let f = |v: &serde_yaml::Value| v.as_f64();
        let u = |v: &serde_yaml::Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
        Ok(Self {
            parameterization: params["parameterization"].as_str().map(str::to_owned),
            scale_factor: f(&params["scale_factor"]),
            linear_start: f(&params["linear_start"]),
            linear_end: f(&params["linear_end"]),
            timesteps: u(&params["timesteps"]),
            num_heads: unet["num_heads"].as_i64(),
            num_head_channels: unet["num_head_channels"].as_i64(),
            image_size: u(&unet["image_size"]),
        })
    }
}

/// An opened checkpoint.
pub struct SingleFile {
    weights: Arc<SafetensorsWeights>,
    pub family: TextFamily,
    pub ldm: LdmConfig,
    /// Where the ldm config came from, if anywhere (for the log).
    pub ldm_path: Option<PathBuf>,
    /// `(levels, resnets per down level)` of the UNet.
    unet_shape: (usize, usize),
    /// Whether the UNet predicts v ([`v_prediction`]), decided once at open.
    v_prediction: bool,
}

impl SingleFile {
    pub fn open(path: &Path) -> Result<Self, DiffusionError> {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
        if matches!(extension.as_str(), "ckpt" | "pt" | "pth" | "bin") {
            return Err(DiffusionError::Config(format!(
                "{} is a pickled checkpoint, which is not loaded (unpickling runs code from the file): convert it to \
                 .safetensors",
                path.display()
            )));
        }
        let weights = Arc::new(SafetensorsWeights::open_file(path)?);
        if !weights.contains_named(&format!("{UNET}input_blocks.0.0.weight")) {
            let sdxl = weights.names().any(|n| n.starts_with("conditioner.embedders."));
            return Err(DiffusionError::Config(format!(
                "{} is not a Stable Diffusion 1.x/2.x checkpoint{}",
                path.display(),
                if sdxl {
                    " (it is SDXL's layout, which is not supported)"
                } else {
                    " (it has no model.diffusion_model.*)"
                }
            )));
        }
        let family = if weights.contains_named(&format!("{OPEN_CLIP}token_embedding.weight")) {
            TextFamily::OpenClip
        } else if weights.names().any(|n| n.starts_with(CLIP) && n.ends_with("token_embedding.weight")) {
            TextFamily::Clip
        } else {
            return Err(DiffusionError::Config(format!(
                "{} holds no text encoder the pipeline knows (cond_stage_model.transformer.* or cond_stage_model.model.*)",
                path.display()
            )));
        };
        let yaml = path.with_extension("yaml");
        let (ldm, ldm_path) = if yaml.is_file() {
            let text =
                std::fs::read_to_string(&yaml).map_err(|e| DiffusionError::Io(format!("{}: {e}", yaml.display())))?;
            let ldm =
                LdmConfig::parse(&text).map_err(|e| DiffusionError::Config(format!("{}: {e}", yaml.display())))?;
            (ldm, Some(yaml))
        } else {
            (LdmConfig::default(), None)
        };
        let unet_shape = unet_shape(&weights)?;
        let v_prediction = v_prediction(&weights, family, &ldm, unet_shape)?;
        Ok(Self { weights, family, ldm, ldm_path, unet_shape, v_prediction })
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, DiffusionError> {
        self.weights.shape_named(name).map_err(|e| match e {
            crate::model::weights::WeightError::Missing(n) => DiffusionError::Missing(n),
            other => DiffusionError::Weights(other),
        })
    }

    fn dim(&self, name: &str, axis: usize) -> Result<usize, DiffusionError> {
        self.shape(name)?.get(axis).copied().ok_or_else(|| DiffusionError::Shape(format!("{name} has no axis {axis}")))
    }

    /// The UNet's tensors under diffusers' names.
    pub fn unet_weights(&self) -> Component {
        let (_, per) = self.unet_shape;
        let table = self
            .weights
            .names()
            .filter_map(|stored| {
                let key = stored.strip_prefix(UNET)?;
                Some((unet_name(key, per)?, Stored::whole(stored)))
            })
            .collect();
        Component::renamed(Arc::clone(&self.weights), table, "unet")
    }

    /// The UNet's config, from its shapes and the ldm config.
    pub fn unet_config(&self) -> Result<UNetConfig, DiffusionError> {
        let (levels, per) = self.unet_shape;
        let widths = (0..levels)
            .map(|i| self.dim(&format!("{UNET}input_blocks.{}.0.out_layers.3.weight", (per + 1) * i + 1), 0))
            .collect::<Result<Vec<_>, _>>()?;
        let in_channels = self.dim(&format!("{UNET}input_blocks.0.0.weight"), 1)?;
        if self.weights.contains_named(&format!("{UNET}label_emb.0.0.weight")) {
            return Err(DiffusionError::Config(
                "this UNet takes class labels (an unCLIP or upscaler checkpoint), which is not supported".into(),
            ));
        }
        let heads: Vec<usize> = match (self.ldm.num_heads, self.ldm.num_head_channels) {
            (Some(n), _) if n > 0 => vec![n as usize; levels],
            (_, Some(c)) if c > 0 => widths.iter().map(|w| w / c as usize).collect(),
            // SD 1.x's configs: 8 heads; SD 2.x's: 64-wide heads.
            _ if self.family == TextFamily::Clip => vec![8; levels],
            _ => widths.iter().map(|w| w / 64).collect(),
        };
        if heads.iter().zip(&widths).any(|(&h, &w)| h == 0 || !w.is_multiple_of(h)) {
            return Err(DiffusionError::Config(format!(
                "the UNet's widths {widths:?} do not split into {heads:?} heads: put the checkpoint's ldm .yaml \
                 (num_heads or num_head_channels) beside it, or give its diffusers folder as image_config"
            )));
        }
        let sample_size = match self.family {
            TextFamily::Clip => 64,
            TextFamily::OpenClip => self.ldm.image_size.unwrap_or(if self.v_prediction { 96 } else { 64 }),
        };
        serde_json::from_value(json!({
            "block_out_channels": widths,
            "in_channels": in_channels,
            "num_attention_heads": heads,
            "norm_num_groups": 32,
            "norm_eps": 1e-5,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "sample_size": sample_size,
        }))
        .map_err(|e| DiffusionError::Config(format!("the inferred UNet config: {e}")))
    }

    /// The VAE decoder's tensors under diffusers' names.
    pub fn vae_weights(&self) -> Component {
        let levels = self
            .weights
            .names()
            .filter_map(|n| n.strip_prefix(VAE)?.strip_prefix("decoder.up.")?.split('.').next()?.parse::<usize>().ok())
            .collect::<BTreeSet<_>>()
            .len();
        let table = self
            .weights
            .names()
            .filter_map(|stored| {
                let key = stored.strip_prefix(VAE)?;
                Some((vae_name(key, levels)?, Stored::whole(stored)))
            })
            .collect();
        Component::renamed(Arc::clone(&self.weights), table, "vae")
    }

    pub fn vae_config(&self) -> Result<VaeConfig, DiffusionError> {
        let latents = self.dim(&format!("{VAE}decoder.conv_in.weight"), 1)?;
        serde_json::from_value(json!({
            "norm_num_groups": 32,
            "scaling_factor": self.ldm.scale_factor.unwrap_or(0.18215),
            "latent_channels": latents,
        }))
        .map_err(|e| DiffusionError::Config(format!("the inferred VAE config: {e}")))
    }

    /// The text encoder's tensors under transformers' `CLIPTextModel` names.
    pub fn text_weights(&self) -> Component {
        match self.family {
            TextFamily::Clip => Component::prefixed(Arc::clone(&self.weights), CLIP, "text_encoder")
                .with_optional_prefix("text_model.", "embeddings.token_embedding.weight"),
            TextFamily::OpenClip => {
                let table = self
                    .weights
                    .names()
                    .filter_map(|stored| open_clip_names(stored.strip_prefix(OPEN_CLIP)?, stored))
                    .flatten()
                    .collect();
                Component::renamed(Arc::clone(&self.weights), table, "text_encoder")
            }
        }
    }

    /// The text encoder's config: widths from shapes, 64-wide heads (both CLIP towers SD uses
    /// have them), and for OpenCLIP one block fewer than stored (SD 2.x uses the penultimate's
    /// states, then the final norm).
    pub fn text_config(&self) -> Result<ClipTextConfig, DiffusionError> {
        let w = self.text_weights();
        let token = w.shape("embeddings.token_embedding.weight")?;
        let positions = w.shape("embeddings.position_embedding.weight")?;
        let fc1 = w.shape("encoder.layers.0.mlp.fc1.weight")?;
        let (&[vocab, width], Some(&positions), Some(&intermediate)) =
            (token.as_slice(), positions.first(), fc1.first())
        else {
            return Err(DiffusionError::Shape(format!("a token embedding of {token:?}")));
        };
        let mut layers: usize = 0;
        while w.contains(&format!("encoder.layers.{layers}.layer_norm1.weight")) && layers <= 64 {
            layers += 1;
        }
        let (layers, act) = match self.family {
            TextFamily::Clip => (layers, "quick_gelu"),
            TextFamily::OpenClip => (layers.saturating_sub(1), "gelu"),
        };
        if layers == 0 || !width.is_multiple_of(64) {
            return Err(DiffusionError::Config(format!(
                "the text encoder ({layers} usable layers, {width} wide) cannot be read without its config: give its \
                 diffusers folder as image_config"
            )));
        }
        serde_json::from_value(json!({
            "hidden_size": width,
            "num_hidden_layers": layers,
            "num_attention_heads": width / 64,
            "intermediate_size": intermediate,
            "max_position_embeddings": positions,
            "vocab_size": vocab,
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
        }))
        .map_err(|e| DiffusionError::Config(format!("the inferred text config: {e}")))
    }

    /// The training schedule an ldm checkpoint implies, sampled as diffusers and A1111 sample
    /// these files: Euler, `leading` spacing with `steps_offset` 1.
    pub fn scheduler_config(&self) -> Result<SchedulerConfig, DiffusionError> {
        let prediction = if self.v_prediction { "v_prediction" } else { "epsilon" };
        serde_json::from_value(json!({
            "_class_name": "EulerDiscreteScheduler",
            "num_train_timesteps": self.ldm.timesteps.unwrap_or(1000),
            "beta_start": self.ldm.linear_start.unwrap_or(0.00085),
            "beta_end": self.ldm.linear_end.unwrap_or(0.012),
            "beta_schedule": "scaled_linear",
            "prediction_type": prediction,
            "steps_offset": 1,
            "timestep_spacing": "leading",
            "set_alpha_to_one": false,
        }))
        .map_err(|e| DiffusionError::Config(format!("the inferred scheduler config: {e}")))
    }
}

/// The UNet's levels and resnets per down level, from its input blocks: `1 + levels·per +
/// (levels − 1)` of them, a downsampler (`op`) closing every level but the last.
fn unet_shape(weights: &SafetensorsWeights) -> Result<(usize, usize), DiffusionError> {
    let mut blocks = BTreeSet::new();
    let mut downsamplers = 0;
    for name in weights.names() {
        let Some(rest) = name.strip_prefix(UNET).and_then(|r| r.strip_prefix("input_blocks.")) else { continue };
        if let Some(k) = rest.split('.').next().and_then(|k| k.parse::<usize>().ok()) {
            blocks.insert(k);
        }
        if rest.ends_with(".0.op.weight") {
            downsamplers += 1;
        }
    }
    let count = blocks.len();
    let levels = downsamplers + 1;
    let contiguous = blocks.last().is_some_and(|&last| last + 1 == count);
    if !contiguous || count <= levels || !(count - levels).is_multiple_of(levels) || levels > 8 {
        return Err(DiffusionError::Config(format!(
            "the UNet's {count} input blocks and {downsamplers} downsamplers are not a Stable Diffusion layout"
        )));
    }
    Ok((levels, (count - levels) / levels))
}

/// Whether the UNet predicts v: the ldm config's `parameterization`, else a `v_pred` marker
/// tensor (ComfyUI's convention), else for SD 2.x ComfyUI's test of the last up block's first
/// transformer norm (its bias spreads wider in the v-trained 768 models than in the 512 base).
fn v_prediction(
    weights: &SafetensorsWeights,
    family: TextFamily,
    ldm: &LdmConfig,
    (levels, per): (usize, usize),
) -> Result<bool, DiffusionError> {
    if let Some(p) = &ldm.parameterization {
        return Ok(p == "v");
    }
    if weights.contains_named("v_pred") {
        return Ok(true);
    }
    if family == TextFamily::Clip {
        return Ok(false);
    }
    let last = levels * (per + 1) - 1;
    let name = format!("{UNET}output_blocks.{last}.1.transformer_blocks.0.norm1.bias");
    if !weights.contains_named(&name) {
        return Ok(false);
    }
    let bias = weights.read_named(&name)?.data;
    let n = bias.len().max(1) as f64;
    let mean = bias.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = bias.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    Ok(var.sqrt() > 0.09)
}

/// ldm's resnet parts → diffusers' `ResnetBlock2D`'s.
fn resnet_part(rest: &str) -> Option<String> {
    const PARTS: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."),
        ("skip_connection.", "conv_shortcut."),
    ];
    PARTS.iter().find_map(|(ldm, hf)| rest.strip_prefix(ldm).map(|tail| format!("{hf}{tail}")))
}

/// Splits `key` as `head.{k}.{s}.rest`.
fn indexed<'a>(key: &'a str, head: &str) -> Option<(usize, usize, &'a str)> {
    let rest = key.strip_prefix(head)?.strip_prefix('.')?;
    let (k, rest) = rest.split_once('.')?;
    let (s, rest) = rest.split_once('.')?;
    Some((k.parse().ok()?, s.parse().ok()?, rest))
}

/// The diffusers name of the UNet's ldm `key` (without `model.diffusion_model.`), `per`
/// resnets to a down level (the inverse of diffusers' conversion to the original layout).
pub fn unet_name(key: &str, per: usize) -> Option<String> {
    let stride = per + 1;
    if let Some(rest) = key.strip_prefix("time_embed.0.") {
        return Some(format!("time_embedding.linear_1.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("time_embed.2.") {
        return Some(format!("time_embedding.linear_2.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("out.0.") {
        return Some(format!("conv_norm_out.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("out.2.") {
        return Some(format!("conv_out.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (s, rest) = rest.split_once('.')?;
        return match s {
            "0" => Some(format!("mid_block.resnets.0.{}", resnet_part(rest)?)),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => Some(format!("mid_block.resnets.1.{}", resnet_part(rest)?)),
            _ => None,
        };
    }
    if let Some((k, s, rest)) = indexed(key, "input_blocks") {
        if k == 0 {
            return (s == 0).then(|| format!("conv_in.{rest}"));
        }
        if let Some(conv) = rest.strip_prefix("op.") {
            return (k.is_multiple_of(stride) && s == 0)
                .then(|| format!("down_blocks.{}.downsamplers.0.conv.{conv}", k / stride - 1));
        }
        let (i, j) = ((k - 1) / stride, (k - 1) % stride);
        return match s {
            0 => Some(format!("down_blocks.{i}.resnets.{j}.{}", resnet_part(rest)?)),
            1 => Some(format!("down_blocks.{i}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    if let Some((k, s, rest)) = indexed(key, "output_blocks") {
        let (i, j) = (k / stride, k % stride);
        if let Some(conv) = rest.strip_prefix("conv.") {
            return (s > 0).then(|| format!("up_blocks.{i}.upsamplers.0.conv.{conv}"));
        }
        return match s {
            0 => Some(format!("up_blocks.{i}.resnets.{j}.{}", resnet_part(rest)?)),
            1 => Some(format!("up_blocks.{i}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    None
}

/// The diffusers name of the VAE's ldm `key` (without `first_stage_model.`), for the decoder and
/// `post_quant_conv` (the encoder is not used); `levels` up levels, which ldm numbers from the
/// bottom and diffusers from the top.
pub fn vae_name(key: &str, levels: usize) -> Option<String> {
    let resnet = |rest: &str| rest.replace("nin_shortcut.", "conv_shortcut.");
    if key.starts_with("post_quant_conv.")
        || key.starts_with("decoder.conv_in.")
        || key.starts_with("decoder.conv_out.")
    {
        return Some(key.to_owned());
    }
    if let Some(rest) = key.strip_prefix("decoder.norm_out.") {
        return Some(format!("decoder.conv_norm_out.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("decoder.mid.") {
        if let Some(tail) = rest.strip_prefix("block_1.") {
            return Some(format!("decoder.mid_block.resnets.0.{}", resnet(tail)));
        }
        if let Some(tail) = rest.strip_prefix("block_2.") {
            return Some(format!("decoder.mid_block.resnets.1.{}", resnet(tail)));
        }
        let tail = rest.strip_prefix("attn_1.")?;
        const PARTS: [(&str, &str); 5] =
            [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")];
        let part = PARTS.iter().find_map(|(ldm, hf)| tail.strip_prefix(ldm).map(|t| format!("{hf}{t}")))?;
        return Some(format!("decoder.mid_block.attentions.0.{part}"));
    }
    let rest = key.strip_prefix("decoder.up.")?;
    let (m, rest) = rest.split_once('.')?;
    let level = levels.checked_sub(1)?.checked_sub(m.parse().ok()?)?;
    if let Some(tail) = rest.strip_prefix("upsample.") {
        return Some(format!("decoder.up_blocks.{level}.upsamplers.0.{tail}"));
    }
    let tail = rest.strip_prefix("block.")?;
    let (j, tail) = tail.split_once('.')?;
    Some(format!("decoder.up_blocks.{level}.resnets.{j}.{}", resnet(tail)))
}

/// transformers' `CLIPTextModel` names for the OpenCLIP tensor `key` (without
/// `cond_stage_model.model.`), stored as `stored`: the fused `in_proj` gives three.
fn open_clip_names(key: &str, stored: &str) -> Option<Vec<(String, Stored)>> {
    let whole = |name: String| Some(vec![(name, Stored::whole(stored))]);
    match key {
        "token_embedding.weight" => return whole("embeddings.token_embedding.weight".into()),
        "positional_embedding" => return whole("embeddings.position_embedding.weight".into()),
        _ => {}
    }
    if let Some(rest) = key.strip_prefix("ln_final.") {
        return whole(format!("final_layer_norm.{rest}"));
    }
    let rest = key.strip_prefix("transformer.resblocks.")?;
    let (i, rest) = rest.split_once('.')?;
    let layer = format!("encoder.layers.{i}");
    if let Some(kind) = rest.strip_prefix("attn.in_proj_") {
        return Some(
            ["q", "k", "v"]
                .iter()
                .enumerate()
                .map(|(part, x)| {
                    (
                        format!("{layer}.self_attn.{x}_proj.{kind}"),
                        Stored { name: stored.into(), part: Some((part, 3)) },
                    )
                })
                .collect(),
        );
    }
    const PARTS: [(&str, &str); 5] = [
        ("attn.out_proj.", "self_attn.out_proj."),
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ];
    let name = PARTS.iter().find_map(|(ldm, hf)| rest.strip_prefix(ldm).map(|t| format!("{layer}.{hf}{t}")))?;
    whole(name)
}

/// The tokenizer folder for a checkpoint at `path`: `tokenizer/` beside it.
pub fn tokenizer_beside(path: &Path) -> Option<PathBuf> {
    let dir = path.parent()?.join("tokenizer");
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_unet_names_map_to_diffusers() {
        for (ldm, hf) in [
            ("input_blocks.0.0.weight", "conv_in.weight"),
            (
                "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
            ("input_blocks.11.0.out_layers.3.weight", "down_blocks.3.resnets.1.conv2.weight"),
            ("input_blocks.4.0.skip_connection.bias", "down_blocks.1.resnets.0.conv_shortcut.bias"),
            ("middle_block.1.proj_out.weight", "mid_block.attentions.0.proj_out.weight"),
            ("middle_block.2.emb_layers.1.weight", "mid_block.resnets.1.time_emb_proj.weight"),
            ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
            ("output_blocks.5.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight"),
            ("output_blocks.5.1.norm.weight", "up_blocks.1.attentions.2.norm.weight"),
            ("output_blocks.11.0.skip_connection.weight", "up_blocks.3.resnets.2.conv_shortcut.weight"),
            (
                "output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight",
                "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight",
            ),
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
            ("out.2.weight", "conv_out.weight"),
        ] {
            assert_eq!(unet_name(ldm, 2).as_deref(), Some(hf), "{ldm}");
        }
        assert_eq!(unet_name("input_blocks.1.2.weight", 2), None);
    }

    #[test]
    fn sd15_vae_decoder_names_map_to_diffusers() {
        for (ldm, hf) in [
            ("decoder.up.3.block.2.conv2.weight", "decoder.up_blocks.0.resnets.2.conv2.weight"),
            ("decoder.up.1.upsample.conv.weight", "decoder.up_blocks.2.upsamplers.0.conv.weight"),
            ("decoder.up.0.block.0.nin_shortcut.weight", "decoder.up_blocks.3.resnets.0.conv_shortcut.weight"),
            ("decoder.mid.attn_1.proj_out.weight", "decoder.mid_block.attentions.0.to_out.0.weight"),
            ("decoder.mid.attn_1.norm.bias", "decoder.mid_block.attentions.0.group_norm.bias"),
            ("decoder.mid.block_2.norm2.bias", "decoder.mid_block.resnets.1.norm2.bias"),
            ("decoder.norm_out.weight", "decoder.conv_norm_out.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ] {
            assert_eq!(vae_name(ldm, 4).as_deref(), Some(hf), "{ldm}");
        }
        assert_eq!(vae_name("encoder.down.0.block.0.conv1.weight", 4), None, "the encoder is not read");
    }

    #[test]
    fn open_clip_in_proj_becomes_three_projections() {
        let names = open_clip_names("transformer.resblocks.3.attn.in_proj_weight", "s").expect("maps");
        let got: Vec<_> = names.iter().map(|(n, s)| (n.as_str(), s.part)).collect();
        assert_eq!(
            got,
            vec![
                ("encoder.layers.3.self_attn.q_proj.weight", Some((0, 3))),
                ("encoder.layers.3.self_attn.k_proj.weight", Some((1, 3))),
                ("encoder.layers.3.self_attn.v_proj.weight", Some((2, 3))),
            ]
        );
        let fc = open_clip_names("transformer.resblocks.0.mlp.c_proj.bias", "s").expect("maps");
        assert_eq!(fc[0].0, "encoder.layers.0.mlp.fc2.bias");
        assert!(open_clip_names("text_projection", "s").is_none());
    }

    #[test]
    fn ldm_yaml_fields_are_read() {
        let ldm = LdmConfig::parse(
            "model:\n  params:\n    parameterization: \"v\"\n    scale_factor: 0.18215\n    linear_start: 0.00085\n    \
             unet_config:\n      params:\n        num_heads: -1\n        num_head_channels: 64\n        image_size: 96\n",
        )
        .expect("parses");
        assert_eq!(ldm.parameterization.as_deref(), Some("v"));
        assert_eq!((ldm.num_heads, ldm.num_head_channels, ldm.image_size), (Some(-1), Some(64), Some(96)));
        assert_eq!(ldm.scale_factor, Some(0.18215));
        assert!(LdmConfig::parse("model: [").is_err());
    }
}
