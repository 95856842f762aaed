//! A generation's events as text: the engine's token events through the incremental decoder
//! (whole characters, stop strings trimmed; a matched stop string cancels the rest at once).
//! The one loop over [`TokenEvent`]s that the API's choices, the plugins' `generate` and the CLI
//! all stand on, async or blocking.

use std::sync::Arc;

use crate::engine::{CachedTokens, Canceller, FinishReason, GenerationStream, TokenEvent, TokenLogprob};
use crate::plugins::PluginError;
use crate::prompt::incremental::{Delta, IncrementalDecoder};
use crate::tokenizer::{TextTokenizer, TokenizerError};

/// What a generation produces next.
#[derive(Debug, Clone, PartialEq)]
pub enum TextEvent {
    /// A generated token and the text it completes: possibly empty (half a character, or text
    /// held back while it may still become a stop string).
    Token { id: u32, logprob: f32, top: Vec<(u32, f32)>, text: String },
    /// Every prompt token scored by what precedes it (only when the request asked).
    PromptLogprobs(Vec<TokenLogprob>),
    /// The end: the text held back until now, and why. Nothing follows.
    Finished { text: String, reason: FinishReason },
}

/// Why a generation ended without finishing.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("generation failed: {0}")]
    Failed(String),
    /// A sampler plugin failed and its settings say to fail the request.
    #[error("{0}")]
    Plugin(PluginError),
    #[error("the generation engine stopped")]
    EngineStopped,
    #[error("{0}")]
    Decode(#[from] TokenizerError),
}

/// One generation's stream of [`TextEvent`]s.
pub struct DecodedStream {
    /// `None` once a stop string matched: dropping the stream cancels the generation.
    stream: Option<GenerationStream>,
    decoder: IncrementalDecoder,
    cached_tokens: CachedTokens,
    canceller: Canceller,
    /// A stop string's end, returned by the call after its token's.
    stopped: bool,
    finished: bool,
}

impl DecodedStream {
    pub fn new(
        stream: GenerationStream,
        tokenizer: Arc<TextTokenizer>,
        stops: Vec<String>,
        skip_special: bool,
    ) -> Self {
        Self {
            cached_tokens: stream.cached_tokens(),
            canceller: stream.canceller(),
            stream: Some(stream),
            decoder: IncrementalDecoder::new(tokenizer, stops, skip_special),
            stopped: false,
            finished: false,
        }
    }

    /// How many prompt tokens came from the KV cache (known once the sequence has started).
    pub fn cached_tokens(&self) -> CachedTokens {
        self.cached_tokens.clone()
    }

    /// Cancels the generation from elsewhere (a deadline).
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// The next event; `Ok(None)` after [`TextEvent::Finished`] or an error.
    pub async fn next(&mut self) -> Result<Option<TextEvent>, StreamError> {
        loop {
            if let Some(done) = self.ended() {
                return Ok(done);
            }
            let event = match self.stream.as_mut() {
                Some(s) => s.next().await,
                None => None,
            };
            if let Some(out) = self.turn(event).transpose() {
                return out.map(Some);
            }
        }
    }

    /// [`Self::next`] for a thread that may block (a plugin's, the CLI's).
    pub fn blocking_next(&mut self) -> Result<Option<TextEvent>, StreamError> {
        loop {
            if let Some(done) = self.ended() {
                return Ok(done);
            }
            let event = self.stream.as_mut().and_then(GenerationStream::blocking_next);
            if let Some(out) = self.turn(event).transpose() {
                return out.map(Some);
            }
        }
    }

    /// `Some` when the stream has nothing more to read: the finish a stop string left, or the end.
    fn ended(&mut self) -> Option<Option<TextEvent>> {
        if self.finished {
            return Some(None);
        }
        if self.stopped {
            self.finished = true;
            return Some(Some(TextEvent::Finished { text: String::new(), reason: FinishReason::Stop }));
        }
        None
    }

    /// One engine event as text: `Ok(None)` for events a generation skips.
    fn turn(&mut self, event: Option<TokenEvent>) -> Result<Option<TextEvent>, StreamError> {
        let end = |this: &mut Self, e: StreamError| {
            this.finished = true;
            Err(e)
        };
        match event {
            Some(TokenEvent::Token { id, logprob, top }) => {
                let text = match self.decoder.push(id) {
                    Ok(Delta::Text(text)) => text,
                    Ok(Delta::Stop(text)) => {
                        // Dropping the stream cancels the rest of the generation at once.
                        self.stream = None;
                        self.stopped = true;
                        text
                    }
                    Err(e) => return end(self, e.into()),
                };
                Ok(Some(TextEvent::Token { id, logprob, top, text }))
            }
            // Only logits queries ask for a distribution; a generation never sees one.
            Some(TokenEvent::Distribution(_)) => Ok(None),
            Some(TokenEvent::PromptLogprobs(scored)) => Ok(Some(TextEvent::PromptLogprobs(scored))),
            Some(TokenEvent::Finished { reason }) => {
                self.finished = true;
                Ok(Some(TextEvent::Finished { text: self.decoder.finish(), reason }))
            }
            Some(TokenEvent::Failed(message)) => end(self, StreamError::Failed(message)),
            Some(TokenEvent::PluginFailed(e)) => end(self, StreamError::Plugin(e)),
            None => end(self, StreamError::EngineStopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::test_support::byte_tokenizer;

    fn token(id: u32) -> TokenEvent {
        TokenEvent::Token { id, logprob: -0.5, top: Vec::new() }
    }

    fn run(events: Vec<TokenEvent>, stops: &[&str]) -> (Vec<TextEvent>, Result<(), StreamError>, Canceller) {
        let stream = GenerationStream::from_events(events);
        let mut decoded =
            DecodedStream::new(stream, byte_tokenizer(), stops.iter().map(|s| s.to_string()).collect(), true);
        let canceller = decoded.canceller();
        let mut out = Vec::new();
        loop {
            match decoded.blocking_next() {
                Ok(Some(event)) => out.push(event),
                Ok(None) => return (out, Ok(()), canceller),
                Err(e) => {
                    assert!(matches!(decoded.blocking_next(), Ok(None)), "nothing follows an error");
                    return (out, Err(e), canceller);
                }
            }
        }
    }

    fn texts(events: &[TextEvent]) -> Vec<&str> {
        events
            .iter()
            .map(|e| match e {
                TextEvent::Token { text, .. } | TextEvent::Finished { text, .. } => text.as_str(),
                TextEvent::PromptLogprobs(_) => "<prompt>",
            })
            .collect()
    }

    #[test]
    fn tokens_become_whole_characters_and_the_finish_keeps_its_reason() {
        let ids = byte_tokenizer().encode("é!", false).unwrap();
        let mut events: Vec<TokenEvent> = ids.iter().map(|&id| token(id)).collect();
        events.insert(0, TokenEvent::Distribution(vec![]));
        events.push(TokenEvent::Finished { reason: FinishReason::Length });
        let (out, end, _) = run(events, &[]);
        assert!(end.is_ok());
        assert_eq!(texts(&out), ["", "é", "!", ""]);
        assert!(matches!(out.last(), Some(TextEvent::Finished { reason: FinishReason::Length, .. })));
    }

    #[test]
    fn a_stop_string_ends_the_stream_and_cancels_the_generation() {
        let ids = byte_tokenizer().encode("ab STOP cd", false).unwrap();
        let events: Vec<TokenEvent> = ids.iter().map(|&id| token(id)).collect();
        let (out, end, canceller) = run(events, &["STOP"]);
        assert!(end.is_ok());
        let text: String = texts(&out).concat();
        assert_eq!(text, "ab ");
        assert!(matches!(out.last(), Some(TextEvent::Finished { reason: FinishReason::Stop, .. })));
        assert!(canceller.is_cancelled(), "the rest of the generation is cancelled");
    }

    #[test]
    fn failures_and_a_stopped_engine_are_errors() {
        let (out, end, _) = run(vec![token(70), TokenEvent::Failed("device lost".into())], &[]);
        assert_eq!(out.len(), 1);
        assert!(matches!(end, Err(StreamError::Failed(m)) if m == "device lost"));
        let (_, end, _) = run(vec![token(70)], &[]);
        assert!(matches!(end, Err(StreamError::EngineStopped)));
    }
}
