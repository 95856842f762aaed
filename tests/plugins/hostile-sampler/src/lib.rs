//! A sampler that misbehaves as its config says (`mode`: `loop`, `panic`, `error`, `ban-all`),
//! for testing that a failing sampler fails or is skipped per its `on_error`.

use hearth_plugin_sdk::{Candidates, Config, SamplerPlugin, export_sampler};

struct HostileSampler {
    mode: String,
}

impl SamplerPlugin for HostileSampler {
    fn begin(config: &Config) -> Result<Self, String> {
        Ok(Self { mode: config.str("mode").unwrap_or("ok").to_owned() })
    }

    fn process(&mut self, candidates: &mut Candidates<'_>) -> Result<(), String> {
        match self.mode.as_str() {
            "loop" => loop {
                std::hint::black_box(candidates.len());
            },
            "panic" => panic!("hostile sampler panics on purpose"),
            "error" => Err("hostile sampler refuses".into()),
            "ban-all" => {
                for i in 0..candidates.len() {
                    candidates.ban(i);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

export_sampler!(HostileSampler);
