//! The stages that draw the token themselves and learn from what they drew: mirostat (1.0 as
//! llama.cpp has it, 2.0 as text-generation-webui has it) and adaptive-p. Each keeps state for
//! the whole generation, draws from the pool, and leaves only the drawn token in it.

use rand::rngs::StdRng;

use super::draw_index;
use super::params::{AdaptiveP, Mirostat, MirostatVersion};
use super::pool::{Pool, softmax};

/// Mirostat's running surprise bound `mu` (starts at `2·tau`).
#[derive(Debug, Clone)]
pub struct MirostatState {
    settings: Mirostat,
    mu: f32,
}

/// Mirostat 1.0 estimates the Zipf exponent from this many of the likeliest tokens.
const MIROSTAT_M: usize = 100;

impl MirostatState {
    pub fn new(settings: Mirostat) -> Self {
        Self { settings, mu: 2.0 * settings.tau }
    }

    #[cfg(test)]
    pub fn mu(&self) -> f32 {
        self.mu
    }

    /// Truncates by the current bound, draws, keeps only the drawn token and moves the bound
    /// by the drawn token's surprise. `vocab` is the model's vocabulary size (mirostat 1.0's N).
    pub fn step(&mut self, pool: &mut Pool, vocab: usize, rng: &mut StdRng) {
        pool.sort();
        if pool.is_empty() {
            return;
        }
        let probs = pool.probabilities();
        let keep = match self.settings.version {
            MirostatVersion::V2 => {
                probs.iter().position(|&p| p > 0.0 && -p.log2() > self.mu).unwrap_or(probs.len()).max(1)
            }
            MirostatVersion::V1 => self.v1_k(&probs, vocab),
        };
        pool.truncate(keep);
        let probs = pool.probabilities();
        let index = draw_index(&probs, rng);
        let surprise = -probs[index].log2();
        self.mu -= self.settings.eta * (surprise - self.settings.tau);
        pool.keep_only(index);
    }

    /// Mirostat 1.0's `k`: from the Zipf exponent `s` fitted to the likeliest tokens,
    /// `k = (ε·2^mu / (1 - N^-ε))^(1/s)` with `ε = s - 1`.
    fn v1_k(&self, probs: &[f32], vocab: usize) -> usize {
        let (mut sum_tb, mut sum_tt) = (0.0f64, 0.0f64);
        for i in 0..(MIROSTAT_M - 1).min(probs.len().saturating_sub(1)) {
            if probs[i + 1] <= 0.0 {
                break;
            }
            let t = ((i + 2) as f64 / (i + 1) as f64).ln();
            let b = (probs[i] as f64 / probs[i + 1] as f64).ln();
            sum_tb += t * b;
            sum_tt += t * t;
        }
        let s = sum_tb / sum_tt;
        let eps = s - 1.0;
        let k = ((eps * 2f64.powf(self.mu as f64)) / (1.0 - (vocab as f64).powf(-eps))).powf(1.0 / s);
        if k.is_finite() && k >= 1.0 { (k as usize).min(probs.len()) } else { 1 }
    }
}

/// Adaptive-p's moving average of the chosen tokens' probabilities.
#[derive(Debug, Clone)]
pub struct AdaptivePState {
    target: f32,
    decay: f32,
    weighted_sum: f32,
    total_weight: f32,
}

const DISTRIBUTION_WIDTH: f32 = 0.3;
const PEAK_LOGIT: f32 = 5.0;
const SHARPNESS: f32 = 10.0;

impl AdaptivePState {
    /// Starts as if the target had been met all along.
    pub fn new(settings: AdaptiveP) -> Self {
        let decay = settings.decay.min(0.99);
        Self {
            target: settings.target,
            decay,
            weighted_sum: settings.target / (1.0 - decay),
            total_weight: 1.0 / (1.0 - decay),
        }
    }

    /// The probability it aims for this step: the target, corrected by how far the average
    /// has strayed from it.
    pub fn aim(&self) -> f32 {
        let average = if self.total_weight > 0.0 { self.weighted_sum / self.total_weight } else { self.target };
        (2.0 * self.target - average).clamp(0.0, 1.0)
    }

    /// Re-weights tokens by the distance of their probability from the aim, draws, keeps only
    /// the drawn token and records its original probability.
    pub fn step(&mut self, pool: &mut Pool, rng: &mut StdRng) {
        if pool.is_empty() {
            return;
        }
        let probs = pool.probabilities();
        let aim = self.aim();
        let shaped: Vec<f32> = pool
            .logits
            .iter()
            .zip(&probs)
            .map(|(&l, &p)| {
                if l.is_finite() {
                    let d = ((p - aim) / DISTRIBUTION_WIDTH).abs();
                    PEAK_LOGIT - SHARPNESS * d * d / (1.0 + d)
                } else {
                    l
                }
            })
            .collect();
        let index = draw_index(&softmax(&shaped), rng);
        self.weighted_sum = probs[index] + self.decay * self.weighted_sum;
        self.total_weight = 1.0 + self.decay * self.total_weight;
        pool.keep_only(index);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn zipf(n: usize, s: f32) -> Pool {
        Pool::dense((1..=n).map(|r| -s * (r as f32).ln()).collect())
    }

    #[test]
    fn mirostat_2_truncates_at_the_bound_and_learns() {
        let settings = Mirostat { version: MirostatVersion::V2, tau: 3.0, eta: 0.1 };
        let mut state = MirostatState::new(settings);
        assert_eq!(state.mu(), 6.0);
        let mut rng = StdRng::seed_from_u64(1);
        let mut pool = zipf(1000, 1.1);
        let probs = {
            let mut p = pool.clone();
            p.sort();
            p.probabilities()
        };
        let allowed = probs.iter().position(|p| -p.log2() > 6.0).unwrap();
        state.step(&mut pool, 1000, &mut rng);
        assert_eq!(pool.len(), 1);
        assert!((pool.ids[0] as usize) < allowed, "drawn {} beyond the bound {allowed}", pool.ids[0]);
        assert_ne!(state.mu(), 6.0);
        // Over many steps the observed surprise settles near tau: mu stays bounded.
        for _ in 0..200 {
            let mut pool = zipf(1000, 1.1);
            state.step(&mut pool, 1000, &mut rng);
        }
        assert!(state.mu() > 2.0 && state.mu() < 10.0, "mu {}", state.mu());
    }

    #[test]
    fn mirostat_1_estimates_k_from_the_zipf_exponent() {
        let state = MirostatState::new(Mirostat { version: MirostatVersion::V1, tau: 5.0, eta: 0.1 });
        let mut pool = zipf(1000, 1.2);
        pool.sort();
        // s = 1.2 exactly: k = (0.2 · 2^10 / (1 - 1000^-0.2))^(1/1.2).
        let expected = ((0.2 * 1024.0) / (1.0 - 1000f64.powf(-0.2))).powf(1.0 / 1.2) as usize;
        let k = state.v1_k(&pool.probabilities(), 1000);
        assert!(k.abs_diff(expected) <= 1, "k {k}, expected {expected}");
        let mut rng = StdRng::seed_from_u64(3);
        let mut state = state;
        let mut pool = zipf(1000, 1.2);
        state.step(&mut pool, 1000, &mut rng);
        assert_eq!(pool.len(), 1);
        assert!((pool.ids[0] as usize) < expected);
    }

    #[test]
    fn adaptive_p_favours_tokens_near_the_target() {
        // Probabilities 0.6, 0.3, 0.1: a target of 0.3 draws the middle token most often.
        let logits: Vec<f32> = [0.6f32, 0.3, 0.1].iter().map(|p| p.ln()).collect();
        let mut state = AdaptivePState::new(AdaptiveP { target: 0.3, decay: 0.9 });
        assert!((state.aim() - 0.3).abs() < 1e-6);
        let mut rng = StdRng::seed_from_u64(5);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let mut pool = Pool::dense(logits.clone());
            state.step(&mut pool, &mut rng);
            counts[pool.ids[0] as usize] += 1;
        }
        assert!(counts[1] > counts[0] && counts[1] > counts[2], "{counts:?}");
    }
}
