//! `POST /v1/chat/completions`: messages through the chat template, generation, and the answer
//! as one `chat.completion` or as a stream of `chat.completion.chunk` events.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::blocking;
use super::body::JsonBody;
use super::chat_run::{ChatEvent, ChatOutput, ChatRun};
use super::generation::ChoiceRun;
use super::images::{self, ImageRef};
use super::logprobs::{self, TokenTexts};
use super::sse;
use super::state::{SharedState, gbnf_constraint, size_generation, submit_choices};
use super::tools::{self, ToolSetup};
use super::types::{
    ApiFinishReason, AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatCompletionRequest, ChatMessage,
    ChunkChoice, ChunkDelta, ContentPart, MessageContent, Usage,
};
use super::validate::{self, GenerationPlan};
use crate::engine::{CachedTokens, LogprobsQuery, TokenLogprob};
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::prompt::character::{Character, DEFAULT_CHARACTER, DEFAULT_USER_NAME};
use crate::prompt::modes::{self, ChatMode, ModeError, ModePrompt, Persona};
use crate::prompt::reasoning::ReasoningSplitter;
use crate::serving::{ServedModel, unix_now};

/// A chat request checked and rendered to prompt text.
pub struct RenderedChat {
    pub prompt: String,
    pub plan: GenerationPlan,
    /// Set when the request offers tools.
    pub tools: Option<ToolSetup>,
    /// The schema the answer's JSON must follow (`response_format` `json_object` / `json_schema`).
    pub json_schema: Option<Value>,
    /// The messages' images in order; `prompt` holds the vision model's marker for each.
    pub images: Vec<ImageRef>,
}

/// How a message's image parts reach the template.
#[derive(Debug, Clone, Copy)]
enum ImageParts<'a> {
    /// Content as Hugging Face's processors give it: a list of `{"type": "text", "text": …}` and
    /// `{"type": "image"}` parts (what multimodal templates iterate over).
    Listed,
    /// Content as text, each image written as the model's marker where it was.
    Marked(&'a str),
}

/// The messages' text parts, as one text (a message's parts, and the messages, a line apart).
pub fn plain_text(messages: &[ChatMessage]) -> String {
    let texts = messages.iter().filter_map(|m| match &m.content {
        None => None,
        Some(MessageContent::Text(t)) => Some(t.clone()),
        Some(MessageContent::Parts(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    });
    texts.collect::<Vec<_>>().join("\n")
}

/// The request's image parts, in order.
pub fn image_refs(messages: &[ChatMessage]) -> Result<Vec<ImageRef>, ApiError> {
    let mut refs = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let Some(MessageContent::Parts(parts)) = &m.content else { continue };
        for (j, part) in parts.iter().enumerate() {
            if let ContentPart::ImageUrl { image_url } = part {
                let field = format!("messages[{i}].content[{j}].image_url");
                let url = match image_url {
                    Value::String(url) => url.clone(),
                    other => other.get("url").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
                        ApiError::invalid_param(field.clone(), "an `image_url` part needs `image_url.url`")
                    })?,
                };
                refs.push(ImageRef { field: format!("{field}.url"), url });
            }
        }
    }
    Ok(refs)
}

/// Checks a chat request and renders its prompt (shared with `/v1/internal/chat-prompt`).
/// Blocking: it may call the tool-format plugin; run it off the async runtime.
pub fn render_request(
    state: &SharedState,
    served: &ServedModel,
    mut req: ChatCompletionRequest,
) -> Result<RenderedChat, ApiError> {
    let common = req.take_common();
    state.check_model_field(served, common.model.as_deref())?;
    let sampling = state.sampling(&mut req.extra, served)?;
    validate::check_extra(&req.extra)?;
    let top = logprobs::top_count("top_logprobs", req.top_logprobs.unwrap_or(0))?;
    if top > 0 && req.logprobs != Some(true) {
        return Err(ApiError::invalid_param("top_logprobs", "`top_logprobs` needs `logprobs: true`"));
    }
    let scored = (req.logprobs == Some(true)).then_some(LogprobsQuery { top, prompt: false });
    let bias = validate::logit_bias(req.logit_bias.as_ref(), served.engine.tokenizer().vocab_size())?;
    let json_schema = match &req.response_format {
        None => None,
        Some(format) => response_schema(format)?,
    };
    let mode = match req.mode.as_deref() {
        None => ChatMode::Instruct,
        Some(name) => ChatMode::parse(name).ok_or_else(|| {
            ApiError::invalid_param(
                "mode",
                format!("`mode` must be `instruct`, `chat` or `chat-instruct`, got `{name}`"),
            )
        })?,
    };
    let tool_request = tools::parse_request(req.tools.as_deref(), req.tool_choice.as_ref(), req.parallel_tool_calls)?;
    if tool_request.is_some() && mode != ChatMode::Instruct {
        return Err(ApiError::invalid_param(
            "tools",
            "tools are offered in `mode: instruct` only, not in the chat modes",
        ));
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param("messages", "`messages` must contain at least one message"));
    }
    let mut plan = validate::plan(common, sampling, req.max_completion_tokens)?;
    // Checked before anything renders: at most one thing may constrain the answer.
    let forced_tools = tool_request.as_ref().is_some_and(|r| r.forced_tools().is_some());
    one_answer_shape(json_schema.is_some(), plan.grammar.is_some(), forced_tools)?;
    let images = image_refs(&req.messages)?;
    let marker = match (&served.vision, images.first()) {
        (_, None) => None,
        (Some(vision), Some(_)) => Some(vision.marker().to_owned()),
        (None, Some(first)) => return Err(images::text_only(served, &first.field)),
    };
    // A multimodal template reads the parts; one written for text gets the marker in the text.
    let attempts: Vec<Option<ImageParts>> = match &marker {
        None => vec![None],
        Some(m) => vec![Some(ImageParts::Listed), Some(ImageParts::Marked(m))],
    };
    let template_messages = |parts: Option<ImageParts>| {
        req.messages.iter().enumerate().map(|(i, m)| template_message(i, m, parts)).collect::<Result<Vec<_>, _>>()
    };
    let mut messages = template_messages(attempts[0])?;

    // textgen's order: the request's Jinja, a named template, the default a model load set, the
    // model's own (then Alpaca).
    let given = req.instruction_template_str.as_deref().filter(|s| !s.trim().is_empty());
    let named = match req.instruction_template.as_deref().filter(|n| !n.is_empty()) {
        Some(name) if given.is_none() => Some(state.instruction_template(name)?),
        _ => None,
    };
    let template_override = given.or(named.as_deref()).or(served.instruction_template.as_deref());
    let (template, _source) = served.renderer.template(template_override, given.is_some())?;
    let mut setup = None;
    let mut template_tools = None;
    if let Some(request) = tool_request {
        let hints_in = template_override.or(served.renderer.model_template_source()).unwrap_or_default();
        let preferred = tools::preferred_parser(&state.settings.tool_parsers, &served.name);
        let tool_setup = ToolSetup { parser: tools::choose_parser(&state.plugins, preferred, hints_in)?, request };
        if template.reads_tools() {
            template_tools = Some(tool_setup.request.raw.clone());
        }
        setup = Some(tool_setup);
    }
    let tools_in_messages = setup.as_ref().filter(|_| template_tools.is_none());

    let mut extra = Map::new();
    if let Some(v) = req.enable_thinking {
        extra.insert("enable_thinking".into(), Value::Bool(v));
    }
    if let Some(v) = &req.reasoning_effort {
        extra.insert("reasoning_effort".into(), Value::String(v.clone()));
    }
    let persona = match mode {
        ChatMode::Instruct => None,
        ChatMode::Chat | ChatMode::ChatInstruct => Some(persona(state, &req)?),
    };
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let (chat_template, command) = (non_empty(&req.chat_template_str), non_empty(&req.chat_instruct_command));
    let mut prompt = None;
    // Markers the last rendering placed, when it placed the wrong number.
    let mut placed = 0;
    for (n, &parts) in attempts.iter().enumerate() {
        if n > 0 {
            messages = template_messages(parts)?;
        }
        if let Some(tool_setup) = tools_in_messages {
            messages = tools::messages_for_plain_template(&state.plugins, tool_setup, messages)?;
        }
        let built = ModePrompt {
            mode,
            messages: &messages,
            instruct: &template,
            tools: template_tools.as_deref(),
            persona: persona.as_ref(),
            chat_template: chat_template.as_deref(),
            command: command.as_deref(),
            continue_last: req.continue_.unwrap_or(false),
            extra: extra.clone(),
        };
        let rendered = modes::render(&served.renderer, &built).map_err(|e| match e {
            ModeError::Template(e) => ApiError::from(e),
            ModeError::CannotContinue(msg) => ApiError::invalid_param("continue_", msg),
        });
        let Some(marker) = &marker else {
            prompt = Some(rendered?);
            break;
        };
        // Text-only templates fail on listed parts, or print them without the images: the
        // next attempt writes the markers into the text.
        match rendered {
            Ok(text) => {
                placed = crate::vision::prompt::count_markers(&text, marker);
                if placed == images.len() {
                    prompt = Some(text);
                    break;
                }
            }
            Err(e) if n + 1 == attempts.len() => return Err(e),
            Err(_) => {}
        }
    }
    let Some(prompt) = prompt else {
        return Err(ApiError::invalid_param(
            "messages",
            format!(
                "the chat template placed {} image markers (`{}`) for the request's {} images",
                placed,
                marker.as_deref().unwrap_or_default(),
                images.len()
            ),
        ));
    };
    plan.logprobs = scored;
    plan.sampling.logit_bias = bias;
    if let Some(persona) = &persona {
        // The model writes one turn of the script: a new line naming a speaker ends it.
        plan.stops.extend(persona.turn_stops());
    }
    Ok(RenderedChat { prompt, plan, tools: setup, json_schema, images })
}

/// A JSON `response_format`, a `grammar_string` and a forced tool call each constrain the
/// answer; a request may use one of them.
fn one_answer_shape(json_schema: bool, grammar: bool, forced_tools: bool) -> Result<(), ApiError> {
    if json_schema && forced_tools {
        return Err(ApiError::invalid_param(
            "response_format",
            "a JSON `response_format` and a forced tool call cannot both shape the answer",
        ));
    }
    if grammar && (json_schema || forced_tools) {
        return Err(ApiError::invalid_param(
            "grammar_string",
            "`grammar_string` cannot shape the answer together with a JSON `response_format` or a forced tool call",
        ));
    }
    Ok(())
}

/// The schema a `response_format` asks for: `text` none, `json_object` any object,
/// `json_schema` its `json_schema.schema` (any object when it gives none).
fn response_schema(format: &Value) -> Result<Option<Value>, ApiError> {
    let bad = |msg: &str| ApiError::invalid_param("response_format", msg.to_owned());
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "object"}))),
        Some("json_schema") => {
            let spec = format.get("json_schema").filter(|s| s.is_object()).ok_or_else(|| {
                bad("`response_format.json_schema` must be an object with the `schema` the answer follows")
            })?;
            match spec.get("schema") {
                None | Some(Value::Null) => Ok(Some(json!({"type": "object"}))),
                Some(schema @ (Value::Object(_) | Value::Bool(true))) => Ok(Some(schema.clone())),
                Some(_) => Err(bad("`response_format.json_schema.schema` must be a JSON schema object")),
            }
        }
        _ => Err(bad("`response_format.type` must be `text`, `json_object` or `json_schema`")),
    }
}

/// Who speaks in the chat modes: the request's names and texts over its character's.
fn persona(state: &SharedState, req: &ChatCompletionRequest) -> Result<Persona, ApiError> {
    let dir = state.settings.user_data_dir.join("characters");
    let name = req.character.as_deref().unwrap_or(DEFAULT_CHARACTER);
    let character = Character::load(&dir, name).map_err(|e| ApiError::invalid_param("character", e.to_string()))?;
    let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    Ok(Persona {
        user: given(&req.user_name).or(character.user_name).unwrap_or_else(|| DEFAULT_USER_NAME.into()),
        character: given(&req.bot_name).unwrap_or(character.name),
        context: given(&req.context).unwrap_or(character.context),
        greeting: given(&req.greeting).unwrap_or(character.greeting),
        user_bio: req.user_bio.clone().unwrap_or_default(),
    })
}

/// A message as templates expect it: `content` a string, or with images as `images` says.
fn template_message(index: usize, m: &ChatMessage, images: Option<ImageParts>) -> Result<Value, ApiError> {
    let content = match (&m.content, images) {
        (None, Some(ImageParts::Listed)) => json!([]),
        (None, _) => json!(""),
        (Some(MessageContent::Text(t)), Some(ImageParts::Listed)) => json!([{"type": "text", "text": t}]),
        (Some(MessageContent::Text(t)), _) => json!(t),
        (Some(MessageContent::Parts(parts)), _) => {
            let mut texts: Vec<&str> = Vec::new();
            let mut listed = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                match (part, images) {
                    (ContentPart::Text { text } | ContentPart::Refusal { refusal: text }, _) => {
                        texts.push(text);
                        listed.push(json!({"type": "text", "text": text}));
                    }
                    (ContentPart::ImageUrl { .. }, Some(ImageParts::Listed)) => listed.push(json!({"type": "image"})),
                    (ContentPart::ImageUrl { .. }, Some(ImageParts::Marked(marker))) => texts.push(marker),
                    (ContentPart::ImageUrl { .. }, None) => {
                        return Err(ApiError::invalid_param(
                            format!("messages[{index}].content[{j}]"),
                            "this model takes no images",
                        ));
                    }
                    _ => {
                        return Err(ApiError::invalid_param(
                            format!("messages[{index}].content[{j}]"),
                            "audio and file inputs need a model that reads them, which this server does not serve yet",
                        ));
                    }
                }
            }
            match images {
                Some(ImageParts::Listed) => Value::Array(listed),
                _ => json!(texts.join("\n")),
            }
        }
    };
    let mut obj = json!({ "role": m.role.as_str(), "content": content });
    if let Some(name) = &m.name {
        obj["name"] = Value::String(name.clone());
    }
    if let Some(calls) = m.tool_calls.as_deref().filter(|c| !c.is_empty()) {
        obj["tool_calls"] = tools::template_tool_calls(index, calls)?;
    }
    if let Some(id) = &m.tool_call_id {
        obj["tool_call_id"] = Value::String(id.clone());
    }
    if let Some(r) = &m.reasoning_content {
        obj["reasoning_content"] = Value::String(r.clone());
    }
    Ok(obj)
}

/// A chat request started: its plan, and one run per choice.
pub struct StartedChat {
    pub plan: GenerationPlan,
    pub runs: Vec<ChatRun>,
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the KV cache (counted once for all choices).
    pub cached: CachedTokens,
}

/// Checks and renders a chat request, then submits its choices (shared with `/v1/responses`).
pub async fn start(
    state: &SharedState,
    served: &Arc<ServedModel>,
    caller: &Caller,
    req: ChatCompletionRequest,
) -> Result<StartedChat, ApiError> {
    let (mut rendered, constraint, ids) = {
        let (state, served) = (state.clone(), served.clone());
        blocking::off_runtime("rendering the prompt", move || {
            let rendered = render_request(&state, &served, req)?;
            let constraint = match (&rendered.tools, &rendered.json_schema) {
                _ if let Some(gbnf) = &rendered.plan.grammar => Some(gbnf_constraint(&served, gbnf)?),
                (_, Some(schema)) => Some(served.grammar()?.compile_json_schema(schema).map_err(|e| {
                    ApiError::invalid_param("response_format", format!("the JSON schema cannot be enforced: {e}"))
                })?),
                (Some(setup), None) => tools::forcing_constraint(&state.plugins, &served, setup)?,
                (None, None) => None,
            };
            // A prompt with images is tokenized around them once they are read.
            let ids = match rendered.images.is_empty() {
                true => Some(served.engine.tokenizer().encode(&rendered.prompt, false)?),
                false => None,
            };
            Ok((rendered, constraint, ids))
        })
        .await?
    };
    let (ids, media) = match ids {
        Some(ids) => (ids, Vec::new()),
        None => {
            let marker = served.vision.as_ref().map(|v| v.marker().to_owned()).unwrap_or_default();
            let images = std::mem::take(&mut rendered.images);
            // Hugging Face's processors tokenize the rendered chat with the tokenizer's special
            // tokens (its BOS: a multimodal template seldom writes one); never a second BOS.
            let tokenizer = served.engine.tokenizer();
            let bos = tokenizer.special_text(tokenizer.bos);
            let add_special = bos.is_empty() || !rendered.prompt.starts_with(&bos);
            let made =
                images::media_prompt(state, served, rendered.prompt.clone(), &marker, images, add_special).await?;
            (made.ids, made.media)
        }
    };
    let RenderedChat { prompt, plan, tools, .. } = rendered;
    if state.settings.debug {
        tracing::info!(prompt = %prompt, "chat prompt");
    }
    let mut sub = size_generation(served, &state.settings, &plan, ids)?;
    sub.constraint = constraint;
    sub.media = media.into();
    let prompt_tokens = sub.prompt.len();
    let submitted = submit_choices(served, &plan, &sub, plan.n, &caller.owner)?;
    // The prompt is counted once however many choices share it: so are its cached tokens.
    let cached = submitted.first().map(ChoiceRun::cached_tokens).unwrap_or_default();
    let mut runs = Vec::with_capacity(submitted.len());
    for run in submitted {
        let reasoning = ReasoningSplitter::for_prompt(&prompt);
        runs.push(match &tools {
            Some(setup) => ChatRun::with_tools(run, reasoning, state.plugins.clone(), setup).await?,
            None => ChatRun::plain(run, reasoning),
        });
    }
    Ok(StartedChat { plan, runs, prompt_tokens, cached })
}

/// A chat completion: the whole answer, or with `stream: true` server-sent events, each a
/// `chat.completion.chunk` (the `ChatChunk` schema), then `data: [DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "chat", request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true` an event stream of `ChatChunk`s",
            content((ChatCompletion = "application/json"), (super::sse::StreamEvent = "text/event-stream"))),
        (status = 400, description = "A field is invalid", body = ErrorResponse), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse), (status = 429, description = "The queue is full: try again (Retry-After)", body = ErrorResponse), (status = 503, description = "No model is ready", body = ErrorResponse)))]
pub async fn chat_completions(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let served = state.ready()?;
    let StartedChat { plan, runs: choices, prompt_tokens, cached, .. } = start(&state, &served, &caller, req).await?;
    let tokenizer = served.engine.tokenizer().clone();
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model = served.name.clone();

    if plan.stream {
        let chunks = ChunkWriter {
            id,
            created,
            model,
            include_usage: plan.include_usage,
            debug: state.settings.debug,
            texts: plan.logprobs.map(|_| TokenTexts::new(tokenizer.clone())),
        };
        return Ok(sse::respond(stream_chat(choices, chunks, prompt_tokens, cached)));
    }

    let results = futures::future::join_all(choices.into_iter().map(ChatRun::collect)).await;
    let mut answers = Vec::with_capacity(results.len());
    let mut completion_tokens = 0;
    let texts = plan.logprobs.map(|_| TokenTexts::new(tokenizer));
    for (index, result) in results.into_iter().enumerate() {
        let ChatOutput { reasoning, content: text, calls, reason, completion_tokens: tokens, logprobs } = result?;
        completion_tokens += tokens;
        if state.settings.debug {
            tracing::info!(index, text = %text, calls = ?calls, "chat answer");
        }
        // OpenAI's `content` is null beside calls when the model wrote nothing else.
        let content = if !calls.is_empty() && text.trim().is_empty() { None } else { Some(text) };
        let tool_calls = (!calls.is_empty()).then_some(calls);
        answers.push(ChatChoice {
            index,
            message: AssistantMessage {
                role: "assistant",
                content,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                refusal: None,
                annotations: Vec::new(),
                tool_calls,
            },
            logprobs: texts.as_ref().map(|texts| logprobs::chat(&logprobs, texts)),
            finish_reason: reason,
        });
    }
    let body = ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model,
        choices: answers,
        usage: Usage::new(prompt_tokens, completion_tokens).cached(cached.get()),
        system_fingerprint: None,
    };
    Ok(axum::Json(body).into_response())
}

/// Builds the chunks of one streamed answer.
struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    debug: bool,
    /// Set when chunks carry `logprobs`.
    texts: Option<TokenTexts>,
}

impl ChunkWriter {
    fn chunk(&self, index: usize, delta: ChunkDelta, finish_reason: Option<ApiFinishReason>) -> ChatChunk {
        self.scored_chunk(index, delta, &mut Vec::new(), finish_reason)
    }

    /// A chunk of choice `index` carrying the scores of the tokens behind it (taken from
    /// `scored`), when asked for.
    fn scored_chunk(
        &self,
        index: usize,
        delta: ChunkDelta,
        scored: &mut Vec<TokenLogprob>,
        finish_reason: Option<ApiFinishReason>,
    ) -> ChatChunk {
        let logprobs = self
            .texts
            .as_ref()
            .filter(|_| !scored.is_empty())
            .map(|texts| logprobs::chat(&std::mem::take(scored), texts));
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index, delta, logprobs, finish_reason }],
            usage: self.include_usage.then_some(None),
            system_fingerprint: None,
        }
    }

    fn usage_chunk(&self, usage: Usage) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![],
            usage: Some(Some(usage)),
            system_fingerprint: None,
        }
    }
}

/// What one choice's part of a streamed answer yields.
enum ChoiceOut {
    Event(axum::response::sse::Event),
    /// The choice ended (its finish chunk went out before), with its completion tokens.
    Finished(usize),
    /// The choice failed: this error event ends the whole answer.
    Failed(axum::response::sse::Event),
}

/// The chunks of one choice: role chunk, content and tool-call chunks, the finish chunk.
fn stream_choice(run: ChatRun, w: Arc<ChunkWriter>, index: usize) -> impl futures::Stream<Item = ChoiceOut> {
    enum Phase {
        Start,
        Running,
        Done,
    }
    // Scores wait in `scored` for the next chunk: the one of their text, or the finish chunk.
    let start = (run, w, Phase::Start, Vec::<TokenLogprob>::new());
    futures::stream::unfold(start, move |(mut run, w, phase, mut scored)| async move {
        let event = |chunk: &ChatChunk| ChoiceOut::Event(sse::json_event(chunk));
        match phase {
            Phase::Start => {
                let delta = ChunkDelta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    refusal: Some(Value::Null),
                    ..Default::default()
                };
                Some((vec![event(&w.chunk(index, delta, None))], (run, w, Phase::Running, scored)))
            }
            Phase::Running => {
                // A delta chunk (its text's scores with it) keeps the choice running.
                let mut send = |delta: ChunkDelta| {
                    if w.debug {
                        tracing::info!(index, delta = ?delta, "chat delta");
                    }
                    (vec![event(&w.scored_chunk(index, delta, &mut scored, None))], Phase::Running)
                };
                let (out, phase) = match run.next().await {
                    Ok(Some(ChatEvent::Logprobs(more))) => {
                        scored.extend(more);
                        (Vec::new(), Phase::Running)
                    }
                    Ok(Some(ChatEvent::Reasoning(text))) => {
                        send(ChunkDelta { reasoning_content: Some(text), ..Default::default() })
                    }
                    Ok(Some(ChatEvent::Content(text))) => {
                        send(ChunkDelta { content: Some(text), ..Default::default() })
                    }
                    Ok(Some(ChatEvent::Call(call))) => {
                        send(ChunkDelta { tool_calls: Some(vec![call]), ..Default::default() })
                    }
                    Ok(Some(ChatEvent::Finished { reason, completion_tokens })) => {
                        // `content: ""` rather than an empty delta: the seed's own streaming
                        // example reads `delta['content']` on every chunk.
                        let last = ChunkDelta { content: Some(String::new()), ..Default::default() };
                        let finish = event(&w.scored_chunk(index, last, &mut scored, Some(reason)));
                        (vec![finish, ChoiceOut::Finished(completion_tokens)], Phase::Done)
                    }
                    Ok(None) => (vec![ChoiceOut::Finished(0)], Phase::Done),
                    Err(e) => (vec![ChoiceOut::Failed(sse::error_event(&e))], Phase::Done),
                };
                Some((out, (run, w, phase, scored)))
            }
            Phase::Done => None,
        }
    })
    .flat_map(futures::stream::iter)
}

/// The event stream of a streamed chat answer: every choice's chunks as they come (each with
/// its `index`), then the usage chunk when asked for, then `[DONE]`. A failing choice ends the
/// answer with its error. Dropping the stream (client gone) cancels every choice.
fn stream_chat(
    runs: Vec<ChatRun>,
    w: ChunkWriter,
    prompt_tokens: usize,
    cached: CachedTokens,
) -> impl futures::Stream<Item = axum::response::sse::Event> {
    let w = Arc::new(w);
    let choices = runs.len();
    let merged = futures::stream::select_all(
        runs.into_iter().enumerate().map(|(i, run)| Box::pin(stream_choice(run, w.clone(), i))),
    );
    let start = (merged, 0usize, 0usize, false);
    futures::stream::unfold(start, move |(mut merged, finished, tokens, done)| {
        let w = w.clone();
        let cached = cached.clone();
        async move {
            if done {
                return None;
            }
            Some(match merged.next().await {
                Some(ChoiceOut::Event(e)) => (vec![e], (merged, finished, tokens, false)),
                Some(ChoiceOut::Finished(t)) if finished + 1 < choices => {
                    (Vec::new(), (merged, finished + 1, tokens + t, false))
                }
                Some(ChoiceOut::Finished(t)) => {
                    let mut events = Vec::new();
                    if w.include_usage {
                        let usage = Usage::new(prompt_tokens, tokens + t).cached(cached.get());
                        events.push(sse::json_event(&w.usage_chunk(usage)));
                    }
                    events.push(sse::done_event());
                    (events, (merged, finished + 1, tokens + t, true))
                }
                Some(ChoiceOut::Failed(e)) => (vec![e, sse::done_event()], (merged, finished, tokens, true)),
                None => (vec![sse::done_event()], (merged, finished, tokens, true)),
            })
        }
    })
    .flat_map(futures::stream::iter)
}
