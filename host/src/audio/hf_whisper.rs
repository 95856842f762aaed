//! Whisper's weights in a Hugging Face folder (`openai/whisper-*`: `model.safetensors`,
//! `config.json`), read under CTranslate2's names ([`WhisperWeights`]): the separate query, key
//! and value projections are stacked as CTranslate2 stacks them, with a zero bias for the key
//! (Whisper's key projections have none).

use std::path::Path;

use serde_json::Value;

use super::whisper::{WhisperError, WhisperWeights};
use crate::model::weights::SafetensorsWeights;

pub struct HfWhisper {
    weights: SafetensorsWeights,
    heads: Option<usize>,
}

/// How one CTranslate2 name is stored.
enum Source {
    One(String),
    /// Rows of these tensors stacked; `None` is a zero bias as long as a projection's output.
    Stacked(Vec<Option<String>>),
}

impl HfWhisper {
    pub fn open(dir: &Path) -> Result<Self, WhisperError> {
        let weights = SafetensorsWeights::open(dir)?;
        let config: Value = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let heads = config.get("encoder_attention_heads").and_then(Value::as_u64).map(|h| h as usize);
        Ok(Self { weights, heads })
    }

    /// The Hugging Face tensor(s) behind a CTranslate2 name.
    fn source(name: &str) -> Option<Source> {
        let one = |n: String| Some(Source::One(n));
        let (side, rest) = name.split_once('/')?;
        let root = format!("model.{side}");
        match rest {
            "conv1/weight" | "conv1/bias" | "conv2/weight" | "conv2/bias" => {
                one(format!("{root}.{}", rest.replace('/', ".")))
            }
            "position_encodings/encodings" => one(format!("{root}.embed_positions.weight")),
            "embeddings/weight" => one(format!("{root}.embed_tokens.weight")),
            "projection/weight" => one("proj_out.weight".into()),
            "layer_norm/gamma" => one(format!("{root}.layer_norm.weight")),
            "layer_norm/beta" => one(format!("{root}.layer_norm.bias")),
            _ => {
                let rest = rest.strip_prefix("layer_")?;
                let (layer, part) = rest.split_once('/')?;
                let layer = format!("{root}.layers.{layer}");
                let param = |p: &str| if p.ends_with("weight") || p == "gamma" { "weight" } else { "bias" };
                let (module, leaf) = part.rsplit_once('/')?;
                let p = param(leaf);
                let bias = p == "bias";
                let proj = |attn: &str, names: &[&str]| {
                    let parts = names
                        .iter()
                        .map(|n| if bias && *n == "k_proj" { None } else { Some(format!("{layer}.{attn}.{n}.{p}")) })
                        .collect();
                    Some(Source::Stacked(parts))
                };
                match module {
                    "self_attention/layer_norm" => one(format!("{layer}.self_attn_layer_norm.{p}")),
                    "self_attention/linear_0" => proj("self_attn", &["q_proj", "k_proj", "v_proj"]),
                    "self_attention/linear_1" => one(format!("{layer}.self_attn.out_proj.{p}")),
                    "attention/layer_norm" => one(format!("{layer}.encoder_attn_layer_norm.{p}")),
                    "attention/linear_0" => one(format!("{layer}.encoder_attn.q_proj.{p}")),
                    "attention/linear_1" => proj("encoder_attn", &["k_proj", "v_proj"]),
                    "attention/linear_2" => one(format!("{layer}.encoder_attn.out_proj.{p}")),
                    "ffn/layer_norm" => one(format!("{layer}.final_layer_norm.{p}")),
                    "ffn/linear_0" => one(format!("{layer}.fc1.{p}")),
                    "ffn/linear_1" => one(format!("{layer}.fc2.{p}")),
                    _ => None,
                }
            }
        }
    }
}

impl WhisperWeights for HfWhisper {
    fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), WhisperError> {
        let missing = || WhisperError::Shape(format!("no Hugging Face tensor for `{name}`"));
        match Self::source(name).ok_or_else(missing)? {
            // An untied checkpoint has its own output projection; a tied one reuses the
            // embedding.
            Source::One(n) if n == "proj_out.weight" && !self.weights.names().any(|x| x == n) => {
                let t = self.weights.read_named("model.decoder.embed_tokens.weight")?;
                Ok((t.shape, t.data))
            }
            Source::One(n) => {
                let t = self.weights.read_named(&n)?;
                Ok((t.shape, t.data))
            }
            Source::Stacked(parts) => {
                let present: Vec<_> =
                    parts.iter().flatten().map(|n| self.weights.read_named(n)).collect::<Result<_, _>>()?;
                // Every part has the first one's shape; the stack has their rows one after another.
                let part_shape = present.first().map(|t| t.shape.clone()).ok_or_else(missing)?;
                if present.iter().any(|t| t.shape != part_shape) {
                    return Err(WhisperError::Shape(format!("the projections stacked as `{name}` differ in shape")));
                }
                let size: usize = part_shape.iter().product();
                let mut data = Vec::with_capacity(parts.len() * size);
                let mut present = present.into_iter();
                for part in &parts {
                    match part {
                        Some(_) => data.extend(present.next().ok_or_else(missing)?.data),
                        None => data.extend(std::iter::repeat_n(0.0, size)),
                    }
                }
                let mut shape = part_shape;
                shape[0] *= parts.len();
                Ok((shape, data))
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        match Self::source(name) {
            Some(Source::One(n)) => n == "proj_out.weight" || self.weights.names().any(|x| x == n),
            Some(Source::Stacked(parts)) => {
                parts.iter().flatten().all(|n| self.weights.names().any(|x| x == n))
                    && parts.iter().any(Option::is_some)
            }
            None => false,
        }
    }

    fn heads(&self) -> Option<usize> {
        self.heads
    }
}
