//! The model thread: a batching scheduler. Each tick it admits queued jobs, then runs ONE
//! forward pass over a flat batch — a token for every sequence that is generating, plus at most
//! one chunk of one sequence's prompt (chunked prefill) — samples each sequence's next token and
//! streams events. Prompt tokens and generated tokens are each computed so that a row's numbers
//! do not depend on the rows beside it, so a sequence gets the same numbers (and a greedy
//! request the same text) however many others share its steps, however its prompt is chunked,
//! and whether it starts from cached blocks or recomputes after a preemption. A panic inside
//! the model fails that step's sequences, not the thread.
//!
//! On the CPU every sequence's cache is a block table into one [`KvPool`]. A new sequence
//! starts from the blocks of its longest registered prefix (an earlier turn of its chat, a
//! shared system prompt) and prefills only the rest. A job waits in the queue until its prompt
//! fits; when the running sequences need more blocks than are free, the youngest is preempted:
//! its blocks go back (staying in the prefix index) and it resumes, recomputing what it lost,
//! once there is room — it is delayed, never failed.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::step::{KvShape, StepModel};
use super::{FinishReason, Job, Shared, TokenEvent, TokenLogprob};
use crate::constraint::Constraint;
use crate::model::kv_pool::PAGE;
use crate::model::{BatchItem, KvCache, KvPool, LogitsFor, ModelError, StepLogits};
use crate::model::{MediaSpan, media};
use crate::plugins::{PluginError, PluginRegistry, SamplerSession};
use crate::sampling::{Candidates, HookedSampling, Sampled, Sampler, log_softmax_at, top_logprobs};
use crate::telemetry::{EngineMetrics, Finished};

/// Tuning of the engine.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Requests that may wait before new ones are refused.
    pub queue_capacity: usize,
    /// Sequences in a batch at the same time (each holds a KV cache).
    pub max_running: usize,
    /// Most prompt tokens one tick prefills (one sequence's chunk).
    pub prefill_chunk: usize,
    /// Most positions per sequence (capped by the model's own context length and the cache).
    pub context_length: usize,
    /// Positions the CPU path's KV cache holds across all sequences (`None`: see
    /// [`cache_blocks`]).
    pub cache_positions: Option<usize>,
    /// Run the model once on typical shapes at start (wgpu compiles kernels per shape).
    pub warm_up: bool,
    /// Sampler plugins run on every generated token (`None`: no sampler plugins).
    pub plugins: Option<Arc<PluginRegistry>>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            max_running: 16,
            prefill_chunk: 512,
            context_length: 8192,
            cache_positions: None,
            warm_up: true,
            plugins: None,
        }
    }
}

/// A sequence being generated.
struct Sequence {
    job: Job,
    cache: KvCache,
    sampler: Sampler,
    /// Prompt and generated tokens; `cache` holds the first `cache.len()` of them.
    context: Vec<u32>,
    prompt_len: usize,
    max_new: usize,
    /// Sampler plugin instances of this generation.
    samplers: Vec<SamplerSession>,
    /// The grammar the output follows, if any.
    constraint: Option<Constraint>,
    /// When it was admitted (the prefill log line's time).
    admitted: Instant,
    /// Admission order: the youngest (highest) is preempted first.
    arrival: u64,
    /// Its prompt's scores were sent (a resumed sequence does not score it again).
    prompt_scored: bool,
    /// When its last token was sent (inter-token latency).
    last_token: Option<Instant>,
    metrics: EngineMetrics,
}

impl Sequence {
    /// Tokens of its context the cache does not hold yet: 1 while it generates (the token
    /// sampled last), more while its prompt (or, after a preemption, its whole context) is
    /// being prefilled.
    fn pending(&self) -> usize {
        self.context.len() - self.cache.len()
    }

    /// The temperature to ask the step for candidates at, when its next token may be chosen
    /// from them: no grammar, distribution query, log-probabilities or sampler plugin needs
    /// the whole row, and its sampler settings allow it.
    fn candidate_temperature(&self) -> Option<f32> {
        let r = &self.job.request;
        if self.constraint.is_some() || r.distribution.is_some() || r.logprobs.is_some() || !self.samplers.is_empty() {
            return None;
        }
        self.sampler.candidate_temperature()
    }

    /// Whether it is past its prefill and generating a token per step (its prompt in the
    /// cache, and no more than the token sampled last to run).
    fn generating(&self) -> bool {
        self.pending() <= 1 && self.cache.len() >= self.prompt_len
    }

    /// Whether its prompt is scored position by position (completions' `echo` with
    /// `logprobs`): that prefill runs on its own.
    fn scores_prompt(&self) -> bool {
        self.job.request.logprobs.is_some_and(|q| q.prompt) && !self.prompt_scored
    }

    /// Positions its cache must hold after this tick's step (given the tick's prefill chunk).
    fn step_end(&self, chunk: usize) -> usize {
        (self.cache.len() + chunk.max(1)).min(self.context.len())
    }
}

enum Step {
    Continue,
    Done,
}

/// Positions per batched sequence the KV cache holds by default. The pool is shared, so one
/// sequence may grow to the whole context while others are short.
const DEFAULT_POSITIONS_PER_SEQUENCE: usize = 512;

/// Blocks of the CPU path's KV pool: `cache_positions` when set, else
/// [`DEFAULT_POSITIONS_PER_SEQUENCE`] for each of `max_running` sequences and at least one
/// context, at most a quarter of the machine's memory (a context beyond that is capped to it).
pub(super) fn cache_blocks(options: &WorkerOptions, shape: KvShape) -> usize {
    let per_position = KvPool::bytes_per_position(shape.layers, shape.kv_heads, shape.head_dim).max(1);
    let context = options.context_length.max(1);
    let positions = options.cache_positions.unwrap_or_else(|| {
        let wanted =
            options.max_running.max(1).saturating_mul(DEFAULT_POSITIONS_PER_SEQUENCE.min(context)).max(context);
        let budget = (physical_memory() / 4 / per_position).max(PAGE);
        wanted.min(budget)
    });
    positions.div_ceil(PAGE).max(1)
}

/// Bytes of memory the machine has (8 GiB where it cannot be read).
fn physical_memory() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system configuration values.
        let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && page > 0 {
            return (pages as usize).saturating_mul(page as usize);
        }
    }
    8 << 30
}

pub(super) fn spawn(
    model: impl StepModel,
    jobs: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    options: WorkerOptions,
    metrics: EngineMetrics,
) {
    let pool = model.paged_kv().map(|shape| {
        let blocks = cache_blocks(&options, shape);
        let pool = KvPool::committed(blocks, shape.layers, shape.kv_heads, shape.head_dim);
        let mib = (blocks * PAGE * KvPool::bytes_per_position(shape.layers, shape.kv_heads, shape.head_dim)) >> 20;
        tracing::info!(positions = blocks * PAGE, mib, "KV cache ready");
        Arc::new(Mutex::new(pool))
    });
    let worker = Worker {
        model,
        jobs,
        shared,
        options,
        pool,
        running: Vec::new(),
        preempted: VecDeque::new(),
        waiting: None,
        arrivals: 0,
        metrics,
    };
    // If the thread cannot start, the job channel closes and submit() reports `Stopped`.
    if let Err(e) = std::thread::Builder::new().name("hearth-model".into()).spawn(move || worker.run()) {
        tracing::error!("cannot start the model thread: {e}");
    }
}

struct Worker<M> {
    model: M,
    jobs: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    options: WorkerOptions,
    /// The CPU path's KV cache (`None` on a GPU, where each sequence owns device buffers).
    pool: Option<Arc<Mutex<KvPool>>>,
    /// In admission order: the first one still prefilling gets the tick's prompt chunk.
    running: Vec<Sequence>,
    /// Sequences that gave their blocks back for older ones, oldest first; they resume before
    /// any new job is admitted.
    preempted: VecDeque<Sequence>,
    /// A job taken from the queue whose prompt does not fit in the cache yet.
    waiting: Option<Job>,
    arrivals: u64,
    metrics: EngineMetrics,
}

impl<M: StepModel> Worker<M> {
    fn run(mut self) {
        if self.options.warm_up && self.pool.is_none() {
            let started = Instant::now();
            match self.model.warm_up(self.options.context_length) {
                Ok(()) => tracing::info!("warmed up the device in {:.1} s", started.elapsed().as_secs_f32()),
                Err(e) => tracing::warn!("warm-up failed: {e}"),
            }
        }
        loop {
            if self.running.is_empty() && self.preempted.is_empty() && self.waiting.is_none() {
                self.publish_state();
                release_freed_memory();
                match self.jobs.blocking_recv() {
                    Some(job) => self.waiting = Some(job),
                    None => return,
                }
            }
            self.drop_ended_preempted();
            self.resume_preempted();
            self.admit_queued();
            self.tick();
            self.publish_state();
        }
    }

    /// The pool's block counts, for [`super::Engine::cache_stats`], and the batch's, the
    /// queue's and the cache's state for `/metrics` (preempted sequences wait).
    fn publish_state(&self) {
        let stats = self.pool.as_ref().map(|pool| pool.lock().unwrap_or_else(|p| p.into_inner()).stats());
        if stats.is_some() {
            *self.shared.cache.lock().unwrap_or_else(|p| p.into_inner()) = stats;
        }
        let usage = stats.map(|s| s.in_use as f64 / s.total.max(1) as f64);
        let waiting = self.shared.queued.load(Ordering::Relaxed) + self.preempted.len();
        self.metrics.load(self.running.len(), waiting, usage);
    }

    /// Blocks sequences could take now (unbounded without a pool).
    fn available_blocks(&self) -> usize {
        match &self.pool {
            Some(pool) => pool.lock().unwrap_or_else(|p| p.into_inner()).available(),
            None => usize::MAX,
        }
    }

    /// Whether a sequence of `positions` may join the batch: a free place in it, and (on the
    /// CPU) blocks for all its positions with one to spare for each running sequence's next
    /// token. An empty batch takes anything: a context always fits in the whole pool.
    fn has_room_for(&self, positions: usize) -> bool {
        if self.running.is_empty() {
            return true;
        }
        self.running.len() < self.options.max_running.max(1)
            && (self.pool.is_none() || self.available_blocks() >= positions.div_ceil(PAGE) + self.running.len())
    }

    /// Ends preempted sequences whose client left or that were stopped while they waited.
    fn drop_ended_preempted(&mut self) {
        let epoch = self.shared.epoch.load(Ordering::SeqCst);
        let before = self.preempted.len();
        self.preempted.retain_mut(|seq| matches!(check_ended(seq, epoch), Step::Continue));
        for _ in self.preempted.len()..before {
            self.shared.running.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Puts preempted sequences back into the batch, oldest first, while they fit.
    fn resume_preempted(&mut self) {
        while let Some(seq) = self.preempted.front() {
            if !self.has_room_for(seq.context.len()) {
                return;
            }
            let Some(mut seq) = self.preempted.pop_front() else { return };
            let keys = media::cache_keys(&seq.context, 0, &seq.job.request.media);
            let cached = seq.cache.adopt_prefix(&keys, seq.prompt_len);
            tracing::debug!(cached, recompute = seq.context.len() - cached, "resumed a preempted sequence");
            self.running.push(seq);
        }
    }

    /// Admits queued jobs while they fit (after every preempted sequence has resumed).
    fn admit_queued(&mut self) {
        while self.preempted.is_empty() {
            let job = match self.waiting.take() {
                Some(job) => job,
                None => match self.jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            if !self.has_room_for(job.request.prompt.len() + 1) {
                self.waiting = Some(job);
                return;
            }
            self.admit(job);
        }
    }

    /// Gives the youngest running sequence's blocks back (other than the one that arrived
    /// `except`) and parks it until there is room; false when there is none to preempt.
    fn preempt_youngest(&mut self, except: Option<u64>) -> bool {
        let candidates = (0..self.running.len()).filter(|&i| Some(self.running[i].arrival) != except);
        let Some(i) = candidates.max_by_key(|&i| self.running[i].arrival) else { return false };
        let mut seq = self.running.remove(i);
        seq.cache = self.new_cache();
        self.shared.preemptions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            running = self.running.len(),
            "the KV cache is full: a sequence waits for blocks and will recompute its context"
        );
        let at = self.preempted.partition_point(|p| p.arrival < seq.arrival);
        self.preempted.insert(at, seq);
        true
    }

    /// An empty cache for a new sequence.
    fn new_cache(&self) -> KvCache {
        match &self.pool {
            Some(pool) => KvCache::paged(pool.clone(), self.options.context_length, self.model.device()),
            None => self.model.own_cache(self.options.context_length),
        }
    }

    /// One step of every running sequence.
    fn tick(&mut self) {
        let epoch = self.shared.epoch.load(Ordering::SeqCst);
        let ended: Vec<usize> = (0..self.running.len())
            .filter(|&i| matches!(check_ended(&mut self.running[i], epoch), Step::Done))
            .collect();
        self.remove_all(ended);
        if self.running.is_empty() {
            return;
        }
        // A prompt that is scored token by token runs alone, before the batch, with blocks for
        // all of it (younger sequences wait for them if need be).
        if let Some(arrival) = self.running.iter().find(|s| !s.generating() && s.scores_prompt()).map(|s| s.arrival) {
            let i = loop {
                let Some(i) = self.running.iter().position(|s| s.arrival == arrival) else { return };
                let seq = &self.running[i];
                let needed = seq.cache.blocks_needed(seq.context.len());
                if needed == 0 || needed <= self.available_blocks() || !self.preempt_youngest(Some(arrival)) {
                    break i;
                }
            };
            let outcome = self.guarded(i, |w, i| w.prefill_scored(i));
            if matches!(outcome, Step::Done) {
                self.remove_all(vec![i]);
            }
            return;
        }
        let chunk = self.options.prefill_chunk.max(1);
        // The step's new blocks must be there: the youngest sequences wait while they are not.
        let prefilling = loop {
            let prefilling = self.running.iter().position(|s| !s.generating());
            let needed: usize = self
                .running
                .iter()
                .enumerate()
                .filter(|(i, s)| s.generating() || Some(*i) == prefilling)
                .map(|(_, s)| s.cache.blocks_needed(s.step_end(chunk)))
                .sum();
            if needed == 0 || self.running.len() == 1 || needed <= self.available_blocks() {
                break prefilling;
            }
            self.preempt_youngest(None);
        };
        let started = Instant::now();
        // The batch: every generating sequence's next token (in admission order), then the
        // chunk of the first prompt still being prefilled.
        let mut order = Vec::with_capacity(self.running.len());
        let logits = {
            let mut items: Vec<BatchItem<'_>> = Vec::with_capacity(self.running.len());
            let mut chunk_item = None;
            for (i, seq) in self.running.iter_mut().enumerate() {
                let done = seq.cache.len();
                if seq.generating() {
                    order.push(i);
                    let candidates = seq.candidate_temperature();
                    items.push(BatchItem {
                        tokens: &seq.context[done..],
                        cache: &mut seq.cache,
                        logits: LogitsFor::Last,
                        prompt_rows: 0,
                        candidates,
                        media: &seq.job.request.media,
                    });
                } else if Some(i) == prefilling {
                    let end = seq.step_end(chunk);
                    let tokens = &seq.context[done..end];
                    // A resumed sequence recomputes its generated tokens as generated tokens.
                    let prompt_rows = seq.prompt_len.saturating_sub(done).min(tokens.len());
                    let candidates = seq.candidate_temperature();
                    let cache = &mut seq.cache;
                    let media = &seq.job.request.media;
                    let item = BatchItem { tokens, cache, logits: LogitsFor::Last, prompt_rows, candidates, media };
                    chunk_item = Some((i, item));
                }
            }
            if let Some((i, item)) = chunk_item {
                order.push(i);
                items.push(item);
            }
            let model = &self.model;
            catch_unwind(AssertUnwindSafe(|| model.forward_step(&mut items)))
        };
        let outcome = match logits {
            Ok(Ok(l)) if l.len() == order.len() => Ok(l),
            Ok(Ok(_)) => Err("internal model error: the batch lost a sequence".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => {
                let msg = crate::panics::panic_message(&*panic);
                tracing::error!("the model panicked: {msg}");
                Err(format!("internal model error: {msg}"))
            }
        };
        let logits = match outcome {
            Ok(l) => l,
            Err(message) => {
                // A cache the failed step half-wrote is not used again: its sequences end here.
                for &i in &order {
                    let _ = self.running[i].job.events.send(TokenEvent::Failed(message.clone()));
                }
                self.remove_all(order);
                return;
            }
        };
        tracing::trace!(sequences = order.len(), ms = started.elapsed().as_millis() as u64, "batched step");
        let mut ended = Vec::new();
        for (&i, logits) in order.iter().zip(logits) {
            let seq = &self.running[i];
            if seq.cache.len() < seq.context.len() {
                continue; // more of its prompt next tick
            }
            if seq.context.len() == seq.prompt_len {
                tracing::debug!(tokens = seq.prompt_len, ms = seq.admitted.elapsed().as_millis() as u64, "prefill");
            }
            if matches!(self.guarded(i, |w, i| w.after_step(i, logits)), Step::Done) {
                ended.push(i);
            }
        }
        self.remove_all(ended);
    }

    /// Drops the sequences at `indices` (any order).
    fn remove_all(&mut self, mut indices: Vec<usize>) {
        indices.sort_unstable();
        indices.dedup();
        // Last first, so the earlier indices stay valid; `remove`, not `swap_remove`: admission
        // order decides whose prompt is prefilled next.
        for i in indices.into_iter().rev() {
            self.running.remove(i);
            self.shared.running.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Runs `f` for sequence `i`; a panic fails that sequence alone.
    fn guarded(&mut self, i: usize, f: impl FnOnce(&mut Self, usize) -> Step) -> Step {
        catch_unwind(AssertUnwindSafe(|| f(self, i))).unwrap_or_else(|panic| {
            let msg = crate::panics::panic_message(&*panic);
            tracing::error!("the model panicked: {msg}");
            end(&self.running[i], TokenEvent::Failed(format!("internal model error: {msg}")))
        })
    }

    fn admit(&mut self, mut job: Job) {
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        let ctx = self.options.context_length;
        let prompt_len = job.request.prompt.len();
        if prompt_len == 0 || prompt_len >= ctx {
            self.metrics.finished(Finished::Error, job.submitted.elapsed());
            let _ = job.events.send(TokenEvent::Failed(format!(
                "the prompt has {prompt_len} tokens; it must have at least 1 and fewer than the context length {ctx}"
            )));
            return;
        }
        let max_new = job.request.max_new_tokens.min(ctx - prompt_len);
        let samplers = match self.options.plugins.as_ref().filter(|p| p.has_samplers()) {
            Some(registry) => match registry.start_samplers() {
                Ok(sessions) => sessions,
                Err(e) => {
                    self.metrics.finished(Finished::Error, job.submitted.elapsed());
                    let _ = job.events.send(TokenEvent::PluginFailed(e));
                    return;
                }
            },
            None => Vec::new(),
        };
        let mut cache = self.new_cache();
        // A scored prompt needs every position's logits, so it computes them all.
        let scores_prompt = job.request.logprobs.is_some_and(|q| q.prompt);
        let mut cached = 0;
        if job.request.cache_prompt && !scores_prompt {
            cached = cache.adopt_prefix(&media::cache_keys(&job.request.prompt, 0, &job.request.media), prompt_len);
            job.cached_tokens.store(cached, Ordering::Relaxed);
        }
        self.metrics.admitted(job.submitted.elapsed(), prompt_len, cached);
        let sampler = Sampler::for_prompt(job.request.sampling.clone(), &job.request.prompt);
        let context = job.request.prompt.clone();
        let constraint = job.request.constraint.take();
        self.shared.running.fetch_add(1, Ordering::Relaxed);
        self.arrivals += 1;
        self.running.push(Sequence {
            job,
            cache,
            sampler,
            context,
            prompt_len,
            max_new,
            samplers,
            constraint,
            admitted: Instant::now(),
            arrival: self.arrivals,
            prompt_scored: false,
            last_token: None,
            metrics: self.metrics.clone(),
        });
    }

    /// Prefills a sequence whose prompt tokens are scored, and takes its first token.
    fn prefill_scored(&mut self, i: usize) -> Step {
        let seq = &mut self.running[i];
        seq.prompt_scored = true;
        let top = seq.job.request.logprobs.map_or(0, |q| q.top);
        let ran = score_prompt(&self.model, &seq.context, &seq.job.request.media, &mut seq.cache, top).map(
            |(logits, scored)| {
                let _ = seq.job.events.send(TokenEvent::PromptLogprobs(scored));
                logits
            },
        );
        match ran {
            Ok(logits) => self.after_logits(i, logits),
            Err(e) => end(&self.running[i], TokenEvent::Failed(e.to_string())),
        }
    }

    /// Sequence `i`'s token from a step's output: chosen from its candidates when they decide
    /// it, else from the whole row (read back now if the step left it on the device).
    fn after_step(&mut self, i: usize, out: StepLogits) -> Step {
        let out = match out {
            StepLogits::Top(top) => {
                let seq = &mut self.running[i];
                if let Some(sampled) = seq.sampler.sample_candidates(&top.candidates, &seq.context) {
                    return self.after_sampled(i, sampled, Vec::new());
                }
                StepLogits::Top(top)
            }
            full => full,
        };
        match out.into_full() {
            Ok(logits) => self.after_logits(i, logits),
            Err(e) => end(&self.running[i], TokenEvent::Failed(e.to_string())),
        }
    }

    /// Everything after the model's logits for sequence `i`: the grammar mask, a distribution
    /// query's answer, sampling, stop ids and limits, and the token event.
    fn after_logits(&mut self, i: usize, logits: Vec<f32>) -> Step {
        let seq = &mut self.running[i];
        let query = seq.job.request.logprobs;
        let mut logits = logits;
        if let Some(constraint) = seq.constraint.as_mut()
            && let Err(e) = constraint.mask(&mut logits, &seq.job.request.stop_ids)
        {
            return end(seq, TokenEvent::Failed(format!("constrained decoding failed: {e}")));
        }
        if let Some(query) = seq.job.request.distribution {
            let dist = seq.sampler.distribution(&logits, &seq.context, query.use_samplers, query.top);
            let _ = seq.job.events.send(TokenEvent::Distribution(dist));
            return end(seq, TokenEvent::Finished { reason: FinishReason::Stop });
        }
        let sampled = match sample(seq, &logits) {
            Ok(s) => s,
            Err(failure) => {
                return end(seq, failure);
            }
        };
        let top = query.map_or_else(Vec::new, |q| top_logprobs(&logits, q.top));
        self.after_sampled(i, sampled, top)
    }

    /// Sequence `i`'s chosen token (with the `top` log-probabilities asked for): stop ids, the
    /// token event, the grammar's advance and the length limit.
    fn after_sampled(&mut self, i: usize, sampled: Sampled, top: Vec<(u32, f32)>) -> Step {
        let seq = &mut self.running[i];
        if seq.job.request.stop_ids.contains(&sampled.id) {
            return end(seq, TokenEvent::Finished { reason: FinishReason::Stop });
        }
        seq.context.push(sampled.id);
        let now = Instant::now();
        seq.metrics.token(now - seq.job.submitted, seq.last_token.map(|t| now - t));
        seq.last_token = Some(now);
        if seq.job.events.send(TokenEvent::Token { id: sampled.id, logprob: sampled.logprob, top }).is_err() {
            return receiver_gone(seq);
        }
        if let Some(constraint) = seq.constraint.as_mut() {
            if let Err(e) = constraint.accept(sampled.id) {
                return end(seq, TokenEvent::Failed(format!("constrained decoding failed: {e}")));
            }
            if constraint.is_finished() {
                return end(seq, TokenEvent::Finished { reason: FinishReason::Stop });
            }
        }
        if seq.context.len() - seq.prompt_len >= seq.max_new {
            return end(seq, TokenEvent::Finished { reason: FinishReason::Length });
        }
        Step::Continue
    }
}

/// Ends a sequence before its step when its client is gone, it was stopped, or it has no room
/// to generate.
fn check_ended(seq: &mut Sequence, epoch: u64) -> Step {
    if seq.job.cancelled.load(Ordering::Relaxed) || seq.job.events.is_closed() {
        return receiver_gone(seq);
    }
    if seq.job.epoch != epoch || seq.job.stopped.load(Ordering::SeqCst) {
        return end(seq, TokenEvent::Finished { reason: FinishReason::Cancelled });
    }
    if seq.max_new == 0 {
        return end(seq, TokenEvent::Finished { reason: FinishReason::Length });
    }
    Step::Continue
}

/// Chooses the next token, letting sampler plugins edit the candidates first. A plugin that
/// fails is dropped from the generation when its `on_error` is `skip`; otherwise the generation
/// fails with its error.
fn sample(seq: &mut Sequence, logits: &[f32]) -> Result<Sampled, TokenEvent> {
    if seq.samplers.is_empty() {
        return Ok(seq.sampler.sample(logits, &seq.context));
    }
    let sessions = &mut seq.samplers;
    let mut hook = |candidates: &mut Candidates| -> Result<(), PluginError> {
        let mut i = 0;
        while i < sessions.len() {
            match sessions[i].process(candidates) {
                Ok(()) => i += 1,
                Err(e) if sessions[i].plugin().skips_on_error() => {
                    tracing::warn!("{e}; skipped for the rest of this generation");
                    sessions.remove(i);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let sampled = match seq.sampler.sample_with(logits, &seq.context, &mut hook) {
        Ok(s) => s,
        Err(HookedSampling::Hook(e)) => return Err(TokenEvent::PluginFailed(e)),
        // No plugin failed: between them they banned every candidate.
        Err(HookedSampling::NothingLeft) => {
            return Err(TokenEvent::PluginFailed(PluginError::BadOutput {
                plugin: seq.samplers.iter().map(|s| s.plugin().name.to_string()).collect::<Vec<_>>().join("`, `"),
                reason: "every candidate token was removed".into(),
            }));
        }
    };
    let mut i = 0;
    while i < seq.samplers.len() {
        match seq.samplers[i].accept(sampled.id) {
            Ok(()) => i += 1,
            Err(e) if seq.samplers[i].plugin().skips_on_error() => {
                tracing::warn!("{e}; skipped for the rest of this generation");
                seq.samplers.remove(i);
            }
            Err(e) => return Err(TokenEvent::PluginFailed(e)),
        }
    }
    Ok(sampled)
}

/// Hands the memory of finished sequences (their KV caches, the step's buffers) back to the
/// system once the engine is idle: glibc's allocator otherwise keeps freed pages in its arenas,
/// and a burst of concurrent sequences would hold the server's resident size up long after.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Ends a sequence with its last event (a finish or a failure). The receiver may be gone
/// already; the sequence ends either way.
fn end(seq: &Sequence, event: TokenEvent) -> Step {
    let reason = match &event {
        TokenEvent::Finished { reason: FinishReason::Stop } => Finished::Stop,
        TokenEvent::Finished { reason: FinishReason::Length } => Finished::Length,
        TokenEvent::Finished { reason: FinishReason::Cancelled } => Finished::Abort,
        _ => Finished::Error,
    };
    seq.metrics.finished(reason, seq.job.submitted.elapsed());
    let _ = seq.job.events.send(event);
    Step::Done
}

/// Ends a sequence whose receiver is gone: the client disconnected, or its stop string matched.
fn receiver_gone(seq: &Sequence) -> Step {
    seq.metrics.finished(Finished::Abort, seq.job.submitted.elapsed());
    tracing::info!(generated = seq.context.len() - seq.prompt_len, "generation cancelled by its receiver");
    Step::Done
}

/// Prompt positions run per step when the prompt is scored: every position's logits come back
/// to the host (a vocabulary's worth each), so a long prompt goes through in slices.
const SCORED_PROMPT_SLICE: usize = 128;

/// Prefills `prompt` scoring each of its tokens by the positions before it; returns the last
/// position's logits (for the first generated token) and the scores, the first token unscored.
fn score_prompt(
    model: &impl StepModel,
    prompt: &[u32],
    media: &[MediaSpan],
    cache: &mut KvCache,
    top: usize,
) -> Result<(Vec<f32>, Vec<TokenLogprob>), ModelError> {
    let vocab = model.vocab_size();
    let mut scored = Vec::with_capacity(prompt.len());
    if let Some(&first) = prompt.first() {
        scored.push(TokenLogprob { id: first, logprob: None, top: Vec::new() });
    }
    let mut last = Vec::new();
    for (n, slice) in prompt.chunks(SCORED_PROMPT_SLICE).enumerate() {
        let item = BatchItem {
            tokens: slice,
            cache: &mut *cache,
            logits: LogitsFor::All,
            prompt_rows: slice.len(),
            candidates: None,
            media,
        };
        let rows = match model.forward_step(&mut [item])?.pop() {
            Some(out) => out.into_full()?,
            None => Vec::new(),
        };
        for (r, row) in rows.chunks_exact(vocab).enumerate() {
            let position = n * SCORED_PROMPT_SLICE + r;
            match prompt.get(position + 1) {
                Some(&next) => scored.push(TokenLogprob {
                    id: next,
                    logprob: Some(log_softmax_at(row, next as usize)),
                    top: top_logprobs(row, top),
                }),
                None => last = row.to_vec(),
            }
        }
    }
    if last.len() != vocab {
        return Err(ModelError::Execution("the model returned no logits for the prompt's last position".into()));
    }
    Ok((last, scored))
}

#[cfg(test)]
mod tests {
    //! The scheduler without weights: a model whose next token is always its last token + 1
    //! (so every sequence's right answer is known), on a real pool of blocks.

    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::time::Duration;

    use burn::tensor::Device;

    use super::*;
    use crate::engine::GenerationRequest;
    use crate::model::PoolStats;
    use crate::sampling::SamplingParams;

    const VOCAB: usize = 1000;

    struct Counting {
        device: Device,
    }

    impl StepModel for Counting {
        fn forward_step(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<StepLogits>, ModelError> {
            let mut out = Vec::new();
            for item in items.iter_mut() {
                item.cache.reserve(item.cache.len() + item.tokens.len())?;
                item.cache.commit(item.tokens, item.prompt_rows);
                let rows = match item.logits {
                    LogitsFor::Last => &item.tokens[item.tokens.len() - 1..],
                    LogitsFor::All => item.tokens,
                };
                let mut logits = vec![0f32; rows.len() * VOCAB];
                for (r, &t) in rows.iter().enumerate() {
                    logits[r * VOCAB + (t as usize + 1) % VOCAB] = 10.0;
                }
                out.push(StepLogits::Full(logits));
            }
            Ok(out)
        }

        fn paged_kv(&self) -> Option<KvShape> {
            Some(KvShape { layers: 1, kv_heads: 1, head_dim: 8 })
        }

        fn own_cache(&self, max_len: usize) -> KvCache {
            KvCache::new(1, 1, 8, max_len, &self.device, true)
        }

        fn device(&self) -> &Device {
            &self.device
        }

        fn vocab_size(&self) -> usize {
            VOCAB
        }

        fn max_positions(&self) -> usize {
            4096
        }

        fn warm_up(&self, _: usize) -> Result<(), ModelError> {
            Ok(())
        }
    }

    struct Harness {
        jobs: mpsc::Sender<Job>,
        shared: Arc<Shared>,
    }

    struct Submitted {
        events: mpsc::UnboundedReceiver<TokenEvent>,
        cancelled: Arc<AtomicBool>,
        cached: Arc<AtomicUsize>,
    }

    impl Harness {
        fn start(options: WorkerOptions) -> Self {
            let (jobs, rx) = mpsc::channel(64);
            let shared = Arc::new(Shared::default());
            let model = Counting { device: crate::model::device::ComputeDevice::flex().device };
            let metrics = EngineMetrics::new("counting-test-model");
            spawn(model, rx, shared.clone(), WorkerOptions { warm_up: false, ..options }, metrics);
            Self { jobs, shared }
        }

        fn submit(&self, prompt: Vec<u32>, max_new_tokens: usize) -> Submitted {
            let (tx, events) = mpsc::unbounded_channel();
            let (cancelled, cached) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
            let request = GenerationRequest {
                prompt,
                max_new_tokens,
                sampling: SamplingParams { temperature: 0.0, ..SamplingParams::default() },
                stop_ids: Vec::new(),
                constraint: None,
                distribution: None,
                logprobs: None,
                cache_prompt: true,
                media: Default::default(),
            };
            let job = Job {
                request,
                stopped: Arc::new(AtomicBool::new(false)),
                events: tx,
                cancelled: cancelled.clone(),
                epoch: 0,
                cached_tokens: cached.clone(),
                submitted: Instant::now(),
            };
            self.shared.queued.fetch_add(1, Ordering::Relaxed);
            self.jobs.try_send(job).unwrap_or_else(|_| panic!("the queue takes the job"));
            Submitted { events, cancelled, cached }
        }

        /// The pool's counts once no sequence holds a block (the last event of a sequence
        /// reaches its receiver just before the worker drops it).
        fn settled_stats(&self) -> PoolStats {
            for _ in 0..1000 {
                let stats = *self.shared.cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = stats.filter(|s| s.in_use == 0) {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("blocks are still held: {:?}", self.shared.cache.lock().map(|s| *s));
        }
    }

    /// Every token of a sequence, then how it ended.
    fn collect(s: &mut Submitted) -> (Vec<u32>, FinishReason) {
        let mut tokens = Vec::new();
        loop {
            match s.events.blocking_recv() {
                Some(TokenEvent::Token { id, .. }) => tokens.push(id),
                Some(TokenEvent::Finished { reason }) => return (tokens, reason),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    fn counting_from(first: u32, n: usize) -> Vec<u32> {
        (0..n as u32).map(|k| (first + k) % VOCAB as u32).collect()
    }

    #[test]
    fn sequences_that_do_not_fit_wait_and_still_generate_their_own_tokens() {
        // 6 blocks of 16 for 4 sequences of 20 + 30 positions (4 blocks each).
        let options =
            WorkerOptions { max_running: 4, cache_positions: Some(96), context_length: 96, ..Default::default() };
        let h = Harness::start(options);
        let mut seqs: Vec<Submitted> = (0..4u32).map(|i| h.submit(counting_from(i * 100, 20), 30)).collect();
        for (i, s) in seqs.iter_mut().enumerate() {
            let (tokens, reason) = collect(s);
            assert_eq!(tokens, counting_from(i as u32 * 100 + 20, 30), "sequence {i}");
            assert_eq!(reason, FinishReason::Length);
        }
        assert!(h.shared.preemptions.load(Ordering::Relaxed) > 0, "nothing had to wait");
        assert_eq!(h.settled_stats().total, 6);
    }

    #[test]
    fn a_repeated_prompt_starts_from_its_cached_blocks() {
        let h = Harness::start(WorkerOptions { cache_positions: Some(256), context_length: 256, ..Default::default() });
        let prompt = counting_from(7, 40);
        let mut first = h.submit(prompt.clone(), 3);
        let (tokens, _) = collect(&mut first);
        assert_eq!(first.cached.load(Ordering::Relaxed), 0);
        let mut second = h.submit(prompt, 3);
        assert_eq!(collect(&mut second).0, tokens);
        assert_eq!(second.cached.load(Ordering::Relaxed), 32, "two whole blocks, the last token left to run");
        let stats = h.settled_stats();
        assert!(stats.cached >= 2, "{stats:?}");
    }

    #[test]
    fn a_cancelled_sequence_gives_its_blocks_back() {
        let h =
            Harness::start(WorkerOptions { cache_positions: Some(4096), context_length: 4096, ..Default::default() });
        let mut s = h.submit(counting_from(1, 50), 4000);
        assert!(matches!(s.events.blocking_recv(), Some(TokenEvent::Token { .. })));
        s.cancelled.store(true, Ordering::Relaxed);
        assert_eq!(h.settled_stats().in_use, 0);
        // The engine still serves.
        let mut next = h.submit(counting_from(5, 10), 2);
        assert_eq!(collect(&mut next), (counting_from(15, 2), FinishReason::Length));
    }
}
