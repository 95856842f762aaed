//! A Piper voice speaking text, as piper-tts speaks it: the text phonemized sentence by sentence
//! ([`super::espeak`]), each sentence's ids through VITS ([`super::vits`]) and scaled to full
//! range (piper-tts's `normalize_audio`), the sentences one after another.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::espeak::{self, EspeakError};
use super::onnx::OnnxWeights;
use super::piper_voice::{VoiceConfig, VoiceConfigError};
use super::vits::{Scales, Vits, VitsError};

/// Longest sentence synthesized in one pass, in phonemes: attention grows with the square of
/// the length, so a longer one is cut at a word boundary.
const MAX_SENTENCE_PHONEMES: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error(transparent)]
    Config(#[from] VoiceConfigError),
    #[error(transparent)]
    Model(#[from] VitsError),
    #[error(transparent)]
    Phonemes(#[from] EspeakError),
}

/// How to speak: OpenAI's `speed`, Piper's noise scales (the voice's when `None`), and a seed
/// for the noise (fresh when `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakOptions {
    pub speed: f32,
    pub noise_scale: Option<f32>,
    pub noise_w: Option<f32>,
    pub seed: Option<u64>,
}

impl Default for SpeakOptions {
    fn default() -> Self {
        Self { speed: 1.0, noise_scale: None, noise_w: None, seed: None }
    }
}

pub struct Voice {
    pub config: VoiceConfig,
    vits: Vits,
}

/// A voice's config: `<voice>.onnx.json` beside `<voice>.onnx`.
pub fn config_path(onnx: &Path) -> PathBuf {
    let mut name = onnx.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

impl Voice {
    /// Loads `<voice>.onnx` and its `.onnx.json` onto `device`.
    pub fn load(onnx: &Path, device: &Device) -> Result<Self, VoiceError> {
        let config = VoiceConfig::open(&config_path(onnx))?;
        if config.num_speakers > 1 {
            return Err(VitsError::Unsupported(
                "multi-speaker voices are not supported yet; use a single-speaker Piper voice".into(),
            )
            .into());
        }
        let weights = OnnxWeights::open(onnx).map_err(VitsError::from)?;
        let vits = Vits::load(&weights, device)?;
        Ok(Self { config, vits })
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.audio.sample_rate
    }

    /// The phoneme ids of each sentence of `text`, over-long sentences cut at a word boundary.
    pub fn sentences(&self, text: &str) -> Result<Vec<Vec<i64>>, VoiceError> {
        let sentences = match self.config.phoneme_type.as_str() {
            "text" => espeak::text_phonemes(text),
            _ => espeak::phonemize(&self.config.espeak.voice, text)?,
        };
        let mut out = Vec::new();
        for sentence in sentences {
            for part in split_long(&sentence, MAX_SENTENCE_PHONEMES) {
                let (ids, missing) = self.config.phoneme_ids(part);
                if missing > 0 {
                    // Counted, not shown: phonemes are the text in another spelling.
                    tracing::debug!(missing, "phonemes the voice has no id for were left out");
                }
                // `^ _ $` alone says nothing.
                if ids.len() > 3 {
                    out.push(ids);
                }
            }
        }
        Ok(out)
    }

    /// Speaks `sentences` (from [`Voice::sentences`]), handing each one's samples (`[-1, 1]`,
    /// at [`Voice::sample_rate`]) to `on_sentence` as it is ready (false stops); the number of
    /// samples spoken.
    pub fn speak(
        &self,
        sentences: &[Vec<i64>],
        options: SpeakOptions,
        on_sentence: &mut dyn FnMut(Vec<f32>) -> bool,
    ) -> Result<usize, VoiceError> {
        let defaults = self.config.inference;
        let scales = Scales {
            noise: options.noise_scale.unwrap_or(defaults.noise_scale),
            length: defaults.length_scale / options.speed,
            noise_w: options.noise_w.unwrap_or(defaults.noise_w),
        };
        let mut rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut spoken = 0;
        for ids in sentences {
            let mut audio = self.vits.synthesize(ids, scales, &mut rng)?;
            let peak = audio.iter().fold(0f32, |m, s| m.max(s.abs()));
            if peak > 1e-8 {
                audio.iter_mut().for_each(|s| *s /= peak);
            }
            spoken += audio.len();
            if !on_sentence(audio) {
                break;
            }
        }
        Ok(spoken)
    }
}

/// `phonemes` in pieces of at most `max`, each cut after the last space within it (or at `max`
/// when there is none).
fn split_long(phonemes: &[String], max: usize) -> Vec<&[String]> {
    let mut parts = Vec::new();
    let mut rest = phonemes;
    while rest.len() > max {
        let cut = rest[..max].iter().rposition(|p| p == " ").filter(|&i| i > 0).map_or(max, |i| i + 1);
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sentences_are_cut_after_a_space() {
        let phonemes: Vec<String> = "ab cd ef gh".chars().map(String::from).collect();
        let parts = split_long(&phonemes, 4);
        let joined: Vec<String> = parts.iter().map(|p| p.concat()).collect();
        assert_eq!(joined, vec!["ab ", "cd ", "ef ", "gh"]);
        let no_space: Vec<String> = "abcdefghij".chars().map(String::from).collect();
        assert_eq!(split_long(&no_space, 4).len(), 3);
        assert!(split_long(&[], 4).is_empty());
    }

    #[test]
    fn a_voices_config_sits_beside_its_onnx() {
        assert_eq!(config_path(Path::new("/m/en_US-joe-medium.onnx")), PathBuf::from("/m/en_US-joe-medium.onnx.json"));
    }
}
