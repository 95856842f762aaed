//! Errors as the API reports them: an HTTP status and OpenAI's error body
//! `{"error": {"message", "type", "param", "code"}}`. Every module's error converts into
//! [`ApiError`] here, in one place, so the status table lives in one file.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::decoded_stream::StreamError;
use crate::engine::EngineError;
use crate::prompt::TemplateError;
use crate::serving::GrammarUnavailable;
use crate::tokenizer::TokenizerError;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, …
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ErrorResponse)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

/// The `error` object: OpenAI's `message`, `type`, `param` (the request field at fault, where
/// one is) and `code`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None }
    }

    /// 400 about one request field.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        let param = param.into();
        Self { param: Some(param), ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }

    /// 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400: a parameter Hearth knows but does not implement yet, sent with a value that matters.
    pub fn unsupported_param(param: &str) -> Self {
        Self {
            code: Some("unsupported_parameter"),
            ..Self::invalid_param(param, format!("parameter `{param}` is not supported by this server yet"))
        }
    }

    /// 400: a parameter neither OpenAI nor text-generation-webui defines.
    pub fn unknown_param(param: &str) -> Self {
        Self {
            code: Some("unknown_parameter"),
            ..Self::invalid_param(param, format!("Unrecognized request argument supplied: {param}"))
        }
    }

    pub fn context_length_exceeded(prompt_tokens: usize, context: usize) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            ..Self::invalid_param(
                "messages",
                format!(
                    "This model's maximum context length is {context} tokens, but the prompt has {prompt_tokens} tokens. Shorten the prompt."
                ),
            )
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "Incorrect or missing API key. Send it as `Authorization: Bearer <key>`.",
            )
        }
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", "This route needs the admin key (`--admin-key`).")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            code: Some("model_not_found"),
            param: Some("model".into()),
            ..Self::not_found(format!("The model `{model}` does not exist or is not loaded"))
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self { code: Some("server_overloaded"), ..Self::new(StatusCode::TOO_MANY_REQUESTS, "server_error", message) }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { code: Some("model_not_loaded"), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }

    /// The body as a JSON value (for a final SSE event).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or(serde_json::Value::Null)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // A full queue drains within seconds; clients that honour Retry-After (openai-python
            // does) come back then instead of at once.
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<TemplateError> for ApiError {
    fn from(e: TemplateError) -> Self {
        ApiError::invalid_param("messages", e.to_string())
    }
}

impl From<TokenizerError> for ApiError {
    fn from(e: TokenizerError) -> Self {
        match e {
            TokenizerError::Encode(_) | TokenizerError::Decode(_) => ApiError::bad_request(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Failed(_) => ApiError::internal(e.to_string()),
            StreamError::Plugin(e) => e.into(),
            StreamError::EngineStopped => ApiError::unavailable(e.to_string()),
            StreamError::Decode(e) => e.into(),
        }
    }
}

impl From<GrammarUnavailable> for ApiError {
    fn from(e: GrammarUnavailable) -> Self {
        ApiError::internal(e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Overloaded(_) => ApiError::overloaded(e.to_string()),
            EngineError::Stopped => ApiError::unavailable(e.to_string()),
        }
    }
}
