//! The sentence-transformers folder layout: `modules.json` names the pipeline (a Transformer,
//! then Pooling, then optionally Normalize), `1_Pooling/config.json` the pooling modes,
//! `sentence_bert_config.json` the sequence limit, and the Transformer folder holds Hugging
//! Face's `config.json`, safetensors and `tokenizer.json`. A plain Hugging Face BERT/MPNet folder
//! without `modules.json` reads as sentence-transformers reads it: mean pooling, no
//! normalisation.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::EncoderError;

/// Which encoder family a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderArch {
    Bert,
    MpNet,
}

/// The feed-forward activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The exact, erf-based GELU (`gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

/// The encoder's shape, from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub arch: EncoderArch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub pad_token_id: u32,
    /// MPNet's relative-position buckets.
    pub relative_attention_buckets: usize,
}

impl EncoderConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Positions the position table can address: MPNet (like RoBERTa) starts counting after
    /// the padding id, so its first `pad_token_id + 1` rows are never a real position.
    pub fn usable_positions(&self) -> usize {
        match self.arch {
            EncoderArch::Bert => self.max_position_embeddings,
            EncoderArch::MpNet => self.max_position_embeddings.saturating_sub(self.pad_token_id as usize + 1),
        }
    }
}

/// How token vectors become one sentence vector; several modes concatenate, in
/// sentence-transformers' order (cls, max, mean, mean-sqrt-len, last token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolingModes {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
    pub last_token: bool,
}

impl PoolingModes {
    pub fn count(&self) -> usize {
        [self.cls, self.max, self.mean, self.mean_sqrt_len, self.last_token].iter().filter(|&&m| m).count()
    }
}

/// Everything read from a sentence-transformers folder except the weights.
#[derive(Debug, Clone)]
pub struct EmbeddingLayout {
    /// The Transformer module's folder (config, weights, tokenizer).
    pub transformer_dir: PathBuf,
    pub config: EncoderConfig,
    pub pooling: PoolingModes,
    pub normalize: bool,
    /// Tokens per input, special tokens included; longer inputs are cut.
    pub max_seq_length: usize,
    pub do_lower_case: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct RawPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    /// Newer configs name one mode instead of flags.
    #[serde(default)]
    pooling_mode: Option<String>,
}

#[derive(Deserialize)]
struct RawStConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default)]
    type_vocab_size: Option<usize>,
    #[serde(default)]
    layer_norm_eps: Option<f64>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    relative_attention_num_buckets: Option<usize>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EncoderError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EncoderError::Layout { path: path.to_path_buf(), reason: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| EncoderError::Layout { path: path.to_path_buf(), reason: e.to_string() })
}

/// Whether `dir` looks like an embedding model (a sentence-transformers folder, or a Hugging
/// Face folder of a BERT or MPNet encoder).
pub fn is_embedding_folder(dir: &Path) -> bool {
    if dir.join("modules.json").is_file() {
        return true;
    }
    #[derive(Deserialize)]
    struct Kind {
        model_type: Option<String>,
    }
    read_json::<Kind>(&dir.join("config.json"))
        .ok()
        .and_then(|k| k.model_type)
        .is_some_and(|t| matches!(t.as_str(), "bert" | "mpnet"))
}

impl EmbeddingLayout {
    /// Reads the folder at `dir`.
    pub fn read(dir: &Path) -> Result<Self, EncoderError> {
        let modules_path = dir.join("modules.json");
        let (transformer_dir, pooling, normalize) = if modules_path.is_file() {
            let modules: Vec<Module> = read_json(&modules_path)?;
            let mut transformer = None;
            let mut pooling = None;
            let mut normalize = false;
            for m in &modules {
                let short = m.kind.rsplit('.').next().unwrap_or(&m.kind);
                match short {
                    "Transformer" if transformer.is_none() => transformer = Some(dir.join(&m.path)),
                    "Pooling" if pooling.is_none() => {
                        pooling = Some(read_pooling(&dir.join(&m.path).join("config.json"))?)
                    }
                    "Normalize" => normalize = true,
                    _ => {
                        return Err(EncoderError::Layout {
                            path: modules_path.clone(),
                            reason: format!(
                                "module `{}` is not supported (Hearth runs Transformer, Pooling, Normalize)",
                                m.kind
                            ),
                        });
                    }
                }
            }
            let transformer = transformer.ok_or_else(|| EncoderError::Layout {
                path: modules_path.clone(),
                reason: "no sentence_transformers.models.Transformer module".into(),
            })?;
            let pooling = pooling.unwrap_or(PoolingModes { mean: true, ..Default::default() });
            (transformer, pooling, normalize)
        } else {
            (dir.to_path_buf(), PoolingModes { mean: true, ..Default::default() }, false)
        };
        let config = read_config(&transformer_dir.join("config.json"))?;
        let st_path = transformer_dir.join("sentence_bert_config.json");
        let st: RawStConfig = if st_path.is_file() {
            read_json(&st_path)?
        } else {
            RawStConfig { max_seq_length: None, do_lower_case: false }
        };
        let usable = config.usable_positions();
        // sentence-transformers 5+ no longer writes max_seq_length; it takes the tokenizer's
        // model_max_length (which a huge sentinel means "unset").
        let max_seq_length = st
            .max_seq_length
            .or_else(|| tokenizer_max_length(&transformer_dir.join("tokenizer_config.json")))
            .unwrap_or(usable)
            .min(usable);
        if max_seq_length < 2 {
            return Err(EncoderError::Layout {
                path: transformer_dir.join("config.json"),
                reason: format!("{usable} positions leave no room for a sequence"),
            });
        }
        Ok(Self { transformer_dir, config, pooling, normalize, max_seq_length, do_lower_case: st.do_lower_case })
    }
}

fn tokenizer_max_length(path: &Path) -> Option<usize> {
    #[derive(Deserialize)]
    struct TokenizerConfig {
        model_max_length: Option<f64>,
    }
    let limit = read_json::<TokenizerConfig>(path).ok()?.model_max_length?;
    (1.0..1e7).contains(&limit).then_some(limit as usize)
}

fn read_pooling(path: &Path) -> Result<PoolingModes, EncoderError> {
    let raw: RawPooling = read_json(path)?;
    let bad = |reason: String| EncoderError::Layout { path: path.to_path_buf(), reason };
    let mut modes = PoolingModes {
        cls: raw.pooling_mode_cls_token,
        max: raw.pooling_mode_max_tokens,
        mean: raw.pooling_mode_mean_tokens,
        mean_sqrt_len: raw.pooling_mode_mean_sqrt_len_tokens,
        last_token: raw.pooling_mode_lasttoken,
    };
    if raw.pooling_mode_weightedmean_tokens {
        return Err(bad("weighted-mean pooling is not supported".into()));
    }
    if let Some(mode) = raw.pooling_mode.as_deref() {
        match mode {
            "cls" => modes.cls = true,
            "max" => modes.max = true,
            "mean" => modes.mean = true,
            "mean_sqrt_len_tokens" => modes.mean_sqrt_len = true,
            "lasttoken" => modes.last_token = true,
            other => return Err(bad(format!("pooling mode `{other}` is not supported"))),
        }
    }
    if modes.count() == 0 {
        return Err(bad("no pooling mode is set".into()));
    }
    Ok(modes)
}

fn read_config(path: &Path) -> Result<EncoderConfig, EncoderError> {
    let raw: RawConfig = read_json(path)?;
    let bad = |reason: String| EncoderError::Layout { path: path.to_path_buf(), reason };
    let arch = match raw.model_type.as_deref() {
        Some("bert") => EncoderArch::Bert,
        Some("mpnet") => EncoderArch::MpNet,
        Some(other) => return Err(bad(format!("model_type `{other}` is not an encoder Hearth runs (bert, mpnet)"))),
        None => return Err(bad("config.json has no model_type".into())),
    };
    if raw.position_embedding_type.as_deref().is_some_and(|t| t != "absolute") {
        return Err(bad("only absolute position embeddings are supported".into()));
    }
    let activation = match raw.hidden_act.as_deref().unwrap_or("gelu") {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => return Err(bad(format!("hidden_act `{other}` is not supported"))),
    };
    if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
        return Err(bad(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            raw.hidden_size, raw.num_attention_heads
        )));
    }
    if raw.vocab_size == 0 || raw.num_hidden_layers == 0 || raw.intermediate_size == 0 {
        return Err(bad("vocab_size, num_hidden_layers and intermediate_size must be positive".into()));
    }
    let (default_eps, default_pad) = match arch {
        EncoderArch::Bert => (1e-12, 0),
        EncoderArch::MpNet => (1e-5, 1),
    };
    Ok(EncoderConfig {
        arch,
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        num_layers: raw.num_hidden_layers,
        num_heads: raw.num_attention_heads,
        intermediate_size: raw.intermediate_size,
        max_position_embeddings: raw.max_position_embeddings,
        type_vocab_size: raw.type_vocab_size.unwrap_or(if arch == EncoderArch::Bert { 2 } else { 0 }),
        layer_norm_eps: raw.layer_norm_eps.unwrap_or(default_eps),
        activation,
        pad_token_id: raw.pad_token_id.unwrap_or(default_pad),
        relative_attention_buckets: raw.relative_attention_num_buckets.unwrap_or(32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const BERT: &str = r#"{"model_type":"bert","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
        "num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":512}"#;

    #[test]
    fn a_sentence_transformers_folder_reads_its_modules() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", BERT);
        write(
            dir.path(),
            "modules.json",
            r#"[{"idx":0,"path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(dir.path(), "1_Pooling/config.json", r#"{"pooling_mode_cls_token":true,"pooling_mode_max_tokens":true}"#);
        write(dir.path(), "sentence_bert_config.json", r#"{"max_seq_length":1000,"do_lower_case":true}"#);
        let layout = EmbeddingLayout::read(dir.path()).unwrap();
        assert!(layout.normalize && layout.do_lower_case);
        assert_eq!(layout.pooling, PoolingModes { cls: true, max: true, ..Default::default() });
        // Capped at what the position table holds.
        assert_eq!(layout.max_seq_length, 512);
        assert!(is_embedding_folder(dir.path()));
    }

    #[test]
    fn a_plain_folder_pools_by_mean_and_unknown_modules_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", &BERT.replace("bert", "mpnet").replace("512", "514"));
        let layout = EmbeddingLayout::read(dir.path()).unwrap();
        assert_eq!(layout.pooling, PoolingModes { mean: true, ..Default::default() });
        assert!(!layout.normalize);
        assert_eq!(layout.config.arch, EncoderArch::MpNet);
        assert_eq!(layout.max_seq_length, 512, "MPNet's positions start after the padding id");

        write(dir.path(), "modules.json", r#"[{"path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#);
        let err = EmbeddingLayout::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("sentence_transformers.models.Dense"), "{err}");
    }

    #[test]
    fn a_decoder_config_is_not_an_encoder() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", &BERT.replace("bert", "llama"));
        assert!(!is_embedding_folder(dir.path()));
        let err = EmbeddingLayout::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("llama"), "{err}");
    }
}
