//! The small operations of a decode step, on f32 slices in place: RMS norm, rotary embedding,
//! SwiGLU's gate and causal attention over a key/value cache (and the encoders' GELU, which a
//! scalar `erf` per element made a tenth of an embedding's time). One token's versions of these
//! are a few hundred values each, so a tensor library's per-operation cost (an allocation, a
//! dispatch, a thread hand-off) would outweigh the arithmetic; here each is one pass.
//!
//! Each is written once over 8-lane arrays, which the compiler turns into vector code, and
//! compiled twice by `multiversion_fn!`: for AVX2+FMA (chosen at run time) and for the baseline
//! target.

use rayon::prelude::*;

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
fn exp_in_place(xs: &mut [f32]) {
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

/// The shape of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Queries in this call, at positions `start..start + tokens`.
    pub tokens: usize,
    pub start: usize,
}

/// Positions per block of the key layout [`attention`] reads.
pub const KEY_BLOCK: usize = 8;

/// Where value `d` of the key at `position` lies within its page of `page · dim` values: keys
/// are stored in blocks of [`KEY_BLOCK`] positions, each block dimension-major (`[dim][8]`), so
/// one query's scores for 8 keys are 8-lane multiply-adds with no horizontal sums.
pub fn key_offset(position: usize, d: usize, dim: usize) -> usize {
    (position / KEY_BLOCK) * dim * KEY_BLOCK + d * KEY_BLOCK + position % KEY_BLOCK
}

/// One layer's keys and values as a paged cache holds them, as f16 bits (llama.cpp's default
/// cache type: half the memory, and half the bytes attention reads, which bound a batched
/// decode step): pools of pages of `page` positions, one page per (block, kv head) at
/// `(block · kv_heads + head) · page · dim`; a sequence's positions are its `table`'s blocks in
/// order. Within a page values are row-major (`[page, dim]`) and keys as [`key_offset`] places
/// them.
#[derive(Debug, Clone, Copy)]
pub struct PagedKv<'a> {
    pub keys: &'a [u16],
    pub values: &'a [u16],
    pub table: &'a [u32],
    /// Positions per page, a multiple of [`KEY_BLOCK`].
    pub page: usize,
}

/// Causal grouped-query attention over a paged cache: `q` and `out` are `[tokens, heads,
/// head_dim]`; the cache holds positions `0..start + tokens`. Query head `h` reads cache head
/// `h / (heads / kv_heads)`. Heads run in parallel. The arithmetic does not depend on where the
/// pages lie, so a sequence gets the same numbers from any block table.
pub fn attention(q: &[f32], kv: PagedKv<'_>, shape: AttentionShape, out: &mut [f32]) {
    let AttentionShape { heads, kv_heads, head_dim: dim, tokens, start } = shape;
    let page_len = kv.page * dim;
    let pages_in_pool = if kv_heads == 0 || page_len == 0 { 0 } else { kv.keys.len() / (kv_heads * page_len) };
    assert!(
        q.len() == tokens * heads * dim
            && out.len() == q.len()
            && kv.values.len() == kv.keys.len()
            && kv.page > 0
            && kv.page.is_multiple_of(KEY_BLOCK)
            && start + tokens <= kv.table.len() * kv.page
            && kv.table.iter().all(|&b| (b as usize) < pages_in_pool)
            && kv_heads > 0
            && heads % kv_heads == 0,
        "attention buffers do not match their shape {shape:?}"
    );
    // One task per (token, head): the output slices are disjoint.
    out.par_chunks_mut(dim).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / heads, i % heads);
        let q = &q[i * dim..(i + 1) * dim];
        #[cfg(target_arch = "x86_64")]
        if *HAS_F16C {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time).
            return unsafe { attend_one_f16c(q, kv, shape, t, h, o) };
        }
        attend_one_impl::<SoftHalves>(q, kv, shape, t, h, o);
    });
}

/// Converts eight f16 values (bits) to f32.
trait Halves {
    fn eight(bits: &[u16]) -> [f32; 8];
}

/// The conversion in plain code, for CPUs without F16C.
struct SoftHalves;

impl Halves for SoftHalves {
    #[inline(always)]
    fn eight(bits: &[u16]) -> [f32; 8] {
        std::array::from_fn(|i| half::f16::from_bits(bits[i]).to_f32_const())
    }
}

/// The conversion in one F16C instruction. Only [`attend_one_f16c`] uses it, on a CPU that
/// has F16C.
#[cfg(target_arch = "x86_64")]
struct F16cHalves;

#[cfg(target_arch = "x86_64")]
impl Halves for F16cHalves {
    #[inline(always)]
    fn eight(bits: &[u16]) -> [f32; 8] {
        use std::arch::x86_64::{_mm_loadu_si128, _mm256_cvtph_ps};
        let bits = &bits[..8];
        // SAFETY: `bits` holds 8 values (16 readable bytes); this is only ever inlined into
        // `attend_one_f16c`, which runs only on a CPU with F16C; `__m256` and `[f32; 8]` have
        // the same size and every bit pattern is valid for both.
        unsafe { std::mem::transmute(_mm256_cvtph_ps(_mm_loadu_si128(bits.as_ptr().cast()))) }
    }
}

#[cfg(target_arch = "x86_64")]
static HAS_F16C: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
});

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn attend_one_f16c(q: &[f32], kv: PagedKv<'_>, shape: AttentionShape, t: usize, h: usize, out: &mut [f32]) {
    attend_one_impl::<F16cHalves>(q, kv, shape, t, h, out)
}

#[inline(always)]
fn attend_one_impl<H: Halves>(q: &[f32], kv: PagedKv<'_>, shape: AttentionShape, t: usize, h: usize, out: &mut [f32]) {
    let dim = shape.head_dim;
    let g = h / (shape.heads / shape.kv_heads);
    let visible = shape.start + t + 1;
    let page_len = kv.page * dim;
    let page_at = |j: usize| (kv.table[j] as usize * shape.kv_heads + g) * page_len;
    let scale = 1.0 / (dim as f32).sqrt();
    // Plain loops, no closures over the arithmetic: a closure is a function of its own,
    // compiled without this function's CPU features.
    // Scores a block of 8 keys at a time (the block's tail past `visible` is computed on
    // whatever the page holds there and dropped).
    let blocks = visible.div_ceil(KEY_BLOCK);
    let per_page = kv.page / KEY_BLOCK;
    let key_block = |b: usize| {
        let at = page_at(b / per_page) + (b % per_page) * KEY_BLOCK * dim;
        &kv.keys[at..at + KEY_BLOCK * dim]
    };
    let mut scores = vec![0f32; blocks * KEY_BLOCK];
    // Four key blocks at a time: each score's sum runs over the dimensions in order, as for a
    // lone block, but four independent sums keep the multiply-adds from waiting on each other.
    let mut b = 0;
    while b + 4 <= blocks {
        let (k0, k1, k2, k3) = (key_block(b), key_block(b + 1), key_block(b + 2), key_block(b + 3));
        let mut acc = [[0f32; KEY_BLOCK]; 4];
        let lanes = k0.chunks_exact(KEY_BLOCK).zip(k1.chunks_exact(KEY_BLOCK));
        let lanes = lanes.zip(k2.chunks_exact(KEY_BLOCK).zip(k3.chunks_exact(KEY_BLOCK)));
        for (qd, ((d0, d1), (d2, d3))) in q.iter().zip(lanes) {
            let (d0, d1, d2, d3) = (H::eight(d0), H::eight(d1), H::eight(d2), H::eight(d3));
            for l in 0..KEY_BLOCK {
                acc[0][l] = qd.mul_add(d0[l], acc[0][l]);
                acc[1][l] = qd.mul_add(d1[l], acc[1][l]);
                acc[2][l] = qd.mul_add(d2[l], acc[2][l]);
                acc[3][l] = qd.mul_add(d3[l], acc[3][l]);
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            let s = &mut scores[(b + j) * KEY_BLOCK..(b + j + 1) * KEY_BLOCK];
            for l in 0..KEY_BLOCK {
                s[l] = acc[l] * scale;
            }
        }
        b += 4;
    }
    while b < blocks {
        let kb = key_block(b);
        let mut acc = [0f32; KEY_BLOCK];
        for (qd, kd) in q.iter().zip(kb.chunks_exact(KEY_BLOCK)) {
            let kd = H::eight(kd);
            for l in 0..KEY_BLOCK {
                acc[l] = qd.mul_add(kd[l], acc[l]);
            }
        }
        let s = &mut scores[b * KEY_BLOCK..(b + 1) * KEY_BLOCK];
        for l in 0..KEY_BLOCK {
            s[l] = acc[l] * scale;
        }
        b += 1;
    }
    scores.truncate(visible);
    let mut max = f32::NEG_INFINITY;
    for s in &scores {
        max = max.max(*s);
    }
    for s in scores.iter_mut() {
        *s -= max;
    }
    exp_in_place(&mut scores);
    let mut sum = 0f32;
    for s in &scores {
        sum += s;
    }
    for p in scores.iter_mut() {
        *p /= sum;
    }
    // The weighted sum of the values, 64 dimensions at a time in registers (through the
    // output slice, every multiply-add would wait for the previous one's store).
    for d0 in (0..dim).step_by(VALUE_LANES) {
        let width = VALUE_LANES.min(dim - d0);
        let mut acc = [0f32; VALUE_LANES];
        for (j, page_scores) in scores.chunks(kv.page).enumerate() {
            let at = page_at(j) + d0;
            for (r, p) in page_scores.iter().enumerate() {
                let v = &kv.values[at + r * dim..at + r * dim + width];
                if let Ok(v) = <&[u16; VALUE_LANES]>::try_from(v) {
                    for (acc, v) in acc.chunks_exact_mut(8).zip(v.chunks_exact(8)) {
                        let v = H::eight(v);
                        for l in 0..8 {
                            acc[l] = p.mul_add(v[l], acc[l]);
                        }
                    }
                } else {
                    let whole = width / 8 * 8;
                    for (acc, v) in acc[..whole].chunks_exact_mut(8).zip(v.chunks_exact(8)) {
                        let v = H::eight(v);
                        for l in 0..8 {
                            acc[l] = p.mul_add(v[l], acc[l]);
                        }
                    }
                    for (a, v) in acc[whole..width].iter_mut().zip(&v[whole..]) {
                        *a = p.mul_add(half::f16::from_bits(*v).to_f32_const(), *a);
                    }
                }
            }
        }
        out[d0..d0 + width].copy_from_slice(&acc[..width]);
    }
}

/// Output dimensions [`attention`] accumulates at once.
const VALUE_LANES: usize = 64;

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

    /// Against a direct softmax(q·kᵀ/√d)·v, with grouped heads, a causal prompt, pages out of
    /// order in the pool and a spare page.
    #[test]
    fn attention_matches_the_definition() {
        let shape = AttentionShape { heads: 4, kv_heads: 2, head_dim: 8, tokens: 3, start: 7 };
        let (page, dim, kv_heads, pool_pages) = (8, 8, 2, 4);
        let f = |i: usize, m: usize| ((i * m % 23) as f32 - 11.0) / 7.0;
        let q: Vec<f32> = (0..3 * 4 * 8).map(|i| f(i, 5)).collect();
        // Row-major keys and values of positions 0..16 for the definition, paged for the kernel:
        // positions 0..8 in pool block 3, 8..16 in block 1.
        // Stored as f16: the definition takes the same rounded values.
        let half = |x: f32| half::f16::from_f32(x);
        let keys: Vec<f32> = (0..2 * 16 * 8).map(|i| half(f(i, 7)).to_f32()).collect();
        let values: Vec<f32> = (0..2 * 16 * 8).map(|i| half(f(i, 3)).to_f32()).collect();
        let table = [3u32, 1];
        let mut paged_k = vec![half(f32::NAN).to_bits(); pool_pages * kv_heads * page * dim];
        let mut paged_v = paged_k.clone();
        for g in 0..2 {
            for p in 0..16 {
                let at = (table[p / page] as usize * kv_heads + g) * page * dim;
                for d in 0..8 {
                    paged_k[at + key_offset(p % page, d, dim)] = half(keys[(g * 16 + p) * 8 + d]).to_bits();
                    paged_v[at + (p % page) * dim + d] = half(values[(g * 16 + p) * 8 + d]).to_bits();
                }
            }
        }
        let mut out = vec![0f32; q.len()];
        attention(&q, PagedKv { keys: &paged_k, values: &paged_v, table: &table, page }, shape, &mut out);
        for t in 0..3 {
            for h in 0..4 {
                let g = h / 2;
                let qh = &q[(t * 4 + h) * 8..(t * 4 + h + 1) * 8];
                let visible = 7 + t + 1;
                let scores: Vec<f32> = (0..visible)
                    .map(|j| (0..8).map(|d| qh[d] * keys[(g * 16 + j) * 8 + d]).sum::<f32>() / 8f32.sqrt())
                    .collect();
                let max = scores.iter().copied().fold(f32::MIN, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                for d in 0..8 {
                    let want: f32 = (0..visible).map(|j| e[j] / sum * values[(g * 16 + j) * 8 + d]).sum();
                    let got = out[(t * 4 + h) * 8 + d];
                    assert!((got - want).abs() < 1e-5, "[{t},{h},{d}] {got} vs {want}");
                }
            }
        }
    }
}
