//! `POST /v1/completions`: raw prompts (text, texts, token ids or lists of them), `n` choices
//! each, `echo`, `logprobs` in the legacy shape (with `echo`, the prompt's tokens scored too),
//! and streaming as OpenAI streams `text_completion` chunks.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::auth::Caller;
use super::blocking;
use super::body::JsonBody;
use super::generation::{ChoiceEvent, ChoiceOutput, ChoiceRun};
use super::images;
use super::logprobs::{self, TokenTexts};
use super::sse;
use super::state::{SharedState, gbnf_constraint, size_generation, submit_choices};
use super::types::{ApiFinishReason, Completion, CompletionChoice, CompletionRequest, PromptField, Usage};
use super::validate;
use crate::engine::{CachedTokens, LogprobsQuery, TokenLogprob};
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::serving::unix_now;
use crate::tokenizer::TextTokenizer;

/// Most prompts in one batched request.
const MAX_PROMPTS: usize = 32;

/// One prompt: its text (for `echo`), its ids and its images' rows.
struct Prompt {
    text: String,
    ids: Vec<u32>,
    media: Vec<crate::model::MediaSpan>,
}

fn prompts(field: Option<PromptField>, tokenizer: &TextTokenizer, add_bos: bool) -> Result<Vec<Prompt>, ApiError> {
    let from_text = |text: String| -> Result<Prompt, ApiError> {
        let ids = tokenizer.encode(&text, add_bos)?;
        Ok(Prompt { text, ids, media: Vec::new() })
    };
    let from_ids = |ids: Vec<i64>, param: String| -> Result<Prompt, ApiError> {
        let ids = tokenizer
            .ids_in_vocabulary(&ids)
            .map_err(|e| ApiError::invalid_param(format!("{param}[{}]", e.index), e.to_string()))?;
        let text = tokenizer.decode(&ids, false)?;
        Ok(Prompt { text, ids, media: Vec::new() })
    };
    // Counted before any is tokenized: each costs a tokenizer pass.
    let count = match &field {
        None => return Err(ApiError::invalid_param("prompt", "`prompt` is required")),
        Some(PromptField::Texts(ts)) => ts.len(),
        Some(PromptField::TokenLists(lists)) => lists.len(),
        Some(_) => 1,
    };
    if count == 0 {
        return Err(ApiError::invalid_param("prompt", "`prompt` must not be an empty list"));
    }
    if count > MAX_PROMPTS {
        return Err(ApiError::invalid_param(
            "prompt",
            format!("at most {MAX_PROMPTS} prompts per request, got {count}"),
        ));
    }
    match field {
        None => Err(ApiError::invalid_param("prompt", "`prompt` is required")),
        Some(PromptField::Text(t)) => Ok(vec![from_text(t)?]),
        Some(PromptField::Texts(ts)) => ts.into_iter().map(from_text).collect(),
        Some(PromptField::Tokens(ids)) => Ok(vec![from_ids(ids, "prompt".into())?]),
        Some(PromptField::TokenLists(lists)) => {
            lists.into_iter().enumerate().map(|(i, ids)| from_ids(ids, format!("prompt[{i}]"))).collect()
        }
    }
}

/// A text completion of a raw prompt: the whole answer, or with `stream: true` server-sent
/// events, each a `text_completion` (the `Completion` schema), then `data: [DONE]`.
#[utoipa::path(post, path = "/v1/completions", tag = "completions", request_body = CompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true` an event stream of `Completion`s",
            content((Completion = "application/json"), (super::sse::StreamEvent = "text/event-stream"))),
        (status = 400, description = "A field is invalid", body = ErrorResponse), (status = 401, description = "The API key is missing or wrong", body = ErrorResponse), (status = 429, description = "The queue is full: try again (Retry-After)", body = ErrorResponse), (status = 503, description = "No model is ready", body = ErrorResponse)))]
pub async fn completions(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    JsonBody(mut req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    let served = state.ready()?;
    let common = req.take_common();
    state.check_model_field(&served, common.model.as_deref())?;
    let sampling = state.sampling(&mut req.extra, &served)?;
    validate::check_extra(&req.extra)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported_param("suffix"));
    }
    let echo = req.echo.unwrap_or(false);
    let mut plan = validate::plan(common, sampling, None)?;
    plan.sampling.logit_bias = validate::logit_bias(req.logit_bias.as_ref(), served.engine.tokenizer().vocab_size())?;
    if let Some(n) = req.logprobs {
        plan.logprobs = Some(LogprobsQuery { top: logprobs::top_count("logprobs", n)?, prompt: echo });
    }
    if req.best_of.is_some_and(|b| b != plan.n as i64) {
        return Err(ApiError::unsupported_param("best_of"));
    }
    let tokenizer = served.engine.tokenizer().clone();
    // text-generation-webui's multimodal completions: `messages` bring the images (and, without
    // a `prompt`, the text with its `<__media__>` placeholders).
    let (image_refs, messages_text) = match req.messages.take() {
        Some(messages) => (super::chat::image_refs(&messages)?, Some(super::chat::plain_text(&messages))),
        None => (Vec::new(), None),
    };
    let media_text = match (image_refs.is_empty(), req.prompt.take()) {
        (true, prompt) => {
            req.prompt = prompt.or(messages_text.map(PromptField::Text));
            None
        }
        (false, Some(PromptField::Text(text))) => Some(text),
        (false, None) => messages_text,
        (false, Some(_)) => {
            return Err(ApiError::invalid_param(
                "prompt",
                "with images, `prompt` must be one text holding a `<__media__>` placeholder per image",
            ));
        }
    };
    let (constraint, mut prompts) = {
        let (served, grammar, tokenizer, add_bos, prompt) =
            (served.clone(), plan.grammar.clone(), tokenizer.clone(), plan.add_bos, req.prompt.take());
        let has_images = media_text.is_some();
        blocking::off_runtime("preparing the prompt", move || {
            let constraint = grammar.map(|gbnf| gbnf_constraint(&served, &gbnf)).transpose()?;
            // A prompt with images is tokenized around them once they are read.
            let prompts = if has_images { Vec::new() } else { prompts(prompt, &tokenizer, add_bos)? };
            Ok((constraint, prompts))
        })
        .await?
    };
    if let Some(text) = media_text {
        let made =
            images::media_prompt(&state, &served, text.clone(), images::MEDIA_MARKER, image_refs, plan.add_bos).await?;
        prompts = vec![Prompt { text, ids: made.ids, media: made.media }];
    }
    if state.settings.debug {
        for p in &prompts {
            tracing::info!(prompt = %p.text, "completion prompt");
        }
    }
    let id = format!("cmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let model = served.name.clone();

    if plan.stream {
        if prompts.len() > 1 || plan.n > 1 {
            return Err(ApiError::invalid_param("stream", "streaming needs a single prompt and `n` of 1"));
        }
        let Some(prompt) = prompts.into_iter().next() else {
            return Err(ApiError::invalid_param("prompt", "no prompt"));
        };
        let mut sub = size_generation(&served, &state.settings, &plan, prompt.ids)?;
        sub.constraint = constraint;
        sub.media = prompt.media.into();
        let prompt_tokens = sub.prompt.len();
        let run = submit_choices(&served, &plan, &sub, 1, &caller.owner)?
            .pop()
            .ok_or_else(|| ApiError::internal("no choice"))?;
        let w = CompletionWriter {
            id,
            created,
            model,
            include_usage: plan.include_usage,
            texts: plan.logprobs.map(|_| TokenTexts::new(tokenizer)),
        };
        let echo_text = echo.then_some(prompt.text);
        let prompt = PromptCount { tokens: prompt_tokens, cached: run.cached_tokens() };
        return Ok(sse::respond(stream_completion(run, w, prompt, echo_text)));
    }

    // Every prompt's choices are submitted before any is awaited, so they generate together.
    let mut prompt_tokens = 0;
    let mut cached = Vec::new();
    let mut pending = Vec::new();
    for prompt in prompts {
        let mut sub = size_generation(&served, &state.settings, &plan, prompt.ids)?;
        sub.constraint = constraint.clone();
        sub.media = prompt.media.into();
        prompt_tokens += sub.prompt.len();
        let runs = submit_choices(&served, &plan, &sub, plan.n, &caller.owner)?;
        // A prompt is counted once however many choices share it: so are its cached tokens.
        cached.extend(runs.first().map(ChoiceRun::cached_tokens));
        pending.push((prompt.text, runs));
    }
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    let texts = plan.logprobs.map(|_| TokenTexts::new(tokenizer));
    for (prompt_text, runs) in pending {
        for result in futures::future::join_all(runs.into_iter().map(ChoiceRun::collect)).await {
            let ChoiceOutput { text, reason, completion_tokens: tokens, logprobs, prompt_logprobs } = result?;
            completion_tokens += tokens;
            let text = if echo { format!("{prompt_text}{text}") } else { text };
            let logprobs = texts.as_ref().map(|texts| {
                let scored: Vec<TokenLogprob> = prompt_logprobs.into_iter().chain(logprobs).collect();
                logprobs::legacy(&scored, texts, &mut 0)
            });
            choices.push(CompletionChoice { index: choices.len(), text, logprobs, finish_reason: Some(reason.into()) });
        }
    }
    let body = Completion {
        id,
        object: "text_completion",
        created,
        model,
        choices,
        usage: Some(Some(Usage::new(prompt_tokens, completion_tokens).cached(cached.iter().map(|c| c.get()).sum()))),
        system_fingerprint: None,
    };
    Ok(axum::Json(body).into_response())
}

struct CompletionWriter {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Set when chunks carry `logprobs`.
    texts: Option<TokenTexts>,
}

impl CompletionWriter {
    /// A chunk; `scored` are the tokens behind its text, `offset` where they start.
    fn chunk(
        &self,
        text: String,
        scored: &[TokenLogprob],
        offset: &mut usize,
        finish_reason: Option<ApiFinishReason>,
    ) -> Completion {
        let logprobs = self.texts.as_ref().map(|texts| logprobs::legacy(scored, texts, offset));
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice { index: 0, text, logprobs, finish_reason }],
            usage: self.include_usage.then_some(None),
            system_fingerprint: None,
        }
    }

    fn usage_chunk(&self, usage: Usage) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices: vec![],
            usage: Some(Some(usage)),
            system_fingerprint: None,
        }
    }
}

/// A prompt's size and how much of it came from the KV cache (for the usage chunk).
struct PromptCount {
    tokens: usize,
    cached: CachedTokens,
}

/// The chunks of one streamed completion: the echoed prompt (with its tokens' scores, which
/// come first from the engine, when asked for), each text delta with the scores of its tokens,
/// the finish chunk, the usage chunk when asked for, then `[DONE]`.
fn stream_completion(
    run: ChoiceRun,
    w: CompletionWriter,
    prompt: PromptCount,
    echo: Option<String>,
) -> impl futures::Stream<Item = axum::response::sse::Event> {
    struct State {
        run: ChoiceRun,
        w: CompletionWriter,
        echo: Option<String>,
        /// Scores waiting for the chunk of their text.
        scored: Vec<TokenLogprob>,
        offset: usize,
        done: bool,
    }
    let start = State { run, w, echo, scored: Vec::new(), offset: 0, done: false };
    futures::stream::unfold(start, move |mut st| {
        let cached = prompt.cached.clone();
        let prompt_tokens = prompt.tokens;
        async move {
            if st.done {
                return None;
            }
            // Without scores the echo goes out at once; with them it waits for the prompt's.
            if st.w.texts.is_none()
                && let Some(text) = st.echo.take()
            {
                let event = sse::json_event(&st.w.chunk(text, &[], &mut st.offset, None));
                return Some((vec![event], st));
            }
            loop {
                let events = match st.run.next().await {
                    Ok(Some(ChoiceEvent::PromptLogprobs(prompt))) => match st.echo.take() {
                        Some(text) => vec![sse::json_event(&st.w.chunk(text, &prompt, &mut st.offset, None))],
                        None => continue,
                    },
                    Ok(Some(ChoiceEvent::Logprobs(scored))) => {
                        st.scored.extend(scored);
                        continue;
                    }
                    Ok(Some(ChoiceEvent::Text(text))) => {
                        let scored = std::mem::take(&mut st.scored);
                        vec![sse::json_event(&st.w.chunk(text, &scored, &mut st.offset, None))]
                    }
                    Ok(Some(ChoiceEvent::Finished { reason, completion_tokens })) => {
                        let scored = std::mem::take(&mut st.scored);
                        let last = st.w.chunk(String::new(), &scored, &mut st.offset, Some(reason.into()));
                        let mut events = vec![sse::json_event(&last)];
                        if st.w.include_usage {
                            let usage = Usage::new(prompt_tokens, completion_tokens).cached(cached.get());
                            events.push(sse::json_event(&st.w.usage_chunk(usage)));
                        }
                        events.push(sse::done_event());
                        st.done = true;
                        events
                    }
                    Ok(None) => {
                        st.done = true;
                        vec![sse::done_event()]
                    }
                    Err(e) => {
                        st.done = true;
                        vec![sse::error_event(&e), sse::done_event()]
                    }
                };
                return Some((events, st));
            }
        }
    })
    .flat_map(futures::stream::iter)
}
