//! Media in a prompt: runs of placeholder tokens whose input rows are given (an image's
//! embeddings from a vision encoder) instead of looked up in the token embedding. The decoder
//! takes a placeholder position's row from its span; the KV cache keys such positions by the
//! media's content, so a cached block is reused only for the same image at the same place.

use std::borrow::Cow;
use std::sync::Arc;

/// Rows standing in for `len` prompt positions from `start`.
#[derive(Debug, Clone)]
pub struct MediaSpan {
    /// The first position, counted from the prompt's start.
    pub start: usize,
    /// `[len, hidden]` row-major.
    pub rows: Arc<[f32]>,
    pub len: usize,
    /// What the media holds (a hash of its pixels): the prefix cache's key for these positions.
    pub key: u64,
}

impl MediaSpan {
    fn covers(&self, position: usize) -> bool {
        (self.start..self.start + self.len).contains(&position)
    }
}

/// The given row for `position`, if a span covers it.
pub fn row_at(media: &[MediaSpan], position: usize, hidden: usize) -> Option<&[f32]> {
    let span = media.iter().find(|s| s.covers(position))?;
    let at = (position - span.start) * hidden;
    span.rows.get(at..at + hidden)
}

/// Whether any of `len` positions from `start` has a given row.
pub fn touches(media: &[MediaSpan], start: usize, len: usize) -> bool {
    media.iter().any(|s| s.start < start + len && start < s.start + s.len)
}

/// The ids the prefix cache keys `tokens` (at positions from `start`) by: a placeholder's id is
/// replaced by one derived from its media's key and its place in the media. Those ids have the
/// top bit set, which no vocabulary reaches, so they never equal a text token.
pub fn cache_keys<'t>(tokens: &'t [u32], start: usize, media: &[MediaSpan]) -> Cow<'t, [u32]> {
    if !touches(media, start, tokens.len()) {
        return Cow::Borrowed(tokens);
    }
    let keyed = tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| match media.iter().find(|s| s.covers(start + i)) {
            Some(span) => position_key(span.key, start + i - span.start),
            None => t,
        })
        .collect();
    Cow::Owned(keyed)
}

/// A 31-bit mix (splitmix64's finaliser) of a media key and an offset, with the top bit set.
fn position_key(key: u64, offset: usize) -> u32 {
    let mut z = key ^ (offset as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    0x8000_0000 | (z as u32 & 0x7fff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: usize, len: usize, key: u64) -> MediaSpan {
        let rows: Vec<f32> = (0..len * 2).map(|v| v as f32).collect();
        MediaSpan { start, rows: rows.into(), len, key }
    }

    #[test]
    fn rows_are_found_by_position() {
        let media = [span(3, 2, 1)];
        assert_eq!(row_at(&media, 2, 2), None);
        assert_eq!(row_at(&media, 3, 2), Some(&[0.0, 1.0][..]));
        assert_eq!(row_at(&media, 4, 2), Some(&[2.0, 3.0][..]));
        assert_eq!(row_at(&media, 5, 2), None);
        assert!(touches(&media, 0, 4));
        assert!(!touches(&media, 5, 10));
    }

    #[test]
    fn placeholders_are_keyed_by_their_media_and_text_is_left_alone() {
        let tokens = [7, 9, 9, 8];
        let a = cache_keys(&tokens, 10, &[span(11, 2, 1)]);
        let b = cache_keys(&tokens, 10, &[span(11, 2, 2)]);
        assert_eq!((a[0], a[3]), (7, 8));
        assert!(a[1] >= 0x8000_0000 && a[1] != a[2]);
        assert_ne!(a[1], b[1], "another image, another key");
        assert!(matches!(cache_keys(&tokens, 0, &[span(11, 2, 1)]), Cow::Borrowed(_)));
    }
}
