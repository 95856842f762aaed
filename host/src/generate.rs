//! `hearth generate`: load a model, run one prompt, stream the text to a writer. Humans use it to
//! try a model; benchmarks read the timing line it prints to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use crate::decoded_stream::{DecodedStream, TextEvent};
use crate::engine::{Engine, FinishReason, GenerationRequest, WorkerOptions};
use crate::model::{self, DeviceChoice, LoadError};
use crate::prompt::chat::{ChatRenderer, Conversation};
use crate::sampling::SamplingParams;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateArgs {
    pub model: PathBuf,
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    pub chat: bool,
    pub system: Option<String>,
    pub max_tokens: usize,
    pub device: DeviceChoice,
    pub sampling: SamplingParams,
    pub context_length: usize,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    #[error("{0}")]
    Template(#[from] crate::prompt::TemplateError),
    #[error("{0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("{0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("generation failed: {0}")]
    Failed(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Timings of one run.
#[derive(Debug, Clone)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Seconds from submission to the first token (prefill).
    pub prefill_secs: f64,
    /// Seconds from the first token to the last.
    pub decode_secs: f64,
    pub finish: FinishReason,
}

/// Runs the prompt and writes text to `out` as it is generated.
pub fn run(args: &GenerateArgs, out: &mut dyn Write) -> Result<GenerateStats, GenerateError> {
    let device = model::device::select(args.device).map_err(model::ModelError::from)?;
    tracing::info!("device: {}", device.description);
    let loaded = model::load(&args.model, &device)?;
    let tokenizer = loaded.tokenizer.clone();
    let prompt_ids = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(serde_json::json!({"role": "system", "content": system}));
        }
        messages.push(serde_json::json!({"role": "user", "content": args.prompt}));
        let renderer = ChatRenderer::new(&tokenizer)?;
        let (text, _) = renderer.render(&Conversation {
            messages: &messages,
            add_generation_prompt: true,
            ..Default::default()
        })?;
        tokenizer.encode(&text, false)?
    } else {
        tokenizer.encode(&args.prompt, true)?
    };
    let engine = Engine::start(
        loaded,
        WorkerOptions { context_length: args.context_length, warm_up: false, ..WorkerOptions::default() },
    );
    let request = GenerationRequest {
        constraint: None,
        distribution: None,
        logprobs: None,
        cache_prompt: true,
        media: Default::default(),
        prompt: prompt_ids.clone(),
        max_new_tokens: args.max_tokens,
        sampling: args.sampling.clone(),
        stop_ids: tokenizer.end_ids.clone(),
    };
    let started = Instant::now();
    let stream = engine.submit(request, None)?;
    let mut stream = DecodedStream::new(stream, tokenizer.clone(), vec![], true);
    let mut first_token_at = None;
    let mut generated = 0;
    let finish = loop {
        match stream.blocking_next().map_err(|e| GenerateError::Failed(e.to_string()))? {
            Some(TextEvent::Token { text, .. }) => {
                first_token_at.get_or_insert_with(Instant::now);
                generated += 1;
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            Some(TextEvent::PromptLogprobs(_)) => {}
            Some(TextEvent::Finished { text, reason }) => {
                out.write_all(text.as_bytes())?;
                break reason;
            }
            None => return Err(GenerateError::Failed("the generation ended without a finish reason".into())),
        }
    };
    writeln!(out)?;
    let first = first_token_at.unwrap_or_else(Instant::now);
    Ok(GenerateStats {
        prompt_tokens: prompt_ids.len(),
        generated_tokens: generated,
        prefill_secs: first.duration_since(started).as_secs_f64(),
        decode_secs: first.elapsed().as_secs_f64(),
        finish,
    })
}
