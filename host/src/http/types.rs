//! The OpenAI wire types (and text-generation-webui's extra request fields). They stay inside
//! `http/`: `validate.rs` turns requests into engine types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::engine::FinishReason;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Length, stop and stream fields shared by chat and completions, taken out of a request (the
/// sampler fields are `samplers::SamplerFields`, read from `extra`).
#[derive(Debug, Clone, Default)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub stop: Option<StopField>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub ban_eos_token: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    pub truncation_length: Option<i64>,
    pub auto_max_new_tokens: Option<bool>,
    pub add_bos_token: Option<bool>,
    pub grammar_string: Option<String>,
    pub cache_prompt: Option<bool>,
}

/// Declares a request struct with its own fields, the [`CommonParams`] fields inline (not
/// `#[serde(flatten)]`ed: serde loses field paths inside flattened structs, and errors must name
/// the field) and a catch-all `extra` map, plus `take_common()`.
macro_rules! request_with_common_params {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            pub model: Option<String>,
            #[schema(minimum = 1)]
            pub max_tokens: Option<i64>,
            pub stop: Option<StopField>,
            /// Choices to generate.
            #[schema(minimum = 1, maximum = 16)]
            pub n: Option<i64>,
            pub stream: Option<bool>,
            pub stream_options: Option<StreamOptions>,
            /// textgen: never end on the end-of-sequence token.
            pub ban_eos_token: Option<bool>,
            /// textgen: drop special tokens from the output text (default true).
            pub skip_special_tokens: Option<bool>,
            /// textgen: cap on prompt + answer positions; 0 uses the model's.
            pub truncation_length: Option<i64>,
            /// textgen: fill the rest of the context instead of stopping at `max_tokens`.
            pub auto_max_new_tokens: Option<bool>,
            /// textgen: add the BOS token to a raw prompt (default true).
            pub add_bos_token: Option<bool>,
            /// textgen: a GBNF grammar the output must follow.
            pub grammar_string: Option<String>,
            /// llama.cpp: start from the cached keys and values of an earlier request with the
            /// same prefix (default true).
            pub cache_prompt: Option<bool>,
            /// Everything else: the sampler fields (`samplers::take`), then checked by
            /// `validate` so nothing is silently ignored.
            #[serde(flatten)]
            #[schema(value_type = crate::http::samplers::SamplerFields)]
            pub extra: Map<String, Value>,
        }

        impl $name {
            /// Moves the shared fields out.
            pub fn take_common(&mut self) -> CommonParams {
                CommonParams {
                    model: self.model.take(),
                    max_tokens: self.max_tokens.take(),
                    stop: self.stop.take(),
                    n: self.n.take(),
                    stream: self.stream.take(),
                    stream_options: self.stream_options.take(),
                    ban_eos_token: self.ban_eos_token.take(),
                    skip_special_tokens: self.skip_special_tokens.take(),
                    truncation_length: self.truncation_length.take(),
                    auto_max_new_tokens: self.auto_max_new_tokens.take(),
                    add_bos_token: self.add_bos_token.take(),
                    grammar_string: self.grammar_string.take(),
                    cache_prompt: self.cache_prompt.take(),
                }
            }
        }
    };
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: Value },
    InputAudio { input_audio: Value },
    File { file: Value },
    Refusal { refusal: String },
}

/// A message's content: text or parts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// Reasoning from an earlier turn (some templates render it).
    #[serde(default)]
    pub reasoning_content: Option<String>,
}

request_with_common_params! {
    /// `POST /v1/chat/completions`.
    #[derive(Debug, Clone, Deserialize, ToSchema)]
    pub struct ChatCompletionRequest {
        #[schema(min_items = 1)]
        pub messages: Vec<ChatMessage>,
        #[schema(minimum = 1)]
        pub max_completion_tokens: Option<i64>,
        pub tools: Option<Vec<Value>>,
        pub tool_choice: Option<Value>,
        pub parallel_tool_calls: Option<bool>,
        pub logprobs: Option<bool>,
        #[schema(minimum = 0, maximum = 20)]
        pub top_logprobs: Option<i64>,
        /// Token id (as a string) → a bias from -100 to 100 added to its logit.
        #[schema(value_type = Option<std::collections::HashMap<String, f64>>)]
        pub logit_bias: Option<Map<String, Value>>,
        pub response_format: Option<Value>,
        /// textgen: Jinja instruction template for this request.
        pub instruction_template_str: Option<String>,
        /// textgen: Jinja chat template (chat modes).
        pub chat_template_str: Option<String>,
        /// textgen: `instruct` (default), `chat`, `chat-instruct`.
        #[schema(pattern = "^(instruct|chat|chat-instruct)$")]
        pub mode: Option<String>,
        /// textgen: a template name under `user_data/instruction-templates/`.
        pub instruction_template: Option<String>,
        /// textgen: a character under `user_data/characters/` (chat modes; default "Assistant").
        pub character: Option<String>,
        /// textgen: the user's name (chat modes).
        #[serde(alias = "name1")]
        pub user_name: Option<String>,
        /// textgen: the character's name, over the character file's.
        #[serde(alias = "name2")]
        pub bot_name: Option<String>,
        /// textgen: the character's context, over the file's.
        pub context: Option<String>,
        /// textgen: the character's greeting, over the file's.
        pub greeting: Option<String>,
        /// textgen: the user's description (chat modes).
        pub user_bio: Option<String>,
        /// textgen: chat-instruct's command (`<|character|>`, `<|prompt|>`).
        pub chat_instruct_command: Option<String>,
        /// textgen: continue the last assistant message instead of starting a new one.
        pub continue_: Option<bool>,
        /// textgen: passed to templates that think.
        pub enable_thinking: Option<bool>,
        pub reasoning_effort: Option<String>,
    }
}

/// `prompt`: a string, strings, token ids, or lists of token ids.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

request_with_common_params! {
    /// `POST /v1/internal/logits`: the next token's distribution for a raw prompt.
    #[derive(Debug, Clone, Deserialize, ToSchema)]
    pub struct LogitsRequest {
        pub prompt: String,
        pub use_samplers: Option<bool>,
        /// Tokens to report (default 50).
        #[schema(minimum = 1, maximum = 1000)]
        pub top_logits: Option<i64>,
    }
}

request_with_common_params! {
    /// `POST /v1/completions`.
    #[derive(Debug, Clone, Deserialize, ToSchema)]
    pub struct CompletionRequest {
        /// Required.
        #[schema(required = true)]
        pub prompt: Option<PromptField>,
        pub echo: Option<bool>,
        pub logprobs: Option<i64>,
        /// Token id (as a string) → a bias from -100 to 100 added to its logit.
        #[schema(value_type = Option<std::collections::HashMap<String, f64>>)]
        pub logit_bias: Option<Map<String, Value>>,
        pub suffix: Option<String>,
        /// Only as many as `n`: Hearth does not rerank (another value is a 400).
        pub best_of: Option<i64>,
        /// Images for a vision model: the `image_url` parts of these messages, in order, fill
        /// the prompt's `<__media__>` placeholders (text-generation-webui's and llama.cpp's
        /// convention); their text is not used.
        pub messages: Option<Vec<ChatMessage>>,
    }
}

// ---- responses ----

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// How the prompt's tokens were processed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, ToSchema)]
pub struct PromptTokensDetails {
    /// Tokens whose keys and values came from the KV cache (an earlier request's prefix)
    /// instead of being computed.
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: 0 },
        }
    }

    /// With `cached` of the prompt tokens taken from the cache.
    pub fn cached(mut self, cached: usize) -> Self {
        self.prompt_tokens_details.cached_tokens = cached;
        self
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    /// The model's thinking, apart from its answer (only when it thought).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    pub refusal: Option<String>,
    /// OpenAI's URL citations, which only its web search makes: always empty here, sent because
    /// current clients and conformance suites expect the field.
    pub annotations: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// A whole tool call in a `chat.completion`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments' JSON text (OpenAI sends a string, not an object).
    pub arguments: String,
}

/// A piece of one tool call in a chunk: the first for an index has `id`, `type` and
/// `function.name`; later ones only `function.arguments`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ToolCallChunk {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionChunk,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct FunctionChunk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

/// OpenAI's `finish_reason`: the engine's reasons, and `tool_calls` where a chat answer ended
/// for its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiFinishReason {
    Stop,
    Length,
    ToolCalls,
}

impl From<FinishReason> for ApiFinishReason {
    fn from(reason: FinishReason) -> Self {
        match reason {
            // A stop-generation request ends an answer as a stop string would.
            FinishReason::Stop | FinishReason::Cancelled => ApiFinishReason::Stop,
            FinishReason::Length => ApiFinishReason::Length,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<Value>,
    pub finish_reason: ApiFinishReason,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default, ToSchema)]
pub struct ChunkDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// `null` in the first chunk, as OpenAI streams it (Hearth never refuses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallChunk>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: ChunkDelta,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<ApiFinishReason>,
}

/// One `chat.completion.chunk`. `usage` is omitted unless the client asked for usage, then it
/// is `null` on every chunk but the last.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<ApiFinishReason>,
}

/// A `text_completion` (also each streamed chunk, as OpenAI streams completions).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}
