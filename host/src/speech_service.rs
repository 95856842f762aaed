//! The Piper voices behind `/v1/audio/speech`: every `<name>.onnx` with its `<name>.onnx.json`
//! in the model dir or a folder there is a voice called `<name>`. `piper_voice` (or the first
//! voice found) answers when a request names none or one of OpenAI's voices; a voice is
//! loaded on first use onto the server's `--device` and kept. One synthesis runs at a time (each
//! already uses every compute thread). Blocking: call from `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hearth_settings::Settings;

use crate::audio::voice::{SpeakOptions, Voice, VoiceError, config_path};

/// OpenAI's voice names: each speaks with the default voice, so clients written for OpenAI work
/// unchanged.
pub const OPENAI_VOICES: &[&str] =
    &["alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer", "verse"];

#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// No voice at all: the user must install one.
    #[error("{0}")]
    NotInstalled(String),
    /// The request named a voice that is not installed.
    #[error("the voice `{name}` is not installed; installed: {installed}")]
    UnknownVoice { name: String, installed: String },
    #[error("the voice `{name}` cannot be loaded: {reason}")]
    Load { name: String, reason: String },
    #[error(transparent)]
    Speak(#[from] VoiceError),
}

pub struct SpeechService {
    requested: Option<String>,
    model_dir: PathBuf,
    device: hearth_settings::DeviceChoice,
    loaded: Mutex<HashMap<PathBuf, Arc<Voice>>>,
    /// Held while a voice speaks.
    running: Mutex<()>,
}

/// Whether `path` is a voice: an `.onnx` file with its `.onnx.json` beside it.
fn is_voice(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "onnx") && path.is_file() && config_path(path).is_file()
}

fn voice_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

impl SpeechService {
    pub fn new(settings: &Settings) -> Self {
        Self {
            requested: settings.piper_voice.clone(),
            model_dir: settings.model_dir.clone(),
            device: settings.device,
            loaded: Mutex::new(HashMap::new()),
            running: Mutex::new(()),
        }
    }

    /// The installed voices by name, sorted: in the model dir and one folder down.
    pub fn installed(&self) -> Vec<(String, PathBuf)> {
        let entries = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
        };
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries(&self.model_dir) {
            let candidates = if entry.is_dir() { entries(&entry) } else { vec![entry] };
            found.extend(candidates.into_iter().filter(|p| is_voice(p)).map(|p| (voice_name(&p), p)));
        }
        found.sort();
        found.dedup_by(|a, b| a.0 == b.0);
        found
    }

    /// The voice `requested` names: an installed voice's name; the default for none or an
    /// OpenAI name.
    fn resolve(&self, requested: Option<&str>) -> Result<(String, PathBuf), SpeechError> {
        let installed = self.installed();
        let named = |name: &str| installed.iter().find(|(n, _)| n == name).cloned();
        let list = || {
            if installed.is_empty() {
                "none".to_owned()
            } else {
                installed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            }
        };
        match requested {
            Some(name) if !OPENAI_VOICES.contains(&name) => {
                named(name).ok_or_else(|| SpeechError::UnknownVoice { name: name.to_owned(), installed: list() })
            }
            _ => match &self.requested {
                Some(default) => {
                    let path = Path::new(default);
                    if is_voice(path) {
                        return Ok((voice_name(path), path.to_owned()));
                    }
                    named(default).ok_or_else(|| {
                        SpeechError::NotInstalled(format!(
                            "the Piper voice `{default}` (--piper-voice) is not in {}; installed: {}",
                            self.model_dir.display(),
                            list()
                        ))
                    })
                }
                None => installed.into_iter().next().ok_or_else(|| {
                    SpeechError::NotInstalled(format!(
                        "no Piper voice in {}: put one there (<name>.onnx with its <name>.onnx.json) or name it with --piper-voice",
                        self.model_dir.display()
                    ))
                }),
            },
        }
    }

    /// The voice a request names, loading it first if needed.
    pub fn voice(&self, requested: Option<&str>) -> Result<(String, Arc<Voice>), SpeechError> {
        let (name, path) = self.resolve(requested)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = loaded.get(&path) {
            return Ok((name, v.clone()));
        }
        let load_error = |reason: String| SpeechError::Load { name: name.clone(), reason };
        // Checked before the weights are read, so a machine without espeak-ng says so at once.
        crate::audio::espeak::available().map_err(|e| SpeechError::NotInstalled(e.to_string()))?;
        let device = crate::model::device::select(self.device).map_err(|e| load_error(e.to_string()))?;
        tracing::info!(voice = %name, device = %device.description, "loading the Piper voice");
        let voice = Arc::new(Voice::load(&path, &device.device).map_err(|e| load_error(e.to_string()))?);
        loaded.insert(path, voice.clone());
        Ok((name, voice))
    }

    /// Speaks `sentences` (from [`Voice::sentences`]) with `voice`, handing each sentence's
    /// samples to `on_sentence`.
    pub fn speak(
        &self,
        voice: &Voice,
        sentences: &[Vec<i64>],
        options: SpeakOptions,
        on_sentence: &mut dyn FnMut(Vec<f32>) -> bool,
    ) -> Result<usize, SpeechError> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        Ok(voice.speak(sentences, options, on_sentence)?)
    }
}
