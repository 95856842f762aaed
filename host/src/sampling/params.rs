//! The sampler settings of one request, already validated: every sampler of
//! text-generation-webui with its neutral value, and the order they run in.

/// One step of the sampler chain, by text-generation-webui's `sampler_priority` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    RepetitionPenalty,
    PresencePenalty,
    FrequencyPenalty,
    Dry,
    Temperature,
    DynamicTemperature,
    QuadraticSampling,
    TopNSigma,
    TopK,
    TopP,
    TypicalP,
    EpsilonCutoff,
    EtaCutoff,
    Tfs,
    TopA,
    MinP,
    AdaptiveP,
    Mirostat,
    Xtc,
    EncoderRepetitionPenalty,
    NoRepeatNgram,
}

impl Stage {
    /// text-generation-webui's default order (`sampler_priority`).
    pub const DEFAULT_ORDER: [Stage; 21] = [
        Stage::RepetitionPenalty,
        Stage::PresencePenalty,
        Stage::FrequencyPenalty,
        Stage::Dry,
        Stage::Temperature,
        Stage::DynamicTemperature,
        Stage::QuadraticSampling,
        Stage::TopNSigma,
        Stage::TopK,
        Stage::TopP,
        Stage::TypicalP,
        Stage::EpsilonCutoff,
        Stage::EtaCutoff,
        Stage::Tfs,
        Stage::TopA,
        Stage::MinP,
        Stage::AdaptiveP,
        Stage::Mirostat,
        Stage::Xtc,
        Stage::EncoderRepetitionPenalty,
        Stage::NoRepeatNgram,
    ];

    /// The stages `temperature_last` moves to the end.
    pub const TEMPERATURES: [Stage; 3] = [Stage::Temperature, Stage::DynamicTemperature, Stage::QuadraticSampling];

    pub fn name(self) -> &'static str {
        match self {
            Stage::RepetitionPenalty => "repetition_penalty",
            Stage::PresencePenalty => "presence_penalty",
            Stage::FrequencyPenalty => "frequency_penalty",
            Stage::Dry => "dry",
            Stage::Temperature => "temperature",
            Stage::DynamicTemperature => "dynamic_temperature",
            Stage::QuadraticSampling => "quadratic_sampling",
            Stage::TopNSigma => "top_n_sigma",
            Stage::TopK => "top_k",
            Stage::TopP => "top_p",
            Stage::TypicalP => "typical_p",
            Stage::EpsilonCutoff => "epsilon_cutoff",
            Stage::EtaCutoff => "eta_cutoff",
            Stage::Tfs => "tfs",
            Stage::TopA => "top_a",
            Stage::MinP => "min_p",
            Stage::AdaptiveP => "adaptive_p",
            Stage::Mirostat => "mirostat",
            Stage::Xtc => "xtc",
            Stage::EncoderRepetitionPenalty => "encoder_repetition_penalty",
            Stage::NoRepeatNgram => "no_repeat_ngram",
        }
    }

    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::DEFAULT_ORDER.into_iter().find(|s| s.name() == name)
    }

    /// Does this stage only move logits by what the context holds (so it also shapes greedy
    /// decoding), rather than reshape or truncate the distribution?
    pub fn is_penalty(self) -> bool {
        matches!(
            self,
            Stage::RepetitionPenalty
                | Stage::PresencePenalty
                | Stage::FrequencyPenalty
                | Stage::Dry
                | Stage::EncoderRepetitionPenalty
                | Stage::NoRepeatNgram
        )
    }
}

/// The order the samplers run in, as text-generation-webui sorts them: the stages `priority`
/// leaves out first (in the default order), then `priority`'s in its order. With
/// `temperature_last`, the temperature stages move to the end.
pub fn stage_order(priority: &[Stage], temperature_last: bool) -> Vec<Stage> {
    let mut order: Vec<Stage> = Stage::DEFAULT_ORDER.into_iter().filter(|s| !priority.contains(s)).collect();
    for &s in priority {
        if !order.contains(&s) {
            order.push(s);
        }
    }
    if temperature_last {
        for t in Stage::TEMPERATURES {
            order.retain(|&s| s != t);
            order.push(t);
        }
    }
    order
}

/// Dynamic temperature: a temperature between `low` and `high` from the distribution's
/// normalised entropy raised to `exponent`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicTemperature {
    pub low: f32,
    pub high: f32,
    pub exponent: f32,
}

/// Quadratic ("smoothing") sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothing {
    pub factor: f32,
    pub curve: f32,
}

/// DRY ("don't repeat yourself"): penalises the token that would extend a repeated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Dry {
    pub multiplier: f32,
    pub base: f32,
    pub allowed_length: usize,
    /// Tokens a repeated sequence never runs across.
    pub sequence_breakers: Vec<u32>,
}

/// XTC ("exclude top choices").
#[derive(Debug, Clone, PartialEq)]
pub struct Xtc {
    pub threshold: f32,
    pub probability: f32,
    /// If XTC would remove one of these (newline, end of text), it leaves the step alone.
    pub protected: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirostatVersion {
    /// Mirostat 1.0 (llama.cpp's): top-k from an estimated Zipf exponent.
    V1,
    /// Mirostat 2.0 (textgen's): truncate at the surprise bound.
    V2,
}

/// Mirostat: keeps the observed surprise near `tau`, learning at rate `eta`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mirostat {
    pub version: MirostatVersion,
    pub tau: f32,
    pub eta: f32,
}

/// Adaptive-p: favours tokens near a target probability, steered by a moving average of what
/// was chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveP {
    pub target: f32,
    pub decay: f32,
}

/// The sampler settings of one request, already validated. Neutral values switch a sampler off.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub dynamic_temperature: Option<DynamicTemperature>,
    pub smoothing: Option<Smoothing>,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
    /// 1 disables.
    pub typical_p: f32,
    /// 1 disables.
    pub tfs: f32,
    /// 0 disables.
    pub top_a: f32,
    /// 0 disables.
    pub top_n_sigma: f32,
    /// A probability (already scaled from textgen's units of 1e-4); 0 disables.
    pub epsilon_cutoff: f32,
    /// A probability (already scaled from textgen's units of 1e-4); 0 disables.
    pub eta_cutoff: f32,
    /// 1 disables; divides positive logits of tokens already in the context (multiplies negative).
    pub repetition_penalty: f32,
    /// How many most recent tokens the penalties (and DRY) look at; 0 means all.
    pub repetition_penalty_range: usize,
    /// Subtracted once from the logit of every token already in the context.
    pub presence_penalty: f32,
    /// Subtracted per occurrence of a token in the context.
    pub frequency_penalty: f32,
    /// 1 disables; above 1 favours tokens of the prompt (the "hallucination" penalty).
    pub encoder_repetition_penalty: f32,
    /// 0 disables; bans any token that would repeat an n-gram of the context.
    pub no_repeat_ngram_size: usize,
    pub dry: Option<Dry>,
    pub xtc: Option<Xtc>,
    pub mirostat: Option<Mirostat>,
    pub adaptive_p: Option<AdaptiveP>,
    /// The order of the chain (see [`stage_order`]).
    pub order: Vec<Stage>,
    /// Same seed, same prompt, same settings → same tokens.
    pub seed: Option<u64>,
    /// Token ids that may never be chosen (textgen's `custom_token_bans`).
    pub banned_tokens: Vec<u32>,
    /// Added to a token's logit before everything else (OpenAI's `logit_bias`, -100…100; -100
    /// all but bans the token, +100 all but forces it).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            dynamic_temperature: None,
            smoothing: None,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            tfs: 1.0,
            top_a: 0.0,
            top_n_sigma: 0.0,
            epsilon_cutoff: 0.0,
            eta_cutoff: 0.0,
            repetition_penalty: 1.0,
            repetition_penalty_range: 1024,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            encoder_repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            dry: None,
            xtc: None,
            mirostat: None,
            adaptive_p: None,
            order: Stage::DEFAULT_ORDER.to_vec(),
            seed: None,
            banned_tokens: Vec::new(),
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    /// Greedy decoding: the best token after bans and penalties, no draw.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Stage::DEFAULT_ORDER {
            assert_eq!(Stage::from_name(s.name()), Some(s));
        }
        assert_eq!(Stage::from_name("beam_search"), None);
    }

    #[test]
    fn a_priority_goes_first_and_temperature_last_moves_the_temperatures() {
        let order = stage_order(&[Stage::TopK, Stage::Temperature], false);
        assert_eq!(order[0], Stage::RepetitionPenalty, "unnamed stages run first");
        assert_eq!(&order[order.len() - 2..], &[Stage::TopK, Stage::Temperature]);
        assert_eq!(order.len(), Stage::DEFAULT_ORDER.len());
        let order = stage_order(&[], true);
        assert_eq!(&order[order.len() - 3..], &Stage::TEMPERATURES);
        assert_eq!(order[4], Stage::TopNSigma);
    }
}
