//! The embedding model behind `/v1/embeddings` and the plugins' `embed` host function: chosen
//! by `embedding_model` (`OPENEDAI_EMBEDDING_MODEL`), resolved to a folder under the model dir,
//! loaded on first use onto `embedding_device` (`OPENEDAI_EMBEDDING_DEVICE`) and kept. Chat
//! and completions never wait for it; concurrent requests run together ([`EmbeddingBatches`]).
//! Blocking: call from `spawn_blocking` or a plugin's thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hearth_settings::{EmbeddingPrecision, Settings};

use crate::embedding_batches::EmbeddingBatches;
use crate::model::device::{self, DeviceChoice};
use crate::model::encoder::{EmbeddingModel, EncoderError, is_embedding_folder};

/// text-generation-webui's default embedding model.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-mpnet-base-v2";

/// Why there are no embeddings.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    /// No folder for the model: the user must install one or name another.
    #[error("{0}")]
    NotInstalled(String),
    #[error("the embedding model `{name}` cannot be loaded: {reason}")]
    Load { name: String, reason: String },
    /// A bad input: the client's fault.
    #[error("{0}")]
    Input(String),
    #[error("the embedding model failed: {0}")]
    Execution(String),
}

/// Vectors with the number of tokens the model read for them.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens per input, special tokens included, after the cut at `max_seq_length`.
    pub token_counts: Vec<usize>,
}

/// One input as a client sends it.
#[derive(Debug, Clone)]
pub enum EmbeddingInput {
    Text(String),
    /// Token ids of the embedding model's own vocabulary, without special tokens.
    Tokens(Vec<u32>),
}

/// A loaded model, the name clients see, and its queue of requests.
pub struct LoadedEmbedder {
    pub name: String,
    pub model: EmbeddingModel,
    batches: EmbeddingBatches,
}

/// The lazily loaded embedding model.
pub struct EmbeddingService {
    requested: Option<String>,
    device: String,
    precision: EmbeddingPrecision,
    model_dir: PathBuf,
    /// Loaded once; a failed load is retried by the next request (the user may install the
    /// model meanwhile).
    loaded: Mutex<Option<Arc<LoadedEmbedder>>>,
}

impl EmbeddingService {
    pub fn new(settings: &Settings) -> Self {
        Self {
            requested: settings.embedding_model.clone().filter(|m| !m.trim().is_empty()),
            device: settings.embedding_device.clone().unwrap_or_else(|| settings.device.to_string()),
            precision: settings.embedding_precision,
            model_dir: settings.model_dir.clone(),
            loaded: Mutex::new(None),
        }
    }

    /// The model, loaded on the first call (blocking).
    pub fn model(&self) -> Result<Arc<LoadedEmbedder>, EmbeddingError> {
        // Held across the load, so concurrent first requests load the model once.
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let (name, path) = self.resolve()?;
        let request =
            device_request(&self.device).map_err(|reason| EmbeddingError::Load { name: name.clone(), reason })?;
        let load_err = |reason: String| EmbeddingError::Load { name: name.clone(), reason };
        let device = device::select(request).map_err(|e| load_err(e.to_string()))?;
        let started = std::time::Instant::now();
        // A model file that makes a library panic is a failed load, not a dead server.
        let model = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            EmbeddingModel::load(&path, &device, self.precision)
        }))
        .map_err(|_| load_err("the loader panicked".into()))?
        .map_err(|e| load_err(e.to_string()))?;
        tracing::info!(
            "embedding model {name} ({}, {} dimensions, {} products) loaded on {} in {:.1} s",
            path.display(),
            model.dimensions(),
            model.precision(),
            device.description,
            started.elapsed().as_secs_f64()
        );
        let loaded = Arc::new(LoadedEmbedder { name, model, batches: EmbeddingBatches::default() });
        *slot = Some(loaded.clone());
        Ok(loaded)
    }

    /// Embeds the inputs, in order, with the loaded model ([`Self::model`]).
    pub fn embed(&self, loaded: &LoadedEmbedder, inputs: &[EmbeddingInput]) -> Result<Embedded, EmbeddingError> {
        let m = &loaded.model;
        let sequences = inputs
            .iter()
            .map(|input| match input {
                EmbeddingInput::Text(t) => m.tokenize(t),
                EmbeddingInput::Tokens(ids) => m.sequence_of_ids(ids),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(classify)?;
        let token_counts = sequences.iter().map(Vec::len).collect();
        // Run together with the other requests waiting (panics are caught there).
        let vectors = loaded.batches.embed(m, sequences).map_err(classify)?;
        Ok(Embedded { vectors, token_counts })
    }

    /// Embeds texts (the plugins' `embed`).
    pub fn embed_texts(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        let inputs: Vec<EmbeddingInput> = texts.iter().cloned().map(EmbeddingInput::Text).collect();
        let loaded = self.model()?;
        let vectors = self.embed(&loaded, &inputs)?.vectors;
        crate::telemetry::embedded(&loaded.name, inputs.len(), false);
        Ok(vectors)
    }

    /// The configured model's folder, or with nothing configured the default, else the first
    /// embedding model installed.
    fn resolve(&self) -> Result<(String, PathBuf), EmbeddingError> {
        let name = self.requested.as_deref().unwrap_or(DEFAULT_MODEL);
        let candidates = candidates(name, &self.model_dir);
        if let Some(found) = candidates.iter().find(|p| is_embedding_folder(p)) {
            // A path names the model by its folder; a name is reported as the user wrote it.
            let shown = match found.file_name() {
                Some(folder) if Path::new(name).is_absolute() => folder.to_string_lossy().into_owned(),
                _ => name.to_owned(),
            };
            return Ok((shown, found.clone()));
        }
        let installed = installed(&self.model_dir);
        let tried = candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        if self.requested.is_none() {
            if let Some(first) = installed.first() {
                tracing::info!("{DEFAULT_MODEL} is not installed (looked for {tried}); embedding with {}", first.0);
                return Ok(first.clone());
            }
            return Err(EmbeddingError::NotInstalled(format!(
                "No embedding model is installed: put a sentence-transformers folder (such as \
                 all-MiniLM-L6-v2 or all-mpnet-base-v2) under {} or set OPENEDAI_EMBEDDING_MODEL",
                self.model_dir.display()
            )));
        }
        let listed = if installed.is_empty() {
            "none is installed".to_owned()
        } else {
            format!("installed: {}", installed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "))
        };
        Err(EmbeddingError::NotInstalled(format!(
            "The embedding model `{name}` is not installed (looked for {tried}; {listed})"
        )))
    }
}

/// Folders `name` may be in: the path itself, `model_dir/name`, textgen's downloader's
/// `org_model` form and the name without its organisation.
fn candidates(name: &str, model_dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(name), model_dir.join(name), model_dir.join(name.replace('/', "_"))];
    if let Some((_, short)) = name.rsplit_once('/') {
        out.push(model_dir.join(short));
    }
    out.dedup();
    out
}

/// Embedding models in the model dir, by folder name.
fn installed(model_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(model_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && is_embedding_folder(p))
        .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
        .collect();
    found.sort();
    found
}

/// textgen's `OPENEDAI_EMBEDDING_DEVICE` takes torch device names as well as Hearth's own
/// (`--device`'s, which `cpu` and `gpu` already are): its GPU names mean wgpu.
fn device_request(name: &str) -> Result<DeviceChoice, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "" => Ok(DeviceChoice::Auto),
        "cuda" | "mps" | "xpu" | "hip" => Ok(DeviceChoice::Wgpu),
        other => other.parse(),
    }
}

fn classify(e: EncoderError) -> EmbeddingError {
    match e {
        EncoderError::Input(m) => EmbeddingError::Input(m),
        other => EmbeddingError::Execution(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_the_folders_textgen_and_the_hub_use() {
        let dir = Path::new("/models");
        let c = candidates("sentence-transformers/all-mpnet-base-v2", dir);
        assert!(c.contains(&dir.join("sentence-transformers_all-mpnet-base-v2")));
        assert!(c.contains(&dir.join("all-mpnet-base-v2")));
        assert_eq!(
            candidates("all-MiniLM-L6-v2", dir),
            vec![PathBuf::from("all-MiniLM-L6-v2"), dir.join("all-MiniLM-L6-v2")]
        );
    }

    #[test]
    fn torch_device_names_map_to_hearth_devices() {
        assert_eq!(device_request("cpu"), Ok(DeviceChoice::Flex));
        assert_eq!(device_request("CUDA"), Ok(DeviceChoice::Wgpu));
        assert_eq!(device_request("auto"), Ok(DeviceChoice::Auto));
        assert!(device_request("tpu").unwrap_err().contains("tpu"));
    }
}
