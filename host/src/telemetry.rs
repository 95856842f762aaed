//! What Hearth counts, for `/metrics` in Prometheus' text format (the `metrics` facade and its
//! Prometheus exporter, as TGI and mistral.rs use them): requests running and waiting, the KV
//! cache's use, prefix-cache queries and hits, prompt and generated tokens, time to first
//! token, inter-token latency, end-to-end latency and queue time, requests finished by reason,
//! plugin calls, embeddings and moderations, HTTP requests by route and status. Every metric of
//! a model carries its `model_name`. The three gauges routers read are also exported under
//! vLLM's names (`vllm:num_requests_running`, `vllm:num_requests_waiting`,
//! `vllm:kv_cache_usage_perc`), so routers written for vLLM (the Gateway API Inference
//! Extension's endpoint picker) work unchanged. Counts only: no request content.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Upper bounds of the latency histograms' buckets, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once; later calls reuse it) and describes the metrics.
/// `None` when another recorder was installed first: then nothing is exported.
pub fn install() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).ok()?;
            let handle = builder.install_recorder().map_err(|e| tracing::warn!("metrics are off: {e}")).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The current values in Prometheus' text exposition format.
pub fn render() -> String {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

fn describe() {
    describe_gauge!("hearth_requests_running", "Sequences generating (in the running batch)");
    describe_gauge!("hearth_requests_waiting", "Requests queued for the model");
    describe_gauge!("hearth_kv_cache_usage_ratio", "Share of the KV cache's blocks in use (0 to 1)");
    describe_gauge!("vllm:num_requests_running", "hearth_requests_running under vLLM's name");
    describe_gauge!("vllm:num_requests_waiting", "hearth_requests_waiting under vLLM's name");
    describe_gauge!("vllm:kv_cache_usage_perc", "hearth_kv_cache_usage_ratio under vLLM's name (0 to 1)");
    describe_counter!("hearth_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache");
    describe_counter!("hearth_prefix_cache_hits_total", "Prompt tokens found in the prefix cache");
    describe_counter!("hearth_prompt_tokens_total", "Prompt tokens of admitted requests");
    describe_counter!("hearth_generation_tokens_total", "Tokens generated");
    describe_counter!("hearth_requests_finished_total", "Generations ended, by finished_reason");
    describe_histogram!("hearth_time_to_first_token_seconds", "From a request's arrival to its first token");
    describe_histogram!("hearth_inter_token_latency_seconds", "Between a generation's consecutive tokens");
    describe_histogram!("hearth_e2e_request_latency_seconds", "From a request's arrival to its last event");
    describe_histogram!("hearth_request_queue_time_seconds", "From a request's arrival to its admission");
    describe_counter!("hearth_plugin_calls_total", "Plugin hook calls, by plugin and hook");
    describe_counter!("hearth_plugin_failures_total", "Plugin hook calls that failed");
    describe_histogram!("hearth_plugin_call_seconds", "Time in a plugin's hook calls");
    describe_counter!("hearth_embedding_requests_total", "/v1/embeddings requests answered");
    describe_counter!("hearth_embedding_inputs_total", "Inputs embedded (requests' and plugins')");
    describe_counter!("hearth_moderation_requests_total", "/v1/moderations requests answered");
    describe_counter!("hearth_http_requests_total", "HTTP requests, by route, method and status");
    describe_gauge!("hearth_images_generating", "1 while the image model is making an image");
    describe_gauge!("hearth_image_step", "The step the image being made is at");
    describe_gauge!("hearth_image_steps", "The steps the image being made takes");
}

/// Why a generation ended, as `finished_reason` labels it (vLLM's words where they exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Stop,
    Length,
    /// Cancelled: stop-generation, or the client went away.
    Abort,
    Error,
}

impl Finished {
    fn label(self) -> &'static str {
        match self {
            Finished::Stop => "stop",
            Finished::Length => "length",
            Finished::Abort => "abort",
            Finished::Error => "error",
        }
    }
}

/// One model's engine metrics, its `model_name` label bound once.
#[derive(Clone)]
pub struct EngineMetrics {
    model: String,
    running: [Gauge; 2],
    waiting: [Gauge; 2],
    cache_usage: [Gauge; 2],
    prefix_queries: Counter,
    prefix_hits: Counter,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    first_token: Histogram,
    inter_token: Histogram,
    end_to_end: Histogram,
    queue_time: Histogram,
}

impl EngineMetrics {
    pub fn new(model: &str) -> Self {
        install();
        let twin = |ours: &'static str, vllm: &'static str| {
            [gauge!(ours, "model_name" => model.to_owned()), gauge!(vllm, "model_name" => model.to_owned())]
        };
        Self {
            model: model.to_owned(),
            running: twin("hearth_requests_running", "vllm:num_requests_running"),
            waiting: twin("hearth_requests_waiting", "vllm:num_requests_waiting"),
            cache_usage: twin("hearth_kv_cache_usage_ratio", "vllm:kv_cache_usage_perc"),
            prefix_queries: counter!("hearth_prefix_cache_queries_total", "model_name" => model.to_owned()),
            prefix_hits: counter!("hearth_prefix_cache_hits_total", "model_name" => model.to_owned()),
            prompt_tokens: counter!("hearth_prompt_tokens_total", "model_name" => model.to_owned()),
            generation_tokens: counter!("hearth_generation_tokens_total", "model_name" => model.to_owned()),
            first_token: histogram!("hearth_time_to_first_token_seconds", "model_name" => model.to_owned()),
            inter_token: histogram!("hearth_inter_token_latency_seconds", "model_name" => model.to_owned()),
            end_to_end: histogram!("hearth_e2e_request_latency_seconds", "model_name" => model.to_owned()),
            queue_time: histogram!("hearth_request_queue_time_seconds", "model_name" => model.to_owned()),
        }
    }

    /// The batch's and the queue's sizes and the KV cache's use, after a tick.
    pub fn load(&self, running: usize, waiting: usize, cache_usage: Option<f64>) {
        self.running.iter().for_each(|g| g.set(running as f64));
        self.waiting.iter().for_each(|g| g.set(waiting as f64));
        if let Some(usage) = cache_usage {
            self.cache_usage.iter().for_each(|g| g.set(usage));
        }
    }

    /// A request admitted after `queued`, with `prompt` tokens of which `cached` came from the
    /// prefix cache.
    pub fn admitted(&self, queued: Duration, prompt: usize, cached: usize) {
        self.queue_time.record(queued.as_secs_f64());
        self.prompt_tokens.increment(prompt as u64);
        self.prefix_queries.increment(prompt as u64);
        self.prefix_hits.increment(cached as u64);
    }

    /// A generated token: the first `since_arrival` after its request arrived, the others
    /// `since_previous` after the token before.
    pub fn token(&self, since_arrival: Duration, since_previous: Option<Duration>) {
        self.generation_tokens.increment(1);
        match since_previous {
            None => self.first_token.record(since_arrival.as_secs_f64()),
            Some(gap) => self.inter_token.record(gap.as_secs_f64()),
        }
    }

    /// A generation ended, `since_arrival` after its request arrived.
    pub fn finished(&self, reason: Finished, since_arrival: Duration) {
        self.end_to_end.record(since_arrival.as_secs_f64());
        counter!("hearth_requests_finished_total", "model_name" => self.model.clone(), "finished_reason" => reason.label())
            .increment(1);
    }
}

/// A plugin hook call and how long it took.
pub fn plugin_call(plugin: &str, hook: &'static str, took: Duration, failed: bool) {
    counter!("hearth_plugin_calls_total", "plugin" => plugin.to_owned(), "hook" => hook).increment(1);
    if failed {
        counter!("hearth_plugin_failures_total", "plugin" => plugin.to_owned(), "hook" => hook).increment(1);
    }
    histogram!("hearth_plugin_call_seconds", "plugin" => plugin.to_owned(), "hook" => hook).record(took.as_secs_f64());
}

/// Inputs embedded with `model` (for a request of the API when `request`, else a plugin's).
pub fn embedded(model: &str, inputs: usize, request: bool) {
    counter!("hearth_embedding_inputs_total", "model_name" => model.to_owned()).increment(inputs as u64);
    if request {
        counter!("hearth_embedding_requests_total", "model_name" => model.to_owned()).increment(1);
    }
}

/// A `/v1/moderations` request answered by `model` (the moderation model's name).
pub fn moderated(model: &str) {
    counter!("hearth_moderation_requests_total", "model_name" => model.to_owned()).increment(1);
}

/// An HTTP request answered: its route's pattern (never the path a client sent: no content,
/// and a bounded set of labels), method and status.
pub fn http_request(route: &str, method: &str, status: u16) {
    counter!(
        "hearth_http_requests_total",
        "route" => route.to_owned(),
        "method" => method.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
}
