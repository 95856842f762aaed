//! The JSON body extractor: reads the body within the size limit and parses it with field paths
//! in errors, all as OpenAI-shaped errors. The `Content-Type` is mostly not checked: shell users
//! send JSON with `curl -d` (form-encoded by name) or with none. `text/plain` and
//! `multipart/form-data` are refused: they are what a web page can make a browser send to
//! another origin without asking first (a "simple" request), and no JSON client sends them.
//!
//! A body over the limit is read to its end (up to a hard cap) and discarded before the 413 is
//! sent: most clients write the whole body before they read the answer, and would otherwise see
//! a broken pipe instead of the error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::state::SharedState;
use super::validate::parse_body;
use crate::error::ApiError;

/// Past this many bytes an oversized body is no longer drained; the connection is dropped.
const DRAIN_CAP: usize = 64 << 20;

/// A request body parsed as `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        if let Some(kind) = req.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            let essence = kind.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            if essence == "text/plain" || essence == "multipart/form-data" {
                return Err(ApiError {
                    status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ..ApiError::bad_request(format!(
                        "A `{essence}` body is not accepted here: send JSON (Content-Type: application/json)"
                    ))
                });
            }
        }
        let limit = state.settings.max_body_bytes;
        let bytes = read_limited(req, limit).await?;
        parse_body(&bytes).map(JsonBody)
    }
}

/// A body the handler has no use for, read to its end (up to [`DRAIN_CAP`]) and dropped before
/// the answer. HTTP/1 keeps a connection open for the next request only once this one's body
/// has been read; a body still on its way when the answer was written made the server close
/// the connection, and a client that had already sent its next request on it saw it cut.
pub struct IgnoredBody;

impl<S: Send + Sync> FromRequest<S> for IgnoredBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_to_end(req, 0).await.map(|_| IgnoredBody)
    }
}

async fn read_limited(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let (body, seen) = read_to_end(req, limit).await?;
    if seen > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    Ok(Bytes::from(body))
}

/// Reads the body to its end (past [`DRAIN_CAP`] it stops, and the connection is dropped),
/// keeping it only while it is at most `keep` bytes: the kept bytes and how many were seen.
async fn read_to_end(req: Request, keep: usize) -> Result<(Vec<u8>, usize), ApiError> {
    let mut stream = req.into_body().into_data_stream();
    let mut body: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("Cannot read the request body: {e}")))?;
        seen += chunk.len();
        if seen > keep {
            if seen > DRAIN_CAP {
                break;
            }
            continue;
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, seen))
}
