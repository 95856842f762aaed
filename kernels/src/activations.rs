//! Activations quantized to 8 bits in blocks of 32, as llama.cpp's q8_0/q8_1 do it: a product
//! with a block-quantized weight row then runs on integer multiply-adds (32 products per AVX2
//! instruction where f32 gives 8), and decode stays bound by reading the weights rather than
//! by arithmetic. The rounding this adds is llama.cpp's own, so its results are the reference
//! the model tests hold this path to.

use crate::blocks::BLOCK;

/// One token's activations: `q[i]` ≈ `x[i] / d[block]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Q8Row<'a> {
    pub q: &'a [i8],
    /// Scale per block.
    pub d: &'a [f32],
    /// `d · Σq` per block: what a weight block's constant term (Q4_1's minimum, Q4_0's −8)
    /// multiplies.
    pub s: &'a [f32],
}

/// Several tokens' activations, each `cols` long.
#[derive(Debug, Clone, Default)]
pub(crate) struct Q8Activations {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    cols: usize,
}

impl Q8Activations {
    /// Quantizes `x` (`[tokens, cols]`, `cols` a multiple of 32): per block, the scale maps the
    /// largest magnitude to ±127 and every value rounds to the nearest step.
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        quantize(x, cols)
    }

    pub fn token(&self, t: usize) -> Q8Row<'_> {
        let blocks = self.cols / BLOCK;
        Q8Row {
            q: &self.q[t * self.cols..(t + 1) * self.cols],
            d: &self.d[t * blocks..(t + 1) * blocks],
            s: &self.s[t * blocks..(t + 1) * blocks],
        }
    }
}

multiversion_fn! {
    fn quantize(x: &[f32], cols: usize) -> Q8Activations => quantize_impl
}

#[inline(always)]
fn quantize_impl(x: &[f32], cols: usize) -> Q8Activations {
    debug_assert_eq!(cols % BLOCK, 0);
    let blocks = x.len() / BLOCK;
    let mut q = vec![0i8; x.len()];
    let mut d = Vec::with_capacity(blocks);
    let mut s = Vec::with_capacity(blocks);
    for (xb, qb) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)) {
        let mut amax = 0f32;
        for v in xb {
            amax = amax.max(v.abs());
        }
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let mut sum = 0i32;
        for (v, o) in xb.iter().zip(qb.iter_mut()) {
            // Round to nearest, ties to even (as llama.cpp's AVX2 path), by the 1.5·2^23
            // trick: no libm call. |v · inv| ≤ 127, so the cast cannot saturate.
            *o = ((v * inv + 12_582_912.0) - 12_582_912.0) as i8;
            sum += i32::from(*o);
        }
        d.push(scale);
        s.push(scale * sum as f32);
    }
    Q8Activations { q, d, s, cols }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 29) as f32 - 14.0) * 0.173).collect();
        let a = Q8Activations::quantize(&x, 64);
        let row = a.token(0);
        for (b, xb) in x.chunks_exact(BLOCK).enumerate() {
            let d = row.d[b];
            assert!(row.q[b * BLOCK..(b + 1) * BLOCK].iter().any(|q| q.abs() == 127), "the largest maps to ±127");
            for (i, v) in xb.iter().enumerate() {
                let back = d * f32::from(row.q[b * BLOCK + i]);
                assert!((back - v).abs() <= d / 2.0 + 1e-7, "{v} → {back}");
            }
            let sum: i32 = row.q[b * BLOCK..(b + 1) * BLOCK].iter().map(|&q| i32::from(q)).sum();
            assert_eq!(row.s[b], d * sum as f32);
        }
    }

    #[test]
    fn a_zero_block_stays_zero() {
        let a = Q8Activations::quantize(&[0.0; 32], 32);
        let row = a.token(0);
        assert_eq!((row.d[0], row.s[0]), (0.0, 0.0));
        assert!(row.q.iter().all(|&q| q == 0));
    }
}
