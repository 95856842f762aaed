//! A plugin's configuration: the `config:` value of its entry in settings.yaml, as JSON.

use serde::de::DeserializeOwned;

/// The plugin's `config` from settings.yaml.
#[derive(Debug, Clone, Default)]
pub struct Config {
    value: serde_json::Value,
}

impl Config {
    /// Parses the JSON text the host hands over.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text).map(|value| Self { value }).map_err(|e| format!("invalid plugin config: {e}"))
    }

    /// The whole value (`null` when the settings give none).
    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// The configuration as a typed struct.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, String> {
        let value = if self.value.is_null() { serde_json::json!({}) } else { self.value.clone() };
        serde_json::from_value(value).map_err(|e| format!("invalid plugin config: {e}"))
    }

    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.value.get(key)?.as_str()
    }

    /// A list of strings (missing or mistyped entries are skipped).
    pub fn strings(&self, key: &str) -> Vec<String> {
        match self.value.get(key) {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            }
            _ => Vec::new(),
        }
    }
}
