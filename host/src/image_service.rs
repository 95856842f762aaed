//! The image model behind `/v1/images/generations`: `image_model` (`--image-model`), a diffusers
//! folder or single-file checkpoint (described by `image_config` where given) in the model dir or
//! a path, loaded at start on a thread of its own onto
//! `image_device`. Generation runs on tokio's blocking pool, one image at a time (each already
//! uses every compute thread) and never on the text engine's thread, so chat keeps answering
//! while a picture is made. Each step is logged (no prompt) and shown on `/metrics`.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use hearth_settings::Settings;
use metrics::gauge;

use crate::diffusion::{DiffusionError, ImageRequest, Pipeline, RgbImage, SeededNoise};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image model: how to load one.
    #[error("{0}")]
    NotLoaded(String),
    /// The model could not be loaded.
    #[error("the image model `{name}` cannot be loaded: {reason}")]
    Load { name: String, reason: String },
    #[error(transparent)]
    Generate(#[from] DiffusionError),
}

/// The loading state.
enum Slot {
    Loading,
    Ready(Arc<Pipeline>),
    Failed(String),
    None,
}

pub struct ImageService {
    /// The name as configured (for messages and the model id).
    name: Option<String>,
    slot: Mutex<Slot>,
    loaded: Condvar,
    /// Held while an image is made.
    running: Mutex<()>,
    pub max_side: usize,
}

impl ImageService {
    /// The service for `settings`; call [`Self::start_loading`] to load the model.
    pub fn new(settings: &Settings) -> Self {
        let slot = if settings.image_model.is_some() { Slot::Loading } else { Slot::None };
        Self {
            name: settings.image_model.clone(),
            slot: Mutex::new(slot),
            loaded: Condvar::new(),
            running: Mutex::new(()),
            max_side: settings.image_max_side.max(8),
        }
    }

    /// Loads the configured model on a thread of its own (the server answers meanwhile;
    /// image requests wait for it).
    pub fn start_loading(self: &Arc<Self>, settings: &Settings) {
        let Some(name) = settings.image_model.clone() else { return };
        let in_dir = settings.model_dir.join(&name);
        let path = if in_dir.exists() { in_dir } else { PathBuf::from(&name) };
        let config = settings.image_config.as_ref().map(|c| {
            let in_dir = settings.model_dir.join(c);
            if in_dir.exists() { in_dir } else { c.clone() }
        });
        let device = settings.image_device.unwrap_or(settings.device);
        let service = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("image-model-load".into()).spawn(move || {
            let result = crate::model::device::select(device).map_err(|e| e.to_string()).and_then(|device| {
                tracing::info!(model = %name, device = %device.description, "loading the image model");
                Pipeline::open(&path, config.as_deref(), &device.device).map_err(|e| e.to_string())
            });
            let slot = match result {
                Ok(pipeline) => {
                    tracing::info!(model = %name, "image model ready");
                    Slot::Ready(Arc::new(pipeline))
                }
                Err(reason) => {
                    tracing::error!(model = %name, %reason, "the image model cannot be loaded");
                    Slot::Failed(reason)
                }
            };
            *service.slot.lock().unwrap_or_else(|e| e.into_inner()) = slot;
            service.loaded.notify_all();
        });
        if let Err(e) = spawned {
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Slot::Failed(e.to_string());
        }
    }

    /// The loaded pipeline, waiting while it loads. Blocking.
    pub fn pipeline(&self) -> Result<Arc<Pipeline>, ImageError> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        while matches!(*slot, Slot::Loading) {
            slot = self.loaded.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
        match &*slot {
            Slot::Ready(p) => Ok(Arc::clone(p)),
            Slot::Failed(reason) => {
                Err(ImageError::Load { name: self.name.clone().unwrap_or_default(), reason: reason.clone() })
            }
            Slot::None | Slot::Loading => Err(ImageError::NotLoaded(
                "no image model is loaded: start Hearth with --image-model NAME (a Stable Diffusion 1.x/2.x diffusers \
                 folder or .safetensors checkpoint in the model dir, or a path to one), or set image_model in \
                 settings.yaml"
                    .into(),
            )),
        }
    }

    /// Makes `count` images of `request` with `pipeline`, image `i` from seed `seed + i`,
    /// stopping at the next step once `cancelled` is set (the client went away). Blocking.
    pub fn generate(
        &self,
        pipeline: &Pipeline,
        request: &ImageRequest,
        seed: u64,
        count: usize,
        cancelled: &AtomicBool,
    ) -> Result<Vec<RgbImage>, ImageError> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // The exporter must exist before the gauges are set, or the steps are not seen.
        crate::telemetry::install();
        let mut images = Vec::with_capacity(count);
        let conditioning = pipeline.condition(request)?;
        for i in 0..count {
            if cancelled.load(Ordering::Relaxed) {
                return Err(DiffusionError::Cancelled.into());
            }
            let mut noise = SeededNoise::new(seed.wrapping_add(i as u64));
            let mut progress = |step: usize, of: usize| {
                tracing::info!(image = i + 1, of = count, step, steps = of, "image step");
                gauge!("hearth_image_step").set(step as f64);
                gauge!("hearth_image_steps").set(of as f64);
                if cancelled.load(Ordering::Relaxed) {
                    tracing::info!(image = i + 1, step, "image cancelled: the client went away");
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            gauge!("hearth_images_generating").set(1.0);
            let made = pipeline.generate_conditioned(request, &conditioning, &mut noise, &mut progress);
            gauge!("hearth_images_generating").set(0.0);
            images.push(made?);
        }
        Ok(images)
    }
}
