//! From generated token ids to text deltas a client can show: whole UTF-8 characters only
//! (tokenizers' `DecodeStream` holds back partial byte sequences), with stop strings trimmed
//! across token boundaries (a [`StopMatcher`] holds back possible prefixes).

use std::sync::Arc;

use tokenizers::tokenizer::step_decode_stream;

use super::stop::{StopMatcher, StopOutcome};
use crate::tokenizer::{TextTokenizer, TokenizerError};

/// What one token adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Text to send (possibly empty: held back for now).
    Text(String),
    /// A stop string matched: send this last text and end the generation.
    Stop(String),
}

/// The state of tokenizers' `DecodeStream`, owned so a decoder can live in a `'static` stream.
#[derive(Debug, Default)]
struct StreamState {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

/// The decoder of one generated sequence.
pub struct IncrementalDecoder {
    tokenizer: Arc<TextTokenizer>,
    stream: StreamState,
    stops: StopMatcher,
    /// Every id pushed, to recover when the stream cannot continue.
    ids: Vec<u32>,
    /// Bytes of text already released (for recovery).
    emitted: usize,
    skip_special: bool,
    stopped: bool,
}

impl IncrementalDecoder {
    pub fn new(tokenizer: Arc<TextTokenizer>, stops: Vec<String>, skip_special: bool) -> Self {
        Self {
            tokenizer,
            stream: StreamState::default(),
            stops: StopMatcher::new(stops),
            ids: Vec::new(),
            emitted: 0,
            skip_special,
            stopped: false,
        }
    }

    /// Adds one generated token.
    pub fn push(&mut self, id: u32) -> Result<Delta, TokenizerError> {
        if self.stopped {
            return Ok(Delta::Stop(String::new()));
        }
        self.ids.push(id);
        let s = &mut self.stream;
        let stepped = step_decode_stream(
            self.tokenizer.inner(),
            vec![id],
            self.skip_special,
            &mut s.ids,
            &mut s.prefix,
            &mut s.prefix_index,
        );
        let piece = match stepped {
            Ok(piece) => piece.unwrap_or_default(),
            // The stream can refuse a prefix that a later token rewrites (rare decoders); fall back
            // to decoding everything and releasing what is new.
            Err(_) => {
                let full = self.tokenizer.decode(&self.ids, self.skip_special)?;
                let safe_end = if full.ends_with('\u{FFFD}') { full.len() - '\u{FFFD}'.len_utf8() } else { full.len() };
                let new = full.get(self.emitted.min(safe_end)..safe_end).unwrap_or_default().to_owned();
                self.stream = StreamState::default();
                new
            }
        };
        self.emitted += piece.len();
        Ok(self.apply_stops(&piece))
    }

    fn apply_stops(&mut self, piece: &str) -> Delta {
        match self.stops.push(piece) {
            StopOutcome::Continue(text) => Delta::Text(text),
            StopOutcome::Stopped(text) => {
                self.stopped = true;
                Delta::Stop(text)
            }
        }
    }

    /// Ends the sequence: returns text still held back (a possible stop prefix that never
    /// completed). Incomplete UTF-8 at the very end is dropped, as a client could not show it.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        self.stops.flush()
    }

    /// Whether a stop string ended the text.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::test_support::byte_tokenizer;

    #[test]
    fn multibyte_characters_are_released_whole() {
        let tok = byte_tokenizer();
        let ids = tok.encode("é!", false).unwrap();
        assert_eq!(ids.len(), 3, "é is two byte tokens");
        let mut dec = IncrementalDecoder::new(tok, vec![], true);
        assert_eq!(dec.push(ids[0]).unwrap(), Delta::Text(String::new()));
        assert_eq!(dec.push(ids[1]).unwrap(), Delta::Text("é".into()));
        assert_eq!(dec.push(ids[2]).unwrap(), Delta::Text("!".into()));
    }

    #[test]
    fn a_stop_string_spanning_tokens_is_trimmed() {
        let tok = byte_tokenizer();
        let ids = tok.encode("ab##cd", false).unwrap();
        let mut dec = IncrementalDecoder::new(tok, vec!["##".into()], true);
        let mut out = String::new();
        for id in ids {
            match dec.push(id).unwrap() {
                Delta::Text(t) => out.push_str(&t),
                Delta::Stop(t) => {
                    out.push_str(&t);
                    break;
                }
            }
        }
        assert_eq!(out, "ab");
        assert!(dec.stopped());
    }
}
