//! `GET /v1/models` and `/v1/models/{id}`: the loaded model first, then every other model in
//! the model dir.

use axum::Json;
use axum::extract::{Path, State};

use super::state::SharedState;
use super::types::{ModelList, ModelObject};
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::serving::unix_now;

fn object(id: String, created: u64) -> ModelObject {
    ModelObject { id, object: "model", created, owned_by: "hearth" }
}

fn all_models(state: &SharedState) -> Vec<ModelObject> {
    let mut out = Vec::new();
    let served = state.served();
    if let Some(m) = &served {
        out.push(object(m.name.clone(), m.created));
    }
    for id in state.available_models() {
        if served.as_ref().is_none_or(|m| m.name != id) {
            let created = saved_at(&id, &state.settings.model_dir);
            out.push(object(id, created));
        }
    }
    out
}

/// When a model in the model dir was written (its file's or folder's modification time): the
/// same in every listing, unlike the time of the request.
fn saved_at(id: &str, model_dir: &std::path::Path) -> u64 {
    crate::serving::model_in_dir(id, model_dir)
        .and_then(|path| std::fs::metadata(path).ok()?.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(unix_now, |d| d.as_secs())
}

/// The served model first, then every other model in the model dir.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "The models", body = ModelList), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse)))]
pub async fn list(State(state): State<SharedState>) -> Json<ModelList> {
    Json(ModelList { object: "list", data: all_models(&state) })
}

/// One model by its id.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "The model's id, as `/v1/models` lists it")),
    responses((status = 200, description = "The model", body = ModelObject),
        (status = 404, description = "No such model", body = ErrorResponse), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse)))]
pub async fn retrieve(State(state): State<SharedState>, Path(id): Path<String>) -> Result<Json<ModelObject>, ApiError> {
    all_models(&state).into_iter().find(|m| m.id == id).map(Json).ok_or_else(|| ApiError::model_not_found(&id))
}
