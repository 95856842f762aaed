//! `POST /v1/audio/speech`: text to speech with a Piper voice (`speech_service`). OpenAI's
//! fields — `model` (any name), `input` (at most 4096 characters), `voice` (an installed voice's
//! name, or one of OpenAI's, which speak with the default voice), `response_format` (`wav`,
//! `flac`, `opus`, `pcm`; WAV when left out), `speed` (0.25–4) — and Piper's `noise_scale` and `noise_w`
//! with a `seed` for the noise, so speech can be repeated exactly. `instructions` steer only
//! OpenAI's gpt-4o voices and are ignored, as OpenAI ignores them for `tts-1`.
//!
//! The voice is loaded and the text phonemized before the answer starts, so those failures are
//! plain errors. `pcm` is then streamed sentence by sentence as each is synthesized; WAV, FLAC
//! and Opus are sent whole, their headers needing the length.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::blocking;
use super::body::JsonBody;
use super::state::SharedState;
use crate::audio::speech_format::{FormatError, SpeechFormat, encode};
use crate::audio::voice::{SpeakOptions, VoiceError};
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::speech_service::SpeechError;

/// OpenAI's limit on `input`, in characters.
const MAX_INPUT_CHARS: usize = 4096;

/// `voice`: a name, or OpenAI's object form `{"id": …}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VoiceField {
    Name(String),
    Object { id: String },
}

/// `POST /v1/audio/speech`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpeechRequest {
    /// Any name (`tts-1`, `gpt-4o-mini-tts` too): the server's Piper voices answer.
    pub model: String,
    /// The text to speak, 1 to 4096 characters.
    #[schema(min_length = 1, max_length = 4096)]
    pub input: String,
    /// An installed Piper voice (`en_US-joe-medium`), or one of OpenAI's names (`alloy`, …),
    /// which speak with the default voice. Left out: the default voice.
    #[serde(default)]
    pub voice: Option<VoiceField>,
    /// Ignored: Piper voices cannot be steered by instructions.
    #[serde(default)]
    pub instructions: Option<String>,
    /// `wav` (default), `flac`, `opus` (Ogg, 24 kHz) or `pcm` (16-bit little-endian mono at
    /// 24 kHz).
    #[serde(default)]
    pub response_format: Option<String>,
    /// 0.25 to 4.0 (default 1).
    #[serde(default)]
    #[schema(minimum = 0.25, maximum = 4.0)]
    pub speed: Option<f64>,
    /// `audio` only.
    #[serde(default)]
    pub stream_format: Option<String>,
    /// Piper's phoneme noise, 0 to 2 (default: the voice's; 0 is deterministic).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub noise_scale: Option<f32>,
    /// Piper's duration noise, 0 to 2 (default: the voice's; 0 is deterministic).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub noise_w: Option<f32>,
    /// Seeds the noise, so the same request gives the same audio.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// Checks the request; the voice it names and how to speak.
fn check(req: &SpeechRequest) -> Result<(Option<String>, SpeechFormat, SpeakOptions), ApiError> {
    if req.model.trim().is_empty() {
        return Err(ApiError::invalid_param("model", "`model` is required (any name: this server's voices answer)"));
    }
    if req.input.trim().is_empty() {
        return Err(ApiError::invalid_param("input", "`input` must be text to speak"));
    }
    let chars = req.input.chars().count();
    if chars > MAX_INPUT_CHARS {
        return Err(ApiError {
            code: Some("string_above_max_length"),
            ..ApiError::invalid_param(
                "input",
                format!("`input` is {chars} characters long; at most {MAX_INPUT_CHARS} are spoken in one request"),
            )
        });
    }
    let format = SpeechFormat::parse(req.response_format.as_deref()).map_err(|e| match e {
        FormatError::Unsupported(_) => {
            ApiError { code: Some("unsupported_value"), ..ApiError::invalid_param("response_format", e.to_string()) }
        }
        other => ApiError::invalid_param("response_format", other.to_string()),
    })?;
    let speed = req.speed.unwrap_or(1.0);
    if !(0.25..=4.0).contains(&speed) {
        return Err(ApiError::invalid_param("speed", "`speed` must be from 0.25 to 4.0"));
    }
    match req.stream_format.as_deref() {
        None | Some("audio") => {}
        Some("sse") => return Err(ApiError::unsupported_param("stream_format")),
        Some(other) => {
            return Err(ApiError::invalid_param(
                "stream_format",
                format!(
                    "`stream_format` must be `audio` or `sse`, got `{}`",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    }
    for (name, value) in [("noise_scale", req.noise_scale), ("noise_w", req.noise_w)] {
        if value.is_some_and(|v| !(0.0..=2.0).contains(&v)) {
            return Err(ApiError::invalid_param(name, format!("`{name}` must be from 0 to 2")));
        }
    }
    let voice = match &req.voice {
        Some(VoiceField::Name(n) | VoiceField::Object { id: n }) if n.trim().is_empty() => {
            return Err(ApiError::invalid_param("voice", "`voice` must name a voice"));
        }
        Some(VoiceField::Name(n) | VoiceField::Object { id: n }) => Some(n.clone()),
        None => None,
    };
    let options =
        SpeakOptions { speed: speed as f32, noise_scale: req.noise_scale, noise_w: req.noise_w, seed: req.seed };
    Ok((voice, format, options))
}

/// Text to speech.
#[utoipa::path(post, path = "/v1/audio/speech", tag = "audio", request_body = SpeechRequest,
    responses(
        (status = 200, description = "The audio, as `response_format` asks: `audio/wav`, `audio/flac`, `audio/ogg` (Opus) or `audio/pcm` (streamed)",
            content((Vec<u8> = "audio/wav"), (Vec<u8> = "audio/flac"), (Vec<u8> = "audio/ogg"), (Vec<u8> = "audio/pcm"))),
        (status = 400, description = "A field is invalid, or the voice is not installed", body = ErrorResponse),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 503, description = "No Piper voice is installed, or espeak-ng is missing", body = ErrorResponse)))]
pub async fn speech(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<SpeechRequest>,
) -> Result<Response, ApiError> {
    let (voice_name, format, options) = check(&req)?;
    let service = state.speech.clone();
    let lookup = service.clone();
    let text = req.input;
    // The voice loaded and the text phonemized before anything is sent, so either failing is
    // a plain error.
    let (voice, sentences) = blocking::off_runtime("loading the voice", move || {
        let (_, voice) = lookup.voice(voice_name.as_deref()).map_err(speech_error)?;
        let sentences = voice.sentences(&text).map_err(|e| speech_error(e.into()))?;
        if sentences.is_empty() {
            return Err(ApiError::invalid_param("input", "`input` has no words to speak"));
        }
        Ok((voice, sentences))
    })
    .await?;
    if format == SpeechFormat::Pcm {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
        let rate = voice.sample_rate();
        tokio::task::spawn_blocking(move || {
            let mut on_sentence = |samples: Vec<f32>| match encode(&samples, rate, SpeechFormat::Pcm) {
                Ok(bytes) => tx.blocking_send(Ok(bytes)).is_ok(),
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    false
                }
            };
            if let Err(e) = service.speak(&voice, &sentences, options, &mut on_sentence) {
                // The status is sent; a failure now can only cut the stream short.
                tracing::warn!(error = %e, "speech failed while streaming");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Ok(([(header::CONTENT_TYPE, SpeechFormat::Pcm.content_type())], body).into_response());
    }
    let bytes = blocking::off_runtime("speaking", move || {
        let mut samples = Vec::new();
        service
            .speak(&voice, &sentences, options, &mut |s| {
                samples.extend_from_slice(&s);
                true
            })
            .map_err(speech_error)?;
        encode(&samples, voice.sample_rate(), format).map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
}

/// A synthesis failure as the client sees it.
fn speech_error(e: SpeechError) -> ApiError {
    match e {
        SpeechError::NotInstalled(msg) => ApiError::unavailable(msg),
        SpeechError::UnknownVoice { .. } => ApiError::invalid_param("voice", e.to_string()),
        SpeechError::Load { .. } => ApiError::unavailable(e.to_string()),
        SpeechError::Speak(VoiceError::Phonemes(p)) => ApiError::unavailable(p.to_string()),
        SpeechError::Speak(other) => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<SpeechRequest, ApiError> {
        crate::http::validate::parse_body(json.to_string().as_bytes())
    }

    #[test]
    fn fields_are_checked_and_named() {
        let ok = request(serde_json::json!({"model": "tts-1", "input": "Hi.", "voice": "alloy"})).unwrap();
        let (voice, format, options) = check(&ok).unwrap();
        assert_eq!((voice.as_deref(), format, options.speed), (Some("alloy"), SpeechFormat::Wav, 1.0));
        let object = request(serde_json::json!({"model": "m", "input": "Hi.", "voice": {"id": "en_US-joe-medium"}}));
        assert_eq!(check(&object.unwrap()).unwrap().0.as_deref(), Some("en_US-joe-medium"));
        let cases = [
            (serde_json::json!({"model": "m", "input": "  "}), "input"),
            (serde_json::json!({"model": "m", "input": "x".repeat(4097)}), "input"),
            (serde_json::json!({"model": "m", "input": "Hi.", "speed": 5.0}), "speed"),
            (serde_json::json!({"model": "m", "input": "Hi.", "response_format": "mp3"}), "response_format"),
            (serde_json::json!({"model": "m", "input": "Hi.", "response_format": "ogg"}), "response_format"),
            (serde_json::json!({"model": "m", "input": "Hi.", "stream_format": "sse"}), "stream_format"),
            (serde_json::json!({"model": "m", "input": "Hi.", "noise_scale": -1.0}), "noise_scale"),
            (serde_json::json!({"model": "", "input": "Hi."}), "model"),
        ];
        for (json, param) in cases {
            let err = check(&request(json.clone()).unwrap()).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param), "{json}");
        }
        assert!(request(serde_json::json!({"model": "m", "input": "Hi.", "volume": 2})).is_err());
        assert!(request(serde_json::json!({"input": "Hi."})).is_err());
    }
}
