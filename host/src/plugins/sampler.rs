//! Sampler plugins: one instance per generation, called on the model thread for every token
//! with a host-owned [`CandidateSet`] resource the guest reads and edits in place.

use std::sync::Arc;

use hearth_plugin_bindings::CandidateSet;
use hearth_plugin_bindings::sampler::{SamplerPlugin, hearth::plugin::candidates};
use wasmtime::component::Resource;
use wasmtime::{Engine, Store};

use super::host_api::HostServices;
use super::loader::Loaded;
use super::runtime::{HostState, arm_deadline, describe_failure, new_store};
use super::{Plugin, PluginError};
use crate::sampling::Candidates;

/// One sampler plugin's instance for one generation.
pub struct SamplerSession {
    plugin: Arc<Plugin>,
    store: Store<HostState>,
    bindings: SamplerPlugin,
}

impl SamplerSession {
    /// Instantiates the plugin and calls its `begin`.
    pub fn start(
        engine: &Engine,
        plugin: Arc<Plugin>,
        services: Option<Arc<dyn HostServices>>,
        vocab_texts: Option<Arc<Vec<String>>>,
    ) -> Result<Self, PluginError> {
        let Loaded::Sampler(pre) = &plugin.loaded else {
            return Err(PluginError::Engine(format!("plugin `{}` is not a sampler", plugin.name)));
        };
        let limits = &plugin.settings.limits;
        let mut state = HostState::new(plugin.name.clone(), limits, plugin.settings.grants.clone(), services);
        state.on_model_thread = true;
        state.vocab_texts = vocab_texts;
        let mut store = new_store(engine, state);
        arm_deadline(&mut store, limits);
        let bindings = pre.instantiate(&mut store).map_err(|e| describe_failure(&plugin.name, limits, &e))?;
        let begun = bindings.hearth_plugin_sampler().call_begin(&mut store, &plugin.config_json);
        match begun {
            Ok(Ok(())) => Ok(Self { plugin, store, bindings }),
            Ok(Err(message)) => Err(PluginError::Failed { plugin: plugin.name.to_string(), message }),
            Err(e) => Err(describe_failure(&plugin.name, limits, &e)),
        }
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Lets the plugin edit one step's candidates.
    pub fn process(&mut self, candidates: &mut Candidates) -> Result<(), PluginError> {
        let plugin = self.plugin.clone();
        super::timed(&plugin.name, "sampler.process", || self.process_untimed(candidates))
    }

    fn process_untimed(&mut self, candidates: &mut Candidates) -> Result<(), PluginError> {
        let limits = &self.plugin.settings.limits;
        arm_deadline(&mut self.store, limits);
        let set =
            CandidateSet { ids: std::mem::take(&mut candidates.ids), logits: std::mem::take(&mut candidates.logits) };
        let handle =
            self.store.data_mut().table.push(set).map_err(|e| PluginError::Engine(format!("resource table: {e}")))?;
        let borrowed = Resource::<CandidateSet>::new_borrow(handle.rep());
        let outcome = self.bindings.hearth_plugin_sampler().call_process(&mut self.store, borrowed);
        let set = self
            .store
            .data_mut()
            .table
            .delete(handle)
            .map_err(|e| PluginError::Engine(format!("resource table: {e}")))?;
        candidates.ids = set.ids;
        candidates.logits = set.logits;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(PluginError::Failed { plugin: self.plugin.name.to_string(), message }),
            Err(e) => Err(describe_failure(&self.plugin.name, limits, &e)),
        }
    }

    /// Tells the plugin which token was chosen.
    pub fn accept(&mut self, token: u32) -> Result<(), PluginError> {
        let plugin = self.plugin.clone();
        super::timed(&plugin.name, "sampler.accept", || self.accept_untimed(token))
    }

    fn accept_untimed(&mut self, token: u32) -> Result<(), PluginError> {
        let limits = &self.plugin.settings.limits;
        let text =
            self.store.data().vocab_texts.as_ref().and_then(|v| v.get(token as usize).cloned()).unwrap_or_default();
        self.store.data_mut().generated.push_str(&text);
        arm_deadline(&mut self.store, limits);
        self.bindings
            .hearth_plugin_sampler()
            .call_accept(&mut self.store, token, &text)
            .map_err(|e| describe_failure(&self.plugin.name, limits, &e))
    }
}

fn text_of(state: &HostState, id: u32) -> String {
    state.vocab_texts.as_ref().and_then(|v| v.get(id as usize).cloned()).unwrap_or_default()
}

impl candidates::Host for HostState {}

impl candidates::HostCandidateSet for HostState {
    fn len(&mut self, set: Resource<CandidateSet>) -> u32 {
        self.table.get(&set).map_or(0, |s| s.ids.len() as u32)
    }

    fn ids(&mut self, set: Resource<CandidateSet>) -> Vec<u32> {
        self.table.get(&set).map(|s| s.ids.clone()).unwrap_or_default()
    }

    fn logits(&mut self, set: Resource<CandidateSet>) -> Vec<f32> {
        self.table.get(&set).map(|s| s.logits.clone()).unwrap_or_default()
    }

    fn set_logit(&mut self, set: Resource<CandidateSet>, index: u32, logit: f32) {
        if let Ok(s) = self.table.get_mut(&set)
            && let Some(l) = s.logits.get_mut(index as usize)
        {
            // NaN would poison the draw: treat it as a ban.
            *l = if logit.is_nan() { f32::NEG_INFINITY } else { logit };
        }
    }

    fn ban(&mut self, set: Resource<CandidateSet>, index: u32) {
        if let Ok(s) = self.table.get_mut(&set)
            && let Some(l) = s.logits.get_mut(index as usize)
        {
            *l = f32::NEG_INFINITY;
        }
    }

    fn generated_text(&mut self, _set: Resource<CandidateSet>) -> String {
        self.generated.clone()
    }

    fn text(&mut self, set: Resource<CandidateSet>, index: u32) -> String {
        let id = self.table.get(&set).ok().and_then(|s| s.ids.get(index as usize).copied());
        id.map(|id| text_of(self, id)).unwrap_or_default()
    }

    fn texts(&mut self, set: Resource<CandidateSet>) -> (String, Vec<u32>) {
        let (Ok(set), Some(vocab)) = (self.table.get(&set), self.vocab_texts.as_ref()) else {
            return (String::new(), Vec::new());
        };
        let mut joined = String::with_capacity(set.ids.len() * 8);
        let mut ends = Vec::with_capacity(set.ids.len());
        for &id in &set.ids {
            joined.push_str(vocab.get(id as usize).map_or("", String::as_str));
            ends.push(joined.len() as u32);
        }
        (joined, ends)
    }

    fn drop(&mut self, set: Resource<CandidateSet>) -> wasmtime::Result<()> {
        // The host owns candidate sets and deletes them after each call; a borrowed handle
        // dropped by the guest needs nothing here.
        let _ = set;
        Ok(())
    }
}
