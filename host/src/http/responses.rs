//! `/v1/responses`: OpenAI's Responses API on the chat path. A request's items (after the
//! stored conversation `previous_response_id` names) become chat messages; the chat choice's
//! events become output items and typed stream events (`responses_output`). Every response runs
//! as its own task, so one that is stored reaches its final state in the store whether the
//! client streams, waits, went away, or asked for `background` and will `GET` or `cancel` it
//! later.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::auth::Caller;
use super::blocking;
use super::body::JsonBody;
use super::chat::{self, StartedChat};
use super::chat_run::{ChatEvent, ChatRun};
use super::query::QueryPairs;
use super::responses_input::{self as input, new_id};
use super::responses_output::ResponseWriter;
use super::responses_running::RunningGuard;
use super::responses_types::{
    CreateResponseRequest, DeletedResponse, InputItemList, InputTokensDetails, OutputTokensDetails, ResponseObject,
    ResponseStatus, ResponseUsage, SequencedEvent,
};
use super::sse;
use super::state::SharedState;
use super::types::ChatCompletionRequest;
use crate::engine::CachedTokens;
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::serving::{ServedModel, unix_now};
use crate::store::{ResponseStore, StoreError, StoredResponse};
use crate::tokenizer::TextTokenizer;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The path and SQLite's reason go to the log; the client learns only that it failed.
        tracing::error!("{e}");
        ApiError::internal("the response store cannot be read or written (see the server log)")
    }
}

/// Chat's field names as the Responses request spells them, for errors the chat path reports.
fn responses_param(param: &str) -> String {
    for (chat, responses) in
        [("messages", "input"), ("response_format", "text.format"), ("max_completion_tokens", "max_output_tokens")]
    {
        if let Some(rest) = param.strip_prefix(chat) {
            return format!("{responses}{rest}");
        }
    }
    param.replace(".function.name", ".name")
}

fn rename_param(mut e: ApiError) -> ApiError {
    e.param = e.param.as_deref().map(responses_param);
    e
}

/// Chat-only fields a Responses request may not carry (they have Responses names).
const CHAT_ONLY: &[(&str, &str)] = &[
    ("messages", "input"),
    ("max_completion_tokens", "max_output_tokens"),
    ("max_tokens", "max_output_tokens"),
    ("response_format", "text.format"),
    ("reasoning_effort", "reasoning.effort"),
    ("n", "one response per request"),
    ("logprobs", "top_logprobs"),
    ("functions", "tools"),
    ("function_call", "tool_choice"),
];

/// A create request checked: the chat request it runs as, and what the response echoes.
struct Prepared {
    chat: ChatCompletionRequest,
    response: ResponseObject,
    /// This turn's input items, with ids.
    items: Vec<Value>,
    /// The stored conversation before this turn, then this turn's items.
    history: Vec<Value>,
    /// The instructions' system message, when given (kept first when truncating).
    system: Option<Value>,
    auto_truncate: bool,
    stream: bool,
}

fn prepare(
    state: &SharedState,
    served: &ServedModel,
    req: CreateResponseRequest,
    previous: Option<StoredResponse>,
) -> Result<Prepared, ApiError> {
    state.check_model_field(served, req.model.as_deref())?;
    for (field, instead) in CHAT_ONLY {
        if req.extra.contains_key(*field) {
            return Err(ApiError::invalid_param(
                *field,
                format!("`{field}` is a Chat Completions field; the Responses API takes `{instead}`"),
            ));
        }
    }
    for (field, given) in
        [("conversation", &req.conversation), ("prompt", &req.prompt), ("context_management", &req.context_management)]
    {
        if given.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ApiError::unsupported_param(field));
        }
    }
    let background = req.background.unwrap_or(false);
    let store = req.store.unwrap_or(true);
    if background && !store {
        return Err(ApiError::invalid_param("background", "a `background` response must be stored (`store: true`)"));
    }
    let auto_truncate = match req.truncation.as_deref() {
        None | Some("disabled") => false,
        Some("auto") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "truncation",
                format!("`truncation` must be `auto` or `disabled`, got `{other}`"),
            ));
        }
    };
    let mut scored = false;
    for (i, inc) in req.include.iter().flatten().enumerate() {
        match inc.as_str() {
            // Reasoning items carry their text in `content`, which round-trips as it is.
            Some("reasoning.encrypted_content") => {}
            Some("message.output_text.logprobs") => scored = true,
            // Outputs of tools Hearth does not run: nothing to include.
            Some(
                "file_search_call.results"
                | "web_search_call.results"
                | "web_search_call.action.sources"
                | "message.input_image.image_url"
                | "computer_call_output.output.image_url"
                | "code_interpreter_call.outputs",
            ) => {}
            _ => {
                return Err(ApiError::invalid_param(format!("include[{i}]"), "not a value `include` accepts"));
            }
        }
    }
    if let Some(n) = req.top_logprobs
        && !(0..=20).contains(&n)
    {
        return Err(ApiError::invalid_param("top_logprobs", "`top_logprobs` must be from 0 to 20"));
    }
    let items = input::input_items(req.input.as_ref())?;
    let mut tools = input::tools(req.tools.as_deref())?;
    let tool_choice = input::tool_choice(req.tool_choice.as_ref(), &mut tools)?;
    let (response_format, text) = input::text_format(req.text.as_ref())?;
    let metadata = input::metadata(req.metadata.as_ref())?;
    let effort = match req.reasoning.as_ref().map(|r| r.get("effort")) {
        None | Some(None) | Some(Some(Value::Null)) => None,
        Some(Some(Value::String(e))) => Some(e.clone()),
        Some(Some(_)) => {
            return Err(ApiError::invalid_param("reasoning.effort", "`reasoning.effort` must be a string"));
        }
    };

    let mut history = previous.map(|p| p.conversation()).unwrap_or_default();
    history.extend(items.iter().cloned());
    let system = req.instructions.as_ref().map(|text| json!({"role": "system", "content": text}));
    let mut messages: Vec<Value> = system.iter().cloned().collect();
    messages.extend(input::chat_messages(&history));

    // The chat request: the textgen fields pass through as they are.
    let mut fields: Map<String, Value> = req.extra.clone();
    fields.insert("messages".into(), Value::Array(messages));
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            fields.insert(k.into(), v);
        }
    };
    set("model", req.model.clone().map(Value::from));
    set("max_completion_tokens", req.max_output_tokens.map(Value::from));
    set("temperature", req.temperature.map(Value::from));
    set("top_p", req.top_p.map(Value::from));
    set("tools", (!tools.chat.is_empty()).then(|| Value::Array(tools.chat.clone())));
    set("tool_choice", tool_choice.filter(|_| !tools.chat.is_empty()));
    set("parallel_tool_calls", req.parallel_tool_calls.map(Value::from));
    set("response_format", response_format);
    set("reasoning_effort", effort.clone().map(Value::from));
    set("logprobs", scored.then_some(Value::Bool(true)));
    set("top_logprobs", req.top_logprobs.filter(|_| scored).map(Value::from));
    let chat: ChatCompletionRequest = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::bad_request(format!("the request does not fit a chat request: {e}")))?;

    let echo_choice = req.tool_choice.clone().filter(|v| !v.is_null()).unwrap_or_else(|| json!("auto"));
    let response = ResponseObject {
        id: new_id("resp"),
        object: "response",
        created_at: unix_now(),
        status: if background { ResponseStatus::Queued } else { ResponseStatus::InProgress },
        completed_at: None,
        background,
        error: None,
        incomplete_details: None,
        instructions: req.instructions,
        max_output_tokens: req.max_output_tokens,
        model: served.name.clone(),
        output: Vec::new(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        previous_response_id: req.previous_response_id,
        reasoning: json!({"effort": effort, "summary": null}),
        store,
        temperature: req.temperature,
        text,
        tool_choice: echo_choice,
        tools: tools.echo,
        top_p: req.top_p,
        truncation: if auto_truncate { "auto" } else { "disabled" },
        usage: None,
        user: req.user,
        metadata,
        top_logprobs: req.top_logprobs,
    };
    Ok(Prepared { chat, response, items, history, system, auto_truncate, stream: req.stream.unwrap_or(false) })
}

/// Starts the chat; with `truncation: auto`, drops the conversation's oldest messages (never
/// the instructions or the last message) until the prompt fits the context.
async fn start_chat(
    state: &SharedState,
    served: &Arc<ServedModel>,
    caller: &Caller,
    mut chat: ChatCompletionRequest,
    system: bool,
    auto_truncate: bool,
) -> Result<StartedChat, ApiError> {
    loop {
        match chat::start(state, served, caller, chat.clone()).await {
            Err(e) if auto_truncate && e.code == Some("context_length_exceeded") => {
                let first = usize::from(system);
                if chat.messages.len() <= first + 1 {
                    return Err(e);
                }
                chat.messages.remove(first);
                // A conversation resumes at a user message: not at an answer or a tool result
                // whose call was dropped.
                while chat.messages.len() > first + 1 && chat.messages[first].role != super::types::Role::User {
                    chat.messages.remove(first);
                }
            }
            other => return other,
        }
    }
}

/// What the task running a response sends its client.
enum Sent {
    Event(SequencedEvent),
    /// The response ended (non-streamed callers wait for this).
    Done(Result<Box<ResponseObject>, ApiError>),
}

/// Everything the task running a response needs.
struct Job {
    /// `None` once cancelled: dropping the run stops its generation.
    run: Option<ChatRun>,
    writer: ResponseWriter,
    /// Set when the response is stored: the row's fixed parts.
    stored: Option<(Arc<ResponseStore>, StoredResponse)>,
    guard: RunningGuard,
    cancel: CancellationToken,
    client: mpsc::UnboundedSender<Sent>,
    /// A background response runs on when its client goes away.
    detached: bool,
    prompt_tokens: usize,
    cached: CachedTokens,
    tokenizer: Arc<TextTokenizer>,
}

impl Job {
    /// Writes the response's state to the store (when it is stored). The future holds no
    /// borrow of the job, whose plugin session cannot be shared across threads.
    fn save(&self) -> impl Future<Output = ()> + Send + 'static {
        let pending = self.stored.as_ref().map(|(store, row)| {
            let mut row = row.clone();
            row.body = serde_json::to_value(&self.writer.response).unwrap_or(Value::Null);
            (store.clone(), row)
        });
        async move {
            let Some((store, row)) = pending else { return };
            match tokio::task::spawn_blocking(move || store.put(&row)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("storing a response: {e}"),
                Err(e) => tracing::error!("storing a response: the task failed: {e}"),
            }
        }
    }

    fn send(&self, events: Vec<SequencedEvent>) {
        for e in events {
            // A client that went away: a detached response runs on, others stop at the next turn.
            let _ = self.client.send(Sent::Event(e));
        }
    }

    async fn drive(mut self) {
        let events = self.writer.start();
        self.send(events);
        let mut started = false;
        let outcome = loop {
            let Some(run) = self.run.as_mut() else { break None };
            let client = self.client.clone();
            let gone = async move {
                client.closed().await;
            };
            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break None,
                _ = gone, if !self.detached => break None,
                event = run.next() => event,
            };
            match event {
                Ok(Some(ChatEvent::Finished { reason, completion_tokens })) => {
                    break Some(Ok((reason, completion_tokens)));
                }
                Ok(Some(event)) => {
                    if !started && self.writer.response.background {
                        started = true;
                        self.writer.response.status = ResponseStatus::InProgress;
                        self.save().await;
                    }
                    let events = self.writer.take(event);
                    self.send(events);
                }
                Ok(None) => break Some(Err(ApiError::internal("generation ended without a finish reason"))),
                Err(e) => break Some(Err(e)),
            }
        };
        let done = match outcome {
            Some(Ok((reason, completion_tokens))) => {
                let reasoning = self.writer.reasoning_text();
                let reasoning_tokens = if reasoning.is_empty() {
                    0
                } else {
                    self.tokenizer.encode(&reasoning, false).map(|ids| ids.len()).unwrap_or(0).min(completion_tokens)
                };
                let usage = ResponseUsage {
                    input_tokens: self.prompt_tokens,
                    input_tokens_details: InputTokensDetails { cached_tokens: self.cached.get() },
                    output_tokens: completion_tokens,
                    output_tokens_details: OutputTokensDetails { reasoning_tokens },
                    total_tokens: self.prompt_tokens + completion_tokens,
                };
                let events = self.writer.finish(reason, usage);
                self.save().await;
                self.send(events);
                Ok(Box::new(self.writer.response.clone()))
            }
            Some(Err(e)) => {
                let events = self.writer.fail(&e);
                self.save().await;
                self.send(events);
                Err(e)
            }
            None => {
                // Stops the generation now rather than when the task ends.
                self.run = None;
                self.writer.cancel();
                self.save().await;
                Err(ApiError::bad_request("the response was cancelled"))
            }
        };
        self.guard.stored();
        let _ = self.client.send(Sent::Done(done));
    }
}

/// The SSE event of one stream event: `event: <type>`, the event as `data`.
fn sse_event(e: &SequencedEvent) -> Event {
    sse::named_json_event(e.event.name(), e)
}

/// Creates a response: the whole response object, an event stream with `stream: true`, or at
/// once (status `queued`) with `background: true`.
#[utoipa::path(post, path = "/v1/responses", tag = "responses", operation_id = "create_response", request_body = CreateResponseRequest,
    responses(
        (status = 200, description = "The response; with `stream: true` an event stream of `SequencedEvent`s",
            content((ResponseObject = "application/json"), (SequencedEvent = "text/event-stream"))),
        (status = 400, description = "A field is invalid", body = ErrorResponse), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse), (status = 429, description = "The queue is full: try again (Retry-After)", body = ErrorResponse), (status = 503, description = "No model is ready", body = ErrorResponse)))]
pub async fn create(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<CreateResponseRequest>,
) -> Result<Response, ApiError> {
    let served = state.ready()?;
    let previous = match req.previous_response_id.clone() {
        None => None,
        Some(id) => {
            let store = state.responses.clone();
            let found = blocking::off_runtime("reading the response store", move || Ok(store.get(&id)?)).await?;
            let previous = found.ok_or_else(|| ApiError {
                code: Some("previous_response_not_found"),
                ..ApiError::invalid_param("previous_response_id", "Previous response with this id not found.")
            })?;
            if matches!(previous.status(), "queued" | "in_progress") {
                return Err(ApiError::invalid_param(
                    "previous_response_id",
                    "the previous response is still running: wait for it (or cancel it) first",
                ));
            }
            Some(previous)
        }
    };
    let Prepared { chat, response, items, history, system, auto_truncate, stream } =
        prepare(&state, &served, req, previous)?;
    let StartedChat { mut runs, prompt_tokens, cached, plan } =
        start_chat(&state, &served, &caller, chat, system.is_some(), auto_truncate).await.map_err(rename_param)?;
    let run = runs.pop().ok_or_else(|| ApiError::internal("the chat started no choice"))?;
    let texts = plan.logprobs.map(|_| super::logprobs::TokenTexts::new(served.engine.tokenizer().clone()));

    let background = response.background;
    let stored = response.store.then(|| {
        let row = StoredResponse {
            body: serde_json::to_value(&response).unwrap_or(Value::Null),
            input_items: items,
            history,
            background,
        };
        (state.responses.clone(), row)
    });
    if let Some((store, row)) = &stored {
        let (store, row) = (store.clone(), row.clone());
        blocking::off_runtime("writing the response store", move || Ok(store.put(&row)?)).await?;
    }
    let (guard, cancel) = state.running.start(&response.id);
    let (client, mut sent) = mpsc::unbounded_channel();
    let queued = response.clone();
    let job = Job {
        run: Some(run),
        writer: ResponseWriter::new(response, texts),
        stored,
        guard,
        cancel,
        client,
        detached: background,
        prompt_tokens,
        cached,
        tokenizer: served.engine.tokenizer().clone(),
    };
    tokio::spawn(job.drive());

    if stream {
        let events = futures::stream::unfold(sent, |mut sent| async move {
            match sent.recv().await {
                Some(Sent::Event(e)) => Some((Some(sse_event(&e)), sent)),
                Some(Sent::Done(_)) | None => None,
            }
        })
        .filter_map(|e| async move { e });
        return Ok(sse::respond(events));
    }
    if background {
        return Ok(axum::Json(queued).into_response());
    }
    loop {
        match sent.recv().await {
            Some(Sent::Event(_)) => {}
            Some(Sent::Done(done)) => return done.map(|r| axum::Json(r).into_response()),
            None => return Err(ApiError::internal("the response's task ended without a result")),
        }
    }
}

async fn stored(state: &SharedState, id: String) -> Result<StoredResponse, ApiError> {
    let store = state.responses.clone();
    let missing = ApiError::not_found(format!("No response found with id '{id}'."));
    blocking::off_runtime("reading the response store", move || Ok(store.get(&id)?)).await?.ok_or(missing)
}

/// `GET /v1/responses/{response_id}`'s query (documentation: the handler reads [`QueryPairs`]).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RetrieveQuery {
    /// Resuming a stream is not supported: `true` is a 400.
    stream: Option<bool>,
    /// Accepted; nothing more is included.
    include: Option<Vec<String>>,
    starting_after: Option<u64>,
    include_obfuscation: Option<bool>,
}

/// A stored response, as it is now (a background one may still be running).
#[utoipa::path(get, path = "/v1/responses/{response_id}", tag = "responses", operation_id = "retrieve_response",
    params(("response_id" = String, Path, description = "The response's id"), RetrieveQuery),
    responses((status = 200, description = "The response", body = ResponseObject),
        (status = 404, description = "No stored response has this id", body = ErrorResponse)))]
pub async fn retrieve(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    query.only(&["stream", "include", "starting_after", "include_obfuscation"])?;
    query.boolean("include_obfuscation")?;
    query.integer("starting_after")?;
    if query.boolean("stream")? == Some(true) {
        return Err(ApiError::unsupported_param("stream"));
    }
    Ok(axum::Json(stored(&state, id).await?.body).into_response())
}

/// Deletes a stored response (stopping it first if it still runs).
#[utoipa::path(delete, path = "/v1/responses/{response_id}", tag = "responses", operation_id = "delete_response",
    params(("response_id" = String, Path, description = "The response's id")),
    responses((status = 200, description = "Deleted", body = DeletedResponse),
        (status = 404, description = "No stored response has this id", body = ErrorResponse)))]
pub async fn delete(State(state): State<SharedState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    stored(&state, id.clone()).await?;
    // A running response would write itself back when it ends.
    state.running.cancel(&id).await;
    let store = state.responses.clone();
    let key = id.clone();
    let deleted = blocking::off_runtime("writing the response store", move || Ok(store.delete(&key)?)).await?;
    if !deleted {
        return Err(ApiError::not_found(format!("No response found with id '{id}'.")));
    }
    Ok(axum::Json(DeletedResponse { id, object: "response.deleted", deleted: true }).into_response())
}

/// Cancels a background response; one that already ended is returned as it is.
#[utoipa::path(post, path = "/v1/responses/{response_id}/cancel", tag = "responses", operation_id = "cancel_response",
    params(("response_id" = String, Path, description = "The response's id")),
    responses((status = 200, description = "The response, cancelled", body = ResponseObject),
        (status = 400, description = "Not a background response", body = ErrorResponse),
        (status = 404, description = "No stored response has this id", body = ErrorResponse)))]
pub async fn cancel(State(state): State<SharedState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let found = stored(&state, id.clone()).await?;
    if !found.background {
        return Err(ApiError::bad_request("Only responses created with `background: true` can be cancelled."));
    }
    if !state.running.cancel(&id).await {
        return Ok(axum::Json(found.body).into_response());
    }
    Ok(axum::Json(stored(&state, id).await?.body).into_response())
}

/// `GET /v1/responses/{response_id}/input_items`'s query (documentation: the handler reads
/// [`QueryPairs`]).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct InputItemsQuery {
    /// 1 to 100 (default 20).
    limit: Option<i64>,
    /// `asc` or `desc` (default).
    order: Option<String>,
    /// An item id: list the items after it.
    after: Option<String>,
    /// An item id: list the items before it.
    before: Option<String>,
    /// Accepted; nothing more is included.
    include: Option<Vec<String>>,
}

/// The input items of a stored response's turn.
#[utoipa::path(get, path = "/v1/responses/{response_id}/input_items", tag = "responses", operation_id = "list_input_items",
    params(("response_id" = String, Path, description = "The response's id"), InputItemsQuery),
    responses((status = 200, description = "The items", body = InputItemList),
        (status = 400, description = "A parameter is invalid", body = ErrorResponse),
        (status = 404, description = "No stored response has this id", body = ErrorResponse)))]
pub async fn input_items(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    query.only(&["limit", "order", "after", "before", "include"])?;
    let limit = query.integer("limit")?.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_param("limit", "`limit` must be from 1 to 100"));
    }
    let descending = match query.get("order") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(ApiError::invalid_param("order", "`order` must be `asc` or `desc`")),
    };
    let mut items = stored(&state, id).await?.input_items;
    if descending {
        items.reverse();
    }
    let position = |key: &str, param: &str| {
        items
            .iter()
            .position(|item| item.get("id").and_then(Value::as_str) == Some(key))
            .ok_or_else(|| ApiError::invalid_param(param, format!("no input item of this response has id '{key}'")))
    };
    let start = match query.get("after") {
        Some(after) => position(after, "after")? + 1,
        None => 0,
    };
    let end = match query.get("before") {
        Some(before) => position(before, "before")?,
        None => items.len(),
    };
    let window: Vec<Value> = items.get(start..end.max(start)).unwrap_or_default().to_vec();
    let has_more = window.len() > limit as usize;
    let data: Vec<Value> = window.into_iter().take(limit as usize).collect();
    let id_of = |v: Option<&Value>| v.and_then(|i| i.get("id")).and_then(Value::as_str).unwrap_or_default().to_owned();
    let body =
        InputItemList { object: "list", first_id: id_of(data.first()), last_id: id_of(data.last()), has_more, data };
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_field_names_read_as_responses_names() {
        assert_eq!(responses_param("messages[2].content"), "input[2].content");
        assert_eq!(responses_param("response_format"), "text.format");
        assert_eq!(responses_param("tools[0].function.name"), "tools[0].name");
        assert_eq!(responses_param("temperature"), "temperature");
    }
}
