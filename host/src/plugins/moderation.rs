//! Moderation plugins: a fresh instance classifies the inputs of one request.

use std::sync::Arc;

use wasmtime::Engine;

use super::host_api::HostServices;
use super::loader::Loaded;
use super::runtime::{describe_failure, store_for_call};
use super::{Plugin, PluginError};

/// OpenAI's moderation categories, in its order.
pub const CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// One category of a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryScore {
    pub name: &'static str,
    pub flagged: bool,
    pub score: f32,
}

/// The verdict on one input: every OpenAI category, scored (0 and not flagged when the plugin
/// said nothing about it).
#[derive(Debug, Clone, PartialEq)]
pub struct ModerationVerdict {
    pub flagged: bool,
    pub categories: Vec<CategoryScore>,
}

pub fn call(
    engine: &Engine,
    plugin: &Arc<Plugin>,
    services: Option<Arc<dyn HostServices>>,
    inputs: &[String],
) -> Result<Vec<ModerationVerdict>, PluginError> {
    let Loaded::Moderation(pre) = &plugin.loaded else {
        return Err(PluginError::Engine(format!("plugin `{}` is not a moderation plugin", plugin.name)));
    };
    let limits = &plugin.settings.limits;
    let mut store = store_for_call(engine, plugin, services);
    let bindings = pre.instantiate(&mut store).map_err(|e| describe_failure(&plugin.name, limits, &e))?;
    let answer = bindings
        .hearth_plugin_moderation()
        .call_classify(&mut store, &plugin.config_json, inputs)
        .map_err(|e| describe_failure(&plugin.name, limits, &e))?;
    let verdicts = answer.map_err(|message| PluginError::Failed { plugin: plugin.name.to_string(), message })?;
    if verdicts.len() != inputs.len() {
        return Err(PluginError::BadOutput {
            plugin: plugin.name.to_string(),
            reason: format!("{} verdicts for {} inputs", verdicts.len(), inputs.len()),
        });
    }
    Ok(verdicts
        .into_iter()
        .map(|v| {
            let categories: Vec<CategoryScore> = CATEGORIES
                .iter()
                .map(|&name| {
                    let given = v.categories.iter().find(|c| c.name == name);
                    CategoryScore {
                        name,
                        flagged: given.is_some_and(|c| c.flagged),
                        score: given.map_or(0.0, |c| if c.score.is_finite() { c.score.clamp(0.0, 1.0) } else { 0.0 }),
                    }
                })
                .collect();
            ModerationVerdict { flagged: v.flagged || categories.iter().any(|c| c.flagged), categories }
        })
        .collect())
}
