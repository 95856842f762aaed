//! `GET /health` and `/v1/internal/health`: 200 once a model is served (or when none was asked
//! for), 503 while it loads or after loading failed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::state::{Health, SharedState};

pub async fn health(State(state): State<SharedState>) -> (StatusCode, Json<Value>) {
    match state.health() {
        Health::Ok => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Health::Loading(None) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))),
        Health::Loading(Some(progress)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading", "progress": progress})))
        }
        Health::Failed(message) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "message": message})))
        }
    }
}
