//! Who may call what: the API key on every route but `/health`, the admin key on model
//! management routes, who the caller is (for stopping their own generations), and the
//! DNS-rebinding guard that refuses foreign `Host` headers while the server listens on loopback
//! only.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use constant_time_eq::constant_time_eq;

use crate::engine::Owner;
use crate::error::ApiError;
use crate::http::state::SharedState;

/// Who made a request, as the handlers see it (a request extension set by [`require_keys`]).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's network address: generations are stopped per address.
    pub owner: Owner,
    /// Whether the request carries the admin key (set, or defaulted to the API key): it may
    /// stop everyone's generations.
    pub admin: bool,
}

/// Routes that need the admin key.
pub const ADMIN_PREFIX: &str = "/v1/internal/model/";
/// Routes open without any key.
const OPEN_PATHS: &[&str] = &["/health"];

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn matches(given: Option<&str>, expected: &str) -> bool {
    given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
}

/// Checks keys before any handler runs, and records who the caller is.
pub async fn require_keys(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let s = &state.settings;
    let admin_key = s.admin_key.as_deref().or(s.api_key.as_deref());
    if path.starts_with(ADMIN_PREFIX) {
        if let Some(admin) = admin_key
            && !matches(bearer(&req), admin)
        {
            // text-generation-webui answers 403 to any request without the admin key.
            return ApiError::forbidden().into_response();
        }
    } else if !OPEN_PATHS.contains(&path)
        && let Some(key) = s.api_key.as_deref()
    {
        // The admin key opens everything the API key does.
        let given = bearer(&req);
        if !matches(given, key) && !s.admin_key.as_deref().is_some_and(|admin| matches(given, admin)) {
            return ApiError::unauthorized().into_response();
        }
    }
    let admin = admin_key.is_some_and(|k| matches(bearer(&req), k));
    // Tests that drive the router in-process have no connection: they are one caller.
    let address = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
    let owner = Owner(address.unwrap_or_else(|| "in-process".into()));
    req.extensions_mut().insert(Caller { owner, admin });
    next.run(req).await
}

/// Whether `host` (a `Host` header value, maybe with a port) names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { host })
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses requests addressed to another host name while listening on loopback only, so a web
/// page that rebinds its DNS name to 127.0.0.1 cannot reach the API.
pub async fn host_guard(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if !crate::http::listens_publicly(&state.settings) {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(host) = host
            && !is_loopback_host(&host)
        {
            return ApiError::bad_request(format!(
                    "Host `{host}` is not allowed: this server listens on loopback only (start it with --listen to serve other hosts)"
                ))
                .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_names_pass_and_others_do_not() {
        for ok in ["localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "[::1]", "LOCALHOST"] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["evil.com", "evil.com:5000", "127.0.0.1.evil.com", "192.168.1.2:5000", "[fe80::1]:5000"] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
