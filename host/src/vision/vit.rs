//! A vision transformer in burn (CLIP's vision tower; SigLIP's is the same without the class
//! token and the pre-norm): the image cut into patches and projected (the stride-`patch`
//! convolution as one product over flattened patches), position embeddings, pre-norm blocks of
//! bidirectional attention and a two-layer feed-forward. Written once for flex and wgpu.

use burn::tensor::activation::{gelu, gelu_approximate, sigmoid, softmax};
use burn::tensor::{Device, Tensor};
use serde::Deserialize;

use super::VisionError;
use super::preprocess::Pixels;
use crate::model::layers::{LayerNorm, Linear, upload};
use crate::model::weights::HostTensor;

/// Where a tower's tensors come from, by their Hugging Face names inside the tower
/// (`embeddings.patch_embedding.weight`, `encoder.layers.0.mlp.fc1.bias`, …).
pub trait TowerWeights {
    fn contains(&self, name: &str) -> bool;
    fn read(&self, name: &str) -> Result<HostTensor, VisionError>;
    /// The name the file stores `name` under (for errors).
    fn file_name(&self, name: &str) -> String;
}

/// The feed-forward's activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// CLIP's `x·σ(1.702x)`.
    QuickGelu,
    Gelu,
    GeluTanh,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self, VisionError> {
        Ok(match name {
            "quick_gelu" => Self::QuickGelu,
            "gelu" => Self::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Self::GeluTanh,
            other => return Err(VisionError::Config(format!("activation `{other}` is not supported"))),
        })
    }

    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid(x.mul_scalar(1.702)),
            Self::Gelu => gelu(x),
            Self::GeluTanh => gelu_approximate(x),
        }
    }
}

/// `vision_config` of a CLIP vision tower.
#[derive(Debug, Clone, Deserialize)]
pub struct VitConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_channels() -> usize {
    3
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

impl VitConfig {
    /// A multimodal model config's `vision_config`, with `defaults` where it leaves fields out.
    pub fn of_model(config: &serde_json::Value, defaults: &[(&str, serde_json::Value)]) -> Result<Self, VisionError> {
        let mut vision = config.get("vision_config").cloned().unwrap_or_default();
        if let Some(obj) = vision.as_object_mut() {
            for (key, value) in defaults {
                obj.entry(*key).or_insert_with(|| value.clone());
            }
        }
        serde_json::from_value(vision).map_err(|e| VisionError::Config(format!("`vision_config`: {e}")))
    }

    /// Patches along one side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    fn check(&self) -> Result<(), VisionError> {
        let c = self;
        if c.hidden_size == 0 || c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(VisionError::Config(format!(
                "a hidden size of {} cannot be split into {} heads",
                c.hidden_size, c.num_attention_heads
            )));
        }
        if c.patch_size == 0 || c.image_size < c.patch_size || c.num_channels != 3 {
            return Err(VisionError::Config(format!(
                "{}-pixel images in {}-pixel patches with {} channels",
                c.image_size, c.patch_size, c.num_channels
            )));
        }
        // Bounds what a config can make the server allocate (ViT-g/14 at 448 has 1,024 patches).
        if c.grid() > 128 || c.num_hidden_layers > 256 {
            return Err(VisionError::Config("the vision tower's config is implausibly large".into()));
        }
        Ok(())
    }
}

struct Block {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A loaded vision tower.
pub struct VisionTower {
    config: VitConfig,
    activation: Activation,
    /// The patch convolution as `[hidden, channels·patch²]`.
    patch: Linear,
    class: Option<Vec<f32>>,
    positions: HostTensor,
    pre_norm: Option<LayerNorm>,
    /// SigLIP's norm after the last block (a LLaVA CLIP tower's is never used, so not read).
    post_norm: Option<LayerNorm>,
    blocks: Vec<Block>,
    device: Device,
}

impl VisionTower {
    /// Reads the tower from `weights`, with its `post_layernorm` when `post_norm` says so.
    pub fn load(
        weights: &dyn TowerWeights,
        config: VitConfig,
        post_norm: bool,
        device: &Device,
    ) -> Result<Self, VisionError> {
        config.check()?;
        let h = config.hidden_size;
        let read = |name: &str| weights.read(name);
        let read_opt = |name: &str| if weights.contains(name) { read(name).map(Some) } else { Ok(None) };
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear, VisionError> {
            let w = read(&format!("{name}.weight"))?;
            let b = read_opt(&format!("{name}.bias"))?;
            Ok(Linear::from_host(&weights.file_name(name), w, b, [out, inp], device)?)
        };
        let norm = |name: &str| -> Result<LayerNorm, VisionError> {
            Ok(LayerNorm::from_host(
                &weights.file_name(name),
                read(&format!("{name}.weight"))?,
                read(&format!("{name}.bias"))?,
                h,
                config.layer_norm_eps,
                device,
            )?)
        };
        let p = config.patch_size;
        let conv = read("embeddings.patch_embedding.weight")?;
        let flat = config.num_channels * p * p;
        if conv.shape != [h, config.num_channels, p, p] {
            return Err(VisionError::Config(format!(
                "{} is {:?}, not [{h}, {}, {p}, {p}]",
                weights.file_name("embeddings.patch_embedding.weight"),
                conv.shape,
                config.num_channels
            )));
        }
        let conv = HostTensor { shape: vec![h, flat], data: conv.data };
        let conv_bias = read_opt("embeddings.patch_embedding.bias")?;
        let patch =
            Linear::from_host(&weights.file_name("embeddings.patch_embedding"), conv, conv_bias, [h, flat], device)?;
        let class = read_opt("embeddings.class_embedding")?.map(|t| t.data);
        if class.as_ref().is_some_and(|c| c.len() != h) {
            let name = weights.file_name("embeddings.class_embedding");
            return Err(VisionError::Config(format!("{name} is not {h} wide")));
        }
        let positions = read("embeddings.position_embedding.weight")?;
        let expected = config.grid() * config.grid() + usize::from(class.is_some());
        if positions.shape != [expected, h] {
            return Err(VisionError::Config(format!(
                "{} is {:?}, not [{expected}, {h}]",
                weights.file_name("embeddings.position_embedding.weight"),
                positions.shape
            )));
        }
        let pre_norm = if weights.contains("pre_layrnorm.weight") { Some(norm("pre_layrnorm")?) } else { None };
        let post_norm = if post_norm { Some(norm("post_layernorm")?) } else { None };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        let f = config.intermediate_size;
        for i in 0..config.num_hidden_layers {
            let l = format!("encoder.layers.{i}.");
            blocks.push(Block {
                norm1: norm(&format!("{l}layer_norm1"))?,
                q: linear(&format!("{l}self_attn.q_proj"), h, h)?,
                k: linear(&format!("{l}self_attn.k_proj"), h, h)?,
                v: linear(&format!("{l}self_attn.v_proj"), h, h)?,
                out: linear(&format!("{l}self_attn.out_proj"), h, h)?,
                norm2: norm(&format!("{l}layer_norm2"))?,
                fc1: linear(&format!("{l}mlp.fc1"), f, h)?,
                fc2: linear(&format!("{l}mlp.fc2"), h, f)?,
            });
        }
        let activation = Activation::parse(&config.hidden_act)?;
        Ok(Self { config, activation, patch, class, positions, pre_norm, post_norm, blocks, device: device.clone() })
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// The hidden states after the embeddings and the first `layers` blocks (transformers'
    /// `hidden_states[layers]`): `[positions, hidden]`, the class token first where there is one.
    pub fn hidden_states(&self, pixels: &Pixels, layers: usize) -> Result<Tensor<2>, VisionError> {
        let c = &self.config;
        let (p, grid, h) = (c.patch_size, c.grid(), c.hidden_size);
        if pixels.height != c.image_size || pixels.width != c.image_size {
            return Err(VisionError::Config(format!(
                "the vision tower takes {0}×{0} pixels, the processor made {1}×{2}",
                c.image_size, pixels.width, pixels.height
            )));
        }
        // Patches row by row, each flattened as the convolution's weight is: channel, row, column.
        let plane = pixels.height * pixels.width;
        let mut flat = Vec::with_capacity(grid * grid * 3 * p * p);
        for py in 0..grid {
            for px in 0..grid {
                for ch in 0..3 {
                    for ky in 0..p {
                        let row = ch * plane + (py * p + ky) * pixels.width + px * p;
                        flat.extend_from_slice(&pixels.data[row..row + p]);
                    }
                }
            }
        }
        let patches = self.patch.forward(upload(flat, [grid * grid, 3 * p * p], &self.device))?;
        let mut x = match &self.class {
            Some(class) => Tensor::cat(vec![upload(class.clone(), [1, h], &self.device), patches], 0),
            None => patches,
        };
        let n = x.dims()[0];
        x = x + upload(self.positions.data.clone(), [n, h], &self.device);
        if let Some(norm) = &self.pre_norm {
            x = norm.forward(x);
        }
        for block in self.blocks.iter().take(layers) {
            let attended = self.attention(block, block.norm1.forward(x.clone()))?;
            let h1 = x + attended;
            let up = self.activation.apply(block.fc1.forward(block.norm2.forward(h1.clone()))?);
            x = h1 + block.fc2.forward(up)?;
        }
        Ok(x)
    }

    /// The last block's states through the post-norm (SigLIP's `last_hidden_state`).
    pub fn last_hidden_state(&self, pixels: &Pixels) -> Result<Tensor<2>, VisionError> {
        let states = self.hidden_states(pixels, self.blocks.len())?;
        Ok(match &self.post_norm {
            Some(norm) => norm.forward(states),
            None => states,
        })
    }

    fn attention(&self, block: &Block, x: Tensor<2>) -> Result<Tensor<2>, VisionError> {
        let [n, h] = x.dims();
        let heads = self.config.num_attention_heads;
        let dim = h / heads;
        let split = |t: Tensor<2>| t.reshape([n, heads, dim]).swap_dims(0, 1);
        let q = split(block.q.forward(x.clone())?);
        let k = split(block.k.forward(x.clone())?);
        let v = split(block.v.forward(x)?);
        let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar((dim as f64).powf(-0.5));
        let mixed = softmax(scores, 2).matmul(v).swap_dims(0, 1).reshape([n, h]);
        Ok(block.out.forward(mixed)?)
    }
}
