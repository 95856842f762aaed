//! Speech to text with a Whisper model folder (CTranslate2's layout, as faster-whisper uses):
//! audio in 30 s windows, each encoded once and decoded greedily from Whisper's prompt
//! (`<|startofprev|>` and the caller's prompt, `<|startoftranscript|>`, the language and task
//! on multilingual models, `<|notimestamps|>`), with the model's suppressed tokens masked and
//! blank or immediate-end starts refused, as Whisper decodes.
//!
//! Not yet: timestamp tokens (segments are the 30 s windows), the temperature fallback, the
//! no-speech probability, and language detection (multilingual models assume the given
//! language, else English).

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use super::ctranslate2::Ct2Model;
use super::decode::Audio;
use super::mel::{MelFrontEnd, WINDOW_SAMPLES};
use super::whisper::{DecoderCache, Whisper, WhisperError};

/// Most tokens decoded in one window (Whisper's `sample_len`: half the text context).
const MAX_WINDOW_TOKENS: usize = 224;

#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error(transparent)]
    Model(#[from] WhisperError),
    #[error("{path}: {reason}")]
    Folder { path: String, reason: String },
    #[error("the language `{0}` is not one this model knows")]
    Language(String),
}

/// One decoded window.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    /// Mean log-probability of the window's tokens.
    pub avg_logprob: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub segments: Vec<Segment>,
}

/// Special token ids, read from the tokenizer.
struct Specials {
    end: u32,
    start: u32,
    previous: Option<u32>,
    no_timestamps: u32,
    transcribe: Option<u32>,
}

pub struct Transcriber {
    whisper: Whisper,
    tokenizer: tokenizers::Tokenizer,
    front: MelFrontEnd,
    specials: Specials,
    suppress: Vec<u32>,
    suppress_at_start: Vec<u32>,
    /// Multilingual models take a language token; English-only ones do not.
    multilingual: bool,
}

impl Transcriber {
    /// Loads `dir` (`model.bin`, `tokenizer.json`, `config.json`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, TranscribeError> {
        let folder = |reason: String| TranscribeError::Folder { path: dir.display().to_string(), reason };
        let model = Ct2Model::open(&dir.join("model.bin")).map_err(|e| folder(e.to_string()))?;
        let whisper = Whisper::load_ct2(&model, device)?;
        let tokenizer =
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| folder(e.to_string()))?;
        let config: Value = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let ids = |key: &str| -> Vec<u32> {
            config
                .get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect())
                .unwrap_or_default()
        };
        let token = |t: &str| tokenizer.token_to_id(t);
        let need = |t: &str| token(t).ok_or_else(|| folder(format!("the tokenizer has no `{t}`")));
        let specials = Specials {
            end: need("<|endoftext|>")?,
            start: need("<|startoftranscript|>")?,
            previous: token("<|startofprev|>"),
            no_timestamps: need("<|notimestamps|>")?,
            transcribe: token("<|transcribe|>"),
        };
        // English-only checkpoints have one token fewer than multilingual ones (51,864).
        let multilingual = whisper.dims.vocab >= 51_865;
        let front = MelFrontEnd::new(whisper.dims.mel_bands);
        let suppress_at_start = match ids("suppress_ids_begin") {
            v if v.is_empty() => vec![specials.end],
            v => v,
        };
        Ok(Self { whisper, tokenizer, front, specials, suppress: ids("suppress_ids"), suppress_at_start, multilingual })
    }

    /// The prompt of every window: the caller's text as previous context, then Whisper's
    /// start tokens.
    fn prompt(&self, language: &str, previous: Option<&str>) -> Result<Vec<u32>, TranscribeError> {
        let mut tokens = Vec::new();
        if let (Some(text), Some(prev)) = (previous.filter(|t| !t.trim().is_empty()), self.specials.previous) {
            let encoded = self
                .tokenizer
                .encode(format!(" {}", text.trim()), false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default();
            // Whisper keeps the last half of the text context for previous text.
            let keep = self.whisper.dims.text_positions / 2 - 1;
            tokens.push(prev);
            tokens.extend(encoded.iter().skip(encoded.len().saturating_sub(keep)));
        }
        tokens.push(self.specials.start);
        if self.multilingual {
            let id = self
                .tokenizer
                .token_to_id(&format!("<|{language}|>"))
                .ok_or_else(|| TranscribeError::Language(language.to_owned()))?;
            tokens.push(id);
            tokens.extend(self.specials.transcribe);
        } else if language != "en" {
            return Err(TranscribeError::Language(language.to_owned()));
        }
        tokens.push(self.specials.no_timestamps);
        Ok(tokens)
    }

    /// Transcribes `audio`. `language` is an ISO-639-1 code (`en` when not given).
    pub fn transcribe(
        &self,
        audio: &Audio,
        language: Option<&str>,
        previous: Option<&str>,
    ) -> Result<Transcript, TranscribeError> {
        self.transcribe_streaming(audio, language, previous, &mut |_| true)
    }

    /// Transcribes `audio`, handing `on_text` each piece of text as it is decoded: the pieces
    /// join to the transcript's `text`. `on_text` returning false stops the transcription (the
    /// listener went away); what was decoded so far is returned.
    pub fn transcribe_streaming(
        &self,
        audio: &Audio,
        language: Option<&str>,
        previous: Option<&str>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Transcript, TranscribeError> {
        let mut listening = true;
        let mut said_anything = false;
        let language = language.unwrap_or("en").to_ascii_lowercase();
        let prompt = self.prompt(&language, previous)?;
        let room = self.whisper.dims.text_positions.saturating_sub(prompt.len()).min(MAX_WINDOW_TOKENS);
        let mut segments = Vec::new();
        for (w, window) in audio.samples.chunks(WINDOW_SAMPLES).enumerate() {
            let mel = self.front.log_mel(window, WINDOW_SAMPLES);
            let encoded = self.whisper.encode(&mel)?;
            let context = self.whisper.audio_context(&encoded)?;
            let mut cache = DecoderCache::default();
            let mut feed = prompt.clone();
            let mut decoded = Vec::new();
            let mut logprob_sum = 0.0f64;
            // This window's text sent so far (leading blanks dropped, trailing ones held back, as
            // the window's final text is trimmed).
            let mut sent = String::new();
            for step in 0..room {
                if !listening {
                    break;
                }
                let mut logits = self.whisper.decode(&context, &mut cache, &feed)?;
                for &id in self.suppress.iter().chain(if step == 0 { &self.suppress_at_start[..] } else { &[] }) {
                    if let Some(l) = logits.get_mut(id as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
                let (next, best) = logits
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, &l)| (i as u32, l))
                    .unwrap_or((self.specials.end, 0.0));
                let norm = logits.iter().map(|&l| ((l - best) as f64).exp()).sum::<f64>().ln();
                logprob_sum -= norm;
                if next == self.specials.end {
                    break;
                }
                decoded.push(next);
                feed = vec![next];
                let text = self.tokenizer.decode(&decoded, true).unwrap_or_default();
                let text = text.trim();
                // A character split across tokens waits for its last byte.
                if !text.ends_with('\u{FFFD}') && text.len() > sent.len() && text.starts_with(sent.as_str()) {
                    let mut piece = String::new();
                    if sent.is_empty() && said_anything {
                        piece.push(' ');
                    }
                    piece.push_str(&text[sent.len()..]);
                    sent = text.to_owned();
                    said_anything = true;
                    listening = on_text(&piece);
                }
            }
            let text = self.tokenizer.decode(&decoded, true).unwrap_or_default().trim().to_owned();
            // Whatever the pieces missed (a decode that rewrote earlier text) goes out last.
            if listening && text.len() > sent.len() && text.starts_with(sent.as_str()) {
                let lead = if sent.is_empty() && said_anything { " " } else { "" };
                listening = on_text(&format!("{lead}{}", &text[sent.len()..]));
                said_anything = true;
            }
            let start = (w * WINDOW_SAMPLES) as f64 / super::mel::SAMPLE_RATE as f64;
            let end = (start + window.len() as f64 / super::mel::SAMPLE_RATE as f64).min(audio.seconds());
            let avg_logprob = logprob_sum / (decoded.len() + 1) as f64;
            segments.push(Segment { start, end, text, tokens: decoded, avg_logprob });
            if !listening {
                break;
            }
        }
        let text = segments.iter().map(|s| s.text.as_str()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ");
        Ok(Transcript { text, language, duration: audio.seconds(), segments })
    }
}
