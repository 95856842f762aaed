//! Endpoint plugins: a fresh instance answers each request routed to `/v1/plugins/{name}/…`.

use std::sync::Arc;

use hearth_plugin_bindings::endpoint::exports::hearth::plugin::endpoint as wit;
use hearth_plugin_bindings::sampler::hearth::plugin::types::Header;
use wasmtime::Engine;

use super::host_api::HostServices;
use super::loader::Loaded;
use super::runtime::{describe_failure, store_for_call};
use super::{Plugin, PluginError};

/// Largest response body a plugin may return.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// A request for an endpoint plugin.
#[derive(Debug, Clone)]
pub struct EndpointRequest {
    pub method: String,
    /// Relative to `/v1/plugins/{name}`, starting with `/`.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An endpoint plugin's answer, checked.
#[derive(Debug, Clone)]
pub struct EndpointResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn call(
    engine: &Engine,
    plugin: &Arc<Plugin>,
    services: Option<Arc<dyn HostServices>>,
    request: EndpointRequest,
) -> Result<EndpointResponse, PluginError> {
    let Loaded::Endpoint(pre) = &plugin.loaded else {
        return Err(PluginError::Engine(format!("plugin `{}` is not an endpoint", plugin.name)));
    };
    let limits = &plugin.settings.limits;
    let mut store = store_for_call(engine, plugin, services);
    let bindings = pre.instantiate(&mut store).map_err(|e| describe_failure(&plugin.name, limits, &e))?;
    let wit_request = wit::Request {
        method: request.method,
        path: request.path,
        query: request.query,
        headers: request.headers.into_iter().map(|(name, value)| Header { name, value }).collect(),
        body: request.body,
    };
    let answer = bindings
        .hearth_plugin_endpoint()
        .call_handle(&mut store, &plugin.config_json, &wit_request)
        .map_err(|e| describe_failure(&plugin.name, limits, &e))?;
    let response = answer.map_err(|message| PluginError::Failed { plugin: plugin.name.to_string(), message })?;
    let bad = |reason: String| PluginError::BadOutput { plugin: plugin.name.to_string(), reason };
    if !(100..=599).contains(&response.status) {
        return Err(bad(format!("HTTP status {} is not a status", response.status)));
    }
    if response.body.len() > MAX_RESPONSE_BYTES {
        return Err(bad(format!(
            "a body of {} bytes is over the {MAX_RESPONSE_BYTES}-byte limit",
            response.body.len()
        )));
    }
    if response.headers.len() > 100 {
        return Err(bad(format!("{} headers is too many", response.headers.len())));
    }
    Ok(EndpointResponse {
        status: response.status,
        headers: response.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        body: response.body,
    })
}
