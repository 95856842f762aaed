//! Model code: GGUF and safetensors readers, the llama-family decoder and the BERT/MPNet
//! sentence encoders in burn, the decoder's KV cache and device selection. Nothing here knows
//! about HTTP or async runtimes.

pub mod config;
mod cpu;
pub mod device;
pub mod encoder;
pub mod kv_cache;
pub mod kv_pool;
pub(crate) mod layers;
pub mod llama;
mod loader;
pub mod media;
pub mod progress;
pub mod rope;
mod top_candidates;
pub mod weights;

pub use config::{Arch, LlamaConfig};
pub use device::{BackendKind, ComputeDevice, DeviceChoice};
pub use kv_cache::KvCache;
pub use kv_pool::{KvPool, PoolStats};
pub use llama::{BatchItem, Llama, LogitsFor, StepLogits, TopLogits};
pub use loader::{LoadError, LoadedModel, ModelFormat, ggufs_in, is_mmproj, load, load_with_progress, model_id};
pub use media::MediaSpan;
pub use progress::LoadProgress;
pub use top_candidates::TopCandidates;

/// A failure inside the model: loading or running it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("{0}")]
    Weight(#[from] weights::WeightError),
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("{0}")]
    Device(#[from] device::DeviceError),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("the context is full: {needed} positions needed, {max} available")]
    ContextFull { needed: usize, max: usize },
    #[error("the KV cache is full: every block is held by a running sequence")]
    CacheFull,
    #[error("the device failed: {0}")]
    Execution(String),
}
