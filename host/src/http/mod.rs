//! The HTTP API: thin axum handlers, one file per API area, and [`app`], the router with every
//! route and the layers around them (CORS, keys, Host guard, body limit, panic guard).

pub mod body;
pub mod chat;
pub mod chat_run;
pub mod completions;
pub mod embeddings;
pub mod generation;
pub mod health;
pub mod internal;
pub mod logprobs;
pub mod model_admin;
pub mod models;
pub mod moderations;
pub mod plugins;
pub mod samplers;
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
use tower_http::cors::CorsLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::ApiError;
pub use state::{AppState, ModelState, ServedModel, SharedState};

/// Whether the server accepts connections from other machines (then the Host guard is off).
pub fn listens_publicly(settings: &Settings) -> bool {
    match settings.listen_host.as_deref() {
        Some(host) => host.parse::<std::net::IpAddr>().map_or(host != "localhost", |ip| !ip.is_loopback()),
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
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!("a handler panicked: {detail}");
    ApiError::internal("Internal error while handling the request; the server keeps running").into_response()
}

/// The router with every route (tests build it in-process too).
pub fn app(state: SharedState) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/v1/internal/health", get(health::health))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/internal/encode", post(internal::encode))
        .route("/v1/internal/decode", post(internal::decode))
        .route("/v1/internal/token-count", post(internal::token_count))
        .route("/v1/internal/logits", post(internal::logits))
        .route("/v1/internal/chat-prompt", post(internal::chat_prompt))
        .route("/v1/internal/stop-generation", post(internal::stop_generation))
        .route("/v1/internal/model/info", get(internal::model_info))
        .route("/v1/internal/model/list", get(internal::model_list))
        .route("/v1/internal/model/load", post(model_admin::load))
        .route("/v1/internal/model/unload", post(model_admin::unload))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/moderations", post(moderations::moderations))
        .route("/v1/plugins/{name}", any(plugins::handle_root))
        .route("/v1/plugins/{name}/", any(plugins::handle_root))
        .route("/v1/plugins/{name}/{*rest}", any(plugins::handle))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method);
    api.layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::require_keys))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::host_guard))
        // JsonBody enforces `max_body_bytes` itself (and drains oversized bodies).
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(CorsLayer::permissive())
        // Method, path, status and latency only, at debug level: never request or response
        // content. (`HEARTH_LOG=tower_http=debug` shows them.)
        .layer(
            TraceLayer::new_for_http()
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}
