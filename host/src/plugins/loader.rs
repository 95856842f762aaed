//! Loading one plugin: read and compile the component (through the on-disk cache), check it
//! was built for this host's WIT package version, find which world it implements, link it
//! against exactly the imports that world allows, and pre-instantiate it.

use std::collections::BTreeSet;

use hearth_plugin_bindings::{WIT_PACKAGE, WIT_VERSION, endpoint, moderation, sampler, tool_parser};
use hearth_settings::PluginSettings;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker, Resource};
use wasmtime_wasi::p2::DynPollable;

use super::PluginError;
use super::runtime::{HostState, MAX_MEMORY_MB};

/// The hook a plugin implements, from the interface its component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Sampler,
    Endpoint,
    Moderation,
    ToolParser,
}

impl PluginKind {
    fn interface(self) -> &'static str {
        match self {
            PluginKind::Sampler => "sampler",
            PluginKind::Endpoint => "endpoint",
            PluginKind::Moderation => "moderation",
            PluginKind::ToolParser => "tool-parser",
        }
    }

    pub fn name(self) -> &'static str {
        self.interface()
    }
}

/// A plugin ready to instantiate.
pub enum Loaded {
    Sampler(sampler::SamplerPluginPre<HostState>),
    Endpoint(endpoint::EndpointPluginPre<HostState>),
    Moderation(moderation::ModerationPluginPre<HostState>),
    #[allow(dead_code)]
    ToolParser(tool_parser::ToolParserPluginPre<HostState>),
}

fn fail(spec: &PluginSettings, reason: impl Into<String>) -> PluginError {
    PluginError::Load { plugin: spec.name.clone(), path: spec.path.display().to_string(), reason: reason.into() }
}

/// `hearth:plugin/sampler@0.1.0` → (`sampler`, `0.1.0`).
fn split_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    rest.split_once('@')
}

pub fn load(engine: &Engine, spec: &PluginSettings) -> Result<(PluginKind, Loaded), PluginError> {
    if spec.limits.memory_mb > MAX_MEMORY_MB {
        return Err(fail(
            spec,
            format!("limits.memory_mb {} is above the most a plugin may have ({MAX_MEMORY_MB})", spec.limits.memory_mb),
        ));
    }
    let built_in = spec.path.to_str().and_then(super::builtin::component);
    let bytes = match built_in {
        Some(found) => std::borrow::Cow::Borrowed(found.map_err(|why| fail(spec, why))?),
        None => std::borrow::Cow::Owned(
            std::fs::read(&spec.path).map_err(|e| fail(spec, format!("cannot read the file: {e}")))?,
        ),
    };
    if !bytes.starts_with(b"\0asm") {
        return Err(fail(spec, "not a WebAssembly file"));
    }
    // A core module has version 1 in its header; components have a different layer.
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(fail(
            spec,
            "this is a core WebAssembly module, not a component: build the plugin for the wasm32-wasip2 target",
        ));
    }
    let component = Component::new(engine, &bytes).map_err(|e| fail(spec, format!("not a valid component: {e:#}")))?;

    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_owned()).collect();
    let foreign: BTreeSet<&str> = exports
        .iter()
        .chain(imports.iter())
        .filter_map(|n| split_name(n))
        .filter(|(_, v)| *v != WIT_VERSION)
        .map(|(_, v)| v)
        .collect();
    if let Some(version) = foreign.first() {
        return Err(fail(
            spec,
            format!(
                "it was built for {WIT_PACKAGE}@{version}, but this Hearth speaks {WIT_PACKAGE}@{WIT_VERSION}: rebuild it with a matching plugin SDK"
            ),
        ));
    }
    let kinds: Vec<PluginKind> =
        [PluginKind::Sampler, PluginKind::Endpoint, PluginKind::Moderation, PluginKind::ToolParser]
            .into_iter()
            .filter(|k| exports.iter().any(|e| split_name(e).is_some_and(|(i, _)| i == k.interface())))
            .collect();
    let kind = match kinds.as_slice() {
        [k] => *k,
        [] => {
            return Err(fail(
                spec,
                format!(
                    "it exports none of {WIT_PACKAGE}@{WIT_VERSION}'s plugin interfaces (sampler, endpoint, moderation, tool-parser); its exports: {}",
                    if exports.is_empty() { "none".to_owned() } else { exports.join(", ") }
                ),
            ));
        }
        _ => return Err(fail(spec, "it exports more than one plugin interface; a plugin implements one")),
    };

    let mut linker: Linker<HostState> = Linker::new(engine);
    // WASI is linked so Rust's std works, but the context grants nothing: no files, no
    // environment, no network.
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| fail(spec, format!("{e:#}")))?;
    refuse_timers(&mut linker).map_err(|e| fail(spec, format!("{e:#}")))?;
    let link_err = |e: wasmtime::Error| fail(spec, format!("{e:#}"));
    let pre_err = |e: wasmtime::Error| fail(spec, format!("it needs imports this host does not provide: {e:#}"));
    let loaded = match kind {
        PluginKind::Sampler => {
            sampler::SamplerPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                .map_err(link_err)?;
            let pre = linker.instantiate_pre(&component).map_err(pre_err)?;
            Loaded::Sampler(sampler::SamplerPluginPre::new(pre).map_err(pre_err)?)
        }
        PluginKind::Endpoint => {
            endpoint::EndpointPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                .map_err(link_err)?;
            let pre = linker.instantiate_pre(&component).map_err(pre_err)?;
            Loaded::Endpoint(endpoint::EndpointPluginPre::new(pre).map_err(pre_err)?)
        }
        PluginKind::Moderation => {
            moderation::ModerationPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                .map_err(link_err)?;
            let pre = linker.instantiate_pre(&component).map_err(pre_err)?;
            Loaded::Moderation(moderation::ModerationPluginPre::new(pre).map_err(pre_err)?)
        }
        PluginKind::ToolParser => {
            tool_parser::ToolParserPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
                .map_err(link_err)?;
            let pre = linker.instantiate_pre(&component).map_err(pre_err)?;
            Loaded::ToolParser(tool_parser::ToolParserPluginPre::new(pre).map_err(pre_err)?)
        }
    };
    Ok((kind, loaded))
}

/// The `wasi:clocks` version `wasmtime-wasi` links; components built for older 0.2 releases
/// resolve to it.
const WASI_CLOCKS: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces WASI's timers with functions that fail: a sleeping plugin would block its thread in
/// the host, where no CPU deadline can interrupt it, for as long as it asked.
fn refuse_timers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const REFUSAL: &str = "plugins may not sleep or wait on a timer (it would hold a server thread)";
    linker.allow_shadowing(true);
    let mut clock = linker.instance(WASI_CLOCKS)?;
    clock.func_wrap("subscribe-duration", |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
        Err(wasmtime::Error::msg(REFUSAL))
    })?;
    clock.func_wrap("subscribe-instant", |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
        Err(wasmtime::Error::msg(REFUSAL))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn interface_names_split_into_interface_and_version() {
        assert_eq!(split_name("hearth:plugin/sampler@0.1.0"), Some(("sampler", "0.1.0")));
        assert_eq!(split_name("hearth:plugin/host@0.2.0"), Some(("host", "0.2.0")));
        assert_eq!(split_name("wasi:cli/environment@0.2.0"), None);
    }
}
