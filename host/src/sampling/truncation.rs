//! The stages that remove unlikely (or, for XTC, the likeliest) tokens: top-k, top-p, typical-p,
//! epsilon and eta cutoffs, tail-free sampling, top-a, min-p, top-nσ and XTC. Each follows the
//! transformers or text-generation-webui warper of the same name, keeping at least one token,
//! and works on probabilities of the pool as it stands (the softmax of what is left).

use super::pool::{Pool, entropy};

pub fn top_k(pool: &mut Pool, k: usize) {
    pool.keep_top(k);
}

/// Keeps the most likely tokens until their mass reaches `p` (the token that crosses it stays).
pub fn top_p(pool: &mut Pool, p: f32) {
    pool.sort();
    let probs = pool.probabilities();
    let mut before = 0.0;
    let mut cut = probs.len();
    for (i, &prob) in probs.iter().enumerate() {
        if before >= p {
            cut = i;
            break;
        }
        before += prob;
    }
    pool.truncate(cut);
}

/// Locally typical sampling: keeps the tokens whose surprise is closest to the distribution's
/// entropy, until their mass reaches `mass`.
pub fn typical_p(pool: &mut Pool, mass: f32) {
    pool.sort();
    let probs = pool.probabilities();
    if probs.is_empty() {
        return;
    }
    let ent = entropy(&probs);
    let shifted: Vec<f32> = probs.iter().map(|&p| (-p.ln() - ent).abs()).collect();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| shifted[a].total_cmp(&shifted[b]));
    let mut cumulative = 0.0;
    let mut last = 0;
    for &i in &order {
        cumulative += probs[i];
        if cumulative < mass {
            last += 1;
        }
    }
    let threshold = shifted[order[last.min(order.len() - 1)]];
    let first = order[0];
    pool.retain_index(|i| i == first || shifted[i] <= threshold);
}

/// Removes the tokens less likely than the threshold `threshold` computes from the sorted
/// probabilities; the best token always stays.
fn drop_below(pool: &mut Pool, threshold: impl FnOnce(&[f32]) -> f32) {
    pool.sort();
    let probs = pool.probabilities();
    if probs.is_empty() {
        return;
    }
    let threshold = threshold(&probs);
    pool.retain_index(|i| i == 0 || probs[i] >= threshold);
}

/// Removes tokens less likely than `epsilon`.
pub fn epsilon_cutoff(pool: &mut Pool, epsilon: f32) {
    drop_below(pool, |_| epsilon);
}

/// Removes tokens less likely than `min(epsilon, √epsilon · e^-entropy)`.
pub fn eta_cutoff(pool: &mut Pool, epsilon: f32) {
    drop_below(pool, |probs| epsilon.min(epsilon.sqrt() * (-entropy(probs)).exp()));
}

/// Tail-free sampling: cuts where the sorted probabilities' second differences have
/// accumulated `z` of their total (the least likely token always goes).
pub fn tail_free(pool: &mut Pool, z: f32) {
    pool.sort();
    let probs = pool.probabilities();
    if probs.len() <= 2 {
        pool.truncate(1);
        return;
    }
    let d2: Vec<f32> = probs.windows(3).map(|w| (w[2] - 2.0 * w[1] + w[0]).abs()).collect();
    let total: f32 = d2.iter().sum();
    let mut keep = vec![true; probs.len()];
    keep[probs.len() - 1] = false;
    if total > 0.0 {
        let mut cdf = 0.0;
        for (i, d) in d2.iter().enumerate() {
            cdf += d / total;
            if cdf > z {
                keep[i + 1] = false;
            }
        }
    }
    pool.retain_index(|i| keep[i]);
}

/// Removes tokens less likely than `a` times the best token's probability squared.
pub fn top_a(pool: &mut Pool, a: f32) {
    drop_below(pool, |probs| a * probs[0] * probs[0]);
}

/// Removes tokens less likely than `min_p` times the best token's probability.
pub fn min_p(pool: &mut Pool, min_p: f32) {
    drop_below(pool, |probs| probs[0] * min_p);
}

/// Top-nσ: keeps the tokens whose logit is within `n` standard deviations of the best one. The
/// deviation is over the tokens still in the pool (textgen counts removed tokens as logit 0).
pub fn top_n_sigma(pool: &mut Pool, n: f32) {
    let live: Vec<f32> = pool.logits.iter().copied().filter(|l| l.is_finite()).collect();
    if live.len() < 2 {
        return;
    }
    let mean = live.iter().sum::<f32>() / live.len() as f32;
    // Bessel-corrected, as torch.std.
    let var = live.iter().map(|l| (l - mean) * (l - mean)).sum::<f32>() / (live.len() - 1) as f32;
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let threshold = max - n * var.sqrt();
    pool.map_logits(|l| if l < threshold { f32::NEG_INFINITY } else { l });
}

/// XTC: when `roll < probability`, removes every token at least `threshold` likely except the
/// least likely of them — unless that would remove a protected token (newline, end of text).
pub fn xtc(pool: &mut Pool, threshold: f32, protected: &[u32]) {
    pool.sort();
    let probs = pool.probabilities();
    let above = probs.iter().take_while(|&&p| p >= threshold).count();
    if above < 2 {
        return;
    }
    let removed = &pool.ids[..above - 1];
    if removed.iter().any(|id| protected.contains(id)) {
        return;
    }
    pool.retain_index(|i| i >= above - 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool with these probabilities for tokens 0, 1, 2, …
    fn pool(probs: &[f32]) -> Pool {
        Pool::dense(probs.iter().map(|p| p.ln()).collect())
    }

    fn ids(pool: &Pool) -> Vec<u32> {
        let mut ids = pool.ids.clone();
        ids.sort();
        ids
    }

    const DIST: [f32; 5] = [0.4, 0.3, 0.15, 0.1, 0.05];

    #[test]
    fn top_k_keeps_k() {
        let mut p = pool(&DIST);
        top_k(&mut p, 2);
        assert_eq!(p.ids, vec![0, 1]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let mut p = pool(&DIST);
        top_p(&mut p, 0.7);
        assert_eq!(ids(&p), vec![0, 1]);
        let mut p = pool(&DIST);
        top_p(&mut p, 0.71);
        assert_eq!(ids(&p), vec![0, 1, 2]);
        let mut p = pool(&DIST);
        top_p(&mut p, 0.0);
        assert_eq!(ids(&p), vec![0], "at least one token stays");
    }

    #[test]
    fn typical_p_keeps_tokens_near_the_entropy() {
        // Entropy of DIST is 1.392 nats; the surprises -ln p are 0.916, 1.204, 1.897, 2.303,
        // 2.996, so by distance from the entropy the order is 1, 0, 2, 3, 4.
        // Mass 0.5: token 1 (0.3) is under it and token 0 crosses it, so tokens 1 and 0 stay.
        let mut p = pool(&DIST);
        typical_p(&mut p, 0.5);
        assert_eq!(ids(&p), vec![0, 1]);
        // A small mass keeps the most typical token, which is not the most likely.
        let mut p = pool(&DIST);
        typical_p(&mut p, 0.1);
        assert_eq!(ids(&p), vec![1]);
        let mut p = pool(&DIST);
        typical_p(&mut p, 0.9);
        assert_eq!(ids(&p), vec![0, 1, 2, 3]);
    }

    #[test]
    fn epsilon_cuts_below_a_probability() {
        let mut p = pool(&DIST);
        epsilon_cutoff(&mut p, 0.12);
        assert_eq!(ids(&p), vec![0, 1, 2]);
    }

    #[test]
    fn eta_cuts_by_entropy() {
        // eta = min(0.2, √0.2 · e^-1.392 = 0.111) = 0.111: 0.1 and 0.05 go.
        let mut p = pool(&DIST);
        eta_cutoff(&mut p, 0.2);
        assert_eq!(ids(&p), vec![0, 1, 2]);
    }

    #[test]
    fn tail_free_cuts_where_the_curve_flattens() {
        // Second differences of 0.4 .3 .15 .1 .05: |.05|, |.1|, |0| → normalised .333, .667, 0;
        // cdf .333, 1.0, 1.0. z = 0.5: index 1 stays (cdf .333), 2 and 3 go, the last always.
        let mut p = pool(&DIST);
        tail_free(&mut p, 0.5);
        assert_eq!(ids(&p), vec![0, 1]);
        let mut p = pool(&DIST);
        tail_free(&mut p, 0.9);
        assert_eq!(ids(&p), vec![0, 1], "cdf 1.0 is above 0.9");
        let mut p = pool(&DIST);
        tail_free(&mut p, 0.2);
        assert_eq!(ids(&p), vec![0]);
    }

    #[test]
    fn top_a_cuts_below_a_times_the_best_squared() {
        // 0.4² = 0.16; a = 1 → tokens under 0.16 go.
        let mut p = pool(&DIST);
        top_a(&mut p, 1.0);
        assert_eq!(ids(&p), vec![0, 1]);
    }

    #[test]
    fn min_p_cuts_below_a_fraction_of_the_best() {
        let mut p = pool(&DIST);
        min_p(&mut p, 0.5);
        assert_eq!(ids(&p), vec![0, 1]);
    }

    #[test]
    fn top_n_sigma_keeps_logits_near_the_best() {
        // Logits 10, 9, 0, 0, 0: mean 3.8, std 5.20; n = 1 keeps logits ≥ 4.8.
        let mut p = Pool::dense(vec![10.0, 9.0, 0.0, 0.0, 0.0]);
        top_n_sigma(&mut p, 1.0);
        assert_eq!(p.live(), 2);
        p.sort();
        assert_eq!(p.ids, vec![0, 1]);
    }

    #[test]
    fn xtc_removes_the_top_choices_but_the_last_above_the_threshold() {
        let mut p = pool(&DIST);
        xtc(&mut p, 0.14, &[]);
        assert_eq!(ids(&p), vec![2, 3, 4]);
        // Only one token above the threshold: nothing happens.
        let mut p = pool(&DIST);
        xtc(&mut p, 0.35, &[]);
        assert_eq!(p.live(), 5);
        // A protected token among the removed ones: nothing happens.
        let mut p = pool(&DIST);
        xtc(&mut p, 0.14, &[1]);
        assert_eq!(p.live(), 5);
    }
}
