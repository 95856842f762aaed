//! The HTTP API: thin axum handlers, one file per API area, and [`app`], the router with every
//! route and the layers around them (browser origins and CORS, keys, Host guard, body limit,
//! panic guard).

pub mod audio;
pub mod auth;
pub mod blocking;
pub mod body;
pub mod chat;
pub mod chat_run;
pub mod completions;
pub mod cors;
pub mod embeddings;
pub mod generation;
pub mod health;
pub mod image_generation;
pub mod images;
pub mod internal;
pub mod logprobs;
pub mod metrics;
pub mod model_admin;
pub mod models;
pub mod moderations;
pub mod openapi;
pub mod plugins;
pub mod query;
pub mod responses;
pub mod responses_input;
pub mod responses_output;
pub mod responses_running;
pub mod responses_types;
pub mod samplers;
pub mod speech;
pub mod sse;
pub mod state;
pub mod tools;
pub mod types;
pub mod validate;

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hearth_settings::Settings;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::ApiError;
pub use state::{AppState, ModelState, SharedState};

/// The address `--listen-host` names: an IPv4 or IPv6 address, bracketed or not, or
/// `localhost`; `None` for anything else.
pub fn listen_ip(host: &str) -> Option<std::net::IpAddr> {
    let host = host.trim();
    if host.eq_ignore_ascii_case("localhost") {
        return Some(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse().ok()
}

/// Whether the server accepts connections from other machines (then the Host guard is off).
pub fn listens_publicly(settings: &Settings) -> bool {
    match settings.listen_host.as_deref() {
        // A name that is not an address could resolve anywhere: treat it as public.
        Some(host) => listen_ip(host).is_none_or(|ip| !ip.is_loopback()),
        None => settings.listen,
    }
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("Unknown route: see /v1/models, /v1/chat/completions and /v1/completions")
}

async fn wrong_method() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::bad_request("This route does not accept that method")
    }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = crate::panics::panic_message(&*panic);
    tracing::error!("a handler panicked: {detail}");
    ApiError::internal("Internal error while handling the request; the server keeps running").into_response()
}

/// The router with every route (tests build it in-process too).
pub fn app(state: SharedState) -> Router {
    let keys = || axum::middleware::from_fn_with_state(state.clone(), auth::require_keys);
    // Model management: the admin key, and never CORS (cors::origin_guard refuses other
    // origins before this).
    let admin = Router::new()
        .route("/v1/internal/model/info", get(internal::model_info))
        .route("/v1/internal/model/list", get(internal::model_list))
        .route("/v1/internal/model/load", post(model_admin::load))
        .route("/v1/internal/model/unload", post(model_admin::unload))
        .layer(keys());
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/v1/internal/health", get(health::internal_health))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{response_id}", get(responses::retrieve).delete(responses::delete))
        .route("/v1/responses/{response_id}/cancel", post(responses::cancel))
        .route("/v1/responses/{response_id}/input_items", get(responses::input_items))
        .route("/v1/internal/encode", post(internal::encode))
        .route("/v1/internal/decode", post(internal::decode))
        .route("/v1/internal/token-count", post(internal::token_count))
        .route("/v1/internal/logits", post(internal::logits))
        .route("/v1/internal/chat-prompt", post(internal::chat_prompt))
        .route("/v1/internal/stop-generation", post(internal::stop_generation))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/audio/transcriptions", post(audio::transcriptions))
        .route("/v1/audio/speech", post(speech::speech))
        .route("/v1/images/generations", post(image_generation::generations))
        .route("/v1/images/edits", post(image_generation::not_implemented))
        .route("/v1/images/variations", post(image_generation::not_implemented))
        .route("/v1/moderations", post(moderations::moderations))
        .route("/v1/plugins/{name}", any(plugins::handle_root))
        .route("/v1/plugins/{name}/", any(plugins::handle_root))
        .route("/v1/plugins/{name}/{*rest}", any(plugins::handle))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(keys())
        // Outside the keys: a browser's preflight carries no Authorization header.
        .layer(cors::layer(&state.settings));
    // Prometheus' scrape: behind the keys unless `--metrics-public`.
    let metrics = Router::new().route("/metrics", get(metrics::metrics));
    let metrics = if state.settings.metrics_public { metrics } else { metrics.layer(keys()) };
    api.merge(admin)
        .merge(metrics)
        .merge(openapi::routes(&state))
        .layer(axum::middleware::from_fn(metrics::count_requests))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::host_guard))
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors::origin_guard))
        // JsonBody enforces `max_body_bytes` itself (and drains oversized bodies).
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panic_response))
        // Method, path, status and latency only, at debug level: never request or response
        // content. (`HEARTH_LOG=tower_http=debug` shows them.)
        .layer(
            TraceLayer::new_for_http()
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_hosts_parse_bracketed_or_not() {
        let loopback = |h: &str| Settings { listen_host: Some(h.into()), ..Settings::default() };
        for host in ["[::1]", "::1", "127.0.0.1", "localhost", " [::1] "] {
            assert!(!listens_publicly(&loopback(host)), "{host}");
        }
        for host in ["0.0.0.0", "[::]", "::", "192.168.1.2", "example.org"] {
            assert!(listens_publicly(&loopback(host)), "{host}");
        }
        assert_eq!(listen_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(listen_ip("[::1"), None);
    }
}
