//! The host functions plugins import (`hearth:plugin/host`): logging for every plugin;
//! tokenize, generate and embed only where the plugin's settings grant them. Their wall-clock
//! time is charged to the call's host-time budget (`limits.host_ms`), not to its CPU deadline;
//! what they take and return is capped.

use hearth_plugin_bindings::sampler::hearth::plugin::{host, types};
use std::time::Instant;

use hearth_settings::Grant;

use super::runtime::HostState;

/// Most bytes of text a host function hands to a plugin in one call.
const MAX_RETURN_TEXT: usize = 8 << 20;
/// Most texts or tokens per call.
const MAX_ITEMS: usize = 1 << 20;

/// The model behind the host functions, provided by the server once a model is loaded.
pub trait HostServices: Send + Sync {
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, String>;
    fn detokenize(&self, tokens: &[u32]) -> Result<String, String>;
    /// Generates, giving up (and stopping the generation) at `deadline`.
    fn generate(&self, request: &host::GenerateRequest, deadline: Instant) -> Result<host::GenerateResponse, String>;
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
}

impl HostState {
    fn granted(&self, grant: Grant) -> Result<&dyn HostServices, String> {
        if !self.grants.contains(&grant) {
            let name = match grant {
                Grant::Tokenize => "tokenize",
                Grant::Generate => "generate",
                Grant::Embed => "embed",
                Grant::Clock => "clock",
            };
            return Err(format!(
                "plugin `{}` is not granted `{name}` (add it to `grants:` in settings.yaml)",
                self.plugin
            ));
        }
        self.services.as_deref().ok_or_else(|| "no model is loaded".to_owned())
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::Level, message: String) {
        let plugin = &*self.plugin;
        let message: String = message.chars().take(4000).collect();
        match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn tokenize(&mut self, text: String) -> Result<Vec<u32>, String> {
        if text.len() > MAX_RETURN_TEXT {
            return Err("the text is larger than a plugin may tokenize in one call".into());
        }
        self.charged(|s, _| {
            let ids = s.granted(Grant::Tokenize)?.tokenize(&text)?;
            if ids.len() > MAX_ITEMS {
                return Err(format!("{} tokens is more than a plugin may receive", ids.len()));
            }
            Ok(ids)
        })
    }

    fn detokenize(&mut self, tokens: Vec<u32>) -> Result<String, String> {
        if tokens.len() > MAX_ITEMS {
            return Err("too many tokens".into());
        }
        self.charged(|s, _| {
            let text = s.granted(Grant::Tokenize)?.detokenize(&tokens)?;
            if text.len() > MAX_RETURN_TEXT {
                return Err("the text is larger than a plugin may receive".into());
            }
            Ok(text)
        })
    }

    fn generate(&mut self, request: host::GenerateRequest) -> Result<host::GenerateResponse, String> {
        if self.on_model_thread {
            return Err("`generate` is not available inside a sampler (it runs on the model's own thread)".into());
        }
        self.charged(|s, deadline| s.granted(Grant::Generate)?.generate(&request, deadline))
    }

    fn embed(&mut self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        if texts.len() > MAX_ITEMS {
            return Err("too many texts".into());
        }
        self.charged(|s, _| s.granted(Grant::Embed)?.embed(&texts))
    }
}
