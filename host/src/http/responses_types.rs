//! The Responses API's wire types (`/v1/responses`): the create request, the response object
//! with its output items, and the typed events of a streamed response. Input items arrive as
//! JSON and are read by `responses_input`, which names the field when one is wrong.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `POST /v1/responses`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateResponseRequest {
    pub model: Option<String>,
    /// A string (one user message) or a list of input items: messages (`input_text` parts),
    /// `function_call`, `function_call_output` and `reasoning` items.
    #[schema(value_type = Object, required = true)]
    pub input: Option<Value>,
    /// A system message before the conversation; not carried over by `previous_response_id`.
    pub instructions: Option<String>,
    /// Function tools: `{"type": "function", "name", "description", "parameters", "strict"}`.
    pub tools: Option<Vec<Value>>,
    /// `none`, `auto`, `required`, `{"type": "function", "name"}` or `allowed_tools`.
    #[schema(value_type = Object)]
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", …}}`.
    #[schema(value_type = Object)]
    pub text: Option<Value>,
    /// `{"effort": …}`: passed to templates that think, as chat's `reasoning_effort`.
    #[schema(value_type = Object)]
    pub reasoning: Option<Value>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    #[schema(minimum = 1)]
    pub max_output_tokens: Option<i64>,
    /// Up to 16 string values, returned with the response.
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub metadata: Option<Map<String, Value>>,
    /// Keep the response for `GET`, `previous_response_id` and `input_items` (default true).
    pub store: Option<bool>,
    pub previous_response_id: Option<String>,
    pub stream: Option<bool>,
    /// Run after the request returns; `GET` it, or `cancel` it.
    pub background: Option<bool>,
    #[schema(value_type = Option<Vec<String>>)]
    pub include: Option<Vec<Value>>,
    /// `disabled` (default): a conversation longer than the context is a 400; `auto` drops its
    /// oldest items until it fits.
    pub truncation: Option<String>,
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<i64>,
    pub user: Option<String>,
    // Accepted and without effect on a local server (no service tiers, one machine's cache).
    #[schema(value_type = Option<Object>)]
    pub stream_options: Option<Value>,
    pub service_tier: Option<String>,
    pub prompt_cache_key: Option<String>,
    pub prompt_cache_retention: Option<String>,
    pub safety_identifier: Option<String>,
    /// Applies to built-in tools, which Hearth has none of.
    pub max_tool_calls: Option<i64>,
    // OpenAI features Hearth does not have: a non-null value is a 400.
    #[schema(value_type = Option<Object>)]
    pub conversation: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub prompt: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub context_management: Option<Value>,
    /// The textgen sampler fields and chat extras (`mode`, `instruction_template`, …), as in
    /// chat completions.
    #[serde(flatten)]
    #[schema(value_type = crate::http::samplers::SamplerFields)]
    pub extra: Map<String, Value>,
}

/// Where a response is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    Queued,
    InProgress,
    Completed,
    Incomplete,
    Failed,
    Cancelled,
}

/// Where an output item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

/// Why a response failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResponseFailure {
    /// OpenAI's `ResponseErrorCode`: `server_error` for anything Hearth reports.
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncompleteDetails {
    /// `max_output_tokens`: the answer was cut at the token limit or the context's end.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct InputTokensDetails {
    /// Prompt tokens whose keys and values came from the KV cache.
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: usize,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct ResponseUsage {
    pub input_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: usize,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: usize,
}

/// A part of an output item's content.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ItemContent {
    /// Answer text (in a `message`).
    OutputText {
        text: String,
        #[schema(value_type = Vec<Object>)]
        annotations: Vec<Value>,
        #[schema(value_type = Vec<Object>)]
        logprobs: Vec<Value>,
    },
    /// Thinking text (in a `reasoning` item).
    ReasoningText { text: String },
}

impl ItemContent {
    pub fn output_text(text: String) -> Self {
        Self::OutputText { text, annotations: Vec::new(), logprobs: Vec::new() }
    }

    pub fn text(&self) -> &str {
        match self {
            Self::OutputText { text, .. } | Self::ReasoningText { text } => text,
        }
    }

    fn text_mut(&mut self) -> &mut String {
        match self {
            Self::OutputText { text, .. } | Self::ReasoningText { text } => text,
        }
    }

    pub fn push(&mut self, more: &str) {
        self.text_mut().push_str(more);
    }

    /// Adds the scores of the text just pushed (answer text only).
    pub fn add_logprobs(&mut self, scores: &[Value]) {
        if let Self::OutputText { logprobs, .. } = self {
            logprobs.extend_from_slice(scores);
        }
    }
}

/// One item of a response's `output`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The model's thinking; `summary` stays empty (Hearth writes no summaries).
    Reasoning {
        id: String,
        #[schema(value_type = Vec<Object>)]
        summary: Vec<Value>,
        content: Vec<ItemContent>,
        status: ItemStatus,
    },
    /// The answer.
    Message { id: String, role: &'static str, content: Vec<ItemContent>, status: ItemStatus },
    /// A call of one of the request's function tools.
    FunctionCall { id: String, call_id: String, name: String, arguments: String, status: ItemStatus },
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            Self::Reasoning { id, .. } | Self::Message { id, .. } | Self::FunctionCall { id, .. } => id,
        }
    }

    pub fn set_status(&mut self, to: ItemStatus) {
        match self {
            Self::Reasoning { status, .. } | Self::Message { status, .. } | Self::FunctionCall { status, .. } => {
                *status = to
            }
        }
    }
}

/// The response object (`"object": "response"`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResponseObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    pub status: ResponseStatus,
    pub completed_at: Option<u64>,
    pub background: bool,
    pub error: Option<ResponseFailure>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    /// `{"effort", "summary"}`.
    #[schema(value_type = Object)]
    pub reasoning: Value,
    pub store: bool,
    pub temperature: Option<f64>,
    /// `{"format": …}` as the request gave it (`{"type": "text"}` by default).
    #[schema(value_type = Object)]
    pub text: Value,
    #[schema(value_type = Object)]
    pub tool_choice: Value,
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<Value>,
    pub top_p: Option<f64>,
    pub truncation: &'static str,
    /// Set once the response has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub metadata: Map<String, Value>,
    /// Alternatives reported for each answer token (with `include: ["message.output_text.logprobs"]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<i64>,
}

/// One event of a streamed response (`event: <type>` and this as `data`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SequencedEvent {
    #[serde(flatten)]
    pub event: ResponseEvent,
    /// 0, 1, 2, … in the order the events are sent.
    pub sequence_number: u64,
}

/// The events of a streamed response, in OpenAI's names.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type")]
pub enum ResponseEvent {
    #[serde(rename = "response.created")]
    Created { response: Box<ResponseObject> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<ResponseObject> },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { output_index: usize, item: OutputItem },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded { item_id: String, output_index: usize, content_index: usize, part: ItemContent },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        #[schema(value_type = Vec<Object>)]
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        #[schema(value_type = Vec<Object>)]
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta { item_id: String, output_index: usize, content_index: usize, delta: String },
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone { item_id: String, output_index: usize, content_index: usize, text: String },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone { item_id: String, output_index: usize, content_index: usize, part: ItemContent },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta { item_id: String, output_index: usize, delta: String },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone { item_id: String, name: String, output_index: usize, arguments: String },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { output_index: usize, item: OutputItem },
    #[serde(rename = "response.completed")]
    Completed { response: Box<ResponseObject> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<ResponseObject> },
    #[serde(rename = "response.failed")]
    Failed { response: Box<ResponseObject> },
    /// A failure, before `response.failed`.
    #[serde(rename = "error")]
    Error { code: Option<String>, message: String, param: Option<String> },
}

impl ResponseEvent {
    /// The event's `type`, which is also its SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Created { .. } => "response.created",
            Self::InProgress { .. } => "response.in_progress",
            Self::OutputItemAdded { .. } => "response.output_item.added",
            Self::ContentPartAdded { .. } => "response.content_part.added",
            Self::OutputTextDelta { .. } => "response.output_text.delta",
            Self::OutputTextDone { .. } => "response.output_text.done",
            Self::ReasoningTextDelta { .. } => "response.reasoning_text.delta",
            Self::ReasoningTextDone { .. } => "response.reasoning_text.done",
            Self::ContentPartDone { .. } => "response.content_part.done",
            Self::FunctionCallArgumentsDelta { .. } => "response.function_call_arguments.delta",
            Self::FunctionCallArgumentsDone { .. } => "response.function_call_arguments.done",
            Self::OutputItemDone { .. } => "response.output_item.done",
            Self::Completed { .. } => "response.completed",
            Self::Incomplete { .. } => "response.incomplete",
            Self::Failed { .. } => "response.failed",
            Self::Error { .. } => "error",
        }
    }
}

/// `DELETE /v1/responses/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeletedResponse {
    pub id: String,
    /// `response.deleted`.
    pub object: &'static str,
    pub deleted: bool,
}

/// `GET /v1/responses/{id}/input_items`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InputItemList {
    /// `list`.
    pub object: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
    pub first_id: String,
    pub last_id: String,
    pub has_more: bool,
}
