//! Speech: the pieces `/v1/audio/*` is built from — Whisper for transcription (CTranslate2's
//! `model.bin` or a Hugging Face folder, the log-mel front end, decoding) and Piper's VITS for
//! speech (the `.onnx` weights, espeak-ng phonemes, the model) — and telling a speech model's
//! folder from a chat model's.

pub mod ctranslate2;
pub mod decode;
pub mod espeak;
pub mod hf_whisper;
pub mod mel;
pub mod onnx;
pub mod opus;
pub mod piper_voice;
pub mod speech_format;
pub mod spline;
pub mod transcribe;
pub mod vits;
pub mod voice;
pub mod whisper;
pub mod word_timing;

use std::path::Path;

/// Whether `dir` holds a Whisper model: a CTranslate2 `model.bin` of `WhisperSpec`, or a
/// Hugging Face `config.json` whose `model_type` is `whisper`.
pub fn is_speech_folder(dir: &Path) -> bool {
    let ct2 = dir.join("model.bin");
    if ct2.is_file() {
        return ctranslate2::Ct2Model::open(&ct2).is_ok_and(|m| m.spec == "WhisperSpec");
    }
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|c| c.get("model_type").and_then(serde_json::Value::as_str) == Some("whisper"))
}

/// A sine of `hz` at half scale, `seconds` long at `rate`: the tests' test signal.
#[cfg(test)]
pub(crate) fn tone(rate: u32, hz: f32, seconds: f32) -> Vec<f32> {
    (0..(rate as f32 * seconds) as usize)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
        .collect()
}
