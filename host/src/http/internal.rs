//! text-generation-webui's internal endpoints: tokenization, the next token's distribution,
//! the rendered chat prompt, stopping generations, and model information.

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::blocking;
use super::body::{IgnoredBody, JsonBody};
use super::chat::{RenderedChat, render_request};
use super::state::{SharedState, size_generation};
use super::types::{ChatCompletionRequest, LogitsRequest};
use super::validate;
use crate::engine::{DistributionQuery, GenerationRequest, TokenEvent};
use crate::error::{ApiError, ErrorBody as ErrorResponse};

/// Most tokens `/v1/internal/logits` reports.
const MAX_TOP_LOGITS: i64 = 1000;

#[derive(Deserialize, ToSchema)]
pub struct TextBody {
    text: String,
}

#[derive(Deserialize, ToSchema)]
pub struct TokensBody {
    tokens: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct EncodeResponse {
    tokens: Vec<u32>,
    length: usize,
}

#[derive(Serialize, ToSchema)]
pub struct DecodeResponse {
    text: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenCountResponse {
    length: usize,
}

#[derive(Serialize, ToSchema)]
pub struct ChatPromptResponse {
    /// Exactly the text the model would be given.
    prompt: String,
}

/// `{text}` → `{tokens, length}`, tokenized as a raw prompt (BOS added when the model wants it).
#[utoipa::path(post, path = "/v1/internal/encode", tag = "internal", request_body = TextBody,
    responses((status = 200, description = "The token ids", body = EncodeResponse),
        (status = 400, description = "A field is invalid", body = ErrorResponse),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 503, description = "No model is ready", body = ErrorResponse),))]
pub async fn encode(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<TextBody>,
) -> Result<Json<EncodeResponse>, ApiError> {
    let tokens = prompt_tokens(&state, body.text).await?;
    Ok(Json(EncodeResponse { length: tokens.len(), tokens }))
}

/// `text` tokenized as a raw prompt (BOS added when the model wants it), off the runtime.
async fn prompt_tokens(state: &SharedState, text: String) -> Result<Vec<u32>, ApiError> {
    let served = state.ready()?;
    blocking::off_runtime("tokenizing", move || Ok(served.engine.tokenizer().encode(&text, true)?)).await
}

/// `{tokens}` → `{text}`.
#[utoipa::path(post, path = "/v1/internal/decode", tag = "internal", request_body = TokensBody,
    responses((status = 200, description = "The text", body = DecodeResponse),
        (status = 400, description = "A field is invalid", body = ErrorResponse),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 503, description = "No model is ready", body = ErrorResponse),))]
pub async fn decode(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<TokensBody>,
) -> Result<Json<DecodeResponse>, ApiError> {
    let served = state.ready()?;
    let text = blocking::off_runtime("detokenizing", move || {
        let tokenizer = served.engine.tokenizer();
        let ids = tokenizer
            .ids_in_vocabulary(&body.tokens)
            .map_err(|e| ApiError::invalid_param(format!("tokens[{}]", e.index), e.to_string()))?;
        Ok(tokenizer.decode(&ids, false)?)
    })
    .await?;
    Ok(Json(DecodeResponse { text }))
}

/// `{text}` → `{length}`.
#[utoipa::path(post, path = "/v1/internal/token-count", tag = "internal", request_body = TextBody,
    responses((status = 200, description = "The number of tokens", body = TokenCountResponse),
        (status = 400, description = "A field is invalid", body = ErrorResponse),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 503, description = "No model is ready", body = ErrorResponse),))]
pub async fn token_count(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<TextBody>,
) -> Result<Json<TokenCountResponse>, ApiError> {
    let tokens = prompt_tokens(&state, body.text).await?;
    Ok(Json(TokenCountResponse { length: tokens.len() }))
}

/// `{prompt, use_samplers, top_logits, …sampler fields}` → `{token: probability}` for the token
/// after the prompt, most likely first (textgen's `/v1/internal/logits`): the model's softmax,
/// or with `use_samplers` what the request's samplers leave of it, renormalised. Tokens are
/// keyed by their text; where two ids decode to the same text the likelier one is kept.
#[utoipa::path(post, path = "/v1/internal/logits", tag = "internal", request_body = LogitsRequest,
    responses((status = 200, description = "Token text → probability, most likely first",
        body = std::collections::BTreeMap<String, f32>),
        (status = 400, description = "A field is invalid", body = ErrorResponse),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 503, description = "No model is ready", body = ErrorResponse),))]
pub async fn logits(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    JsonBody(mut req): JsonBody<LogitsRequest>,
) -> Result<Json<Value>, ApiError> {
    let served = state.ready()?;
    let common = req.take_common();
    state.check_model_field(&served, common.model.as_deref())?;
    let sampling = state.sampling(&mut req.extra, &served)?;
    validate::check_extra(&req.extra)?;
    let top = match req.top_logits {
        None => 50,
        Some(n) if (1..=MAX_TOP_LOGITS).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid_param(
                "top_logits",
                format!("`top_logits` must be between 1 and {MAX_TOP_LOGITS}, got {n}"),
            ));
        }
    };
    let plan = validate::plan(common, sampling, None)?;
    if plan.grammar.is_some() {
        return Err(ApiError::unsupported_param("grammar_string"));
    }
    let tokenizer = served.engine.tokenizer().clone();
    let ids = {
        let (tokenizer, prompt, add_bos) = (tokenizer.clone(), std::mem::take(&mut req.prompt), plan.add_bos);
        blocking::off_runtime("tokenizing", move || Ok(tokenizer.encode(&prompt, add_bos)?)).await?
    };
    let sub = size_generation(&served, &state.settings, &plan, ids)?;
    let request = GenerationRequest {
        prompt: sub.prompt,
        max_new_tokens: 1,
        sampling: plan.sampling,
        stop_ids: Vec::new(),
        constraint: None,
        distribution: Some(DistributionQuery { use_samplers: req.use_samplers.unwrap_or(false), top }),
        logprobs: None,
        cache_prompt: true,
        media: Default::default(),
    };
    let mut stream = served.engine.submit(request, Some(caller.owner))?;
    loop {
        match stream.next().await {
            Some(TokenEvent::Distribution(dist)) => {
                let mut out = serde_json::Map::new();
                for (id, prob) in dist {
                    out.entry(tokenizer.decode(&[id], false)?).or_insert(Value::from(prob));
                }
                return Ok(Json(Value::Object(out)));
            }
            // A query ends after its distribution; it ends before one only when stopped.
            Some(TokenEvent::Finished { .. }) => {
                return Err(ApiError::unavailable("the request was stopped before the model ran"));
            }
            Some(TokenEvent::Token { .. } | TokenEvent::PromptLogprobs(_)) => {}
            Some(TokenEvent::Failed(msg)) => return Err(ApiError::internal(format!("the model failed: {msg}"))),
            Some(TokenEvent::PluginFailed(e)) => return Err(e.into()),
            None => return Err(ApiError::unavailable("the generation engine stopped")),
        }
    }
}

/// A chat body → `{prompt}`: exactly the text the model would be given.
#[utoipa::path(post, path = "/v1/internal/chat-prompt", tag = "internal", request_body = ChatCompletionRequest,
    responses((status = 200, description = "The rendered prompt", body = ChatPromptResponse),
        (status = 400, description = "A field is invalid", body = ErrorResponse),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 503, description = "No model is ready", body = ErrorResponse),))]
pub async fn chat_prompt(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Json<ChatPromptResponse>, ApiError> {
    let served = state.ready()?;
    // Rendering may call the tool-format plugin: keep it off the async runtime.
    let RenderedChat { prompt, .. } =
        blocking::off_runtime("rendering the prompt", move || render_request(&state, &served, req)).await?;
    Ok(Json(ChatPromptResponse { prompt }))
}

/// Stops the caller's running and queued generations → `"OK"`: those made from the caller's
/// address, or with the admin key, everyone's (textgen is single-user and stops all; a shared
/// server must not let one user end another's answers).
#[utoipa::path(post, path = "/v1/internal/stop-generation", tag = "internal",
    responses((status = 200, description = "Done", body = String, example = json!("OK")),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse)))]
pub async fn stop_generation(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    _body: IgnoredBody,
) -> Json<&'static str> {
    if let Some(served) = state.served() {
        if caller.admin {
            served.engine.cancel_all();
        } else {
            served.engine.stop_owned_by(&caller.owner);
        }
    }
    Json("OK")
}

/// text-generation-webui's model information, and Hearth's additions.
#[derive(Serialize, ToSchema)]
pub struct ModelInfo {
    /// The served model, or `"None"`.
    model_name: String,
    lora_names: Vec<String>,
    /// `null` when no model is served.
    loader: Option<String>,
    /// How full the KV cache is (the CPU path; a GPU's sequences own their buffers).
    #[serde(skip_serializing_if = "Option::is_none")]
    kv_cache: Option<KvCacheInfo>,
    /// Once a wgpu device is open: compute dispatches and reads back to the host since the
    /// start (process-wide), the figures that bound a decode step on a real GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    device_work: Option<hearth_gpu_kernels::counters::DeviceWork>,
}

/// Blocks in use are held by running sequences; cached ones wait for a request that shares
/// their prefix and are taken when memory is needed.
#[derive(Serialize, ToSchema)]
pub struct KvCacheInfo {
    block_tokens: usize,
    blocks_total: usize,
    blocks_in_use: usize,
    blocks_cached: usize,
    /// Sequences put back in the queue to free memory, since the start.
    preemptions: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ModelNames {
    /// The models in the model dir.
    model_names: Vec<String>,
}

/// `{model_name, lora_names, loader}`, and the KV cache and device work.
#[utoipa::path(get, path = "/v1/internal/model/info", tag = "internal",
    responses((status = 200, description = "The served model", body = ModelInfo),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse)))]
pub async fn model_info(State(state): State<SharedState>) -> Json<ModelInfo> {
    let Some(m) = state.served() else {
        return Json(ModelInfo {
            model_name: "None".into(),
            lora_names: Vec::new(),
            loader: None,
            kv_cache: None,
            device_work: None,
        });
    };
    let kv_cache = m.engine.cache_stats().map(|stats| KvCacheInfo {
        block_tokens: crate::model::kv_pool::PAGE,
        blocks_total: stats.total,
        blocks_in_use: stats.in_use,
        blocks_cached: stats.cached,
        preemptions: m.engine.preemptions(),
    });
    Json(ModelInfo {
        model_name: m.name.clone(),
        lora_names: Vec::new(),
        loader: Some(m.loader.to_string()),
        kv_cache,
        device_work: hearth_gpu_kernels::counters::device_work(),
    })
}

/// `{model_names}`: the models in the model dir.
#[utoipa::path(get, path = "/v1/internal/model/list", tag = "internal",
    responses((status = 200, description = "The models in the model dir", body = ModelNames),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse)))]
pub async fn model_list(State(state): State<SharedState>) -> Json<ModelNames> {
    Json(ModelNames { model_names: state.available_models() })
}
