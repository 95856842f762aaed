//! Banned strings: a sampler plugin that keeps listed words and phrases out of the output.
//!
//! At every step it looks at each candidate token's text after the text generated so far and
//! removes the candidates that would complete a banned string. A string split over several
//! tokens is caught at the token that would complete it, so it can never appear whole.
//!
//! ```yaml
//! - name: banned-words
//!   path: plugins/wasm/banned_strings.wasm
//!   config: {banned: ["as an AI language model", "Paris"], case_insensitive: true}
//! ```

use hearth_plugin_sdk::{Candidates, Config, SamplerPlugin, export_sampler};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    banned: Vec<String>,
    #[serde(default)]
    case_insensitive: bool,
}

struct BannedStrings {
    banned: Vec<String>,
    case_insensitive: bool,
    /// The end of the generated text: as long as the longest banned string.
    tail: String,
    longest: usize,
}

impl BannedStrings {
    fn fold(&self, s: &str) -> String {
        if self.case_insensitive { s.to_lowercase() } else { s.to_owned() }
    }

    /// Whether `tail + piece` contains a banned string that ends inside `piece`; `joined` is a
    /// buffer that starts with `tail` (reused across candidates to spare allocations).
    fn completes_banned(&self, joined: &mut String, tail_len: usize, piece: &str) -> bool {
        joined.truncate(tail_len);
        if self.case_insensitive {
            joined.extend(piece.chars().flat_map(char::to_lowercase));
        } else {
            joined.push_str(piece);
        }
        self.banned.iter().any(|b| joined.match_indices(b.as_str()).any(|(at, m)| at + m.len() > tail_len))
    }
}

impl SamplerPlugin for BannedStrings {
    fn begin(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.typed()?;
        let mut this = BannedStrings {
            banned: Vec::new(),
            case_insensitive: settings.case_insensitive,
            tail: String::new(),
            longest: 0,
        };
        this.banned = settings.banned.iter().filter(|b| !b.is_empty()).map(|b| this.fold(b)).collect();
        this.longest = this.banned.iter().map(|b| b.chars().count()).max().unwrap_or(0);
        Ok(this)
    }

    fn process(&mut self, candidates: &mut Candidates<'_>) -> Result<(), String> {
        if self.banned.is_empty() {
            return Ok(());
        }
        let mut joined = self.fold(&self.tail);
        let tail_len = joined.len();
        for (i, text) in candidates.texts().iter().enumerate() {
            if self.completes_banned(&mut joined, tail_len, text) {
                candidates.ban(i);
            }
        }
        Ok(())
    }

    fn accept(&mut self, _token: u32, text: &str) {
        self.tail.push_str(text);
        let excess = self.tail.chars().count().saturating_sub(self.longest);
        if excess > 0 {
            let cut = self.tail.char_indices().nth(excess).map_or(self.tail.len(), |(i, _)| i);
            self.tail.drain(..cut);
        }
    }
}

export_sampler!(BannedStrings);
