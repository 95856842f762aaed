//! Choosing the next token from logits: repetition / presence / frequency penalties, temperature,
//! top-k, top-p and min-p (in text-generation-webui's default order), then a seeded draw, or
//! greedy argmax at temperature 0.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The sampler settings of one request, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
    /// 1 disables; divides positive logits of tokens already in the context (multiplies negative).
    pub repetition_penalty: f32,
    /// How many most recent tokens the penalties look at; 0 means all.
    pub repetition_penalty_range: usize,
    /// Subtracted once from the logit of every token already in the context.
    pub presence_penalty: f32,
    /// Subtracted per occurrence of a token in the context.
    pub frequency_penalty: f32,
    /// Same seed, same prompt, same settings → same tokens.
    pub seed: Option<u64>,
    /// Apply temperature after the truncation samplers instead of before (textgen's
    /// `temperature_last`).
    pub temperature_last: bool,
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
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_penalty_range: 1024,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            temperature_last: false,
            banned_tokens: Vec::new(),
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

/// The sampler of one sequence: its settings and its random stream.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

/// One chosen token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub id: u32,
    /// Log-probability of the token under the model's unmodified distribution.
    pub logprob: f32,
}

/// Candidates after the built-in truncation: token ids and their logits, most likely first.
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

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng }
    }

    /// Picks the next token. `context` is every token so far (prompt and generated).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> Sampled {
        let scores = self.scores(logits, context);
        let id = if self.params.is_greedy() {
            argmax(&scores)
        } else {
            let candidates = self.truncate(&scores);
            self.draw(&candidates)
        };
        Sampled { id: id as u32, logprob: log_softmax_at(logits, id) }
    }

    /// Like [`sample`](Self::sample), but `hook` may edit the candidates before the choice.
    /// Fails when the hook fails or removes every candidate.
    pub fn sample_with(
        &mut self,
        logits: &[f32],
        context: &[u32],
        hook: &mut dyn FnMut(&mut Candidates) -> Result<(), String>,
    ) -> Result<Sampled, String> {
        let scores = self.scores(logits, context);
        let mut candidates = if self.params.is_greedy() {
            top_n(&scores, GREEDY_HOOK_CANDIDATES)
        } else {
            let mut c = self.truncate(&scores);
            c.ids.truncate(MAX_HOOK_CANDIDATES);
            c.logits.truncate(MAX_HOOK_CANDIDATES);
            c
        };
        hook(&mut candidates)?;
        let keep: Vec<usize> =
            (0..candidates.ids.len()).filter(|&i| candidates.logits[i] > f32::NEG_INFINITY).collect();
        if keep.is_empty() {
            return Err("every candidate token was removed".into());
        }
        let candidates = Candidates {
            ids: keep.iter().map(|&i| candidates.ids[i]).collect(),
            logits: keep.iter().map(|&i| candidates.logits[i]).collect(),
        };
        let id = if self.params.is_greedy() {
            candidates.ids[argmax(&candidates.logits)] as usize
        } else {
            self.draw(&candidates)
        };
        Ok(Sampled { id: id as u32, logprob: log_softmax_at(logits, id) })
    }

    /// Logits after bans and penalties, temperature applied unless it comes last.
    fn scores(&self, logits: &[f32], context: &[u32]) -> Vec<f32> {
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
        self.apply_penalties(&mut scores, context);
        if !self.params.is_greedy() && !self.params.temperature_last {
            let t = self.params.temperature;
            scores.iter_mut().for_each(|s| *s /= t);
        }
        scores
    }

    fn apply_penalties(&self, scores: &mut [f32], context: &[u32]) {
        let p = &self.params;
        if p.repetition_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0 {
            return;
        }
        let window = match p.repetition_penalty_range {
            0 => context,
            n => &context[context.len().saturating_sub(n)..],
        };
        let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        for &t in window {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &count) in &counts {
            let Some(s) = scores.get_mut(t as usize) else { continue };
            if p.repetition_penalty != 1.0 {
                *s = if *s > 0.0 { *s / p.repetition_penalty } else { *s * p.repetition_penalty };
            }
            *s -= p.presence_penalty + p.frequency_penalty * count as f32;
        }
    }

    /// Applies top-k, top-p and min-p; the survivors, most likely first.
    fn truncate(&self, scores: &[f32]) -> Candidates {
        let p = &self.params;
        let finite = scores.iter().filter(|s| s.is_finite()).count();
        if finite == 0 {
            let best = argmax(scores);
            return Candidates { ids: vec![best as u32], logits: vec![0.0] };
        }
        let keep = if p.top_k > 0 { p.top_k.min(finite) } else { finite };
        let mut c = top_n(scores, keep);
        if p.top_p < 1.0 || p.min_p > 0.0 {
            let probs = softmax(&c.logits);
            let mut cut = probs.len();
            if p.top_p < 1.0 {
                let mut cumulative = 0.0;
                for (n, &prob) in probs.iter().enumerate() {
                    cumulative += prob;
                    if cumulative >= p.top_p {
                        cut = n + 1;
                        break;
                    }
                }
            }
            if p.min_p > 0.0 {
                // Relative to the best token of the distribution before top-p (as textgen).
                let threshold = probs[0] * p.min_p;
                cut = cut.min(probs.iter().take_while(|&&prob| prob >= threshold).count());
            }
            let cut = cut.max(1);
            c.ids.truncate(cut);
            c.logits.truncate(cut);
        }
        c
    }

    /// The candidates' probabilities: the softmax of their logits, temperature applied here
    /// when it comes last.
    fn probabilities(&self, c: &Candidates) -> Vec<f32> {
        if self.params.temperature_last {
            softmax(&c.logits.iter().map(|l| l / self.params.temperature).collect::<Vec<_>>())
        } else {
            softmax(&c.logits)
        }
    }

    /// The next token's distribution, most likely first, at most `top` tokens: the model's own
    /// softmax, or with `use_samplers` what this request's samplers leave of it (bans,
    /// penalties, temperature, top-k/top-p/min-p), renormalised; greedy settings leave the one
    /// best token. text-generation-webui's `/v1/internal/logits`.
    pub fn distribution(&self, logits: &[f32], context: &[u32], use_samplers: bool, top: usize) -> Vec<(u32, f32)> {
        if !use_samplers {
            let c = top_n(logits, top);
            let norm = log_normalizer(logits);
            return c.ids.iter().zip(&c.logits).map(|(&id, &l)| (id, (l - norm).exp())).collect();
        }
        let scores = self.scores(logits, context);
        if self.params.is_greedy() {
            return vec![(argmax(&scores) as u32, 1.0)];
        }
        let c = self.truncate(&scores);
        c.ids.iter().copied().zip(self.probabilities(&c)).take(top.max(1)).collect()
    }

    /// Draws from the candidates' probabilities.
    fn draw(&mut self, c: &Candidates) -> usize {
        let probs = self.probabilities(c);
        let r: f32 = self.rng.random();
        let mut cumulative = 0.0;
        for (&id, &prob) in c.ids.iter().zip(&probs) {
            cumulative += prob;
            if r < cumulative {
                return id as usize;
            }
        }
        c.ids.last().map_or(0, |&id| id as usize)
    }
}

/// The `n` largest scores (finite ones first), most likely first.
fn top_n(scores: &[f32], n: usize) -> Candidates {
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > f32::NEG_INFINITY).collect();
    if order.is_empty() {
        order.push(argmax(scores));
    }
    let n = n.clamp(1, order.len());
    if n < order.len() {
        order.select_nth_unstable_by(n - 1, |&a, &b| scores[b].total_cmp(&scores[a]));
        order.truncate(n);
    }
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    Candidates { ids: order.iter().map(|&i| i as u32).collect(), logits: order.iter().map(|&i| scores[i]).collect() }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f32 = p.iter().sum();
    if total > 0.0 {
        p.iter_mut().for_each(|x| *x /= total);
    }
    p
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

/// `log Σ exp(values)`, computed stably: what `log_softmax` subtracts from every value.
fn log_normalizer(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = values.iter().map(|&v| (v - max).exp()).sum();
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams { seed: Some(7), ..SamplingParams::default() };
        f(&mut p);
        p
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
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let s = Sampler::new(params(|p| p.top_p = 0.7));
        // probabilities 0.5, 0.3, 0.2 → top_p 0.7 keeps the first two.
        let scores: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        let kept = s.truncate(&scores);
        assert_eq!(kept.ids, vec![0, 1]);
        assert!((softmax(&kept.logits)[0] - 0.625).abs() < 1e-6);
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_best() {
        let s = Sampler::new(params(|p| p.min_p = 0.5));
        let scores: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        assert_eq!(s.truncate(&scores).ids, vec![0, 1]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let s = Sampler::new(params(|p| p.repetition_penalty = 2.0));
        let mut scores = vec![4.0, -1.0, 3.0];
        s.apply_penalties(&mut scores, &[0, 1]);
        assert_eq!(scores, vec![2.0, -2.0, 3.0]);
    }

    #[test]
    fn presence_and_frequency_penalties_subtract() {
        let s = Sampler::new(params(|p| {
            p.presence_penalty = 1.0;
            p.frequency_penalty = 0.5
        }));
        let mut scores = vec![0.0, 0.0];
        s.apply_penalties(&mut scores, &[0, 0, 0]);
        assert_eq!(scores, vec![-2.5, 0.0]);
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
                    Ok(())
                })
                .unwrap();
            assert!(out.id == 2 || out.id == 3, "{out:?}");
        }
        let mut greedy = Sampler::new(SamplingParams::greedy());
        let err = greedy
            .sample_with(&logits, &[], &mut |c| {
                c.logits.iter_mut().for_each(|l| *l = f32::NEG_INFINITY);
                Ok(())
            })
            .unwrap_err();
        assert!(err.contains("every candidate"));
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
    fn banned_tokens_are_never_chosen() {
        let mut s = Sampler::new(SamplingParams { banned_tokens: vec![1], ..SamplingParams::greedy() });
        assert_eq!(s.sample(&[0.1, 3.0, 2.9], &[]).id, 2);
    }

    #[test]
    fn the_distribution_is_the_softmax_or_what_the_samplers_leave() {
        let logits = [1.0f32, 3.0, 2.0, 0.0];
        let sampler = Sampler::new(params(|p| p.top_k = 2));
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
