//! The samplers that turn noise into latents, step by step, as diffusers' schedulers do it:
//! Euler (`EulerDiscreteScheduler`, its ancestral variant), DDIM (`DDIMScheduler` with eta 0)
//! and LCM (`LCMScheduler`), all on
//! the training schedule a model's `scheduler_config.json` gives (`scaled_linear` or `linear`
//! betas over `num_train_timesteps`). The arithmetic is on the host (a few numbers per step);
//! the latents themselves stay on the device.

use serde::Deserialize;

/// Why a schedule cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("scheduler config: {0}")]
    Config(String),
    #[error("{0}")]
    Steps(String),
}

/// The fields of diffusers' `scheduler_config.json` the samplers read.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default = "default_prediction")]
    pub prediction_type: String,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "default_spacing")]
    pub timestep_spacing: String,
    #[serde(default = "default_lcm_steps")]
    pub original_inference_steps: usize,
    #[serde(default = "default_timestep_scaling")]
    pub timestep_scaling: f64,
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub use_karras_sigmas: bool,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

fn default_train_steps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.00085
}
fn default_beta_end() -> f64 {
    0.012
}
fn default_beta_schedule() -> String {
    "scaled_linear".into()
}
fn default_prediction() -> String {
    "epsilon".into()
}
fn default_spacing() -> String {
    "linspace".into()
}
fn default_lcm_steps() -> usize {
    50
}
fn default_timestep_scaling() -> f64 {
    10.0
}
fn default_true() -> bool {
    true
}

/// Which sampler runs the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampler {
    Euler,
    EulerAncestral,
    /// Deterministic DDIM (eta 0; `x0` never clipped, as SD's scheduler configs set it).
    Ddim,
    Lcm,
}

impl Sampler {
    /// The sampler a scheduler class name stands for (`EulerDiscreteScheduler`, …); the
    /// schedulers SD folders ship that are not implemented here (PNDM, DPM-Solver, …) run as
    /// Euler, which samples the same trained schedule (as A1111 and ComfyUI let any sampler do).
    pub fn for_class(name: &str) -> Self {
        match name {
            "LCMScheduler" => Self::Lcm,
            "DDIMScheduler" => Self::Ddim,
            "EulerAncestralDiscreteScheduler" => Self::EulerAncestral,
            _ => Self::Euler,
        }
    }

    /// A sampler by the names clients send (`euler`, `euler_a`, `ddim`, `lcm`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().replace([' ', '-'], "_").as_str() {
            "euler" => Some(Self::Euler),
            "euler_a" | "euler_ancestral" => Some(Self::EulerAncestral),
            "ddim" => Some(Self::Ddim),
            "lcm" => Some(Self::Lcm),
            _ => None,
        }
    }
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
}

/// The model's training schedule: `ᾱ_t` for every training timestep.
#[derive(Debug, Clone)]
pub struct TrainingSchedule {
    alphas_cumprod: Vec<f64>,
    config: SchedulerConfig,
    prediction: Prediction,
}

impl TrainingSchedule {
    pub fn new(config: SchedulerConfig) -> Result<Self, ScheduleError> {
        let n = config.num_train_timesteps;
        if !(2..=100_000).contains(&n) {
            return Err(ScheduleError::Config(format!("num_train_timesteps {n} is out of range")));
        }
        if !(config.beta_start > 0.0 && config.beta_end < 1.0 && config.beta_start <= config.beta_end) {
            return Err(ScheduleError::Config(format!(
                "betas {}..{} are out of range",
                config.beta_start, config.beta_end
            )));
        }
        if config.rescale_betas_zero_snr || config.use_karras_sigmas {
            return Err(ScheduleError::Config("zero-SNR and Karras schedules are not supported".into()));
        }
        let prediction = match config.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            other => return Err(ScheduleError::Config(format!("prediction_type `{other}` is not supported"))),
        };
        // As torch computes them: in f32 (the sigmas a model was sampled with carry its rounding).
        let betas: Vec<f32> = match config.beta_schedule.as_str() {
            "scaled_linear" => linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| {
                    let b = b as f32;
                    b * b
                })
                .collect(),
            "linear" => linspace(config.beta_start, config.beta_end, n).into_iter().map(|b| b as f32).collect(),
            other => return Err(ScheduleError::Config(format!("beta_schedule `{other}` is not supported"))),
        };
        let mut product = 1f32;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                product *= 1.0 - b;
                f64::from(product)
            })
            .collect();
        Ok(Self { alphas_cumprod, config, prediction })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The schedule `sampler` runs in `steps` steps.
    pub fn plan(&self, sampler: Sampler, steps: usize) -> Result<Plan, ScheduleError> {
        let n = self.config.num_train_timesteps;
        if steps == 0 || steps > n {
            return Err(ScheduleError::Steps(format!("steps must be between 1 and {n}, not {steps}")));
        }
        match sampler {
            Sampler::Euler | Sampler::EulerAncestral => self.euler_plan(steps, sampler == Sampler::EulerAncestral),
            Sampler::Ddim => self.ddim_plan(steps),
            Sampler::Lcm => self.lcm_plan(steps),
        }
    }

    /// diffusers' `DDIMScheduler.set_timesteps`: whole timesteps by `timestep_spacing`; each
    /// step goes to `t − num_train_timesteps / steps`.
    fn ddim_plan(&self, steps: usize) -> Result<Plan, ScheduleError> {
        let n = self.config.num_train_timesteps;
        let timesteps = self.spaced(steps, true)?;
        Ok(Plan { kind: PlanKind::Ddim { stride: (n / steps) as f64 }, timesteps, init_noise_sigma: 1.0 })
    }

    /// `ᾱ` after the last training step (DDIM's and LCM's `final_alpha_cumprod`).
    fn final_alpha(&self) -> f64 {
        if self.config.set_alpha_to_one { 1.0 } else { self.alphas_cumprod[0] }
    }

    /// `steps` timesteps by `timestep_spacing`, as Euler's and DDIM's `set_timesteps` space them
    /// (DDIM rounds `linspace`'s to whole steps; Euler keeps them fractional).
    fn spaced(&self, steps: usize, whole: bool) -> Result<Vec<f64>, ScheduleError> {
        let n = self.config.num_train_timesteps;
        Ok(match self.config.timestep_spacing.as_str() {
            "linspace" => linspace(0.0, (n - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(|t| if whole { t.round_ties_even() } else { t })
                .collect(),
            "leading" => {
                let ratio = n / steps;
                (0..steps).rev().map(|i| (i * ratio + self.config.steps_offset) as f64).collect()
            }
            "trailing" => {
                let ratio = n as f64 / steps as f64;
                (0..steps).map(|i| (n as f64 - i as f64 * ratio).round_ties_even() - 1.0).collect()
            }
            other => return Err(ScheduleError::Config(format!("timestep_spacing `{other}` is not supported"))),
        })
    }

    /// diffusers' `EulerDiscreteScheduler.set_timesteps`: timesteps by `timestep_spacing`, the
    /// sigmas interpolated at them, a final 0.
    fn euler_plan(&self, steps: usize, ancestral: bool) -> Result<Plan, ScheduleError> {
        let timesteps = self.spaced(steps, false)?;
        let all: Vec<f64> = self.alphas_cumprod.iter().map(|a| ((1.0 - a) / a).sqrt()).collect();
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interpolate(&all, t)).collect();
        sigmas.push(0.0);
        // As the pipeline stores them: f32.
        let sigmas: Vec<f64> = sigmas.into_iter().map(|s| f64::from(s as f32)).collect();
        let max = sigmas.iter().copied().fold(0.0, f64::max);
        let init_noise_sigma = match self.config.timestep_spacing.as_str() {
            "linspace" | "trailing" => max,
            _ => (max * max + 1.0).sqrt(),
        };
        let timesteps = timesteps.into_iter().map(|t| f64::from(t as f32)).collect();
        Ok(Plan { kind: PlanKind::Euler { sigmas, ancestral }, timesteps, init_noise_sigma })
    }

    /// diffusers' `LCMScheduler.set_timesteps`: `steps` of the `original_inference_steps`
    /// schedule the model was distilled on, evenly spaced by index.
    fn lcm_plan(&self, steps: usize) -> Result<Plan, ScheduleError> {
        let n = self.config.num_train_timesteps;
        let original = self.config.original_inference_steps;
        if original == 0 || original > n {
            return Err(ScheduleError::Config(format!("original_inference_steps {original} is out of range")));
        }
        if steps > original {
            return Err(ScheduleError::Steps(format!(
                "an LCM model takes at most {original} steps (its original_inference_steps), not {steps}"
            )));
        }
        let k = n / original;
        let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
        let timesteps: Vec<f64> =
            (0..steps).map(|i| origin[(i as f64 * original as f64 / steps as f64).floor() as usize] as f64).collect();
        Ok(Plan { kind: PlanKind::Lcm, timesteps, init_noise_sigma: 1.0 })
    }

    fn alpha_cumprod(&self, t: f64) -> f64 {
        self.alphas_cumprod[(t as usize).min(self.alphas_cumprod.len() - 1)]
    }

    /// The coefficients of step `i` of `plan`: the next latents are
    /// `sample·sample_coeff + model_output·output_coeff + noise·noise_coeff`.
    pub fn step(&self, plan: &Plan, i: usize) -> Step {
        let last = i + 1 == plan.timesteps.len();
        match &plan.kind {
            PlanKind::Euler { sigmas, ancestral } => {
                let (sigma, next) = (sigmas[i], sigmas[i + 1]);
                // x0 = sample − σ·ε (epsilon) or, for v-prediction, c_out·v + c_skip·sample of
                // the scaled input (diffusers' `sample * (-σ / √(σ²+1)) + model_output / (σ²+1)`).
                let (x0_sample, x0_output) = match self.prediction {
                    Prediction::Epsilon => (1.0, -sigma),
                    Prediction::VPrediction => {
                        let s2 = sigma * sigma + 1.0;
                        (1.0 / s2, -sigma / s2.sqrt())
                    }
                };
                // Ancestral: step down to σ_down, then add noise of σ_up (diffusers' formulas).
                let (target, noise) = if *ancestral && next > 0.0 {
                    let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
                    ((next * next - up * up).sqrt(), up)
                } else {
                    (next, 0.0)
                };
                // prev = sample + (sample − x0)/σ · (target − σ).
                let dt = target - sigma;
                let derivative_sample = (1.0 - x0_sample) / sigma;
                let derivative_output = -x0_output / sigma;
                Step {
                    input_scale: 1.0 / (sigma * sigma + 1.0).sqrt(),
                    sample_coeff: 1.0 + derivative_sample * dt,
                    output_coeff: derivative_output * dt,
                    noise_coeff: noise,
                }
            }
            PlanKind::Ddim { stride } => {
                let t = plan.timesteps[i];
                let prev = t - stride;
                let (a, a_prev) =
                    (self.alpha_cumprod(t), if prev >= 0.0 { self.alpha_cumprod(prev) } else { self.final_alpha() });
                let (sa, sb, sa_prev, sb_prev) = (a.sqrt(), (1.0 - a).sqrt(), a_prev.sqrt(), (1.0 - a_prev).sqrt());
                // x0 and ε from the sample and the output; the step is √ᾱ_prev·x0 + √(1−ᾱ_prev)·ε.
                let ((x0_sample, x0_output), (eps_sample, eps_output)) = match self.prediction {
                    Prediction::Epsilon => ((1.0 / sa, -sb / sa), (0.0, 1.0)),
                    Prediction::VPrediction => ((sa, -sb), (sb, sa)),
                };
                Step {
                    input_scale: 1.0,
                    sample_coeff: sa_prev * x0_sample + sb_prev * eps_sample,
                    output_coeff: sa_prev * x0_output + sb_prev * eps_output,
                    noise_coeff: 0.0,
                }
            }
            PlanKind::Lcm => {
                let t = plan.timesteps[i];
                let a = self.alpha_cumprod(t);
                let prev = if last { t } else { plan.timesteps[i + 1] };
                let a_prev = if prev >= 0.0 { self.alpha_cumprod(prev) } else { self.final_alpha() };
                let scaled = t * self.config.timestep_scaling;
                let c_skip = 0.25 / (scaled * scaled + 0.25);
                let c_out = scaled / (scaled * scaled + 0.25).sqrt();
                let (x0_sample, x0_output) = match self.prediction {
                    Prediction::Epsilon => (1.0 / a.sqrt(), -(1.0 - a).sqrt() / a.sqrt()),
                    Prediction::VPrediction => (a.sqrt(), -(1.0 - a).sqrt()),
                };
                // denoised = c_out·x0 + c_skip·sample.
                let (d_sample, d_output) = (c_out * x0_sample + c_skip, c_out * x0_output);
                let (keep, noise) = if last { (1.0, 0.0) } else { (a_prev.sqrt(), (1.0 - a_prev).sqrt()) };
                Step {
                    input_scale: 1.0,
                    sample_coeff: keep * d_sample,
                    output_coeff: keep * d_output,
                    noise_coeff: noise,
                }
            }
        }
    }
}

/// The steps a sampler takes.
#[derive(Debug, Clone)]
pub struct Plan {
    kind: PlanKind,
    /// The timestep the model is told at each step.
    pub timesteps: Vec<f64>,
    /// The initial noise's scale.
    pub init_noise_sigma: f64,
}

#[derive(Debug, Clone)]
enum PlanKind {
    Euler {
        sigmas: Vec<f64>,
        ancestral: bool,
    },
    /// Each step goes `stride` training steps down.
    Ddim {
        stride: f64,
    },
    Lcm,
}

impl Plan {
    /// The sigmas of an Euler plan (`None` for DDIM and LCM).
    pub fn sigmas(&self) -> Option<&[f64]> {
        match &self.kind {
            PlanKind::Euler { sigmas, .. } => Some(sigmas),
            PlanKind::Ddim { .. } | PlanKind::Lcm => None,
        }
    }
}

/// One step's arithmetic, linear in the sample, the model's output and fresh noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The model's input is the sample times this (Euler's `scale_model_input`).
    pub input_scale: f64,
    pub sample_coeff: f64,
    pub output_coeff: f64,
    /// 0: the step draws no noise.
    pub noise_coeff: f64,
}

/// numpy's `linspace(start, end, n)` (endpoint included).
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| if i + 1 == n { end } else { start + step * i as f64 }).collect()
}

/// numpy's `interp(t, arange(len), values)`.
fn interpolate(values: &[f64], t: f64) -> f64 {
    let last = values.len() - 1;
    if t <= 0.0 {
        return values[0];
    }
    if t >= last as f64 {
        return values[last];
    }
    let lo = t.floor() as usize;
    let frac = t - lo as f64;
    values[lo] + (values[lo + 1] - values[lo]) * frac
}
