//! Sentence-embedding models (SPEC §7): a sentence-transformers folder's BERT or MPNet encoder
//! with its tokenizer, pooling and normalisation. Inputs are cut at `max_seq_length` and run in
//! padded batches of similar length; the result is what sentence-transformers' `encode` gives.

pub mod layout;
pub mod network;
pub mod pooling;

use std::path::{Path, PathBuf};

use hearth_settings::EmbeddingPrecision;
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

pub use layout::{EmbeddingLayout, is_embedding_folder};
use network::Encoder;

use super::device::ComputeDevice;
use super::weights::{SafetensorsWeights, WeightError};

/// Most sequences in one padded batch.
const MAX_BATCH: usize = 32;
/// Sequences a batch takes whatever their lengths.
const MIN_BATCH: usize = 4;
/// Most padded tokens in one batch.
const MAX_BATCH_TOKENS: usize = 8192;
/// Largest attention-score tensor of a batch (lavapipe's storage buffers stop at 128 MiB).
const MAX_SCORE_BYTES: usize = 64 << 20;

/// Why an embedding model cannot load or run.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("{}: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },
    #[error("{0}")]
    Weight(#[from] WeightError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Model(#[from] super::ModelError),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("the device failed: {0}")]
    Execution(String),
}

/// A loaded embedding model.
pub struct EmbeddingModel {
    layout: EmbeddingLayout,
    encoder: Encoder,
    /// Truncates at `max_seq_length`; never pads (batches are padded here).
    tokenizer: Tokenizer,
    /// What the tokenizer puts around a sequence's own tokens (`[CLS]` … `[SEP]`, `<s>` … `</s>`).
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    /// Padded lengths are rounded up to powers of two on a GPU, where every new shape compiles
    /// kernels; on the CPU a batch is padded only to its longest sequence.
    bucket_lengths: bool,
    /// The CPU runs batches side by side (burn's CPU backend runs each operation on one thread).
    parallel: bool,
}

impl EmbeddingModel {
    /// Loads the sentence-transformers (or plain Hugging Face encoder) folder at `dir`.
    pub fn load(dir: &Path, device: &ComputeDevice, precision: EmbeddingPrecision) -> Result<Self, EncoderError> {
        let layout = EmbeddingLayout::read(dir)?;
        let weights = SafetensorsWeights::open(&layout.transformer_dir)?;
        let progress = super::progress::LoadProgress::new("the embedding model");
        let encoder = Encoder::load(&layout.config, &weights, &device.device, precision, &progress)?;
        let tokenizer_path = layout.transformer_dir.join("tokenizer.json");
        let tok_err = |e: String| EncoderError::Tokenizer(format!("{}: {e}", tokenizer_path.display()));
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| tok_err(e.to_string()))?;
        // Some files bake in padding and a shorter truncation (MiniLM's: 128); the folder's
        // max_seq_length is what sentence-transformers cuts at.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: layout.max_seq_length, ..Default::default() }))
            .map_err(|e| tok_err(e.to_string()))?;
        let (prefix, suffix) = special_tokens_around(&tokenizer).map_err(tok_err)?;
        if let Some(&bad) = prefix.iter().chain(&suffix).find(|&&t| t as usize >= layout.config.vocab_size) {
            return Err(tok_err(format!("special token {bad} is outside the model's vocabulary")));
        }
        Ok(Self {
            layout,
            encoder,
            tokenizer,
            prefix,
            suffix,
            bucket_lengths: !device.is_cpu(),
            parallel: device.is_cpu(),
        })
    }

    /// Length of the vectors.
    pub fn dimensions(&self) -> usize {
        self.layout.config.hidden_size * self.layout.pooling.count()
    }

    /// How its products compute, for the log: `8-bit` or `f32`.
    pub fn precision(&self) -> &'static str {
        if self.encoder.is_int8() { "8-bit" } else { "f32" }
    }

    pub fn vocab_size(&self) -> usize {
        self.layout.config.vocab_size
    }

    /// The model's sequence for `text`: special tokens added, cut at `max_seq_length`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EncoderError> {
        let lowered;
        let text = if self.layout.do_lower_case {
            lowered = text.to_lowercase();
            &lowered
        } else {
            text
        };
        let encoding = self.tokenizer.encode(text, true).map_err(|e| EncoderError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The model's sequence for token ids a client sent (its own tokens, without special
    /// tokens): checked against the vocabulary, cut to fit, special tokens added.
    pub fn sequence_of_ids(&self, ids: &[u32]) -> Result<Vec<u32>, EncoderError> {
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.vocab_size()) {
            return Err(EncoderError::Input(format!(
                "token id {bad} is outside the embedding model's vocabulary of {}",
                self.vocab_size()
            )));
        }
        let room = self.layout.max_seq_length.saturating_sub(self.prefix.len() + self.suffix.len());
        let mut seq = self.prefix.clone();
        seq.extend_from_slice(&ids[..ids.len().min(room)]);
        seq.extend_from_slice(&self.suffix);
        Ok(seq)
    }

    /// One vector per sequence (from [`Self::tokenize`] or [`Self::sequence_of_ids`]), in order.
    pub fn embed(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EncoderError> {
        self.check(sequences)?;
        // Longest first, so each batch pads little.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
        // On the CPU a few inputs still spread over every thread, a batch each.
        let threads = if self.parallel { rayon::current_num_threads().max(1) } else { 1 };
        let spread = sequences.len().div_ceil(threads).max(1);
        let mut batches: Vec<(Vec<usize>, usize)> = Vec::new();
        let mut rest = order.as_slice();
        while let Some(&first) = rest.first() {
            let len = self.padded_length(sequences[first].len());
            let heads = self.layout.config.num_heads;
            let fit =
                MAX_BATCH.min(spread).min(MAX_BATCH_TOKENS / len).min(MAX_SCORE_BYTES / (heads * len * len * 4)).max(1);
            // A batch stops where padding would become a quarter of a sequence's work (after a
            // few members, so that short tails do not run one by one).
            let take = rest
                .iter()
                .take(fit)
                .enumerate()
                .take_while(|&(n, &i)| n < MIN_BATCH || sequences[i].len() * 4 >= sequences[first].len() * 3)
                .count();
            let (batch, tail) = rest.split_at(take);
            batches.push((batch.to_vec(), len));
            rest = tail;
        }
        let run = |(members, len): &(Vec<usize>, usize)| -> Result<Vec<(usize, Vec<f32>)>, EncoderError> {
            let seqs: Vec<&[u32]> = members.iter().map(|&i| sequences[i].as_slice()).collect();
            let hidden = self.encoder.forward(&seqs, *len)?;
            let h = self.layout.config.hidden_size;
            Ok(members
                .iter()
                .zip(hidden.chunks_exact(len * h))
                .zip(&seqs)
                .map(|((&i, rows), seq)| {
                    let mut v = pooling::pool(&self.layout.pooling, &rows[..seq.len() * h], h);
                    if self.layout.normalize {
                        pooling::normalize(&mut v);
                    }
                    (i, v)
                })
                .collect())
        };
        let done: Vec<Vec<(usize, Vec<f32>)>> = if self.parallel && batches.len() > 1 {
            batches.par_iter().map(run).collect::<Result<_, _>>()?
        } else {
            batches.iter().map(run).collect::<Result<_, _>>()?
        };
        let mut out = vec![Vec::new(); sequences.len()];
        for (i, v) in done.into_iter().flatten() {
            out[i] = v;
        }
        Ok(out)
    }

    /// Whether [`Self::embed`] takes these sequences: 1 to `max_seq_length` tokens each, every
    /// token in the vocabulary.
    pub fn check(&self, sequences: &[Vec<u32>]) -> Result<(), EncoderError> {
        if let Some(bad) = sequences.iter().find(|s| s.is_empty() || s.len() > self.layout.max_seq_length) {
            return Err(EncoderError::Input(format!(
                "a sequence of {} tokens (1 to {} fit)",
                bad.len(),
                self.layout.max_seq_length
            )));
        }
        if let Some(&bad) = sequences.iter().flatten().find(|&&t| t as usize >= self.vocab_size()) {
            return Err(EncoderError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab_size()
            )));
        }
        Ok(())
    }

    /// The encoder's last hidden states of one sequence, `[len, hidden]` (before pooling).
    pub fn hidden_states(&self, sequence: &[u32]) -> Result<Vec<f32>, EncoderError> {
        let len = sequence.len();
        let mut hidden = self.encoder.forward(&[sequence], self.padded_length(len))?;
        hidden.truncate(len * self.layout.config.hidden_size);
        Ok(hidden)
    }

    fn padded_length(&self, longest: usize) -> usize {
        if self.bucket_lengths { longest.next_power_of_two().max(16).min(self.layout.max_seq_length) } else { longest }
    }
}

/// The ids the tokenizer's post-processor puts before and after a sequence, found by encoding a
/// probe word with and without special tokens.
fn special_tokens_around(tokenizer: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>), String> {
    let with = tokenizer.encode("a", true).map_err(|e| e.to_string())?;
    let without = tokenizer.encode("a", false).map_err(|e| e.to_string())?;
    let (with, without) = (with.get_ids(), without.get_ids());
    if without.is_empty() {
        return Ok((with.to_vec(), Vec::new()));
    }
    match with.windows(without.len()).position(|w| w == without) {
        Some(at) => Ok((with[..at].to_vec(), with[at + without.len()..].to_vec())),
        None => Ok((Vec::new(), Vec::new())),
    }
}
