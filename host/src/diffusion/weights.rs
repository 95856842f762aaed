//! A pipeline component's tensors by their diffusers names (`down_blocks.0.resnets.0.conv1.weight`),
//! read from the component's folder of a diffusers pipeline (`unet/`, `vae/`, `text_encoder/`), or
//! from a single-file checkpoint through a table from diffusers names to the names stored there
//! ([`super::checkpoint`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::DiffusionError;
use crate::model::weights::{HostTensor, SafetensorsWeights, WeightError};

/// Where a diffusers-named tensor is stored in a single file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    /// `Some((i, n))`: the `i`-th of `n` equal slices along the first axis (OpenCLIP's fused
    /// `in_proj` holds q, k and v).
    pub part: Option<(usize, usize)>,
}

impl Stored {
    pub fn whole(name: impl Into<String>) -> Self {
        Self { name: name.into(), part: None }
    }
}

/// How the component's names are found in the file.
enum Naming {
    /// Stored as `prefix + name` (`text_model.` where transformers saved the CLIP text model with it).
    Prefix(String),
    /// Stored under other names: diffusers name → stored tensor.
    Table(HashMap<String, Stored>),
}

/// One component's weights.
pub struct Component {
    weights: Arc<SafetensorsWeights>,
    naming: Naming,
    /// The component, for errors (`unet`).
    label: String,
}

impl Component {
    /// The safetensors in `dir` (`unet/diffusion_pytorch_model.safetensors`, …).
    pub fn open(dir: &Path, label: &str) -> Result<Self, DiffusionError> {
        let weights = SafetensorsWeights::open(dir)?;
        Ok(Self { weights: Arc::new(weights), naming: Naming::Prefix(String::new()), label: label.to_owned() })
    }

    /// `weights` (shared with the checkpoint's other components) by `prefix + name`.
    pub fn prefixed(weights: Arc<SafetensorsWeights>, prefix: &str, label: &str) -> Self {
        Self { weights, naming: Naming::Prefix(prefix.to_owned()), label: label.to_owned() }
    }

    /// `weights` through `table` (diffusers name → stored tensor).
    pub fn renamed(weights: Arc<SafetensorsWeights>, table: HashMap<String, Stored>, label: &str) -> Self {
        Self { weights, naming: Naming::Table(table), label: label.to_owned() }
    }

    /// Names read under `prefix` when the file stores them so (`text_model.`): CLIP text models
    /// are saved with it by transformers before 5.6 and without it after.
    pub fn with_optional_prefix(mut self, prefix: &str, probe: &str) -> Self {
        if let Naming::Prefix(current) = &self.naming {
            let longer = format!("{current}{prefix}");
            if self.weights.contains_named(&format!("{longer}{probe}")) {
                self.naming = Naming::Prefix(longer);
            }
        }
        self
    }

    fn stored(&self, name: &str) -> Option<Stored> {
        match &self.naming {
            Naming::Prefix(prefix) => Some(Stored::whole(format!("{prefix}{name}"))),
            Naming::Table(table) => table.get(name).cloned(),
        }
    }

    /// The name `name` is stored under, for errors.
    pub fn name_of(&self, name: &str) -> String {
        match self.stored(name) {
            Some(stored) => format!("{}/{}", self.label, stored.name),
            None => format!("{}/{name}", self.label),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.stored(name).is_some_and(|s| self.weights.contains_named(&s.name))
    }

    pub fn read(&self, name: &str) -> Result<HostTensor, DiffusionError> {
        let stored = self.stored(name).ok_or_else(|| DiffusionError::Missing(self.name_of(name)))?;
        let tensor = self.weights.read_named(&stored.name).map_err(|e| self.error(name, e))?;
        match stored.part {
            None => Ok(tensor),
            Some((i, n)) => slice_rows(tensor, i, n).ok_or_else(|| {
                DiffusionError::Shape(format!("{} cannot be split into {n} equal parts", self.name_of(name)))
            }),
        }
    }

    fn error(&self, name: &str, e: WeightError) -> DiffusionError {
        match e {
            WeightError::Missing(_) => DiffusionError::Missing(self.name_of(name)),
            other => DiffusionError::Weights(other),
        }
    }

    /// `name`'s shape, from the file's header.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, DiffusionError> {
        let stored = self.stored(name).ok_or_else(|| DiffusionError::Missing(self.name_of(name)))?;
        let mut shape = self.weights.shape_named(&stored.name).map_err(|e| self.error(name, e))?;
        if let (Some((_, n)), Some(rows)) = (stored.part, shape.first_mut()) {
            *rows /= n;
        }
        Ok(shape)
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

/// The `i`-th of `n` equal slices of `t` along its first axis (rows are contiguous).
fn slice_rows(t: HostTensor, i: usize, n: usize) -> Option<HostTensor> {
    let rows = *t.shape.first()?;
    if n == 0 || i >= n || !rows.is_multiple_of(n) {
        return None;
    }
    let part = rows / n;
    let row_len = t.data.len() / rows.max(1);
    let mut shape = t.shape.clone();
    shape[0] = part;
    let data = t.data.get(i * part * row_len..(i + 1) * part * row_len)?.to_vec();
    Some(HostTensor { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fused_tensor_splits_into_equal_row_blocks() {
        let t = HostTensor { shape: vec![6, 2], data: (0..12).map(|x| x as f32).collect() };
        let k = slice_rows(t.clone(), 1, 3).expect("splits");
        assert_eq!(k.shape, vec![2, 2]);
        assert_eq!(k.data, vec![4.0, 5.0, 6.0, 7.0]);
        let bias = HostTensor { shape: vec![6], data: (0..6).map(|x| x as f32).collect() };
        assert_eq!(slice_rows(bias, 2, 3).expect("splits").data, vec![4.0, 5.0]);
        assert!(slice_rows(t, 0, 4).is_none(), "6 rows are not 4 equal parts");
    }
}
