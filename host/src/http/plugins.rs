//! `/v1/plugins/{name}/…`: requests for endpoint plugins, answered by a fresh instance on a
//! blocking thread (plugins never run on the async runtime). Headers cross the boundary only on
//! allow lists: a plugin sees what describes the request (never cookies or the caller's key)
//! and may set what describes its answer (never cookies, CORS or security headers, which are
//! the server's to decide).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::blocking;
use super::state::SharedState;
use crate::error::ApiError;
use crate::plugins::{EndpointRequest, PluginError, PluginKind};

/// Request headers a plugin is shown.
const FORWARDED_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "content-length",
    "user-agent",
    "if-none-match",
    "if-modified-since",
];

/// Response headers a plugin may set; the rest are dropped (logged at debug).
const PLUGIN_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-language",
    "content-disposition",
    "cache-control",
    "etag",
    "last-modified",
    "location",
    "retry-after",
];

/// Whether a plugin may set response header `name`: the allow list, or its own `x-` headers.
fn plugin_may_set(name: &HeaderName) -> bool {
    let name = name.as_str();
    PLUGIN_RESPONSE_HEADERS.contains(&name) || (name.starts_with("x-") && !name.starts_with("x-forwarded"))
}

/// A failing plugin is the server's fault, not the client's: 502 (the component behind the
/// request failed) or 504 (it ran out of time), with a `code` that says how it failed.
impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let (status, code) = match &e {
            PluginError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "plugin_timeout"),
            PluginError::MemoryLimit { .. } => (StatusCode::BAD_GATEWAY, "plugin_memory_limit"),
            PluginError::Trap { .. } => (StatusCode::BAD_GATEWAY, "plugin_crashed"),
            PluginError::BadOutput { .. } => (StatusCode::BAD_GATEWAY, "plugin_bad_output"),
            PluginError::Failed { .. } => (StatusCode::BAD_GATEWAY, "plugin_failed"),
            PluginError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "plugin_busy"),
            PluginError::Load { .. } | PluginError::Engine(_) => (StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed"),
        };
        ApiError { status, code: Some(code), kind: "plugin_error", ..ApiError::internal(e.to_string()) }
    }
}

pub async fn handle_root(
    state: State<SharedState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    handle_path(state, name, String::new(), req).await
}

pub async fn handle(
    state: State<SharedState>,
    Path((name, rest)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    handle_path(state, name, rest, req).await
}

async fn handle_path(
    State(state): State<SharedState>,
    name: String,
    rest: String,
    req: Request,
) -> Result<Response, ApiError> {
    let plugin = state
        .plugins
        .by_name(&name)
        .filter(|p| p.kind == PluginKind::Endpoint)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No endpoint plugin named `{name}` is loaded")))?;
    let (parts, body) = req.into_parts();
    let limit = state.settings.max_body_bytes;
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("Cannot read the request body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    let request = EndpointRequest {
        method: parts.method.to_string(),
        path: format!("/{rest}"),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .filter(|(n, _)| FORWARDED_HEADERS.contains(&n.as_str()))
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: bytes,
    };
    let registry = state.plugins.clone();
    let answer =
        blocking::off_runtime("the plugin call", move || Ok(registry.call_endpoint(&plugin, request)?)).await?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).map_err(|_| {
        ApiError::from(PluginError::BadOutput { plugin: name.clone(), reason: format!("status {}", answer.status) })
    })?;
    for (k, v) in answer.headers {
        let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) else {
            return Err(PluginError::BadOutput { plugin: name, reason: format!("invalid header `{k}`") }.into());
        };
        if plugin_may_set(&k) {
            response.headers_mut().append(k, v);
        } else {
            tracing::debug!(plugin = %name, header = %k, "a plugin's response header was dropped");
        }
    }
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_set_only_descriptive_headers() {
        for ok in ["content-type", "etag", "x-plugin-version"] {
            assert!(plugin_may_set(&HeaderName::from_static(ok)), "{ok}");
        }
        for refused in ["set-cookie", "access-control-allow-origin", "x-forwarded-for", "strict-transport-security"] {
            assert!(!plugin_may_set(&HeaderName::from_static(refused)), "{refused}");
        }
    }
}
