//! What the host offers a plugin: its log, and — when the plugin's settings grant them — the
//! loaded model's tokenizer, generation and embeddings.

use crate::bindings::common::hearth::plugin::host as raw;
use crate::bindings::common::hearth::plugin::types::Level;

pub use raw::{GenerateRequest, GenerateResponse};

/// Logs at info level (the line is prefixed with the plugin's name).
pub fn info(message: &str) {
    raw::log(Level::Info, message);
}

/// Logs a warning.
pub fn warn(message: &str) {
    raw::log(Level::Warn, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    raw::log(Level::Debug, message);
}

/// Tokenizes with the loaded model's tokenizer (grant `tokenize`).
pub fn tokenize(text: &str) -> Result<Vec<u32>, String> {
    raw::tokenize(text)
}

/// Turns token ids back into text (grant `tokenize`).
pub fn detokenize(tokens: &[u32]) -> Result<String, String> {
    raw::detokenize(tokens)
}

/// Runs the loaded model (grant `generate`).
pub fn generate(request: &GenerateRequest) -> Result<GenerateResponse, String> {
    raw::generate(request)
}

/// Embeds texts with the embedding model (grant `embed`).
pub fn embed(texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
    raw::embed(texts)
}
