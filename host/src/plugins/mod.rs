//! WebAssembly plugins (SPEC §10): the registry of plugins listed in settings.yaml, loaded once
//! (compiled, version-checked, pre-instantiated), and the typed hooks the rest of the server
//! calls — samplers per generated token, endpoints per request, moderation per request.
//! Every call runs in a fresh store with a memory cap and a CPU deadline; a trap, a timeout or
//! bad output is an error for that call alone.

mod endpoint;
pub mod host_api;
mod loader;
mod moderation;
mod runtime;
mod sampler;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use hearth_settings::{OnError, PluginSettings, Settings};

pub use endpoint::{EndpointRequest, EndpointResponse};
pub use host_api::HostServices;
pub use loader::PluginKind;
pub use moderation::{CategoryScore, ModerationVerdict};
pub use sampler::SamplerSession;

use loader::Loaded;
use runtime::PluginEngine;

/// What went wrong with a plugin.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PluginError {
    #[error("plugin `{plugin}` ({path}) cannot be loaded: {reason}")]
    Load { plugin: String, path: String, reason: String },
    #[error("plugin `{plugin}` exceeded its CPU deadline of {ms} ms")]
    Timeout { plugin: String, ms: u64 },
    #[error("plugin `{plugin}` exceeded its memory limit of {mb} MiB")]
    MemoryLimit { plugin: String, mb: u64 },
    #[error("plugin `{plugin}` crashed: {detail}")]
    Trap { plugin: String, detail: String },
    #[error("plugin `{plugin}` failed: {message}")]
    Failed { plugin: String, message: String },
    #[error("plugin `{plugin}` returned invalid output: {reason}")]
    BadOutput { plugin: String, reason: String },
    #[error("plugin `{plugin}` is busy: every instance slot is in use; try again shortly")]
    Busy { plugin: String },
    #[error("the plugin engine failed: {0}")]
    Engine(String),
}

/// One loaded plugin.
pub struct Plugin {
    pub name: Arc<str>,
    pub kind: PluginKind,
    pub settings: PluginSettings,
    /// The plugin's `config` as JSON text, handed over on every call.
    config_json: String,
    loaded: Loaded,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

impl Plugin {
    pub fn skips_on_error(&self) -> bool {
        self.settings.on_error == OnError::Skip
    }
}

/// Every loaded plugin, and the model services they may be granted.
pub struct PluginRegistry {
    /// `None` when no plugin is enabled: then no engine, pool or epoch thread is made at all.
    engine: Option<PluginEngine>,
    plugins: Vec<Arc<Plugin>>,
    services: RwLock<Option<Arc<dyn HostServices>>>,
    vocab_texts: RwLock<Option<Arc<Vec<String>>>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.plugins.iter().map(|p| &p.name)).finish()
    }
}

/// Where compiled plugins are cached when settings name no folder.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("hearth").join("wasmtime"))
}

impl PluginRegistry {
    /// Loads every enabled plugin of `settings`. A plugin that cannot load is an error naming it,
    /// unless it is marked optional (then it is logged and left out).
    pub fn load(settings: &Settings) -> Result<Self, PluginError> {
        if !settings.plugins.iter().any(|p| p.enabled) {
            return Ok(Self {
                engine: None,
                plugins: Vec::new(),
                services: RwLock::new(None),
                vocab_texts: RwLock::new(None),
            });
        }
        let cache = settings.plugin_cache_dir.clone().or_else(default_cache_dir);
        if let Some(dir) = &cache {
            let _ = std::fs::create_dir_all(dir);
        }
        let engine = PluginEngine::new(cache.as_deref(), settings.plugin_max_instances)?;
        let mut plugins = Vec::new();
        for spec in settings.plugins.iter().filter(|p| p.enabled) {
            match loader::load(&engine.engine, spec) {
                Ok((kind, loaded)) => {
                    tracing::info!(plugin = %spec.name, ?kind, "plugin loaded");
                    let config_json = serde_json::to_string(&spec.config).unwrap_or_else(|_| "null".into());
                    plugins.push(Arc::new(Plugin {
                        name: spec.name.as_str().into(),
                        kind,
                        settings: spec.clone(),
                        config_json,
                        loaded,
                    }));
                }
                Err(e) if spec.optional => tracing::warn!("{e} (optional: left out)"),
                Err(e) => return Err(e),
            }
        }
        Ok(Self { engine: Some(engine), plugins, services: RwLock::new(None), vocab_texts: RwLock::new(None) })
    }

    /// A registry with no plugins (servers and tests without settings).
    pub fn empty() -> Result<Self, PluginError> {
        Self::load(&Settings { plugin_cache_dir: None, ..Settings::default() })
    }

    /// Connects the host functions to a loaded model.
    pub fn set_services(&self, services: Option<Arc<dyn HostServices>>, vocab_texts: Option<Arc<Vec<String>>>) {
        *self.services.write().unwrap_or_else(|p| p.into_inner()) = services;
        *self.vocab_texts.write().unwrap_or_else(|p| p.into_inner()) = vocab_texts;
    }

    /// The engine; every loaded plugin implies one.
    fn engine(&self) -> Result<&wasmtime::Engine, PluginError> {
        self.engine
            .as_ref()
            .map(|e| &e.engine)
            .ok_or_else(|| PluginError::Engine("no plugin engine was started".into()))
    }

    fn services(&self) -> Option<Arc<dyn HostServices>> {
        self.services.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    pub fn of_kind(&self, kind: PluginKind) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.iter().filter(move |p| p.kind == kind)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| &*p.name == name)
    }

    pub fn has_samplers(&self) -> bool {
        self.of_kind(PluginKind::Sampler).next().is_some()
    }

    /// Starts one session per sampler plugin for a new generation. A plugin that fails to start
    /// is skipped or fails the generation, per its `on_error`.
    pub fn start_samplers(&self) -> Result<Vec<SamplerSession>, PluginError> {
        let vocab = self.vocab_texts.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut sessions = Vec::new();
        for plugin in self.of_kind(PluginKind::Sampler) {
            match SamplerSession::start(self.engine()?, plugin.clone(), self.services(), vocab.clone()) {
                Ok(s) => sessions.push(s),
                Err(e) if plugin.skips_on_error() => tracing::warn!("{e}; skipped for this generation"),
                Err(e) => return Err(e),
            }
        }
        Ok(sessions)
    }

    /// Runs an endpoint plugin on one request (blocking: call off the async runtime).
    pub fn call_endpoint(
        &self,
        plugin: &Arc<Plugin>,
        request: EndpointRequest,
    ) -> Result<EndpointResponse, PluginError> {
        endpoint::call(self.engine()?, plugin, self.services(), request)
    }

    /// Runs a moderation plugin on `inputs` (blocking: call off the async runtime).
    pub fn call_moderation(
        &self,
        plugin: &Arc<Plugin>,
        inputs: &[String],
    ) -> Result<Vec<ModerationVerdict>, PluginError> {
        moderation::call(self.engine()?, plugin, self.services(), inputs)
    }
}
