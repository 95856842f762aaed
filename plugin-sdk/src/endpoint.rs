//! Endpoint plugins: HTTP routes under `/v1/plugins/{name}/`.

use crate::Config;
use crate::bindings::common::hearth::plugin::types::Header;
use crate::bindings::endpoint::exports::hearth::plugin::endpoint as wit;

/// An HTTP request routed to the plugin.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path after `/v1/plugins/{name}`, starting with `/`.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// Request headers (names in lower case).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("the body is not the expected JSON: {e}"))
    }

    /// A header's value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The plugin's answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: text.into().into_bytes(),
        }
    }
}

/// An endpoint plugin. A fresh instance serves every request, so there is no state to keep.
pub trait EndpointPlugin {
    /// Answers one request. An `Err` becomes a 500 answer naming the plugin.
    fn handle(config: &Config, request: Request) -> Result<Response, String>;
}

#[doc(hidden)]
pub fn __handle<P: EndpointPlugin>(config: String, request: wit::Request) -> Result<wit::Response, String> {
    let config = Config::parse(&config)?;
    let request = Request {
        method: request.method,
        path: request.path,
        query: request.query,
        headers: request.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        body: request.body,
    };
    let response = P::handle(&config, request)?;
    Ok(wit::Response {
        status: response.status,
        headers: response.headers.into_iter().map(|(name, value)| Header { name, value }).collect(),
        body: response.body,
    })
}

/// Exports `$plugin` (an [`EndpointPlugin`]) as the component's endpoint.
#[macro_export]
macro_rules! export_endpoint {
    ($plugin:ty) => {
        struct __HearthEndpoint;
        impl $crate::bindings::endpoint::exports::hearth::plugin::endpoint::Guest for __HearthEndpoint {
            fn handle(
                config: String,
                request: $crate::bindings::endpoint::exports::hearth::plugin::endpoint::Request,
            ) -> Result<$crate::bindings::endpoint::exports::hearth::plugin::endpoint::Response, String> {
                $crate::__endpoint_handle::<$plugin>(config, request)
            }
        }
        $crate::bindings::endpoint::__export_endpoint!(__HearthEndpoint);
    };
}
