//! The model's tokenizer with what the server needs beside it: BOS/EOS handling, the ids that end
//! a generation, the chat template and the special-token texts templates refer to.

mod gguf_vocab;

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::gguf::Metadata;
pub use gguf_vocab::VocabError;

/// A tokenizer that could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{0}")]
    Vocab(#[from] VocabError),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("tokenization failed: {0}")]
    Encode(String),
    #[error("detokenization failed: {0}")]
    Decode(String),
}

/// A token id a request gave that the vocabulary does not have.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("token id {id} is outside the vocabulary (0..{vocab})")]
pub struct OutOfVocabulary {
    /// Where in the request's list it stood.
    pub index: usize,
    pub id: i64,
    pub vocab: usize,
}

/// The tokenizer of a loaded model.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// `inner`'s size with added tokens, read once: the tokenizers crate builds a map of the
    /// whole vocabulary to answer it.
    vocab: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// Ids that end a generation.
    pub end_ids: Vec<u32>,
    /// The model's own chat template (Jinja), if it ships one.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab", &self.vocab_size()).field("bos", &self.bos).finish()
    }
}

impl TextTokenizer {
    /// From GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn from_gguf(meta: &Metadata) -> Result<Self, TokenizerError> {
        let v = gguf_vocab::from_metadata(meta)?;
        let chat_template = meta.opt_str("tokenizer.chat_template").map_err(VocabError::from)?.map(str::to_owned);
        Ok(Self {
            vocab: v.tokenizer.get_vocab_size(true),
            inner: v.tokenizer,
            bos: v.bos,
            eos: v.eos,
            add_bos: v.add_bos,
            add_eos: v.add_eos,
            end_ids: v.end_ids,
            chat_template,
        })
    }

    /// From a Hugging Face folder: `tokenizer.json`, with `tokenizer_config.json`,
    /// `chat_template.jinja`, `generation_config.json` and `config.json` when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(TokenizerError::File {
                path: dir.display().to_string(),
                reason: "has no tokenizer.json (Hearth reads the fast-tokenizer file)".into(),
            });
        }
        let inner = Tokenizer::from_file(&path)
            .map_err(|e| TokenizerError::File { path: path.display().to_string(), reason: e.to_string() })?;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let token_text = |key: &str| -> Option<String> {
            match config.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                _ => None,
            }
        };
        let bos = token_text("bos_token").and_then(|t| inner.token_to_id(&t));
        let eos = token_text("eos_token").and_then(|t| inner.token_to_id(&t));

        let jinja = dir.join("chat_template.jinja");
        let chat_template = if jinja.exists() {
            Some(
                std::fs::read_to_string(&jinja)
                    .map_err(|e| TokenizerError::File { path: jinja.display().to_string(), reason: e.to_string() })?,
            )
        } else {
            match config.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: the "default" one serves chat.
                Some(Value::Array(items)) => items
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .or_else(|| items.first())
                    .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
                _ => None,
            }
        };

        let mut end_ids: Vec<u32> = eos.into_iter().collect();
        for file in ["generation_config.json", "config.json"] {
            match read_json(&dir.join(file))?.get("eos_token_id") {
                Some(Value::Number(n)) => end_ids.extend(n.as_u64().map(|v| v as u32)),
                Some(Value::Array(a)) => end_ids.extend(a.iter().filter_map(Value::as_u64).map(|v| v as u32)),
                _ => {}
            }
        }
        end_ids.sort_unstable();
        end_ids.dedup();

        // tokenizer.json's post-processor already adds BOS/EOS where the model wants them.
        let vocab = inner.get_vocab_size(true);
        Ok(Self { inner, vocab, bos, eos, add_bos: false, add_eos: false, end_ids, chat_template })
    }

    /// Wraps an existing tokenizer (tests and tools).
    pub fn from_tokenizer(inner: Tokenizer) -> Self {
        let vocab = inner.get_vocab_size(true);
        Self {
            inner,
            vocab,
            bos: None,
            eos: None,
            add_bos: false,
            add_eos: false,
            end_ids: vec![],
            chat_template: None,
        }
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Ids this tokenizer hands out: its vocabulary, or the model's embedding rows where the
    /// tokenizer lists added tokens past them (see [`Self::limit_to`]).
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Keeps the ids below `rows` (the model's embedding rows) and returns the ids past them with
    /// their texts. Fine-tunes and conversions often leave a few added tokens in
    /// `tokenizer.json` that the embedding has no row for: the model can never produce them, and
    /// a prompt that holds one is refused by [`Self::encode`]. An error where an id past `rows`
    /// is not an added token: then the tokenizer is another model's.
    pub fn limit_to(&mut self, rows: usize) -> Result<Vec<(u32, String)>, String> {
        if self.vocab <= rows {
            return Ok(Vec::new());
        }
        let added = self.inner.get_added_tokens_decoder();
        let mut past = Vec::with_capacity(self.vocab - rows);
        for id in rows..self.vocab {
            let id = u32::try_from(id).map_err(|_| format!("token id {id} does not fit 32 bits"))?;
            match added.get(&id) {
                Some(token) => past.push((id, token.content.clone())),
                None => return Err(format!("token {id} past the embedding's {rows} rows is not an added token")),
            }
        }
        self.vocab = rows;
        Ok(past)
    }

    /// A request's token ids as the vocabulary's, or the first one it does not have.
    pub fn ids_in_vocabulary(&self, ids: &[i64]) -> Result<Vec<u32>, OutOfVocabulary> {
        ids.iter()
            .enumerate()
            .map(|(index, &id)| in_vocabulary(id, self.vocab).ok_or(OutOfVocabulary { index, id, vocab: self.vocab }))
            .collect()
    }

    /// Tokenizes `text`; special-token texts in it become their ids. `add_special` adds the
    /// BOS/EOS the model wants around a raw prompt (not around a rendered chat template, which
    /// writes its own).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(text, add_special).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        if add_special
            && self.add_bos
            && let Some(bos) = self.bos
        {
            ids.push(bos);
        }
        if let Some(&id) = enc.get_ids().iter().find(|&&id| id as usize >= self.vocab) {
            let token = self.inner.id_to_token(id).unwrap_or_default();
            return Err(TokenizerError::Encode(format!(
                "the text holds the token `{token}` (id {id}), which this model has no embedding for"
            )));
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special
            && self.add_eos
            && let Some(eos) = self.eos
        {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Whether `encode(_, true)` puts BOS first.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special).map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The text of one token as the vocabulary spells it.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The surface text of a special token such as BOS, for templates.
    pub fn special_text(&self, id: Option<u32>) -> String {
        id.and_then(|id| self.inner.id_to_token(id)).unwrap_or_default()
    }
}

fn read_json(path: &Path) -> Result<Value, TokenizerError> {
    if !path.exists() {
        return Ok(Value::Null);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| TokenizerError::File { path: path.display().to_string(), reason: e.to_string() })?;
    serde_json::from_str(&text)
        .map_err(|e| TokenizerError::File { path: path.display().to_string(), reason: e.to_string() })
}

/// `id` as a token id, when it is one of a vocabulary of `vocab`: the one range check for the
/// ids clients send (token lists, `logit_bias` keys, `custom_token_bans`).
pub fn in_vocabulary(id: i64, vocab: usize) -> Option<u32> {
    u32::try_from(id).ok().filter(|&t| (t as usize) < vocab)
}

/// Tokenizers for other modules' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use tokenizers::Tokenizer;
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;

    use super::TextTokenizer;

    /// A byte-level tokenizer whose tokens are single bytes, so a multi-byte character spans
    /// tokens. Ids are the same in every instance (the alphabet in order).
    pub(crate) fn byte_tokenizer() -> Arc<TextTokenizer> {
        let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
        alphabet.sort_unstable();
        let vocab: tokenizers::models::bpe::Vocab =
            alphabet.into_iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().expect("a byte-level BPE");
        let mut t = Tokenizer::new(bpe);
        t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        t.with_decoder(Some(ByteLevel::default()));
        Arc::new(TextTokenizer::from_tokenizer(t))
    }
}
