//! Moderation plugins: score texts against OpenAI's moderation categories.

use crate::Config;
use crate::bindings::moderation::exports::hearth::plugin::moderation as wit;

/// One category's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Category {
    /// OpenAI's category name, such as `violence` or `harassment/threatening`.
    pub name: String,
    /// Whether the text crosses the category's threshold.
    pub flagged: bool,
    /// Confidence in `[0, 1]`.
    pub score: f32,
}

/// The verdict on one text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// Whether any category is flagged.
    pub flagged: bool,
    /// The categories the plugin scored (the host fills in the others as not flagged).
    pub categories: Vec<Category>,
}

/// A moderation plugin.
pub trait ModerationPlugin {
    /// Classifies each input, in order.
    fn classify(config: &Config, inputs: &[String]) -> Result<Vec<Verdict>, String>;
}

#[doc(hidden)]
pub fn __classify<P: ModerationPlugin>(config: String, inputs: Vec<String>) -> Result<Vec<wit::Verdict>, String> {
    let config = Config::parse(&config)?;
    let verdicts = P::classify(&config, &inputs)?;
    Ok(verdicts
        .into_iter()
        .map(|v| wit::Verdict {
            flagged: v.flagged,
            categories: v
                .categories
                .into_iter()
                .map(|c| wit::Category { name: c.name, flagged: c.flagged, score: c.score })
                .collect(),
        })
        .collect())
}

/// Exports `$plugin` (a [`ModerationPlugin`]) as the component's moderation.
#[macro_export]
macro_rules! export_moderation {
    ($plugin:ty) => {
        struct __HearthModeration;
        impl $crate::bindings::moderation::exports::hearth::plugin::moderation::Guest for __HearthModeration {
            fn classify(
                config: String,
                inputs: Vec<String>,
            ) -> Result<Vec<$crate::bindings::moderation::exports::hearth::plugin::moderation::Verdict>, String> {
                $crate::__moderation_classify::<$plugin>(config, inputs)
            }
        }
        $crate::bindings::moderation::__export_moderation!(__HearthModeration);
    };
}
