//! Tool-call parser plugins: a fresh instance per response holds a `stream-parser` resource that
//! turns generated text into content and tool-call deltas; one-shot calls give the format's
//! template hints, instructions, rendering of earlier calls and forcing grammar.

use std::sync::Arc;

use hearth_plugin_bindings::tool_parser::ToolParserPlugin as Bindings;
use hearth_plugin_bindings::tool_parser::exports::hearth::plugin::tool_parser as wit;
use wasmtime::component::ResourceAny;
use wasmtime::{Engine, Store};

use super::host_api::HostServices;
use super::loader::Loaded;
use super::runtime::{HostState, arm_deadline, describe_failure, store_for_call};
use super::{Plugin, PluginError};

/// A tool as a parser sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// The JSON schema of the arguments (`null` when the request gave none).
    pub parameters: serde_json::Value,
}

/// A piece of one call, as the plugin reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// What a piece of generated text turned into.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedText {
    pub content: String,
    pub calls: Vec<CallDelta>,
}

fn to_wit(tools: &[ToolSpec]) -> Vec<wit::Tool> {
    tools
        .iter()
        .map(|t| wit::Tool {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters: t.parameters.to_string(),
        })
        .collect()
}

fn from_wit(p: wit::Parsed) -> ParsedText {
    ParsedText {
        content: p.content,
        calls: p
            .calls
            .into_iter()
            .map(|c| CallDelta { index: c.index, id: c.id, name: c.name, arguments: c.arguments })
            .collect(),
    }
}

fn pre_of(
    plugin: &Plugin,
) -> Result<&hearth_plugin_bindings::tool_parser::ToolParserPluginPre<HostState>, PluginError> {
    match &plugin.loaded {
        Loaded::ToolParser(pre) => Ok(pre),
        _ => Err(PluginError::Engine(format!("plugin `{}` is not a tool-call parser", plugin.name))),
    }
}

/// One response's parser.
pub struct ToolParserSession {
    plugin: Arc<Plugin>,
    store: Store<HostState>,
    bindings: Bindings,
    parser: ResourceAny,
}

impl ToolParserSession {
    /// Instantiates the plugin and constructs its stream parser for `tools`.
    pub fn start(
        engine: &Engine,
        plugin: Arc<Plugin>,
        services: Option<Arc<dyn HostServices>>,
        tools: &[ToolSpec],
    ) -> Result<Self, PluginError> {
        let limits = plugin.settings.limits.clone();
        let mut store = store_for_call(engine, &plugin, services);
        let bindings =
            pre_of(&plugin)?.instantiate(&mut store).map_err(|e| describe_failure(&plugin.name, &limits, &e))?;
        let parser = bindings
            .hearth_plugin_tool_parser()
            .stream_parser()
            .call_constructor(&mut store, &plugin.config_json, &to_wit(tools))
            .map_err(|e| describe_failure(&plugin.name, &limits, &e))?;
        Ok(Self { plugin, store, bindings, parser })
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Feeds generated text.
    pub fn push(&mut self, text: &str) -> Result<ParsedText, PluginError> {
        let plugin = self.plugin.clone();
        super::timed(&plugin.name, "tool-parser.push", || {
            self.call(|parser, store, resource| parser.call_push(store, resource, text))
        })
    }

    /// Ends the response.
    pub fn finish(&mut self) -> Result<ParsedText, PluginError> {
        let plugin = self.plugin.clone();
        super::timed(&plugin.name, "tool-parser.finish", || {
            self.call(|parser, store, resource| parser.call_finish(store, resource))
        })
    }

    /// One call on the stream parser under the plugin's deadline.
    fn call(
        &mut self,
        f: impl FnOnce(
            &wit::GuestStreamParser<'_>,
            &mut Store<HostState>,
            ResourceAny,
        ) -> wasmtime::Result<Result<wit::Parsed, String>>,
    ) -> Result<ParsedText, PluginError> {
        let limits = &self.plugin.settings.limits;
        arm_deadline(&mut self.store, limits);
        let guest = self.bindings.hearth_plugin_tool_parser();
        let answer = f(&guest.stream_parser(), &mut self.store, self.parser)
            .map_err(|e| describe_failure(&self.plugin.name, limits, &e))?;
        answer.map(from_wit).map_err(|message| PluginError::Failed { plugin: self.plugin.name.to_string(), message })
    }
}

/// Runs one of the format's one-shot functions in a fresh instance.
fn one_shot<T>(
    engine: &Engine,
    plugin: &Plugin,
    call: impl FnOnce(&Bindings, &mut Store<HostState>, &str) -> wasmtime::Result<T>,
) -> Result<T, PluginError> {
    let limits = &plugin.settings.limits;
    let mut store = store_for_call(engine, plugin, None);
    let bindings = pre_of(plugin)?.instantiate(&mut store).map_err(|e| describe_failure(&plugin.name, limits, &e))?;
    call(&bindings, &mut store, &plugin.config_json).map_err(|e| describe_failure(&plugin.name, limits, &e))
}

/// Substrings of chat templates that mean the model writes the plugin's format.
pub fn template_hints(engine: &Engine, plugin: &Plugin) -> Result<Vec<String>, PluginError> {
    one_shot(engine, plugin, |b, s, config| b.hearth_plugin_tool_parser().call_template_hints(s, config))
}

/// The system-prompt text describing `tools` in the plugin's format.
pub fn instructions(engine: &Engine, plugin: &Arc<Plugin>, tools: &[ToolSpec]) -> Result<String, PluginError> {
    one_shot(engine, plugin, |b, s, config| b.hearth_plugin_tool_parser().call_instructions(s, config, &to_wit(tools)))
}

/// The text the model would have written for `calls` (name, arguments JSON).
pub fn render_calls(engine: &Engine, plugin: &Arc<Plugin>, calls: &[(String, String)]) -> Result<String, PluginError> {
    let calls: Vec<wit::Call> =
        calls.iter().map(|(name, arguments)| wit::Call { name: name.clone(), arguments: arguments.clone() }).collect();
    one_shot(engine, plugin, |b, s, config| b.hearth_plugin_tool_parser().call_render_calls(s, config, &calls))
}

/// The grammar that forces a call to one of `tools`.
pub fn call_grammar(
    engine: &Engine,
    plugin: &Arc<Plugin>,
    tools: &[ToolSpec],
    parallel: bool,
) -> Result<String, PluginError> {
    let answer = one_shot(engine, plugin, |b, s, config| {
        b.hearth_plugin_tool_parser().call_call_grammar(s, config, &to_wit(tools), parallel)
    })?;
    answer.map_err(|message| PluginError::Failed { plugin: plugin.name.to_string(), message })
}
