//! The stages that reshape the distribution without removing tokens: temperature, dynamic
//! temperature and quadratic ("smoothing") sampling, as text-generation-webui computes them.

use super::params::{DynamicTemperature, Smoothing};
use super::pool::{Pool, entropy};

pub fn temperature(pool: &mut Pool, t: f32) {
    if t != 1.0 {
        pool.scale(t);
    }
}

/// The temperature dynamic temperature would use: `low + (high - low) · H_norm^exponent`, with
/// `H_norm` the entropy over its maximum for the tokens left.
pub fn dynamic_temperature_of(pool: &Pool, d: &DynamicTemperature) -> f32 {
    let probs = pool.probabilities();
    let h = entropy(&probs).max(1e-10);
    let live = pool.live();
    let max_h = if live > 1 { (live as f32).ln() } else { 1e-10 };
    d.low + (d.high - d.low) * (h / max_h).powf(d.exponent)
}

pub fn dynamic_temperature(pool: &mut Pool, d: &DynamicTemperature) {
    let t = dynamic_temperature_of(pool, d);
    if t > 0.0 && t.is_finite() {
        pool.scale(t);
    }
}

/// Quadratic sampling: with `d = logit - max`, the logit becomes
/// `max - k·f·d² + s·f·d³` where `k = (3 - curve) / 2`, `s = (curve - 1) / 2`.
pub fn quadratic(pool: &mut Pool, s: &Smoothing) {
    let max = pool.logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    let k = (3.0 - s.curve) / 2.0;
    let cubic = (s.curve - 1.0) / 2.0;
    pool.map_logits(|l| {
        let d = l - max;
        -(k * s.factor * d * d) + cubic * s.factor * d * d * d + max
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_divides() {
        let mut p = Pool::dense(vec![2.0, 1.0]);
        temperature(&mut p, 0.5);
        assert_eq!(p.logits, vec![4.0, 2.0]);
    }

    #[test]
    fn dynamic_temperature_follows_the_entropy() {
        let d = DynamicTemperature { low: 0.5, high: 1.5, exponent: 1.0 };
        // A uniform distribution has the maximum entropy: the high temperature.
        let uniform = Pool::dense(vec![0.0; 4]);
        assert!((dynamic_temperature_of(&uniform, &d) - 1.5).abs() < 1e-5);
        // An almost certain one: near the low temperature.
        let sharp = Pool::dense(vec![20.0, 0.0, 0.0, 0.0]);
        assert!((dynamic_temperature_of(&sharp, &d) - 0.5).abs() < 1e-3);
        // Removed tokens do not count toward the maximum entropy.
        let two = Pool::dense(vec![0.0, 0.0, f32::NEG_INFINITY]);
        assert!((dynamic_temperature_of(&two, &d) - 1.5).abs() < 1e-5);
        let mut p = Pool::dense(vec![0.0, 3.0, 0.0, 0.0]);
        let t = dynamic_temperature_of(&p, &d);
        dynamic_temperature(&mut p, &d);
        assert!((p.logits[1] - 3.0 / t).abs() < 1e-6);
    }

    #[test]
    fn quadratic_keeps_the_best_and_pulls_the_rest_down() {
        let mut p = Pool::dense(vec![3.0, 2.0, 1.0, f32::NEG_INFINITY]);
        quadratic(&mut p, &Smoothing { factor: 0.5, curve: 1.0 });
        // d = 0, -1, -2 → 3, 3 - 0.5, 3 - 2.
        assert_eq!(p.logits, vec![3.0, 2.5, 1.0, f32::NEG_INFINITY]);
        let mut p = Pool::dense(vec![3.0, 2.0]);
        quadratic(&mut p, &Smoothing { factor: 1.0, curve: 3.0 });
        // k = 0, s = 1: 3 + (-1)³ = 2.
        assert_eq!(p.logits, vec![3.0, 2.0]);
    }
}
