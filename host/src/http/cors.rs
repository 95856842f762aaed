//! Browsers: which web pages may call the API. A local server without keys is reachable by any
//! page the user visits (the browser sends the request; the page merely cannot read the answer
//! unless CORS allows it), so a request that a browser marks as coming from another origin is
//! refused before it reaches a handler, unless that origin is allowed with
//! `--cors-allow-origin`. Model management never answers another origin. Clients that are not
//! browsers (curl, the OpenAI SDKs) send no `Origin` and are not affected.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearth_settings::Settings;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::auth::ADMIN_PREFIX;
use super::state::SharedState;
use crate::error::ApiError;

/// Whether `settings` lets pages of `origin` call the API.
fn allowed(settings: &Settings, origin: &str) -> bool {
    settings.cors_allow_origins.iter().any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Whether `origin` is the server's own (scheme, host and port as the request's `Host` names
/// them): a page Hearth itself served.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    authority.eq_ignore_ascii_case(host)
}

/// The CORS headers for allowed origins; none at all when no origin is configured, so a browser
/// keeps every other page from reading answers.
pub fn layer(settings: &Settings) -> CorsLayer {
    let origins = &settings.cors_allow_origins;
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let values = origins.iter().filter_map(|o| o.trim_end_matches('/').parse().ok()).collect::<Vec<_>>();
        AllowOrigin::list(values)
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        // The OpenAI SDKs send their own headers (x-stainless-*); mirror what the page asks for.
        .allow_headers(AllowHeaders::mirror_request())
}

/// Refuses browser requests from origins that may not call the API (403), and model
/// management from any other origin.
pub async fn origin_guard(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return next.run(req).await;
    };
    let origin = origin.to_str().unwrap_or("null").trim().to_owned();
    if same_origin(&origin, req.headers()) {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if path.starts_with(ADMIN_PREFIX) {
        return refuse(format!("Model management is not available to web pages of another origin (`{origin}`)"));
    }
    // `null` is what sandboxed frames and local files send: never a page anyone allowed.
    if origin == "null" || !allowed(&state.settings, &origin) {
        return refuse(format!(
            "Requests from web pages of `{origin}` are not allowed; start Hearth with --cors-allow-origin {origin} to allow them"
        ));
    }
    next.run(req).await
}

fn refuse(message: String) -> Response {
    ApiError { status: StatusCode::FORBIDDEN, ..ApiError::bad_request(message) }.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_compares_the_authority_with_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:5000".parse().unwrap());
        assert!(same_origin("http://127.0.0.1:5000", &headers));
        assert!(!same_origin("http://127.0.0.1:5001", &headers));
        assert!(!same_origin("https://evil.example", &headers));
        assert!(!same_origin("null", &headers));
    }

    #[test]
    fn configured_origins_and_the_wildcard_are_allowed() {
        let mut settings = Settings::default();
        assert!(!allowed(&settings, "https://app.example"));
        settings.cors_allow_origins = vec!["https://app.example/".into()];
        assert!(allowed(&settings, "https://app.example"));
        assert!(!allowed(&settings, "https://other.example"));
        settings.cors_allow_origins = vec!["*".into()];
        assert!(allowed(&settings, "https://other.example"));
    }
}
