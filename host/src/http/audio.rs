//! `POST /v1/audio/transcriptions`: a multipart upload (`file`, `model`, `language`, `prompt`,
//! `response_format`, `temperature`), decoded and transcribed by the Whisper model
//! (`transcription_service`), answered as `json`, `text`, `srt` or `vtt`, or with `stream=true`
//! as OpenAI streams a transcript (`transcript.text.delta` events as the text is decoded, then
//! `transcript.text.done`). The upload is read field by field with a byte cap, so an oversized
//! file is refused before it is all in memory.

use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::blocking;
use super::sse;
use super::state::SharedState;
use crate::audio::decode::{DecodeError, decode};
use crate::audio::transcribe::Temperature;
use crate::audio::transcribe::{Segment, Transcript};
use crate::audio::word_timing::WordTiming;
use crate::error::{ApiError, ErrorBody as ErrorResponse};
use crate::transcription_service::{Timing, TranscriptionError};

/// How the transcript is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    VerboseJson,
    Text,
    Srt,
    Vtt,
}

/// The request's fields, as read from the form.
#[derive(Default)]
struct Form {
    file: Option<(Vec<u8>, Option<String>)>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    format: Option<String>,
    temperature: Option<String>,
    stream: bool,
    /// `timestamp_granularities[]` named `word`, and `segment`.
    words: bool,
    segments: bool,
}

/// `usage` of a transcription: the audio's length.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DurationUsage {
    /// `duration`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub seconds: f64,
}

/// `response_format: json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TranscriptionJson {
    pub text: String,
    pub usage: DurationUsage,
}

/// One segment of `verbose_json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerboseSegment {
    pub id: usize,
    /// Where the segment's 30 s window starts, in 10 ms frames.
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

/// A timed word of `verbose_json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerboseWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// `response_format: verbose_json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TranscriptionVerboseJson {
    /// `transcribe`.
    pub task: &'static str,
    /// The language's name (`english`).
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub text: String,
    /// With `timestamp_granularities[]=segment` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<VerboseSegment>>,
    /// With `timestamp_granularities[]=word`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<VerboseWord>>,
    pub usage: DurationUsage,
}

/// The multipart form, for the OpenAPI document (the handler reads the form itself).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TranscriptionForm {
    /// The audio: WAV, FLAC, MP3, Ogg/Vorbis or Ogg/Opus, at most `max_audio_bytes` and
    /// `max_audio_seconds`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Any name (`whisper-1` too): the server's Whisper model answers.
    model: String,
    /// ISO-639-1; English-only models take `en` only.
    language: Option<String>,
    /// Text the audio continues (Whisper's previous-text prompt).
    prompt: Option<String>,
    /// `json` (default), `verbose_json` (with timed segments), `text`, `srt` or `vtt`.
    response_format: Option<String>,
    /// 0 (default): greedy, decoded again at 0.2 … 1.0 while the text fails Whisper's checks
    /// (streams stay greedy); above 0: sampled at that temperature.
    temperature: Option<f64>,
    /// Stream `transcript.text.delta` events, then `transcript.text.done`.
    stream: Option<bool>,
    /// With `verbose_json`: `segment` (the default) and/or `word` (each word timed).
    #[schema(rename = "timestamp_granularities[]")]
    timestamp_granularities: Option<Vec<String>>,
}

/// A streamed transcript's events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type")]
pub enum TranscriptEvent {
    #[serde(rename = "transcript.text.delta")]
    Delta { delta: String },
    #[serde(rename = "transcript.text.done")]
    Done { text: String },
}

fn too_large(what: &str) -> ApiError {
    ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, ..ApiError::invalid_param("file", what.to_owned()) }
}

async fn read_form(mut multipart: Multipart, max_bytes: usize) -> Result<Form, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("the multipart form cannot be read: {e}"))
    };
    let mut form = Form::default();
    let mut total = 0usize;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            total += chunk.len();
            if total > max_bytes {
                return Err(too_large(&format!("the upload is larger than the {max_bytes} bytes this server takes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = || {
            String::from_utf8(bytes.clone())
                .map_err(|_| ApiError::invalid_param(&name, format!("`{name}` must be text")))
        };
        match name.as_str() {
            "file" => {
                let extension =
                    file_name.as_deref().and_then(|n| n.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase());
                form.file = Some((bytes, extension));
            }
            "model" => form.model = Some(text()?),
            "language" => form.language = Some(text()?),
            "prompt" => form.prompt = Some(text()?),
            "response_format" => form.format = Some(text()?),
            "temperature" => form.temperature = Some(text()?),
            "timestamp_granularities[]" | "timestamp_granularities" => match text()?.as_str() {
                "segment" => form.segments = true,
                "word" => form.words = true,
                other => {
                    return Err(ApiError::invalid_param(
                        "timestamp_granularities",
                        format!(
                            "`timestamp_granularities` holds `segment` or `word`, got `{}`",
                            other.chars().take(40).collect::<String>()
                        ),
                    ));
                }
            },
            "stream" => {
                form.stream = match text()?.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::invalid_param("stream", "`stream` must be `true` or `false`")),
                }
            }
            "include[]" | "include" | "chunking_strategy" | "known_speaker_names[]" | "known_speaker_references[]" => {
                return Err(ApiError::unsupported_param(name.trim_end_matches("[]")));
            }
            other => return Err(ApiError::unknown_param(other)),
        }
    }
    Ok(form)
}

/// `HH:MM:SS` and milliseconds after `separator`.
fn timestamp(seconds: f64, separator: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{separator}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

fn cues(segments: &[Segment], separator: char) -> Vec<(String, &str)> {
    segments
        .iter()
        .filter(|s| !s.text.is_empty())
        .map(|s| (format!("{} --> {}", timestamp(s.start, separator), timestamp(s.end, separator)), s.text.as_str()))
        .collect()
}

/// The transcript's segments as `verbose_json` gives them.
fn verbose_segments(transcript: &Transcript) -> Vec<VerboseSegment> {
    transcript
        .segments
        .iter()
        .enumerate()
        .map(|(id, s)| VerboseSegment {
            id,
            seek: s.seek,
            start: s.start,
            end: s.end,
            // Whisper's segment text keeps the space its tokens begin with.
            text: format!(" {}", s.text),
            tokens: s.tokens.clone(),
            temperature: s.temperature,
            avg_logprob: s.avg_logprob,
            compression_ratio: crate::audio::transcribe::compression_ratio(&s.text),
            no_speech_prob: s.no_speech_prob,
        })
        .collect()
}

/// Which timings `verbose_json` carries.
#[derive(Debug, Clone, Copy)]
struct Granularities {
    segments: bool,
    words: bool,
}

fn render(transcript: &Transcript, format: Format, granularities: Granularities) -> Response {
    let plain = |body: String, kind: &'static str| ([(header::CONTENT_TYPE, kind)], body).into_response();
    match format {
        Format::Json => axum::Json(TranscriptionJson {
            text: transcript.text.clone(),
            usage: DurationUsage { kind: "duration", seconds: transcript.duration },
        })
        .into_response(),
        Format::VerboseJson => axum::Json(TranscriptionVerboseJson {
            task: "transcribe",
            language: crate::audio::transcribe::language_name(&transcript.language).to_owned(),
            duration: transcript.duration,
            text: transcript.text.clone(),
            segments: granularities.segments.then(|| verbose_segments(transcript)),
            words: granularities.words.then(|| {
                transcript
                    .segments
                    .iter()
                    .flat_map(|s| &s.words)
                    .map(|w: &WordTiming| VerboseWord { word: w.word.trim().to_owned(), start: w.start, end: w.end })
                    .collect()
            }),
            usage: DurationUsage { kind: "duration", seconds: transcript.duration },
        })
        .into_response(),
        Format::Text => plain(format!("{}\n", transcript.text), "text/plain; charset=utf-8"),
        Format::Srt => {
            let body = cues(&transcript.segments, ',')
                .iter()
                .enumerate()
                .map(|(i, (time, text))| format!("{}\n{time}\n{text}\n\n", i + 1))
                .collect::<String>();
            plain(body, "application/x-subrip; charset=utf-8")
        }
        Format::Vtt => {
            let body = cues(&transcript.segments, '.')
                .iter()
                .map(|(time, text)| format!("{time}\n{text}\n\n"))
                .collect::<String>();
            plain(format!("WEBVTT\n\n{body}"), "text/vtt; charset=utf-8")
        }
    }
}

/// Speech to text.
#[utoipa::path(post, path = "/v1/audio/transcriptions", tag = "audio",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcript: JSON (`TranscriptionJson`, or `TranscriptionVerboseJson` for `verbose_json`), text/srt/vtt as `response_format` asks, or with `stream=true` an event stream of `TranscriptEvent`s",
            content((TranscriptionJson = "application/json"), (TranscriptEvent = "text/event-stream"))),
        (status = 400, description = "A field is invalid, or the file is not audio", body = ErrorResponse),
        (status = 401, description = "The API key is missing or wrong", body = ErrorResponse),
        (status = 413, description = "The file is too large or too long", body = ErrorResponse),
        (status = 503, description = "No Whisper model is installed", body = ErrorResponse)))]
pub async fn transcriptions(
    State(state): State<SharedState>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!("the request must be a multipart/form-data upload with the audio in `file`: {e}"))
    })?;
    let form = read_form(multipart, state.settings.max_audio_bytes).await?;
    let (bytes, extension) =
        form.file.ok_or_else(|| ApiError::invalid_param("file", "`file` (the audio) is required"))?;
    if form.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
        return Err(ApiError::invalid_param(
            "model",
            "`model` is required (any name: this server's Whisper model answers)",
        ));
    }
    let format = match form.format.as_deref().unwrap_or("json") {
        "json" => Format::Json,
        "text" => Format::Text,
        "srt" => Format::Srt,
        "vtt" => Format::Vtt,
        "verbose_json" => Format::VerboseJson,
        "diarized_json" => return Err(ApiError::unsupported_param("response_format")),
        other => {
            return Err(ApiError::invalid_param(
                "response_format",
                format!("`response_format` must be `json`, `verbose_json`, `text`, `srt` or `vtt`, got `{other}`"),
            ));
        }
    };
    // 0 (the default): greedy, decoded again hotter while the text fails Whisper's checks, as
    // OpenAI documents it — but a stream stays greedy, so its text goes out as it is decoded.
    let temperature = match form.temperature.as_deref().map(|t| t.trim().parse::<f64>()) {
        None | Some(Ok(0.0)) if form.stream => Temperature::Fixed(0.0),
        None | Some(Ok(0.0)) => Temperature::Fallback,
        Some(Ok(v)) if v > 0.0 && v <= 1.0 => Temperature::Fixed(v),
        _ => return Err(ApiError::invalid_param("temperature", "`temperature` must be a number from 0 to 1")),
    };
    if form.words && format != Format::VerboseJson {
        return Err(ApiError::invalid_param(
            "timestamp_granularities",
            "`timestamp_granularities` needs `response_format: verbose_json`",
        ));
    }
    // Segments unless only words were asked for.
    let granularities = Granularities { segments: form.segments || !form.words, words: form.words };
    let timing = match format {
        Format::VerboseJson if form.words => Timing::Words,
        Format::Srt | Format::Vtt | Format::VerboseJson => Timing::Segments,
        Format::Json | Format::Text => Timing::Text,
    };
    let max_seconds = state.settings.max_audio_seconds;
    let service = state.transcription.clone();
    let (language, prompt) = (form.language, form.prompt);
    // Decoded before anything is streamed, so a bad file is still a plain 400.
    let audio = blocking::off_runtime("decoding audio", move || {
        decode(&bytes, extension.as_deref(), max_seconds).map_err(|e| match e {
            DecodeError::TooLong(_) => too_large(&e.to_string()),
            other => ApiError::invalid_param("file", other.to_string()),
        })
    })
    .await?;
    if form.stream {
        if format != Format::Json {
            return Err(ApiError::invalid_param("response_format", "a streamed transcript is JSON events"));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::task::spawn_blocking(move || {
            let mut on_text =
                |piece: &str| tx.send(sse::json_event(&TranscriptEvent::Delta { delta: piece.to_owned() })).is_ok();
            let last = match service.transcribe(
                &audio,
                language.as_deref(),
                prompt.as_deref(),
                Timing::Text,
                temperature,
                &mut on_text,
            ) {
                Ok((_, t)) => sse::json_event(&TranscriptEvent::Done { text: t.text }),
                Err(e) => sse::error_event(&transcription_error(e)),
            };
            let _ = tx.send(last);
            let _ = tx.send(sse::done_event());
        });
        return Ok(sse::respond(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)));
    }
    let transcript = blocking::off_runtime("transcribing", move || {
        let (_, transcript) = service
            // Subtitles and verbose_json want Whisper's timed segments; plain text reads better
            // without them.
            .transcribe(&audio, language.as_deref(), prompt.as_deref(), timing, temperature, &mut |_| true)
            .map_err(transcription_error)?;
        Ok(transcript)
    })
    .await?;
    Ok(render(&transcript, format, granularities))
}

/// A transcription's failure as the client sees it.
fn transcription_error(e: TranscriptionError) -> ApiError {
    match e {
        TranscriptionError::NotInstalled(msg) => ApiError::unavailable(msg),
        TranscriptionError::Load { .. } => ApiError::unavailable(e.to_string()),
        TranscriptionError::Transcribe(crate::audio::transcribe::TranscribeError::Language(_)) => {
            ApiError::invalid_param("language", e.to_string())
        }
        TranscriptionError::Transcribe(other) => ApiError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtitle_times_read_as_srt_and_vtt_spell_them() {
        assert_eq!(timestamp(3723.4567, ','), "01:02:03,457");
        assert_eq!(timestamp(0.0, '.'), "00:00:00.000");
        let transcript = Transcript {
            text: "Hello there.".into(),
            language: "en".into(),
            duration: 2.5,
            segments: vec![Segment {
                start: 0.0,
                end: 2.5,
                text: "Hello there.".into(),
                tokens: vec![],
                avg_logprob: -0.1,
                seek: 0,
                no_speech_prob: 0.01,
                temperature: 0.0,
                words: vec![],
            }],
        };
        let srt = render(&transcript, Format::Srt, Granularities { segments: true, words: false });
        assert_eq!(srt.headers()[header::CONTENT_TYPE], "application/x-subrip; charset=utf-8");
    }
}
