//! text-generation-webui's internal endpoints: tokenization, the rendered chat prompt,
//! stopping generations, and model information.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::chat::{RenderedChat, render_request};
use super::state::SharedState;
use super::types::ChatCompletionRequest;
use crate::error::ApiError;

#[derive(Deserialize)]
pub struct TextBody {
    text: String,
}

#[derive(Deserialize)]
pub struct TokensBody {
    tokens: Vec<i64>,
}

/// `{text}` → `{tokens, length}`, tokenized as a raw prompt (BOS added when the model wants it).
pub async fn encode(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<TextBody>,
) -> Result<Json<Value>, ApiError> {
    let served = state.ready()?;
    let tokens = served.engine.tokenizer().encode(&body.text, true)?;
    Ok(Json(json!({ "tokens": tokens, "length": tokens.len() })))
}

/// `{tokens}` → `{text}`.
pub async fn decode(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<TokensBody>,
) -> Result<Json<Value>, ApiError> {
    let served = state.ready()?;
    let tokenizer = served.engine.tokenizer();
    let vocab = tokenizer.vocab_size() as i64;
    let ids = body
        .tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if (0..vocab).contains(&t) {
                Ok(t as u32)
            } else {
                Err(ApiError::invalid_param(
                    format!("tokens[{i}]"),
                    format!("token id {t} is outside the vocabulary (0..{vocab})"),
                ))
            }
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let text = tokenizer.decode(&ids, false)?;
    Ok(Json(json!({ "text": text })))
}

/// `{text}` → `{length}`.
pub async fn token_count(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<TextBody>,
) -> Result<Json<Value>, ApiError> {
    let served = state.ready()?;
    let tokens = served.engine.tokenizer().encode(&body.text, true)?;
    Ok(Json(json!({ "length": tokens.len() })))
}

/// A chat body → `{prompt}`: exactly the text the model would be given.
pub async fn chat_prompt(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Json<Value>, ApiError> {
    let served = state.ready()?;
    // Rendering may call the tool-format plugin: keep it off the async runtime.
    let RenderedChat { prompt, .. } = tokio::task::spawn_blocking(move || render_request(&state, &served, req))
        .await
        .map_err(|e| ApiError::internal(format!("rendering the prompt failed: {e}")))??;
    Ok(Json(json!({ "prompt": prompt })))
}

/// Stops every running and queued generation → `"OK"`.
pub async fn stop_generation(State(state): State<SharedState>) -> Json<&'static str> {
    if let Some(served) = state.served() {
        served.engine.cancel_all();
    }
    Json("OK")
}

/// `{model_name, lora_names, loader}`.
pub async fn model_info(State(state): State<SharedState>) -> Json<Value> {
    match state.served() {
        Some(m) => Json(json!({ "model_name": m.name, "lora_names": [], "loader": m.loader })),
        None => Json(json!({ "model_name": "None", "lora_names": [], "loader": Value::Null })),
    }
}

/// `{model_names}`: the models in the model dir.
pub async fn model_list(State(state): State<SharedState>) -> Json<Value> {
    Json(json!({ "model_names": state.available_models() }))
}
