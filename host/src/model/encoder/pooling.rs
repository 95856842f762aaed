//! Token vectors to one sentence vector, as sentence-transformers' `Pooling` and `Normalize`
//! modules compute it: only a sequence's own tokens count (padding is left out), and several
//! modes are concatenated in its order.

use super::layout::PoolingModes;

/// Pools one sequence: `tokens` is its `[len, hidden]` rows, every one a real token.
pub fn pool(modes: &PoolingModes, tokens: &[f32], hidden: usize) -> Vec<f32> {
    let len = tokens.len() / hidden;
    let rows = || tokens.chunks_exact(hidden);
    let mut out = Vec::with_capacity(hidden * modes.count());
    if modes.cls {
        out.extend_from_slice(&tokens[..hidden]);
    }
    if modes.max {
        let mut max = vec![f32::NEG_INFINITY; hidden];
        for row in rows() {
            for (m, v) in max.iter_mut().zip(row) {
                *m = m.max(*v);
            }
        }
        out.extend(max);
    }
    if modes.mean || modes.mean_sqrt_len {
        let mut sum = vec![0f32; hidden];
        for row in rows() {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        if modes.mean {
            out.extend(sum.iter().map(|s| s / len as f32));
        }
        if modes.mean_sqrt_len {
            out.extend(sum.iter().map(|s| s / (len as f32).sqrt()));
        }
    }
    if modes.last_token {
        out.extend_from_slice(&tokens[(len - 1) * hidden..]);
    }
    out
}

/// Scales `v` to unit length (`torch.nn.functional.normalize`: a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: [f32; 6] = [1., -2., 3., 4., 5., 0.];

    #[test]
    fn each_mode_pools_as_sentence_transformers_does() {
        let only = |f: fn(&mut PoolingModes)| {
            let mut m = PoolingModes::default();
            f(&mut m);
            pool(&m, &TOKENS, 2)
        };
        assert_eq!(only(|m| m.cls = true), vec![1., -2.]);
        assert_eq!(only(|m| m.max = true), vec![5., 4.]);
        assert_eq!(only(|m| m.mean = true), vec![3., 2. / 3.]);
        assert_eq!(only(|m| m.last_token = true), vec![5., 0.]);
        let sqrt3 = 3f32.sqrt();
        assert_eq!(only(|m| m.mean_sqrt_len = true), vec![9. / sqrt3, 2. / sqrt3]);
    }

    #[test]
    fn modes_concatenate_in_order() {
        let modes = PoolingModes { cls: true, mean: true, max: true, ..Default::default() };
        assert_eq!(pool(&modes, &TOKENS, 2), vec![1., -2., 5., 4., 3., 2. / 3.]);
    }

    #[test]
    fn normalize_gives_unit_length_and_leaves_zero_alone() {
        let mut v = vec![3., 4.];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0., 0.];
        normalize(&mut z);
        assert_eq!(z, vec![0., 0.]);
    }
}
