//! `POST /v1/moderations` (SPEC §8), answered by the first enabled moderation plugin.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::JsonBody;
use super::state::SharedState;
use crate::error::ApiError;
use crate::plugins::{PluginError, PluginKind};

/// `input`: one text or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ModerationInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationRequest {
    pub input: ModerationInput,
    #[serde(default)]
    pub model: Option<String>,
}

/// Most texts in one request.
const MAX_INPUTS: usize = 256;

pub async fn moderations(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<ModerationRequest>,
) -> Result<Json<Value>, ApiError> {
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
    let results: Vec<Value> = verdicts
        .into_iter()
        .map(|v| {
            let mut categories = Map::new();
            let mut scores = Map::new();
            let mut applied = Map::new();
            for c in v.categories {
                categories.insert(c.name.into(), Value::Bool(c.flagged));
                scores.insert(c.name.into(), json!(c.score));
                applied.insert(c.name.into(), json!(["text"]));
            }
            json!({
                "flagged": v.flagged,
                "categories": categories,
                "category_scores": scores,
                "category_applied_input_types": applied,
            })
        })
        .collect();
    Ok(Json(json!({
        "id": format!("modr-{}", uuid::Uuid::new_v4().simple()),
        "model": &*plugin.name,
        "results": results,
    })))
}
