//! text-generation-webui's per-model settings tables in the model dir: `config.yaml` guesses
//! settings from a model's file name where the model says nothing itself, and
//! `config-user.yaml` holds the user's own, which win over the model's. Each maps a regular
//! expression (matched, case-insensitively, from the start of the model's name) to settings;
//! where several match, the later one wins. Hearth reads `instruction_template` from them.

use std::path::Path;

use regex::Regex;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

/// The guess table (`config.yaml`) and the user's table (`config-user.yaml`).
pub const GUESS_FILE: &str = "config.yaml";
pub const USER_FILE: &str = "config-user.yaml";

/// The settings `file` (in `model_dir`) gives `model_name`, later matches over earlier ones;
/// empty when the file does not exist.
pub fn settings_for(model_dir: &Path, file: &str, model_name: &str) -> Result<Map<String, Value>, ModelConfigError> {
    let path = model_dir.join(file);
    let invalid = |reason: String| ModelConfigError::Invalid { file: path.display().to_string(), reason };
    if !path.exists() {
        return Ok(Map::new());
    }
    let table = match super::user_files::read_data(&path).map_err(invalid)? {
        Value::Null => return Ok(Map::new()),
        Value::Object(table) => table,
        _ => return Err(invalid("must map patterns to settings".into())),
    };
    let name = model_name.to_lowercase();
    let mut settings = Map::new();
    for (pattern, values) in table {
        // Python's re.match: anchored at the start only.
        let re = Regex::new(&format!("^(?:{})", pattern.to_lowercase()))
            .map_err(|e| invalid(format!("pattern `{pattern}`: {e}")))?;
        if !re.is_match(&name) {
            continue;
        }
        match values {
            Value::Object(values) => settings.extend(values),
            Value::Null => {}
            _ => return Err(invalid(format!("the settings of `{pattern}` must be a mapping"))),
        }
    }
    Ok(settings)
}

/// The instruction template name these settings give, if any.
pub fn instruction_template(settings: &Map<String, Value>) -> Option<&str> {
    settings.get("instruction_template").and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// The instruction template (its Jinja) the tables choose for the model file or folder
/// `file_name`: the user's table over the model's own template; the guess only for a model
/// without one (`has_own`). A table or template that cannot be used is a warning, not a
/// failed load: the model still serves, with its own template or Alpaca.
pub fn chosen_template(model_dir: &Path, templates_dir: &Path, file_name: &str, has_own: bool) -> Option<String> {
    let name =
        [(USER_FILE, true), (GUESS_FILE, !has_own)].into_iter().filter(|(_, used)| *used).find_map(|(file, _)| {
            match settings_for(model_dir, file, file_name) {
                Ok(settings) => instruction_template(&settings).map(|n| (file, n.to_string())),
                Err(e) => {
                    tracing::warn!("{e}; not used");
                    None
                }
            }
        })?;
    let (file, name) = name;
    match super::instruction_templates::load(templates_dir, &name) {
        Ok(jinja) => {
            tracing::info!("instruction template `{name}` from {file}");
            Some(jinja)
        }
        Err(e) => {
            tracing::warn!("{file} names instruction template `{name}`: {e}; not used");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_matches_win_and_matching_is_anchored_and_case_blind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(GUESS_FILE),
            ".*llama:\n  instruction_template: Alpaca\n.*llama-3:\n  instruction_template: Llama-v3\nsmol:\n  instruction_template: ChatML\n",
        )
        .unwrap();
        let t = |name: &str| {
            let s = settings_for(dir.path(), GUESS_FILE, name).unwrap();
            instruction_template(&s).map(str::to_string)
        };
        assert_eq!(t("Meta-Llama-3-8B.gguf").as_deref(), Some("Llama-v3"));
        assert_eq!(t("tinyllama.gguf").as_deref(), Some("Alpaca"));
        assert_eq!(t("SmolLM2.gguf").as_deref(), Some("ChatML"));
        assert_eq!(t("my-smol.gguf"), None, "anchored at the start");
        assert!(settings_for(dir.path(), USER_FILE, "x").unwrap().is_empty(), "no file, no settings");
    }

    #[test]
    fn the_user_table_beats_the_model_and_the_guess_only_fills_a_gap() {
        let models = tempfile::tempdir().unwrap();
        let templates = tempfile::tempdir().unwrap();
        std::fs::write(templates.path().join("Mine.yaml"), "instruction_template: 'mine'\n").unwrap();
        std::fs::write(templates.path().join("Guess.yaml"), "instruction_template: 'guess'\n").unwrap();
        std::fs::write(models.path().join(GUESS_FILE), "m:\n  instruction_template: Guess\n").unwrap();
        let chosen = |has_own| chosen_template(models.path(), templates.path(), "m.gguf", has_own);
        assert_eq!(chosen(false).as_deref(), Some("guess"));
        assert_eq!(chosen(true), None, "the model's own template beats a guess");
        std::fs::write(models.path().join(USER_FILE), "m:\n  instruction_template: Mine\n").unwrap();
        assert_eq!(chosen(true).as_deref(), Some("mine"));
        std::fs::write(models.path().join(USER_FILE), "m:\n  instruction_template: Missing\n").unwrap();
        assert_eq!(chosen(false), None, "a missing template is a warning, and the guess is not tried");
    }

    #[test]
    fn a_bad_table_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(GUESS_FILE), "'(unclosed':\n  instruction_template: x\n").unwrap();
        let err = settings_for(dir.path(), GUESS_FILE, "x").unwrap_err().to_string();
        assert!(err.contains("config.yaml") && err.contains("unclosed"), "{err}");
    }
}
