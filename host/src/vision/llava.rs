//! LLaVA-1.5/1.6-style vision: a CLIP tower's features from a chosen layer (the class token
//! dropped under the `default` strategy), through a two-layer MLP projector into the decoder's
//! width; each image fills `<image>`'s place with one row per patch. Read from a Hugging Face
//! `LlavaForConditionalGeneration` folder (`config.json`, safetensors, the processor config).

use burn::tensor::Device;
use serde_json::Value;

use super::preprocess::{ImageProcessor, Pixels};
use super::vit::{Activation, VisionTower, VitConfig};
use super::{ImageEmbedding, VisionError};
use crate::model::layers::{Linear, read_back};
use crate::model::weights::SafetensorsWeights;

/// Which of the tower's positions become image tokens (`vision_feature_select_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Select {
    /// Every patch, the class token dropped.
    Patches,
    /// Every position.
    Full,
}

/// A loaded LLaVA vision side.
pub struct Llava {
    tower: VisionTower,
    /// `hidden_states` indices (counted as transformers does, negative from the end) whose
    /// features are joined side by side.
    feature_layers: Vec<usize>,
    select: Select,
    linear_1: Linear,
    activation: Activation,
    linear_2: Linear,
    processor: ImageProcessor,
    /// The token `<image>` is (its id fills an image's positions in the prompt).
    pub image_token: u32,
    /// The decoder's width.
    pub hidden: usize,
}

impl Llava {
    /// Loads from the folder's parsed `config.json`, its weights (names already canonical:
    /// `vision_tower.…`, `multi_modal_projector.…`) and its image processor's config.
    pub fn load(
        config: &Value,
        weights: &SafetensorsWeights,
        processor: &Value,
        text_hidden: usize,
        device: &Device,
    ) -> Result<Self, VisionError> {
        let field = |name: &str| config.get(name).filter(|v| !v.is_null());
        let vision: VitConfig = serde_json::from_value(field("vision_config").cloned().unwrap_or(Value::Null))
            .map_err(|e| VisionError::Config(format!("`vision_config`: {e}")))?;
        let tower = VisionTower::load(weights, "vision_tower.", vision, device)?;
        let states = tower.layers() as i64 + 1;
        let index = |v: &Value| -> Result<usize, VisionError> {
            let i =
                v.as_i64().ok_or_else(|| VisionError::Config("`vision_feature_layer` must hold integers".into()))?;
            let at = if i < 0 { states + i } else { i };
            if !(0..states).contains(&at) {
                return Err(VisionError::Config(format!(
                    "`vision_feature_layer` {i} is outside the tower's {states} states"
                )));
            }
            Ok(at as usize)
        };
        let feature_layers = match field("vision_feature_layer") {
            None => vec![index(&Value::from(-2))?],
            Some(Value::Array(list)) if !list.is_empty() => list.iter().map(index).collect::<Result<_, _>>()?,
            Some(v) => vec![index(v)?],
        };
        let select = match field("vision_feature_select_strategy").and_then(Value::as_str).unwrap_or("default") {
            "default" => Select::Patches,
            "full" => Select::Full,
            other => return Err(VisionError::Config(format!("`vision_feature_select_strategy` `{other}` is unknown"))),
        };
        let image_token = field("image_token_index")
            .or_else(|| field("image_token_id"))
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| VisionError::Config("`image_token_index` is missing".into()))?;
        let activation = Activation::parse(field("projector_hidden_act").and_then(Value::as_str).unwrap_or("gelu"))?;
        let features = tower.config().hidden_size * feature_layers.len();
        let read = |name: &str| weights.read_named(name).map_err(VisionError::from);
        let read_opt = |name: &str| if weights.contains_named(name) { read(name).map(Some) } else { Ok(None) };
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear, VisionError> {
            let w = read(&format!("{name}.weight"))?;
            let b = read_opt(&format!("{name}.bias"))?;
            Ok(Linear::from_host(name, w, b, [out, inp], device)?)
        };
        let linear_1 = linear("multi_modal_projector.linear_1", text_hidden, features)?;
        let linear_2 = linear("multi_modal_projector.linear_2", text_hidden, text_hidden)?;
        let processor = ImageProcessor::from_json(processor)?;
        Ok(Self {
            tower,
            feature_layers,
            select,
            linear_1,
            activation,
            linear_2,
            processor,
            image_token,
            hidden: text_hidden,
        })
    }

    /// How many rows an image becomes.
    pub fn tokens_per_image(&self) -> usize {
        let grid = self.tower.config().grid();
        grid * grid + usize::from(self.select == Select::Full)
    }

    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The rows one image's pixel values become.
    pub fn embed(&self, pixels: &Pixels) -> Result<ImageEmbedding, VisionError> {
        let deepest = self.feature_layers.iter().copied().max().unwrap_or(0);
        // One pass to the deepest wanted layer; shallower ones are re-run (a LLaVA-1.5/1.6
        // checkpoint wants one).
        let mut parts = Vec::with_capacity(self.feature_layers.len());
        for &layer in &self.feature_layers {
            let states = self.tower.hidden_states(pixels, layer.min(deepest))?;
            let [n, h] = states.dims();
            parts.push(match self.select {
                Select::Patches => states.slice([1..n, 0..h]),
                Select::Full => states,
            });
        }
        let features = if parts.len() == 1 { parts.remove(0) } else { burn::tensor::Tensor::cat(parts, 1) };
        let projected = self.linear_2.forward(self.activation.apply(self.linear_1.forward(features)?))?;
        let [rows, hidden] = projected.dims();
        let data = read_back(projected)?;
        Ok(ImageEmbedding { rows: data, len: rows, hidden })
    }
}
