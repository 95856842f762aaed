//! From wire requests to the engine's terms, purely: parse the body with field paths in errors,
//! check ranges, apply defaults, and refuse (400, naming the parameter) anything that would
//! change the output but is not implemented — nothing is silently ignored.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::types::CommonParams;
use crate::error::ApiError;
use crate::sampling::SamplingParams;
use crate::tokenizer::in_vocabulary;

/// Parses a JSON body; a type error names the field (`messages[0].role`).
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("The request body is empty; send a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("The request body is not valid JSON: {msg}"))
        } else if path == "." || path.is_empty() {
            ApiError::bad_request(format!("Invalid request: {msg}"))
        } else {
            ApiError::invalid_param(path.clone(), format!("Invalid value for `{path}`: {msg}"))
        }
    })?;
    de.end().map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// How to generate, decided from the request.
#[derive(Debug, Clone)]
pub struct GenerationPlan {
    pub sampling: SamplingParams,
    /// `None`: the server default.
    pub max_tokens: Option<usize>,
    /// Generate until the context is full (textgen's `auto_max_new_tokens`).
    pub auto_max_tokens: bool,
    pub stops: Vec<String>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub ban_eos: bool,
    pub skip_special: bool,
    /// textgen's `truncation_length` (0/None: the model's).
    pub context_cap: Option<usize>,
    pub add_bos: bool,
    /// Log-probabilities to report (set by the endpoint: chat and completions ask differently).
    pub logprobs: Option<crate::engine::LogprobsQuery>,
    /// textgen's `grammar_string`: a GBNF grammar the output must follow.
    pub grammar: Option<String>,
    /// llama.cpp's `cache_prompt`: reuse cached blocks of a shared prefix.
    pub cache_prompt: bool,
}

/// Most stop strings per request (OpenAI allows 4; text-generation-webui any number).
const MAX_STOPS: usize = 32;
const MAX_N: usize = 16;

/// Validates the fields chat and completions share; `sampling` comes from
/// [`samplers`](super::samplers).
pub fn plan(
    common: CommonParams,
    sampling: SamplingParams,
    max_tokens_alias: Option<i64>,
) -> Result<GenerationPlan, ApiError> {
    let c = common;
    let max_tokens = match max_tokens_alias.or(c.max_tokens) {
        None => None,
        Some(m) if m >= 1 => Some(m as usize),
        Some(m) => {
            let name = if max_tokens_alias.is_some() { "max_completion_tokens" } else { "max_tokens" };
            return Err(ApiError::invalid_param(name, format!("`{name}` must be at least 1, got {m}")));
        }
    };
    let n = match c.n {
        None => 1,
        Some(n) if (1..=MAX_N as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid_param("n", format!("`n` must be between 1 and {MAX_N}, got {n}")));
        }
    };
    let stops = c.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stops.len() > MAX_STOPS {
        return Err(ApiError::invalid_param("stop", format!("at most {MAX_STOPS} stop strings, got {}", stops.len())));
    }
    let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
    let context_cap = match c.truncation_length {
        None | Some(0) => None,
        Some(t) if t > 0 => Some(t as usize),
        Some(t) => {
            return Err(ApiError::invalid_param("truncation_length", format!("must be positive, got {t}")));
        }
    };
    Ok(GenerationPlan {
        sampling,
        max_tokens,
        auto_max_tokens: c.auto_max_new_tokens.unwrap_or(false),
        stops,
        n,
        stream: c.stream.unwrap_or(false),
        include_usage: c.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        ban_eos: c.ban_eos_token.unwrap_or(false),
        skip_special: c.skip_special_tokens.unwrap_or(true),
        context_cap,
        add_bos: c.add_bos_token.unwrap_or(true),
        logprobs: None,
        grammar: c.grammar_string.filter(|g| !g.trim().is_empty()),
        cache_prompt: c.cache_prompt.unwrap_or(true),
    })
}

/// OpenAI's `logit_bias`: `{"token id": bias}`, ids inside the vocabulary, biases -100…100.
pub fn logit_bias(map: Option<&Map<String, Value>>, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    let bad = |msg: String| ApiError::invalid_param("logit_bias", msg);
    let mut out = Vec::new();
    for (key, value) in map.into_iter().flatten() {
        let id =
            key.trim().parse::<i64>().ok().and_then(|id| in_vocabulary(id, vocab)).ok_or_else(|| {
                bad(format!("`{key}` is not a token id of this model (0…{})", vocab.saturating_sub(1)))
            })?;
        let bias = value
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| bad(format!("the bias of token {key} must be a number from -100 to 100, got {value}")))?;
        out.push((id, bias as f32));
    }
    Ok(out)
}

/// Fields that never change the output.
const NO_EFFECT: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "static_cache",
    // Chat-mode fields (chat requests read them; elsewhere they change nothing).
    "chat_instruct_command",
    "character",
    "bot_name",
    "name2",
    "user_name",
    "name1",
    "user_bio",
    "context",
    "greeting",
];

/// Known parameters Hearth does not implement yet, with the value at which they do nothing.
fn inert_value(name: &str) -> Option<Value> {
    use serde_json::json;
    Some(match name {
        "instruction_template" | "functions" | "function_call" | "audio" | "prediction" | "web_search_options" => {
            Value::Null
        }
        "penalty_alpha" | "prompt_lookup_num_tokens" | "max_tokens_second" => json!(0),
        "guidance_scale" => json!(1),
        "continue_" => json!(false),
        "negative_prompt" => json!(""),
        "modalities" => json!(["text"]),
        _ => return None,
    })
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-9,
            _ => false,
        },
        (Value::String(s), Value::Null) => s.is_empty(),
        _ => a == b,
    }
}

/// Checks every field the typed request did not take: no-ops pass, known-but-unbuilt ones pass
/// only at their inert value, anything else is unknown.
pub fn check_extra(extra: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, value) in extra {
        if NO_EFFECT.contains(&name.as_str()) {
            continue;
        }
        match inert_value(name) {
            Some(inert) if value.is_null() || same_value(value, &inert) => {}
            Some(_) => return Err(ApiError::unsupported_param(name)),
            None => return Err(ApiError::unknown_param(name)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::types::{ChatCompletionRequest, CompletionRequest};

    fn chat(body: &str) -> Result<ChatCompletionRequest, ApiError> {
        parse_body(body.as_bytes())
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = chat(r#"{"messages":[{"role":"wizard","content":"hi"}]}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages[0].role"), "{err:?}");
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = chat(r#"{"messages": ["#).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let mut req = chat(r#"{"messages":[],"n":99}"#).unwrap();
        let err = plan(req.take_common(), SamplingParams::default(), None).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("n"));
        let mut req = chat(r#"{"messages":[],"max_tokens":0}"#).unwrap();
        assert_eq!(
            plan(req.take_common(), SamplingParams::default(), None).unwrap_err().param.as_deref(),
            Some("max_tokens")
        );
    }

    #[test]
    fn unbuilt_parameters_pass_only_at_their_inert_value() {
        let req = chat(r#"{"messages":[],"penalty_alpha":0,"user":"u","guidance_scale":1}"#).unwrap();
        assert!(check_extra(&req.extra).is_ok());
        let req = chat(r#"{"messages":[],"penalty_alpha":0.5}"#).unwrap();
        let err = check_extra(&req.extra).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("penalty_alpha"));
        let req = chat(r#"{"messages":[],"frobnicate":true}"#).unwrap();
        assert_eq!(check_extra(&req.extra).unwrap_err().code, Some("unknown_parameter"));
    }

    #[test]
    fn common_fields_are_not_reported_as_extra() {
        let mut req: CompletionRequest = parse_body(br#"{"prompt":"x","n":2,"stop":["a"]}"#).unwrap();
        assert!(req.extra.is_empty(), "{:?}", req.extra);
        let plan = plan(req.take_common(), SamplingParams::default(), None).unwrap();
        assert_eq!(plan.n, 2);
        assert_eq!(plan.stops, vec!["a".to_string()]);
    }
}
