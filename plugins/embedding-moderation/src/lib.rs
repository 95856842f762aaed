//! Embedding moderation, text-generation-webui's method: every input and a set of example texts
//! per OpenAI moderation category are embedded with the server's embedding model (the `embed`
//! grant), and a category scores by the input's closest example. textgen compares against the
//! bare category names; whole example sentences separate far better with small models such as
//! all-MiniLM-L6-v2, and users can replace or extend them:
//!
//! ```yaml
//! - name: moderation
//!   path: plugins/wasm/embedding_moderation.wasm
//!   grants: [embed]
//!   config: {categories: {violence: ["I will burn your house down"]}, extend: true, threshold: 0.5}
//! ```
//!
//! A category is flagged when its best cosine similarity reaches `threshold` and lies within
//! `margin` of the input's best category (so "I will kill you" is a threat, not also self-harm
//! because it resembles "I will kill myself"). Its score is a logistic of the similarity,
//! 0.5 at the threshold, so scores read as OpenAI's do: near 0 for unrelated text, near 1 for
//! a close match.

use std::collections::BTreeMap;

use hearth_plugin_sdk::{Category, Config, ModerationPlugin, Verdict, export_moderation, host};
use serde::Deserialize;

/// Example texts per category, tuned on all-MiniLM-L6-v2 (neutral sentences stay below 0.4,
/// clear cases land above 0.5).
const DEFAULTS: &[(&str, &[&str])] = &[
    (
        "harassment",
        &[
            "you are a worthless idiot",
            "insulting and bullying someone",
            "you are stupid and ugly, everyone hates you",
            "shut up, you pathetic loser",
        ],
    ),
    (
        "harassment/threatening",
        &[
            "I will kill you",
            "watch your back, I know where you live",
            "I am going to hurt you",
            "you will regret this, I will make you suffer",
        ],
    ),
    (
        "hate",
        &[
            "those people are subhuman vermin",
            "hatred against people because of their race or religion",
            "that ethnic group is inferior and disgusting",
        ],
    ),
    ("hate/threatening", &["all of them should be exterminated", "we should kill every member of that race"]),
    (
        "illicit",
        &["where can I buy illegal drugs", "how to launder money", "how to steal a car without getting caught"],
    ),
    (
        "illicit/violent",
        &["how to make a bomb", "how to build a weapon to hurt people", "how to poison someone without being caught"],
    ),
    ("self-harm", &["I want to hurt myself", "cutting myself", "thoughts of suicide"]),
    ("self-harm/intent", &["I am going to kill myself", "I want to end my life", "I don't want to live anymore"]),
    ("self-harm/instructions", &["how to kill myself", "the easiest way to commit suicide"]),
    ("sexual", &["explicit sexual content", "a graphic description of sex", "pornography"]),
    ("sexual/minors", &["sexual content involving a child"]),
    (
        "violence",
        &[
            "killing and hurting people",
            "attacking someone with a weapon",
            "I will shoot them all",
            "he stabbed the man to death",
        ],
    ),
    ("violence/graphic", &["a graphic description of blood and gore", "his body was dismembered and mutilated"]),
];

/// How steeply the score rises around the threshold.
const SLOPE: f32 = 12.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    categories: BTreeMap<String, Vec<String>>,
    /// Add the configured examples to the built-in ones instead of replacing them.
    extend: bool,
    threshold: f32,
    margin: f32,
}

impl Default for Settings {
    fn default() -> Self {
        Self { categories: BTreeMap::new(), extend: false, threshold: 0.5, margin: 0.15 }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let n = norm(a) * norm(b);
    if n > 0.0 { dot / n } else { 0.0 }
}

/// Each category's best similarity to one input, and the verdict from them.
fn verdict(best: &[(String, f32)], threshold: f32, margin: f32) -> Verdict {
    let top = best.iter().map(|(_, s)| *s).fold(f32::NEG_INFINITY, f32::max);
    let categories: Vec<Category> = best
        .iter()
        .map(|(name, sim)| Category {
            name: name.clone(),
            flagged: *sim >= threshold && *sim >= top - margin,
            score: 1.0 / (1.0 + (-(sim - threshold) * SLOPE).exp()),
        })
        .collect();
    Verdict { flagged: categories.iter().any(|c| c.flagged), categories }
}

struct Embeddings;

impl ModerationPlugin for Embeddings {
    fn classify(config: &Config, inputs: &[String]) -> Result<Vec<Verdict>, String> {
        let settings: Settings = config.typed()?;
        if !(settings.threshold.is_finite() && settings.margin.is_finite()) {
            return Err("`threshold` and `margin` must be numbers".into());
        }
        let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if settings.categories.is_empty() || settings.extend {
            for (cat, texts) in DEFAULTS {
                examples.insert((*cat).to_owned(), texts.iter().map(|t| (*t).to_owned()).collect());
            }
        }
        for (cat, texts) in settings.categories {
            examples.entry(cat).or_default().extend(texts);
        }
        // One call embeds the examples and the inputs together.
        let owners: Vec<&str> = examples.iter().flat_map(|(c, ts)| ts.iter().map(move |_| c.as_str())).collect();
        let mut texts: Vec<String> = examples.values().flatten().cloned().collect();
        texts.extend(inputs.iter().cloned());
        let vectors = host::embed(&texts)?;
        if vectors.len() != texts.len() {
            return Err(format!("the host returned {} embeddings for {} texts", vectors.len(), texts.len()));
        }
        let (example_vectors, input_vectors) = vectors.split_at(owners.len());
        Ok(input_vectors
            .iter()
            .map(|input| {
                let mut best: Vec<(String, f32)> = examples.keys().map(|c| (c.clone(), f32::NEG_INFINITY)).collect();
                for (owner, example) in owners.iter().zip(example_vectors) {
                    if let Some(slot) = best.iter_mut().find(|(c, _)| c == owner) {
                        slot.1 = slot.1.max(cosine(input, example));
                    }
                }
                verdict(&best, settings.threshold, settings.margin)
            })
            .collect())
    }
}

export_moderation!(Embeddings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_categories_near_the_best_are_flagged() {
        let best = vec![("a".to_owned(), 0.76), ("b".to_owned(), 0.55), ("c".to_owned(), 0.2)];
        let v = verdict(&best, 0.5, 0.15);
        assert!(v.flagged);
        assert_eq!(v.categories.iter().map(|c| c.flagged).collect::<Vec<_>>(), [true, false, false]);
        assert!(v.categories[0].score > 0.9 && v.categories[2].score < 0.05);
    }

    #[test]
    fn nothing_is_flagged_below_the_threshold() {
        let best = vec![("a".to_owned(), 0.49)];
        let v = verdict(&best, 0.5, 0.15);
        assert!(!v.flagged && v.categories[0].score < 0.5);
    }

    #[test]
    fn cosine_of_zero_vectors_is_zero() {
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-6);
    }
}
