//! One choice of a completion as the handlers see it: engine token events turned into text
//! deltas (whole characters, stop strings trimmed) and a final finish reason with the count of
//! generated tokens. Streaming and non-streaming responses are both built on it. When the
//! request asked for log-probabilities, each text delta is preceded by the scores of the tokens
//! that made it (and the finish by those of tokens that made no text: a held-back stop string).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::decoded_stream::{DecodedStream, TextEvent};
use crate::engine::{CachedTokens, FinishReason, GenerationStream, TokenLogprob};
use crate::error::ApiError;
use crate::tokenizer::TextTokenizer;

/// What a choice produces next.
#[derive(Debug, Clone, PartialEq)]
pub enum ChoiceEvent {
    /// Text to append (never empty).
    Text(String),
    /// The scores of the tokens whose text comes next (only when asked for; never empty).
    Logprobs(Vec<TokenLogprob>),
    /// The prompt's tokens scored (completions' `echo`); before anything else.
    PromptLogprobs(Vec<TokenLogprob>),
    /// The choice is complete.
    Finished { reason: FinishReason, completion_tokens: usize },
}

/// A whole choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceOutput {
    pub text: String,
    pub reason: FinishReason,
    pub completion_tokens: usize,
    /// Every generated token's score (empty unless asked for).
    pub logprobs: Vec<TokenLogprob>,
    pub prompt_logprobs: Vec<TokenLogprob>,
}

/// A choice being generated.
pub struct ChoiceRun {
    stream: DecodedStream,
    pending: VecDeque<ChoiceEvent>,
    completion_tokens: usize,
    finished: bool,
    keeps_logprobs: bool,
    /// Scores of tokens whose text has not been released yet.
    unreleased: Vec<TokenLogprob>,
}

impl ChoiceRun {
    pub fn new(
        stream: GenerationStream,
        tokenizer: Arc<TextTokenizer>,
        stops: Vec<String>,
        skip_special: bool,
        keeps_logprobs: bool,
    ) -> Self {
        Self {
            stream: DecodedStream::new(stream, tokenizer, stops, skip_special),
            pending: VecDeque::new(),
            completion_tokens: 0,
            finished: false,
            keeps_logprobs,
            unreleased: Vec::new(),
        }
    }

    /// How many prompt tokens came from the KV cache (known once the sequence has started).
    pub fn cached_tokens(&self) -> CachedTokens {
        self.stream.cached_tokens()
    }

    /// The next event; `Ok(None)` after `Finished`.
    pub async fn next(&mut self) -> Result<Option<ChoiceEvent>, ApiError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            if self.finished {
                return Ok(None);
            }
            let event = self.stream.next().await.inspect_err(|_| self.finished = true)?;
            match event {
                Some(TextEvent::Token { id, logprob, top, text }) => {
                    self.completion_tokens += 1;
                    if self.keeps_logprobs {
                        self.unreleased.push(TokenLogprob { id, logprob: Some(logprob), top });
                    }
                    self.push_text(text);
                }
                Some(TextEvent::PromptLogprobs(scored)) => {
                    if self.keeps_logprobs {
                        self.pending.push_back(ChoiceEvent::PromptLogprobs(scored));
                    }
                }
                Some(TextEvent::Finished { text, reason }) => {
                    self.push_text(text);
                    self.finish(reason);
                }
                None => {
                    self.finished = true;
                    return Err(ApiError::internal("generation ended without a finish reason"));
                }
            }
        }
    }

    fn push_text(&mut self, text: String) {
        if !text.is_empty() {
            self.release_logprobs();
            self.pending.push_back(ChoiceEvent::Text(text));
        }
    }

    fn release_logprobs(&mut self) {
        if !self.unreleased.is_empty() {
            self.pending.push_back(ChoiceEvent::Logprobs(std::mem::take(&mut self.unreleased)));
        }
    }

    fn finish(&mut self, reason: FinishReason) {
        self.finished = true;
        self.release_logprobs();
        self.pending.push_back(ChoiceEvent::Finished { reason, completion_tokens: self.completion_tokens });
    }

    /// Runs the choice to its end.
    pub async fn collect(mut self) -> Result<ChoiceOutput, ApiError> {
        let mut text = String::new();
        let mut logprobs = Vec::new();
        let mut prompt_logprobs = Vec::new();
        while let Some(ev) = self.next().await? {
            match ev {
                ChoiceEvent::Text(t) => text.push_str(&t),
                ChoiceEvent::Logprobs(l) => logprobs.extend(l),
                ChoiceEvent::PromptLogprobs(l) => prompt_logprobs = l,
                ChoiceEvent::Finished { reason, completion_tokens } => {
                    return Ok(ChoiceOutput { text, reason, completion_tokens, logprobs, prompt_logprobs });
                }
            }
        }
        Err(ApiError::internal("generation ended without a finish reason"))
    }
}
