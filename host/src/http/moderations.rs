//! `POST /v1/moderations` (SPEC §8), answered by the first enabled moderation plugin.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::JsonBody;
use super::state::SharedState;
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::plugins::{PluginError, PluginKind};

/// `input`: one text or a list.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ModerationInput {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/moderations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerationRequest {
    pub input: ModerationInput,
    #[serde(default)]
    pub model: Option<String>,
}

/// Most texts in one request.
const MAX_INPUTS: usize = 256;

/// The verdicts, one per input, from the plugin named in `model`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModerationResponse {
    id: String,
    model: String,
    results: Vec<ModerationResult>,
}

/// One input's verdict: each of the plugin's categories, flagged or not, with its score.
#[derive(Debug, Serialize, ToSchema)]
struct ModerationResult {
    flagged: bool,
    categories: BTreeMap<String, bool>,
    category_scores: BTreeMap<String, f32>,
    category_applied_input_types: BTreeMap<String, Vec<String>>,
}

/// Classifies texts with the first enabled moderation plugin (or the one `model` names).
#[utoipa::path(post, path = "/v1/moderations", tag = "moderations", request_body = ModerationRequest,
    responses((status = 200, description = "One verdict per input", body = ModerationResponse), (status = 400, description = "A field is invalid", body = ErrorResponse), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 503, description = "No moderation plugin is enabled", body = ErrorResponse)))]
pub async fn moderations(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<ModerationRequest>,
) -> Result<Json<ModerationResponse>, ApiError> {
    let inputs = match req.input {
        ModerationInput::One(s) => vec![s],
        ModerationInput::Many(v) => v,
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid_param("input", format!("`input` must hold 1 to {MAX_INPUTS} texts")));
    }
    // A request that names a moderation plugin gets that one; otherwise the enabled ones in
    // order, a failing one marked `on_error: skip` handing over to the next (the built-in
    // embedding moderation needs an embedding model; keyword moderation then answers).
    let candidates: Vec<_> = match req.model.as_deref() {
        Some(name) if state.plugins.by_name(name).is_some_and(|p| p.kind == PluginKind::Moderation) => {
            state.plugins.by_name(name).cloned().into_iter().collect()
        }
        _ => state.plugins.of_kind(PluginKind::Moderation).cloned().collect(),
    };
    if candidates.is_empty() {
        return Err(ApiError::unavailable("No moderation plugin is enabled: add one to `plugins:` in settings.yaml"));
    }
    let registry = state.plugins.clone();
    let (plugin, verdicts) = tokio::task::spawn_blocking(move || {
        let mut skipped = None;
        for plugin in candidates {
            match registry.call_moderation(&plugin, &inputs) {
                Ok(verdicts) => return Ok((plugin, verdicts)),
                Err(e) if plugin.skips_on_error() => {
                    tracing::warn!("{e}; the next moderation plugin answers");
                    skipped = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // Every one failed and was skipped: the last one's error is the answer.
        Err(skipped.unwrap_or_else(|| PluginError::Engine("no moderation plugin answered".into())))
    })
    .await
    .map_err(|_| ApiError::internal("the plugin call was aborted"))??;
    crate::telemetry::moderated(&plugin.name);
    let results = verdicts
        .into_iter()
        .map(|v| {
            let mut result = ModerationResult {
                flagged: v.flagged,
                categories: BTreeMap::new(),
                category_scores: BTreeMap::new(),
                category_applied_input_types: BTreeMap::new(),
            };
            for c in v.categories {
                let name: String = c.name.into();
                result.categories.insert(name.clone(), c.flagged);
                result.category_scores.insert(name.clone(), c.score);
                result.category_applied_input_types.insert(name, vec!["text".to_owned()]);
            }
            result
        })
        .collect();
    Ok(Json(ModerationResponse {
        id: format!("modr-{}", uuid::Uuid::new_v4().simple()),
        model: plugin.name.to_string(),
        results,
    }))
}
