//! The model being served: loaded onto its device with an engine, a chat renderer and (on first
//! use) a grammar compiler over its vocabulary. The server loads one at start and the model
//! admin endpoint loads others; both stand on this module, below http/.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_settings::Settings;

use crate::constraint::GrammarCompiler;
use crate::embedding_service::EmbeddingService;
use crate::engine::{Engine, WorkerOptions};
use crate::model::device::DeviceError;
use crate::model::{self, LoadError, LoadProgress, ModelFormat};
use crate::plugin_services::{self, ModelServices};
use crate::plugins::PluginRegistry;
use crate::prompt::chat::ChatRenderer;
use crate::prompt::template::TemplateError;

/// Why a model could not be served.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Device(#[from] DeviceError),
    #[error("{0}")]
    Model(#[from] LoadError),
    /// The model's chat template cannot be used.
    #[error("{0}")]
    Template(#[from] TemplateError),
    #[error("{}: the loader panicked", .0.display())]
    Panicked(PathBuf),
}

/// The model's vocabulary cannot be compiled into grammars: constrained decoding is off.
#[derive(Debug, thiserror::Error)]
#[error("constrained decoding is unavailable for this model: {0}")]
pub struct GrammarUnavailable(String);

/// A model ready to answer.
pub struct ServedModel {
    pub engine: Engine,
    pub renderer: ChatRenderer,
    pub name: String,
    pub path: PathBuf,
    /// Unix time the model was loaded (its `created` in `/v1/models`).
    pub created: u64,
    /// `llama.cpp`/`Transformers`-style loader name for `/v1/internal/model/info`.
    pub loader: &'static str,
    /// The instruction template requests use when they name none (set by a model load's
    /// `instruction_template`, or by the model dir's `config-user.yaml` / `config.yaml`); `None`:
    /// the model's own.
    pub instruction_template: Option<String>,
    /// Grammar compiler over this model's vocabulary, built on first use.
    pub grammar: OnceLock<Result<Arc<GrammarCompiler>, String>>,
    /// The vision side of a multimodal model.
    pub vision: Option<Arc<crate::vision::VisionModel>>,
}

impl ServedModel {
    /// The grammar compiler for this model's vocabulary (built once, ~0.1 s).
    pub fn grammar(&self) -> Result<Arc<GrammarCompiler>, GrammarUnavailable> {
        self.grammar
            .get_or_init(|| {
                GrammarCompiler::new(self.engine.tokenizer().clone()).map(Arc::new).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(GrammarUnavailable)
    }
}

/// Loads the model and starts its engine (blocking; run it off the async runtime). A model or
/// device library that panics while loading is a failed load, not a hang or a crash.
pub fn load_model(
    path: &Path,
    settings: &Settings,
    plugins: &Arc<PluginRegistry>,
    embeddings: &Arc<EmbeddingService>,
    progress: &LoadProgress,
) -> Result<ServedModel, StartError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        start_model(path, settings, plugins, embeddings, progress)
    }))
    .unwrap_or_else(|_| Err(StartError::Panicked(path.to_path_buf())))
}

fn start_model(
    path: &Path,
    settings: &Settings,
    plugins: &Arc<PluginRegistry>,
    embeddings: &Arc<EmbeddingService>,
    progress: &LoadProgress,
) -> Result<ServedModel, StartError> {
    let device = model::device::select(settings.device)?;
    tracing::info!("device: {}", device.description);
    let loaded = model::load_with_progress(path, &device, progress)?;
    let vision = crate::vision::VisionModel::for_model(&loaded, settings.mmproj.as_deref())
        .map_err(|e| model::LoadError {
            path: path.to_path_buf(),
            source: model::ModelError::Input(format!("vision: {e}")),
        })?
        .map(Arc::new);
    let renderer = ChatRenderer::new(&loaded.tokenizer)?;
    let instruction_template = path.file_name().and_then(|n| n.to_str()).and_then(|file_name| {
        crate::prompt::model_config::chosen_template(
            &settings.model_dir,
            &settings.user_data_dir.join("instruction-templates"),
            file_name,
            renderer.model_template_source().is_some(),
        )
    });
    let name = loaded.name.clone();
    let loader = match loaded.format {
        ModelFormat::Gguf => "hearth-gguf",
        ModelFormat::HfFolder => "hearth-safetensors",
    };
    let options = WorkerOptions {
        queue_capacity: settings.max_queue,
        max_running: settings.max_running,
        prefill_chunk: settings.prefill_chunk,
        cache_positions: settings.cache_size,
        context_length: settings.ctx_size.unwrap_or(usize::MAX),
        warm_up: true,
        plugins: plugins.has_samplers().then(|| plugins.clone()),
    };
    let engine = Engine::start(loaded, options);
    let vocab = plugins.has_samplers().then(|| Arc::new(plugin_services::vocab_texts(&engine)));
    let services = ModelServices { engine: Some(engine.clone()), embeddings: embeddings.clone() };
    plugins.set_services(Some(Arc::new(services)), vocab);
    Ok(ServedModel {
        engine,
        renderer,
        name,
        path: path.to_path_buf(),
        created: unix_now(),
        loader,
        instruction_template,
        grammar: Default::default(),
        vision,
    })
}

/// Where a model called `name` may lie in the model dir: the file or folder itself, or the
/// file with `.gguf` added (the names `--model` and the load endpoint take).
pub fn model_paths(name: &str, model_dir: &Path) -> [PathBuf; 2] {
    [model_dir.join(name), model_dir.join(format!("{name}.gguf"))]
}

/// The first of [`model_paths`] that exists.
pub fn model_in_dir(name: &str, model_dir: &Path) -> Option<PathBuf> {
    model_paths(name, model_dir).into_iter().find(|p| p.exists())
}

/// Now, in seconds since the Unix epoch (`created` fields).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
