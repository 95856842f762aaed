//! A prompt with images: the text split at its image markers, each piece tokenized, each marker
//! replaced by the image's placeholder tokens — one per row of its embedding, as Hugging Face's
//! processors expand `<image>` — whose rows the decoder takes from the embedding.

use std::sync::Arc;

use crate::model::MediaSpan;
use crate::tokenizer::{TextTokenizer, TokenizerError};

use super::ImageEmbedding;

/// Token ids and the spans images fill.
#[derive(Debug, Clone)]
pub struct MediaPrompt {
    pub ids: Vec<u32>,
    pub media: Vec<MediaSpan>,
}

/// How many image markers `text` holds.
pub fn count_markers(text: &str, marker: &str) -> usize {
    if marker.is_empty() { 0 } else { text.matches(marker).count() }
}

/// Tokenizes `text`, putting the `i`th image (with its content key) where the `i`th `marker`
/// is. The caller has checked that the counts agree.
pub fn assemble(
    text: &str,
    marker: &str,
    tokenizer: &TextTokenizer,
    add_special: bool,
    image_token: u32,
    images: Vec<(ImageEmbedding, u64)>,
) -> Result<MediaPrompt, TokenizerError> {
    let mut ids = Vec::new();
    let mut media = Vec::with_capacity(images.len());
    let mut images = images.into_iter();
    for (i, piece) in text.split(marker).enumerate() {
        if i > 0
            && let Some((embedding, key)) = images.next()
        {
            media.push(MediaSpan { start: ids.len(), rows: Arc::from(embedding.rows), len: embedding.len, key });
            ids.extend(std::iter::repeat_n(image_token, embedding.len));
        }
        if !piece.is_empty() || (i == 0 && add_special) {
            ids.extend(tokenizer.encode(piece, add_special && i == 0)?);
        }
    }
    Ok(MediaPrompt { ids, media })
}
