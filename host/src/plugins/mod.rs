//! WebAssembly plugins (SPEC §10): the registry of plugins listed in settings.yaml, loaded once
//! (compiled, version-checked, pre-instantiated), and the typed hooks the rest of the server
//! calls — samplers per generated token, endpoints per request, moderation per request.
//! Every call runs in a fresh store with a memory cap and a CPU deadline; a trap, a timeout or
//! bad output is an error for that call alone.

mod builtin;
mod endpoint;
pub mod host_api;
mod loader;
mod moderation;
mod runtime;
mod sampler;
mod tool_parser;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use hearth_settings::{OnError, PluginSettings, Settings};

pub use endpoint::{EndpointRequest, EndpointResponse};
pub use host_api::HostServices;
pub use loader::PluginKind;
pub use moderation::{CategoryScore, ModerationVerdict};
pub use sampler::SamplerSession;
pub use tool_parser::{CallDelta, ParsedText, ToolParserSession, ToolSpec};

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
    /// Tool parsers: chat-template substrings that select this format.
    tool_hints: Vec<String>,
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
        let specs = builtin::plugins_to_load(settings);
        if !specs.iter().any(|p| p.enabled) {
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
        for spec in specs.iter().filter(|p| p.enabled) {
            match loader::load(&engine.engine, spec) {
                Ok((kind, loaded)) => {
                    tracing::info!(plugin = %spec.name, ?kind, "plugin loaded");
                    let config_json = serde_json::to_string(&spec.config).unwrap_or_else(|_| "null".into());
                    let mut plugin = Plugin {
                        name: spec.name.as_str().into(),
                        kind,
                        settings: spec.clone(),
                        config_json,
                        loaded,
                        tool_hints: Vec::new(),
                    };
                    if kind == PluginKind::ToolParser {
                        match tool_parser::template_hints(&engine.engine, &plugin) {
                            Ok(h) => plugin.tool_hints = h.into_iter().filter(|h| !h.is_empty()).collect(),
                            Err(e) if spec.optional => {
                                tracing::warn!("{e} (optional: left out)");
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    plugins.push(Arc::new(plugin));
                }
                Err(e) if spec.optional => tracing::warn!("{e} (optional: left out)"),
                Err(e) => return Err(e),
            }
        }
        Ok(Self { engine: Some(engine), plugins, services: RwLock::new(None), vocab_texts: RwLock::new(None) })
    }

    /// A registry with no plugins (servers and tests without settings).
    pub fn empty() -> Result<Self, PluginError> {
        Self::load(&Settings { plugin_cache_dir: None, default_plugins: Some(false), ..Settings::default() })
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
            let started = timed(&plugin.name, "sampler.start", || {
                SamplerSession::start(self.engine()?, plugin.clone(), self.services(), vocab.clone())
            });
            match started {
                Ok(s) => sessions.push(s),
                Err(e) if plugin.skips_on_error() => tracing::warn!("{e}; skipped for this generation"),
                Err(e) => return Err(e),
            }
        }
        Ok(sessions)
    }

    /// The tool-call parser for a model: the one settings name for it, else the one whose
    /// hint found in the chat template is the longest (the most specific: Llama 3.2's template
    /// shows both the JSON and the pythonic format, and the longer hint tells them apart), else
    /// the first without hints (a generic fallback), else the first loaded.
    pub fn tool_parser_for(&self, preferred: Option<&str>, template: &str) -> Option<Arc<Plugin>> {
        let parsers: Vec<&Arc<Plugin>> = self.of_kind(PluginKind::ToolParser).collect();
        if let Some(name) = preferred {
            match parsers.iter().find(|p| &*p.name == name) {
                Some(p) => return Some((*p).clone()),
                None => tracing::warn!("settings name tool parser `{name}`, which is not loaded"),
            }
        }
        let hinted = parsers
            .iter()
            .filter_map(|p| {
                let longest = p.tool_hints.iter().filter(|h| template.contains(h.as_str())).map(String::len).max()?;
                Some((longest, *p))
            })
            // `max_by_key` keeps the last of equals; reversing keeps the first loaded instead.
            .rev()
            .max_by_key(|(len, _)| *len)
            .map(|(_, p)| p);
        hinted
            .or_else(|| parsers.iter().copied().find(|p| p.tool_hints.is_empty()))
            .or_else(|| parsers.first().copied())
            .cloned()
    }

    /// Starts a tool-call parser for one response (blocking: microseconds of plugin work).
    pub fn start_tool_parser(
        &self,
        plugin: &Arc<Plugin>,
        tools: &[ToolSpec],
    ) -> Result<ToolParserSession, PluginError> {
        timed(&plugin.name, "tool-parser.start", || {
            ToolParserSession::start(self.engine()?, plugin.clone(), self.services(), tools)
        })
    }

    /// The format's system-prompt text for `tools`.
    pub fn tool_instructions(&self, plugin: &Arc<Plugin>, tools: &[ToolSpec]) -> Result<String, PluginError> {
        timed(&plugin.name, "tool-parser.instructions", || tool_parser::instructions(self.engine()?, plugin, tools))
    }

    /// Earlier calls (name, arguments JSON) as the model would have written them.
    pub fn render_tool_calls(&self, plugin: &Arc<Plugin>, calls: &[(String, String)]) -> Result<String, PluginError> {
        timed(&plugin.name, "tool-parser.render-calls", || tool_parser::render_calls(self.engine()?, plugin, calls))
    }

    /// The grammar that forces a call to one of `tools`.
    pub fn tool_call_grammar(
        &self,
        plugin: &Arc<Plugin>,
        tools: &[ToolSpec],
        parallel: bool,
    ) -> Result<String, PluginError> {
        timed(&plugin.name, "tool-parser.grammar", || {
            tool_parser::call_grammar(self.engine()?, plugin, tools, parallel)
        })
    }

    /// Runs an endpoint plugin on one request (blocking: call off the async runtime).
    pub fn call_endpoint(
        &self,
        plugin: &Arc<Plugin>,
        request: EndpointRequest,
    ) -> Result<EndpointResponse, PluginError> {
        timed(&plugin.name, "endpoint", || endpoint::call(self.engine()?, plugin, self.services(), request))
    }

    /// Runs a moderation plugin on `inputs` (blocking: call off the async runtime).
    pub fn call_moderation(
        &self,
        plugin: &Arc<Plugin>,
        inputs: &[String],
    ) -> Result<Vec<ModerationVerdict>, PluginError> {
        timed(&plugin.name, "moderation", || moderation::call(self.engine()?, plugin, self.services(), inputs))
    }
}

/// Runs one hook call of `plugin`, counted for `/metrics` (calls, failures, time) by plugin and
/// hook.
pub(crate) fn timed<T>(
    plugin: &str,
    hook: &'static str,
    call: impl FnOnce() -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    let started = std::time::Instant::now();
    let out = call();
    crate::telemetry::plugin_call(plugin, hook, started.elapsed(), out.is_err());
    out
}
