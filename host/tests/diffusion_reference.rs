//! Stable Diffusion pinned to diffusers: the tiny SD 1.x pipeline (`tests/fixtures/diffusion/`,
//! made by `make_tiny_sd.py` with random weights, every norm and bias random) gets diffusers'
//! token ids, text embeddings, first UNet output, latents after every step and decoded image
//! (≤ 1e-3 on latents, ≤ 1 in 255 on pixels) for a fixed prompt in 4 steps — Euler and DDIM
//! with classifier-free guidance, and LCM without — on flex and on wgpu. The sampler's noise is
//! replayed from the reference (torch's generator is not Hearth's); the schedules every
//! sampler and spacing makes are checked against diffusers' too. The single-file checkpoints
//! (`tiny-sd.safetensors` read with the folder as its config; `tiny-sd2/`, SD 2.x-shaped with
//! OpenCLIP and v-prediction, read with nothing but its yaml and tokenizer) give the same numbers.

mod common;

use std::ops::ControlFlow;

use hearth::diffusion::schedule::{Sampler, SchedulerConfig, TrainingSchedule};
use hearth::diffusion::{ImageRequest, Noise, Pipeline, to_rgb};
use hearth::model::{self, DeviceChoice};
use serde_json::Value;

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo_root().join("tests/fixtures/diffusion").join(name)
}

fn reference() -> Value {
    reference_in("sd_reference.json")
}

fn reference_in(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("reference");
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
    open(device, "tiny-sd", None)
}

/// The fixture `path` (a folder or a single file), described by the folder `config` if given.
fn open(device: DeviceChoice, path: &str, config: Option<&str>) -> Pipeline {
    let dev = model::device::select(device).expect("device opens");
    let config = config.map(fixture);
    Pipeline::open(&fixture(path), config.as_deref(), &dev.device).expect("the tiny pipeline loads")
}

fn matches_diffusers(device: DeviceChoice, run: &str, sampler: Sampler) {
    let mut pipeline = load(device);
    // The run's own scheduler config (DDIM's sets set_alpha_to_one off, as SD's configs do).
    let reference = reference();
    let config: SchedulerConfig =
        serde_json::from_value(reference["runs"][run]["scheduler_config"].clone()).expect("scheduler config");
    pipeline.schedule = TrainingSchedule::new(config).expect("schedule");
    pipeline_matches(&pipeline, &reference, run, sampler);
}

/// `pipeline` gives the reference `run`'s ids, states, latents and pixels.
fn pipeline_matches(pipeline: &Pipeline, reference: &Value, run: &str, sampler: Sampler) {
    let r = &reference["runs"][run];
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
    let conditioning = pipeline.condition(&request).expect("encodes");
    let latents = pipeline
        .denoise(&request, &conditioning, &mut noise, &mut |_, _| ControlFlow::Continue(()), &mut |_, l| {
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
fn the_single_file_read_with_its_folder_as_config_matches_diffusers_on_flex() {
    // make_tiny_sd.py checks diffusers' from_single_file(config=tiny-sd) reads it to the folder's tensors.
    let pipeline = open(DeviceChoice::Flex, "tiny-sd.safetensors", Some("tiny-sd"));
    pipeline_matches(&pipeline, &reference(), "euler_cfg_negative", Sampler::Euler);
}

/// The SD 2.x-shaped single file, everything inferred (OpenCLIP's penultimate block, 16-wide
/// heads and v-prediction from the yaml beside it, `!` padding, f16 weights), against diffusers.
fn sd2_single_file_matches(device: DeviceChoice) {
    let pipeline = open(device, "tiny-sd2/tiny-sd2.safetensors", None);
    let reference = reference_in("sd2_reference.json");
    let want = &reference["runs"]["euler_cfg_negative"]["scheduler_config"];
    let got = pipeline.schedule.config();
    assert_eq!(got.prediction_type, want["prediction_type"].as_str().unwrap());
    assert_eq!(got.timestep_spacing, want["timestep_spacing"].as_str().unwrap());
    assert_eq!(got.steps_offset as u64, want["steps_offset"].as_u64().unwrap());
    assert_eq!(
        (got.beta_start, got.beta_end),
        (want["beta_start"].as_f64().unwrap(), want["beta_end"].as_f64().unwrap())
    );
    assert_eq!(pipeline.native_size(), 64, "the yaml's image_size (8) times the VAE's 8");
    pipeline_matches(&pipeline, &reference, "euler_cfg_negative", Sampler::Euler);
}

#[test]
fn sd2_single_file_matches_diffusers_on_flex() {
    sd2_single_file_matches(DeviceChoice::Flex);
}

#[test]
fn sd2_single_file_matches_diffusers_on_wgpu() {
    sd2_single_file_matches(DeviceChoice::Wgpu);
}

#[test]
fn single_files_that_cannot_be_read_are_clear_errors() {
    let dev = model::device::select(DeviceChoice::Flex).expect("device opens");
    let dir = tempfile::tempdir().expect("temp dir");
    let err = |path: &std::path::Path| match Pipeline::open(path, None, &dev.device) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    };
    let sd2 = fixture("tiny-sd2/tiny-sd2.safetensors");

    let pickled = dir.path().join("model.ckpt");
    std::fs::write(&pickled, b"PK\x03\x04").unwrap();
    assert!(err(&pickled).contains("pickled"), "{}", err(&pickled));

    let unet_only = fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors");
    assert!(err(&unet_only).contains("not a Stable Diffusion 1.x/2.x checkpoint"), "{}", err(&unet_only));

    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&sd2).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(!err(&truncated).is_empty());

    // Alone: no tokenizer beside it.
    let alone = dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(&sd2, alone.join("sd2.safetensors")).unwrap();
    let e = err(&alone.join("sd2.safetensors"));
    assert!(e.contains("tokenizer/ folder beside"), "{e}");

    // With its tokenizer but not its yaml: SD 2.x's 64-wide heads do not fit 32 channels.
    let tokenizer = alone.join("tokenizer");
    std::fs::create_dir(&tokenizer).unwrap();
    for name in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture("tiny-sd2/tokenizer").join(name), tokenizer.join(name)).unwrap();
    }
    let e = err(&alone.join("sd2.safetensors"));
    assert!(e.contains("heads") && e.contains(".yaml"), "{e}");

    // A yaml that is not YAML.
    std::fs::write(alone.join("sd2.yaml"), "model: [").unwrap();
    let e = err(&alone.join("sd2.yaml").with_extension("safetensors"));
    assert!(e.contains("sd2.yaml"), "{e}");

    // A config folder that is not a diffusers folder.
    let e = match Pipeline::open(&sd2, Some(dir.path()), &dev.device) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("not a diffusers folder"), "{e}");
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
        pipeline
            .generate(&request, &mut hearth::diffusion::SeededNoise::new(seed), &mut |_, _| ControlFlow::Continue(()))
            .expect("generates")
    };
    let (a, b, c) = (make(7), make(7), make(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let odd = ImageRequest { width: 60, ..request.clone() };
    let err = pipeline
        .generate(&odd, &mut hearth::diffusion::SeededNoise::new(1), &mut |_, _| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.to_string().contains("multiples of"), "{err}");
}
