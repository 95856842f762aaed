//! `GET /health` and `/v1/internal/health`: 200 once a model is served (or when none was asked
//! for), 503 while it loads or after loading failed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::state::{Health, SharedState};

/// Whether the server answers: `ok`, `loading` (with the share of the model read so far, 0 to
/// 1, once known) or `error` (loading failed: `message` says why).
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    status: HealthState,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum HealthState {
    Ok,
    Loading,
    Error,
}

/// The answers of both health routes, documented once (only their schema is used).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum HealthResponses {
    /// A model is served (or none was asked for)
    #[response(status = 200)]
    Ready(HealthStatus),
    /// The model is loading, or loading failed
    #[response(status = 503)]
    NotReady(HealthStatus),
}

/// Whether the server is ready: 200 once a model is served (or when none was asked for), 503
/// while it loads (with its progress) or after loading failed.
#[utoipa::path(get, path = "/health", tag = "server", responses(HealthResponses))]
pub async fn health(State(state): State<SharedState>) -> (StatusCode, Json<HealthStatus>) {
    let (code, status, progress, message) = match state.health() {
        Health::Ok => (StatusCode::OK, HealthState::Ok, None, None),
        Health::Loading(progress) => (StatusCode::SERVICE_UNAVAILABLE, HealthState::Loading, progress, None),
        Health::Failed(message) => (StatusCode::SERVICE_UNAVAILABLE, HealthState::Error, None, Some(message)),
    };
    (code, Json(HealthStatus { status, progress, message }))
}

/// text-generation-webui's name for `/health`.
#[utoipa::path(get, path = "/v1/internal/health", tag = "internal", responses(HealthResponses))]
pub async fn internal_health(state: State<SharedState>) -> (StatusCode, Json<HealthStatus>) {
    health(state).await
}
