//! A response's output built from a chat choice's events, and the typed events that stream it:
//! a reasoning item for the thinking, a message for the answer text, a `function_call` item per
//! call, each opened (`output_item.added`, `content_part.added`), grown by deltas and closed
//! (`…done`) in order, every event numbered.

use std::collections::HashMap;

use serde_json::Value;

use super::chat_run::ChatEvent;
use super::logprobs::{self, TokenTexts};
use super::responses_input::new_id;
use super::responses_types::{
    IncompleteDetails, ItemContent, ItemStatus, OutputItem, ResponseEvent, ResponseFailure, ResponseObject,
    ResponseStatus, ResponseUsage, SequencedEvent,
};
use super::types::ApiFinishReason;
use crate::engine::TokenLogprob;
use crate::error::ApiError;
use crate::serving::unix_now;

/// A `LogProb` as the text events carry it (`ResponseLogProb`: no `bytes`).
fn delta_logprob(entry: &Value) -> Value {
    let top = entry.get("top_logprobs").and_then(Value::as_array).map(|top| {
        top.iter().map(|t| serde_json::json!({"token": t["token"], "logprob": t["logprob"]})).collect::<Vec<_>>()
    });
    serde_json::json!({"token": entry["token"], "logprob": entry["logprob"], "top_logprobs": top.unwrap_or_default()})
}

/// Builds one response.
pub struct ResponseWriter {
    pub response: ResponseObject,
    sequence: u64,
    /// The output item still growing.
    open: Option<usize>,
    /// Chat's call index → output index.
    calls: HashMap<u32, usize>,
    /// Set when the answer's tokens are scored (`include: ["message.output_text.logprobs"]`).
    texts: Option<TokenTexts>,
    /// Scores of the tokens whose text comes next.
    scored: Vec<TokenLogprob>,
}

impl ResponseWriter {
    /// `texts` names the tokens when the answer's text carries log-probabilities.
    pub fn new(response: ResponseObject, texts: Option<TokenTexts>) -> Self {
        Self { response, sequence: 0, open: None, calls: HashMap::new(), texts, scored: Vec::new() }
    }

    /// The scores waiting for the text they made, in OpenAI's `LogProb` shape.
    fn take_scores(&mut self) -> Vec<Value> {
        let scored = std::mem::take(&mut self.scored);
        match (&self.texts, scored.is_empty()) {
            (Some(texts), false) => match logprobs::chat(&scored, texts).get_mut("content").map(Value::take) {
                Some(Value::Array(entries)) => entries,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn out(&mut self, event: ResponseEvent) -> SequencedEvent {
        let sequence_number = self.sequence;
        self.sequence += 1;
        SequencedEvent { event, sequence_number }
    }

    fn snapshot(&self) -> Box<ResponseObject> {
        Box::new(self.response.clone())
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<SequencedEvent> {
        let created = ResponseEvent::Created { response: self.snapshot() };
        let created = self.out(created);
        self.response.status = ResponseStatus::InProgress;
        let progress = ResponseEvent::InProgress { response: self.snapshot() };
        vec![created, self.out(progress)]
    }

    /// The events one chat event makes.
    pub fn take(&mut self, event: ChatEvent) -> Vec<SequencedEvent> {
        let mut events = Vec::new();
        match event {
            ChatEvent::Reasoning(text) => self.text(&mut events, text, true),
            ChatEvent::Content(text) => self.text(&mut events, text, false),
            ChatEvent::Call(chunk) => match (chunk.id, chunk.function.name) {
                (Some(call_id), Some(name)) => {
                    self.close(&mut events, ItemStatus::Completed);
                    let item = OutputItem::FunctionCall {
                        id: new_id("fc"),
                        call_id,
                        name,
                        arguments: String::new(),
                        status: ItemStatus::InProgress,
                    };
                    // A call's tokens are not answer text: their scores are not reported.
                    self.scored.clear();
                    let index = self.add(&mut events, item);
                    self.calls.insert(chunk.index, index);
                    self.arguments(&mut events, index, chunk.function.arguments);
                }
                _ => {
                    if let Some(&index) = self.calls.get(&chunk.index) {
                        self.arguments(&mut events, index, chunk.function.arguments);
                    }
                }
            },
            ChatEvent::Logprobs(scored) => {
                if self.texts.is_some() {
                    self.scored.extend(scored);
                }
            }
            // The handler ends the response with the usage it knows.
            ChatEvent::Finished { .. } => {}
        }
        events
    }

    /// Adds `item` to the output, open.
    fn add(&mut self, events: &mut Vec<SequencedEvent>, item: OutputItem) -> usize {
        let index = self.response.output.len();
        self.response.output.push(item.clone());
        self.open = Some(index);
        events.push(self.out(ResponseEvent::OutputItemAdded { output_index: index, item }));
        index
    }

    /// Appends answer or thinking text, opening a message or reasoning item first if needed.
    fn text(&mut self, events: &mut Vec<SequencedEvent>, delta: String, reasoning: bool) {
        let open_fits = self.open.and_then(|i| self.response.output.get(i)).is_some_and(|item| match item {
            OutputItem::Reasoning { .. } => reasoning,
            OutputItem::Message { .. } => !reasoning,
            OutputItem::FunctionCall { .. } => false,
        });
        if !open_fits {
            self.close(events, ItemStatus::Completed);
            let (item, part) = if reasoning {
                let item = OutputItem::Reasoning {
                    id: new_id("rs"),
                    summary: Vec::new(),
                    content: Vec::new(),
                    status: ItemStatus::InProgress,
                };
                (item, ItemContent::ReasoningText { text: String::new() })
            } else {
                let item = OutputItem::Message {
                    id: new_id("msg"),
                    role: "assistant",
                    content: Vec::new(),
                    status: ItemStatus::InProgress,
                };
                (item, ItemContent::output_text(String::new()))
            };
            let index = self.add(events, item);
            let item_id = self.response.output[index].id().to_owned();
            if let OutputItem::Reasoning { content, .. } | OutputItem::Message { content, .. } =
                &mut self.response.output[index]
            {
                content.push(part.clone());
            }
            let added = ResponseEvent::ContentPartAdded { item_id, output_index: index, content_index: 0, part };
            events.push(self.out(added));
        }
        let Some(index) = self.open else { return };
        // Thinking tokens' scores are not reported (OpenAI reports those of `output_text` only).
        let scores = if reasoning {
            self.scored.clear();
            Vec::new()
        } else {
            self.take_scores()
        };
        let item = &mut self.response.output[index];
        let item_id = item.id().to_owned();
        if let OutputItem::Reasoning { content, .. } | OutputItem::Message { content, .. } = item
            && let Some(part) = content.last_mut()
        {
            part.push(&delta);
            part.add_logprobs(&scores);
        }
        let event = if reasoning {
            ResponseEvent::ReasoningTextDelta { item_id, output_index: index, content_index: 0, delta }
        } else {
            ResponseEvent::OutputTextDelta {
                item_id,
                output_index: index,
                content_index: 0,
                delta,
                logprobs: scores.iter().map(delta_logprob).collect(),
            }
        };
        events.push(self.out(event));
    }

    fn arguments(&mut self, events: &mut Vec<SequencedEvent>, index: usize, delta: String) {
        if delta.is_empty() {
            return;
        }
        let Some(OutputItem::FunctionCall { id, arguments, .. }) = self.response.output.get_mut(index) else { return };
        arguments.push_str(&delta);
        let item_id = id.clone();
        events.push(self.out(ResponseEvent::FunctionCallArgumentsDelta { item_id, output_index: index, delta }));
    }

    /// Closes the open item with its `…done` events.
    fn close(&mut self, events: &mut Vec<SequencedEvent>, status: ItemStatus) {
        let Some(index) = self.open.take() else { return };
        let item = &mut self.response.output[index];
        item.set_status(status);
        let item_id = item.id().to_owned();
        match item.clone() {
            OutputItem::Reasoning { content, .. } | OutputItem::Message { content, .. } => {
                for (content_index, part) in content.into_iter().enumerate() {
                    let text = part.text().to_owned();
                    let done = match &part {
                        ItemContent::ReasoningText { .. } => ResponseEvent::ReasoningTextDone {
                            item_id: item_id.clone(),
                            output_index: index,
                            content_index,
                            text,
                        },
                        ItemContent::OutputText { logprobs, .. } => ResponseEvent::OutputTextDone {
                            item_id: item_id.clone(),
                            output_index: index,
                            content_index,
                            text,
                            logprobs: logprobs.iter().map(delta_logprob).collect(),
                        },
                    };
                    events.push(self.out(done));
                    let part_done = ResponseEvent::ContentPartDone {
                        item_id: item_id.clone(),
                        output_index: index,
                        content_index,
                        part,
                    };
                    events.push(self.out(part_done));
                }
            }
            OutputItem::FunctionCall { name, arguments, .. } => {
                let done = ResponseEvent::FunctionCallArgumentsDone { item_id, name, output_index: index, arguments };
                events.push(self.out(done));
            }
        }
        let item = self.response.output[index].clone();
        events.push(self.out(ResponseEvent::OutputItemDone { output_index: index, item }));
    }

    /// The text of the reasoning items (for counting reasoning tokens).
    pub fn reasoning_text(&self) -> String {
        let mut text = String::new();
        for item in &self.response.output {
            if let OutputItem::Reasoning { content, .. } = item {
                content.iter().for_each(|p| text.push_str(p.text()));
            }
        }
        text
    }

    /// Ends the response: `completed`, or `incomplete` when the answer was cut off.
    pub fn finish(&mut self, reason: ApiFinishReason, usage: ResponseUsage) -> Vec<SequencedEvent> {
        let cut = reason == ApiFinishReason::Length;
        let mut events = Vec::new();
        self.close(&mut events, if cut { ItemStatus::Incomplete } else { ItemStatus::Completed });
        self.response.usage = Some(usage);
        let response = if cut {
            self.response.status = ResponseStatus::Incomplete;
            self.response.incomplete_details = Some(IncompleteDetails { reason: "max_output_tokens" });
            ResponseEvent::Incomplete { response: self.snapshot() }
        } else {
            self.response.status = ResponseStatus::Completed;
            self.response.completed_at = Some(unix_now());
            ResponseEvent::Completed { response: self.snapshot() }
        };
        events.push(self.out(response));
        events
    }

    /// Ends the response as failed: an `error` event, then `response.failed`.
    pub fn fail(&mut self, err: &ApiError) -> Vec<SequencedEvent> {
        let mut events = Vec::new();
        self.close(&mut events, ItemStatus::Incomplete);
        self.response.status = ResponseStatus::Failed;
        self.response.error = Some(ResponseFailure { code: "server_error", message: err.message.clone() });
        let error = ResponseEvent::Error {
            code: err.code.map(str::to_owned),
            message: err.message.clone(),
            param: err.param.clone(),
        };
        events.push(self.out(error));
        let failed = ResponseEvent::Failed { response: self.snapshot() };
        events.push(self.out(failed));
        events
    }

    /// Ends the response as cancelled (no event: nobody is listening, or the stream just ends).
    pub fn cancel(&mut self) {
        let mut unused = Vec::new();
        self.close(&mut unused, ItemStatus::Incomplete);
        self.response.status = ResponseStatus::Cancelled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::types::{FunctionChunk, ToolCallChunk};

    fn writer() -> ResponseWriter {
        ResponseWriter::new(
            ResponseObject {
                id: "resp_1".into(),
                object: "response",
                created_at: 0,
                status: ResponseStatus::Queued,
                completed_at: None,
                background: false,
                error: None,
                incomplete_details: None,
                instructions: None,
                max_output_tokens: None,
                model: "m".into(),
                output: Vec::new(),
                parallel_tool_calls: true,
                previous_response_id: None,
                reasoning: serde_json::json!({"effort": null, "summary": null}),
                store: true,
                temperature: None,
                text: serde_json::json!({"format": {"type": "text"}}),
                tool_choice: serde_json::json!("auto"),
                tools: Vec::new(),
                top_p: None,
                truncation: "disabled",
                usage: None,
                user: None,
                metadata: Default::default(),
                top_logprobs: None,
            },
            None,
        )
    }

    fn usage() -> ResponseUsage {
        use super::super::responses_types::{InputTokensDetails, OutputTokensDetails};
        ResponseUsage {
            input_tokens: 3,
            input_tokens_details: InputTokensDetails { cached_tokens: 0 },
            output_tokens: 4,
            output_tokens_details: OutputTokensDetails { reasoning_tokens: 1 },
            total_tokens: 7,
        }
    }

    fn names(events: &[SequencedEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.event.name()).collect()
    }

    #[test]
    fn thinking_text_and_calls_stream_as_items_in_order() {
        let mut w = writer();
        let mut events = w.start();
        for ev in [
            ChatEvent::Reasoning("Let me".into()),
            ChatEvent::Reasoning(" think".into()),
            ChatEvent::Content("Calling".into()),
            ChatEvent::Call(ToolCallChunk {
                index: 0,
                id: Some("call_1".into()),
                kind: Some("function"),
                function: FunctionChunk { name: Some("f".into()), arguments: "{\"a\":".into() },
            }),
            ChatEvent::Call(ToolCallChunk {
                index: 0,
                id: None,
                kind: None,
                function: FunctionChunk { name: None, arguments: "1}".into() },
            }),
        ] {
            events.extend(w.take(ev));
        }
        events.extend(w.finish(ApiFinishReason::ToolCalls, usage()));
        assert_eq!(
            names(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert!(events.iter().enumerate().all(|(i, e)| e.sequence_number == i as u64));
        let out = &w.response.output;
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], OutputItem::Reasoning { content, .. } if content[0].text() == "Let me think"));
        assert!(
            matches!(&out[2], OutputItem::FunctionCall { arguments, status: ItemStatus::Completed, .. } if arguments == "{\"a\":1}")
        );
        assert_eq!(w.response.status, ResponseStatus::Completed);
        assert_eq!(w.reasoning_text(), "Let me think");
    }

    #[test]
    fn a_cut_answer_is_incomplete_and_a_failure_says_why() {
        let mut w = writer();
        w.start();
        w.take(ChatEvent::Content("Hello".into()));
        let events = w.finish(ApiFinishReason::Length, usage());
        assert_eq!(events.last().unwrap().event.name(), "response.incomplete");
        assert_eq!(w.response.status, ResponseStatus::Incomplete);
        assert!(matches!(&w.response.output[0], OutputItem::Message { status: ItemStatus::Incomplete, .. }));

        let mut w = writer();
        w.start();
        let events = w.fail(&ApiError::internal("boom"));
        assert_eq!(names(&events), ["error", "response.failed"]);
        assert_eq!(w.response.error.as_ref().unwrap().message, "boom");
    }
}
