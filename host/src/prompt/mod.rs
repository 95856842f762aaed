//! Everything between the API's messages and the model's token ids: the tokenizer (from GGUF
//! metadata or `tokenizer.json`), chat templates, characters and chat modes, and stop-string
//! matching on generated text.

pub mod character;
pub mod chat;
pub mod incremental;
pub mod instruction_templates;
pub mod model_config;
pub mod modes;
pub mod reasoning;
pub mod stop;
pub mod template;
mod template_bounds;
pub mod template_sandbox;
pub(crate) mod user_files;

pub use stop::{StopMatcher, StopOutcome};
pub use template::{ChatTemplate, TemplateContext, TemplateError};
