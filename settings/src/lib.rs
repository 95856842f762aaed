//! Hearth's settings: one typed [`Settings`] loaded with figment from, in rising precedence,
//! built-in defaults, `settings.yaml` (our keys and text-generation-webui's `openai-*` keys), the
//! command line, and the `OPENEDAI_*` environment variables.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Yaml};
use figment::value::{Dict, Value};
use serde::{Deserialize, Serialize};

/// Where models run (`--device`): the one list of device names. `auto` takes a real GPU
/// adapter when there is one and the CPU otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A real GPU when one opens, else the CPU.
    #[default]
    Auto,
    /// burn's wgpu backend: a GPU, or Mesa's lavapipe on a machine without one.
    #[serde(alias = "gpu", alias = "vulkan")]
    Wgpu,
    /// burn's pure-Rust CPU backend.
    #[serde(alias = "cpu")]
    Flex,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" | "vulkan" => Ok(Self::Wgpu),
            "flex" | "cpu" => Ok(Self::Flex),
            other => Err(format!("unknown device `{other}` (choose auto, wgpu or flex)")),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::Flex => "flex",
        })
    }
}

/// How an embedding model's products compute on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingPrecision {
    /// 8-bit weights and activations (per-row and per-32-value scales) where the CPU has
    /// AVX-512 VNNI: several times faster, vectors within 0.999 cosine of f32's. f32 elsewhere
    /// and on a GPU.
    #[default]
    Auto,
    /// f32 products: sentence-transformers' own numbers, to rounding.
    F32,
}

/// Which image URLs of a request the server fetches (`data:` URLs are always decoded in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageUrls {
    /// None: the server never dials out on a request's behalf.
    #[default]
    Off,
    /// http(s) URLs on the public internet; loopback, private and link-local addresses refused.
    Public,
    /// Any http(s) URL, the server's own network included.
    Any,
}

impl std::str::FromStr for ImageUrls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "public" => Ok(Self::Public),
            "any" => Ok(Self::Any),
            other => Err(format!("unknown image URL policy `{other}` (choose off, public or any)")),
        }
    }
}

/// Every setting of a running Hearth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// TCP port of the API (`--api-port`, `OPENEDAI_PORT`). 0 picks a free port.
    pub api_port: u16,
    /// Listen on every interface instead of loopback only (`--listen`).
    pub listen: bool,
    /// Explicit address to bind (`--listen-host`); wins over `listen`.
    pub listen_host: Option<String>,
    /// Every request must carry `Authorization: Bearer <api_key>` (`--api-key`).
    pub api_key: Option<String>,
    /// Key for `/v1/internal/model/*` and plugin admin routes (`--admin-key`); defaults to `api_key`.
    pub admin_key: Option<String>,
    /// Web origins (`https://app.example`) whose pages may call the API from a browser
    /// (`--cors-allow-origin`, repeatable; `*` allows every origin). Empty: only pages served by
    /// Hearth's own origin, so no other web page can drive the API. Model management never
    /// answers cross-origin requests.
    pub cors_allow_origins: Vec<String>,
    /// `/metrics` answers without the API key (`--metrics-public`): for a Prometheus that
    /// scrapes without credentials. Off: it follows the key like every route.
    pub metrics_public: bool,
    /// `/openapi.json` (the API's OpenAPI document) and `/docs` (Swagger UI, its assets built
    /// in) are served, without the API key: they hold no user data. Off with `--no-docs`.
    pub docs: bool,
    /// TLS private key, PEM (`--ssl-keyfile`, `OPENEDAI_KEY_PATH`).
    pub ssl_keyfile: Option<PathBuf>,
    /// TLS certificate chain, PEM (`--ssl-certfile`, `OPENEDAI_CERT_PATH`).
    pub ssl_certfile: Option<PathBuf>,
    /// Model to load at start: a file or folder name under `model_dir`, or a path (`--model`).
    pub model: Option<String>,
    /// Where models live (`--model-dir`).
    pub model_dir: PathBuf,
    /// textgen's user data folder (`--user-data-dir`): `characters/` and
    /// `instruction-templates/` are read from it.
    pub user_data_dir: PathBuf,
    /// Where the model runs (`--device`).
    pub device: DeviceChoice,
    /// Log request and response content (`OPENEDAI_DEBUG=1`, textgen's `openai-debug`). Off by
    /// default: Hearth logs no prompts or outputs.
    pub debug: bool,
    /// Embedding model name (`OPENEDAI_EMBEDDING_MODEL`, textgen's `openai-embedding_model`).
    pub embedding_model: Option<String>,
    /// Embedding device (`OPENEDAI_EMBEDDING_DEVICE`, textgen's `openai-embedding_device`).
    pub embedding_device: Option<String>,
    /// How the embedding model computes on the CPU (`OPENEDAI_EMBEDDING_PRECISION`).
    pub embedding_precision: EmbeddingPrecision,
    /// Most positions (prompt + answer) per sequence; capped by the model's own context length.
    pub ctx_size: Option<usize>,
    /// Default `max_tokens` when a request gives none.
    pub max_tokens_default: usize,
    /// Requests that may wait for the model before new ones get 429 (`--max-queue`).
    pub max_queue: usize,
    /// Sequences batched together, each step one forward pass for all of them (`--parallel`,
    /// llama.cpp's `-np`).
    pub max_running: usize,
    /// Most prompt tokens one step prefills: long prompts go through in chunks of this size
    /// while the other sequences keep generating (`--prefill-chunk`).
    pub prefill_chunk: usize,
    /// Positions the KV cache holds across all sequences (`--cache-size`), in blocks of 16 that
    /// sequences take as they grow and that finished prompts leave behind for prefix reuse.
    /// `None`: 512 per sequence of `max_running` and at least one context, at most a quarter of
    /// the machine's memory.
    pub cache_size: Option<usize>,
    /// Largest accepted request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// WebAssembly plugins to load, in order (sampler plugins run in this order).
    pub plugins: Vec<PluginSettings>,
    /// Whether the first-party plugins built into the binary load (`--no-default-plugins` turns
    /// them off): the five tool-call formats, embedding and keyword moderation, token tools
    /// (`plugins/default.yaml` lists them). `None`: they load when `plugins` is empty, and a
    /// `plugins:` list replaces them. `true`: they load before the listed plugins, an entry of
    /// the same name replacing the built-in one. `false`: only the listed plugins load.
    pub default_plugins: Option<bool>,
    /// Where compiled plugins are cached; default `$XDG_CACHE_HOME/hearth` or `~/.cache/hearth`.
    pub plugin_cache_dir: Option<PathBuf>,
    /// Plugin instances that may exist at once (requests, generations); a call beyond them is
    /// answered 503. Each may reserve its plugin's `limits.memory_mb`.
    pub plugin_max_instances: u32,
    /// Which tool-call parser plugin a model uses, overriding the chat-template hints: keys are
    /// matched against the model name (case-insensitive substring; the longest match wins),
    /// values name a loaded tool-parser plugin.
    pub tool_parsers: std::collections::BTreeMap<String, String>,
    /// Days a stored `/v1/responses` response is kept (`--responses-retention-days`); older ones
    /// are deleted. 0 keeps them until they are deleted through the API.
    pub responses_retention_days: u32,
    /// The Whisper model of `/v1/audio/transcriptions` (`--whisper-model`): a folder under
    /// `model_dir` or a path (CTranslate2's layout, as faster-whisper uses). `None`: the first
    /// Whisper folder in `model_dir`. Loaded on first use.
    pub whisper_model: Option<String>,
    /// Longest audio a transcription takes, in seconds (`--max-audio-seconds`); longer is a 413.
    pub max_audio_seconds: u64,
    /// Largest audio upload, in bytes (413 above it; OpenAI's limit is 25 MB).
    pub max_audio_bytes: usize,
    /// The Piper voice of `/v1/audio/speech` (`--piper-voice`): a voice's name (the `.onnx`
    /// file's stem, in `model_dir` or a folder there) or a path to its `.onnx`. `None`: the first
    /// voice in `model_dir`. OpenAI's voice names (`alloy`, …) speak with it. Loaded on first use.
    pub piper_voice: Option<String>,
    /// Which image URLs in chat and completions requests are fetched (`--image-urls`): `off`
    /// (the default: only `data:` URLs), `public` (http(s), never to loopback, private or
    /// link-local addresses) or `any`.
    pub image_urls: ImageUrls,
    /// llama.cpp's vision file for a GGUF model (`--mmproj`, as llama.cpp's): its CLIP tower
    /// and projector. `None`: the one `mmproj*.gguf` beside a model alone in its folder, if any.
    pub mmproj: Option<PathBuf>,
    /// The image model of `/v1/images/generations` (`--image-model`): a diffusers folder or a
    /// single-file `.safetensors` checkpoint, by its name in `model_dir` or a path. Loaded at
    /// start, in the background. `None`: image generation answers 503 saying how to load one.
    pub image_model: Option<String>,
    /// For a single-file image model (`--image-config`): a diffusers folder of the same model
    /// whose configs, tokenizer and scheduler describe it (diffusers' `from_single_file(config=…)`).
    /// `None`: inferred from the file, the ldm `.yaml` and the `tokenizer/` folder beside it.
    pub image_config: Option<PathBuf>,
    /// Where the image model runs (`--image-device`); `None`: `device`.
    pub image_device: Option<DeviceChoice>,
    /// Largest side of a generated image, in pixels (larger sizes are a 400).
    pub image_max_side: usize,
}

/// A plugin `path` that starts with this names a first-party component built into the binary
/// (`builtin:tool_parser_hermes.wasm`) rather than a file.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// One plugin of the `plugins:` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// Unique name; endpoint plugins answer under `/v1/plugins/{name}/`.
    pub name: String,
    /// The component (`.wasm`); relative paths are resolved against the settings file's folder
    /// first, then the working directory. `builtin:<file>` names a first-party component built
    /// into the binary (`builtin:keyword_moderation.wasm`).
    pub path: PathBuf,
    /// A disabled plugin is not loaded.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// Free-form configuration handed to the plugin (as JSON) on every call.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Memory and time limits of each call.
    #[serde(default)]
    pub limits: PluginLimits,
    /// What a failing call does: fail the request, or skip the plugin for that request.
    #[serde(default)]
    pub on_error: OnError,
    /// A plugin that cannot load is logged and left out instead of stopping start-up.
    #[serde(default)]
    pub optional: bool,
    /// What the plugin may use: host functions `tokenize`, `generate`, `embed`; the real `clock`.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

fn enabled_default() -> bool {
    true
}

/// Per-call limits of a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory cap in MiB.
    pub memory_mb: u64,
    /// CPU time of one call in milliseconds (time spent in host functions is not counted here:
    /// `host_ms` bounds it).
    pub call_ms: u64,
    /// Wall-clock time one call may spend inside host functions (`tokenize`, `generate`,
    /// `embed`, …) in milliseconds; past it they fail, and a `generate` still running is
    /// stopped.
    pub host_ms: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self { memory_mb: 64, call_ms: 50, host_ms: 30_000 }
    }
}

/// What a plugin failure does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The request fails with an error naming the plugin.
    #[default]
    Fail,
    /// The plugin is skipped for this request (logged).
    Skip,
}

/// A host capability granted to a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// `tokenize` / `detokenize` with the loaded model's tokenizer.
    Tokenize,
    /// `generate` with the loaded model.
    Generate,
    /// `embed` with the embedding model.
    Embed,
    /// The real wall and monotonic clocks (without it, a plugin's clocks stand still at the Unix
    /// epoch, so its output cannot depend on time).
    Clock,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            api_port: 5000,
            listen: false,
            listen_host: None,
            api_key: None,
            admin_key: None,
            cors_allow_origins: Vec::new(),
            metrics_public: false,
            docs: true,
            ssl_keyfile: None,
            ssl_certfile: None,
            model: None,
            model_dir: PathBuf::from("user_data/models"),
            user_data_dir: PathBuf::from("user_data"),
            device: DeviceChoice::Auto,
            debug: false,
            embedding_model: None,
            embedding_device: None,
            embedding_precision: EmbeddingPrecision::Auto,
            ctx_size: None,
            max_tokens_default: 512,
            max_queue: 64,
            max_running: 16,
            prefill_chunk: 512,
            cache_size: None,
            max_body_bytes: 4 << 20,
            plugins: Vec::new(),
            default_plugins: None,
            plugin_cache_dir: None,
            plugin_max_instances: 128,
            tool_parsers: Default::default(),
            responses_retention_days: 30,
            whisper_model: None,
            max_audio_seconds: 3600,
            max_audio_bytes: 25 << 20,
            piper_voice: None,
            image_urls: ImageUrls::Off,
            mmproj: None,
            image_model: None,
            image_config: None,
            image_device: None,
            image_max_side: 1024,
        }
    }
}

/// Settings given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CliSettings {
    /// `--api-port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<bool>,
    /// `--listen-host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_host: Option<String>,
    /// `--api-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// `--admin-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
    /// `--cors-allow-origin` (repeatable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_allow_origins: Option<Vec<String>>,
    /// `--metrics-public`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_public: Option<bool>,
    /// `--no-docs` (as `false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docs: Option<bool>,
    /// `--ssl-keyfile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_keyfile: Option<PathBuf>,
    /// `--ssl-certfile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_certfile: Option<PathBuf>,
    /// `--model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `--model-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<PathBuf>,
    /// `--user-data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data_dir: Option<PathBuf>,
    /// `--device`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceChoice>,
    /// `--ctx-size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx_size: Option<usize>,
    /// `--parallel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_running: Option<usize>,
    /// `--max-queue`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<usize>,
    /// `--prefill-chunk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill_chunk: Option<usize>,
    /// `--cache-size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<usize>,
    /// `--no-default-plugins` (as `Some(false)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_plugins: Option<bool>,
    /// `--responses-retention-days`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responses_retention_days: Option<u32>,
    /// `--whisper-model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whisper_model: Option<String>,
    /// `--max-audio-seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_audio_seconds: Option<u64>,
    /// `--piper-voice`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub piper_voice: Option<String>,
    /// `--image-urls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_urls: Option<ImageUrls>,
    /// `--mmproj`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmproj: Option<PathBuf>,
    /// `--image-model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_model: Option<String>,
    /// `--image-config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config: Option<PathBuf>,
    /// `--image-device`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_device: Option<DeviceChoice>,
}

/// Settings that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or a value in it is invalid.
    #[error("settings: {0}")]
    Invalid(String),
}

impl From<figment::Error> for SettingsError {
    fn from(e: figment::Error) -> Self {
        SettingsError::Invalid(e.to_string())
    }
}

/// text-generation-webui's settings.yaml keys and the fields they set.
const TEXTGEN_KEYS: &[(&str, &str)] = &[
    ("openai-debug", "debug"),
    ("openai-embedding_model", "embedding_model"),
    ("openai-embedding_device", "embedding_device"),
    ("truncation_length", "ctx_size"),
    ("max_new_tokens", "max_tokens_default"),
];

/// The `OPENEDAI_*` variables and the fields they set; they win over everything.
const ENV_KEYS: &[(&str, &str)] = &[
    ("OPENEDAI_PORT", "api_port"),
    ("OPENEDAI_CERT_PATH", "ssl_certfile"),
    ("OPENEDAI_KEY_PATH", "ssl_keyfile"),
    ("OPENEDAI_DEBUG", "debug"),
    ("OPENEDAI_EMBEDDING_MODEL", "embedding_model"),
    ("OPENEDAI_EMBEDDING_DEVICE", "embedding_device"),
    ("OPENEDAI_EMBEDDING_PRECISION", "embedding_precision"),
];

/// Loads settings: defaults < `settings_file` < `cli` < `env` (pass `std::env::vars()`).
pub fn load(
    settings_file: Option<&Path>,
    cli: &CliSettings,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, SettingsError> {
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(path) = settings_file {
        if !path.exists() {
            return Err(SettingsError::Invalid(format!("{} does not exist", path.display())));
        }
        let file: Dict = Figment::from(Yaml::file(path)).extract()?;
        figment = figment.merge(Serialized::defaults(translate_file_keys(file)));
    }
    figment = figment.merge(Serialized::defaults(cli));
    let mut from_env = Dict::new();
    for (name, value) in env {
        if let Some((_, field)) = ENV_KEYS.iter().find(|(var, _)| *var == name) {
            from_env.insert((*field).to_owned(), env_value(field, &value)?);
        }
    }
    figment = figment.merge(Serialized::defaults(from_env));
    let mut settings: Settings = figment.extract()?;
    let base = settings_file.and_then(Path::parent).map(Path::to_path_buf);
    for plugin in &mut settings.plugins {
        plugin.path = resolve_plugin_path(&plugin.path, base.as_deref());
    }
    let mut names = std::collections::HashSet::new();
    for plugin in &settings.plugins {
        if !names.insert(plugin.name.as_str()) {
            return Err(SettingsError::Invalid(format!("plugin name `{}` is used twice", plugin.name)));
        }
        if plugin.name.is_empty() || !plugin.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(SettingsError::Invalid(format!(
                "plugin name `{}` must be letters, digits, `-` and `_` (it becomes a URL path segment)",
                plugin.name
            )));
        }
    }
    Ok(settings)
}

/// A relative plugin path: against the settings file's folder when the file is there, else as
/// given (the working directory).
fn resolve_plugin_path(path: &Path, base: Option<&Path>) -> PathBuf {
    // `builtin:<file>` names a component built into the binary, not a file.
    if path.is_absolute() || path.to_str().is_some_and(|p| p.starts_with(BUILTIN_PREFIX)) {
        return path.to_path_buf();
    }
    match base.map(|b| b.join(path)) {
        Some(p) if p.exists() => p,
        _ => path.to_path_buf(),
    }
}

/// Renames textgen keys and drops keys of textgen's UI that Hearth has no use for, so a
/// settings.yaml written for text-generation-webui loads as it is.
fn translate_file_keys(file: Dict) -> Dict {
    let known: Vec<String> = serde_json_keys();
    let mut out = Dict::new();
    for (key, value) in file {
        let key = TEXTGEN_KEYS.iter().find(|(k, _)| *k == key).map_or(key, |(_, field)| (*field).to_owned());
        // Our own keys with `-` are accepted too (`api-port`), as CLI users write them.
        let key = key.replace('-', "_");
        if known.contains(&key) {
            out.insert(key, value);
        }
    }
    out
}

/// The field names of [`Settings`].
fn serde_json_keys() -> Vec<String> {
    match Value::serialize(Settings::default()) {
        Ok(Value::Dict(_, dict)) => dict.into_keys().collect(),
        _ => Vec::new(),
    }
}

/// Parses an environment variable's text for `field`.
fn env_value(field: &str, text: &str) -> Result<Value, SettingsError> {
    let text = text.trim();
    Ok(match field {
        "api_port" => {
            let port: u16 = text
                .parse()
                .map_err(|_| SettingsError::Invalid(format!("OPENEDAI_PORT `{text}` is not a port number")))?;
            Value::from(port)
        }
        "debug" => Value::from(matches!(text.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")),
        "embedding_precision" => Value::from(text.to_ascii_lowercase()),
        _ => Value::from(text.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-settings-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("settings.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_follow_textgen() {
        let s = load(None, &CliSettings::default(), []).unwrap();
        assert_eq!(s.api_port, 5000);
        assert!(!s.listen && !s.debug);
    }

    #[test]
    fn file_then_cli_then_env_win_in_that_order() {
        let path = write("order", "api_port: 6000\nmodel: from-file\nopenai-debug: false\n");
        let cli = CliSettings { api_port: Some(7000), ..Default::default() };
        let s = load(Some(&path), &cli, [("OPENEDAI_PORT".into(), "8000".into())]).unwrap();
        assert_eq!(s.api_port, 8000);
        assert_eq!(s.model.as_deref(), Some("from-file"));
        let s = load(Some(&path), &cli, []).unwrap();
        assert_eq!(s.api_port, 7000);
        let s = load(Some(&path), &CliSettings::default(), []).unwrap();
        assert_eq!(s.api_port, 6000);
    }

    #[test]
    fn textgen_keys_are_honoured() {
        let path = write("textgen", "openai-debug: true\nopenai-embedding_model: all-MiniLM-L6-v2\ndark_theme: true\n");
        let s = load(Some(&path), &CliSettings::default(), []).unwrap();
        assert!(s.debug);
        assert_eq!(s.embedding_model.as_deref(), Some("all-MiniLM-L6-v2"));
    }

    #[test]
    fn openedai_debug_turns_on_debug() {
        let s = load(None, &CliSettings::default(), [("OPENEDAI_DEBUG".into(), "1".into())]).unwrap();
        assert!(s.debug);
    }

    #[test]
    fn the_reference_file_lists_every_setting_at_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("settings.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        for key in serde_json_keys() {
            assert!(text.contains(&format!("\n{key}:")), "settings.yaml documents `{key}`");
        }
        let s = load(Some(&path), &CliSettings::default(), []).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn plugins_read_with_defaults() {
        let path = write(
            "plugins",
            "plugins:\n  - name: banned-words\n    path: /p/banned.wasm\n    config: {banned: [Paris]}\n    grants: [tokenize]\n",
        );
        let s = load(Some(&path), &CliSettings::default(), []).unwrap();
        let p = &s.plugins[0];
        assert!(p.enabled && !p.optional);
        assert_eq!(p.limits, PluginLimits::default());
        assert_eq!(p.on_error, OnError::Fail);
        assert_eq!(p.config["banned"][0], "Paris");
        assert_eq!(p.grants, vec![Grant::Tokenize]);
    }

    #[test]
    fn duplicate_or_unsafe_plugin_names_are_refused() {
        let path = write("dup", "plugins:\n  - {name: a, path: x.wasm}\n  - {name: a, path: y.wasm}\n");
        assert!(load(Some(&path), &CliSettings::default(), []).unwrap_err().to_string().contains("twice"));
        let path = write("slash", "plugins:\n  - {name: a/b, path: x.wasm}\n");
        assert!(load(Some(&path), &CliSettings::default(), []).is_err());
    }

    #[test]
    fn a_bad_port_is_a_clear_error() {
        let err = load(None, &CliSettings::default(), [("OPENEDAI_PORT".into(), "http".into())]).unwrap_err();
        assert!(err.to_string().contains("OPENEDAI_PORT"), "{err}");
        let path = write("badport", "api_port: seventy\n");
        let err = load(Some(&path), &CliSettings::default(), []).unwrap_err();
        assert!(err.to_string().contains("api_port"), "{err}");
    }

    #[test]
    fn devices_have_one_list_of_names() {
        let path = write("device", "device: cpu\n");
        assert_eq!(load(Some(&path), &CliSettings::default(), []).unwrap().device, DeviceChoice::Flex);
        let cli = CliSettings { device: Some("GPU".parse().unwrap()), ..Default::default() };
        assert_eq!(load(Some(&path), &cli, []).unwrap().device, DeviceChoice::Wgpu);
        let path = write("baddevice", "device: tpu\n");
        let err = load(Some(&path), &CliSettings::default(), []).unwrap_err();
        assert!(err.to_string().contains("tpu"), "{err}");
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("auto, wgpu or flex"));
    }

    #[test]
    fn embedding_precision_comes_from_the_file_or_the_environment() {
        assert_eq!(load(None, &CliSettings::default(), []).unwrap().embedding_precision, EmbeddingPrecision::Auto);
        let env = [("OPENEDAI_EMBEDDING_PRECISION".into(), " F32 ".into())];
        assert_eq!(load(None, &CliSettings::default(), env).unwrap().embedding_precision, EmbeddingPrecision::F32);
        let path = write("precision", "embedding_precision: f32\n");
        assert_eq!(
            load(Some(&path), &CliSettings::default(), []).unwrap().embedding_precision,
            EmbeddingPrecision::F32
        );
        let env = [("OPENEDAI_EMBEDDING_PRECISION".into(), "int4".into())];
        let err = load(None, &CliSettings::default(), env).unwrap_err();
        assert!(err.to_string().contains("int4"), "{err}");
    }
}
