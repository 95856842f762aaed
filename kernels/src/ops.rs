//! The small operations of a decode step, on f32 slices in place: RMS norm, rotary embedding,
//! SwiGLU's gate and causal attention over a key/value cache (and the encoders' GELU, which a
//! scalar `erf` per element made a tenth of an embedding's time). One token's versions of these
//! are a few hundred values each, so a tensor library's per-operation cost (an allocation, a
//! dispatch, a thread hand-off) would outweigh the arithmetic; here each is one pass.
//!
//! Each is written once over 8-lane arrays, which the compiler turns into vector code, and
//! compiled twice by `multiversion_fn!`: for AVX2+FMA (chosen at run time) and for the baseline
//! target.

pub use crate::attention::{AttentionShape, KEY_BLOCK, PagedKv, QueryRow, attention, attention_rows, key_offset};
pub use crate::encoder_attention::{EncoderBatch, Projected, encoder_attention};

const LANES: usize = 8;

/// Σ a·b in eight independent lanes (an f32 sum in one chain cannot be vectorised: the
/// compiler must keep its order).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let mut tail = 0f32;
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        tail += x * y;
    }
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut total = tail;
    for a in acc {
        total += a;
    }
    total
}

/// `e^x` for every element, by Cephes' method: `2^n · p(r)` with `r = x − n·ln 2`,
/// relative error below 2e-7 across f32's range (−inf → 0, large → inf).
#[inline(always)]
pub(crate) fn exp_in_place(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = exp1(*x);
    }
}

#[inline(always)]
fn exp1(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.336_55, 88.376_26);
    // Round to nearest by the 1.5·2^23 trick: branch-free and vectorisable.
    let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    // 2^n by building the exponent bits (n lies in −126…127 after the clamp).
    f32::from_bits(((n as i32 + 127) as u32) << 23) * y
}

multiversion_fn! {
    /// `x ← x / rms(x) · weight` for each row of `weight.len()` values (Hugging Face's
    /// `LlamaRMSNorm`, in f32).
    pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) => rms_norm_impl
}

#[inline(always)]
fn rms_norm_impl(x: &mut [f32], weight: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(weight.len()) {
        let mean = dot(row, row) / weight.len() as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v * inv * w;
        }
    }
}

multiversion_fn! {
    /// `x ← LayerNorm(x + residual)` for each row of `weight.len()` values: `torch.nn.LayerNorm`
    /// (biased variance, in f32), with the residual add of a post-norm block in the same pass.
    pub fn layer_norm(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) => layer_norm_impl
}

#[inline(always)]
fn layer_norm_impl(x: &mut [f32], residual: Option<&[f32]>, weight: &[f32], bias: &[f32], eps: f32) {
    let n = weight.len();
    for (r, row) in x.chunks_exact_mut(n).enumerate() {
        if let Some(res) = residual {
            for (v, a) in row.iter_mut().zip(&res[r * n..(r + 1) * n]) {
                *v += a;
            }
        }
        let mut lanes = [0f32; LANES];
        for chunk in row.chunks(LANES) {
            for (l, v) in lanes.iter_mut().zip(chunk) {
                *l += v;
            }
        }
        let mean = lanes.iter().sum::<f32>() / n as f32;
        let mut lanes = [0f32; LANES];
        for chunk in row.chunks(LANES) {
            for (l, v) in lanes.iter_mut().zip(chunk) {
                *l = (v - mean).mul_add(v - mean, *l);
            }
        }
        let inverse = 1.0 / (lanes.iter().sum::<f32>() / n as f32 + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = ((*v - mean) * inverse).mul_add(*w, *b);
        }
    }
}

multiversion_fn! {
    /// Rotary embedding, rotate-half form, in place: `x` is `[tokens, heads, dim]` and `cos`,
    /// `sin` are `[tokens, dim]` with both halves equal (as [`crate`]'s callers build them).
    pub fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], dim: usize) => rope_impl
}

#[inline(always)]
fn rope_impl(x: &mut [f32], cos: &[f32], sin: &[f32], dim: usize) {
    let half = dim / 2;
    let tokens = cos.len() / dim;
    let per_token = x.len() / tokens.max(1);
    for (t, row) in x.chunks_exact_mut(per_token).enumerate() {
        let (c, s) = (&cos[t * dim..t * dim + half], &sin[t * dim..t * dim + half]);
        for head in row.chunks_exact_mut(dim) {
            let (x1, x2) = head.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (x1[i], x2[i]);
                x1[i] = a * c[i] - b * s[i];
                x2[i] = b * c[i] + a * s[i];
            }
        }
    }
}

multiversion_fn! {
    /// `log Σ exp(values)`, computed stably (the largest value taken out first) with the
    /// vectorised exponential: a softmax's normalizer over a whole vocabulary, every token.
    pub fn log_sum_exp(values: &[f32]) -> f32 => log_sum_exp_impl
}

#[inline(always)]
fn log_sum_exp_impl(values: &[f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for v in values {
        max = max.max(*v);
    }
    if !max.is_finite() {
        return max;
    }
    let mut sum = 0f32;
    let mut e = [0f32; 256];
    for chunk in values.chunks(256) {
        let e = &mut e[..chunk.len()];
        for (e, v) in e.iter_mut().zip(chunk) {
            *e = v - max;
        }
        exp_in_place(e);
        let mut part = 0f32;
        for x in e.iter() {
            part += x;
        }
        sum += part;
    }
    max + sum.ln()
}

multiversion_fn! {
    /// SwiGLU's gate, in place: `gate ← silu(gate) · up`.
    pub fn silu_mul(gate: &mut [f32], up: &[f32]) => silu_mul_impl
}

#[inline(always)]
fn silu_mul_impl(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.chunks_mut(256).zip(up.chunks(256)) {
        let mut e = [0f32; 256];
        let e = &mut e[..g.len()];
        for (e, g) in e.iter_mut().zip(g.iter()) {
            *e = -*g;
        }
        exp_in_place(e);
        for ((g, u), e) in g.iter_mut().zip(u).zip(e.iter()) {
            *g = *g / (1.0 + e) * u;
        }
    }
}

multiversion_fn! {
    /// The exact (erf) GELU in place, `x ← x · Φ(x)`, as BERT and `torch.nn.GELU()` define it;
    /// absolute error below 1e-6 for |x| ≤ 10.
    pub fn gelu(x: &mut [f32]) => gelu_impl
}

#[inline(always)]
fn gelu_impl(x: &mut [f32]) {
    // Abramowitz & Stegun 7.1.26 on |x|/√2: erf(z) = 1 − t·p(t)·e^(−z²), t = 1/(1 + 0.3275911·z),
    // absolute error ≤ 1.5e-7; the sign is put back after.
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    for chunk in x.chunks_mut(256) {
        let mut e = [0f32; 256];
        let e = &mut e[..chunk.len()];
        for (e, x) in e.iter_mut().zip(chunk.iter()) {
            let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
            *e = -z * z;
        }
        exp_in_place(e);
        for (x, e) in chunk.iter_mut().zip(e.iter()) {
            let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
            let t = 1.0 / P.mul_add(z, 1.0);
            let poly = A[4].mul_add(t, A[3]).mul_add(t, A[2]).mul_add(t, A[1]).mul_add(t, A[0]) * t;
            let erf = 1.0 - poly * e;
            let erf = if *x < 0.0 { -erf } else { erf };
            *x = 0.5 * *x * (1.0 + erf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_across_the_range() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let mut v = [x];
            exp_in_place(&mut v);
            let want = x.exp();
            worst = worst.max((v[0] - want).abs() / want);
        }
        assert!(worst < 5e-7, "relative error {worst}");
        let mut v = [f32::NEG_INFINITY, -200.0, 0.0];
        exp_in_place(&mut v);
        assert!(v[0] < 1e-37 && v[1] < 1e-37 && v[2] == 1.0, "{v:?}");
    }

    #[test]
    fn log_sum_exp_matches_the_formula() {
        let values: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let max = values.iter().copied().fold(f32::MIN, f32::max) as f64;
        let want = max + values.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&values) as f64 - want).abs() < 1e-5, "{} vs {want}", log_sum_exp(&values));
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn rms_norm_matches_the_formula() {
        let mut x = vec![1., 2., 3., 4., 2., 2., 2., 2.];
        rms_norm(&mut x, &[1., 2., 1., 0.5], 1e-5);
        let rms = ((1. + 4. + 9. + 16.) / 4.0f32 + 1e-5).sqrt();
        let want = [1. / rms, 4. / rms, 3. / rms, 2. / rms];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert!((x[4] - 1.0).abs() < 1e-5 && (x[7] - 0.5).abs() < 1e-5);
    }

    #[test]
    fn rope_rotates_element_i_with_i_plus_half() {
        // Two tokens, one head of 4: token 1 rotates element 0 into 2 by its angle.
        let (c, s) = (0.6f32, 0.8f32);
        let cos = [1., 1., 1., 1., c, 1., c, 1.];
        let sin = [0., 0., 0., 0., s, 0., s, 0.];
        let mut x = vec![1., 2., 3., 4., 1., 0., 0., 0.];
        rope(&mut x, &cos, &sin, 4);
        assert_eq!(&x[..4], &[1., 2., 3., 4.]);
        assert!((x[4] - c).abs() < 1e-6 && (x[6] - s).abs() < 1e-6 && x[5] == 0.0 && x[7] == 0.0);
    }

    #[test]
    fn silu_mul_matches_the_formula() {
        let mut g: Vec<f32> = (0..300).map(|i| (i as f32 - 150.0) / 10.0).collect();
        let u: Vec<f32> = (0..300).map(|i| (i % 7) as f32 - 3.0).collect();
        let want: Vec<f32> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
        silu_mul(&mut g, &u);
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    /// erf by its Taylor series in f64 (exact to ~1e-15 for |z| ≤ 4 with 80 terms).
    fn erf_series(z: f64) -> f64 {
        let (mut term, mut sum) = (z, z);
        for n in 1..80 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let mut x: Vec<f32> = (-600..=600).map(|i| i as f32 / 100.0).collect();
        let want: Vec<f64> =
            x.iter().map(|&v| 0.5 * v as f64 * (1.0 + erf_series(v as f64 / std::f64::consts::SQRT_2))).collect();
        gelu(&mut x);
        let worst = x.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-6, "worst absolute error {worst}");
        let mut far = [-30.0f32, 30.0];
        gelu(&mut far);
        assert_eq!(far, [0.0, 30.0]);
    }

    #[test]
    fn layer_norm_adds_the_residual_and_normalises_each_row() {
        let n = 19;
        let x: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0).collect();
        let res: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let weight: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 / n as f32).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let mut out = x.clone();
        layer_norm(&mut out, Some(&res), &weight, &bias, 1e-12);
        for r in 0..2 {
            let row: Vec<f64> = (0..n).map(|i| (x[r * n + i] + res[r * n + i]) as f64).collect();
            let mean = row.iter().sum::<f64>() / n as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            for i in 0..n {
                let want = (row[i] - mean) / (var + 1e-12).sqrt() * weight[i] as f64 + bias[i] as f64;
                assert!((out[r * n + i] as f64 - want).abs() < 1e-5, "row {r} value {i}");
            }
        }
    }
}
