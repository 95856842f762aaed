//! The loaded model as plugins see it through their host functions: tokenize, detokenize and
//! generate with the served model, embed with the embedding model (blocking: plugins call them
//! from their own threads, never from async code).

use std::sync::Arc;

use hearth_plugin_bindings::sampler::hearth::plugin::host::{GenerateRequest, GenerateResponse};

use crate::embedding_service::EmbeddingService;
use crate::engine::{Engine, GenerationRequest, TokenEvent};
use crate::plugins::HostServices;
use crate::prompt::incremental::{Delta, IncrementalDecoder};
use crate::sampling::SamplingParams;

/// Most tokens one plugin `generate` call may ask for.
const MAX_PLUGIN_TOKENS: u32 = 4096;

/// [`HostServices`] backed by the served model's engine (when one is served) and the embedding
/// model.
pub struct ModelServices {
    pub engine: Option<Engine>,
    pub embeddings: Arc<EmbeddingService>,
}

impl ModelServices {
    fn engine(&self) -> Result<&Engine, String> {
        self.engine.as_ref().ok_or_else(|| "no model is loaded".to_owned())
    }
}

impl HostServices for ModelServices {
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        self.engine()?.tokenizer().encode(text, false).map_err(|e| e.to_string())
    }

    fn detokenize(&self, tokens: &[u32]) -> Result<String, String> {
        let tokenizer = self.engine()?.tokenizer();
        let vocab = tokenizer.vocab_size();
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(format!("token id {bad} is outside the vocabulary"));
        }
        tokenizer.decode(tokens, false).map_err(|e| e.to_string())
    }

    fn generate(&self, request: &GenerateRequest) -> Result<GenerateResponse, String> {
        let engine = self.engine()?;
        let tokenizer = engine.tokenizer().clone();
        let prompt = tokenizer.encode(&request.prompt, true).map_err(|e| e.to_string())?;
        let prompt_tokens = prompt.len() as u32;
        let room = engine.context_length().saturating_sub(prompt.len());
        if room == 0 {
            return Err("the prompt fills the whole context".into());
        }
        let temperature = if request.temperature.is_finite() { request.temperature.clamp(0.0, 5.0) } else { 0.0 };
        let generation = GenerationRequest {
            constraint: None,
            distribution: None,
            logprobs: None,
            prompt,
            max_new_tokens: (request.max_tokens.min(MAX_PLUGIN_TOKENS) as usize).min(room),
            sampling: SamplingParams { temperature, ..SamplingParams::default() },
            stop_ids: tokenizer.end_ids.clone(),
        };
        let mut stream = engine.submit(generation).map_err(|e| e.to_string())?;
        let mut decoder = IncrementalDecoder::new(Arc::clone(&tokenizer), request.stop.clone(), true);
        let mut text = String::new();
        let mut completion_tokens = 0;
        let finish = loop {
            match stream.blocking_next() {
                Some(TokenEvent::Token { id, .. }) => {
                    completion_tokens += 1;
                    match decoder.push(id).map_err(|e| e.to_string())? {
                        Delta::Text(t) => text.push_str(&t),
                        Delta::Stop(t) => {
                            text.push_str(&t);
                            break "stop";
                        }
                    }
                }
                // Only logits queries ask for a distribution; a generation never sees one.
                Some(TokenEvent::Distribution(_) | TokenEvent::PromptLogprobs(_)) => {}
                Some(TokenEvent::Finished { reason }) => {
                    text.push_str(&decoder.finish());
                    break reason.as_openai();
                }
                Some(TokenEvent::Failed(e)) => return Err(e),
                Some(TokenEvent::PluginFailed(e)) => return Err(e.to_string()),
                None => return Err("the engine stopped".into()),
            }
        };
        Ok(GenerateResponse { text, finish_reason: finish.into(), prompt_tokens, completion_tokens })
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.embeddings.embed_texts(texts).map_err(|e| e.to_string())
    }
}

/// The decoded text of every token of the vocabulary, for sampler plugins' candidate texts.
pub fn vocab_texts(engine: &Engine) -> Vec<String> {
    let tokenizer = engine.tokenizer();
    (0..tokenizer.vocab_size() as u32).map(|id| tokenizer.decode(&[id], false).unwrap_or_default()).collect()
}
