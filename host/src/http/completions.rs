//! `POST /v1/completions`: raw prompts (text, texts, token ids or lists of them), `n` choices
//! each, `echo`, and streaming as OpenAI streams `text_completion` chunks.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::body::JsonBody;
use super::generation::{ChoiceEvent, ChoiceRun};
use super::sse;
use super::state::{SharedState, size_generation, submit_choices, unix_now};
use super::types::{Completion, CompletionChoice, CompletionRequest, PromptField, Usage};
use super::validate;
use crate::error::ApiError;
use crate::prompt::TextTokenizer;

/// Most prompts in one batched request.
const MAX_PROMPTS: usize = 32;

/// One prompt: its text (for `echo`) and its ids.
struct Prompt {
    text: String,
    ids: Vec<u32>,
}

fn prompts(field: Option<PromptField>, tokenizer: &TextTokenizer, add_bos: bool) -> Result<Vec<Prompt>, ApiError> {
    let from_text = |text: String| -> Result<Prompt, ApiError> {
        let ids = tokenizer.encode(&text, add_bos)?;
        Ok(Prompt { text, ids })
    };
    let from_ids = |ids: Vec<i64>, param: String| -> Result<Prompt, ApiError> {
        let vocab = tokenizer.vocab_size() as i64;
        let ids = ids
            .into_iter()
            .map(|t| {
                if (0..vocab).contains(&t) {
                    Ok(t as u32)
                } else {
                    Err(ApiError::invalid_param(
                        param.clone(),
                        format!("token id {t} is outside the vocabulary (0..{vocab})"),
                    ))
                }
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let text = tokenizer.decode(&ids, false)?;
        Ok(Prompt { text, ids })
    };
    let list = match field {
        None => return Err(ApiError::invalid_param("prompt", "`prompt` is required")),
        Some(PromptField::Text(t)) => vec![from_text(t)?],
        Some(PromptField::Texts(ts)) => ts.into_iter().map(from_text).collect::<Result<_, _>>()?,
        Some(PromptField::Tokens(ids)) => vec![from_ids(ids, "prompt".into())?],
        Some(PromptField::TokenLists(lists)) => lists
            .into_iter()
            .enumerate()
            .map(|(i, ids)| from_ids(ids, format!("prompt[{i}]")))
            .collect::<Result<_, _>>()?,
    };
    if list.is_empty() {
        return Err(ApiError::invalid_param("prompt", "`prompt` must not be an empty list"));
    }
    if list.len() > MAX_PROMPTS {
        return Err(ApiError::invalid_param("prompt", format!("at most {MAX_PROMPTS} prompts per request")));
    }
    Ok(list)
}

pub async fn completions(
    State(state): State<SharedState>,
    JsonBody(mut req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    let served = state.ready()?;
    let common = req.take_common();
    state.check_model_field(&served, common.model.as_deref())?;
    validate::check_extra(&req.extra)?;
    if req.logprobs.is_some() {
        return Err(ApiError::unsupported_param("logprobs"));
    }
    if req.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(ApiError::unsupported_param("logit_bias"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported_param("suffix"));
    }
    let echo = req.echo.unwrap_or(false);
    let plan = validate::plan(common, None)?;
    if req.best_of.is_some_and(|b| b != plan.n as i64) {
        return Err(ApiError::unsupported_param("best_of"));
    }
    let tokenizer = served.engine.tokenizer().clone();
    let prompts = prompts(req.prompt, &tokenizer, plan.add_bos)?;
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
        let sub = size_generation(&served, &state.settings, &plan, prompt.ids)?;
        let prompt_tokens = sub.prompt.len();
        let run = submit_choices(&served, &plan, &sub, 1)?.pop().ok_or_else(|| ApiError::internal("no choice"))?;
        let w = CompletionWriter { id, created, model, include_usage: plan.include_usage };
        let echo_text = echo.then_some(prompt.text);
        return Ok(sse::respond(stream_completion(run, w, prompt_tokens, echo_text)));
    }

    // Every prompt's choices are submitted before any is awaited, so they generate together.
    let mut prompt_tokens = 0;
    let mut pending = Vec::new();
    for prompt in prompts {
        let sub = size_generation(&served, &state.settings, &plan, prompt.ids)?;
        prompt_tokens += sub.prompt.len();
        let runs = submit_choices(&served, &plan, &sub, plan.n)?;
        pending.push((prompt.text, runs));
    }
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    for (prompt_text, runs) in pending {
        for result in futures::future::join_all(runs.into_iter().map(ChoiceRun::collect)).await {
            let (text, reason, tokens) = result?;
            completion_tokens += tokens;
            let text = if echo { format!("{prompt_text}{text}") } else { text };
            choices.push(CompletionChoice {
                index: choices.len(),
                text,
                logprobs: None,
                finish_reason: Some(reason.as_openai()),
            });
        }
    }
    let body = Completion {
        id,
        object: "text_completion",
        created,
        model,
        choices,
        usage: Some(Some(Usage::new(prompt_tokens, completion_tokens))),
        system_fingerprint: None,
    };
    Ok(axum::Json(body).into_response())
}

struct CompletionWriter {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl CompletionWriter {
    fn chunk(&self, text: String, finish_reason: Option<&'static str>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice { index: 0, text, logprobs: None, finish_reason }],
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

fn stream_completion(
    run: ChoiceRun,
    w: CompletionWriter,
    prompt_tokens: usize,
    echo: Option<String>,
) -> impl futures::Stream<Item = axum::response::sse::Event> {
    futures::stream::unfold((run, w, echo, false), move |(mut run, w, echo, done)| async move {
        if done {
            return None;
        }
        if let Some(text) = echo {
            let event = sse::json_event(&w.chunk(text, None));
            return Some((vec![event], (run, w, None, false)));
        }
        match run.next().await {
            Ok(Some(ChoiceEvent::Text(text))) => {
                let event = sse::json_event(&w.chunk(text, None));
                Some((vec![event], (run, w, None, false)))
            }
            Ok(Some(ChoiceEvent::Finished { reason, completion_tokens })) => {
                let mut events = vec![sse::json_event(&w.chunk(String::new(), Some(reason.as_openai())))];
                if w.include_usage {
                    events.push(sse::json_event(&w.usage_chunk(Usage::new(prompt_tokens, completion_tokens))));
                }
                events.push(sse::done_event());
                Some((events, (run, w, None, true)))
            }
            Ok(None) => Some((vec![sse::done_event()], (run, w, None, true))),
            Err(e) => Some((vec![sse::error_event(&e), sse::done_event()], (run, w, None, true))),
        }
    })
    .flat_map(futures::stream::iter)
}
