//! A pipeline component's tensors by their diffusers names (`down_blocks.0.resnets.0.conv1.weight`),
//! read from the component's folder of a diffusers pipeline (`unet/`, `vae/`, `text_encoder/`).

use std::path::Path;

use super::DiffusionError;
use crate::model::weights::{HostTensor, SafetensorsWeights};

/// One component's weights.
pub struct Component {
    weights: SafetensorsWeights,
    /// Prepended to every name (`text_model.` where transformers saved the CLIP text model with it).
    prefix: String,
    /// The component, for errors (`unet`).
    label: String,
}

impl Component {
    /// The safetensors in `dir` (`unet/diffusion_pytorch_model.safetensors`, …).
    pub fn open(dir: &Path, label: &str) -> Result<Self, DiffusionError> {
        let weights = SafetensorsWeights::open(dir)?;
        Ok(Self { weights, prefix: String::new(), label: label.to_owned() })
    }

    /// Names read under `prefix` when the file stores them so (`text_model.`): CLIP text models
    /// are saved with it by transformers before 5.6 and without it after.
    pub fn with_optional_prefix(mut self, prefix: &str, probe: &str) -> Self {
        if self.weights.contains_named(&format!("{prefix}{probe}")) {
            self.prefix = prefix.to_owned();
        }
        self
    }

    /// The name `name` is stored under, for errors.
    pub fn name_of(&self, name: &str) -> String {
        format!("{}/{}{name}", self.label, self.prefix)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains_named(&format!("{}{name}", self.prefix))
    }

    pub fn read(&self, name: &str) -> Result<HostTensor, DiffusionError> {
        self.weights.read_named(&format!("{}{name}", self.prefix)).map_err(|e| match e {
            crate::model::weights::WeightError::Missing(_) => DiffusionError::Missing(self.name_of(name)),
            other => DiffusionError::Weights(other),
        })
    }

    /// `name`'s values, which must be `len` of them.
    pub fn read_sized(&self, name: &str, len: usize) -> Result<Vec<f32>, DiffusionError> {
        let t = self.read(name)?;
        if t.data.len() != len {
            return Err(DiffusionError::Shape(format!(
                "{}: {:?} where {len} values belong",
                self.name_of(name),
                t.shape
            )));
        }
        Ok(t.data)
    }

    /// `name`'s `len` values, if the file has it.
    pub fn read_opt(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, DiffusionError> {
        if self.contains(name) { self.read_sized(name, len).map(Some) } else { Ok(None) }
    }
}
