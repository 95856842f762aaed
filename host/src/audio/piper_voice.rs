//! A Piper voice's `.onnx.json`: its sample rate, espeak-ng voice, default noise and length
//! scales, and the table from phonemes to the ids the model reads — and that table applied as
//! Piper applies it (`^`, then each phoneme followed by the pad `_`, then `$`).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum VoiceConfigError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a Piper voice config: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    pub audio: AudioConfig,
    #[serde(default)]
    pub espeak: EspeakConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    #[serde(default = "default_phoneme_type")]
    pub phoneme_type: String,
    /// Phonemes replaced before ids are looked up (most voices have none).
    #[serde(default)]
    pub phoneme_map: HashMap<String, Vec<String>>,
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default = "one")]
    pub num_speakers: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AudioConfig {
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EspeakConfig {
    pub voice: String,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        Self { voice: "en-us".into() }
    }
}

/// The voice's sampling defaults, as Piper names them.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InferenceConfig {
    #[serde(default = "noise_scale")]
    pub noise_scale: f32,
    #[serde(default = "one_f32")]
    pub length_scale: f32,
    #[serde(default = "noise_w")]
    pub noise_w: f32,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self { noise_scale: noise_scale(), length_scale: 1.0, noise_w: noise_w() }
    }
}

fn default_phoneme_type() -> String {
    "espeak".into()
}
fn one() -> usize {
    1
}
fn one_f32() -> f32 {
    1.0
}
// Piper's defaults when a config leaves them out.
fn noise_scale() -> f32 {
    0.667
}
fn noise_w() -> f32 {
    0.8
}

/// Beginning of sentence, end of sentence and the pad placed after every phoneme.
const BOS: &str = "^";
const EOS: &str = "$";
const PAD: &str = "_";

impl VoiceConfig {
    pub fn open(path: &Path) -> Result<Self, VoiceConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| VoiceConfigError::Io { path: path.display().to_string(), source })?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| VoiceConfigError::Invalid { path: path.display().to_string(), reason: e.to_string() })?;
        let invalid = |reason: String| VoiceConfigError::Invalid { path: path.display().to_string(), reason };
        for symbol in [BOS, EOS, PAD] {
            if !config.phoneme_id_map.contains_key(symbol) {
                return Err(invalid(format!("phoneme_id_map has no `{symbol}`")));
            }
        }
        if config.audio.sample_rate == 0 {
            return Err(invalid("audio.sample_rate is 0".into()));
        }
        if config.phoneme_type != "espeak" && config.phoneme_type != "text" {
            return Err(invalid(format!(
                "phoneme_type `{}` needs a phonemizer Hearth does not have (it has espeak and text)",
                config.phoneme_type
            )));
        }
        Ok(config)
    }

    /// The ids of one sentence's phonemes (each a code point, as the phonemizer split them);
    /// phonemes the voice has no id for are left out, as Piper leaves them out. Also returns
    /// how many were left out.
    pub fn phoneme_ids(&self, phonemes: &[String]) -> (Vec<i64>, usize) {
        let map = &self.phoneme_id_map;
        let pad = &map[PAD];
        let mut ids = map[BOS].clone();
        ids.extend_from_slice(pad);
        let mut missing = 0;
        for phoneme in phonemes {
            let mapped = self.phoneme_map.get(phoneme).map(|v| v.as_slice()).unwrap_or(std::slice::from_ref(phoneme));
            for p in mapped {
                match map.get(p) {
                    Some(id) => {
                        ids.extend_from_slice(id);
                        ids.extend_from_slice(pad);
                    }
                    None => missing += 1,
                }
            }
        }
        ids.extend_from_slice(&map[EOS]);
        (ids, missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VoiceConfig {
        serde_json::from_value(serde_json::json!({
            "audio": {"sample_rate": 22050},
            "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14], "b": [15], "ɪ": [74]},
            "phoneme_map": {"x": ["a", "b"]},
        }))
        .unwrap()
    }

    #[test]
    fn ids_interleave_the_pad_between_bos_and_eos() {
        let c = config();
        let phonemes: Vec<String> = ["a", " ", "ɪ", "?", "x"].iter().map(|s| s.to_string()).collect();
        let (ids, missing) = c.phoneme_ids(&phonemes);
        assert_eq!(ids, vec![1, 0, 14, 0, 3, 0, 74, 0, 14, 0, 15, 0, 2]);
        assert_eq!(missing, 1);
        assert_eq!(c.inference.noise_w, 0.8);
        assert_eq!(c.espeak.voice, "en-us");
    }
}
