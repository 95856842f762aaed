//! Server-sent events as OpenAI streams them: `data: {json}` events, a final `data: [DONE]`, and
//! an error after the first byte sent as one more `data: {"error": …}` event before `[DONE]`.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Serialize;

use crate::error::ApiError;

/// One server-sent event of a streamed answer, as OpenAPI describes an event stream's items:
/// `data` holds a chunk as JSON (a `ChatChunk` for chat, a `Completion` for completions), and
/// the stream's last event's `data` is `[DONE]`. Only its schema is used: the framing is
/// written by this module's functions.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    data: String,
}

/// One JSON event.
pub fn json_event<T: Serialize>(value: &T) -> Event {
    match serde_json::to_string(value) {
        Ok(text) => Event::default().data(text),
        Err(e) => error_event(&ApiError::internal(format!("cannot serialize a chunk: {e}"))),
    }
}

/// One JSON event with an `event:` name (the Responses API names each event by its type).
pub fn named_json_event<T: Serialize>(name: &'static str, value: &T) -> Event {
    match serde_json::to_string(value) {
        Ok(text) => Event::default().event(name).data(text),
        Err(e) => error_event(&ApiError::internal(format!("cannot serialize an event: {e}"))),
    }
}

/// The event that reports a failure mid-stream.
pub fn error_event(err: &ApiError) -> Event {
    Event::default().data(err.to_json().to_string())
}

/// The terminating event.
pub fn done_event() -> Event {
    Event::default().data("[DONE]")
}

/// Wraps an event stream as the response.
pub fn respond(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    use futures::StreamExt;
    Sse::new(events.map(Ok::<_, Infallible>)).into_response()
}
