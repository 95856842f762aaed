//! Speech to text with a Whisper model folder (CTranslate2's layout, as faster-whisper uses):
//! audio in 30 s windows, each encoded once and decoded greedily from Whisper's prompt
//! (`<|startofprev|>` and the caller's prompt, `<|startoftranscript|>`, the language and task
//! on multilingual models, `<|notimestamps|>`), with the model's suppressed tokens masked and
//! blank or immediate-end starts refused, as Whisper decodes.
//!
//! Segments come from Whisper's timestamp tokens, and a window that ends mid-segment is decoded
//! again from that segment's start; a window Whisper would call silence (its no-speech
//! probability and average log-probability) gives no text. A window whose text compresses too
//! well (a repetition loop) or scores too low is decoded again hotter ([`Temperature`]), as
//! Whisper does; words are timed from the cross-attention ([`super::word_timing`]). Not yet:
//! language detection (multilingual models assume the given language, else English).

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use super::ctranslate2::Ct2Model;
use super::decode::Audio;
use super::hf_whisper::HfWhisper;
use super::mel::{MelFrontEnd, SAMPLE_RATE, WINDOW_SAMPLES};
use super::whisper::{DecoderCache, Whisper, WhisperError};
use super::word_timing::{self, SegmentSpan, WordTiming};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
    /// Where the segment's window starts, in mel frames (10 ms), as Whisper reports `seek`.
    pub seek: usize,
    /// The window's no-speech probability.
    pub no_speech_prob: f64,
    /// The temperature the window was decoded at.
    pub temperature: f64,
    /// Each word's times, when asked for ([`Transcriber::add_word_timings`]).
    pub words: Vec<WordTiming>,
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
    /// `<|nospeech|>` (`<|nocaptions|>` in older vocabularies).
    no_speech: Option<u32>,
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
    /// The (layer, head) pairs of cross-attention that follow the speech, for word timings.
    alignment_heads: Vec<(usize, usize)>,
}

impl Transcriber {
    /// Loads `dir`: CTranslate2's layout (`model.bin`, `config.json` with `suppress_ids`) or
    /// Hugging Face's (`*.safetensors`, `config.json`, `generation_config.json` with
    /// `suppress_tokens`), with `tokenizer.json` in both.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, TranscribeError> {
        let folder = |reason: String| TranscribeError::Folder { path: dir.display().to_string(), reason };
        let json = |name: &str| -> Value {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null)
        };
        let ct2 = dir.join("model.bin");
        let (whisper, config, [suppress_key, begin_key]) = if ct2.is_file() {
            let model = Ct2Model::open(&ct2).map_err(|e| folder(e.to_string()))?;
            (Whisper::load_ct2(&model, device)?, json("config.json"), ["suppress_ids", "suppress_ids_begin"])
        } else {
            let model = HfWhisper::open(dir)?;
            (
                Whisper::load(&model, device)?,
                json("generation_config.json"),
                ["suppress_tokens", "begin_suppress_tokens"],
            )
        };
        let tokenizer =
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| folder(e.to_string()))?;
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
            no_speech: token("<|nospeech|>").or_else(|| token("<|nocaptions|>")),
        };
        // English-only checkpoints have one token fewer than multilingual ones (51,864).
        let multilingual = whisper.dims.vocab >= 51_865;
        let front = MelFrontEnd::new(whisper.dims.mel_bands);
        let suppress_at_start = match ids(begin_key) {
            v if v.is_empty() => vec![specials.end],
            v => v,
        };
        // The model's own list, else Whisper's default: every head of the decoder's later half.
        let alignment_heads = config
            .get("alignment_heads")
            .and_then(Value::as_array)
            .map(|pairs| {
                pairs
                    .iter()
                    .filter_map(|p| Some((p.get(0)?.as_u64()? as usize, p.get(1)?.as_u64()? as usize)))
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                let d = whisper.dims;
                (d.decoder_layers / 2..d.decoder_layers).flat_map(|l| (0..d.heads).map(move |h| (l, h))).collect()
            });
        Ok(Self {
            whisper,
            tokenizer,
            front,
            specials,
            suppress: ids(suppress_key),
            suppress_at_start,
            multilingual,
            alignment_heads,
        })
    }

    /// The prompt of every window: the caller's text as previous context, then Whisper's
    /// start tokens (without `<|notimestamps|>`: windows are decoded with timestamps).
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
        Ok(tokens)
    }

    /// Transcribes `audio`. `language` is an ISO-639-1 code (`en` when not given).
    pub fn transcribe(
        &self,
        audio: &Audio,
        language: Option<&str>,
        previous: Option<&str>,
    ) -> Result<Transcript, TranscribeError> {
        self.transcribe_streaming(audio, language, previous, false, Temperature::Fallback, &mut |_| true)
    }

    /// Transcribes `audio`, handing `on_text` each piece of text as it is decoded: the pieces
    /// join to the transcript's `text`. `on_text` returning false stops the transcription (the
    /// listener went away); what was decoded so far is returned.
    ///
    /// With `timestamps`, Whisper's timestamp decoding: each window's text comes in segments
    /// between timestamp tokens, which must come in pairs and never go back; the first may be
    /// at most 1 s in. When the window ends inside a segment, the next window starts at that
    /// segment's start, so no word is cut at a window's edge; a piece of text goes out when the
    /// timestamp that ends its segment is decoded (or the window ends keeping it). Without,
    /// `<|notimestamps|>`: each 30 s window is one segment and text goes out token by token.
    /// (On the espeak-ng test speech tiny.en makes fewer word errors without timestamps: 11.5 %
    /// against 17.9 %.)
    pub fn transcribe_streaming(
        &self,
        audio: &Audio,
        language: Option<&str>,
        previous: Option<&str>,
        timestamps: bool,
        temperature: Temperature,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Transcript, TranscribeError> {
        let temperatures = temperature.schedule();
        let language = language.unwrap_or("en").to_ascii_lowercase();
        let mut prompt = self.prompt(&language, previous)?;
        if !timestamps {
            prompt.push(self.specials.no_timestamps);
        }
        let room = self.whisper.dims.text_positions.saturating_sub(prompt.len()).min(MAX_WINDOW_TOKENS);
        let ts_begin = self.specials.no_timestamps + 1;
        let is_ts = |t: u32| t >= ts_begin;
        let mut out = StreamedText { on_text, listening: true, text: String::new() };
        let mut segments = Vec::new();
        let mut seek = 0usize;
        let total = audio.samples.len();
        while seek < total && out.listening {
            let window = &audio.samples[seek..(seek + WINDOW_SAMPLES).min(total)];
            let window_start = seek as f64 / SAMPLE_RATE as f64;
            let mel = self.front.log_mel(window, WINDOW_SAMPLES);
            let encoded = self.whisper.encode(&mel)?;
            let context = self.whisper.audio_context(&encoded)?;
            let mut cache = DecoderCache::default();
            // The no-speech probability is read where <|startoftranscript|> is fed.
            let sot = prompt.iter().position(|&t| t == self.specials.start).unwrap_or(0);
            let at_sot = self.whisper.decode(&context, &mut cache, &prompt[..=sot])?;
            let no_speech = self.specials.no_speech.map_or(0.0, |id| probability(&at_sot, id as usize));
            // Likely silence: the window's text waits for its average log-probability, and is
            // dropped as Whisper drops it (`no_speech_threshold` 0.6, `logprob_threshold` -1).
            let holding = no_speech > NO_SPEECH_THRESHOLD;
            // Decoded at each temperature of the schedule until the text passes Whisper's checks
            // (compression ratio, average log-probability) or the schedule ends. With more than
            // one temperature the text is held until the window is accepted.
            let direct = temperatures.len() == 1;
            let mut attempt = 0usize;
            let (tokens, avg_logprob, silence, ended, unsent, temperature, listening, text, pieces) = loop {
                let temperature = temperatures[attempt];
                let mut rng = StdRng::seed_from_u64(((seek as u64) << 8) | attempt as u64);
                let mut held: Vec<String> = Vec::new();
                let mut hold = |p: &str| {
                    held.push(p.to_owned());
                    true
                };
                let sink: &mut dyn FnMut(&str) -> bool = if direct { &mut *out.on_text } else { &mut hold };
                let mut out = StreamedText { on_text: sink, listening: out.listening, text: out.text.clone() };
                let mut cache = cache.clone();
                let mut first_logits = (sot + 1 == prompt.len()).then(|| at_sot.clone());
                let mut feed = prompt[sot + 1..].to_vec();
                let mut tokens: Vec<u32> = Vec::new();
                let mut logprob_sum = 0.0f64;
                // Where the text not yet sent starts.
                let mut unsent = 0usize;
                // Without timestamps: the window's text sent so far.
                let mut window_sent = String::new();
                let mut ended = false;
                for step in 0..room {
                    if !out.listening {
                        break;
                    }
                    let mut logits = match first_logits.take() {
                        Some(l) => l,
                        None => self.whisper.decode(&context, &mut cache, &feed)?,
                    };
                    let masked = |logits: &mut Vec<f32>, ids: &mut dyn Iterator<Item = u32>| {
                        for id in ids {
                            if let Some(l) = logits.get_mut(id as usize) {
                                *l = f32::NEG_INFINITY;
                            }
                        }
                    };
                    masked(&mut logits, &mut self.suppress.iter().copied());
                    if step == 0 {
                        masked(&mut logits, &mut self.suppress_at_start.iter().copied());
                    }
                    if timestamps {
                        masked(&mut logits, &mut std::iter::once(self.specials.no_timestamps));
                        timestamp_rules(&mut logits, &tokens, ts_begin, self.specials.end);
                    } else {
                        let vocab = logits.len() as u32;
                        masked(&mut logits, &mut (ts_begin..vocab));
                    }
                    let best = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let next = if temperature > 0.0 {
                        sample(&logits, temperature, &mut rng).unwrap_or(self.specials.end)
                    } else {
                        logits
                            .iter()
                            .enumerate()
                            .max_by(|a, b| a.1.total_cmp(b.1))
                            .map_or(self.specials.end, |(i, _)| i as u32)
                    };
                    // The chosen token's log-probability under the unscaled logits, as Whisper sums it.
                    let norm = logits.iter().map(|&l| ((l - best) as f64).exp()).sum::<f64>().ln();
                    logprob_sum += (logits[next as usize] - best) as f64 - norm;
                    if next == self.specials.end {
                        ended = true;
                        break;
                    }
                    // A timestamp after text ends a segment: its text goes out.
                    if !holding && is_ts(next) && tokens.last().is_some_and(|&t| !is_ts(t)) {
                        out.send(&self.text_of(&tokens[unsent..]));
                        unsent = tokens.len() + 1;
                    }
                    tokens.push(next);
                    feed = vec![next];
                    if !timestamps && !holding {
                        out.grow(&mut window_sent, &self.text_of(&tokens));
                    }
                }
                let avg_logprob = logprob_sum / (tokens.len() + 1) as f64;
                let silence = holding && avg_logprob < LOGPROB_THRESHOLD;
                let distrusted = compression_ratio(&self.text_of(&tokens)) > COMPRESSION_RATIO_THRESHOLD
                    || avg_logprob < LOGPROB_THRESHOLD;
                if distrusted && !silence && attempt + 1 < temperatures.len() {
                    tracing::debug!(window_start, temperature, avg_logprob, "whisper window decoded again hotter");
                    attempt += 1;
                    continue;
                }
                if !timestamps && !silence {
                    out.grow(&mut window_sent, &self.text_of(&tokens));
                    unsent = tokens.len();
                }
                let (listening, text) = (out.listening, out.text);
                break (tokens, avg_logprob, silence, ended, unsent, temperature, listening, text, held);
            };
            // The accepted attempt's text: already out when it went straight to the listener,
            // else sent now.
            if direct {
                (out.text, out.listening) = (text, listening);
            } else {
                for piece in &pieces {
                    out.forward(piece);
                }
            }
            tracing::debug!(window_start, no_speech, avg_logprob, tokens = tokens.len(), "whisper window");
            if silence {
                seek += window.len();
                continue;
            }
            // Whisper's segmentation of the window.
            let at = |t: u32| window_start + (t - ts_begin) as f64 * TIME_PER_TIMESTAMP;
            let window_end = window_start + window.len() as f64 / SAMPLE_RATE as f64;
            let n = tokens.len();
            let single_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
            let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i])).collect();
            let before = segments.len();
            let advance;
            if consecutive.is_empty() {
                // One segment: the window, or up to its last timestamp.
                let end = tokens
                    .iter()
                    .rev()
                    .find(|&&t| is_ts(t) && t != ts_begin)
                    .map_or(window_end, |&t| at(t).min(window_end));
                let text = self.text_of(&tokens);
                segments.push(Segment {
                    start: window_start,
                    end,
                    text,
                    tokens: tokens.clone(),
                    avg_logprob,
                    seek: seek / SAMPLES_PER_FRAME,
                    no_speech_prob: no_speech,
                    temperature,
                    words: Vec::new(),
                });
                if !holding {
                    out.send(&self.text_of(&tokens[unsent.min(n)..]));
                }
                advance = window.len();
            } else {
                let mut cuts = consecutive.clone();
                // A window that ends mid-segment (no end of text, no closing timestamp) is
                // decoded again from that segment's start; one that ran out of tokens keeps all.
                let keeps_all = single_ending || (!ended && n >= room);
                if keeps_all {
                    cuts.push(n);
                }
                let mut last = 0;
                for &cut in &cuts {
                    let slice = &tokens[last..cut];
                    let (start, end) = match (slice.first(), slice.iter().rev().find(|&&t| is_ts(t))) {
                        (Some(&s), Some(&e)) if is_ts(s) => (at(s), at(e)),
                        _ => (window_start, window_end),
                    };
                    segments.push(Segment {
                        start,
                        end: end.min(window_end),
                        text: self.text_of(slice),
                        tokens: slice.to_vec(),
                        avg_logprob,
                        seek: seek / SAMPLES_PER_FRAME,
                        no_speech_prob: no_speech,
                        temperature,
                        words: Vec::new(),
                    });
                    last = cut;
                }
                if keeps_all {
                    if !holding {
                        out.send(&self.text_of(&tokens[unsent.min(n)..]));
                    }
                    advance = window.len();
                } else {
                    // The last complete segment's end timestamp.
                    let end_ts = tokens[last - 1];
                    advance = ((end_ts - ts_begin) as usize * SAMPLES_PER_TIMESTAMP).min(window.len());
                }
            }
            let window_segments = segments.split_off(before);
            segments.extend(window_segments.into_iter().filter(|s| !s.text.is_empty()));
            // Held text that turned out to be speech goes out now, segment by segment.
            if holding && timestamps {
                for segment in &segments[before.min(segments.len())..] {
                    out.send(&segment.text);
                }
            }
            // Never stand still: a window that produced nothing to keep is passed.
            seek += if advance == 0 { window.len() } else { advance };
        }
        Ok(Transcript { text: out.text, language, duration: audio.seconds(), segments })
    }

    /// Times each word of a transcript made with timestamps, as Whisper does: window by window,
    /// the decoder's cross-attention over the window's text aligned to its audio
    /// ([`word_timing`]); segments' starts and ends move to their words where Whisper moves them.
    pub fn add_word_timings(&self, audio: &Audio, transcript: &mut Transcript) -> Result<(), TranscribeError> {
        let language = transcript.language.clone();
        let sot_sequence = self.prompt(&language, None)?;
        let sot_len = sot_sequence.len();
        let mut last_speech = 0.0;
        let mut first = 0;
        while first < transcript.segments.len() {
            let seek = transcript.segments[first].seek;
            let count = transcript.segments[first..].iter().take_while(|s| s.seek == seek).count();
            let window = &mut transcript.segments[first..first + count];
            first += count;
            let start = (seek * SAMPLES_PER_FRAME).min(audio.samples.len());
            let samples = &audio.samples[start..(start + WINDOW_SAMPLES).min(audio.samples.len())];
            let text_per_segment: Vec<Vec<u32>> =
                window.iter().map(|s| s.tokens.iter().copied().filter(|&t| t < self.specials.end).collect()).collect();
            let text: Vec<u32> = text_per_segment.concat();
            if text.is_empty() {
                continue;
            }
            let mel = self.front.log_mel(samples, WINDOW_SAMPLES);
            let context = self.whisper.audio_context(&self.whisper.encode(&mel)?)?;
            let mut tokens = sot_sequence.clone();
            tokens.push(self.specials.no_timestamps);
            tokens.extend_from_slice(&text);
            tokens.push(self.specials.end);
            let all_frames = self.whisper.dims.audio_positions;
            let scores = self.whisper.cross_attention_scores(&context, &tokens, &self.alignment_heads)?;
            let frames = (samples.len() / SAMPLES_PER_FRAME / 2).clamp(1, all_frames);
            let matrix =
                word_timing::alignment_matrix(&scores, self.alignment_heads.len(), tokens.len(), all_frames, frames);
            // The rows of <|notimestamps|> and the text's tokens (each predicts the next).
            let rows = text.len() + 1;
            let cost: Vec<f32> = matrix[sot_len * frames..(sot_len + rows) * frames].iter().map(|v| -v).collect();
            let (text_indices, time_indices) = word_timing::dtw(&cost, rows, frames);
            let mut with_end = text.clone();
            with_end.push(self.specials.end);
            let alignment = word_timing::time_words(self.split_words(&with_end), &text_indices, &time_indices);
            let spans: Vec<SegmentSpan> = window
                .iter()
                .zip(&text_per_segment)
                .map(|(s, t)| SegmentSpan { start: s.start, end: s.end, text_tokens: t.len() })
                .collect();
            let offset = start as f64 / SAMPLE_RATE as f64;
            for (segment, (s, e, words)) in
                window.iter_mut().zip(word_timing::place_words(alignment, &spans, offset, &mut last_speech))
            {
                (segment.start, segment.end, segment.words) = (s, e, words);
            }
        }
        Ok(())
    }

    /// `tokens` in words as Whisper splits languages that space their words: a piece of whole
    /// characters starting with a space, or punctuation, or a special token, starts a word.
    fn split_words(&self, tokens: &[u32]) -> Vec<(String, Vec<u32>)> {
        const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
        let mut pieces: Vec<(String, Vec<u32>)> = Vec::new();
        let mut current = Vec::new();
        for &t in tokens {
            current.push(t);
            let decoded = self.tokenizer.decode(&current, false).unwrap_or_default();
            if !decoded.contains('\u{FFFD}') {
                pieces.push((decoded, std::mem::take(&mut current)));
            }
        }
        if !current.is_empty() {
            pieces.push((self.tokenizer.decode(&current, false).unwrap_or_default(), current));
        }
        let mut words: Vec<(String, Vec<u32>)> = Vec::new();
        for (piece, ids) in pieces {
            let special = ids[0] >= self.specials.end;
            let starts_word = special || piece.starts_with(' ') || PUNCTUATION.contains(piece.trim());
            match words.last_mut() {
                Some((word, word_ids)) if !starts_word => {
                    word.push_str(&piece);
                    word_ids.extend(ids);
                }
                _ => words.push((piece, ids)),
            }
        }
        words
    }

    /// The text of `tokens`' text tokens (timestamps and special tokens, all numbered from
    /// `<|endoftext|>` up, left out), trimmed.
    fn text_of(&self, tokens: &[u32]) -> String {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.specials.end).collect();
        self.tokenizer.decode(&text, true).unwrap_or_default().trim().to_owned()
    }
}

/// Whisper's `compression_ratio_threshold`: a window whose text compresses better than this is
/// likely a repetition loop, decoded again at the next temperature.
const COMPRESSION_RATIO_THRESHOLD: f64 = 2.4;

/// How a window is decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Temperature {
    /// Greedy first, then hotter (0.2, 0.4 … 1.0) while the text fails Whisper's checks, as
    /// Whisper does for `temperature` 0.
    Fallback,
    /// At this temperature only (0: greedy).
    Fixed(f64),
}

impl Temperature {
    fn schedule(self) -> Vec<f64> {
        match self {
            Temperature::Fallback => vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            Temperature::Fixed(t) => vec![t.max(0.0)],
        }
    }
}

/// A token drawn from `softmax(logits / temperature)`.
fn sample(logits: &[f32], temperature: f64, rng: &mut StdRng) -> Option<u32> {
    let best = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !best.is_finite() {
        return None;
    }
    let weights: Vec<f64> = logits.iter().map(|&l| (((l - best) as f64) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut target = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return Some(i as u32);
        }
        target -= w;
    }
    weights.iter().rposition(|&w| w > 0.0).map(|i| i as u32)
}

/// Whisper's `no_speech_threshold` and `logprob_threshold`: a window whose no-speech
/// probability is above the first and whose tokens average below the second is silence.
const NO_SPEECH_THRESHOLD: f64 = 0.6;
const LOGPROB_THRESHOLD: f64 = -1.0;

/// Whisper's compression ratio of a text: its UTF-8 length over its zlib-compressed length
/// (level 6, as Python's `zlib.compress`). Repetition loops compress well; above 2.4 Whisper
/// distrusts a window.
pub fn compression_ratio(text: &str) -> f64 {
    use std::io::Write;
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let compressed = encoder.write_all(bytes).and_then(|()| encoder.finish()).map_or(0, |c| c.len());
    if compressed == 0 { 0.0 } else { bytes.len() as f64 / compressed as f64 }
}

/// Whisper's language names by code, the order of its language tokens.
#[rustfmt::skip]
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"), ("zh", "chinese"), ("de", "german"), ("es", "spanish"), ("ru", "russian"),
    ("ko", "korean"), ("fr", "french"), ("ja", "japanese"), ("pt", "portuguese"), ("tr", "turkish"),
    ("pl", "polish"), ("ca", "catalan"), ("nl", "dutch"), ("ar", "arabic"), ("sv", "swedish"),
    ("it", "italian"), ("id", "indonesian"), ("hi", "hindi"), ("fi", "finnish"), ("vi", "vietnamese"),
    ("he", "hebrew"), ("uk", "ukrainian"), ("el", "greek"), ("ms", "malay"), ("cs", "czech"),
    ("ro", "romanian"), ("da", "danish"), ("hu", "hungarian"), ("ta", "tamil"), ("no", "norwegian"),
    ("th", "thai"), ("ur", "urdu"), ("hr", "croatian"), ("bg", "bulgarian"), ("lt", "lithuanian"),
    ("la", "latin"), ("mi", "maori"), ("ml", "malayalam"), ("cy", "welsh"), ("sk", "slovak"),
    ("te", "telugu"), ("fa", "persian"), ("lv", "latvian"), ("bn", "bengali"), ("sr", "serbian"),
    ("az", "azerbaijani"), ("sl", "slovenian"), ("kn", "kannada"), ("et", "estonian"), ("mk", "macedonian"),
    ("br", "breton"), ("eu", "basque"), ("is", "icelandic"), ("hy", "armenian"), ("ne", "nepali"),
    ("mn", "mongolian"), ("bs", "bosnian"), ("kk", "kazakh"), ("sq", "albanian"), ("sw", "swahili"),
    ("gl", "galician"), ("mr", "marathi"), ("pa", "punjabi"), ("si", "sinhala"), ("km", "khmer"),
    ("sn", "shona"), ("yo", "yoruba"), ("so", "somali"), ("af", "afrikaans"), ("oc", "occitan"),
    ("ka", "georgian"), ("be", "belarusian"), ("tg", "tajik"), ("sd", "sindhi"), ("gu", "gujarati"),
    ("am", "amharic"), ("yi", "yiddish"), ("lo", "lao"), ("uz", "uzbek"), ("fo", "faroese"),
    ("ht", "haitian creole"), ("ps", "pashto"), ("tk", "turkmen"), ("nn", "nynorsk"), ("mt", "maltese"),
    ("sa", "sanskrit"), ("lb", "luxembourgish"), ("my", "myanmar"), ("bo", "tibetan"), ("tl", "tagalog"),
    ("mg", "malagasy"), ("as", "assamese"), ("tt", "tatar"), ("haw", "hawaiian"), ("ln", "lingala"),
    ("ha", "hausa"), ("ba", "bashkir"), ("jw", "javanese"), ("su", "sundanese"), ("yue", "cantonese"),
];

/// A language's name as OpenAI's `verbose_json` gives it (`english`); the code when unknown.
pub fn language_name(code: &str) -> &str {
    LANGUAGES.iter().find(|(c, _)| *c == code).map_or(code, |(_, name)| name)
}

/// The softmax probability of `id` in `logits`.
fn probability(logits: &[f32], id: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    logits.get(id).map_or(0.0, |&l| ((l - max) as f64).exp() / total)
}

/// Seconds one timestamp token stands for.
const TIME_PER_TIMESTAMP: f64 = 0.02;
/// Samples one timestamp token stands for.
const SAMPLES_PER_TIMESTAMP: usize = 320;
/// Samples per mel frame (10 ms).
const SAMPLES_PER_FRAME: usize = 160;
/// The first timestamp may be at most this many steps in (1 s, Whisper's `max_initial_timestamp`).
const MAX_INITIAL_TIMESTAMP: u32 = 50;

/// The text sent to the listener so far.
struct StreamedText<'a> {
    on_text: &'a mut dyn FnMut(&str) -> bool,
    listening: bool,
    text: String,
}

impl StreamedText<'_> {
    /// Sends what `window` (the text of a window so far) adds to `sent` (what went out of it),
    /// once it is whole characters and extends what went out.
    fn grow(&mut self, sent: &mut String, window: &str) {
        if window.ends_with('\u{FFFD}') || window.len() <= sent.len() || !window.starts_with(sent.as_str()) {
            return;
        }
        let piece = &window[sent.len()..];
        let piece = if sent.is_empty() && !self.text.is_empty() { format!(" {piece}") } else { piece.to_owned() };
        *sent = window.to_owned();
        if !self.listening {
            return;
        }
        self.text.push_str(&piece);
        self.listening = (self.on_text)(&piece);
    }

    /// Sends a piece as it is (text held back, now accepted).
    fn forward(&mut self, piece: &str) {
        if !self.listening {
            return;
        }
        self.text.push_str(piece);
        self.listening = (self.on_text)(piece);
    }

    /// Sends one segment's text (a space before it when something came earlier).
    fn send(&mut self, piece: &str) {
        if piece.is_empty() || !self.listening {
            return;
        }
        let piece = if self.text.is_empty() { piece.to_owned() } else { format!(" {piece}") };
        self.text.push_str(&piece);
        self.listening = (self.on_text)(&piece);
    }
}

/// Whisper's rules for timestamp tokens (`ApplyTimestampRules`), applied to the next token's
/// logits given the window's tokens so far.
fn timestamp_rules(logits: &mut [f32], tokens: &[u32], ts_begin: u32, end: u32) {
    let ts = ts_begin as usize;
    let is_ts = |t: u32| t >= ts_begin;
    let last_ts = tokens.last().is_some_and(|&t| is_ts(t));
    let penultimate_ts = tokens.len() < 2 || is_ts(tokens[tokens.len() - 2]);
    let forbid = |logits: &mut [f32], range: std::ops::Range<usize>| {
        let range = range.start.min(logits.len())..range.end.min(logits.len());
        logits[range].iter_mut().for_each(|l| *l = f32::NEG_INFINITY);
    };
    if last_ts {
        if penultimate_ts {
            // A pair just closed: text (or the end) comes next.
            forbid(logits, ts..logits.len());
        } else {
            // A segment's end: its closing timestamp (or the end) comes next.
            forbid(logits, 0..end as usize);
        }
    }
    // Timestamps never go back.
    if let Some(&latest) = tokens.iter().rev().find(|&&t| is_ts(t)) {
        let floor = if last_ts && !penultimate_ts { latest } else { latest + 1 };
        forbid(logits, ts..floor as usize);
    }
    if tokens.is_empty() {
        // The window starts with a timestamp, at most 1 s in.
        forbid(logits, 0..ts);
        forbid(logits, ts + MAX_INITIAL_TIMESTAMP as usize + 1..logits.len());
    }
    // When timestamps together are likelier than any text token, a timestamp comes next.
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max.is_finite() && logits.len() > ts {
        let log_sum = |xs: &[f32]| {
            let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if m.is_finite() {
                m as f64 + xs.iter().map(|&x| ((x - m) as f64).exp()).sum::<f64>().ln()
            } else {
                f64::NEG_INFINITY
            }
        };
        let timestamps = log_sum(&logits[ts..]);
        let best_text = logits[..ts].iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        if timestamps > best_text {
            forbid(logits, 0..ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: u32 = 100;
    const END: u32 = 90;

    fn allowed(tokens: &[u32]) -> Vec<usize> {
        let mut logits = vec![0.0f32; 200];
        // Text likelier than timestamps, so the last rule stays out of the way.
        logits[..TS as usize].iter_mut().for_each(|l| *l = 5.0);
        timestamp_rules(&mut logits, tokens, TS, END);
        (0..200).filter(|&i| logits[i].is_finite()).collect()
    }

    #[test]
    fn timestamps_come_in_pairs_and_never_go_back() {
        // The start: a timestamp within the first second.
        assert_eq!(allowed(&[]), (100..=150).collect::<Vec<_>>());
        // After a start timestamp and text: text, or a timestamp at or after the start.
        // (A segment cannot end where it starts.)
        let after_text = allowed(&[110, 5]);
        assert!(after_text.contains(&5) && after_text.contains(&111) && !after_text.contains(&110));
        // After a segment's end timestamp: its pair (not earlier), or the end of text.
        let after_end = allowed(&[110, 5, 120]);
        assert!(after_end.contains(&120) && after_end.contains(&(END as usize)) && !after_end.contains(&5));
        assert!(!after_end.contains(&119));
        // After a pair: text only.
        let after_pair = allowed(&[110, 5, 120, 120]);
        assert!(after_pair.contains(&5) && !after_pair.iter().any(|&t| t >= 100));
    }
}
