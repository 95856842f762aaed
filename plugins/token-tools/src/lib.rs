//! Token tools: an endpoint plugin that counts, tokenizes and truncates text with the loaded
//! model's tokenizer (it needs the `tokenize` grant).
//!
//! - `GET  /v1/plugins/{name}/` — what it offers
//! - `POST /v1/plugins/{name}/count`    `{"text"}` → `{"tokens": n}`
//! - `POST /v1/plugins/{name}/tokenize` `{"text"}` → `{"ids": [...], "pieces": [...]}`
//! - `POST /v1/plugins/{name}/truncate` `{"text", "max_tokens", "keep": "start"|"end"}` →
//!   `{"text", "tokens", "truncated"}` — fit a document into a context budget.

use hearth_plugin_sdk::{Config, EndpointPlugin, Request, Response, export_endpoint, host};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct TextBody {
    text: String,
}

#[derive(Deserialize)]
struct TruncateBody {
    text: String,
    max_tokens: usize,
    #[serde(default)]
    keep: Keep,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Keep {
    #[default]
    Start,
    End,
}

fn error(status: u16, message: &str) -> Response {
    Response::json(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

struct TokenTools;

impl EndpointPlugin for TokenTools {
    fn handle(_config: &Config, request: Request) -> Result<Response, String> {
        let route = request.path.trim_end_matches('/');
        Ok(match (request.method.as_str(), route) {
            ("GET", "") => Response::json(
                200,
                &json!({"routes": ["POST /count {text}", "POST /tokenize {text}", "POST /truncate {text, max_tokens, keep}"]}),
            ),
            ("POST", "/count") => match request.json::<TextBody>() {
                Ok(body) => Response::json(200, &json!({"tokens": host::tokenize(&body.text)?.len()})),
                Err(e) => error(400, &e),
            },
            ("POST", "/tokenize") => match request.json::<TextBody>() {
                Ok(body) => {
                    let ids = host::tokenize(&body.text)?;
                    let pieces = ids.iter().map(|&id| host::detokenize(&[id])).collect::<Result<Vec<_>, _>>()?;
                    Response::json(200, &json!({"ids": ids, "pieces": pieces}))
                }
                Err(e) => error(400, &e),
            },
            ("POST", "/truncate") => match request.json::<TruncateBody>() {
                Ok(body) => {
                    let ids = host::tokenize(&body.text)?;
                    if ids.len() <= body.max_tokens {
                        Response::json(200, &json!({"text": body.text, "tokens": ids.len(), "truncated": false}))
                    } else {
                        let kept = if body.keep == Keep::End {
                            &ids[ids.len() - body.max_tokens..]
                        } else {
                            &ids[..body.max_tokens]
                        };
                        Response::json(
                            200,
                            &json!({"text": host::detokenize(kept)?, "tokens": kept.len(), "truncated": true}),
                        )
                    }
                }
                Err(e) => error(400, &e),
            },
            (_, "" | "/count" | "/tokenize" | "/truncate") => error(405, "method not allowed"),
            _ => error(404, "unknown route: GET / lists them"),
        })
    }
}

export_endpoint!(TokenTools);
