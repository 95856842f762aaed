//! CLIP's text transformer (`CLIPTextModel`), what Stable Diffusion 1.x/2.x condition on: token
//! and position embeddings, pre-norm blocks of causal self-attention and a two-layer
//! feed-forward, a final layer norm; its last hidden state is the UNet's context.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;

use super::DiffusionError;
use super::nn::{attention, layer_norm, linear, linear3};
use super::weights::Component;
use crate::model::layers::{LayerNorm, Linear, upload};
use crate::vision::Activation;

/// `text_encoder/config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The loaded text encoder.
pub struct ClipText {
    token_embedding: Tensor<2>,
    position_embedding: Tensor<2>,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    activation: Activation,
    config: ClipTextConfig,
}

impl ClipText {
    pub fn load(w: &Component, config: ClipTextConfig, device: &Device) -> Result<Self, DiffusionError> {
        let c = &config;
        if c.hidden_size == 0 || c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(DiffusionError::Config(format!(
                "a text width of {} cannot be split into {} heads",
                c.hidden_size, c.num_attention_heads
            )));
        }
        if c.num_hidden_layers > 64 || c.max_position_embeddings > 4096 {
            return Err(DiffusionError::Config("the text encoder's config is implausibly large".into()));
        }
        // SD 1.x's OpenAI CLIP: quick GELU; SD 2.x's OpenCLIP: the exact GELU.
        let activation =
            Activation::parse(&c.hidden_act).map_err(|e| DiffusionError::Config(format!("text encoder: {e}")))?;
        let d = c.hidden_size;
        let tokens = w.read_sized("embeddings.token_embedding.weight", c.vocab_size * d)?;
        let positions = w.read_sized("embeddings.position_embedding.weight", c.max_position_embeddings * d)?;
        let eps = c.layer_norm_eps;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layers.{i}");
                Ok(Layer {
                    norm1: layer_norm(w, &format!("{p}.layer_norm1"), d, eps, device)?,
                    q: linear(w, &format!("{p}.self_attn.q_proj"), device)?,
                    k: linear(w, &format!("{p}.self_attn.k_proj"), device)?,
                    v: linear(w, &format!("{p}.self_attn.v_proj"), device)?,
                    out: linear(w, &format!("{p}.self_attn.out_proj"), device)?,
                    norm2: layer_norm(w, &format!("{p}.layer_norm2"), d, eps, device)?,
                    fc1: linear(w, &format!("{p}.mlp.fc1"), device)?,
                    fc2: linear(w, &format!("{p}.mlp.fc2"), device)?,
                })
            })
            .collect::<Result<_, DiffusionError>>()?;
        Ok(Self {
            token_embedding: upload(tokens, [c.vocab_size, d], device),
            position_embedding: upload(positions, [c.max_position_embeddings, d], device),
            layers,
            final_norm: layer_norm(w, "final_layer_norm", d, eps, device)?,
            activation,
            config,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The last hidden state `[1, len, hidden]` of `ids` (at most `max_position_embeddings`).
    pub fn encode(&self, ids: &[u32]) -> Result<Tensor<3>, DiffusionError> {
        let c = &self.config;
        if ids.is_empty() || ids.len() > c.max_position_embeddings {
            return Err(DiffusionError::Config(format!(
                "{} tokens for a text encoder of {}",
                ids.len(),
                c.max_position_embeddings
            )));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(DiffusionError::Config(format!("token {bad} is outside the text encoder's vocabulary")));
        }
        let device = self.token_embedding.device();
        let len = ids.len();
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(ids.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [len]),
            &device,
        );
        let positions = self.position_embedding.clone().slice([0..len, 0..c.hidden_size]);
        let mut x = (self.token_embedding.clone().select(0, index) + positions).unsqueeze::<3>();
        for layer in &self.layers {
            let h = layer.norm1.forward(x.clone());
            let (q, k, v) = (linear3(&layer.q, h.clone())?, linear3(&layer.k, h.clone())?, linear3(&layer.v, h)?);
            x = x + linear3(&layer.out, attention(q, k, v, c.num_attention_heads, true))?;
            let h = linear3(&layer.fc1, layer.norm2.forward(x.clone()))?;
            let h = self.activation.apply(h);
            x = x + linear3(&layer.fc2, h)?;
        }
        Ok(self.final_norm.forward(x))
    }
}
