//! Image generation: Stable Diffusion 1.x/2.x (SD 1.5, SD 2.1, SD-Turbo) as a latent-diffusion
//! pipeline in burn, the same code on flex and wgpu. The prompt through CLIP's text encoder, a
//! sampler ([`schedule`]) stepping seeded noise down through the UNet (classifier-free guidance
//! when the scale is above 1: the unconditional and conditional passes batched), and the VAE's
//! decoder to RGB pixels. Read from a diffusers folder (`model_index.json`, `unet/`, `vae/`,
//! `text_encoder/`, `tokenizer/`, `scheduler/`) or from a single-file checkpoint ([`checkpoint`]).

pub mod blocks;
pub mod checkpoint;
pub mod clip_text;
pub mod nn;
pub mod png_out;
pub mod prompt_tokens;
pub mod schedule;
pub mod unet;
pub mod vae;
pub mod weights;

use std::ops::ControlFlow;
use std::path::Path;

use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::de::DeserializeOwned;

use crate::model::ModelError;
use crate::model::layers::{read_back, upload};
use crate::model::weights::WeightError;
use checkpoint::{SingleFile, TextFamily};
use clip_text::{ClipText, ClipTextConfig};
use prompt_tokens::PromptTokenizer;
use schedule::{Sampler, ScheduleError, SchedulerConfig, TrainingSchedule};
use unet::{UNet, UNetConfig};
use vae::{VaeConfig, VaeDecoder};
use weights::Component;

/// Why a pipeline could not be loaded or could not run.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Config(String),
    #[error("missing weight or file: {0}")]
    Missing(String),
    #[error("weights do not fit together: {0}")]
    Shape(String),
    /// The request asks for something this pipeline cannot make.
    #[error("{0}")]
    Request(String),
    /// The progress callback asked to stop (the client went away).
    #[error("the image was cancelled")]
    Cancelled,
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
}

/// The source of the sampler's noise: standard normal values, in order.
pub trait Noise {
    fn normal(&mut self, len: usize) -> Vec<f32>;
}

/// Noise from a seed: ChaCha8 (portable: the same seed gives the same image on every machine
/// and build) through `rand_distr`'s standard normal.
pub struct SeededNoise(rand_chacha::ChaCha8Rng);

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        Self(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }
}

impl Noise for SeededNoise {
    fn normal(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| StandardNormal.sample(&mut self.0)).collect()
    }
}

/// What one image is made from.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    /// Classifier-free guidance's scale: at most 1, one unguided pass per step.
    pub guidance: f64,
    /// `None`: the sampler the model's scheduler config names.
    pub sampler: Option<Sampler>,
}

/// A request's encoded text ([`Pipeline::condition`]): `[1 or 2, tokens, width]`.
pub struct Conditioning(Tensor<3>);

/// An RGB image, row-major, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// A loaded pipeline.
pub struct Pipeline {
    pub tokenizer: PromptTokenizer,
    pub text: ClipText,
    pub unet: UNet,
    pub vae: VaeDecoder,
    pub schedule: TrainingSchedule,
    /// The sampler the scheduler config names.
    pub default_sampler: Sampler,
}

fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T, DiffusionError> {
    let text = std::fs::read_to_string(path).map_err(|e| DiffusionError::Io(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| DiffusionError::Config(format!("{}: {e}", path.display())))
}

/// Whether `path` is a diffusers pipeline folder.
pub fn is_pipeline(path: &Path) -> bool {
    path.join("model_index.json").is_file()
}

/// What a pipeline is built from, wherever it was read.
struct Parts {
    tokenizer: PromptTokenizer,
    text: (Component, ClipTextConfig),
    unet: (Component, UNetConfig),
    vae: (Component, VaeConfig),
    scheduler: SchedulerConfig,
}

impl Pipeline {
    /// The image model at `path`: a diffusers folder, or a single-file `.safetensors` checkpoint
    /// described by `config` (a diffusers folder of the same model, whose configs, tokenizer and
    /// scheduler are read as diffusers' `from_single_file(config=…)` reads them) or, without one,
    /// by its shapes, the ldm `.yaml` beside it and the `tokenizer/` folder beside it.
    pub fn open(path: &Path, config: Option<&Path>, device: &Device) -> Result<Self, DiffusionError> {
        if is_pipeline(path) {
            Self::load(path, device)
        } else if path.is_file() {
            Self::load_single_file(path, config, device)
        } else {
            Err(DiffusionError::Config(format!(
                "{} is neither a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, \
                 scheduler/) nor a single-file .safetensors checkpoint",
                path.display()
            )))
        }
    }

    /// The diffusers folder `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, DiffusionError> {
        let index: serde_json::Value = read_config(&dir.join("model_index.json"))?;
        let class = index.get("_class_name").and_then(serde_json::Value::as_str).unwrap_or_default();
        if !class.starts_with("StableDiffusion") || class.contains("XL") || class.contains('3') {
            return Err(DiffusionError::Config(format!(
                "`{class}` is not a Stable Diffusion 1.x/2.x pipeline (the architectures supported)"
            )));
        }
        let text = Component::open(&dir.join("text_encoder"), "text_encoder")?
            .with_optional_prefix("text_model.", "embeddings.token_embedding.weight");
        Self::build(Self::folder_parts(dir, text, None)?, device)
    }

    /// The configs, tokenizer and scheduler of the diffusers folder `dir`, for `text` and, unless
    /// given, the folder's own UNet and VAE weights.
    fn folder_parts(
        dir: &Path,
        text: Component,
        weights: Option<(Component, Component)>,
    ) -> Result<Parts, DiffusionError> {
        let (unet, vae) = match weights {
            Some(pair) => pair,
            None => (Component::open(&dir.join("unet"), "unet")?, Component::open(&dir.join("vae"), "vae")?),
        };
        Ok(Parts {
            tokenizer: PromptTokenizer::load(&dir.join("tokenizer"))?,
            text: (text, read_config(&dir.join("text_encoder/config.json"))?),
            unet: (unet, read_config(&dir.join("unet/config.json"))?),
            vae: (vae, read_config(&dir.join("vae/config.json"))?),
            scheduler: read_config(&dir.join("scheduler/scheduler_config.json"))?,
        })
    }

    /// The single-file checkpoint at `path` ([`Self::open`]).
    pub fn load_single_file(path: &Path, config: Option<&Path>, device: &Device) -> Result<Self, DiffusionError> {
        let file = SingleFile::open(path)?;
        let parts = match config {
            Some(dir) if !is_pipeline(dir) => {
                return Err(DiffusionError::Config(format!(
                    "the image model's config {} is not a diffusers folder (no model_index.json)",
                    dir.display()
                )));
            }
            Some(dir) => Self::folder_parts(dir, file.text_weights(), Some((file.unet_weights(), file.vae_weights())))?,
            None => {
                let tokenizer = checkpoint::tokenizer_beside(path).ok_or_else(|| {
                    DiffusionError::Config(format!(
                        "a single-file checkpoint carries no tokenizer: put CLIP's (vocab.json and merges.txt, or \
                         tokenizer.json) in a tokenizer/ folder beside {}, or give a diffusers folder of the same \
                         model as image_config",
                        path.display()
                    ))
                })?;
                let pad = match file.family {
                    TextFamily::Clip => "<|endoftext|>",
                    TextFamily::OpenClip => "!",
                };
                Parts {
                    tokenizer: PromptTokenizer::load_padded(&tokenizer, pad)?,
                    text: (file.text_weights(), file.text_config()?),
                    unet: (file.unet_weights(), file.unet_config()?),
                    vae: (file.vae_weights(), file.vae_config()?),
                    scheduler: file.scheduler_config()?,
                }
            }
        };
        tracing::info!(
            family = ?file.family,
            ldm_config = ?file.ldm_path,
            prediction = %parts.scheduler.prediction_type,
            "single-file checkpoint read"
        );
        Self::build(parts, device)
    }

    fn build(parts: Parts, device: &Device) -> Result<Self, DiffusionError> {
        let Parts { tokenizer, text, unet, vae, scheduler } = parts;
        let text = ClipText::load(&text.0, text.1, device)?;
        let unet = UNet::load(&unet.0, unet.1, device)?;
        let vae = VaeDecoder::load(&vae.0, vae.1, device)?;
        if unet.config().in_channels != vae.config().latent_channels {
            return Err(DiffusionError::Config(format!(
                "the UNet takes {} channels where the VAE's latents have {} (an inpainting or other conditioned \
                 model, which is not supported)",
                unet.config().in_channels,
                vae.config().latent_channels
            )));
        }
        let default_sampler = Sampler::for_class(&scheduler.class_name);
        let schedule = TrainingSchedule::new(scheduler)?;
        Ok(Self { tokenizer, text, unet, vae, schedule, default_sampler })
    }

    /// The side lengths images must be multiples of: the VAE's scale (the UNet takes latents of
    /// any size, as diffusers' does, upsampling each level to its skip's size).
    pub fn size_multiple(&self) -> usize {
        1 << self.vae.upsamplings()
    }

    /// The side the model was trained at (the UNet's `sample_size` in pixels; 512 where the
    /// config leaves it out).
    pub fn native_size(&self) -> usize {
        self.unet.config().sample_size.map_or(512, |s| s * self.size_multiple())
    }

    /// Whether the model is sampled in a few unguided steps: an LCM scheduler, or SD-Turbo's
    /// `trailing` Euler schedule.
    pub fn is_few_step(&self) -> bool {
        self.default_sampler == Sampler::Lcm || self.schedule.config().timestep_spacing == "trailing"
    }

    /// The text encoder's states for `prompt`: `[1, 77, hidden]`.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Tensor<3>, DiffusionError> {
        self.text.encode(&self.tokenizer.encode(prompt)?)
    }

    /// What the UNet attends to for `request`: the prompt's states, under guidance batched after
    /// the negative prompt's. The same for every image of a request, so encoded once.
    pub fn condition(&self, request: &ImageRequest) -> Result<Conditioning, DiffusionError> {
        let cond = self.encode_prompt(&request.prompt)?;
        let context = if request.guidance > 1.0 {
            Tensor::cat(vec![self.encode_prompt(&request.negative_prompt)?, cond], 0)
        } else {
            cond
        };
        Ok(Conditioning(context))
    }

    /// One image for `request`, its noise drawn from `noise`; `progress(i, n)` after each step,
    /// which stops the work ([`DiffusionError::Cancelled`]) by breaking.
    pub fn generate(
        &self,
        request: &ImageRequest,
        noise: &mut dyn Noise,
        progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<RgbImage, DiffusionError> {
        self.generate_conditioned(request, &self.condition(request)?, noise, progress)
    }

    /// [`Self::generate`] with the request's text already encoded by [`Self::condition`].
    pub fn generate_conditioned(
        &self,
        request: &ImageRequest,
        conditioning: &Conditioning,
        noise: &mut dyn Noise,
        progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<RgbImage, DiffusionError> {
        let latents = self.denoise(request, conditioning, noise, progress, &mut |_, _| {})?;
        let pixels = self.vae.decode(latents)?;
        to_rgb(pixels)
    }

    /// The sampler's final latents `[1, c, h/8, w/8]` for `request`, conditioned on
    /// `conditioning` (from [`Self::condition`] for the same request); `observe(i, latents)` sees
    /// the latents after each step.
    pub fn denoise(
        &self,
        request: &ImageRequest,
        conditioning: &Conditioning,
        noise: &mut dyn Noise,
        progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
        observe: &mut dyn FnMut(usize, &Tensor<4>),
    ) -> Result<Tensor<4>, DiffusionError> {
        let multiple = self.size_multiple();
        let vae_scale = 1 << self.vae.upsamplings();
        if request.width == 0
            || request.height == 0
            || !request.width.is_multiple_of(multiple)
            || !request.height.is_multiple_of(multiple)
        {
            return Err(DiffusionError::Request(format!(
                "this model makes images whose sides are multiples of {multiple}, not {}x{}",
                request.width, request.height
            )));
        }
        let sampler = request.sampler.unwrap_or(self.default_sampler);
        let plan = self.schedule.plan(sampler, request.steps)?;
        let guided = request.guidance > 1.0;
        let context = &conditioning.0;
        if context.dims()[0] != 1 + usize::from(guided) {
            return Err(DiffusionError::Shape("the conditioning was made for another guidance".into()));
        }
        let device = context.device();
        let channels = self.vae.config().latent_channels;
        let shape = [1, channels, request.height / vae_scale, request.width / vae_scale];
        let len = shape.iter().product();
        let mut latents = upload(noise.normal(len), shape, &device).mul_scalar(plan.init_noise_sigma);
        let n = plan.timesteps.len();
        for i in 0..n {
            let step = self.schedule.step(&plan, i);
            let input = latents.clone().mul_scalar(step.input_scale);
            let out = if guided {
                let (uncond, cond) = self.guided_passes(input, plan.timesteps[i], context)?;
                uncond.clone() + (cond - uncond).mul_scalar(request.guidance)
            } else {
                self.unet.forward(input, plan.timesteps[i], context)?
            };
            latents = latents.mul_scalar(step.sample_coeff) + out.mul_scalar(step.output_coeff);
            if step.noise_coeff != 0.0 {
                latents = latents + upload(noise.normal(len), shape, &device).mul_scalar(step.noise_coeff);
            }
            observe(i, &latents);
            if progress(i + 1, n).is_break() {
                return Err(DiffusionError::Cancelled);
            }
        }
        Ok(latents)
    }
}

impl Pipeline {
    /// The UNet's unconditional and conditional outputs for `input` under `context`
    /// (`[negative, prompt]`). On a GPU, one pass over the batch of two. On flex, whose
    /// convolutions run on one thread, the two passes run side by side on two threads when the
    /// compute pool has them: near twice as fast, the results the same as batched.
    fn guided_passes(
        &self,
        input: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
    ) -> Result<(Tensor<4>, Tensor<4>), DiffusionError> {
        let [_, len, width] = context.dims();
        if nn::threads_here(&input.device()) >= 2 {
            // Row 0 of the context is the negative prompt's, row 1 the prompt's.
            let passes = nn::on_threads(2, 2, |half| {
                self.unet.forward(input.clone(), timestep, &context.clone().slice([half, 0..len, 0..width]))
            });
            let mut passes = passes.into_iter();
            if let (Some(uncond), Some(cond)) = (passes.next(), passes.next()) {
                return Ok((uncond?, cond?));
            }
        }
        let out = self.unet.forward(Tensor::cat(vec![input.clone(), input], 0), timestep, context)?;
        let [_, c, h, w] = out.dims();
        Ok((out.clone().slice([0..1, 0..c, 0..h, 0..w]), out.slice([1..2, 0..c, 0..h, 0..w])))
    }
}

/// The decoder's `[1, 3, H, W]` output in −1..1 as 8-bit RGB, rounded as diffusers' PIL output
/// is (`round(clamp(x/2 + 0.5, 0, 1)·255)`, halves to even, in f32).
pub fn to_rgb(pixels: Tensor<4>) -> Result<RgbImage, DiffusionError> {
    let [_, c, height, width] = pixels.dims();
    if c != 3 {
        return Err(DiffusionError::Shape(format!("the VAE gives {c} channels, not RGB")));
    }
    let values = read_back(pixels)?;
    let plane = height * width;
    let mut data = Vec::with_capacity(plane * 3);
    for p in 0..plane {
        for ch in 0..3 {
            let v = (values[ch * plane + p] / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0;
            data.push(v.round_ties_even() as u8);
        }
    }
    Ok(RgbImage { width, height, data })
}
