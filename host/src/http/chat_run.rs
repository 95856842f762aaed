//! One chat choice as the chat handler sees it: reasoning, content and tool-call deltas. A
//! thinking block at the start of the answer goes to `reasoning_content` first
//! (`prompt::reasoning`). When the request offers tools, every content delta then goes through
//! the format plugin's stream parser; the host checks what comes back (calls in order, declared
//! names only, arguments that end as JSON) and gives each call its `call_…` id. Without tools
//! the content passes straight through.

use std::sync::Arc;

use super::generation::{ChoiceEvent, ChoiceRun};
use super::tools::ToolSetup;
use super::types::{ApiFinishReason, FunctionCall, FunctionChunk, ToolCall, ToolCallChunk};
use crate::engine::{FinishReason, TokenLogprob};
use crate::error::ApiError;
use crate::plugins::{CallDelta, ParsedText, PluginError, PluginRegistry, ToolParserSession};
use crate::prompt::reasoning::{Piece, ReasoningSplitter};

/// What a chat choice produces next.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// Text for `reasoning_content` (never empty).
    Reasoning(String),
    /// Text for `content` (never empty).
    Content(String),
    /// A piece of a tool call.
    Call(ToolCallChunk),
    /// Scores of the tokens behind the events that follow (only when asked for).
    Logprobs(Vec<TokenLogprob>),
    /// The choice is complete.
    Finished { reason: ApiFinishReason, completion_tokens: usize },
}

/// A whole chat choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatOutput {
    /// The thinking block's text (empty when the model did not think).
    pub reasoning: String,
    pub content: String,
    pub calls: Vec<ToolCall>,
    pub reason: ApiFinishReason,
    pub completion_tokens: usize,
    /// Every generated token's score (empty unless asked for).
    pub logprobs: Vec<TokenLogprob>,
}

/// A call as it has been streamed so far.
struct CallSoFar {
    name: String,
    arguments: String,
}

/// The tool-call side of a choice.
struct ToolParsing {
    plugin_name: Arc<str>,
    /// `None` once the plugin was skipped (`on_error: skip`), or while a blocking call has it.
    session: Option<ToolParserSession>,
    skips_on_error: bool,
    declared: Vec<String>,
    parallel: bool,
    calls: Vec<CallSoFar>,
    /// Indices the plugin reported beyond the first when `parallel_tool_calls` is false.
    dropped: Vec<u32>,
    /// Text fed and content released so far, while no call has started: if the plugin fails
    /// then and may be skipped, the text it still held goes out as content, so nothing is lost.
    fed: String,
    released: String,
}

/// One choice being generated.
pub struct ChatRun {
    run: ChoiceRun,
    reasoning: ReasoningSplitter,
    tools: Option<ToolParsing>,
    pending: std::collections::VecDeque<ChatEvent>,
    done: bool,
}

impl ChatRun {
    /// A choice without tools; `reasoning` splits off its thinking.
    pub fn plain(run: ChoiceRun, reasoning: ReasoningSplitter) -> Self {
        Self { run, reasoning, tools: None, pending: Default::default(), done: false }
    }

    /// A choice whose content `setup`'s parser reads; starts the plugin off the async runtime.
    pub async fn with_tools(
        run: ChoiceRun,
        reasoning: ReasoningSplitter,
        registry: Arc<PluginRegistry>,
        setup: &ToolSetup,
    ) -> Result<Self, ApiError> {
        let plugin = setup.parser.clone();
        let specs = setup.request.specs.clone();
        let started = tokio::task::spawn_blocking(move || registry.start_tool_parser(&plugin, &specs))
            .await
            .map_err(|e| ApiError::internal(format!("the tool parser task failed: {e}")))?;
        let session = match started {
            Ok(s) => Some(s),
            Err(e) if setup.parser.skips_on_error() => {
                tracing::warn!("{e}; skipped for this request");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let tools = ToolParsing {
            plugin_name: setup.parser.name.clone(),
            session,
            skips_on_error: setup.parser.skips_on_error(),
            declared: setup.request.specs.iter().map(|s| s.name.clone()).collect(),
            parallel: setup.request.parses_several(),
            calls: Vec::new(),
            dropped: Vec::new(),
            fed: String::new(),
            released: String::new(),
        };
        Ok(Self { run, reasoning, tools: Some(tools), pending: Default::default(), done: false })
    }

    /// The next event; `Ok(None)` after `Finished`.
    pub async fn next(&mut self) -> Result<Option<ChatEvent>, ApiError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            if self.done {
                return Ok(None);
            }
            match self.run.next().await? {
                Some(ChoiceEvent::Logprobs(scored)) => self.pending.push_back(ChatEvent::Logprobs(scored)),
                // Only completions' `echo` scores the prompt.
                Some(ChoiceEvent::PromptLogprobs(_)) => {}
                Some(ChoiceEvent::Text(text)) => {
                    let pieces = self.reasoning.push(&text);
                    self.take_pieces(pieces).await?;
                }
                Some(ChoiceEvent::Finished { reason, completion_tokens }) => {
                    let pieces = self.reasoning.finish();
                    self.take_pieces(pieces).await?;
                    let mut called = false;
                    if let Some(tools) = self.tools.as_mut() {
                        let events = tools.feed(None).await?;
                        self.pending.extend(events);
                        tools.check_arguments()?;
                        called = !tools.calls.is_empty();
                    }
                    // A cut-off answer says so even when it held a call; otherwise an answer
                    // with calls ends for them.
                    let reason = match reason {
                        FinishReason::Stop if called => ApiFinishReason::ToolCalls,
                        other => other.into(),
                    };
                    self.pending.push_back(ChatEvent::Finished { reason, completion_tokens });
                    self.done = true;
                }
                None => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    /// Reasoning goes out as it is; content goes through the tool parser when there is one.
    async fn take_pieces(&mut self, pieces: Vec<Piece>) -> Result<(), ApiError> {
        for piece in pieces {
            match piece {
                Piece::Reasoning(text) => self.pending.push_back(ChatEvent::Reasoning(text)),
                Piece::Content(text) => match self.tools.as_mut() {
                    None => self.pending.push_back(ChatEvent::Content(text)),
                    Some(tools) => {
                        let events = tools.feed(Some(text)).await?;
                        self.pending.extend(events);
                    }
                },
            }
        }
        Ok(())
    }

    /// Runs the choice to its end.
    pub async fn collect(mut self) -> Result<ChatOutput, ApiError> {
        let mut reasoning = String::new();
        let mut content = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        let mut logprobs = Vec::new();
        while let Some(ev) = self.next().await? {
            match ev {
                ChatEvent::Reasoning(t) => reasoning.push_str(&t),
                ChatEvent::Content(t) => content.push_str(&t),
                ChatEvent::Logprobs(l) => logprobs.extend(l),
                ChatEvent::Call(chunk) => match (chunk.id, chunk.function.name) {
                    (Some(id), Some(name)) => calls.push(ToolCall {
                        id,
                        kind: "function",
                        function: FunctionCall { name, arguments: chunk.function.arguments },
                    }),
                    _ => {
                        if let Some(call) = calls.get_mut(chunk.index as usize) {
                            call.function.arguments.push_str(&chunk.function.arguments);
                        }
                    }
                },
                ChatEvent::Finished { reason, completion_tokens } => {
                    return Ok(ChatOutput { reasoning, content, calls, reason, completion_tokens, logprobs });
                }
            }
        }
        Err(ApiError::internal("generation ended without a finish reason"))
    }
}

impl ToolParsing {
    /// Feeds text (`None`: the end) to the plugin and turns its answer into events.
    async fn feed(&mut self, text: Option<String>) -> Result<Vec<ChatEvent>, ApiError> {
        let Some(mut session) = self.session.take() else {
            // Skipped: the text is plain content.
            return Ok(text.filter(|t| !t.is_empty()).map(ChatEvent::Content).into_iter().collect());
        };
        if self.calls.is_empty()
            && let Some(t) = &text
        {
            self.fed.push_str(t);
        }
        let (session, answer) = tokio::task::spawn_blocking(move || {
            let answer = match &text {
                Some(t) => session.push(t),
                None => session.finish(),
            };
            (session, answer)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the tool parser task failed: {e}")))?;
        match answer {
            Ok(parsed) => {
                self.session = Some(session);
                self.absorb(parsed).map_err(ApiError::from)
            }
            Err(e) if self.skips_on_error && self.calls.is_empty() && self.fed.starts_with(&self.released) => {
                tracing::warn!("{e}; skipped for the rest of this answer");
                let rest = self.fed[self.released.len()..].to_owned();
                Ok(if rest.is_empty() { Vec::new() } else { vec![ChatEvent::Content(rest)] })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks the plugin's deltas and assigns ids.
    fn absorb(&mut self, parsed: ParsedText) -> Result<Vec<ChatEvent>, PluginError> {
        let mut events = Vec::new();
        if !parsed.content.is_empty() {
            if self.calls.is_empty() {
                self.released.push_str(&parsed.content);
            }
            events.push(ChatEvent::Content(parsed.content));
        }
        for delta in parsed.calls {
            if let Some(chunk) = self.take_delta(delta)? {
                events.push(ChatEvent::Call(chunk));
            }
        }
        Ok(events)
    }

    fn take_delta(&mut self, delta: CallDelta) -> Result<Option<ToolCallChunk>, PluginError> {
        let CallDelta { index, id, name, arguments } = delta;
        let arguments = arguments.unwrap_or_default();
        let started = self.calls.len() + self.dropped.len();
        if let Some(name) = name {
            if index as usize != started {
                return Err(self.bad(format!("call {index} started while {started} calls had started")));
            }
            if !self.declared.contains(&name) {
                return Err(self.bad(format!("a call to `{name}`, which the request did not declare")));
            }
            if !self.parallel && !self.calls.is_empty() {
                self.dropped.push(index);
                return Ok(None);
            }
            let id = id.filter(|i| !i.is_empty()).unwrap_or_else(new_call_id);
            self.calls.push(CallSoFar { name: name.clone(), arguments: arguments.clone() });
            return Ok(Some(ToolCallChunk {
                index: self.calls.len() as u32 - 1,
                id: Some(id),
                kind: Some("function"),
                function: FunctionChunk { name: Some(name), arguments },
            }));
        }
        if self.dropped.contains(&index) {
            return Ok(None);
        }
        let Some(call) = self.calls.get_mut(index as usize) else {
            return Err(self.bad(format!("arguments for call {index}, which has not started")));
        };
        if arguments.is_empty() {
            return Ok(None);
        }
        call.arguments.push_str(&arguments);
        Ok(Some(ToolCallChunk { index, id: None, kind: None, function: FunctionChunk { name: None, arguments } }))
    }

    /// Every call's arguments must have ended as a JSON object.
    fn check_arguments(&self) -> Result<(), ApiError> {
        for call in &self.calls {
            let ok = serde_json::from_str::<serde_json::Value>(&call.arguments).is_ok_and(|v| v.is_object());
            if !ok {
                let reason = format!("the arguments of its call to `{}` are not a JSON object", call.name);
                return Err(self.bad(reason).into());
            }
        }
        Ok(())
    }

    fn bad(&self, reason: String) -> PluginError {
        PluginError::BadOutput { plugin: self.plugin_name.to_string(), reason }
    }
}

/// `call_` and 24 hex digits, as OpenAI's ids look.
fn new_call_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &hex[..24])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsing(parallel: bool) -> ToolParsing {
        ToolParsing {
            plugin_name: Arc::from("tool-parser-test"),
            session: None,
            skips_on_error: false,
            declared: vec!["get_weather".into(), "get_time".into()],
            parallel,
            calls: Vec::new(),
            dropped: Vec::new(),
            fed: String::new(),
            released: String::new(),
        }
    }

    fn start(index: u32, name: &str, arguments: &str) -> CallDelta {
        CallDelta { index, id: None, name: Some(name.into()), arguments: Some(arguments.into()) }
    }

    fn more(index: u32, arguments: &str) -> CallDelta {
        CallDelta { index, id: None, name: None, arguments: Some(arguments.into()) }
    }

    /// The chunks a list of deltas streams, as (index, has id, name, arguments).
    fn stream(p: &mut ToolParsing, deltas: Vec<CallDelta>) -> Vec<(u32, bool, Option<String>, String)> {
        deltas
            .into_iter()
            .filter_map(|d| p.take_delta(d).unwrap())
            .map(|c| (c.index, c.id.is_some(), c.function.name, c.function.arguments))
            .collect()
    }

    #[test]
    fn calls_stream_as_openai_chunks_their_first_with_id_and_name() {
        let mut p = parsing(true);
        let chunks = stream(
            &mut p,
            vec![
                start(0, "get_weather", "{\"city\": "),
                more(0, ""),
                more(0, "\"Paris\"}"),
                start(1, "get_time", "{}"),
            ],
        );
        assert_eq!(
            chunks,
            [
                (0, true, Some("get_weather".into()), "{\"city\": ".into()),
                (0, false, None, "\"Paris\"}".into()),
                (1, true, Some("get_time".into()), "{}".into()),
            ]
        );
        assert!(p.check_arguments().is_ok());
        assert_eq!(p.calls[0].arguments, "{\"city\": \"Paris\"}");
    }

    #[test]
    fn without_parallel_calls_only_the_first_streams() {
        let mut p = parsing(false);
        let chunks =
            stream(&mut p, vec![start(0, "get_weather", "{}"), start(1, "get_time", "{"), more(1, "}"), more(0, "")]);
        assert_eq!(chunks, [(0, true, Some("get_weather".into()), "{}".into())]);
        assert_eq!(p.calls.len(), 1);
    }

    #[test]
    fn a_plugins_bad_deltas_are_its_errors() {
        let cases = [
            vec![start(0, "launch_rockets", "{}")],
            vec![start(1, "get_time", "{}")],
            vec![more(0, "{}")],
            vec![start(0, "get_time", "{}"), start(0, "get_time", "{}")],
        ];
        for deltas in cases {
            let mut p = parsing(true);
            let failed = deltas.into_iter().map(|d| p.take_delta(d)).find_map(Result::err);
            assert!(matches!(failed, Some(PluginError::BadOutput { .. })), "{failed:?}");
        }
        let mut p = parsing(true);
        stream(&mut p, vec![start(0, "get_time", "[1, 2]")]);
        assert!(p.check_arguments().is_err(), "arguments that are not a JSON object");
    }
}
