//! Images in prompts: decoding and fetching what a request sends, the model's image processor,
//! vision encoders in burn and the projectors that join them to the decoder, and the prompt
//! layout that puts an image's rows where its marker was.

pub mod fetch;
mod idefics3;
pub mod image_input;
mod llava;
mod mmproj;
pub mod preprocess;
pub mod prompt;
pub mod resample;
mod vit;

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;

use crate::model::weights::{SafetensorsWeights, WeightError};
use crate::model::{LoadedModel, ModelError, ModelFormat};
use idefics3::Idefics3;
pub use image_input::DecodedImage;
use llava::Llava;
pub use preprocess::Pixels;
pub use vit::Activation;

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// The request's image is not one (or not one this server reads).
    #[error("{0}")]
    Image(String),
    /// The image's URL could not be read.
    #[error("{0}")]
    Fetch(String),
    /// The model's vision config is unusable.
    #[error("vision config: {0}")]
    Config(String),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// An image's rows for the decoder: `[len, hidden]` row-major.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    pub rows: Vec<f32>,
    pub len: usize,
    pub hidden: usize,
    /// The prompt text the image's marker becomes, its image tokens taking the rows in order;
    /// `None`: the marker becomes `len` image tokens.
    pub expansion: Option<String>,
}

/// The model families (each holds a whole tower: boxed, they cost the enum a pointer).
enum Family {
    Llava(Box<Llava>),
    Idefics3(Box<Idefics3>),
}

/// A model's vision side.
pub struct VisionModel {
    family: Family,
    /// The text the model's chat template writes for an image (`<image>`).
    marker: String,
}

impl std::fmt::Debug for VisionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionModel").field("marker", &self.marker).finish()
    }
}

impl VisionModel {
    /// The vision side of `model`, if it has one: a Hugging Face folder's (its config names a
    /// multimodal architecture), or for a GGUF model llama.cpp's `mmproj` file `mmproj`
    /// (`--mmproj`), else the one `mmproj*.gguf` beside a model alone in its folder (a shared
    /// model dir's mmproj belongs to no model in particular).
    pub fn for_model(model: &LoadedModel, mmproj: Option<&Path>) -> Result<Option<Self>, VisionError> {
        let device = model.llama.device();
        let config = model.llama.config();
        let vision = match model.format {
            ModelFormat::HfFolder => {
                let path = model.path.join("config.json");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| VisionError::Config(format!("{}: {e}", path.display())))?;
                let json: Value =
                    serde_json::from_str(&text).map_err(|e| VisionError::Config(format!("{}: {e}", path.display())))?;
                Self::load_hf(&model.path, &json, config.hidden_size, device)?
            }
            ModelFormat::Gguf => {
                let beside = || {
                    let (models, mmprojs) = crate::model::ggufs_in(model.path.parent()?);
                    match (models.as_slice(), mmprojs.as_slice()) {
                        ([_], [one]) => Some(one.clone()),
                        _ => None,
                    }
                };
                match mmproj.map(Path::to_path_buf).or_else(beside) {
                    Some(file) => {
                        tracing::info!("vision: {}", file.display());
                        Some(Self::load_mmproj(&file, &model.tokenizer, config.hidden_size, device)?)
                    }
                    None => None,
                }
            }
        };
        if let Some(v) = &vision
            && v.image_token() as usize >= config.vocab_size
        {
            return Err(VisionError::Config(format!(
                "the image token {} is outside the vocabulary of {}",
                v.image_token(),
                config.vocab_size
            )));
        }
        Ok(vision)
    }

    /// The vision side of the Hugging Face folder `dir` whose `config.json` is `config`, if it
    /// has one (`None` for a text-only model, whose weights are then not opened again).
    pub fn load_hf(
        dir: &Path,
        config: &Value,
        text_hidden: usize,
        device: &Device,
    ) -> Result<Option<Self>, VisionError> {
        let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or_default();
        if !matches!(model_type, "llava" | "idefics3" | "smolvlm") {
            return Ok(None);
        }
        let weights = &SafetensorsWeights::open(dir)?;
        let processor = processor_config(dir)?;
        let image = processor.get("image_processor").cloned().unwrap_or_else(|| processor.clone());
        let family = match model_type {
            "llava" => Family::Llava(Box::new(Llava::load(config, weights, &image, text_hidden, device)?)),
            _ => Family::Idefics3(Box::new(Idefics3::load(config, weights, &image, text_hidden, device)?)),
        };
        let marker = processor.get("image_token").and_then(Value::as_str).unwrap_or("<image>").to_owned();
        Ok(Some(Self { family, marker }))
    }

    /// The vision side in llama.cpp's `mmproj` GGUF at `path`, for a decoder of width
    /// `text_hidden` whose vocabulary is `tokenizer`'s. Images sit where the template writes
    /// `<image>` when the vocabulary has that token (LLaVA's and SmolVLM's), else — LLaVA only:
    /// SmolVLM's layout is written in its own tokens — where `<__media__>` is.
    pub fn load_mmproj(
        path: &Path,
        tokenizer: &crate::tokenizer::TextTokenizer,
        text_hidden: usize,
        device: &Device,
    ) -> Result<Self, VisionError> {
        let file =
            crate::gguf::GgufFile::open(path).map_err(|e| VisionError::Config(format!("{}: {e}", path.display())))?;
        let (marker, image_token) = match tokenizer.inner().token_to_id("<image>") {
            Some(id) => ("<image>", id),
            // Any id holds the place: the image's rows replace its embedding.
            None => (prompt::MEDIA_MARKER, 0),
        };
        let family = match mmproj::projector_type(&file.metadata)?.as_str() {
            "mlp" => Family::Llava(Box::new(Llava::load_mmproj(&file, image_token, text_hidden, device)?)),
            "idefics3" => {
                // Its layout is written in these tokens: as text they would be other ids.
                let layout = ["<image>", "<fake_token_around_image>", "<global-img>"];
                if let Some(missing) = layout.iter().find(|t| tokenizer.inner().token_to_id(t).is_none()) {
                    return Err(VisionError::Config(format!(
                        "an Idefics3 mmproj for a vocabulary without `{missing}`"
                    )));
                }
                Family::Idefics3(Box::new(Idefics3::load_mmproj(&file, image_token, text_hidden, device)?))
            }
            other => {
                return Err(VisionError::Config(format!(
                    "the mmproj's projector `{other}` is not supported (LLaVA's `mlp` and SmolVLM's `idefics3` are)"
                )));
            }
        };
        Ok(Self { family, marker: marker.to_owned() })
    }

    /// The text the chat template writes for an image.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The id that holds an image's positions in a prompt.
    pub fn image_token(&self) -> u32 {
        match &self.family {
            Family::Llava(m) => m.image_token,
            Family::Idefics3(m) => m.image_token,
        }
    }

    /// The pixel values the processor makes of `image`: one image, or its tiles in prompt order.
    pub fn pixels(&self, image: &DecodedImage) -> Vec<Pixels> {
        match &self.family {
            Family::Llava(m) => vec![m.processor().pixels(&image.rgb)],
            Family::Idefics3(m) => m.pixels(&image.rgb),
        }
    }

    /// How many image tokens `image` becomes, known before it is encoded.
    pub fn rows_for(&self, image: &DecodedImage) -> usize {
        match &self.family {
            Family::Llava(m) => m.rows(),
            Family::Idefics3(m) => m.rows_for(&image.rgb),
        }
    }

    /// The rows `image` becomes.
    pub fn embed(&self, image: &DecodedImage) -> Result<ImageEmbedding, VisionError> {
        match &self.family {
            Family::Llava(m) => m.embed(&m.processor().pixels(&image.rgb)),
            Family::Idefics3(m) => m.embed(&image.rgb),
        }
    }

    /// The decoder's width.
    pub fn hidden(&self) -> usize {
        match &self.family {
            Family::Llava(m) => m.hidden,
            Family::Idefics3(m) => m.hidden,
        }
    }
}

/// The id a multimodal config gives its image token (`image_token_index` in LLaVA's,
/// `image_token_id` in Idefics3's).
fn image_token_id(config: &Value) -> Result<u32, VisionError> {
    ["image_token_index", "image_token_id"]
        .iter()
        .find_map(|key| config.get(*key).and_then(Value::as_u64))
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| VisionError::Config("the config gives no image token (`image_token_index`)".into()))
}

/// The processor's config: `processor_config.json` (transformers 5 puts the image processor
/// inside it) or `preprocessor_config.json` (older folders), merged.
fn processor_config(dir: &Path) -> Result<Value, VisionError> {
    let read = |name: &str| -> Result<Option<Value>, VisionError> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| VisionError::Config(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map(Some).map_err(|e| VisionError::Config(format!("{}: {e}", path.display())))
    };
    let processor = read("processor_config.json")?;
    let preprocessor = read("preprocessor_config.json")?;
    match (processor, preprocessor) {
        (Some(mut p), Some(pre)) => {
            if p.get("image_processor").is_none()
                && let Some(obj) = p.as_object_mut()
            {
                obj.insert("image_processor".into(), pre);
            }
            Ok(p)
        }
        (Some(p), None) => Ok(p),
        (None, Some(pre)) => Ok(serde_json::json!({ "image_processor": pre })),
        (None, None) => {
            Err(VisionError::Config("the folder has neither processor_config.json nor preprocessor_config.json".into()))
        }
    }
}
