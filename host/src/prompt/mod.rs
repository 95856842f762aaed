//! Everything between the API's messages and the model's token ids: the tokenizer (from GGUF
//! metadata or `tokenizer.json`), chat templates, and stop-string matching on generated text.

pub mod chat;
mod gguf_vocab;
pub mod incremental;
pub mod stop;
pub mod template;
pub mod tokenizer;

pub use gguf_vocab::VocabError;
pub use stop::{StopMatcher, StopOutcome};
pub use template::{ChatTemplate, TemplateContext, TemplateError};
pub use tokenizer::{TextTokenizer, TokenizerError};
