//! `POST /v1/embeddings` (SPEC §7): text or token-id inputs to vectors from the embedding model,
//! as floats or base64 (little-endian f32, what openai-python asks for by default), with the
//! tokens read in `usage`. `model` is accepted and not used, as in textgen: the server's
//! embedding model answers, and the response names it.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::body::JsonBody;
use super::state::SharedState;
use crate::embedding_service::{EmbeddingError, EmbeddingInput};
use crate::error::{ApiError, ErrorBody as ErrorResponse};

/// OpenAI's limit on inputs per request.
const MAX_INPUTS: usize = 2048;

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// Required; optional here so that a request without it is a 400 naming it.
    #[serde(default)]
    #[schema(value_type = InputForms, required = true)]
    pub input: Option<Value>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    #[serde(default)]
    pub dimensions: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
}

/// `input`'s forms: a text, texts, token ids, or lists of token ids (at most 2,048 items). The
/// field is read by [`parse_input`], so that each wrong form gets its own message; only this
/// schema uses the type.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = EmbeddingInput)]
#[allow(dead_code)]
enum InputForms {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

/// `input`: a string, a list of strings, a list of token ids, or a list of such lists.
fn parse_input(input: &Value) -> Result<Vec<EmbeddingInput>, ApiError> {
    let bad = |m: &str| ApiError::invalid_param("input", m.to_owned());
    let ids = |v: &Value| -> Option<Vec<u32>> {
        v.as_array()?.iter().map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok())).collect()
    };
    let inputs = match input {
        Value::String(s) => vec![EmbeddingInput::Text(s.clone())],
        Value::Array(items) if items.is_empty() => return Err(bad("`input` must not be an empty list")),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(|s| EmbeddingInput::Text(s.to_owned())).collect()
        }
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![EmbeddingInput::Tokens(ids(input).ok_or_else(|| bad("token ids must be integers from 0 to 2^32-1"))?)]
        }
        Value::Array(items) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|item| match ids(item) {
                Some(list) if list.is_empty() => Err(bad("a list of token ids must not be empty")),
                Some(list) => Ok(EmbeddingInput::Tokens(list)),
                None => Err(bad("token ids must be integers from 0 to 2^32-1")),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(bad(
                "`input` must be a string, a list of strings, a list of token ids or a list of such lists",
            ));
        }
    };
    if inputs.len() > MAX_INPUTS {
        return Err(bad(&format!("`input` may hold at most {MAX_INPUTS} items")));
    }
    Ok(inputs)
}

/// The response, serialised straight from the vectors: f32s print in their shortest form.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: String,
    usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

/// Floats, or with `encoding_format: base64` their little-endian f32 bytes in base64.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EmbeddingUsage)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

fn api_error(e: EmbeddingError) -> ApiError {
    match e {
        EmbeddingError::NotInstalled(m) => ApiError::unavailable(m),
        e @ EmbeddingError::Load { .. } => ApiError::unavailable(e.to_string()),
        EmbeddingError::Input(m) => ApiError::invalid_param("input", m),
        e @ EmbeddingError::Execution(_) => ApiError::internal(e.to_string()),
    }
}

fn base64_of(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sentence embeddings from the embedding model (loaded on first use).
#[utoipa::path(post, path = "/v1/embeddings", tag = "embeddings", request_body = EmbeddingsRequest,
    responses((status = 200, description = "One vector per input, in order", body = EmbeddingsResponse), (status = 400, description = "A field is invalid", body = ErrorResponse), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 503, description = "No embedding model is installed or it failed to load", body = ErrorResponse)))]
pub async fn embeddings(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<EmbeddingsRequest>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let inputs = parse_input(req.input.as_ref().unwrap_or(&Value::Null))?;
    if req.dimensions == Some(0) {
        return Err(ApiError::invalid_param("dimensions", "`dimensions` must be at least 1"));
    }
    let service = state.embeddings.clone();
    let dimensions = req.dimensions;
    let (loaded, embedded) = tokio::task::spawn_blocking(move || {
        let loaded = service.model().map_err(api_error)?;
        let dims = loaded.model.dimensions();
        if let Some(asked) = dimensions.filter(|&d| d != dims as u64) {
            // Cutting vectors short is only meaningful for models trained for it (Matryoshka);
            // these are not, so a shorter vector would silently be a worse one. Checked before
            // the inputs are embedded for nothing.
            return Err(ApiError::invalid_param(
                "dimensions",
                format!("`{}` gives {dims}-dimensional embeddings and cannot give {asked}", loaded.name),
            ));
        }
        let embedded = service.embed(&loaded, &inputs).map_err(api_error)?;
        crate::telemetry::embedded(&loaded.name, inputs.len(), true);
        Ok((loaded, embedded))
    })
    .await
    .map_err(|_| ApiError::internal("the embedding task was aborted"))??;
    let base64 = req.encoding_format == Some(EncodingFormat::Base64);
    let data = embedded
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: if base64 { Vector::Base64(base64_of(&v)) } else { Vector::Float(v) },
        })
        .collect();
    let tokens: usize = embedded.token_counts.iter().sum();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: loaded.name.clone(),
        usage: Usage { prompt_tokens: tokens, total_tokens: tokens },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_input_shape_parses() {
        let kinds = |v: Value| {
            parse_input(&v)
                .unwrap()
                .into_iter()
                .map(|i| match i {
                    EmbeddingInput::Text(t) => format!("text:{t}"),
                    EmbeddingInput::Tokens(ids) => format!("ids:{ids:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(json!("hi")), ["text:hi"]);
        assert_eq!(kinds(json!(["a", ""])), ["text:a", "text:"]);
        assert_eq!(kinds(json!([1, 2])), ["ids:[1, 2]"]);
        assert_eq!(kinds(json!([[1], [2, 3]])), ["ids:[1]", "ids:[2, 3]"]);
    }

    #[test]
    fn bad_inputs_are_named() {
        for bad in [json!([]), json!([-1]), json!([1.5]), json!(["a", 1]), json!([[]]), json!({"a": 1}), json!(null)] {
            let err = parse_input(&bad).unwrap_err();
            assert_eq!(err.to_json()["error"]["param"], "input", "{bad}");
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(base64_of(&[1.0]), "AACAPw==");
    }
}
