//! Characters for the chat modes: text-generation-webui's files under `user_data/characters/`
//! (`NAME.yaml`, `.yml` or `.json`), read with textgen's field names and TavernAI's
//! (`char_name`, `char_persona`, `world_scenario`, `example_dialogue`, `char_greeting`), and the
//! `{{user}}` / `{{char}}` (also `<USER>` / `<BOT>`) names substituted into their text.

use std::path::Path;

use serde_json::Value;

/// The character used when a request names none (textgen's default).
pub const DEFAULT_CHARACTER: &str = "Assistant";

/// The user's name when neither the request nor the character gives one (textgen's default).
pub const DEFAULT_USER_NAME: &str = "You";

/// A character: who the model plays, and how its conversation starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Character {
    /// The name the model speaks as (`name2`).
    pub name: String,
    /// The user's name, when the character sets one.
    pub user_name: Option<String>,
    /// Persona and example dialogue, before the conversation.
    pub context: String,
    /// The character's first message.
    pub greeting: String,
}

/// A character that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CharacterError {
    #[error("{0}")]
    BadName(String),
    #[error("there is no character `{name}` in {dir} (looked for {name}.yaml, .yml and .json)")]
    NotFound { name: String, dir: String },
    #[error("the character file {path} cannot be read: {reason}")]
    Unreadable { path: String, reason: String },
}

impl Character {
    /// The built-in assistant, used for `Assistant` when no file of that name exists.
    pub fn assistant() -> Self {
        Self {
            name: "AI".into(),
            user_name: None,
            context: "What follows is a conversation between a user and an AI assistant, a large language \
                      model. The assistant answers questions, gives recommendations and helps with \
                      decisions, follows the user's requests and thinks for itself."
                .into(),
            greeting: "How can I help you today?".into(),
        }
    }

    /// Loads character `name` from `dir` (textgen's `"None"` means the default).
    pub fn load(dir: &Path, name: &str) -> Result<Self, CharacterError> {
        let name = if name == "None" || name.is_empty() { DEFAULT_CHARACTER } else { name };
        let Some(path) =
            super::user_files::find(dir, name, &["yml", "yaml", "json"]).map_err(CharacterError::BadName)?
        else {
            if name == DEFAULT_CHARACTER {
                return Ok(Self::assistant());
            }
            return Err(CharacterError::NotFound { name: name.to_owned(), dir: dir.display().to_string() });
        };
        let unreadable = |reason: String| CharacterError::Unreadable { path: path.display().to_string(), reason };
        let data = super::user_files::read_data(&path).map_err(unreadable)?;
        if !data.is_object() {
            return Err(unreadable("it is not a mapping of fields".into()));
        }
        Ok(Self::from_fields(&data, &path))
    }

    /// Reads the fields, textgen's names first, then TavernAI's.
    fn from_fields(data: &Value, path: &Path) -> Self {
        let text = |key: &str| data.get(key).and_then(scalar_text).filter(|s| !s.is_empty());
        let first = |keys: &[&str]| keys.iter().find_map(|k| text(k));
        let name = first(&["name", "bot", "<|bot|>", "char_name"]).unwrap_or_else(|| {
            // A character without a name speaks as its file's name.
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        });
        let user_name = first(&["your_name", "user", "<|user|>"]);
        let (context, greeting_key) = match text("context") {
            Some(context) => (context.trim().to_owned(), "greeting"),
            None if text("char_persona").is_some() => (tavern_context(data, &name), "char_greeting"),
            None => (String::new(), "greeting"),
        };
        let greeting = text(greeting_key).unwrap_or_default();
        Self { name, user_name, context, greeting }
    }
}

/// TavernAI's persona, scenario and example dialogue as one context.
fn tavern_context(data: &Value, name: &str) -> String {
    let field = |k: &str| data.get(k).and_then(scalar_text).filter(|s| !s.is_empty());
    let mut parts = Vec::new();
    if let Some(persona) = field("char_persona") {
        parts.push(format!("{name}'s Persona: {persona}"));
    }
    if let Some(scenario) = field("world_scenario") {
        parts.push(format!("Scenario: {scenario}"));
    }
    if let Some(dialogue) = field("example_dialogue") {
        parts.push(dialogue.trim().to_owned());
    }
    parts.join("\n")
}

/// A field's text: strings as they are, numbers and booleans written out (YAML reads `name: 42`
/// as a number).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Puts the user's and the character's names into `text`.
pub fn replace_names(text: &str, user: &str, character: &str) -> String {
    text.replace("{{user}}", user).replace("{{char}}", character).replace("<USER>", user).replace("<BOT>", character)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        dir
    }

    #[test]
    fn textgen_fields_are_read_from_yaml() {
        let dir = dir_with(&[(
            "Ada.yaml",
            "name: Ada\nyour_name: Charles\ngreeting: Hello, {{user}}.\ncontext: |\n  {{char}} computes.\n",
        )]);
        let c = Character::load(dir.path(), "Ada").unwrap();
        assert_eq!(c.name, "Ada");
        assert_eq!(c.user_name.as_deref(), Some("Charles"));
        assert_eq!(c.context, "{{char}} computes.");
        assert_eq!(replace_names(&c.greeting, "Charles", &c.name), "Hello, Charles.");
    }

    #[test]
    fn tavern_fields_make_the_context_and_greeting() {
        let dir = dir_with(&[(
            "Bo.json",
            r#"{"char_name": "Bo", "char_persona": "a sailor", "world_scenario": "at sea",
                "example_dialogue": "<USER>: Hi\n<BOT>: Ahoy", "char_greeting": "Ahoy!"}"#,
        )]);
        let c = Character::load(dir.path(), "Bo").unwrap();
        assert_eq!(c.name, "Bo");
        assert_eq!(c.context, "Bo's Persona: a sailor\nScenario: at sea\n<USER>: Hi\n<BOT>: Ahoy");
        assert_eq!(c.greeting, "Ahoy!");
        assert_eq!(replace_names(&c.context, "You", "Bo").lines().last(), Some("Bo: Ahoy"));
    }

    #[test]
    fn the_default_assistant_needs_no_file_and_others_do() {
        let dir = dir_with(&[]);
        assert_eq!(Character::load(dir.path(), "None").unwrap(), Character::assistant());
        assert!(matches!(Character::load(dir.path(), "Nobody"), Err(CharacterError::NotFound { .. })));
        assert!(matches!(Character::load(dir.path(), "../etc/passwd"), Err(CharacterError::BadName(_))));
        let bad = dir_with(&[("Bad.yaml", "- just\n- a list\n")]);
        assert!(matches!(Character::load(bad.path(), "Bad"), Err(CharacterError::Unreadable { .. })));
    }
}
