//! Turning a conversation into prompt text with the right template: one given with the request,
//! else the model's own, else Alpaca (SPEC §5's resolution order, as far as it is built).

use std::sync::Arc;

use super::template::{ALPACA_TEMPLATE, ChatTemplate, TemplateContext, TemplateError};
use crate::tokenizer::TextTokenizer;

/// Where the template of a render came from (shown by `/v1/internal/chat-prompt` and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    Request,
    Model,
    Alpaca,
}

/// Renders conversations for one model.
pub struct ChatRenderer {
    model_template: Option<Arc<ChatTemplate>>,
    alpaca: Arc<ChatTemplate>,
    model_source: Option<String>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRenderer").field("has_model_template", &self.model_template.is_some()).finish()
    }
}

/// One conversation to render.
#[derive(Debug, Default)]
pub struct Conversation<'a> {
    pub messages: &'a [serde_json::Value],
    pub tools: Option<&'a [serde_json::Value]>,
    pub add_generation_prompt: bool,
    /// Jinja from the request (`instruction_template_str` / `chat_template_str`): wins over all.
    pub template_override: Option<&'a str>,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChatRenderer {
    /// Compiles the model's template. A model template that does not compile is logged and
    /// replaced by the fallback rather than making the model unusable.
    pub fn new(tokenizer: &TextTokenizer) -> Result<Self, TemplateError> {
        let model_template = match &tokenizer.chat_template {
            Some(src) => match ChatTemplate::new(src) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    tracing::warn!("the model's chat template does not compile ({e}); using Alpaca");
                    None
                }
            },
            None => None,
        };
        Ok(Self {
            model_template,
            alpaca: Arc::new(ChatTemplate::new(ALPACA_TEMPLATE)?),
            model_source: tokenizer.chat_template.clone(),
            bos_token: tokenizer.special_text(tokenizer.bos),
            eos_token: tokenizer.special_text(tokenizer.eos),
        })
    }

    /// The template a render with `template_override` uses, and where it came from. An override
    /// the request itself brought (`from_request`) renders sandboxed.
    pub fn template(
        &self,
        template_override: Option<&str>,
        from_request: bool,
    ) -> Result<(Arc<ChatTemplate>, TemplateSource), TemplateError> {
        Ok(match template_override {
            Some(src) if from_request => (Arc::new(ChatTemplate::from_request(src)?), TemplateSource::Request),
            Some(src) => (Arc::new(ChatTemplate::new(src)?), TemplateSource::Request),
            None => match &self.model_template {
                Some(t) => (t.clone(), TemplateSource::Model),
                None => (self.alpaca.clone(), TemplateSource::Alpaca),
            },
        })
    }

    /// The model's own template text (tool-format hints are looked up in it).
    pub fn model_template_source(&self) -> Option<&str> {
        self.model_source.as_deref()
    }

    /// Renders `conv`; returns the prompt and where its template came from.
    pub fn render(&self, conv: &Conversation<'_>) -> Result<(String, TemplateSource), TemplateError> {
        let (template, source) = self.template(conv.template_override, true)?;
        Ok((self.render_with(&template, conv)?, source))
    }

    /// Renders `conv` with `template` (from [`Self::template`]; `conv.template_override` is not
    /// looked at again).
    pub fn render_with(&self, template: &ChatTemplate, conv: &Conversation<'_>) -> Result<String, TemplateError> {
        let ctx = TemplateContext {
            messages: conv.messages,
            tools: conv.tools,
            add_generation_prompt: conv.add_generation_prompt,
            bos_token: &self.bos_token,
            eos_token: &self.eos_token,
            extra: conv.extra.clone(),
        };
        template.render(&ctx)
    }
}
