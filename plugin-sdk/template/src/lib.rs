//! A template Hearth plugin: an endpoint that reports statistics of a text — characters, words,
//! lines and, when settings grant `tokenize`, the loaded model's token count.
//!
//! `POST /v1/plugins/{name}/` with `{"text": "..."}` answers
//! `{"characters": 11, "words": 2, "lines": 1, "tokens": 3}`.
//!
//! Its `config:` in settings.yaml may set `max_chars` (default 100000): longer texts get a 400.

use hearth_plugin_sdk::{Config, EndpointPlugin, Request, Response, export_endpoint, host};
use serde::Deserialize;
use serde_json::json;

/// The plugin's settings (`config:` in settings.yaml).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_max_chars")]
    max_chars: usize,
}

fn default_max_chars() -> usize {
    100_000
}

#[derive(Deserialize)]
struct Body {
    text: String,
}

/// An OpenAI-shaped error answer.
fn error(status: u16, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

struct TextStats;

impl EndpointPlugin for TextStats {
    fn handle(config: &Config, request: Request) -> Result<Response, String> {
        let settings: Settings = config.typed()?;
        if request.method != "POST" {
            return Ok(error(405, "POST a JSON body {\"text\": ...}"));
        }
        let body: Body = match request.json() {
            Ok(body) => body,
            Err(e) => return Ok(error(400, &e)),
        };
        let characters = body.text.chars().count();
        if characters > settings.max_chars {
            return Ok(error(
                400,
                &format!("the text has {characters} characters; the most is {}", settings.max_chars),
            ));
        }
        // Without the `tokenize` grant the host says no, and the answer simply has no count.
        let tokens = host::tokenize(&body.text).ok().map(|ids| ids.len());
        Ok(Response::json(
            200,
            &json!({
                "characters": characters,
                "words": body.text.split_whitespace().count(),
                "lines": body.text.lines().count(),
                "tokens": tokens,
            }),
        ))
    }
}

export_endpoint!(TextStats);
