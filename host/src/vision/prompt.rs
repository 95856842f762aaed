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
/// As Hugging Face's processors do, each marker is replaced by the image's text (its
/// [`ImageEmbedding::expansion`], or as many image tokens as it has rows), the whole tokenized
/// at once (a tokenizer that marks the start of its input does so once), and the image tokens
/// take the images' rows in order. A marker that is no token of the vocabulary (`<__media__>`)
/// splits the text instead, each piece tokenized alone, as llama.cpp does.
pub fn assemble(
    text: &str,
    marker: &str,
    tokenizer: &TextTokenizer,
    add_special: bool,
    image_token: u32,
    images: Vec<(ImageEmbedding, u64)>,
) -> Result<MediaPrompt, TokenizerError> {
    let expands = images.iter().any(|(e, _)| e.expansion.is_some());
    if expands || tokenizer.token_text(image_token).as_deref() == Some(marker) {
        let image_text = tokenizer.token_text(image_token).unwrap_or_default();
        let mut expanded = String::with_capacity(text.len());
        for (i, piece) in text.split(marker).enumerate() {
            if i > 0
                && let Some((embedding, _)) = images.get(i - 1)
            {
                match &embedding.expansion {
                    Some(layout) => expanded.push_str(layout),
                    None => expanded.push_str(&image_text.repeat(embedding.len)),
                }
            }
            expanded.push_str(piece);
        }
        let ids = tokenizer.encode(&expanded, add_special)?;
        match place(ids, image_token, &images) {
            Some(made) => return Ok(made),
            None if expands => {
                return Err(TokenizerError::Encode(format!(
                    "the tokenizer does not keep the image token `{image_text}` whole"
                )));
            }
            None => {}
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

/// `ids` with their image tokens given the images' rows in order, as spans of consecutive
/// tokens of one image; `None` when the counts differ.
fn place(ids: Vec<u32>, image_token: u32, images: &[(ImageEmbedding, u64)]) -> Option<MediaPrompt> {
    let total: usize = images.iter().map(|(e, _)| e.len).sum();
    if ids.iter().filter(|&&t| t == image_token).count() != total {
        return None;
    }
    // Each image token's image and row, in order.
    let owners = images.iter().enumerate().flat_map(|(i, (e, _))| (0..e.len).map(move |r| (i, r)));
    let positions = ids.iter().enumerate().filter(|&(_, &t)| t == image_token).map(|(p, _)| p);
    // Runs of (start position, image, first row, length).
    let mut runs: Vec<(usize, usize, usize, usize)> = Vec::new();
    for (p, (i, r)) in positions.zip(owners) {
        match runs.last_mut() {
            Some(run) if run.0 + run.3 == p && run.1 == i => run.3 += 1,
            _ => runs.push((p, i, r, 1)),
        }
    }
    let media = runs
        .into_iter()
        .map(|(start, i, first, len)| {
            let (embedding, key) = &images[i];
            let h = embedding.hidden;
            let rows: Arc<[f32]> = Arc::from(&embedding.rows[first * h..(first + len) * h]);
            // Another run of the same image is other content.
            MediaSpan { start, rows, len, key: key ^ (first as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) }
        })
        .collect();
    Some(MediaPrompt { ids, media })
}
