//! The loaded model as plugins see it through their host functions: tokenize, detokenize and
//! generate with the served model, embed with the embedding model (blocking: plugins call them
//! from their own threads, never from async code).

use std::sync::Arc;
use std::time::Instant;

use hearth_plugin_bindings::sampler::hearth::plugin::host::{GenerateRequest, GenerateResponse};

use crate::decoded_stream::{DecodedStream, StreamError, TextEvent};
use crate::embedding_service::EmbeddingService;
use crate::engine::{Canceller, Engine, GenerationRequest};
use crate::plugins::HostServices;
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
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        tokenizer.ids_in_vocabulary(&ids).map_err(|e| e.to_string())?;
        tokenizer.decode(tokens, false).map_err(|e| e.to_string())
    }

    fn generate(&self, request: &GenerateRequest, deadline: Instant) -> Result<GenerateResponse, String> {
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
            cache_prompt: true,
            media: Default::default(),
            prompt,
            max_new_tokens: (request.max_tokens.min(MAX_PLUGIN_TOKENS) as usize).min(room),
            sampling: SamplingParams { temperature, ..SamplingParams::default() },
            stop_ids: tokenizer.end_ids.clone(),
        };
        let stream = engine.submit(generation, None).map_err(|e| e.to_string())?;
        let mut stream = DecodedStream::new(stream, Arc::clone(&tokenizer), request.stop.clone(), true);
        let watchdog = Watchdog::cancel_at(deadline, stream.canceller());
        let mut text = String::new();
        let mut completion_tokens = 0;
        let finish = loop {
            match stream.blocking_next() {
                Ok(Some(TextEvent::Token { text: t, .. })) => {
                    completion_tokens += 1;
                    text.push_str(&t);
                }
                Ok(Some(TextEvent::PromptLogprobs(_))) => {}
                Ok(Some(TextEvent::Finished { text: t, reason })) => {
                    text.push_str(&t);
                    break reason.as_openai();
                }
                Err(StreamError::EngineStopped) if watchdog.fired() => {
                    return Err("the plugin's host-function time ran out while generating (limits.host_ms)".into());
                }
                Err(e) => return Err(e.to_string()),
                Ok(None) => return Err("the generation ended without a finish reason".into()),
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

/// Cancels a generation at a deadline unless it is dropped first.
struct Watchdog {
    /// Dropped with the watchdog, which wakes its thread to end early.
    _done: std::sync::mpsc::Sender<()>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl Watchdog {
    fn cancel_at(deadline: Instant, canceller: Canceller) -> Self {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = fired.clone();
        let timeout = deadline.saturating_duration_since(Instant::now());
        let watch = move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(timeout) {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                canceller.cancel();
            }
        };
        if let Err(e) = std::thread::Builder::new().name("hearth-plugin-deadline".into()).spawn(watch) {
            // Without its watchdog the generation is still bounded by its token cap.
            tracing::warn!("cannot start a plugin generation's deadline thread: {e}");
        }
        Self { _done: done, fired }
    }

    fn fired(&self) -> bool {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }
}
