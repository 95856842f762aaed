//! From wire requests to the engine's terms, purely: parse the body with field paths in errors,
//! check ranges, apply defaults, and refuse (400, naming the parameter) anything that would
//! change the output but is not implemented — nothing is silently ignored.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::types::CommonParams;
use crate::error::ApiError;
use crate::sampling::SamplingParams;

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
}

/// Most stop strings per request (OpenAI allows 4; text-generation-webui any number).
const MAX_STOPS: usize = 32;
const MAX_N: usize = 16;

fn range_f32(name: &str, v: Option<f32>, lo: f32, hi: f32, default: f32) -> Result<f32, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x >= lo && x <= hi => Ok(x),
        Some(x) => Err(ApiError::invalid_param(name, format!("`{name}` must be between {lo} and {hi}, got {x}"))),
    }
}

/// Validates the fields chat and completions share.
pub fn plan(common: CommonParams, max_tokens_alias: Option<i64>) -> Result<GenerationPlan, ApiError> {
    let c = common;
    let temperature = range_f32("temperature", c.temperature, 0.0, 5.0, 1.0)?;
    let top_p = range_f32("top_p", c.top_p, 0.0, 1.0, 1.0)?;
    let min_p = range_f32("min_p", c.min_p, 0.0, 1.0, 0.0)?;
    let presence_penalty = range_f32("presence_penalty", c.presence_penalty, -2.0, 2.0, 0.0)?;
    let frequency_penalty = range_f32("frequency_penalty", c.frequency_penalty, -2.0, 2.0, 0.0)?;
    let repetition_penalty = range_f32("repetition_penalty", c.repetition_penalty, 0.01, 10.0, 1.0)?;
    let top_k = match c.top_k {
        None | Some(0) | Some(-1) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(ApiError::invalid_param("top_k", format!("`top_k` must be 0 (off) or positive, got {k}")));
        }
    };
    let repetition_penalty_range = match c.repetition_penalty_range {
        None => 1024,
        Some(r) if r >= 0 => r as usize,
        Some(r) => {
            return Err(ApiError::invalid_param("repetition_penalty_range", format!("must be 0 or positive, got {r}")));
        }
    };
    // text-generation-webui's seed -1 means "random".
    let seed = match c.seed {
        None | Some(-1) => None,
        Some(s) => Some(s as u64),
    };
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
    let banned_tokens = match c.custom_token_bans.as_deref().map(str::trim) {
        None | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|t| {
                t.trim().parse::<u32>().map_err(|_| {
                    ApiError::invalid_param("custom_token_bans", format!("`{}` is not a token id", t.trim()))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let greedy = c.do_sample == Some(false);
    let sampling = SamplingParams {
        temperature: if greedy { 0.0 } else { temperature },
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        repetition_penalty_range,
        presence_penalty,
        frequency_penalty,
        seed,
        temperature_last: false,
        banned_tokens,
        logit_bias: Vec::new(),
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
    })
}

/// OpenAI's `logit_bias`: `{"token id": bias}`, ids inside the vocabulary, biases -100…100.
pub fn logit_bias(map: Option<&Map<String, Value>>, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    let bad = |msg: String| ApiError::invalid_param("logit_bias", msg);
    let mut out = Vec::new();
    for (key, value) in map.into_iter().flatten() {
        let id = key
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&id| (id as usize) < vocab)
            .ok_or_else(|| bad(format!("`{key}` is not a token id of this model (0…{})", vocab.saturating_sub(1))))?;
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
    // Chat-mode fields (chat requests read them; elsewhere they change nothing), and settings of
    // samplers that are off unless enabled.
    "chat_instruct_command",
    "dry_sequence_breakers",
    "dry_allowed_length",
    "dry_base",
    "xtc_threshold",
    "mirostat_tau",
    "mirostat_eta",
    "dynatemp_low",
    "dynatemp_high",
    "dynatemp_exponent",
    "smoothing_curve",
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
        "preset"
        | "instruction_template"
        | "sampler_priority"
        | "functions"
        | "function_call"
        | "audio"
        | "prediction"
        | "web_search_options" => Value::Null,
        "smoothing_factor"
        | "xtc_probability"
        | "epsilon_cutoff"
        | "eta_cutoff"
        | "top_a"
        | "top_n_sigma"
        | "dry_multiplier"
        | "no_repeat_ngram_size"
        | "penalty_alpha"
        | "mirostat_mode"
        | "prompt_lookup_num_tokens"
        | "max_tokens_second" => json!(0),
        "typical_p" | "tfs" | "encoder_repetition_penalty" | "guidance_scale" => json!(1),
        "dynamic_temperature" | "temperature_last" | "continue_" => json!(false),
        "negative_prompt" | "grammar_string" => json!(""),
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
        let err = chat(r#"{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("temperature"), "{err:?}");
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
        let mut req = chat(r#"{"messages":[],"top_p":1.5}"#).unwrap();
        let err = plan(req.take_common(), None).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("top_p"));
        let mut req = chat(r#"{"messages":[],"max_tokens":0}"#).unwrap();
        assert_eq!(plan(req.take_common(), None).unwrap_err().param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn unbuilt_parameters_pass_only_at_their_inert_value() {
        let req = chat(r#"{"messages":[],"typical_p":1,"user":"u","mirostat_tau":3}"#).unwrap();
        assert!(check_extra(&req.extra).is_ok());
        let req = chat(r#"{"messages":[],"typical_p":0.5}"#).unwrap();
        let err = check_extra(&req.extra).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("typical_p"));
        let req = chat(r#"{"messages":[],"frobnicate":true}"#).unwrap();
        assert_eq!(check_extra(&req.extra).unwrap_err().code, Some("unknown_parameter"));
    }

    #[test]
    fn common_fields_are_not_reported_as_extra() {
        let mut req: CompletionRequest =
            parse_body(br#"{"prompt":"x","temperature":0.5,"stop":["a"],"seed":3}"#).unwrap();
        assert!(req.extra.is_empty(), "{:?}", req.extra);
        let plan = plan(req.take_common(), None).unwrap();
        assert_eq!(plan.sampling.seed, Some(3));
        assert_eq!(plan.stops, vec!["a".to_string()]);
    }

    #[test]
    fn textgen_seed_minus_one_is_random() {
        let mut req: CompletionRequest = parse_body(br#"{"prompt":"x","seed":-1}"#).unwrap();
        assert_eq!(plan(req.take_common(), None).unwrap().sampling.seed, None);
    }
}
