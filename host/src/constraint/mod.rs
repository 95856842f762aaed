//! Constrained decoding: a grammar (llguidance's Lark syntax, with `%json { schema }`, a GBNF
//! grammar by way of [`gbnf`], or a JSON schema alone) turned into a token mask at every step, so the output is forced into a
//! tool call's format with arguments that follow the tool's schema, or into JSON that follows a
//! `response_format`'s schema. llguidance does the grammar and mask work; this
//! module connects it to Hearth's tokenizer and sampler.

pub mod gbnf;
pub mod limits;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

use crate::tokenizer::TextTokenizer;

/// Why a grammar cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConstraintError {
    #[error("the tokenizer cannot be used for constrained decoding: {0}")]
    Tokenizer(String),
    #[error("invalid grammar: {0}")]
    Grammar(String),
    #[error("the grammar is too large: {0}")]
    TooLarge(#[from] limits::TooLarge),
}

/// Why a sequence's grammar failed while it generated.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodingError {
    #[error("the grammar matcher failed: {0}")]
    Matcher(String),
    /// Every token is masked: the grammar cannot go on (nor end) here.
    #[error("the grammar allows no token")]
    NoToken,
}

/// The model's vocabulary as llguidance sees it: each token's bytes in a trie, and the model's
/// own tokenizer for the grammar's literal strings.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Arc<TextTokenizer>,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        // Greedy trie tokenization is llguidance's own fallback; the real tokenizer gives the
        // tokens the model expects.
        match std::str::from_utf8(s) {
            Ok(text) => self.tokenizer.encode(text, false).unwrap_or_else(|_| self.trie.greedy_tokenize(s)),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// Compiles grammars for one model's vocabulary (built once per model, on first use).
pub struct GrammarCompiler {
    factory: ParserFactory,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrammarCompiler")
    }
}

impl GrammarCompiler {
    /// Reads every token's bytes from the tokenizer.
    pub fn new(tokenizer: Arc<TextTokenizer>) -> Result<Self, ConstraintError> {
        let json = tokenizer.inner().to_string(false).map_err(|e| ConstraintError::Tokenizer(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| ConstraintError::Tokenizer(e.to_string()))?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&value)
            .map_err(|e| ConstraintError::Tokenizer(format!("{e:#}")))?;
        // Added tokens past the model's embedding are never produced: the masks cover the ids the
        // model has logits for.
        words.truncate(tokenizer.vocab_size());
        let eos = tokenizer.eos.or_else(|| tokenizer.end_ids.first().copied()).unwrap_or(0);
        let info = TokRxInfo::new(words.len() as u32, eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(Vocabulary { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| ConstraintError::Tokenizer(format!("{e:#}")))?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// Compiles a Lark grammar into a fresh constraint. The grammar is Hearth's own (tool
    /// calls, built from a request's schemas, which are checked here too).
    pub fn compile(&self, lark: &str) -> Result<Constraint, ConstraintError> {
        self.start(TopLevelGrammar::from_lark(lark.to_owned()))
    }

    /// Compiles a GBNF grammar (textgen's `grammar_string`) into a fresh constraint. Grammars
    /// whose rewrite would exceed [`limits`] are refused before they are parsed.
    pub fn compile_gbnf(&self, gbnf: &str) -> Result<Constraint, ConstraintError> {
        limits::check_gbnf(gbnf)?;
        let lark = limits::on_compile_stack(|| gbnf::to_lark(gbnf))
            .map_err(ConstraintError::Grammar)?
            .map_err(|e| ConstraintError::Grammar(e.to_string()))?;
        self.compile(&lark)
    }

    /// A constraint whose output is one JSON value valid under `schema` (llguidance's JSON
    /// schema support: types, properties, required, enums, lengths, bounds, `$ref`s…).
    pub fn compile_json_schema(&self, schema: &serde_json::Value) -> Result<Constraint, ConstraintError> {
        limits::check_schema(schema)?;
        self.start(TopLevelGrammar::from_json_schema(schema.clone()))
    }

    /// Builds the parser on the deep compile stack: llguidance recurses through nested rules and
    /// schema references.
    fn start(&self, grammar: TopLevelGrammar) -> Result<Constraint, ConstraintError> {
        let parser = limits::on_compile_stack(|| self.factory.create_parser(grammar).map_err(|e| format!("{e:#}")))
            .and_then(|built| built)
            .map_err(ConstraintError::Grammar)?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::Grammar(e));
        }
        Ok(Constraint { matcher })
    }
}

/// The grammar state of one sequence.
pub struct Constraint {
    matcher: Matcher,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}

impl Clone for Constraint {
    /// An independent copy (each choice of a request walks the grammar on its own).
    fn clone(&self) -> Self {
        Self { matcher: self.matcher.deep_clone() }
    }
}

impl Constraint {
    /// Sets the logit of every token the grammar does not allow next to `-inf`. When the grammar
    /// may end here, every id of `end_ids` stays allowed. A mask that leaves nothing is an
    /// error: sampling would have no token to choose.
    pub fn mask(&mut self, logits: &mut [f32], end_ids: &[u32]) -> Result<(), DecodingError> {
        let allowed = self.matcher.compute_mask().map_err(|e| DecodingError::Matcher(format!("{e:#}")))?;
        let may_end = self.matcher.is_accepting().unwrap_or(false);
        for (id, logit) in logits.iter_mut().enumerate() {
            let id = id as u32;
            let ok =
                if end_ids.contains(&id) { may_end } else { (id as usize) < allowed.len() && allowed.is_allowed(id) };
            if !ok {
                *logit = f32::NEG_INFINITY;
            }
        }
        if logits.iter().all(|l| *l == f32::NEG_INFINITY) {
            return Err(DecodingError::NoToken);
        }
        Ok(())
    }

    /// Advances the grammar by the chosen token.
    pub fn accept(&mut self, id: u32) -> Result<(), DecodingError> {
        self.matcher.consume_token(id).map_err(|e| DecodingError::Matcher(format!("{e:#}")))
    }

    /// Whether the grammar is complete and allows nothing more.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}
