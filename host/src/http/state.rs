//! What the handlers share: settings, and the model being served (or why there is none), plus
//! the steps every generating handler takes: find the model, check the `model` field, size the
//! generation to the context and submit it.

use std::path::Path;
use std::sync::{Arc, RwLock};

use hearth_settings::Settings;

use super::generation::ChoiceRun;
use super::validate::GenerationPlan;
use crate::embedding_service::EmbeddingService;
use crate::engine::{GenerationRequest, Owner};
use crate::error::ApiError;
use crate::model::model_id;
use crate::plugin_services::ModelServices;
use crate::plugins::PluginRegistry;
use crate::serving::ServedModel;

/// The constraint of a request's `grammar_string` (GBNF); blocking, as the first use builds the
/// grammar compiler. A grammar that cannot be used is a 400 naming the field.
pub fn gbnf_constraint(served: &ServedModel, gbnf: &str) -> Result<crate::constraint::Constraint, ApiError> {
    served
        .grammar()?
        .compile_gbnf(gbnf)
        .map_err(|e| ApiError::invalid_param("grammar_string", format!("the grammar cannot be used: {e}")))
}

/// What `/health` reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Ok,
    /// The start-up model is loading: the share read so far, once known.
    Loading(Option<f64>),
    /// The start-up model could not be loaded: why.
    Failed(String),
}

/// Whether a model is being served.
pub enum ModelState {
    /// Started without `--model`.
    None,
    /// The start-up model (its name) is loading, this far.
    Loading(String, Arc<crate::model::LoadProgress>),
    Ready(Arc<ServedModel>),
    Failed(String),
}

/// Shared by every handler.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub plugins: Arc<PluginRegistry>,
    model: RwLock<ModelState>,
    /// Set while `/v1/internal/model/load` loads a model (one at a time).
    pub loading: std::sync::atomic::AtomicBool,
    /// The embedding model, loaded on first use.
    pub embeddings: Arc<EmbeddingService>,
    /// Stored `/v1/responses` responses.
    pub responses: Arc<crate::store::ResponseStore>,
    /// The Whisper model, loaded on first use.
    pub transcription: Arc<crate::transcription_service::TranscriptionService>,
    pub speech: Arc<crate::speech_service::SpeechService>,
    /// Responses being generated now (`cancel` stops a background one).
    pub running: Arc<super::responses_running::RunningResponses>,
    /// Gets the images requests send by URL.
    pub images: crate::vision::fetch::ImageFetcher,
    /// The image model of `/v1/images/generations`, loaded at start in the background.
    pub image_model: Arc<crate::image_service::ImageService>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(settings: Settings, plugins: Arc<PluginRegistry>, model: ModelState) -> Self {
        let state = Self {
            embeddings: Arc::new(EmbeddingService::new(&settings)),
            responses: Arc::new(crate::store::ResponseStore::in_user_data(
                &settings.user_data_dir,
                settings.responses_retention_days,
            )),
            running: Default::default(),
            images: crate::vision::fetch::ImageFetcher::new(settings.image_urls),
            transcription: Arc::new(crate::transcription_service::TranscriptionService::new(&settings)),
            speech: Arc::new(crate::speech_service::SpeechService::new(&settings)),
            image_model: {
                let service = Arc::new(crate::image_service::ImageService::new(&settings));
                service.start_loading(&settings);
                service
            },
            settings: Arc::new(settings),
            plugins,
            model: RwLock::new(model),
            loading: Default::default(),
        };
        // Plugins may embed (and see "no model is loaded" for the rest) before any model loads.
        state.services_without_a_model();
        state
    }

    /// The plugins' host functions with the embedding model and no served model.
    fn services_without_a_model(&self) {
        let services = ModelServices { engine: None, embeddings: self.embeddings.clone() };
        self.plugins.set_services(Some(Arc::new(services)), None);
    }

    pub fn set_model(&self, state: ModelState) {
        if !matches!(state, ModelState::Ready(_)) {
            // The plugins' model functions must not keep a model the server no longer serves.
            self.services_without_a_model();
        }
        // A poisoned lock only means a writer panicked mid-assignment; the value is still whole.
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The served model, or 503 saying why there is none.
    pub fn ready(&self) -> Result<Arc<ServedModel>, ApiError> {
        match &*self.model.read().unwrap_or_else(|p| p.into_inner()) {
            ModelState::Ready(m) => Ok(m.clone()),
            ModelState::Loading(name, _) => Err(ApiError::unavailable(format!("The model `{name}` is still loading"))),
            ModelState::Failed(e) => Err(ApiError::unavailable(format!("No model is loaded: loading failed: {e}"))),
            ModelState::None => Err(ApiError::unavailable(
                "No model is loaded. Start Hearth with --model NAME (a file or folder in the model dir).",
            )),
        }
    }

    /// `Some(model)` when ready, without an error.
    pub fn served(&self) -> Option<Arc<ServedModel>> {
        self.ready().ok()
    }

    /// Whether the server can answer generation requests; a server started without a model
    /// is healthy.
    pub fn health(&self) -> Health {
        match &*self.model.read().unwrap_or_else(|p| p.into_inner()) {
            ModelState::None | ModelState::Ready(_) => Health::Ok,
            ModelState::Loading(_, progress) => Health::Loading(progress.fraction()),
            ModelState::Failed(e) => Health::Failed(e.clone()),
        }
    }

    /// The sampler settings a request's fields (and the preset they name) ask for, taken out
    /// of its extra fields and checked against the served model's tokenizer.
    pub fn sampling(
        &self,
        extra: &mut serde_json::Map<String, serde_json::Value>,
        served: &ServedModel,
    ) -> Result<crate::sampling::SamplingParams, ApiError> {
        super::samplers::take(extra, &self.settings.user_data_dir)?.resolve(served.engine.tokenizer())
    }

    /// The Jinja of instruction template `name` under the user data folder (a request's or a
    /// model load's `instruction_template`); a missing or bad one is a 400 naming the field.
    pub fn instruction_template(&self, name: &str) -> Result<String, ApiError> {
        let dir = self.settings.user_data_dir.join("instruction-templates");
        crate::prompt::instruction_templates::load(&dir, name)
            .map_err(|e| ApiError::invalid_param("instruction_template", e.to_string()))
    }

    /// Models available in the model dir: GGUF files and model folders, by id.
    pub fn available_models(&self) -> Vec<String> {
        list_model_dir(&self.settings.model_dir)
    }

    /// Checks a request's `model` field. Like text-generation-webui, any name is served by the
    /// loaded model (clients send "gpt-3.5-turbo"), except the name of another local model,
    /// which would silently answer from the wrong weights: that is a 404 until it is loaded.
    pub fn check_model_field(&self, served: &ServedModel, requested: Option<&str>) -> Result<(), ApiError> {
        let Some(name) = requested.map(str::trim).filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        if name == served.name {
            return Ok(());
        }
        if self.available_models().iter().any(|m| m == name) {
            return Err(ApiError {
                message: format!(
                    "The model `{name}` is available but not loaded (the loaded model is `{}`); load it first",
                    served.name
                ),
                ..ApiError::model_not_found(name)
            });
        }
        Ok(())
    }
}

/// Model ids under `dir`: `*.gguf` files (without the extension; llama.cpp's `mmproj` vision
/// files are not models) and folders holding a model.
pub fn list_model_dir(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            if p.is_file() {
                p.extension().is_some_and(|e| e == "gguf") && !crate::model::is_mmproj(p)
            } else {
                p.join("config.json").exists() && is_generative_folder(p) || !crate::model::ggufs_in(p).0.is_empty()
            }
        })
        .map(|p| model_id(&p))
        .collect();
    ids.sort();
    ids
}

/// Embedding models (sentence-transformers folders, BERT/MPNet encoders) and speech models
/// (Whisper) are not chat models.
fn is_generative_folder(dir: &Path) -> bool {
    !crate::model::encoder::is_embedding_folder(dir) && !crate::audio::is_speech_folder(dir)
}

/// One generation sized to the context, ready to submit.
pub struct Submission {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    /// A grammar every choice must follow (each walks its own copy).
    pub constraint: Option<crate::constraint::Constraint>,
    /// The prompt's images, as rows for their placeholder positions.
    pub media: std::sync::Arc<[crate::model::MediaSpan]>,
}

/// Checks the prompt against the context and decides how many tokens may be generated.
pub fn size_generation(
    served: &ServedModel,
    settings: &Settings,
    plan: &GenerationPlan,
    prompt: Vec<u32>,
) -> Result<Submission, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid_param("prompt", "The prompt is empty after tokenization"));
    }
    let ctx = plan.context_cap.map_or(served.engine.context_length(), |c| c.min(served.engine.context_length()));
    if prompt.len() >= ctx {
        return Err(ApiError::context_length_exceeded(prompt.len(), ctx));
    }
    let room = ctx - prompt.len();
    let max_new_tokens =
        if plan.auto_max_tokens { room } else { plan.max_tokens.unwrap_or(settings.max_tokens_default).min(room) };
    Ok(Submission { prompt, max_new_tokens, constraint: None, media: Default::default() })
}

/// Submits `n` choices of one prompt; seeded requests get seeds `seed, seed+1, …` so the
/// choices differ but the whole response is reproducible.
pub fn submit_choices(
    served: &ServedModel,
    plan: &GenerationPlan,
    sub: &Submission,
    n: usize,
    owner: &Owner,
) -> Result<Vec<ChoiceRun>, ApiError> {
    let tokenizer = served.engine.tokenizer().clone();
    let stop_ids = if plan.ban_eos { Vec::new() } else { tokenizer.end_ids.clone() };
    (0..n)
        .map(|i| {
            let mut sampling = plan.sampling.clone();
            sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
            let request = GenerationRequest {
                prompt: sub.prompt.clone(),
                max_new_tokens: sub.max_new_tokens,
                sampling,
                stop_ids: stop_ids.clone(),
                constraint: sub.constraint.clone(),
                distribution: None,
                logprobs: plan.logprobs,
                cache_prompt: plan.cache_prompt,
                media: sub.media.clone(),
            };
            let stream = served.engine.submit(request, Some(owner.clone()))?;
            Ok(ChoiceRun::new(
                stream,
                tokenizer.clone(),
                plan.stops.clone(),
                plan.skip_special,
                plan.logprobs.is_some(),
            ))
        })
        .collect()
}
