//! Builds a `tokenizers::Tokenizer` from a GGUF file's `tokenizer.ggml.*` metadata: byte-level
//! BPE (`gpt2`: Llama 3, Qwen, SmolLM, …) with the pre-tokenizer named by `tokenizer.ggml.pre`,
//! and SentencePiece BPE (`llama`: Llama 2, Mistral, TinyLlama) with merges recovered from the
//! token scores the way transformers' GGUF converter recovers them.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use crate::gguf::{GgufError, Metadata};

/// Token types GGUF stores per token (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// Texts llama.cpp treats as end-of-generation when they are control tokens.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
];

/// A vocabulary that cannot become a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("{0}")]
    Gguf(#[from] GgufError),
    #[error("the GGUF has no tokenizer (metadata `tokenizer.ggml.tokens` is missing)")]
    Missing,
    #[error("tokenizer model `{0}` is not supported (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("tokenizer metadata is inconsistent: {0}")]
    Inconsistent(String),
    #[error("building the tokenizer failed: {0}")]
    Build(String),
}

/// The tokenizer and the special tokens GGUF metadata declares.
pub struct GgufVocab {
    pub tokenizer: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// Every id that ends a generation (EOS, EOT, EOM and known end-of-turn control tokens).
    pub end_ids: Vec<u32>,
}

/// The `tokenizer.ggml.pre` regexes llama.cpp uses (llama-vocab.cpp), for byte-level BPE.
fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper, VocabError> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let split = |re: &str| -> Result<PreTokenizerWrapper, VocabError> {
        let split = Split::new(SplitPattern::Regex(re.to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| VocabError::Build(e.to_string()))?;
        Ok(PreSequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]).into())
    };
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" => split(LLAMA3),
        "qwen2" | "deepseek-r1-qwen" | "qwen35" | "megrez" => split(QWEN2),
        "tekken" => split(TEKKEN),
        // GPT-2's own regex, with every digit its own piece.
        "smollm" | "starcoder" | "refact" | "codeshell" | "falcon" => {
            Ok(PreSequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into())
        }
        "default" | "gpt2" | "gpt-2" | "" => Ok(ByteLevel::new(false, true, true).into()),
        other => {
            tracing::warn!("GGUF pre-tokenizer `{other}` is unknown to Hearth; using GPT-2's");
            Ok(ByteLevel::new(false, true, true).into())
        }
    }
}

/// Reads `tokenizer.ggml.*` and builds the tokenizer.
pub fn from_metadata(meta: &Metadata) -> Result<GgufVocab, VocabError> {
    let model = meta.opt_str("tokenizer.ggml.model")?.unwrap_or("gpt2").to_owned();
    let tokens = meta.opt_str_array("tokenizer.ggml.tokens")?.ok_or(VocabError::Missing)?;
    let types = meta.opt_i64_array("tokenizer.ggml.token_type")?.unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(VocabError::Inconsistent(format!("{} tokens but {} token types", tokens.len(), types.len())));
    }
    let id_of = |key: &str| -> Result<Option<u32>, VocabError> {
        match meta.opt_u64(key)? {
            Some(id) if (id as usize) < tokens.len() => Ok(Some(id as u32)),
            Some(id) => Err(VocabError::Inconsistent(format!("{key} = {id} is outside the {} tokens", tokens.len()))),
            None => Ok(None),
        }
    };
    let bos = id_of("tokenizer.ggml.bos_token_id")?;
    let eos = id_of("tokenizer.ggml.eos_token_id")?;
    let eot = id_of("tokenizer.ggml.eot_token_id")?;
    let eom = id_of("tokenizer.ggml.eom_token_id")?;

    let vocab: tokenizers::models::bpe::Vocab =
        tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), i as u32)).collect();
    let mut tokenizer = match model.as_str() {
        "gpt2" => {
            let merges = meta
                .opt_str_array("tokenizer.ggml.merges")?
                .ok_or_else(|| VocabError::Inconsistent("byte-level BPE without `tokenizer.ggml.merges`".into()))?;
            let merges = merges
                .iter()
                .map(|m| {
                    m.split_once(' ')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .ok_or_else(|| VocabError::Inconsistent(format!("merge `{m}` is not two tokens")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let bpe =
                BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| VocabError::Build(e.to_string()))?;
            let mut t = Tokenizer::new(bpe);
            let pre = meta.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
            t.with_pre_tokenizer(Some(pre_tokenizer_for(pre)?));
            t.with_decoder(Some(ByteLevelDecoder::new(true, true, true)));
            t
        }
        "llama" => {
            let scores = meta.opt_f32_array("tokenizer.ggml.scores")?.unwrap_or_default();
            let merges = merges_from_scores(&tokens, &scores);
            let unk = id_of("tokenizer.ggml.unknown_token_id")?.map_or("<unk>", |id| tokens[id as usize]);
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .unk_token(unk.to_owned())
                .fuse_unk(true)
                .byte_fallback(true)
                .build()
                .map_err(|e| VocabError::Build(e.to_string()))?;
            let mut t = Tokenizer::new(bpe);
            let add_space_prefix = meta.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
            let replace = Replace::new(" ", "▁").map_err(|e| VocabError::Build(e.to_string()))?;
            let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
            if add_space_prefix {
                normalizers.push(Prepend::new("▁".into()).into());
            }
            normalizers.push(replace.into());
            t.with_normalizer(Some(NormalizerSequence::new(normalizers)));
            let mut decoders: Vec<DecoderWrapper> = vec![
                Replace::new("▁", " ").map_err(|e| VocabError::Build(e.to_string()))?.into(),
                ByteFallback::new().into(),
                Fuse::new().into(),
            ];
            if add_space_prefix {
                decoders.push(Strip::new(' ', 1, 0).into());
            }
            t.with_decoder(Some(DecoderSequence::new(decoders)));
            t
        }
        other => return Err(VocabError::UnsupportedModel(other.to_owned())),
    };

    // Control and user-defined tokens are matched whole in text, before the model splits it.
    let mut end_ids: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
    let mut added = Vec::new();
    for (i, (&text, &ty)) in tokens.iter().zip(types.iter()).enumerate() {
        match ty {
            TYPE_CONTROL => {
                added.push(AddedToken::from(text, true));
                if END_OF_GENERATION_TEXTS.contains(&text) && !end_ids.contains(&(i as u32)) {
                    end_ids.push(i as u32);
                }
            }
            TYPE_USER_DEFINED => added.push(AddedToken::from(text, false).normalized(false)),
            _ => {}
        }
    }
    // Ids come from the vocabulary: `add_special_tokens` only marks them, it never renumbers.
    let specials: Vec<AddedToken> = added.iter().filter(|t| t.special).cloned().collect();
    let plain: Vec<AddedToken> = added.into_iter().filter(|t| !t.special).collect();
    tokenizer.add_special_tokens(&specials);
    tokenizer.add_tokens(&plain);

    Ok(GgufVocab {
        tokenizer,
        bos,
        eos,
        add_bos: meta.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(model == "llama"),
        add_eos: meta.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        end_ids,
    })
}

/// SentencePiece BPE merges recovered from token scores: every split of a token into two
/// tokens is a merge, ranked by the merged token's score (transformers' `generate_merges`).
fn merges_from_scores(tokens: &[&str], scores: &[f32]) -> Vec<(String, String)> {
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(usize, usize, f32)> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let score = scores.get(i).copied().unwrap_or(0.0);
        let mut local: Vec<(usize, usize, f32)> = token
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = token.split_at(at);
                Some((*index.get(l)?, *index.get(r)?, score))
            })
            .collect();
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local);
    }
    // Stable sort: ties keep vocabulary order, as Python's sorted does.
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    merges.into_iter().map(|(l, r, _)| (tokens[l].to_owned(), tokens[r].to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::MetaValue;

    fn strings(v: &[&str]) -> MetaValue {
        MetaValue::Array(v.iter().map(|s| MetaValue::String((*s).to_owned())).collect())
    }

    #[test]
    fn sentencepiece_merges_follow_scores() {
        let tokens = ["<unk>", "▁", "a", "b", "ab", "▁ab"];
        let scores = [0.0, -1.0, -2.0, -3.0, -0.5, -0.1];
        let merges = merges_from_scores(&tokens, &scores);
        assert_eq!(merges[0], ("▁".to_owned(), "ab".to_owned()));
        assert_eq!(merges[1], ("a".to_owned(), "b".to_owned()));
    }

    #[test]
    fn a_small_sentencepiece_vocab_round_trips() {
        let mut meta = Metadata::default();
        let tokens = ["<unk>", "<s>", "</s>", "▁", "h", "i", "hi", "▁hi", "<0x21>"];
        meta.insert("tokenizer.ggml.model".into(), MetaValue::String("llama".into()));
        meta.insert("tokenizer.ggml.tokens".into(), strings(&tokens));
        meta.insert(
            "tokenizer.ggml.scores".into(),
            MetaValue::Array([0., 0., 0., -5., -6., -7., -1., -0.5, 0.].iter().map(|&s| MetaValue::F32(s)).collect()),
        );
        meta.insert(
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array([2, 3, 3, 1, 1, 1, 1, 1, 6].iter().map(|&t| MetaValue::I32(t)).collect()),
        );
        meta.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1));
        meta.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2));
        let vocab = from_metadata(&meta).unwrap();
        assert!(vocab.add_bos, "SentencePiece models add BOS by default");
        let enc = vocab.tokenizer.encode("hi hi!", false).unwrap();
        assert_eq!(enc.get_ids(), &[7, 7, 8]);
        assert_eq!(vocab.tokenizer.decode(enc.get_ids(), false).unwrap(), "hi hi!");
        assert_eq!(vocab.end_ids, vec![2]);
    }

    #[test]
    fn missing_vocabulary_is_reported() {
        let meta = Metadata::default();
        assert!(matches!(from_metadata(&meta), Err(VocabError::Missing)));
    }
}
