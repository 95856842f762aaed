//! The hyperparameters of a llama-family decoder (Llama 2/3, Mistral, SmolLM, TinyLlama, Qwen2,
//! Qwen3), read from GGUF metadata or a Hugging Face `config.json`.

use serde::Deserialize;

use crate::gguf::{GgufError, Metadata};

/// Which member of the llama family: it decides biases, q/k norms and GGUF's Q/K layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, Mistral, SmolLM, TinyLlama: no biases.
    Llama,
    /// Qwen2 / Qwen2.5: biases on the q, k and v projections.
    Qwen2,
    /// Qwen3: RMS norms on q and k per head, no biases.
    Qwen3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
}

/// Frequency scaling of the rotary embedding for long-context checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3.1's smooth per-frequency scaling.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position: usize },
}

/// Everything the model code needs to know about a checkpoint's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// The context length the model was trained for.
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

/// A config that cannot describe a model.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Gguf(#[from] GgufError),
    #[error("config.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("architecture `{0}` is not supported (supported: llama, mistral, qwen2, qwen3)")]
    UnsupportedArch(String),
    #[error("inconsistent config: {0}")]
    Inconsistent(String),
}

impl LlamaConfig {
    /// Reads the config from GGUF metadata (`general.architecture` and `{arch}.*` keys).
    pub fn from_gguf(meta: &Metadata, vocab_from_tensor: Option<usize>) -> Result<Self, ConfigError> {
        let arch_name = meta.str("general.architecture")?.to_owned();
        let arch = match arch_name.as_str() {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => return Err(ConfigError::UnsupportedArch(other.to_owned())),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let hidden_size = meta.u64(&key("embedding_length"))? as usize;
        let num_heads = meta.u64(&key("attention.head_count"))? as usize;
        let num_kv_heads = meta.opt_u64(&key("attention.head_count_kv"))?.map_or(num_heads, |v| v as usize);
        let head_dim = match meta.opt_u64(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };
        let vocab_size = match meta.opt_u64(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => match vocab_from_tensor {
                Some(v) => v,
                None => meta.opt_array("tokenizer.ggml.tokens")?.map(<[_]>::len).unwrap_or(0),
            },
        };
        let rope_scaling = match meta.opt_str(&key("rope.scaling.type"))? {
            Some("linear") => {
                let factor = meta.opt_f64(&key("rope.scaling.factor"))?.unwrap_or(1.0) as f32;
                (factor != 1.0).then_some(RopeScaling::Linear { factor })
            }
            // Llama 3 GGUFs carry their per-frequency factors as the `rope_freqs.weight` tensor.
            _ => None,
        };
        let config = Self {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: meta.u64(&key("feed_forward_length"))? as usize,
            num_layers: meta.u64(&key("block_count"))? as usize,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: meta.opt_f64(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            rope_theta: meta.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: meta.opt_u64(&key("context_length"))?.map_or(2048, |v| v as usize),
            tie_word_embeddings: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let raw: HfConfig = serde_json::from_value(text_config(value))?;
        let model_type = raw.model_type.clone().unwrap_or_default();
        let arch = match model_type.as_str() {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            other => return Err(ConfigError::UnsupportedArch(other.to_owned())),
        };
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size.checked_div(raw.num_attention_heads).unwrap_or(0));
        let rope_scaling = match raw.rope_scaling {
            Some(s) => match s.rope_type.as_deref().or(s.kind.as_deref()) {
                Some("linear") => Some(RopeScaling::Linear { factor: s.factor.unwrap_or(1.0) }),
                Some("llama3") => Some(RopeScaling::Llama3 {
                    factor: s.factor.unwrap_or(8.0),
                    low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                    original_max_position: s.original_max_position_embeddings.unwrap_or(8192),
                }),
                Some("default") | None => None,
                Some(other) => {
                    return Err(ConfigError::Inconsistent(format!("rope_scaling type `{other}` is not supported")));
                }
            },
            None => None,
        };
        let config = Self {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw.rope_theta.or(raw.rope_parameters.and_then(|p| p.rope_theta)).unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Inconsistent(m));
        if self.hidden_size == 0 || self.num_layers == 0 || self.num_heads == 0 || self.head_dim == 0 {
            return bad(format!(
                "hidden size {}, {} layers, {} heads of dim {}: none may be zero",
                self.hidden_size, self.num_layers, self.num_heads, self.head_dim
            ));
        }
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!("{} heads cannot share {} key/value heads", self.num_heads, self.num_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head dim {} must be even for rotary embeddings", self.head_dim));
        }
        if self.vocab_size == 0 {
            return bad("vocabulary size is zero".into());
        }
        Ok(())
    }

    /// Width of the query projection's output.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key and value projections' outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRopeScaling>,
    /// transformers 5 writes `rope_theta` and the scaling here.
    rope_parameters: Option<HfRopeParameters>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
}

/// The decoder's part of a config: a multimodal model's `text_config` (a `llama` unless it says
/// otherwise, with transformers' `LlamaConfig` defaults for what older LLaVA configs leave out),
/// or the whole config of a text-only one.
fn text_config(config: serde_json::Value) -> serde_json::Value {
    let Some(mut text) = config.get("text_config").filter(|t| t.is_object()).cloned() else {
        return config;
    };
    let Some(obj) = text.as_object_mut() else { return config };
    let llama_defaults = [
        ("model_type", serde_json::json!("llama")),
        ("vocab_size", 32000.into()),
        ("hidden_size", 4096.into()),
        ("intermediate_size", 11008.into()),
        ("num_hidden_layers", 32.into()),
        ("num_attention_heads", 32.into()),
        ("max_position_embeddings", 2048.into()),
        ("rms_norm_eps", serde_json::json!(1e-6)),
    ];
    let is_llama = obj.get("model_type").and_then(|t| t.as_str()).is_none_or(|t| t == "llama");
    for (key, value) in llama_defaults {
        if is_llama && obj.get(key).is_none_or(|v| v.is_null()) {
            obj.insert(key.to_owned(), value);
        }
    }
    // A multimodal config may put the tie flag at its top level only.
    if obj.get("tie_word_embeddings").is_none()
        && let Some(tie) = config.get("tie_word_embeddings")
    {
        obj.insert("tie_word_embeddings".into(), tie.clone());
    }
    text
}

#[derive(Deserialize)]
struct HfRopeParameters {
    rope_theta: Option<f64>,
}

#[derive(Deserialize)]
struct HfRopeScaling {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen2_config_json_reads() {
        let c = LlamaConfig::from_hf_json(
            r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,"intermediate_size":4864,
            "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"rms_norm_eps":1e-6,
            "rope_theta":1000000.0,"max_position_embeddings":32768,"tie_word_embeddings":true}"#,
        )
        .unwrap();
        assert_eq!(c.arch, Arch::Qwen2);
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.kv_dim(), 128);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn heads_that_do_not_divide_are_rejected() {
        let err = LlamaConfig::from_hf_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("key/value heads"), "{err}");
    }

    #[test]
    fn unknown_architecture_is_named() {
        let err = LlamaConfig::from_hf_json(
            r#"{"model_type":"gpt_neox","vocab_size":10,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("gpt_neox"), "{err}");
    }
}
