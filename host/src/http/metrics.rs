//! `GET /metrics` (Prometheus' text exposition format, from [`crate::telemetry`]) and the
//! middleware that counts every HTTP request by route pattern, method and status.

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The metrics, as Prometheus scrapes them (the API key applies unless `--metrics-public`).
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "Prometheus' text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "The API key is missing or wrong", body = crate::error::ErrorBody)))]
pub async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::telemetry::render())
}

/// Counts the request once answered. The route is the router's pattern (`/v1/models/{id}`),
/// never the path as sent: no client text in labels, and a bounded set of them.
pub async fn count_requests(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    crate::telemetry::http_request(
        route.as_deref().unwrap_or("unmatched"),
        method.as_str(),
        response.status().as_u16(),
    );
    response
}
