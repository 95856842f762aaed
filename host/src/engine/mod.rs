//! The generation engine: one OS thread owns the model (TEI's backend-thread pattern); requests
//! arrive through a bounded queue (full → `Overloaded`, a 429) and stream token events back.
//! Running sequences share each forward pass (see `worker`), each with its own KV cache (on the
//! CPU a block table into one shared, prefix-reusing pool); a long prompt is prefilled in chunks
//! between the others' tokens, so it does not hold them hostage.
//! Dropping a [`GenerationStream`] cancels its sequence at once.

mod step;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::model::{LoadedModel, MediaSpan, PoolStats};
use crate::sampling::SamplingParams;
use crate::tokenizer::TextTokenizer;

pub use step::{KvShape, StepModel};
pub use worker::WorkerOptions;

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token (or, decided by the caller, a stop string).
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// Cancelled by `/v1/internal/stop-generation`.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Cancelled => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One generation request, already tokenized and validated.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    /// Most tokens to generate (capped by the context left after the prompt).
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Ids that end the generation (the model's end-of-generation ids unless banned).
    pub stop_ids: Vec<u32>,
    /// A grammar the output must follow (forced tool calls); it ends the generation when done.
    pub constraint: Option<crate::constraint::Constraint>,
    /// Instead of generating, report the next token's distribution (one
    /// [`TokenEvent::Distribution`], then `Finished`).
    pub distribution: Option<DistributionQuery>,
    /// Log-probabilities to report beside the tokens (`logprobs` / `top_logprobs`).
    pub logprobs: Option<LogprobsQuery>,
    /// Start from cached blocks of an earlier request with the same prefix (llama.cpp's
    /// `cache_prompt`; on by default). The output is the same either way, bit for bit: only
    /// blocks holding the numbers this request would compute itself are reused.
    pub cache_prompt: bool,
    /// Prompt positions whose input rows are given (images' embeddings), in prompt order.
    pub media: Arc<[MediaSpan]>,
}

/// The log-probabilities a request wants reported, under the model's own distribution (before
/// temperature and the truncation samplers; after a grammar's mask, which removes tokens the
/// output may not contain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogprobsQuery {
    /// Most likely alternatives per position (0: only the token itself).
    pub top: usize,
    /// Also score the prompt's own tokens (completions' `echo`): one
    /// [`TokenEvent::PromptLogprobs`] before the first token.
    pub prompt: bool,
}

/// A token, its log-probability and the position's most likely tokens, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    /// `None` for the prompt's first token, which nothing precedes.
    pub logprob: Option<f32>,
    pub top: Vec<(u32, f32)>,
}

/// What `/v1/internal/logits` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistributionQuery {
    /// After the request's samplers, or the model's own softmax.
    pub use_samplers: bool,
    /// Most tokens to report.
    pub top: usize,
}

/// What the engine streams back for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenEvent {
    /// A generated token. End-of-generation ids are not sent as tokens. `top` holds the
    /// position's most likely tokens when the request asked for them.
    Token { id: u32, logprob: f32, top: Vec<(u32, f32)> },
    /// Every prompt token scored by what precedes it (for a [`LogprobsQuery`] with `prompt`).
    PromptLogprobs(Vec<TokenLogprob>),
    /// The next token's distribution (for a [`DistributionQuery`]): ids and probabilities, most
    /// likely first.
    Distribution(Vec<(u32, f32)>),
    /// The sequence ended; no more events follow.
    Finished { reason: FinishReason },
    /// The sequence failed; no more events follow.
    Failed(String),
    /// A sampler plugin failed and its settings say to fail the request; no more events follow.
    PluginFailed(crate::plugins::PluginError),
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("the server is busy: {0} requests are already waiting; try again shortly")]
    Overloaded(usize),
    #[error("the generation engine has stopped")]
    Stopped,
}

/// Receives the events of one sequence; dropping it cancels the sequence.
pub struct GenerationStream {
    events: mpsc::UnboundedReceiver<TokenEvent>,
    cancelled: Arc<AtomicBool>,
    cached_tokens: CachedTokens,
}

impl GenerationStream {
    /// A stream that yields `events` and then ends (as a stopped engine's does), for tests of
    /// its consumers.
    #[cfg(test)]
    pub(crate) fn from_events(events: Vec<TokenEvent>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        for event in events {
            let _ = tx.send(event);
        }
        Self { events: rx, cancelled: Arc::new(AtomicBool::new(false)), cached_tokens: CachedTokens::default() }
    }

    /// The next event, or `None` once the sequence is over.
    pub async fn next(&mut self) -> Option<TokenEvent> {
        self.events.recv().await
    }

    /// Blocking variant for command-line use (not inside an async runtime).
    pub fn blocking_next(&mut self) -> Option<TokenEvent> {
        self.events.blocking_recv()
    }

    /// How many of the prompt's tokens came from the cache (known once the sequence starts).
    pub fn cached_tokens(&self) -> CachedTokens {
        self.cached_tokens.clone()
    }

    /// A handle that cancels this sequence from elsewhere (a deadline's watchdog); the stream
    /// then ends without a `Finished` event.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.cancelled.clone())
    }
}

/// The prompt tokens a sequence took from the KV cache instead of computing them (OpenAI's
/// `usage.prompt_tokens_details.cached_tokens`): 0 until the sequence has started.
#[derive(Debug, Clone, Default)]
pub struct CachedTokens(Arc<AtomicUsize>);

impl CachedTokens {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Cancels one sequence, as dropping its stream would.
#[derive(Clone)]
pub struct Canceller(Arc<AtomicBool>);

impl Canceller {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the sequence was cancelled (here, or by dropping its stream).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for GenerationStream {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

/// Who submitted a generation, so `/v1/internal/stop-generation` can stop one caller's
/// generations and leave everyone else's running. The HTTP layer names callers by their
/// network address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(pub String);

/// A request travelling to the worker.
struct Job {
    request: GenerationRequest,
    /// Set by [`Engine::stop_owned_by`]: the sequence ends as cancelled.
    stopped: Arc<AtomicBool>,
    // Unbounded, but a sequence emits at most `max_new_tokens + 1` events, so it is bounded by
    // the request itself; the worker must never block on a slow client.
    events: mpsc::UnboundedSender<TokenEvent>,
    cancelled: Arc<AtomicBool>,
    /// The cancel-all epoch when the job was submitted.
    epoch: u64,
    /// Set at admission: prompt tokens taken from the cache.
    cached_tokens: Arc<AtomicUsize>,
    /// When it was submitted (queue time, time to first token, end-to-end latency).
    submitted: std::time::Instant,
}

/// State shared by the handle and the worker.
#[derive(Default)]
struct Shared {
    /// Bumped by `cancel_all`; sequences from an older epoch stop.
    epoch: AtomicU64,
    queued: AtomicUsize,
    running: AtomicUsize,
    /// Sequences preempted so far (each waited for KV blocks and recomputed its context).
    preemptions: AtomicU64,
    /// The stop flag of every submitted generation with an owner, while it lives.
    owned: std::sync::Mutex<Vec<(Owner, std::sync::Weak<AtomicBool>)>>,
    /// The KV pool's block counts after the worker's last step (`None` without a pool).
    cache: std::sync::Mutex<Option<PoolStats>>,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    tokenizer: Arc<TextTokenizer>,
    model_name: Arc<str>,
    context_length: usize,
    queue_capacity: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("model", &self.model_name).finish()
    }
}

impl Engine {
    /// Starts the worker thread that owns `model`.
    pub fn start(model: LoadedModel, options: WorkerOptions) -> Self {
        let (jobs, rx) = mpsc::channel(options.queue_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let mut context_length = options.context_length.min(model.llama.max_positions()).max(1);
        let mut cache_positions = options.cache_positions;
        if let Some(shape) = model.llama.paged_kv() {
            // Sized once here, for the worker's pool and the context cap alike: a sequence
            // never needs more positions than the whole cache has.
            let sizing = WorkerOptions { context_length, ..options.clone() };
            let positions = worker::cache_blocks(&sizing, shape) * crate::model::kv_pool::PAGE;
            if positions < context_length {
                tracing::info!(positions, "the KV cache is smaller than the context; sequences are capped at its size");
                context_length = positions;
            }
            cache_positions = Some(positions);
        }
        let engine = Self {
            jobs,
            shared: shared.clone(),
            tokenizer: model.tokenizer.clone(),
            model_name: model.name.clone().into(),
            context_length,
            queue_capacity: options.queue_capacity,
        };
        let metrics = crate::telemetry::EngineMetrics::new(&model.name);
        worker::spawn(model.llama, rx, shared, WorkerOptions { context_length, cache_positions, ..options }, metrics);
        engine
    }

    pub fn tokenizer(&self) -> &Arc<TextTokenizer> {
        &self.tokenizer
    }

    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The most positions (prompt + generated) one sequence may use.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The KV cache's block counts (`None` on a GPU, whose sequences own their buffers).
    pub fn cache_stats(&self) -> Option<PoolStats> {
        *self.shared.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sequences preempted so far for want of KV blocks.
    pub fn preemptions(&self) -> u64 {
        self.shared.preemptions.load(Ordering::Relaxed)
    }

    /// Requests waiting for their first token, and sequences generating.
    pub fn load(&self) -> (usize, usize) {
        (self.shared.queued.load(Ordering::Relaxed), self.shared.running.load(Ordering::Relaxed))
    }

    /// Queues a request; its events arrive on the returned stream. `owner` is who may stop it
    /// besides a stop of everything.
    pub fn submit(&self, request: GenerationRequest, owner: Option<Owner>) -> Result<GenerationStream, EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let cached_tokens = CachedTokens::default();
        if let Some(owner) = owner {
            let mut owned = self.shared.owned.lock().unwrap_or_else(|p| p.into_inner());
            // Finished generations drop their flags; forget them here, so the list holds only
            // live ones.
            owned.retain(|(_, flag)| flag.strong_count() > 0);
            owned.push((owner, Arc::downgrade(&stopped)));
        }
        let job = Job {
            request,
            stopped,
            events: tx,
            cancelled: cancelled.clone(),
            epoch: self.shared.epoch.load(Ordering::SeqCst),
            cached_tokens: cached_tokens.0.clone(),
            submitted: std::time::Instant::now(),
        };
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(GenerationStream { events: rx, cancelled, cached_tokens }),
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => EngineError::Overloaded(self.queue_capacity),
                    mpsc::error::TrySendError::Closed(_) => EngineError::Stopped,
                })
            }
        }
    }

    /// Stops every generation submitted so far (textgen's stop-generation).
    pub fn cancel_all(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops the generations `owner` submitted so far; returns how many were running or queued.
    pub fn stop_owned_by(&self, owner: &Owner) -> usize {
        let owned = self.shared.owned.lock().unwrap_or_else(|p| p.into_inner());
        let mut stopped = 0;
        for (_, flag) in owned.iter().filter(|(o, _)| o == owner) {
            if let Some(flag) = flag.upgrade() {
                flag.store(true, Ordering::SeqCst);
                stopped += 1;
            }
        }
        stopped
    }
}
