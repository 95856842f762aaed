//! LLaVA-1.5/1.6-style vision: a CLIP tower's features from a chosen layer (the class token
//! dropped under the `default` strategy), through a two-layer MLP projector into the decoder's
//! width; each image fills `<image>`'s place with one row per patch. Read from a Hugging Face
//! `LlavaForConditionalGeneration` folder (`config.json`, safetensors, the processor config).

use burn::tensor::Device;
use serde_json::Value;

use super::preprocess::{ImageProcessor, Pixels};
use super::vit::{Activation, TowerWeights, VisionTower, VitConfig};
use super::{ImageEmbedding, VisionError, image_token_id, mmproj};
use crate::gguf::GgufFile;
use crate::model::layers::{Linear, read_back};
use crate::model::weights::{HostTensor, SafetensorsWeights};

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
        let mut vision = VitConfig::of_model(config, &[])?;
        let states = vision.num_hidden_layers as i64 + 1;
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
        // Blocks past the deepest feature layer never run: they are not read (as llama.cpp's
        // converter leaves them out of the mmproj).
        vision.num_hidden_layers = feature_layers.iter().copied().max().unwrap_or(0);
        let tower = VisionTower::load(&HfTower { weights, prefix: "vision_tower." }, vision, false, device)?;
        let select = match field("vision_feature_select_strategy").and_then(Value::as_str).unwrap_or("default") {
            "default" => Select::Patches,
            "full" => Select::Full,
            other => return Err(VisionError::Config(format!("`vision_feature_select_strategy` `{other}` is unknown"))),
        };
        let image_token = image_token_id(config)?;
        let activation = Activation::parse(field("projector_hidden_act").and_then(Value::as_str).unwrap_or("gelu"))?;
        let features = tower.config().hidden_size * feature_layers.len();
        let source = HfTower { weights, prefix: "multi_modal_projector." };
        let linear_1 = projection(&source, "linear_1", text_hidden, features, device)?;
        let linear_2 = projection(&source, "linear_2", text_hidden, text_hidden, device)?;
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

    /// Loads llama.cpp's `mmproj` GGUF of a LLaVA-1.5/1.6 model (`clip.projector_type` `mlp`):
    /// the tower cut after its feature layer, the projector as `mm.0`/`mm.2`. The file holds no
    /// processor config: images are processed as the CLIP processor LLaVA ships does (the short
    /// side resized to the tower's size with Pillow's bicubic, centre crop, the file's mean and std).
    pub fn load_mmproj(
        file: &GgufFile,
        image_token: u32,
        text_hidden: usize,
        device: &Device,
    ) -> Result<Self, VisionError> {
        let meta = &file.metadata;
        let projector = mmproj::projector_type(meta)?;
        if projector != "mlp" {
            return Err(VisionError::Config(format!("the `{projector}` projector is not LLaVA's `mlp`")));
        }
        let gelu = meta.opt_bool("clip.use_gelu").map_err(mmproj::meta_error)?.unwrap_or(false);
        let config = mmproj::vit_config(meta, if gelu { "gelu" } else { "quick_gelu" })?;
        let layers = config.num_hidden_layers;
        let image_size = config.image_size;
        let source = mmproj::MmprojTower::new(file, &config);
        let tower = VisionTower::load(&source, config, false, device)?;
        // The converter keeps the blocks up to the feature layer: its output is the last state.
        let feature_layers = match meta.opt_i64_array("clip.vision.feature_layer").map_err(mmproj::meta_error)? {
            Some(list) if !list.is_empty() => {
                list.iter()
                    .map(|&i| {
                        usize::try_from(i).ok().filter(|&i| i <= layers).ok_or_else(|| {
                            VisionError::Config(format!("clip.vision.feature_layer {i} is out of range"))
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => vec![layers],
        };
        let features = tower.config().hidden_size * feature_layers.len();
        let linear_1 = projection(&source, "mm.0", text_hidden, features, device)?;
        let linear_2 = projection(&source, "mm.2", text_hidden, text_hidden, device)?;
        let processor = ImageProcessor::from_json(&serde_json::json!({
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
            "resample": 3,
            "image_mean": mmproj::triple(meta, "image_mean")?,
            "image_std": mmproj::triple(meta, "image_std")?,
        }))?;
        Ok(Self {
            tower,
            feature_layers,
            select: Select::Patches,
            linear_1,
            activation: Activation::Gelu,
            linear_2,
            processor,
            image_token,
            hidden: text_hidden,
        })
    }

    /// Rows an image becomes (every image alike).
    pub fn rows(&self) -> usize {
        let grid = self.tower.config().grid();
        grid * grid + usize::from(self.select == Select::Full)
    }

    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// The rows one image's pixel values become.
    pub fn embed(&self, pixels: &Pixels) -> Result<ImageEmbedding, VisionError> {
        // Each wanted layer's states from a pass of their own (LLaVA-1.5/1.6 want one).
        let mut parts = Vec::with_capacity(self.feature_layers.len());
        for &layer in &self.feature_layers {
            let states = self.tower.hidden_states(pixels, layer)?;
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
        Ok(ImageEmbedding { rows: data, len: rows, hidden, expansion: None })
    }
}

/// A projector layer `{name}.weight` (and its bias, if any) from `source`.
pub(super) fn projection(
    source: &dyn TowerWeights,
    name: &str,
    out: usize,
    inp: usize,
    device: &Device,
) -> Result<Linear, VisionError> {
    let weight = source.read(&format!("{name}.weight"))?;
    let bias_name = format!("{name}.bias");
    let bias = if source.contains(&bias_name) { Some(source.read(&bias_name)?) } else { None };
    Ok(Linear::from_host(&source.file_name(name), weight, bias, [out, inp], device)?)
}

/// A Hugging Face folder's tensors under `prefix`.
pub(super) struct HfTower<'a> {
    pub(super) weights: &'a SafetensorsWeights,
    pub(super) prefix: &'static str,
}

impl TowerWeights for HfTower<'_> {
    fn contains(&self, name: &str) -> bool {
        self.weights.contains_named(&self.file_name(name))
    }

    fn read(&self, name: &str) -> Result<HostTensor, VisionError> {
        Ok(self.weights.read_named(&self.file_name(name))?)
    }

    fn file_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}
