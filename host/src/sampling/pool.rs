//! The candidate tokens while the sampler chain runs: token ids with their logits. The pool
//! starts dense (every token of the vocabulary, by id, so penalties index it directly) and is
//! sorted, most likely first, when a truncating stage needs the order. A logit of `-inf` marks
//! a removed token; sorting drops them.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    /// `ids[i] == i` for every entry.
    dense: bool,
    /// Most likely first, with no removed tokens.
    sorted: bool,
}

impl Pool {
    /// Every token of the vocabulary, `scores[id]` its logit.
    pub fn dense(scores: Vec<f32>) -> Self {
        Self { ids: (0..scores.len() as u32).collect(), logits: scores, dense: true, sorted: false }
    }

    /// Candidates in any order, kept in that order (a penalty edits them where they are).
    pub fn from_ids(ids: Vec<u32>, logits: Vec<f32>) -> Self {
        Self { ids, logits, dense: false, sorted: false }
    }

    /// Candidates already in order, most likely first.
    pub fn from_sorted(ids: Vec<u32>, logits: Vec<f32>) -> Self {
        let mut pool = Self { ids, logits, dense: false, sorted: false };
        pool.sort();
        pool
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// How many tokens are still candidates.
    pub fn live(&self) -> usize {
        if self.sorted { self.ids.len() } else { self.logits.iter().filter(|l| **l > f32::NEG_INFINITY).count() }
    }

    /// Orders the pool most likely first and drops removed tokens (NaN counts as removed).
    pub fn sort(&mut self) {
        if self.sorted {
            return;
        }
        let mut order: Vec<usize> = (0..self.ids.len()).filter(|&i| self.logits[i] > f32::NEG_INFINITY).collect();
        // Ties keep the lower id first, as a stable sort by id would.
        order.sort_by(|&a, &b| self.logits[b].total_cmp(&self.logits[a]).then(self.ids[a].cmp(&self.ids[b])));
        self.reorder(&order);
    }

    /// The `n` most likely tokens, most likely first, without sorting the whole pool.
    pub fn keep_top(&mut self, n: usize) {
        if self.sorted {
            self.truncate(n);
            return;
        }
        let mut order: Vec<usize> = (0..self.ids.len()).filter(|&i| self.logits[i] > f32::NEG_INFINITY).collect();
        let cmp =
            |a: &usize, b: &usize| self.logits[*b].total_cmp(&self.logits[*a]).then(self.ids[*a].cmp(&self.ids[*b]));
        if n > 0 && n < order.len() {
            order.select_nth_unstable_by(n - 1, cmp);
            order.truncate(n);
        }
        order.sort_by(cmp);
        self.reorder(&order);
    }

    fn reorder(&mut self, order: &[usize]) {
        self.ids = order.iter().map(|&i| self.ids[i]).collect();
        self.logits = order.iter().map(|&i| self.logits[i]).collect();
        self.dense = false;
        self.sorted = true;
    }

    /// Keeps the first `n` entries (of a sorted pool: the `n` most likely), at least one.
    pub fn truncate(&mut self, n: usize) {
        let n = n.max(1);
        self.ids.truncate(n);
        self.logits.truncate(n);
    }

    /// Keeps the entries whose index passes `keep`; order is kept.
    pub fn retain_index(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let mask: Vec<bool> = (0..self.ids.len()).map(&mut keep).collect();
        let mut i = 0;
        self.ids.retain(|_| {
            i += 1;
            mask[i - 1]
        });
        let mut i = 0;
        self.logits.retain(|_| {
            i += 1;
            mask[i - 1]
        });
        self.dense = false;
    }

    /// Keeps only the token at `index`.
    pub fn keep_only(&mut self, index: usize) {
        let (id, logit) = (self.ids[index], self.logits[index]);
        self.ids = vec![id];
        self.logits = vec![logit];
        self.dense = false;
        self.sorted = true;
    }

    /// Divides every logit by `t > 0` (the order stays).
    pub fn scale(&mut self, t: f32) {
        self.logits.iter_mut().for_each(|l| *l /= t);
    }

    /// Rewrites every live logit with `f` (the order may change).
    pub fn map_logits(&mut self, mut f: impl FnMut(f32) -> f32) {
        for l in self.logits.iter_mut().filter(|l| **l > f32::NEG_INFINITY) {
            *l = f(*l);
        }
        self.sorted = false;
    }

    /// Edits the logit of every token in `by_id` that is still in the pool.
    pub fn edit<T>(&mut self, by_id: &HashMap<u32, T>, mut f: impl FnMut(&T, &mut f32)) {
        if by_id.is_empty() {
            return;
        }
        if self.dense {
            for (&id, value) in by_id {
                if let Some(l) = self.logits.get_mut(id as usize) {
                    f(value, l);
                }
            }
        } else {
            for (id, l) in self.ids.iter().zip(self.logits.iter_mut()) {
                if let Some(value) = by_id.get(id) {
                    f(value, l);
                }
            }
        }
        self.sorted = false;
    }

    /// The candidates' probabilities under the softmax of their logits (removed tokens 0).
    pub fn probabilities(&self) -> Vec<f32> {
        softmax(&self.logits)
    }

    /// The index of the most likely token (the first on ties).
    pub fn best(&self) -> usize {
        super::argmax(&self.logits)
    }
}

/// The softmax of `logits`; `-inf` entries get 0. All `-inf` gives all 0.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; logits.len()];
    }
    let mut p: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f32 = p.iter().sum();
    if total > 0.0 {
        p.iter_mut().for_each(|x| *x /= total);
    }
    p
}

/// Shannon entropy (nats) of a distribution.
pub fn entropy(probs: &[f32]) -> f32 {
    -probs.iter().filter(|&&p| p > 0.0).map(|&p| p * p.ln()).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_drops_removed_tokens_and_keeps_ids() {
        let mut pool = Pool::dense(vec![0.5, f32::NEG_INFINITY, 2.0, f32::NAN, 1.0]);
        assert_eq!(pool.live(), 3);
        pool.sort();
        assert_eq!(pool.ids, vec![2, 4, 0]);
        assert_eq!(pool.logits, vec![2.0, 1.0, 0.5]);
    }

    #[test]
    fn keep_top_selects_without_a_full_sort() {
        let mut pool = Pool::dense(vec![0.1, 3.0, 2.0, 2.5, f32::NEG_INFINITY]);
        pool.keep_top(2);
        assert_eq!(pool.ids, vec![1, 3]);
        let mut pool = Pool::dense(vec![0.1, f32::NEG_INFINITY]);
        pool.keep_top(5);
        assert_eq!(pool.ids, vec![0]);
    }

    #[test]
    fn edits_reach_tokens_dense_or_sorted() {
        let by_id: HashMap<u32, f32> = [(1, 10.0)].into();
        let mut dense = Pool::dense(vec![1.0, 2.0, 3.0]);
        dense.edit(&by_id, |v, l| *l += v);
        assert_eq!(dense.logits, vec![1.0, 12.0, 3.0]);
        let mut sorted = Pool::dense(vec![1.0, 2.0, 3.0]);
        sorted.sort();
        sorted.edit(&by_id, |v, l| *l += v);
        assert_eq!(sorted.logits, vec![3.0, 12.0, 1.0]);
        sorted.sort();
        assert_eq!(sorted.ids, vec![1, 2, 0]);
    }
}
