//! The first-party plugins built into the binary (by `host/build.rs`) and the list that loads
//! when the settings ask for no other: `plugins/default.yaml`, embedded too, whose entries name
//! their components as `builtin:<file>`.

use hearth_settings::{BUILTIN_PREFIX, PluginSettings, Settings};

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The default list, as `plugins/default.yaml` writes it.
const DEFAULTS_YAML: &str = include_str!("../../../plugins/default.yaml");

/// Why this binary has no built-in plugins, where the build could not make them.
const MISSING: Option<&str> = option_env!("HEARTH_BUILTIN_PLUGINS_MISSING");

/// The component a `builtin:<file>` path names, or why there is none.
pub fn component(path: &str) -> Option<Result<&'static [u8], String>> {
    let file = path.strip_prefix(BUILTIN_PREFIX)?;
    Some(COMPONENTS.iter().find(|(name, _)| *name == file).map(|(_, bytes)| *bytes).ok_or_else(|| match MISSING {
        Some(why) => format!("this binary was built without its first-party plugins: {why}"),
        None => {
            let known: Vec<&str> = COMPONENTS.iter().map(|(name, _)| *name).collect();
            format!("no built-in plugin `{file}` (built in: {})", known.join(", "))
        }
    }))
}

#[derive(serde::Deserialize)]
struct DefaultList {
    plugins: Vec<PluginSettings>,
}

/// The first-party plugins' entries.
fn defaults() -> Vec<PluginSettings> {
    match serde_yaml::from_str::<DefaultList>(DEFAULTS_YAML) {
        Ok(list) => list.plugins,
        // The file is checked by a test; a broken one must not stop the server.
        Err(e) => {
            tracing::error!("plugins/default.yaml as built in is invalid: {e}");
            Vec::new()
        }
    }
}

/// The plugins `settings` loads, in order: the built-in ones where `default_plugins` asks for
/// them (by default: when the settings list none), then the listed ones, an entry of a built-in
/// plugin's name replacing it.
pub fn plugins_to_load(settings: &Settings) -> Vec<PluginSettings> {
    let with_defaults = settings.default_plugins.unwrap_or(settings.plugins.is_empty());
    if !with_defaults {
        return settings.plugins.clone();
    }
    if let Some(why) = MISSING {
        tracing::warn!(
            "no first-party plugins are built into this binary ({why}): tool calls and moderation need plugins listed in settings"
        );
        return settings.plugins.clone();
    }
    let mut list: Vec<PluginSettings> =
        defaults().into_iter().filter(|d| !settings.plugins.iter().any(|p| p.name == d.name)).collect();
    list.extend(settings.plugins.iter().cloned());
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every default entry names a component built into this binary (tests run on a build
    /// that has them: `scripts/test` installs the wasm target first).
    #[test]
    fn the_default_list_names_built_in_components() {
        assert_eq!(MISSING, None, "the test build has its plugins");
        let list = defaults();
        assert!(list.len() >= 8, "{list:?}");
        for entry in &list {
            let path = entry.path.to_str().expect("a UTF-8 path");
            let bytes = component(path).expect("a builtin: path").expect("built in");
            assert!(bytes.starts_with(b"\0asm"), "{path}");
        }
    }

    #[test]
    fn a_plugins_list_replaces_the_defaults_unless_asked_for_them() {
        let own = PluginSettings {
            name: "hermes-tools".into(),
            path: "mine.wasm".into(),
            enabled: true,
            config: serde_json::Value::Null,
            limits: Default::default(),
            on_error: Default::default(),
            optional: false,
            grants: Vec::new(),
        };
        let bare = Settings::default();
        let names = |s: &Settings| plugins_to_load(s).into_iter().map(|p| p.name).collect::<Vec<_>>();
        assert!(names(&bare).contains(&"generic-tools".to_owned()));
        let listed = Settings { plugins: vec![own.clone()], ..Settings::default() };
        assert_eq!(names(&listed), ["hermes-tools"]);
        let both = Settings { plugins: vec![own], default_plugins: Some(true), ..Settings::default() };
        let loaded = plugins_to_load(&both);
        assert_eq!(loaded.iter().filter(|p| p.name == "hermes-tools").count(), 1);
        assert_eq!(loaded.last().map(|p| p.path.clone()), Some("mine.wasm".into()), "the listed entry wins");
        assert!(loaded.len() == defaults().len());
        let none = Settings { default_plugins: Some(false), ..Settings::default() };
        assert!(names(&none).is_empty());
    }
}
