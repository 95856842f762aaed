//! `POST /v1/images/generations`: pictures from the image model (`image_service`), in
//! text-generation-webui's form of OpenAI's request — `prompt`, `negative_prompt`, `size`
//! (`"WxH"`), `n` (or `batch_size`) images in each of `batch_count` batches, `steps`,
//! `cfg_scale` (classifier-free guidance; at most 1 turns it off, as turbo models want),
//! `image_seed` (or `seed`; -1 or none: a random one), `sampler_name` (`euler`, `euler_a`,
//! `ddim`, `lcm`), `response_format` `b64_json` — answered with `{created, data: [{b64_json,
//! revised_prompt}]}`, each a PNG whose text chunks hold its seed and settings. Image `i` is
//! made from seed `image_seed + i`: the same request gives the same bytes. `/v1/images/edits`
//! and `/v1/images/variations` are 501s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::blocking;
use super::body::JsonBody;
use super::state::SharedState;
use crate::diffusion::schedule::{Sampler, ScheduleError};
use crate::diffusion::{DiffusionError, ImageRequest, png_out};
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::image_service::ImageError;

/// The longest prompt taken, in characters (OpenAI's gpt-image limit; CLIP reads 77 tokens of it).
const MAX_PROMPT_CHARS: usize = 32_000;
/// The most images one request makes (`n` × `batch_count`).
const MAX_IMAGES: usize = 16;
/// The most steps a request may ask for.
const MAX_STEPS: usize = 150;

/// `POST /v1/images/generations`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImageGenerationRequest {
    /// What to picture.
    pub prompt: String,
    /// What to keep out (used with guidance, `cfg_scale` above 1).
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Any name: the loaded image model answers.
    #[serde(default)]
    pub model: Option<String>,
    /// `"WxH"`, each side a multiple of 8 up to the server's `image_max_side` (default: the
    /// model's native size).
    #[serde(default)]
    pub size: Option<String>,
    /// Images per batch, 1 to 16 (`batch_size` is the same).
    #[serde(default, alias = "batch_size")]
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<usize>,
    /// Batches, 1 to 16; `n` × `batch_count` images in all, at most 16.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16)]
    pub batch_count: Option<usize>,
    /// Sampling steps, 1 to 150 (default 20; 4 for LCM and turbo schedules).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 150)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale, 0 to 30 (default 7; 0 for LCM and turbo schedules).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 30.0)]
    pub cfg_scale: Option<f64>,
    /// The first image's seed (`seed` is the same); -1 or none: a random one.
    #[serde(default, alias = "seed")]
    pub image_seed: Option<i64>,
    /// `euler`, `euler_a`, `ddim` or `lcm` (default: the model's scheduler).
    #[serde(default, alias = "sampler")]
    pub sampler_name: Option<String>,
    /// `b64_json` only (`url` would need the server to keep files).
    #[serde(default)]
    pub response_format: Option<String>,
    /// Accepted for OpenAI clients and ignored.
    #[serde(default)]
    pub quality: Option<String>,
    #[serde(default)]
    pub style: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

fn parse_size(size: &str) -> Option<(usize, usize)> {
    let (w, h) = size.trim().split_once(['x', 'X'])?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// Generate images
///
/// Images from the loaded image model (`--image-model`), as PNGs in base64.
#[utoipa::path(
    post,
    path = "/v1/images/generations",
    tag = "images",
    request_body = ImageGenerationRequest,
    responses(
        (status = 200, description = "`{created, data: [{b64_json, revised_prompt}]}`"),
        (status = 400, description = "A field out of range", body = ErrorResponse),
        (status = 503, description = "No image model is loaded", body = ErrorResponse),
    )
)]
pub async fn generations(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<ImageGenerationRequest>,
) -> Result<Response, ApiError> {
    if req.prompt.trim().is_empty() {
        return Err(ApiError::invalid_param("prompt", "`prompt` must say what to picture"));
    }
    if req.prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::invalid_param(
            "prompt",
            format!("`prompt` is longer than {MAX_PROMPT_CHARS} characters"),
        ));
    }
    match req.response_format.as_deref() {
        None | Some("b64_json") => {}
        Some("url") => {
            return Err(ApiError {
                code: Some("unsupported_value"),
                ..ApiError::invalid_param(
                    "response_format",
                    "`response_format` `url` is not supported: this server keeps no files; use `b64_json`",
                )
            });
        }
        Some(other) => {
            return Err(ApiError::invalid_param(
                "response_format",
                format!("`response_format` must be `b64_json`, not `{}`", other.chars().take(40).collect::<String>()),
            ));
        }
    }
    let (n, batches) = (req.n.unwrap_or(1), req.batch_count.unwrap_or(1));
    if n == 0 || batches == 0 || n.saturating_mul(batches) > MAX_IMAGES {
        return Err(ApiError::invalid_param(
            "n",
            format!("`n` (batch_size) and `batch_count` must be at least 1, and at most {MAX_IMAGES} images in all"),
        ));
    }
    if req.steps.is_some_and(|s| s == 0 || s > MAX_STEPS) {
        return Err(ApiError::invalid_param("steps", format!("`steps` must be from 1 to {MAX_STEPS}")));
    }
    if req.cfg_scale.is_some_and(|c| !(0.0..=30.0).contains(&c)) {
        return Err(ApiError::invalid_param("cfg_scale", "`cfg_scale` must be from 0 to 30"));
    }
    let sampler = match req.sampler_name.as_deref() {
        None => None,
        Some(name) => Some(Sampler::parse(name).ok_or_else(|| {
            ApiError::invalid_param(
                "sampler_name",
                format!(
                    "`sampler_name` must be `euler`, `euler_a`, `ddim` or `lcm`, not `{}`",
                    name.chars().take(40).collect::<String>()
                ),
            )
        })?),
    };
    let requested_size = match req.size.as_deref() {
        None => None,
        Some(s) => Some(parse_size(s).ok_or_else(|| {
            ApiError::invalid_param("size", "`size` must be `WIDTHxHEIGHT` in pixels, such as `512x512`")
        })?),
    };
    let seed = match req.image_seed {
        Some(s) if s >= 0 => s as u64,
        _ => u64::from(rand::random::<u32>()),
    };
    let service = state.image_model.clone();
    let revised_prompt = req.prompt.clone();
    let max_side = service.max_side;
    // Set when this handler is dropped before the images are made (the client went away), so
    // the generation stops at its next step instead of holding the image model.
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancelled));
    let images = blocking::off_runtime("generating images", move || {
        let pipeline = service.pipeline().map_err(image_error)?;
        let native = pipeline.native_size();
        let (width, height) = requested_size.unwrap_or((native, native));
        let multiple = pipeline.size_multiple();
        if width == 0 || height == 0 || !width.is_multiple_of(multiple) || !height.is_multiple_of(multiple) {
            return Err(ApiError::invalid_param(
                "size",
                format!("each side of `size` must be a positive multiple of {multiple}, not {width}x{height}"),
            ));
        }
        if width > max_side || height > max_side {
            return Err(ApiError::invalid_param(
                "size",
                format!("each side of `size` may be at most {max_side} pixels (image_max_side), not {width}x{height}"),
            ));
        }
        let turbo = pipeline.is_few_step();
        let request = ImageRequest {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone().unwrap_or_default(),
            width,
            height,
            steps: req.steps.unwrap_or(if turbo { 4 } else { 20 }),
            guidance: req.cfg_scale.unwrap_or(if turbo { 0.0 } else { 7.0 }),
            sampler,
        };
        let sampler_name = format!("{:?}", sampler.unwrap_or(pipeline.default_sampler));
        let mut pngs = Vec::with_capacity(n * batches);
        for batch in 0..batches {
            let first = seed.wrapping_add((batch * n) as u64);
            let made = service.generate(&pipeline, &request, first, n, &cancelled).map_err(image_error)?;
            for (i, image) in made.iter().enumerate() {
                let image_seed = first.wrapping_add(i as u64);
                let parameters = format!(
                    "{}\nNegative prompt: {}\nSteps: {}, Sampler: {sampler_name}, CFG scale: {}, Seed: {image_seed}, Size: {width}x{height}",
                    request.prompt, request.negative_prompt, request.steps, request.guidance
                );
                let chunks = [("parameters", parameters), ("seed", image_seed.to_string())];
                pngs.push(png_out::encode(image, &chunks).map_err(|e| ApiError::internal(e.to_string()))?);
            }
        }
        Ok(pngs)
    })
    .await?;
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let data: Vec<_> = images
        .iter()
        .map(|png| {
            json!({
                "b64_json": base64::engine::general_purpose::STANDARD.encode(png),
                "revised_prompt": revised_prompt,
            })
        })
        .collect();
    Ok(Json(json!({ "created": created, "data": data })).into_response())
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The API error for a failure of the image service.
fn image_error(e: ImageError) -> ApiError {
    match e {
        ImageError::NotLoaded(message) => ApiError::unavailable(message),
        e @ ImageError::Load { .. } => ApiError::unavailable(e.to_string()),
        ImageError::Generate(DiffusionError::Request(message)) => ApiError::invalid_param("size", message),
        ImageError::Generate(DiffusionError::Schedule(e @ ScheduleError::Steps(_))) => {
            ApiError::invalid_param("steps", e.to_string())
        }
        // Only seen by a client that is gone.
        ImageError::Generate(DiffusionError::Cancelled) => ApiError::bad_request("the image was cancelled"),
        ImageError::Generate(other) => ApiError::internal(format!("the image could not be made: {other}")),
    }
}

/// `POST /v1/images/edits` and `/v1/images/variations`: not implemented.
pub async fn not_implemented() -> Response {
    let error = ApiError {
        status: axum::http::StatusCode::NOT_IMPLEMENTED,
        ..ApiError::bad_request("image edits and variations are not implemented: only /v1/images/generations is")
    };
    error.into_response()
}
