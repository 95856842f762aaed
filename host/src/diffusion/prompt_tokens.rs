//! CLIP's tokenizer for a pipeline's prompts: `tokenizer/tokenizer.json` where the folder has
//! one, else built from `vocab.json` and `merges.txt` (what Stable Diffusion repos ship) as
//! transformers converts a `CLIPTokenizer`. A prompt becomes exactly `model_max_length` ids:
//! start token, the prompt's tokens (cut to fit), end token, padding.

use std::path::Path;

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::DiffusionError;

/// The loaded tokenizer.
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

impl PromptTokenizer {
    /// The tokenizer in `dir` (a pipeline's `tokenizer/`), padding with the end token unless
    /// `tokenizer_config.json` names another.
    pub fn load(dir: &Path) -> Result<Self, DiffusionError> {
        Self::load_padded(dir, "<|endoftext|>")
    }

    /// The tokenizer in `dir`, padding with `default_pad` unless `tokenizer_config.json` names
    /// another (SD 2.x's OpenCLIP pads with `!`, id 0, where SD 1.x pads with the end token).
    pub fn load_padded(dir: &Path, default_pad: &str) -> Result<Self, DiffusionError> {
        let read_json = |name: &str| -> Result<Option<Value>, DiffusionError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| DiffusionError::Io(format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| DiffusionError::Config(format!("{}: {e}", path.display())))
        };
        let config = read_json("tokenizer_config.json")?.unwrap_or_default();
        let token_of = |key: &str, default: &str| -> String {
            match config.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or(default).to_owned(),
                _ => default.to_owned(),
            }
        };
        let tokenizer = if dir.join("tokenizer.json").exists() {
            Tokenizer::from_file(dir.join("tokenizer.json"))
                .map_err(|e| DiffusionError::Config(format!("{}: {e}", dir.join("tokenizer.json").display())))?
        } else {
            let vocab = read_json("vocab.json")?
                .ok_or_else(|| DiffusionError::Missing(format!("{}: tokenizer.json or vocab.json", dir.display())))?;
            let merges_path = dir.join("merges.txt");
            let merges = std::fs::read_to_string(&merges_path)
                .map_err(|e| DiffusionError::Io(format!("{}: {e}", merges_path.display())))?;
            clip_tokenizer(vocab, &merges, &token_of("unk_token", "<|endoftext|>"))?
        };
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| DiffusionError::Config(format!("the tokenizer has no `{token}`")))
        };
        let bos = id(&token_of("bos_token", "<|startoftext|>"))?;
        let eos = id(&token_of("eos_token", "<|endoftext|>"))?;
        let pad = id(&token_of("pad_token", default_pad))?;
        let max_len =
            config.get("model_max_length").and_then(Value::as_u64).filter(|&n| (3..=4096).contains(&n)).unwrap_or(77);
        Ok(Self { tokenizer, bos, eos, pad, max_len: max_len as usize })
    }

    /// The ids of `text`, padded to the full length (the text encoder always sees all of them).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DiffusionError> {
        let encoding =
            self.tokenizer.encode(text, false).map_err(|e| DiffusionError::Config(format!("tokenizing: {e}")))?;
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos);
        ids.extend(encoding.get_ids().iter().take(self.max_len - 2));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }
}

/// transformers' conversion of a `CLIPTokenizer` (its `CLIPConverter`), as a `tokenizer.json`.
fn clip_tokenizer(vocab: Value, merges: &str, unk: &str) -> Result<Tokenizer, DiffusionError> {
    let merges: Vec<&str> = merges.lines().filter(|l| !l.starts_with("#version") && !l.trim().is_empty()).collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex":
                "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    spec.to_string().parse::<Tokenizer>().map_err(|e| DiffusionError::Config(format!("the CLIP vocabulary: {e}")))
}
