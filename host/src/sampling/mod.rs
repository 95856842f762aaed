//! Choosing the next token from logits: logit bias and bans, then text-generation-webui's
//! sampler chain in `sampler_priority` order (penalties, DRY, temperatures, the truncation
//! samplers, mirostat, adaptive-p, XTC, the n-gram ban), then a seeded draw — or, greedy, the
//! best token after bans and penalties.

mod candidates;
mod feedback;
mod params;
mod penalties;
mod pool;
mod shaping;
mod truncation;

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use feedback::{AdaptivePState, MirostatState};
pub use params::{
    AdaptiveP, Dry, DynamicTemperature, Mirostat, MirostatVersion, SamplingParams, Smoothing, Stage, Xtc, stage_order,
};
use pool::Pool;

/// The sampler of one sequence: its settings, its random stream and what its stateful
/// samplers have learnt so far.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// The prompt's tokens, for the encoder repetition penalty (empty when it is off).
    prompt_tokens: HashMap<u32, u32>,
    mirostat: Option<MirostatState>,
    adaptive_p: Option<AdaptivePState>,
}

/// One chosen token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub id: u32,
    /// Log-probability of the token under the model's unmodified distribution.
    pub logprob: f32,
}

/// Candidates after the built-in chain: token ids and their logits, most likely first.
/// Hooks (sampler plugins) edit them in place; a logit of `-inf` removes a candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

/// With a hook and greedy decoding, the hook sees this many of the most likely tokens.
pub const GREEDY_HOOK_CANDIDATES: usize = 32;
/// With a hook, at most this many candidates are handed over (sampling without truncation).
pub const MAX_HOOK_CANDIDATES: usize = 256;

/// Why [`Sampler::sample_with`] chose no token.
#[derive(Debug, Clone, PartialEq)]
pub enum HookedSampling<E> {
    /// The hook failed, with its own error.
    Hook(E),
    /// The hook (with the chain) removed every candidate.
    NothingLeft,
}

impl Sampler {
    /// A sampler for a sequence with no prompt to favour (the encoder penalty sees nothing).
    pub fn new(params: SamplingParams) -> Self {
        Self::for_prompt(params, &[])
    }

    /// A sampler for the sequence that starts with `prompt`.
    pub fn for_prompt(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let prompt_tokens =
            if params.encoder_repetition_penalty != 1.0 { penalties::counts(prompt) } else { HashMap::new() };
        Self {
            mirostat: params.mirostat.map(MirostatState::new),
            adaptive_p: params.adaptive_p.map(AdaptivePState::new),
            params,
            rng,
            prompt_tokens,
        }
    }

    /// Picks the next token. `context` is every token so far (prompt and generated).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> Sampled {
        let mut pool = self.chain(logits, context);
        let id = if self.params.is_greedy() {
            pool.ids.get(pool.best()).copied()
        } else {
            pool.sort();
            self.draw(&pool)
        };
        // Every token removed (bans and n-gram bans can do it): the model's own best.
        let id = id.unwrap_or(argmax(logits) as u32);
        Sampled { id, logprob: log_softmax_at(logits, id as usize) }
    }

    /// Like [`sample`](Self::sample), but `hook` may edit the candidates before the choice.
    /// Fails with the hook's own error, or when the hook removed every candidate.
    pub fn sample_with<E>(
        &mut self,
        logits: &[f32],
        context: &[u32],
        hook: &mut dyn FnMut(&mut Candidates) -> Result<(), E>,
    ) -> Result<Sampled, HookedSampling<E>> {
        let mut pool = self.chain(logits, context);
        pool.keep_top(if self.params.is_greedy() { GREEDY_HOOK_CANDIDATES } else { MAX_HOOK_CANDIDATES });
        let mut candidates =
            Candidates { ids: std::mem::take(&mut pool.ids), logits: std::mem::take(&mut pool.logits) };
        hook(&mut candidates).map_err(HookedSampling::Hook)?;
        let pool = Pool::from_sorted(candidates.ids, candidates.logits);
        if pool.is_empty() {
            return Err(HookedSampling::NothingLeft);
        }
        let id = if self.params.is_greedy() { Some(pool.ids[pool.best()]) } else { self.draw(&pool) };
        let id = id.ok_or(HookedSampling::NothingLeft)?;
        Ok(Sampled { id, logprob: log_softmax_at(logits, id as usize) })
    }

    /// The next token's distribution, most likely first, at most `top` tokens: the model's own
    /// softmax, or with `use_samplers` what this request's chain leaves of it, renormalised;
    /// greedy settings leave the one best token. text-generation-webui's `/v1/internal/logits`.
    pub fn distribution(&mut self, logits: &[f32], context: &[u32], use_samplers: bool, top: usize) -> Vec<(u32, f32)> {
        if !use_samplers {
            let c = top_n(logits, top);
            let norm = log_normalizer(logits);
            return c.ids.iter().zip(&c.logits).map(|(&id, &l)| (id, (l - norm).exp())).collect();
        }
        let mut pool = self.chain(logits, context);
        if self.params.is_greedy() {
            let id = pool.ids.get(pool.best()).copied().unwrap_or(argmax(logits) as u32);
            return vec![(id, 1.0)];
        }
        pool.sort();
        pool.ids.iter().copied().zip(pool.probabilities()).take(top.max(1)).collect()
    }

    /// Logit bias, bans, then the chain's stages in order (greedy: only the penalties).
    fn chain(&mut self, logits: &[f32], context: &[u32]) -> Pool {
        let mut scores = logits.to_vec();
        for &(t, bias) in &self.params.logit_bias {
            if let Some(s) = scores.get_mut(t as usize) {
                *s += bias;
            }
        }
        for &t in &self.params.banned_tokens {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        let mut pool = Pool::dense(scores);
        let greedy = self.params.is_greedy();
        self.stages(&mut pool, context, logits.len(), greedy);
        pool
    }

    /// The chain's stages in order on `pool` (of a `vocab`-token row), or only its penalties.
    fn stages(&mut self, pool: &mut Pool, context: &[u32], vocab: usize, penalties_only: bool) {
        let p = &self.params;
        let seen = if p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            penalties::counts(penalties::window(context, p.repetition_penalty_range))
        } else {
            HashMap::new()
        };
        for &stage in &p.order {
            if penalties_only && !stage.is_penalty() {
                continue;
            }
            match stage {
                Stage::RepetitionPenalty if p.repetition_penalty != 1.0 => {
                    penalties::repetition(pool, &seen, p.repetition_penalty)
                }
                Stage::PresencePenalty if p.presence_penalty != 0.0 => {
                    penalties::presence(pool, &seen, p.presence_penalty)
                }
                Stage::FrequencyPenalty if p.frequency_penalty != 0.0 => {
                    penalties::frequency(pool, &seen, p.frequency_penalty)
                }
                Stage::Dry => {
                    if let Some(dry) = &p.dry {
                        penalties::dry(pool, penalties::window(context, p.repetition_penalty_range), dry)
                    }
                }
                Stage::EncoderRepetitionPenalty if p.encoder_repetition_penalty != 1.0 => {
                    penalties::encoder_repetition(pool, &self.prompt_tokens, p.encoder_repetition_penalty)
                }
                Stage::NoRepeatNgram if p.no_repeat_ngram_size > 0 => {
                    penalties::no_repeat_ngram(pool, context, p.no_repeat_ngram_size)
                }
                Stage::Temperature => shaping::temperature(pool, p.temperature),
                Stage::DynamicTemperature => {
                    if let Some(d) = &p.dynamic_temperature {
                        shaping::dynamic_temperature(pool, d)
                    }
                }
                Stage::QuadraticSampling => {
                    if let Some(s) = &p.smoothing {
                        shaping::quadratic(pool, s)
                    }
                }
                Stage::TopNSigma if p.top_n_sigma > 0.0 => truncation::top_n_sigma(pool, p.top_n_sigma),
                Stage::TopK if p.top_k > 0 => truncation::top_k(pool, p.top_k),
                Stage::TopP if p.top_p < 1.0 => truncation::top_p(pool, p.top_p),
                Stage::TypicalP if p.typical_p < 1.0 => truncation::typical_p(pool, p.typical_p),
                Stage::EpsilonCutoff if p.epsilon_cutoff > 0.0 => truncation::epsilon_cutoff(pool, p.epsilon_cutoff),
                Stage::EtaCutoff if p.eta_cutoff > 0.0 => truncation::eta_cutoff(pool, p.eta_cutoff),
                Stage::Tfs if p.tfs < 1.0 => truncation::tail_free(pool, p.tfs),
                Stage::TopA if p.top_a > 0.0 => truncation::top_a(pool, p.top_a),
                Stage::MinP if p.min_p > 0.0 => truncation::min_p(pool, p.min_p),
                Stage::AdaptiveP => {
                    if let Some(state) = &mut self.adaptive_p {
                        state.step(pool, &mut self.rng)
                    }
                }
                Stage::Mirostat => {
                    if let Some(state) = &mut self.mirostat {
                        state.step(pool, vocab, &mut self.rng)
                    }
                }
                Stage::Xtc => {
                    // The roll comes first, as in textgen: a step XTC skips costs no sort.
                    if let Some(xtc) = &p.xtc
                        && self.rng.random::<f32>() < xtc.probability
                    {
                        truncation::xtc(pool, xtc.threshold, &xtc.protected)
                    }
                }
                _ => {}
            }
        }
    }

    /// Draws from a pool's probabilities (`None` when nothing is left in it).
    fn draw(&mut self, pool: &Pool) -> Option<u32> {
        let probs = pool.probabilities();
        if probs.iter().all(|&p| p <= 0.0) {
            return None;
        }
        Some(pool.ids[draw_index(&probs, &mut self.rng)])
    }
}

/// Draws an index from probabilities that sum to 1 (the last non-zero one if rounding leaves
/// the draw past the end).
fn draw_index(probs: &[f32], rng: &mut StdRng) -> usize {
    let r: f32 = rng.random();
    let mut cumulative = 0.0;
    for (i, &prob) in probs.iter().enumerate() {
        cumulative += prob;
        if r < cumulative {
            return i;
        }
    }
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
}

/// The `n` largest scores (finite ones first), most likely first.
fn top_n(scores: &[f32], n: usize) -> Candidates {
    let mut pool = Pool::dense(scores.to_vec());
    pool.keep_top(n.max(1));
    if pool.is_empty() {
        let best = argmax(scores);
        return Candidates { ids: vec![best as u32], logits: vec![scores.get(best).copied().unwrap_or(0.0)] };
    }
    Candidates { ids: pool.ids, logits: pool.logits }
}

/// Index of the largest finite value (the first on ties, as torch.argmax).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

/// `log_softmax(values)[id]`, computed stably.
pub fn log_softmax_at(values: &[f32], id: usize) -> f32 {
    values.get(id).map_or(f32::NEG_INFINITY, |&v| v - log_normalizer(values))
}

/// The `n` largest log-probabilities of `logits` under their softmax, most likely first (empty
/// for `n == 0`).
pub fn top_logprobs(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    if n == 0 {
        return Vec::new();
    }
    let c = top_n(logits, n);
    let norm = log_normalizer(logits);
    c.ids.iter().zip(&c.logits).map(|(&id, &l)| (id, l - norm)).collect()
}

/// `log Σ exp(values)`, computed stably: what `log_softmax` subtracts from every value (once a
/// token for the sampled token's log-probability, so vectorised).
fn log_normalizer(values: &[f32]) -> f32 {
    hearth_kernels::ops::log_sum_exp(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams { seed: Some(7), ..SamplingParams::default() };
        f(&mut p);
        p
    }

    /// How often each token is drawn in `n` steps from `logits` with empty context.
    fn histogram(p: SamplingParams, logits: &[f32], n: usize) -> Vec<usize> {
        let mut s = Sampler::new(p);
        let mut counts = vec![0; logits.len()];
        for _ in 0..n {
            counts[s.sample(logits, &[]).id as usize] += 1;
        }
        counts
    }

    fn ln(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 2.9], &[]).id, 1);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_seed() {
        for seed in 0..20 {
            let mut s = Sampler::new(params(|p| {
                p.top_k = 1;
                p.seed = Some(seed)
            }));
            assert_eq!(s.sample(&[1.0, 1.5, 1.4], &[]).id, 1);
        }
    }

    #[test]
    fn truncation_samplers_in_the_chain_limit_what_is_drawn() {
        let logits = ln(&[0.4, 0.3, 0.15, 0.1, 0.05]);
        let drawn = |f: fn(&mut SamplingParams)| {
            histogram(params(f), &logits, 400).iter().enumerate().filter(|c| *c.1 > 0).map(|c| c.0).collect::<Vec<_>>()
        };
        assert_eq!(drawn(|p| p.top_p = 0.7), vec![0, 1]);
        assert_eq!(drawn(|p| p.min_p = 0.5), vec![0, 1]);
        assert_eq!(drawn(|p| p.typical_p = 0.1), vec![1]);
        assert_eq!(drawn(|p| p.tfs = 0.2), vec![0]);
        assert_eq!(drawn(|p| p.top_a = 1.0), vec![0, 1]);
        assert_eq!(drawn(|p| p.epsilon_cutoff = 0.12), vec![0, 1, 2]);
        assert_eq!(drawn(|p| p.eta_cutoff = 0.2), vec![0, 1, 2]);
        assert_eq!(drawn(|_| {}), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn the_draw_follows_the_distribution() {
        let counts = histogram(params(|_| {}), &ln(&[0.7, 0.2, 0.1]), 3000);
        for (count, expected) in counts.iter().zip([0.7, 0.2, 0.1]) {
            assert!((*count as f32 / 3000.0 - expected).abs() < 0.03, "{counts:?}");
        }
    }

    #[test]
    fn temperature_last_lets_truncation_see_the_model_s_distribution() {
        // At temperature 3, min_p 0.5 keeps 0.4, 0.3 and 0.15 (the flattened 0.15 is above
        // half the best); with temperature last it sees the original and keeps two.
        let logits = ln(&[0.4, 0.3, 0.15, 0.1, 0.05]);
        let early = histogram(params(|p| (p.temperature, p.min_p) = (3.0, 0.5)), &logits, 600);
        assert!(early[2] > 0, "{early:?}");
        let last = histogram(
            params(|p| {
                (p.temperature, p.min_p) = (3.0, 0.5);
                p.order = stage_order(&[], true)
            }),
            &logits,
            600,
        );
        assert_eq!(last[2..], [0, 0, 0], "{last:?}");
    }

    #[test]
    fn greedy_applies_penalties_but_not_the_truncation_samplers() {
        let logits = [3.0, 2.9, 0.0];
        let mut s =
            Sampler::new(SamplingParams { repetition_penalty: 2.0, typical_p: 0.01, ..SamplingParams::greedy() });
        assert_eq!(s.sample(&logits, &[0]).id, 1, "the penalty turns the choice");
        let mut s = Sampler::new(SamplingParams { no_repeat_ngram_size: 2, ..SamplingParams::greedy() });
        assert_eq!(s.sample(&logits, &[0, 0]).id, 1, "0 after 0 would repeat the bigram");
    }

    #[test]
    fn xtc_acts_with_its_probability() {
        let logits = ln(&[0.5, 0.3, 0.2]);
        let xtc = |probability| Xtc { threshold: 0.25, probability, protected: vec![] };
        let never = histogram(params(|p| p.xtc = Some(xtc(0.0))), &logits, 300);
        assert!(never[0] > 0);
        let always = histogram(params(|p| p.xtc = Some(xtc(1.0))), &logits, 300);
        assert_eq!(always[0], 0, "the top choice is excluded: {always:?}");
        assert!(always[1] > 0 && always[2] > 0);
        let protected = histogram(params(|p| p.xtc = Some(Xtc { protected: vec![0], ..xtc(1.0) })), &logits, 300);
        assert!(protected[0] > 0, "a protected token leaves the step alone");
    }

    #[test]
    fn mirostat_in_the_chain_draws_within_its_bound() {
        // Zipf-like logits: with tau 1 the bound 2 bits allows only tokens with p > 1/4.
        let logits: Vec<f32> = (1..=50).map(|r| -2.0 * (r as f32).ln()).collect();
        let mirostat = Mirostat { version: MirostatVersion::V2, tau: 1.0, eta: 0.0 };
        let counts = histogram(params(|p| p.mirostat = Some(mirostat)), &logits, 200);
        let probs = pool::softmax(&logits);
        let allowed = probs.iter().take_while(|p| -p.log2() <= 2.0).count();
        assert!(counts[allowed..].iter().all(|&c| c == 0), "{allowed} {counts:?}");
    }

    #[test]
    fn dry_in_the_chain_turns_a_repeat_away() {
        // Greedy would continue "1 2 3 … 1 2" with 3; DRY pushes 3 down.
        let logits = [0.0, 0.0, 0.0, 1.0, 0.9];
        let dry = Dry { multiplier: 2.0, base: 1.75, allowed_length: 2, sequence_breakers: vec![] };
        let mut s = Sampler::new(SamplingParams { dry: Some(dry), ..SamplingParams::greedy() });
        assert_eq!(s.sample(&logits, &[1, 2, 3, 0, 1, 2]).id, 4);
        assert_eq!(s.sample(&logits, &[1, 2, 3, 0, 1]).id, 3, "a repeat of one token is allowed");
    }

    #[test]
    fn the_encoder_penalty_favours_prompt_tokens() {
        let logits = [1.0, 1.1];
        let mut s =
            Sampler::for_prompt(SamplingParams { encoder_repetition_penalty: 1.5, ..SamplingParams::greedy() }, &[0]);
        assert_eq!(s.sample(&logits, &[0]).id, 0);
    }

    #[test]
    fn dynamic_temperature_and_smoothing_reshape_the_draw() {
        let logits = ln(&[0.5, 0.3, 0.2]);
        // A low dynamic temperature sharpens: the best token dominates.
        let d = DynamicTemperature { low: 0.1, high: 0.1, exponent: 1.0 };
        let sharp = histogram(params(|p| p.dynamic_temperature = Some(d)), &logits, 300);
        assert!(sharp[0] > 280, "{sharp:?}");
        let smooth = histogram(params(|p| p.smoothing = Some(Smoothing { factor: 20.0, curve: 1.0 })), &logits, 300);
        assert!(smooth[0] > 280, "{smooth:?}");
    }

    #[test]
    fn presence_and_frequency_penalties_subtract() {
        let mut s =
            Sampler::new(SamplingParams { presence_penalty: 1.0, frequency_penalty: 0.5, ..SamplingParams::greedy() });
        // Token 0 (logit 2) seen 3 times: 2 - 1 - 1.5 = -0.5 < token 1's 0.
        assert_eq!(s.sample(&[2.0, 0.0], &[0, 0, 0]).id, 1);
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy() });
        // Out of the range the penalty looks at, a token is not penalised.
        let mut far = vec![0u32];
        far.extend(std::iter::repeat_n(5, 1024));
        assert_eq!(s.sample(&[4.0, 3.0, 0.0, 0.0, 0.0, 0.0], &far).id, 0);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(|p| p.seed = Some(seed)));
            (0..20).map(|_| s.sample(&logits, &[]).id).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn a_hook_sees_the_truncated_candidates_and_its_bans_hold() {
        let mut s = Sampler::new(params(|p| p.top_k = 3));
        let logits = [0.1, 3.0, 2.9, 2.8, -1.0];
        for _ in 0..20 {
            let out = s
                .sample_with(&logits, &[], &mut |c| {
                    assert_eq!(c.ids.len(), 3);
                    c.logits[0] = f32::NEG_INFINITY; // ban the best
                    Ok::<(), String>(())
                })
                .unwrap();
            assert!(out.id == 2 || out.id == 3, "{out:?}");
        }
        let mut greedy = Sampler::new(SamplingParams::greedy());
        let err = greedy
            .sample_with(&logits, &[], &mut |c| {
                c.logits.iter_mut().for_each(|l| *l = f32::NEG_INFINITY);
                Ok::<(), String>(())
            })
            .unwrap_err();
        assert!(matches!(err, HookedSampling::NothingLeft));
        let err = greedy.sample_with(&logits, &[], &mut |_| Err("the plugin trapped")).unwrap_err();
        assert!(matches!(err, HookedSampling::Hook("the plugin trapped")));
    }

    #[test]
    fn logit_bias_moves_the_choice() {
        let logits = [0.1, 3.0, 2.9];
        let mut s = Sampler::new(SamplingParams { logit_bias: vec![(0, 100.0)], ..SamplingParams::greedy() });
        assert_eq!(s.sample(&logits, &[]).id, 0, "+100 forces a token");
        let mut s = Sampler::new(SamplingParams { logit_bias: vec![(1, -100.0)], ..SamplingParams::greedy() });
        assert_eq!(s.sample(&logits, &[]).id, 2, "-100 rules the best token out");
        for seed in 0..20 {
            let mut s = Sampler::new(params(|p| {
                p.logit_bias = vec![(1, -100.0), (2, -100.0)];
                p.seed = Some(seed)
            }));
            assert_eq!(s.sample(&logits, &[]).id, 0, "sampling too (seed {seed})");
        }
        // The reported log-probability stays the model's own.
        let mut s = Sampler::new(SamplingParams { logit_bias: vec![(0, 100.0)], ..SamplingParams::greedy() });
        assert!((s.sample(&logits, &[]).logprob - log_softmax_at(&logits, 0)).abs() < 1e-6);
    }

    #[test]
    fn a_pool_emptied_by_bans_falls_back_to_the_model_s_best_token() {
        // Every token banned, then every stage that reads the pool's probabilities: no panic.
        let logits = [0.1, 3.0, 2.9];
        let every = params(|p| {
            p.banned_tokens = vec![0, 1, 2];
            (p.typical_p, p.tfs, p.top_a, p.min_p, p.top_p) = (0.5, 0.5, 0.5, 0.5, 0.5);
            (p.epsilon_cutoff, p.eta_cutoff, p.top_n_sigma) = (0.01, 0.01, 1.0);
            p.xtc = Some(Xtc { threshold: 0.1, probability: 1.0, protected: vec![] });
            p.mirostat = Some(Mirostat { version: MirostatVersion::V1, tau: 5.0, eta: 0.1 });
            p.adaptive_p = Some(AdaptiveP { target: 0.5, decay: 0.9 });
        });
        assert_eq!(Sampler::new(every.clone()).sample(&logits, &[]).id, 1);
        let mirostat_2 =
            SamplingParams { mirostat: Some(Mirostat { version: MirostatVersion::V2, tau: 5.0, eta: 0.1 }), ..every };
        assert_eq!(Sampler::new(mirostat_2).sample(&logits, &[]).id, 1);
    }

    #[test]
    fn banned_tokens_are_never_chosen() {
        let mut s = Sampler::new(SamplingParams { banned_tokens: vec![1], ..SamplingParams::greedy() });
        assert_eq!(s.sample(&[0.1, 3.0, 2.9], &[]).id, 2);
        for seed in 0..20 {
            let mut s = Sampler::new(params(|p| {
                p.banned_tokens = vec![1];
                p.seed = Some(seed)
            }));
            assert_ne!(s.sample(&[0.1, 3.0, 2.9], &[]).id, 1);
        }
    }

    #[test]
    fn the_distribution_is_the_softmax_or_what_the_samplers_leave() {
        let logits = [1.0f32, 3.0, 2.0, 0.0];
        let mut sampler = Sampler::new(params(|p| p.top_k = 2));
        let raw = sampler.distribution(&logits, &[], false, 3);
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        assert_eq!(raw.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        for (id, prob) in &raw {
            assert!((prob - logits[*id as usize].exp() / total).abs() < 1e-6);
        }
        // top_k 2: the two best, renormalised.
        let kept = sampler.distribution(&logits, &[], true, 50);
        assert_eq!(kept.len(), 2);
        assert!((kept[0].1 - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6, "{kept:?}");
        assert!((kept.iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
        // Greedy leaves the best token alone.
        let greedy = Sampler::new(SamplingParams::greedy()).distribution(&logits, &[], true, 50);
        assert_eq!(greedy, vec![(1, 1.0)]);
    }

    #[test]
    fn logprob_is_of_the_unmodified_distribution() {
        let mut s = Sampler::new(SamplingParams::greedy());
        let out = s.sample(&[0.0, 0.0], &[]);
        assert!((out.logprob - 0.5f32.ln()).abs() < 1e-6);
    }
}
