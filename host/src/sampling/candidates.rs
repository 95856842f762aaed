//! Sampling from a few candidates instead of the whole vocabulary: a GPU step reads back the
//! row's log-normalisers and its most likely tokens (a few hundred bytes) rather than every
//! logit, and the sampler chooses from them when that choice is exactly the one the whole row
//! would give — greedy decoding always; temperature with top-k, top-p and min-p whenever the
//! tokens they keep all lie among the candidates; greedy with penalties and bans that only lower
//! logits whenever its pick stays above every token past the candidates. Otherwise the caller
//! reads the whole row.

use super::params::Stage;
use super::pool::{Pool, softmax};
use super::{Sampled, Sampler};
use crate::model::TopCandidates;

impl Sampler {
    /// The temperature to ask candidates for, when this request's chain can choose from
    /// candidates at all: nothing but temperature, top-k, top-p and min-p may act (no bias, ban,
    /// penalty or feedback sampler, which reach tokens outside the most likely).
    pub fn candidate_temperature(&self) -> Option<f32> {
        let p = &self.params;
        if p.is_greedy() {
            // Greedy runs only the penalties; those that only lower logits (bans too) keep the
            // best token among the candidates whenever it stays above every token past them.
            let lowering = p.logit_bias.is_empty()
                && p.repetition_penalty >= 1.0
                && p.presence_penalty >= 0.0
                && p.frequency_penalty >= 0.0
                && p.encoder_repetition_penalty == 1.0
                && p.dry.as_ref().is_none_or(|d| d.multiplier >= 0.0 && d.base > 0.0);
            return lowering.then_some(1.0);
        }
        let plain = p.logit_bias.is_empty()
            && p.banned_tokens.is_empty()
            && p.repetition_penalty == 1.0
            && p.presence_penalty == 0.0
            && p.frequency_penalty == 0.0
            && p.encoder_repetition_penalty == 1.0
            && p.no_repeat_ngram_size == 0
            && p.dry.is_none()
            && p.xtc.is_none()
            && p.mirostat.is_none()
            && p.adaptive_p.is_none()
            && p.dynamic_temperature.is_none()
            && p.smoothing.is_none()
            && p.top_n_sigma <= 0.0
            && p.typical_p >= 1.0
            && p.epsilon_cutoff <= 0.0
            && p.eta_cutoff <= 0.0
            && p.tfs >= 1.0
            && p.top_a <= 0.0;
        plain.then_some(if p.is_greedy() { 1.0 } else { p.temperature })
    }

    /// The token the chain picks from `top` after `context`, drawn as [`Sampler::sample`] draws
    /// it from the whole row; `None` when the candidates cannot decide (the tokens the chain
    /// would keep may reach past them), and the caller samples from the whole row instead. Only
    /// for a sampler whose [`Self::candidate_temperature`] gave the temperature `top` was
    /// computed at.
    pub fn sample_candidates(&mut self, top: &TopCandidates, context: &[u32]) -> Option<Sampled> {
        if top.ids.is_empty() {
            return None;
        }
        let logprob_at = |index: usize| top.logits[index] - top.log_norm;
        if self.params.is_greedy() {
            let index = self.greedy_candidate(top, context)?;
            return Some(Sampled { id: top.ids[index], logprob: logprob_at(index) });
        }
        let p = &self.params;
        let mut ids = top.ids.clone();
        let mut logits = top.logits.clone();
        // While nothing has been cut, the candidates stand for the whole row: probabilities
        // come from its normaliser, and a cut that keeps every candidate may keep more.
        let mut whole = true;
        let mut norm = top.log_norm;
        let probabilities = |logits: &[f32], whole: bool, norm: f32| -> Vec<f32> {
            if whole { logits.iter().map(|l| (l - norm).exp()).collect() } else { softmax(logits) }
        };
        for &stage in &p.order {
            match stage {
                Stage::Temperature if p.temperature != 1.0 => {
                    logits.iter_mut().for_each(|l| *l /= p.temperature);
                    norm = top.log_norm_t;
                }
                Stage::TopK if p.top_k > 0 => {
                    if p.top_k >= ids.len() {
                        return None;
                    }
                    ids.truncate(p.top_k);
                    logits.truncate(p.top_k);
                    whole = false;
                }
                Stage::TopP if p.top_p < 1.0 => {
                    let probs = probabilities(&logits, whole, norm);
                    let mut before = 0.0;
                    let mut cut = None;
                    for (i, &prob) in probs.iter().enumerate() {
                        if before >= p.top_p {
                            cut = Some(i);
                            break;
                        }
                        before += prob;
                    }
                    let cut = match cut {
                        Some(c) => c.max(1),
                        None if whole => return None,
                        None => probs.len(),
                    };
                    ids.truncate(cut);
                    logits.truncate(cut);
                    whole = false;
                }
                Stage::MinP if p.min_p > 0.0 => {
                    let probs = probabilities(&logits, whole, norm);
                    let threshold = probs[0] * p.min_p;
                    let keep = probs.iter().enumerate().filter(|&(i, &q)| i == 0 || q >= threshold).count();
                    if whole && keep == probs.len() {
                        return None;
                    }
                    ids.truncate(keep);
                    logits.truncate(keep);
                    whole = false;
                }
                _ => {}
            }
        }
        if whole {
            return None;
        }
        let id = self.draw(&Pool::from_sorted(ids, logits))?;
        let index = top.ids.iter().position(|&i| i == id)?;
        Some(Sampled { id, logprob: logprob_at(index) })
    }
}

impl Sampler {
    /// The index among `top`'s candidates of greedy decoding's token: the best after the
    /// penalties and bans (ties: lower id, as over the whole row), when it stays above the last
    /// candidate's own logit — every token past the candidates is at most that, and a penalty
    /// only lowers it.
    fn greedy_candidate(&mut self, top: &TopCandidates, context: &[u32]) -> Option<usize> {
        let p = &self.params;
        let untouched = p.banned_tokens.is_empty()
            && p.repetition_penalty == 1.0
            && p.presence_penalty == 0.0
            && p.frequency_penalty == 0.0
            && p.dry.is_none()
            && p.no_repeat_ngram_size == 0;
        if untouched {
            return (!top.ids.is_empty()).then_some(0);
        }
        let floor = *top.logits.last()?;
        let mut logits = top.logits.clone();
        for (id, l) in top.ids.iter().zip(logits.iter_mut()) {
            if p.banned_tokens.contains(id) {
                *l = f32::NEG_INFINITY;
            }
        }
        let mut pool = Pool::from_ids(top.ids.clone(), logits);
        self.stages(&mut pool, context, 0, true);
        let mut best: Option<usize> = None;
        for (i, (&id, &l)) in pool.ids.iter().zip(&pool.logits).enumerate() {
            let better = match best {
                None => l > f32::NEG_INFINITY,
                Some(b) => l > pool.logits[b] || (l == pool.logits[b] && id < pool.ids[b]),
            };
            if better {
                best = Some(i);
            }
        }
        let best = best.filter(|&b| pool.logits[b] > floor)?;
        top.ids.iter().position(|&id| id == pool.ids[best])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingParams;

    /// A row whose candidates are its `n` largest logits.
    fn row_and_top(logits: &[f32], n: usize, temperature: f32) -> TopCandidates {
        let lse = |scale: f32| {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) / scale;
            max + logits.iter().map(|l| (l / scale - max).exp()).sum::<f32>().ln()
        };
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order.truncate(n);
        TopCandidates {
            log_norm: lse(1.0),
            log_norm_t: lse(temperature),
            ids: order.iter().map(|&i| i as u32).collect(),
            logits: order.iter().map(|&i| logits[i]).collect(),
        }
    }

    fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, min_p, seed: Some(7), ..SamplingParams::default() }
    }

    /// A peaked row over 1,000 tokens.
    fn peaked() -> Vec<f32> {
        (0..1000).map(|i| if i < 5 { 10.0 - i as f32 } else { -((i % 97) as f32) / 10.0 }).collect()
    }

    #[test]
    fn candidates_draw_what_the_whole_row_draws() {
        let row = peaked();
        for p in
            [params(0.0, 0, 1.0, 0.0), params(0.8, 0, 0.9, 0.0), params(1.0, 40, 1.0, 0.0), params(0.7, 0, 1.0, 0.1)]
        {
            let top = row_and_top(&row, 64, p.temperature.max(f32::MIN_POSITIVE));
            let (mut a, mut b) = (Sampler::new(p.clone()), Sampler::new(p.clone()));
            assert!(a.candidate_temperature().is_some());
            for step in 0..50 {
                let whole = a.sample(&row, &[]);
                let fast = b.sample_candidates(&top, &[]).unwrap_or_else(|| panic!("{p:?}: the candidates decide"));
                assert_eq!(fast.id, whole.id, "{p:?} step {step}");
                assert!((fast.logprob - whole.logprob).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn too_few_candidates_defer_to_the_whole_row() {
        // A flat row: top-p 0.9 needs far more than 64 tokens; plain temperature needs all.
        let flat = vec![0.0f32; 1000];
        for p in
            [params(1.0, 0, 0.9, 0.0), params(0.9, 0, 1.0, 0.0), params(1.0, 100, 1.0, 0.0), params(1.0, 0, 1.0, 0.5)]
        {
            let top = row_and_top(&flat, 64, p.temperature);
            assert_eq!(Sampler::new(p.clone()).sample_candidates(&top, &[]), None, "{p:?}");
        }
    }

    #[test]
    fn greedy_with_penalties_picks_from_the_candidates_or_defers() {
        let row = peaked();
        let top = row_and_top(&row, 64, 1.0);
        // The context repeats the two best tokens: a strong penalty moves the pick down the list.
        let context = [0u32, 1, 0, 1, 7];
        for p in [
            SamplingParams { repetition_penalty: 3.0, ..params(0.0, 0, 1.0, 0.0) },
            SamplingParams { presence_penalty: 1.5, frequency_penalty: 0.5, ..params(0.0, 0, 1.0, 0.0) },
            SamplingParams { banned_tokens: vec![0, 2], ..params(0.0, 0, 1.0, 0.0) },
        ] {
            let mut s = Sampler::new(p.clone());
            assert_eq!(s.candidate_temperature(), Some(1.0), "{p:?}");
            let fast = s.sample_candidates(&top, &context).expect("the candidates decide");
            assert_eq!(fast, Sampler::new(p.clone()).sample(&row, &context), "{p:?}");
        }
        // A penalty that pushes every candidate below the last one's logit defers to the row.
        let few = row_and_top(&row, 2, 1.0);
        let p = SamplingParams { presence_penalty: 100.0, ..params(0.0, 0, 1.0, 0.0) };
        assert_eq!(Sampler::new(p).sample_candidates(&few, &[0, 1]), None);
    }

    #[test]
    fn penalties_and_bias_need_the_whole_row() {
        let p = SamplingParams { repetition_penalty: 1.1, ..params(0.7, 0, 0.9, 0.0) };
        assert_eq!(Sampler::new(p).candidate_temperature(), None);
        let p = SamplingParams { logit_bias: vec![(3, 5.0)], ..params(0.0, 0, 1.0, 0.0) };
        assert_eq!(Sampler::new(p).candidate_temperature(), None);
        // A penalty that raises logits could lift a token from past the candidates.
        let p = SamplingParams { repetition_penalty: 0.8, ..params(0.0, 0, 1.0, 0.0) };
        assert_eq!(Sampler::new(p).candidate_temperature(), None);
    }

    #[test]
    fn a_device_row_splits_into_its_parts() {
        let top = TopCandidates::from_device_row(&[5.0, 6.0, 3.0, 2.0, 17.0, 4.0]);
        assert_eq!(top, TopCandidates { log_norm: 5.0, log_norm_t: 6.0, ids: vec![17, 4], logits: vec![3.0, 2.0] });
    }
}
