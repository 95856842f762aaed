//! Sampler plugins: called for every generated token with the candidates that survived the
//! built-in samplers; they edit logits or ban candidates.

use std::cell::RefCell;

use crate::Config;
use crate::bindings::sampler::hearth::plugin::candidates::CandidateSet;

/// The candidates of one sampling step, owned by the host and edited in place.
pub struct Candidates<'a> {
    set: &'a CandidateSet,
}

impl Candidates<'_> {
    /// How many candidates there are.
    pub fn len(&self) -> usize {
        self.set.len() as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token ids, most likely first.
    pub fn ids(&self) -> Vec<u32> {
        self.set.ids()
    }

    /// Logits, in the order of [`ids`](Self::ids).
    pub fn logits(&self) -> Vec<f32> {
        self.set.logits()
    }

    /// Sets the logit of candidate `index`.
    pub fn set_logit(&mut self, index: usize, logit: f32) {
        self.set.set_logit(index as u32, logit);
    }

    /// Removes candidate `index` from the draw.
    pub fn ban(&mut self, index: usize) {
        self.set.ban(index as u32);
    }

    /// The text of candidate `index`.
    pub fn text(&self, index: usize) -> String {
        self.set.text(index as u32)
    }

    /// The texts of all candidates, in order: one call across the sandbox boundary for all of
    /// them (much cheaper than [`text`](Self::text) for each).
    pub fn texts(&self) -> Texts {
        let (joined, ends) = self.set.texts();
        Texts { joined, ends }
    }

    /// The text generated so far (not the prompt).
    pub fn generated_text(&self) -> String {
        self.set.generated_text()
    }
}

/// The texts of a step's candidates, in candidate order.
#[derive(Debug, Clone, Default)]
pub struct Texts {
    joined: String,
    ends: Vec<u32>,
}

impl Texts {
    /// How many texts there are (one per candidate).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The text of candidate `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)? as usize;
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        self.joined.get(start..end)
    }

    /// The texts in candidate order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or(""))
    }
}

/// A sampler plugin. One value lives for one generation: [`begin`](Self::begin) makes it,
/// [`process`](Self::process) runs for every token, [`accept`](Self::accept) reports the
/// chosen one.
pub trait SamplerPlugin: Sized + 'static {
    /// Starts a generation.
    fn begin(config: &Config) -> Result<Self, String>;
    /// Edits the candidates of one step.
    fn process(&mut self, candidates: &mut Candidates<'_>) -> Result<(), String>;
    /// The token chosen at this step and its text.
    fn accept(&mut self, _token: u32, _text: &str) {}
}

thread_local! {
    static STATE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
}

/// Glue between the WIT exports and a [`SamplerPlugin`] (used by [`export_sampler!`]).
#[doc(hidden)]
pub struct __Sampler;

impl __Sampler {
    pub fn begin<P: SamplerPlugin>(config: String) -> Result<(), String> {
        let plugin = P::begin(&Config::parse(&config)?)?;
        STATE.with(|s| *s.borrow_mut() = Some(Box::new(plugin)));
        Ok(())
    }

    pub fn process<P: SamplerPlugin>(set: &CandidateSet) -> Result<(), String> {
        STATE.with(|s| {
            let mut state = s.borrow_mut();
            let plugin = state
                .as_mut()
                .and_then(|p| p.downcast_mut::<P>())
                .ok_or_else(|| "process called before begin".to_string())?;
            plugin.process(&mut Candidates { set })
        })
    }

    pub fn accept<P: SamplerPlugin>(token: u32, text: String) {
        STATE.with(|s| {
            if let Some(plugin) = s.borrow_mut().as_mut().and_then(|p| p.downcast_mut::<P>()) {
                plugin.accept(token, &text);
            }
        });
    }
}

/// Exports `$plugin` (a [`SamplerPlugin`]) as the component's sampler.
#[macro_export]
macro_rules! export_sampler {
    ($plugin:ty) => {
        struct __HearthSampler;
        impl $crate::bindings::sampler::exports::hearth::plugin::sampler::Guest for __HearthSampler {
            fn begin(config: String) -> Result<(), String> {
                $crate::__Sampler::begin::<$plugin>(config)
            }
            fn process(
                step: &$crate::bindings::sampler::hearth::plugin::candidates::CandidateSet,
            ) -> Result<(), String> {
                $crate::__Sampler::process::<$plugin>(step)
            }
            fn accept(token: u32, text: String) {
                $crate::__Sampler::accept::<$plugin>(token, text)
            }
        }
        $crate::bindings::sampler::__export_sampler!(__HearthSampler);
    };
}
