//! A prompt with images: the text split at its image markers, each piece tokenized, each marker
//! replaced by the image's placeholder tokens — one per row of its embedding, as Hugging Face's
//! processors expand `<image>` — whose rows the decoder takes from the embedding.

use std::sync::Arc;

use crate::model::MediaSpan;
use crate::tokenizer::{TextTokenizer, TokenizerError};

use super::ImageEmbedding;

/// The placeholder `/v1/completions` prompts hold, one per image (llama.cpp's and
/// text-generation-webui's), and the marker of models whose vocabulary has no image token.
pub const MEDIA_MARKER: &str = "<__media__>";

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
///
/// When the marker is the image token itself (LLaVA's `<image>`), the whole text is tokenized
/// at once and each image token expanded to the image's rows, as Hugging Face's processors do:
/// a tokenizer that marks the start of its input (SentencePiece's `▁`) does so once. Otherwise
/// (`<__media__>`) each piece of text between markers is tokenized alone, as llama.cpp does.
pub fn assemble(
    text: &str,
    marker: &str,
    tokenizer: &TextTokenizer,
    add_special: bool,
    image_token: u32,
    images: Vec<(ImageEmbedding, u64)>,
) -> Result<MediaPrompt, TokenizerError> {
    if tokenizer.token_text(image_token).as_deref() == Some(marker) {
        let whole = tokenizer.encode(text, add_special)?;
        if whole.iter().filter(|&&t| t == image_token).count() == images.len() {
            return Ok(expand(&whole, image_token, images));
        }
    }
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

/// `ids` with each `image_token` replaced by as many as its image has rows.
fn expand(ids: &[u32], image_token: u32, images: Vec<(ImageEmbedding, u64)>) -> MediaPrompt {
    let mut out = Vec::with_capacity(ids.len() + images.iter().map(|(e, _)| e.len).sum::<usize>());
    let mut media = Vec::with_capacity(images.len());
    let mut images = images.into_iter();
    for &id in ids {
        match (id == image_token).then(|| images.next()).flatten() {
            Some((embedding, key)) => {
                media.push(MediaSpan { start: out.len(), rows: Arc::from(embedding.rows), len: embedding.len, key });
                out.extend(std::iter::repeat_n(image_token, embedding.len));
            }
            None => out.push(id),
        }
    }
    MediaPrompt { ids: out, media }
}
