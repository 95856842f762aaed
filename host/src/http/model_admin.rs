//! `POST /v1/internal/model/load` and `/v1/internal/model/unload` (admin key): swapping the
//! served model while the server runs. The new model loads beside the old one, which keeps
//! answering until the new one is ready; requests already running finish on the model they
//! started with (each holds its own handle), and the old model's memory goes with the last of
//! them. One load at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::body::{IgnoredBody, JsonBody};
use super::state::{ModelState, SharedState};
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::model::DeviceChoice;
use crate::prompt::ChatTemplate;

/// `POST /v1/internal/model/load`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    /// A file or folder name in the model dir (`.gguf` may be left off).
    pub model_name: String,
    /// Loader settings: `ctx_size`, `device`, and textgen's `flash_attn` / `cache_type`.
    #[schema(value_type = Option<Object>)]
    pub args: Option<Map<String, Value>>,
    /// A template name under `user_data/instruction-templates/`: the default for later requests.
    pub instruction_template: Option<String>,
    /// Jinja: the default for later requests (over `instruction_template`).
    pub instruction_template_str: Option<String>,
}

/// What `args` may change.
#[derive(Debug, Default, PartialEq)]
struct LoadArgs {
    ctx_size: Option<usize>,
    device: Option<DeviceChoice>,
}

/// textgen's KV-cache types. Hearth keeps its cache in f32 whichever is asked for (a quantized
/// cache is not built), so any of them loads, and the log says so.
const CACHE_TYPES: &[&str] = &["fp16", "fp8", "q8_0", "q4_0", "q8", "q6", "q4"];

fn parse_args(args: Option<Map<String, Value>>) -> Result<LoadArgs, ApiError> {
    let mut out = LoadArgs::default();
    for (key, value) in args.unwrap_or_default() {
        let param = format!("args.{key}");
        match key.as_str() {
            "ctx_size" | "n_ctx" | "max_seq_len" | "truncation_length" => match value.as_u64() {
                Some(n) if n >= 16 => out.ctx_size = Some(n as usize),
                _ => {
                    return Err(ApiError::invalid_param(
                        param,
                        "the context size must be a whole number of at least 16",
                    ));
                }
            },
            // The names `--device` takes (one list: `DeviceChoice`'s), kept in canonical form.
            "device" => match value.as_str().map(str::parse::<DeviceChoice>) {
                Some(Ok(device)) => out.device = Some(device),
                Some(Err(e)) => return Err(ApiError::invalid_param(param, e)),
                None => return Err(ApiError::invalid_param(param, "`device` must be a string")),
            },
            // Hearth's attention is always one fused pass over the cache, which is what
            // flash attention gives llama.cpp; either value loads the same model.
            "flash_attn" => {
                if !value.is_boolean() {
                    return Err(ApiError::invalid_param(param, "`flash_attn` must be true or false"));
                }
            }
            "cache_type" => match value.as_str() {
                Some(t) if CACHE_TYPES.contains(&t) => {
                    tracing::warn!(
                        "cache_type `{t}` asked for: Hearth's KV cache is f32 (quantized caches are not built)"
                    );
                }
                _ => {
                    return Err(ApiError::invalid_param(
                        param,
                        format!("`cache_type` must be one of {}", CACHE_TYPES.join(", ")),
                    ));
                }
            },
            _ => return Err(ApiError::invalid_param(param, format!("`{key}` is not a load argument Hearth knows"))),
        }
    }
    Ok(out)
}

/// Clears the one-load-at-a-time flag however the load ends.
struct LoadSlot<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for LoadSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Loads `model_name` and serves it once ready → `"OK"` (the admin key, where one is set).
#[utoipa::path(post, path = "/v1/internal/model/load", tag = "internal", request_body = LoadRequest,
    responses((status = 200, description = "Done", body = String, example = json!("OK")), (status = 400, description = "A field is invalid", body = ErrorResponse), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 404, description = "No such model in the model dir", body = ErrorResponse),
        (status = 503, description = "Another model is being loaded", body = ErrorResponse)))]
pub async fn load(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<LoadRequest>,
) -> Result<Json<&'static str>, ApiError> {
    let name = req.model_name.trim();
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(ApiError::invalid_param("model_name", "give the name of a file or folder in the model dir"));
    }
    let args = parse_args(req.args)?;
    // Only names inside the model dir: this route takes no paths.
    let dir = &state.settings.model_dir;
    let path = crate::serving::model_in_dir(name, dir).ok_or_else(|| ApiError {
        message: format!(
            "There is no model `{name}` in the model dir {}; /v1/internal/model/list lists them",
            dir.display()
        ),
        param: Some("model_name".into()),
        ..ApiError::model_not_found(name)
    })?;
    let template = match (req.instruction_template_str.filter(|s| !s.trim().is_empty()), req.instruction_template) {
        (Some(source), _) => Some(source),
        (None, Some(name)) if !name.is_empty() => Some(state.instruction_template(&name)?),
        _ => None,
    };
    if let Some(source) = &template {
        ChatTemplate::new(source).map_err(|e| ApiError::invalid_param("instruction_template_str", e.to_string()))?;
    }
    if state.loading.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return Err(ApiError::unavailable("Another model is being loaded; try again when it is ready"));
    }

    let mut settings = (*state.settings).clone();
    if let Some(ctx) = args.ctx_size {
        settings.ctx_size = Some(ctx);
    }
    if let Some(device) = args.device {
        settings.device = device;
    }
    let shared = state.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let _slot = LoadSlot(&shared.loading);
        // The old model keeps answering (and /health says ok) while this one loads.
        let progress = crate::model::LoadProgress::default();
        crate::serving::load_model(&path, &settings, &shared.plugins, &shared.embeddings, &progress)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the load task failed: {e}")))?;
    match loaded {
        Ok(mut served) => {
            // The load's own template, else what the model dir's tables chose.
            if template.is_some() {
                served.instruction_template = template;
            }
            tracing::info!("model `{}` is ready; it now answers every request", served.name);
            state.set_model(ModelState::Ready(Arc::new(served)));
            Ok(Json("OK"))
        }
        // The old model (if any) is still the one served.
        Err(e) => Err(ApiError::bad_request(format!("The model `{name}` could not be loaded: {e}"))),
    }
}

/// Stops serving the model → `"OK"`; generation requests then get 503 until one is loaded.
#[utoipa::path(post, path = "/v1/internal/model/unload", tag = "internal",
    responses((status = 200, description = "Done", body = String, example = json!("OK")), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse)))]
pub async fn unload(State(state): State<SharedState>, _body: IgnoredBody) -> Json<&'static str> {
    state.set_model(ModelState::None);
    tracing::info!("model unloaded");
    Json("OK")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Result<LoadArgs, ApiError> {
        parse_args(v.as_object().cloned())
    }

    #[test]
    fn the_seeds_load_arguments_are_accepted() {
        let got = args(json!({"ctx_size": 32768, "flash_attn": true, "cache_type": "q8_0"})).unwrap();
        assert_eq!(got, LoadArgs { ctx_size: Some(32768), device: None });
    }

    #[test]
    fn bad_arguments_name_themselves() {
        for (bad, param) in [
            (json!({"ctx_size": -1}), "args.ctx_size"),
            (json!({"ctx_size": "big"}), "args.ctx_size"),
            (json!({"cache_type": "q2"}), "args.cache_type"),
            (json!({"device": "tpu"}), "args.device"),
            (json!({"device": 3}), "args.device"),
            (json!({"rope_freq_base": 1e6}), "args.rope_freq_base"),
        ] {
            let err = args(bad.clone()).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{bad}: {err:?}");
        }
    }
}
