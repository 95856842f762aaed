//! Log-probabilities in OpenAI's two shapes: chat's `{content: [{token, logprob, bytes,
//! top_logprobs}], refusal}` and legacy completions' `{tokens, token_logprobs, top_logprobs,
//! text_offset}`, from the engine's scored tokens.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::engine::TokenLogprob;
use crate::error::ApiError;
use crate::tokenizer::TextTokenizer;

/// Most alternatives per position a request may ask for (OpenAI's chat limit; its legacy
/// completions allow 5, text-generation-webui and vLLM more).
pub const MAX_TOP_LOGPROBS: i64 = 20;

/// OpenAI's stand-in for the log-probability of a token the model rules out (JSON has no -inf).
const RULED_OUT: f32 = -9999.0;

/// Checks a requested number of alternatives.
pub fn top_count(param: &str, n: i64) -> Result<usize, ApiError> {
    if (0..=MAX_TOP_LOGPROBS).contains(&n) {
        Ok(n as usize)
    } else {
        Err(ApiError::invalid_param(param, format!("`{param}` must be between 0 and {MAX_TOP_LOGPROBS}, got {n}")))
    }
}

/// How each token reads inside a text. Decoding a token alone loses what decoders do at the
/// start of a text (SentencePiece models drop the leading space of "▁word"), so a token is
/// decoded after a fixed plain token and that token's own text is taken off again.
/// Built once per response: finding the anchor encodes and decodes.
pub struct TokenTexts {
    tokenizer: Arc<TextTokenizer>,
    anchor: Option<(u32, String)>,
}

impl TokenTexts {
    pub fn new(tokenizer: Arc<TextTokenizer>) -> Self {
        let anchor = tokenizer
            .encode("a", false)
            .ok()
            .and_then(|ids| ids.last().copied())
            .and_then(|id| tokenizer.decode(&[id], false).ok().map(|text| (id, text)))
            .filter(|(_, text)| !text.is_empty());
        Self { tokenizer, anchor }
    }

    /// The token's text (special tokens spelled out; a piece of a multi-byte character reads as
    /// U+FFFD, as in OpenAI's and vLLM's answers, and `bytes` then are that character's).
    pub fn text(&self, id: u32) -> String {
        if let Some((anchor, anchor_text)) = &self.anchor
            && let Ok(both) = self.tokenizer.decode(&[*anchor, id], false)
            && let Some(rest) = both.strip_prefix(anchor_text.as_str())
        {
            return rest.to_owned();
        }
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }
}

fn finite(logprob: f32) -> f32 {
    if logprob.is_finite() { logprob } else { RULED_OUT }
}

/// Chat's `logprobs` object for some generated tokens.
pub fn chat(entries: &[TokenLogprob], texts: &TokenTexts) -> Value {
    let token = |id: u32, logprob: f32| {
        let text = texts.text(id);
        json!({"token": text, "logprob": finite(logprob), "bytes": text.as_bytes()})
    };
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = token(e.id, e.logprob.unwrap_or(RULED_OUT));
            v["top_logprobs"] = e.top.iter().map(|&(id, lp)| token(id, lp)).collect();
            v
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// The legacy completions' `logprobs` object. `offset` is where the first token's text starts
/// in the choice's text (counted in characters of the token texts, as vLLM counts), and is moved
/// past the last one, so streamed chunks continue it. Each `top_logprobs` entry also holds the
/// chosen token, as OpenAI's does ("up to logprobs+1 elements").
pub fn legacy(entries: &[TokenLogprob], texts: &TokenTexts, offset: &mut usize) -> Value {
    let mut tokens = Vec::with_capacity(entries.len());
    let mut token_logprobs = Vec::with_capacity(entries.len());
    let mut top_logprobs = Vec::with_capacity(entries.len());
    let mut text_offset = Vec::with_capacity(entries.len());
    for e in entries {
        let text = texts.text(e.id);
        text_offset.push(*offset);
        *offset += text.chars().count();
        match e.logprob {
            // The prompt's first token: nothing precedes it, so it has neither.
            None => {
                token_logprobs.push(Value::Null);
                top_logprobs.push(Value::Null);
            }
            Some(lp) => {
                token_logprobs.push(json!(finite(lp)));
                let mut top = Map::new();
                for &(id, alt) in &e.top {
                    top.entry(texts.text(id)).or_insert(json!(finite(alt)));
                }
                top.entry(text.clone()).or_insert(json!(finite(lp)));
                top_logprobs.push(Value::Object(top));
            }
        }
        tokens.push(text);
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": text_offset})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, logprob: Option<f32>, top: &[(u32, f32)]) -> TokenLogprob {
        TokenLogprob { id, logprob, top: top.to_vec() }
    }

    /// A byte-level tokenizer whose tokens are single bytes.
    fn tokenizer() -> Arc<TextTokenizer> {
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let vocab: tokenizers::models::bpe::Vocab =
            ByteLevel::alphabet().into_iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().unwrap();
        let mut t = tokenizers::Tokenizer::new(bpe);
        t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        t.with_decoder(Some(ByteLevel::default()));
        Arc::new(TextTokenizer::from_tokenizer(t))
    }

    fn id(tok: &TextTokenizer, text: &str) -> u32 {
        tok.encode(text, false).unwrap()[0]
    }

    #[test]
    fn legacy_offsets_run_on_and_the_first_prompt_token_is_unscored() {
        let tok = tokenizer();
        let texts = TokenTexts::new(tok.clone());
        let (a, b, c) = (id(&tok, "a"), id(&tok, " "), id(&tok, "c"));
        let mut offset = 0;
        let v = legacy(&[entry(a, None, &[]), entry(b, Some(-0.5), &[(c, -0.2)])], &texts, &mut offset);
        assert_eq!(v["tokens"], json!(["a", " "]));
        assert_eq!(v["token_logprobs"], json!([null, -0.5]));
        assert_eq!(v["top_logprobs"][0], Value::Null);
        // The chosen token is always among the alternatives.
        assert_eq!(v["top_logprobs"][1], json!({"c": -0.2f32, " ": -0.5}));
        assert_eq!(v["text_offset"], json!([0, 1]));
        let next = legacy(&[entry(c, Some(f32::NEG_INFINITY), &[])], &texts, &mut offset);
        assert_eq!(next["text_offset"], json!([2]));
        assert_eq!(next["token_logprobs"], json!([RULED_OUT]));
    }

    #[test]
    fn chat_entries_carry_bytes_and_alternatives() {
        let tok = tokenizer();
        let texts = TokenTexts::new(tok.clone());
        let (a, c) = (id(&tok, "a"), id(&tok, "c"));
        let v = chat(&[entry(c, Some(-1.0), &[(c, -1.0), (a, -1.5)])], &texts);
        let c = &v["content"][0];
        assert_eq!(c["token"], "c");
        assert_eq!(c["bytes"], json!([99]));
        assert_eq!(c["top_logprobs"][1]["token"], "a");
        assert_eq!(v["refusal"], Value::Null);
    }

    #[test]
    fn top_counts_outside_the_range_name_the_field() {
        assert_eq!(top_count("logprobs", 5).unwrap(), 5);
        assert!(top_count("top_logprobs", 21).unwrap_err().to_string().contains("top_logprobs"));
        assert!(top_count("logprobs", -1).is_err());
    }
}
