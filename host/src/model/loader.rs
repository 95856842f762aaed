//! Opens a model from a path — a GGUF file, or a Hugging Face folder (`config.json`,
//! `*.safetensors`, `tokenizer.json`) — and returns the model with its tokenizer. Every failure
//! names the file and the problem.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ModelError;
use super::config::LlamaConfig;
use super::device::ComputeDevice;
use super::llama::Llama;
use super::progress::LoadProgress;
use super::weights::{GgufWeights, SafetensorsWeights};
use crate::gguf::GgufFile;
use crate::tokenizer::TextTokenizer;

/// How the weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    HfFolder,
}

/// A model that could not be loaded, with the file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    #[source]
    pub source: ModelError,
}

/// A model ready to run.
pub struct LoadedModel {
    pub llama: Llama,
    pub tokenizer: Arc<TextTokenizer>,
    /// The id clients see: the file or folder name.
    pub name: String,
    pub path: PathBuf,
    pub format: ModelFormat,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel").field("name", &self.name).field("format", &self.format).finish()
    }
}

/// The id a model at `path` is listed under: the file name without `.gguf`, or the folder name.
pub fn model_id(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    name.strip_suffix(".gguf").map(str::to_owned).unwrap_or(name)
}

/// Loads the model at `path` onto `device`.
pub fn load(path: &Path, device: &ComputeDevice) -> Result<LoadedModel, LoadError> {
    load_with_progress(path, device, &LoadProgress::default())
}

/// [`load`], reporting the parts read to `progress` as it goes.
pub fn load_with_progress(
    path: &Path,
    device: &ComputeDevice,
    progress: &LoadProgress,
) -> Result<LoadedModel, LoadError> {
    let fail = |p: &Path, e: ModelError| LoadError { path: p.to_path_buf(), source: e };
    if !path.exists() {
        return Err(fail(path, ModelError::Input("no such file or folder".into())));
    }
    let gguf_path = if path.is_dir() { single_gguf_in(path) } else { Some(path.to_path_buf()) };
    if path.is_dir() && path.join("config.json").exists() {
        load_hf_folder(path, device, progress)
    } else if let Some(gguf_path) = gguf_path {
        load_gguf(&gguf_path, device, progress).map(|mut m| {
            m.name = model_id(path);
            m
        })
    } else {
        Err(fail(
            path,
            ModelError::Input(
                "not a model: expected a .gguf file or a folder with config.json and *.safetensors".into(),
            ),
        ))
    }
}

/// The GGUF files in `dir`: models, and llama.cpp's `mmproj*` vision files.
pub fn ggufs_in(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return Default::default() };
    let mut all: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    all.sort();
    all.into_iter().partition(|p| !is_mmproj(p))
}

/// Whether `path` is named as llama.cpp's vision files are (`mmproj-model-f16.gguf`).
pub fn is_mmproj(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.to_ascii_lowercase().starts_with("mmproj"))
}

fn single_gguf_in(dir: &Path) -> Option<PathBuf> {
    let (models, _) = ggufs_in(dir);
    match models.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    }
}

fn load_gguf(path: &Path, device: &ComputeDevice, progress: &LoadProgress) -> Result<LoadedModel, LoadError> {
    let fail = |e: ModelError| LoadError { path: path.to_path_buf(), source: e };
    let file = GgufFile::open(path).map_err(|e| fail(e.into()))?;
    let vocab_rows = file.tensor_info("token_embd.weight").and_then(|t| t.shape().first().copied());
    let config = LlamaConfig::from_gguf(&file.metadata, vocab_rows).map_err(|e| fail(e.into()))?;
    let mut tokenizer = TextTokenizer::from_gguf(&file.metadata).map_err(|e| fail(e.into()))?;
    fit_vocab(&config, &mut tokenizer).map_err(fail)?;
    let source = GgufWeights::new(&file, config.arch, config.num_heads, config.num_kv_heads);
    let llama = Llama::load(&source, &config, device, progress).map_err(fail)?;
    Ok(LoadedModel {
        llama,
        tokenizer: Arc::new(tokenizer),
        name: model_id(path),
        path: path.to_path_buf(),
        format: ModelFormat::Gguf,
    })
}

fn load_hf_folder(dir: &Path, device: &ComputeDevice, progress: &LoadProgress) -> Result<LoadedModel, LoadError> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| LoadError { path: config_path.clone(), source: ModelError::Input(e.to_string()) })?;
    let config =
        LlamaConfig::from_hf_json(&text).map_err(|e| LoadError { path: config_path.clone(), source: e.into() })?;
    let mut tokenizer =
        TextTokenizer::from_hf_dir(dir).map_err(|e| LoadError { path: dir.to_path_buf(), source: e.into() })?;
    fit_vocab(&config, &mut tokenizer).map_err(|e| LoadError { path: dir.to_path_buf(), source: e })?;
    let source = SafetensorsWeights::open(dir).map_err(|e| LoadError { path: dir.to_path_buf(), source: e.into() })?;
    let llama = Llama::load(&source, &config, device, progress)
        .map_err(|e| LoadError { path: dir.to_path_buf(), source: e })?;
    Ok(LoadedModel {
        llama,
        tokenizer: Arc::new(tokenizer),
        name: model_id(dir),
        path: dir.to_path_buf(),
        format: ModelFormat::HfFolder,
    })
}

/// A tokenizer that could emit ids the model has no row for would crash a request later: added
/// tokens past the embedding are kept out of every prompt (with a warning naming them), any
/// other surplus means the tokenizer is another model's.
fn fit_vocab(config: &LlamaConfig, tokenizer: &mut TextTokenizer) -> Result<(), ModelError> {
    let n = tokenizer.vocab_size();
    let rows = config.vocab_size;
    let past = tokenizer.limit_to(rows).map_err(|why| {
        ModelError::Input(format!("the tokenizer has {n} tokens but the model only {rows} embedding rows: {why}"))
    })?;
    if !past.is_empty() {
        let named: Vec<String> = past.iter().map(|(id, text)| format!("{id} `{text}`")).collect();
        tracing::warn!(
            "the tokenizer's added tokens {} have no embedding row (the model has {rows}): the model never \
             produces them and a prompt that holds one is refused",
            named.join(", ")
        );
    }
    Ok(())
}
