//! A request's images made into prompt rows: each URL read (a `data:` URL in place, an http(s)
//! one as the `image_urls` setting allows), decoded, run through the model's vision side, and
//! the prompt tokenized around its markers. Every failure is a 400 naming the image's field.

use std::sync::Arc;

use super::blocking;
use super::state::SharedState;
use crate::error::ApiError;
use crate::model::MediaSpan;
use crate::serving::ServedModel;
use crate::vision::{VisionError, image_input, prompt};

pub use crate::vision::prompt::MEDIA_MARKER;

/// Most images one request may carry: each is decoded and run through the vision tower before
/// the prompt is sized, so the count bounds that work.
pub const MAX_IMAGES: usize = 32;

/// An image part of a request: where it is and its URL.
#[derive(Debug, Clone)]
pub struct ImageRef {
    pub field: String,
    pub url: String,
}

/// A prompt's token ids with its images' spans.
pub struct MediaIds {
    pub ids: Vec<u32>,
    pub media: Vec<MediaSpan>,
}

/// The error for an image sent to `served`, a model without a vision side.
pub fn text_only(served: &ServedModel, field: &str) -> ApiError {
    ApiError::invalid_param(
        field,
        format!("`{}` is a text-only model and takes no images; load a vision model", served.name),
    )
}

/// Tokenizes `text`, each `marker` in it replaced by the next of `images`.
pub async fn media_prompt(
    state: &SharedState,
    served: &Arc<ServedModel>,
    text: String,
    marker: &str,
    images: Vec<ImageRef>,
    add_special: bool,
) -> Result<MediaIds, ApiError> {
    let Some(first) = images.first() else {
        let ids = served.engine.tokenizer().encode(&text, add_special)?;
        return Ok(MediaIds { ids, media: Vec::new() });
    };
    let Some(vision) = served.vision.clone() else {
        return Err(text_only(served, &first.field));
    };
    if images.len() > MAX_IMAGES {
        return Err(ApiError::invalid_param(
            images[MAX_IMAGES].field.clone(),
            format!("at most {MAX_IMAGES} images per request, got {}", images.len()),
        ));
    }
    let placed = prompt::count_markers(&text, marker);
    if placed != images.len() {
        let field = if marker == MEDIA_MARKER { "prompt" } else { "messages" };
        return Err(ApiError::invalid_param(
            field,
            format!("the prompt holds {placed} `{marker}` placeholders for {} images", images.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(images.len());
    for image in &images {
        bytes.push(
            state
                .images
                .bytes(&image.url)
                .await
                .map_err(|e| ApiError::invalid_param(image.field.clone(), e.to_string()))?,
        );
    }
    let tokenizer = served.engine.tokenizer().clone();
    let marker = marker.to_owned();
    let context = served.engine.context_length();
    blocking::off_runtime("reading the images", move || {
        let at = |image: &ImageRef, e: VisionError| match e {
            VisionError::Image(_) | VisionError::Fetch(_) => {
                ApiError::invalid_param(image.field.clone(), e.to_string())
            }
            other => ApiError::internal(format!("the image could not be encoded: {other}")),
        };
        let mut decoded = Vec::with_capacity(images.len());
        for (image, bytes) in images.iter().zip(bytes) {
            decoded.push(image_input::decode(&bytes).map_err(|e| at(image, e))?);
        }
        // The images' tokens alone past the context: refused before the towers run.
        let image_tokens: usize = decoded.iter().map(|d| vision.rows_for(d)).sum();
        if image_tokens >= context {
            return Err(ApiError::context_length_exceeded(image_tokens, context));
        }
        let mut embedded = Vec::with_capacity(images.len());
        for (image, decoded) in images.iter().zip(decoded) {
            let embedding = vision.embed(&decoded).map_err(|e| at(image, e))?;
            embedded.push((embedding, decoded.key));
        }
        let made = prompt::assemble(&text, &marker, &tokenizer, add_special, vision.image_token(), embedded)?;
        Ok(MediaIds { ids: made.ids, media: made.media })
    })
    .await
}
