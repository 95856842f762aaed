//! The smallest useful sampler: bans one token id (config `token`). The hook benchmark uses it
//! to measure what a per-token plugin call costs.

use hearth_plugin_sdk::{Candidates, Config, SamplerPlugin, export_sampler};

struct BanToken {
    token: u32,
}

impl SamplerPlugin for BanToken {
    fn begin(config: &Config) -> Result<Self, String> {
        let token = config.value().get("token").and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
        Ok(Self { token: u32::try_from(token).unwrap_or(u32::MAX) })
    }

    fn process(&mut self, candidates: &mut Candidates<'_>) -> Result<(), String> {
        if let Some(i) = candidates.ids().iter().position(|&id| id == self.token) {
            candidates.ban(i);
        }
        Ok(())
    }
}

export_sampler!(BanToken);
