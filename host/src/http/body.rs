//! The JSON body extractor: reads the body within the size limit (413 above it) and parses it
//! with field paths in errors, all as OpenAI-shaped errors. The `Content-Type` is not checked:
//! shell users send JSON with `curl -d` and no header.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::state::SharedState;
use super::validate::parse_body;
use crate::error::ApiError;

/// A request body parsed as `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(state.settings.max_body_bytes)
            } else {
                ApiError::bad_request(format!("Cannot read the request body: {rejection}"))
            }
        })?;
        parse_body(&bytes).map(JsonBody)
    }
}
