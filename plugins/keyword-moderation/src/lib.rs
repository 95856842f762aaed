//! Keyword moderation: flags texts that contain words of OpenAI's moderation categories. The
//! lists can be replaced or extended in the plugin's config:
//!
//! ```yaml
//! - name: keywords
//!   path: plugins/wasm/keyword_moderation.wasm
//!   config: {categories: {violence: [kill, murder]}, extend: true}
//! ```
//!
//! A category's score grows with the number of matching words (one match: 0.7, two: 0.91, …);
//! it is flagged from the first match.

use std::collections::BTreeMap;

use hearth_plugin_sdk::{Category, Config, ModerationPlugin, Verdict, export_moderation};
use serde::Deserialize;

const DEFAULTS: &[(&str, &[&str])] = &[
    (
        "violence",
        &[
            "kill",
            "killed",
            "killing",
            "murder",
            "murdered",
            "stab",
            "stabbed",
            "shoot",
            "shot dead",
            "slaughter",
            "massacre",
            "behead",
            "strangle",
            "bomb",
            "torture",
        ],
    ),
    ("violence/graphic", &["gore", "dismember", "dismembered", "mutilate", "mutilated", "disembowel"]),
    ("harassment", &["idiot", "moron", "loser", "worthless", "pathetic", "shut up"]),
    (
        "harassment/threatening",
        &["i will kill you", "i'll kill you", "you will die", "i will hurt you", "watch your back"],
    ),
    ("hate", &["subhuman", "vermin", "inferior race"]),
    ("self-harm", &["kill myself", "suicide", "self-harm", "cut myself", "end my life"]),
    ("self-harm/intent", &["i want to die", "i am going to kill myself", "i'm going to kill myself"]),
    ("self-harm/instructions", &["how to kill myself", "ways to commit suicide"]),
    ("illicit", &["buy cocaine", "sell drugs", "launder money", "counterfeit"]),
    ("illicit/violent", &["make a bomb", "build a bomb", "make a weapon"]),
    ("sexual", &["porn", "nude", "explicit sex"]),
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    categories: BTreeMap<String, Vec<String>>,
    /// Add the configured words to the built-in lists instead of replacing them.
    #[serde(default)]
    extend: bool,
}

fn word_bounded(text: &str, at: usize, len: usize) -> bool {
    let before = text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
    let after = text[at + len..].chars().next().is_none_or(|c| !c.is_alphanumeric());
    before && after
}

fn matches(text: &str, word: &str) -> usize {
    text.match_indices(word).filter(|(at, m)| word_bounded(text, *at, m.len())).count()
}

struct Keywords;

impl ModerationPlugin for Keywords {
    fn classify(config: &Config, inputs: &[String]) -> Result<Vec<Verdict>, String> {
        let settings: Settings = config.typed()?;
        let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if settings.categories.is_empty() || settings.extend {
            for (cat, words) in DEFAULTS {
                lists.insert((*cat).to_owned(), words.iter().map(|w| (*w).to_owned()).collect());
            }
        }
        for (cat, words) in settings.categories {
            lists.entry(cat).or_default().extend(words.into_iter().map(|w| w.to_lowercase()));
        }
        Ok(inputs
            .iter()
            .map(|input| {
                let text = input.to_lowercase();
                let categories: Vec<Category> = lists
                    .iter()
                    .map(|(name, words)| {
                        let hits: usize = words.iter().map(|w| matches(&text, w)).sum();
                        let score = 1.0 - 0.3f32.powi(hits as i32);
                        Category { name: name.clone(), flagged: hits > 0, score }
                    })
                    .collect();
                Verdict { flagged: categories.iter().any(|c| c.flagged), categories }
            })
            .collect())
    }
}

export_moderation!(Keywords);
