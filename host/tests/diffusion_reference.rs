//! Stable Diffusion pinned to diffusers: the tiny SD 1.x pipeline (`tests/fixtures/diffusion/`,
//! made by `make_tiny_sd.py` with random weights, every norm and bias random) gets diffusers'
//! token ids, text embeddings, first UNet output, latents after every step and decoded image
//! (≤ 1e-3 on latents, ≤ 1 in 255 on pixels) for a fixed prompt in 4 steps — Euler and DDIM
//! with classifier-free guidance, and LCM without — on flex and on wgpu. The sampler's noise is
//! replayed from the reference (torch's generator is not Hearth's); the schedules every
//! sampler and spacing makes are checked against diffusers' too.

mod common;

use hearth::diffusion::schedule::{Sampler, SchedulerConfig, TrainingSchedule};
use hearth::diffusion::{ImageRequest, Noise, Pipeline, to_rgb};
use hearth::model::{self, DeviceChoice};
use serde_json::Value;

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo_root().join("tests/fixtures/diffusion").join(name)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("sd_reference.json")).expect("reference");
    serde_json::from_str(&text).expect("reference json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn values(v: &Value) -> Vec<f32> {
    floats(&v["values"])
}

/// The largest difference, scaled down where the values are large (latents under guidance
/// reach ±50: there f32's own rounding passes 1e-3).
fn worst(ours: &[f32], want: &[f32]) -> f32 {
    assert_eq!(ours.len(), want.len(), "lengths");
    ours.iter().zip(want).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0f32, f32::max)
}

/// The reference's draws, in order.
struct Replay {
    draws: Vec<Vec<f32>>,
    next: usize,
}

impl Noise for Replay {
    fn normal(&mut self, len: usize) -> Vec<f32> {
        let draw = self.draws.get(self.next).cloned().expect("no more reference draws");
        assert_eq!(draw.len(), len, "draw {} has another shape", self.next);
        self.next += 1;
        draw
    }
}

fn load(device: DeviceChoice) -> Pipeline {
    let dev = model::device::select(device).expect("device opens");
    Pipeline::load(&fixture("tiny-sd"), &dev.device).expect("the tiny pipeline loads")
}

fn matches_diffusers(device: DeviceChoice, run: &str, sampler: Sampler) {
    let reference = reference();
    let r = &reference["runs"][run];
    let mut pipeline = load(device);
    // The run's own scheduler config (DDIM's sets set_alpha_to_one off, as SD's configs do).
    let config: SchedulerConfig = serde_json::from_value(r["scheduler_config"].clone()).expect("scheduler config");
    pipeline.schedule = TrainingSchedule::new(config).expect("schedule");
    let prompt = reference["prompt"].as_str().expect("prompt");
    let negative = r["negative_prompt"].as_str().unwrap_or_default();
    let guidance = r["guidance_scale"].as_f64().expect("guidance");
    let guided = guidance > 1.0;

    let ids = pipeline.tokenizer.encode(prompt).expect("tokenizes");
    let want_ids: Vec<u32> = r["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(ids, want_ids, "the prompt's ids");
    let cond = pipeline.encode_prompt(prompt).expect("encodes");
    let cond_values = cond.clone().into_data().try_to_vec::<f32>().unwrap();
    let e = worst(&cond_values, &values(&r["cond_hidden"]));
    assert!(e <= 1e-3, "text embeddings differ by {e}");

    // The first UNet call, on diffusers' own input.
    let first = &r["unet_first"];
    let dev = cond.device();
    let sample_shape: Vec<usize> =
        first["sample"]["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let sample = burn::tensor::Tensor::<4>::from_data(
        burn::tensor::TensorData::new(
            values(&first["sample"]),
            [sample_shape[0], sample_shape[1], sample_shape[2], sample_shape[3]],
        ),
        &dev,
    );
    let context = if guided {
        let uncond = pipeline.encode_prompt(negative).expect("encodes");
        let uncond_values = uncond.clone().into_data().try_to_vec::<f32>().unwrap();
        let e = worst(&uncond_values, &values(&r["uncond_hidden"]));
        assert!(e <= 1e-3, "negative prompt embeddings differ by {e}");
        burn::tensor::Tensor::cat(vec![uncond, cond], 0)
    } else {
        cond
    };
    let timestep = first["timestep"].as_f64().unwrap();
    let out = pipeline.unet.forward(sample, timestep, &context).expect("unet runs");
    let e = worst(&out.into_data().try_to_vec::<f32>().unwrap(), &values(&first["noise_pred"]));
    assert!(e <= 1e-3, "the first UNet output differs by {e}");

    // The whole run with diffusers' noise: latents after each step, then the image.
    let draws: Vec<Vec<f32>> = r["draws"].as_array().unwrap().iter().map(values).collect();
    let request = ImageRequest {
        prompt: prompt.into(),
        negative_prompt: negative.into(),
        width: 64,
        height: 64,
        steps: r["timesteps"].as_array().unwrap().len(),
        guidance,
        sampler: Some(sampler),
    };
    let mut noise = Replay { draws, next: 0 };
    let mut steps = Vec::new();
    let latents = pipeline
        .denoise(&request, &mut noise, &mut |_, _| {}, &mut |_, l| {
            steps.push(l.clone().into_data().try_to_vec::<f32>().unwrap())
        })
        .expect("denoises");
    assert_eq!(noise.next, noise.draws.len(), "every reference draw used");
    for (i, (ours, want)) in steps.iter().zip(r["steps"].as_array().unwrap()).enumerate() {
        let e = worst(ours, &values(&want["latents"]));
        assert!(e <= 1e-3, "latents after step {i} differ by {e}");
    }
    let pixels = pipeline.vae.decode(latents).expect("decodes");
    let e = worst(&pixels.clone().into_data().try_to_vec::<f32>().unwrap(), &values(&r["vae_output"]));
    assert!(e <= 1e-3, "the decoded image differs by {e}");
    let image = to_rgb(pixels).expect("rgb");
    let want: Vec<u8> = r["image"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    assert_eq!((image.width, image.height), (64, 64));
    let off = image.data.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
    assert!(off <= 1, "pixels differ by up to {off} in 255");
}

#[test]
fn euler_with_guidance_matches_diffusers_on_flex() {
    matches_diffusers(DeviceChoice::Flex, "euler_cfg", Sampler::Euler);
}

#[test]
fn euler_with_a_negative_prompt_matches_diffusers_on_flex() {
    matches_diffusers(DeviceChoice::Flex, "euler_cfg_negative", Sampler::Euler);
}

#[test]
fn lcm_matches_diffusers_on_flex() {
    matches_diffusers(DeviceChoice::Flex, "lcm", Sampler::Lcm);
}

#[test]
fn ddim_with_guidance_matches_diffusers_on_flex() {
    matches_diffusers(DeviceChoice::Flex, "ddim", Sampler::Ddim);
}

#[test]
fn euler_with_guidance_matches_diffusers_on_wgpu() {
    matches_diffusers(DeviceChoice::Wgpu, "euler_cfg", Sampler::Euler);
}

#[test]
fn lcm_matches_diffusers_on_wgpu() {
    matches_diffusers(DeviceChoice::Wgpu, "lcm", Sampler::Lcm);
}

#[test]
fn every_schedule_is_diffusers() {
    let reference = reference();
    let base: Value = reference["runs"]["euler_cfg"]["scheduler_config"].clone();
    for (name, want) in reference["schedules"].as_object().expect("schedules") {
        let mut parts = name.split('_');
        let kind = parts.next().unwrap();
        let (spacing, steps) = match kind {
            "lcm" => ("trailing", parts.next().unwrap()),
            _ => (parts.next().unwrap(), parts.next().unwrap()),
        };
        let mut config = base.clone();
        config["timestep_spacing"] = Value::from(spacing);
        let config: SchedulerConfig = serde_json::from_value(config).expect("config");
        let schedule = TrainingSchedule::new(config).expect("schedule");
        let sampler = if kind == "lcm" { Sampler::Lcm } else { Sampler::Euler };
        let plan = schedule.plan(sampler, steps.parse().unwrap()).expect("plan");
        let timesteps: Vec<f64> = floats(&want["timesteps"]).iter().map(|&t| f64::from(t)).collect();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        assert!(
            plan.timesteps.iter().zip(&timesteps).all(|(a, b)| close(*a, *b))
                && plan.timesteps.len() == timesteps.len(),
            "{name}: timesteps {:?}, diffusers {timesteps:?}",
            plan.timesteps
        );
        if let Some(sigmas) = want.get("sigmas") {
            let sigmas: Vec<f64> = floats(sigmas).iter().map(|&s| f64::from(s)).collect();
            let ours = plan.sigmas().expect("an Euler plan has sigmas");
            assert!(
                ours.iter().zip(&sigmas).all(|(a, b)| close(*a, *b)),
                "{name}: sigmas {ours:?}, diffusers {sigmas:?}"
            );
            let init = want["init_noise_sigma"].as_f64().unwrap();
            assert!(close(plan.init_noise_sigma, init), "{name}: init sigma {} vs {init}", plan.init_noise_sigma);
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_image_and_another_seed_another() {
    let pipeline = load(DeviceChoice::Flex);
    let request = ImageRequest {
        prompt: "a red square".into(),
        negative_prompt: String::new(),
        width: 64,
        height: 64,
        steps: 2,
        guidance: 1.0,
        sampler: None,
    };
    let make = |seed| {
        pipeline.generate(&request, &mut hearth::diffusion::SeededNoise::new(seed), &mut |_, _| {}).expect("generates")
    };
    let (a, b, c) = (make(7), make(7), make(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let odd = ImageRequest { width: 60, ..request.clone() };
    let err = pipeline.generate(&odd, &mut hearth::diffusion::SeededNoise::new(1), &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("multiples of"), "{err}");
}
