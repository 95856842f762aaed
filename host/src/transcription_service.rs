//! The Whisper model behind `/v1/audio/transcriptions`: `whisper_model` (or the first Whisper
//! folder in the model dir), loaded on first use onto the server's `--device` and kept. One transcription runs
//! at a time (each already uses every compute thread). Blocking: call from `spawn_blocking`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hearth_settings::Settings;

use crate::audio::decode::Audio;
use crate::audio::is_speech_folder;
use crate::audio::transcribe::{Temperature, TranscribeError, Transcriber, Transcript};

#[derive(Debug, thiserror::Error)]
pub enum TranscriptionError {
    /// No Whisper folder: the user must install one or name another.
    #[error("{0}")]
    NotInstalled(String),
    #[error("the Whisper model `{name}` cannot be loaded: {reason}")]
    Load { name: String, reason: String },
    #[error(transparent)]
    Transcribe(#[from] TranscribeError),
}

/// How finely a transcript is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// One segment per 30 s window, decoded without timestamps.
    Text,
    /// Whisper's timed segments.
    Segments,
    /// Timed segments and words.
    Words,
}

pub struct TranscriptionService {
    requested: Option<String>,
    model_dir: PathBuf,
    device: hearth_settings::DeviceChoice,
    loaded: Mutex<Option<(String, Arc<Transcriber>)>>,
    /// Held while a transcription runs.
    running: Mutex<()>,
}

impl TranscriptionService {
    pub fn new(settings: &Settings) -> Self {
        Self {
            requested: settings.whisper_model.clone(),
            model_dir: settings.model_dir.clone(),
            device: settings.device,
            loaded: Mutex::new(None),
            running: Mutex::new(()),
        }
    }

    /// The folder to load: the named one (a name in the model dir, or a path), else the first
    /// Whisper folder there.
    fn folder(&self) -> Result<(String, PathBuf), TranscriptionError> {
        if let Some(name) = &self.requested {
            let path = [self.model_dir.join(name), PathBuf::from(name)].into_iter().find(|p| p.is_dir());
            return match path {
                Some(p) if is_speech_folder(&p) => Ok((name.clone(), p)),
                Some(p) => {
                    Err(TranscriptionError::NotInstalled(format!("{} is not a Whisper model folder", p.display())))
                }
                None => Err(TranscriptionError::NotInstalled(format!(
                    "the Whisper model `{name}` is not in {}",
                    self.model_dir.display()
                ))),
            };
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.model_dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir() && is_speech_folder(p)).collect())
            .unwrap_or_default();
        found.sort();
        let path = found.into_iter().next().ok_or_else(|| {
            TranscriptionError::NotInstalled(format!(
                "no Whisper model in {}: put one there (CTranslate2's layout, as faster-whisper uses) or name it with --whisper-model",
                self.model_dir.display()
            ))
        })?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok((name, path))
    }

    /// The loaded model, loading it first if needed.
    fn transcriber(&self) -> Result<(String, Arc<Transcriber>), TranscriptionError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((name, t)) = loaded.as_ref() {
            return Ok((name.clone(), t.clone()));
        }
        let (name, path) = self.folder()?;
        let device = crate::model::device::select(self.device)
            .map_err(|e| TranscriptionError::Load { name: name.clone(), reason: e.to_string() })?;
        tracing::info!(model = %name, device = %device.description, "loading the Whisper model");
        let t = Transcriber::load(&path, &device.device)
            .map_err(|e| TranscriptionError::Load { name: name.clone(), reason: e.to_string() })?;
        let t = Arc::new(t);
        *loaded = Some((name.clone(), t.clone()));
        Ok((name, t))
    }

    /// Transcribes `audio` (`timestamps`: segments from Whisper's timestamp tokens; `words`:
    /// each word timed too), handing `on_text` the text as it is decoded (false stops it); the
    /// model's name with the transcript.
    pub fn transcribe(
        &self,
        audio: &Audio,
        language: Option<&str>,
        prompt: Option<&str>,
        timing: Timing,
        temperature: Temperature,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, Transcript), TranscriptionError> {
        let (name, transcriber) = self.transcriber()?;
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let timestamps = timing != Timing::Text;
        let mut transcript =
            transcriber.transcribe_streaming(audio, language, prompt, timestamps, temperature, on_text)?;
        if timing == Timing::Words {
            transcriber.add_word_timings(audio, &mut transcript)?;
        }
        Ok((name, transcript))
    }
}
