//! `GET /health` and `/v1/internal/health`: 200 once a model is served (or when none was asked
//! for), 503 while it loads or after loading failed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::state::SharedState;

pub async fn health(State(state): State<SharedState>) -> (StatusCode, Json<Value>) {
    match state.health() {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err((status, None)) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": status }))),
        Err((status, Some(message))) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": status, "message": message })))
        }
    }
}
