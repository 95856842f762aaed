//! llama.cpp's `mmproj` GGUF: which projector a file holds, the vision tower's config from its
//! `clip.vision.*` metadata, and its tensors under the Hugging Face names the towers load by.

use super::VisionError;
use super::vit::{TowerWeights, VitConfig};
use crate::gguf::{GgufError, GgufFile, Metadata};
use crate::model::weights::HostTensor;

/// The error for a metadata key that cannot be read.
pub(super) fn meta_error(e: GgufError) -> VisionError {
    VisionError::Config(e.to_string())
}

/// The projector a vision `mmproj` holds (`clip.projector_type`; LLaVA's converter writes none:
/// `mlp`). Files of another architecture, or holding no vision encoder, are refused.
pub(super) fn projector_type(meta: &Metadata) -> Result<String, VisionError> {
    let arch = meta.opt_str("general.architecture").map_err(meta_error)?.unwrap_or_default();
    let projector = meta.opt_str("clip.projector_type").map_err(meta_error)?.unwrap_or("mlp");
    if arch != "clip" || !meta.opt_bool("clip.has_vision_encoder").map_err(meta_error)?.unwrap_or(true) {
        return Err(VisionError::Config(format!(
            "not a vision mmproj (architecture `{arch}`, projector `{projector}`)"
        )));
    }
    Ok(projector.to_owned())
}

/// `clip.vision.{key}` as a size.
pub(super) fn number(meta: &Metadata, key: &str) -> Result<usize, VisionError> {
    let v = meta.u64(&format!("clip.vision.{key}")).map_err(meta_error)?;
    usize::try_from(v).map_err(|_| VisionError::Config(format!("clip.vision.{key} is out of range")))
}

/// `clip.vision.{key}` (a list of three numbers) as a JSON value for the image processor's
/// config, or null where the file has none.
pub(super) fn triple(meta: &Metadata, key: &str) -> Result<serde_json::Value, VisionError> {
    let key = format!("clip.vision.{key}");
    Ok(meta.opt_f32_array(&key).map_err(meta_error)?.map(|v| serde_json::json!(v)).unwrap_or(serde_json::Value::Null))
}

/// The tower's config from the file's metadata; `hidden_act` is the family's (the file says only
/// whether it is some GELU).
pub(super) fn vit_config(meta: &Metadata, hidden_act: &str) -> Result<VitConfig, VisionError> {
    Ok(VitConfig {
        hidden_size: number(meta, "embedding_length")?,
        intermediate_size: number(meta, "feed_forward_length")?,
        num_hidden_layers: number(meta, "block_count")?,
        num_attention_heads: number(meta, "attention.head_count")?,
        image_size: number(meta, "image_size")?,
        patch_size: number(meta, "patch_size")?,
        num_channels: 3,
        hidden_act: hidden_act.to_owned(),
        layer_norm_eps: meta.opt_f64("clip.vision.attention.layer_norm_epsilon").map_err(meta_error)?.unwrap_or(1e-5),
    })
}

/// An `mmproj` GGUF's tensors under their Hugging Face names. llama.cpp's LLaVA converter
/// stores CLIP's `fc1` as `ffn_down` and `fc2` as `ffn_up`, newer converters the other way
/// round: which is which is read from their shapes, as llama.cpp itself does.
pub(super) struct MmprojTower<'a> {
    file: &'a GgufFile,
    fc1_is_down: bool,
}

impl<'a> MmprojTower<'a> {
    pub(super) fn new(file: &'a GgufFile, config: &VitConfig) -> Self {
        // fc1 maps the hidden width to the wider feed-forward one: `[intermediate, hidden]`.
        let down = file.tensor_info("v.blk.0.ffn_down.weight").map(|t| t.shape());
        let fc1_is_down = down.is_some_and(|s| s == [config.intermediate_size, config.hidden_size]);
        Self { file, fc1_is_down }
    }
}

impl TowerWeights for MmprojTower<'_> {
    fn contains(&self, name: &str) -> bool {
        self.file.has_tensor(&self.file_name(name))
    }

    fn read(&self, name: &str) -> Result<HostTensor, VisionError> {
        let stored = self.file_name(name);
        let (shape, data) = self.file.tensor_f32(&stored).map_err(|e| VisionError::Config(format!("{stored}: {e}")))?;
        Ok(HostTensor { shape, data })
    }

    fn file_name(&self, name: &str) -> String {
        let (fc1, fc2) = if self.fc1_is_down { ("ffn_down", "ffn_up") } else { ("ffn_up", "ffn_down") };
        if let Some(rest) = name.strip_prefix("encoder.layers.") {
            let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
            let part = part
                .replace("self_attn.q_proj", "attn_q")
                .replace("self_attn.k_proj", "attn_k")
                .replace("self_attn.v_proj", "attn_v")
                .replace("self_attn.out_proj", "attn_out")
                .replace("layer_norm1", "ln1")
                .replace("layer_norm2", "ln2")
                .replace("mlp.fc1", fc1)
                .replace("mlp.fc2", fc2);
            return format!("v.blk.{layer}.{part}");
        }
        match name {
            "embeddings.class_embedding" => "v.class_embd".into(),
            "embeddings.position_embedding.weight" => "v.position_embd.weight".into(),
            _ if name.starts_with("embeddings.patch_embedding") => {
                name.replace("embeddings.patch_embedding", "v.patch_embd")
            }
            _ if name.starts_with("pre_layrnorm") => name.replace("pre_layrnorm", "v.pre_ln"),
            _ if name.starts_with("post_layernorm") => name.replace("post_layernorm", "v.post_ln"),
            // The projectors' own names (`mm.0.weight`, `mm.model.fc.weight`).
            _ => name.to_owned(),
        }
    }
}
