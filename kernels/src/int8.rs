//! Dense f32 weights held as 8-bit integers, for products of many tokens at once (an encoder's
//! padded batches): the integer multiply-add `vpdpbusd` does 64 products per instruction where
//! an f32 FMA does 16, and an encoder's forward pass is bound by exactly these products.
//!
//! Both sides are quantized in blocks of [`BLOCK`] values along the shared dimension, each
//! block with its own scale, so one large value spoils the resolution of only its own block
//! (encoder weights and hidden states both have such outliers; one scale per row measurably
//! loses accuracy). Weights are symmetric (`w ≈ s · q`, q in ±127). Activations are asymmetric
//! (`x ≈ lo + d · q`, q in 0..=255: all of `vpdpbusd`'s unsigned range, and twice the
//! resolution of a symmetric code for one-sided values such as GELU's outputs); the `lo` term
//! is `lo · Σ w`, with `Σ w` per row and block precomputed. Each block's integer sum is exact
//! in `i32`; blocks are added up in f32, in order, with fused multiply-adds. A token's result
//! depends on nothing but its own values: alone or padded into a batch, it gets the same bits.

use rayon::prelude::*;

/// Values per scale, along the shared dimension, on both sides.
pub const BLOCK: usize = 32;
/// Rows per packed group: one 512-bit register of `i32` sums.
const LANES: usize = 16;
/// Tokens per kernel tile (each a column of accumulators in registers).
const TILE_TOKENS: usize = 6;
/// Row groups per kernel tile.
const TILE_GROUPS: usize = 2;
/// Fewest tokens per parallel task: below this, splitting costs more than it gains.
const MIN_TASK_TOKENS: usize = 2 * TILE_TOKENS;

/// Why a matrix cannot be held as 8-bit integers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Int8Error {
    #[error("a {rows}×{cols} matrix needs {expected} values, got {got}")]
    Size { rows: usize, cols: usize, expected: usize, got: usize },
    #[error("rows of {cols} values are not whole {BLOCK}-value blocks")]
    Cols { cols: usize },
    #[error("a bias of {got} values for {rows} rows")]
    Bias { rows: usize, got: usize },
    #[error("a value is not finite")]
    NotFinite,
}

/// Whether this CPU runs the 8-bit products (AVX-512 with VNNI). Elsewhere callers keep f32.
pub fn int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A `[rows, cols]` matrix (Hugging Face's `[out, in]`) as 8-bit integers, with its bias.
#[derive(Debug, Clone)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    /// Per group of [`LANES`] rows (the last padded with zero rows), per 4 columns: 16 rows × 4
    /// values, the layout `vpdpbusd` reads (lane `i` gets row `i`'s 4 values).
    packed: Vec<i8>,
    /// Per group and block, 16 lanes (one per row): the step of the block's integers.
    scales: Vec<f32>,
    /// Per group and block, 16 lanes: `Σ w` over the block (as quantized), what an
    /// activation block's `lo` multiplies.
    sums: Vec<f32>,
    /// Per row (padded): added to the product; zeros when the layer has none.
    bias: Vec<f32>,
}

impl Int8Matrix {
    /// Quantizes `weight` (`[rows, cols]` row-major) and keeps `bias` (`[rows]`) beside it.
    pub fn quantize(weight: &[f32], rows: usize, cols: usize, bias: Option<&[f32]>) -> Result<Self, Int8Error> {
        if weight.len() != rows * cols {
            return Err(Int8Error::Size { rows, cols, expected: rows * cols, got: weight.len() });
        }
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(Int8Error::Cols { cols });
        }
        if let Some(b) = bias
            && b.len() != rows
        {
            return Err(Int8Error::Bias { rows, got: b.len() });
        }
        if !weight.iter().chain(bias.unwrap_or_default()).all(|v| v.is_finite()) {
            return Err(Int8Error::NotFinite);
        }
        let groups = rows.div_ceil(LANES);
        let padded = groups * LANES;
        let blocks = cols / BLOCK;
        let mut packed = vec![0i8; padded * cols];
        let mut scales = vec![0f32; groups * blocks * LANES];
        let mut sums = vec![0f32; groups * blocks * LANES];
        for (r, row) in weight.chunks_exact(cols).enumerate() {
            let (g, lane) = (r / LANES, r % LANES);
            for (b, block) in row.chunks_exact(BLOCK).enumerate() {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                let mut total = 0i32;
                for (i, &w) in block.iter().enumerate() {
                    let q = (w * inverse).round_ties_even().clamp(-127.0, 127.0) as i8;
                    let k = b * BLOCK + i;
                    packed[((g * (cols / 4) + k / 4) * LANES + lane) * 4 + k % 4] = q;
                    total += q as i32;
                }
                let at = (g * blocks + b) * LANES + lane;
                scales[at] = scale;
                sums[at] = scale * total as f32;
            }
        }
        let mut padded_bias = vec![0f32; padded];
        if let Some(b) = bias {
            padded_bias[..rows].copy_from_slice(b);
        }
        Ok(Self { rows, cols, packed, scales, sums, bias: padded_bias })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `y = x Wᵀ + bias`: `x` is `[tokens, cols]`, the result `[tokens, rows]`. Runs the
    /// AVX-512 kernel where [`int8_available`], else the portable one (the same bits, many times
    /// slower: callers keep f32 weights on such CPUs).
    pub fn matmul(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        assert_eq!(x.len(), tokens * self.cols, "activations of the wrong width");
        let mut y = vec![0f32; tokens * self.rows];
        if tokens == 0 || self.rows == 0 {
            return y;
        }
        let fast = int8_available();
        let threads = rayon::current_num_threads().max(1);
        let per_task = tokens.div_ceil(threads).max(MIN_TASK_TOKENS);
        // Tasks of whole tokens: each quantizes its own activations and writes its own rows.
        y.par_chunks_mut(per_task * self.rows).zip(x.par_chunks(per_task * self.cols)).for_each(|(out, x)| {
            let n = x.len() / self.cols;
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: the CPU has AVX-512 F/BW and VNNI (checked above).
                return unsafe { avx512::product(self, x, n, out) };
            }
            let _ = fast;
            portable_tokens(self, &Int8Activations::quantize(x), n, out);
        });
        y
    }

    /// The portable product, whatever the CPU (for tests of the fast kernel).
    #[cfg(test)]
    fn matmul_portable(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        assert_eq!(x.len(), tokens * self.cols, "activations of the wrong width");
        let mut y = vec![0f32; tokens * self.rows];
        portable_tokens(self, &Int8Activations::quantize(x), tokens, &mut y);
        y
    }

    fn groups(&self) -> usize {
        self.bias.len() / LANES
    }

    fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    /// Row `r`'s 8-bit value at column `k` (unpacked).
    fn weight(&self, r: usize, k: usize) -> i8 {
        let (g, lane) = (r / LANES, r % LANES);
        self.packed[((g * (self.cols / 4) + k / 4) * LANES + lane) * 4 + k % 4]
    }
}

/// Tokens' activations as bytes with a step and a low end per block.
struct Int8Activations {
    /// `[tokens, cols]`: `round((x − lo) / d)`, 0..=255.
    q: Vec<u8>,
    /// `[tokens, cols / BLOCK]`: each block's step `(max − min) / 255`.
    d: Vec<f32>,
    /// `[tokens, cols / BLOCK]`: each block's minimum.
    lo: Vec<f32>,
}

impl Int8Activations {
    fn quantize(x: &[f32]) -> Self {
        let mut q = vec![0u8; x.len()];
        let mut d = vec![0f32; x.len() / BLOCK];
        let mut lo = vec![0f32; x.len() / BLOCK];
        for (((xb, qb), step), low) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)).zip(&mut d).zip(&mut lo) {
            // NaNs read as 0 (`min`/`max` skip them; `as` takes NaN to 0 — and so does the
            // AVX-512 quantizer).
            let read = |v: f32| if v.is_nan() { 0.0 } else { v };
            let (min, max) =
                xb.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(read(v)), b.max(read(v))));
            *low = min;
            *step = (max - min) / 255.0;
            let inverse = if *step > 0.0 { 1.0 / *step } else { 0.0 };
            for (o, &v) in qb.iter_mut().zip(xb) {
                *o = ((read(v) - min) * inverse).round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
        Self { q, d, lo }
    }
}

/// The `n` tokens of `a` into `out` (`[n, rows]`), one scalar sum at a time, in the fast
/// kernel's order of operations.
fn portable_tokens(m: &Int8Matrix, a: &Int8Activations, n: usize, out: &mut [f32]) {
    let blocks = m.blocks();
    for t in 0..n {
        let q = &a.q[t * m.cols..(t + 1) * m.cols];
        for r in 0..m.rows {
            let mut sum = 0f32;
            for b in 0..blocks {
                let at = ((r / LANES) * blocks + b) * LANES + r % LANES;
                let mut int = 0i32;
                for (k, &x) in q.iter().enumerate().skip(b * BLOCK).take(BLOCK) {
                    int += x as i32 * m.weight(r, k) as i32;
                }
                sum = (int as f32).mul_add(m.scales[at] * a.d[t * blocks + b], sum);
                sum = m.sums[at].mul_add(a.lo[t * blocks + b], sum);
            }
            out[t * m.rows + r] = sum + m.bias[r];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Int8Activations, Int8Matrix, LANES, TILE_GROUPS, TILE_TOKENS};

    /// `x` (`[n, cols]`) times the matrix into `out` (`[n, rows]`): the activations quantized,
    /// then tiles of [`TILE_TOKENS`] tokens × [`TILE_GROUPS`] row groups, smaller at the edges.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn product(m: &Int8Matrix, x: &[f32], n: usize, out: &mut [f32]) {
        let a = quantize(x);
        let groups = m.groups();
        let mut t = 0;
        while t < n {
            let tt = TILE_TOKENS.min(n - t);
            let mut g = 0;
            while g < groups {
                let gg = TILE_GROUPS.min(groups - g);
                let at = Tile { m, a: &a, token: t, group: g, out: &mut out[t * m.rows..] };
                // SAFETY (all arms): same CPU features as this function.
                unsafe {
                    match (gg, tt) {
                        (2, 6) => at.run::<2, 6>(),
                        (2, 5) => at.run::<2, 5>(),
                        (2, 4) => at.run::<2, 4>(),
                        (2, 3) => at.run::<2, 3>(),
                        (2, 2) => at.run::<2, 2>(),
                        (2, _) => at.run::<2, 1>(),
                        (_, 6) => at.run::<1, 6>(),
                        (_, 5) => at.run::<1, 5>(),
                        (_, 4) => at.run::<1, 4>(),
                        (_, 3) => at.run::<1, 3>(),
                        (_, 2) => at.run::<1, 2>(),
                        _ => at.run::<1, 1>(),
                    }
                }
                g += gg;
            }
            t += tt;
        }
    }

    /// [`Int8Activations::quantize`], 16 values per instruction: the same bits (the extremes
    /// are exact in any order, and the conversion rounds half to even as `round_ties_even`).
    #[target_feature(enable = "avx512f,avx512bw")]
    fn quantize(x: &[f32]) -> Int8Activations {
        let mut q = vec![0u8; x.len()];
        let mut d = vec![0f32; x.len() / BLOCK];
        let mut lo = vec![0f32; x.len() / BLOCK];
        let top = _mm512_set1_epi32(255);
        for (((xb, qb), step), low) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)).zip(&mut d).zip(&mut lo) {
            // SAFETY: a block is 32 values: two 16-lane loads.
            let (a, b) = unsafe { (_mm512_loadu_ps(xb.as_ptr()), _mm512_loadu_ps(xb.as_ptr().add(16))) };
            // NaNs read as 0, as the portable quantizer reads them.
            let a = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(a, a), a);
            let b = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(b, b), b);
            let min = _mm512_reduce_min_ps(_mm512_min_ps(a, b));
            let max = _mm512_reduce_max_ps(_mm512_max_ps(a, b));
            *low = min;
            *step = (max - min) / 255.0;
            let inverse = _mm512_set1_ps(if *step > 0.0 { 1.0 / *step } else { 0.0 });
            let base = _mm512_set1_ps(min);
            for (half, v) in [a, b].into_iter().enumerate() {
                let rounded = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(v, base), inverse));
                let ints = _mm512_min_epi32(_mm512_max_epi32(rounded, _mm512_setzero_si512()), top);
                // SAFETY: 16 bytes at `16 · half` of the block's 32.
                unsafe { _mm_storeu_si128(qb.as_mut_ptr().add(16 * half).cast(), _mm512_cvtepi32_epi8(ints)) };
            }
        }
        Int8Activations { q, d, lo }
    }

    /// One tile's inputs: tokens from `token`, row groups from `group`; `out` starts at the
    /// tile's first token's row.
    struct Tile<'a> {
        m: &'a Int8Matrix,
        a: &'a Int8Activations,
        token: usize,
        group: usize,
        out: &'a mut [f32],
    }

    impl Tile<'_> {
        /// `G` row groups × `T` tokens, every accumulator in a register.
        ///
        /// # Safety
        /// The CPU must have AVX-512 F, BW and VNNI.
        // The accumulators are a `G × T` grid of registers, read as one.
        #[allow(clippy::needless_range_loop)]
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn run<const G: usize, const T: usize>(self) {
            let m = self.m;
            let (cols, blocks, steps) = (m.cols, m.blocks(), m.cols / 4);
            assert!(self.token + T <= self.a.q.len() / cols && self.group + G <= m.groups());
            assert!(self.out.len() >= (T - 1) * m.rows + ((self.group + G) * LANES).min(m.rows));
            let packed = m.packed.as_ptr();
            let acts = self.a.q.as_ptr();
            let mut sums = [[_mm512_setzero_ps(); T]; G];
            for b in 0..blocks {
                let mut ints = [[_mm512_setzero_si512(); T]; G];
                for step in b * BLOCK / 4..(b + 1) * BLOCK / 4 {
                    let mut w = [_mm512_setzero_si512(); G];
                    for (g, wg) in w.iter_mut().enumerate() {
                        // SAFETY: 64 bytes of group `self.group + g` at `step`, within `packed`.
                        *wg = unsafe { _mm512_loadu_si512(packed.add(((self.group + g) * steps + step) * 64).cast()) };
                    }
                    for t in 0..T {
                        // SAFETY: 4 bytes of token `self.token + t` at column `4 · step`,
                        // within `q` (asserted above).
                        let four =
                            unsafe { acts.add((self.token + t) * cols + step * 4).cast::<i32>().read_unaligned() };
                        let x = _mm512_set1_epi32(four);
                        for g in 0..G {
                            ints[g][t] = _mm512_dpbusd_epi32(ints[g][t], x, w[g]);
                        }
                    }
                }
                for g in 0..G {
                    let at = ((self.group + g) * blocks + b) * LANES;
                    // SAFETY: the group and block exist (asserted above), 16 lanes each.
                    let (scale, total) = unsafe {
                        (_mm512_loadu_ps(m.scales.as_ptr().add(at)), _mm512_loadu_ps(m.sums.as_ptr().add(at)))
                    };
                    for t in 0..T {
                        let token = (self.token + t) * blocks + b;
                        let step = _mm512_mul_ps(scale, _mm512_set1_ps(self.a.d[token]));
                        sums[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ints[g][t]), step, sums[g][t]);
                        sums[g][t] = _mm512_fmadd_ps(total, _mm512_set1_ps(self.a.lo[token]), sums[g][t]);
                    }
                }
            }
            for g in 0..G {
                let row = (self.group + g) * LANES;
                // SAFETY: `bias` is padded to whole groups.
                let bias = unsafe { _mm512_loadu_ps(m.bias.as_ptr().add(row)) };
                let live = (m.rows - row).min(LANES);
                let mask: __mmask16 = if live == LANES { !0 } else { (1u16 << live) - 1 };
                for t in 0..T {
                    let y = _mm512_add_ps(sums[g][t], bias);
                    // SAFETY: the `live` rows of token `t` lie within `out` (asserted above).
                    unsafe { _mm512_mask_storeu_ps(self.out.as_mut_ptr().add(t * m.rows + row), mask, y) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in ±0.5, every 97th (with `outliers`) 8 times larger, as encoder activations
    /// have.
    fn values(n: usize, seed: u32, outliers: bool) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let v = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                if outliers && i % 97 == 0 { v * 8.0 } else { v }
            })
            .collect()
    }

    fn reference(w: &[f32], x: &[f32], bias: &[f32], rows: usize, cols: usize, tokens: usize) -> Vec<f32> {
        let mut y = vec![0f32; tokens * rows];
        for t in 0..tokens {
            for r in 0..rows {
                let dot: f64 = (0..cols).map(|k| w[r * cols + k] as f64 * x[t * cols + k] as f64).sum();
                y[t * rows + r] = dot as f32 + bias[r];
            }
        }
        y
    }

    #[test]
    fn products_are_close_to_f32_and_the_kernels_agree_bit_for_bit() {
        // Odd shapes: a partial last row group, token counts off the tile size.
        for &(rows, cols, tokens) in &[(40, 64, 1), (16, 32, 7), (37, 96, 13), (130, 384, 29)] {
            let w = values(rows * cols, 1, false);
            let x = values(tokens * cols, 2, true);
            let bias = values(rows, 3, false);
            let m = Int8Matrix::quantize(&w, rows, cols, Some(&bias)).unwrap();
            let fast = m.matmul(&x, tokens);
            let portable = m.matmul_portable(&x, tokens);
            assert_eq!(fast.len(), tokens * rows);
            assert!(fast.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits()), "{rows}×{cols}×{tokens}");
            let want = reference(&w, &x, &bias, rows, cols, tokens);
            let (mut err, mut norm) = (0f64, 0f64);
            for (a, b) in fast.iter().zip(&want) {
                err += ((a - b) as f64).powi(2);
                norm += (*b as f64).powi(2);
            }
            assert!((err / norm).sqrt() < 0.01, "{rows}×{cols}×{tokens}: relative error {}", (err / norm).sqrt());
        }
    }

    #[test]
    fn a_token_gets_the_same_bits_alone_or_in_a_batch() {
        let (rows, cols, tokens) = (48, 128, 17);
        let m = Int8Matrix::quantize(&values(rows * cols, 4, false), rows, cols, None).unwrap();
        let x = values(tokens * cols, 5, true);
        let all = m.matmul(&x, tokens);
        for t in [0, 5, 16] {
            let alone = m.matmul(&x[t * cols..(t + 1) * cols], 1);
            assert!(alone.iter().zip(&all[t * rows..(t + 1) * rows]).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert_eq!(Int8Matrix::quantize(&[0.0; 30], 1, 30, None).unwrap_err(), Int8Error::Cols { cols: 30 });
        assert!(matches!(Int8Matrix::quantize(&[0.0; 31], 1, 32, None), Err(Int8Error::Size { .. })));
        assert!(matches!(Int8Matrix::quantize(&[0.0; 32], 1, 32, Some(&[0.0; 2])), Err(Int8Error::Bias { .. })));
        assert_eq!(Int8Matrix::quantize(&[f32::NAN; 32], 1, 32, None).unwrap_err(), Int8Error::NotFinite);
    }

    #[test]
    fn a_nan_activation_reads_as_zero_in_both_kernels() {
        let m = Int8Matrix::quantize(&values(16 * 64, 6, false), 16, 64, None).unwrap();
        let mut x = values(64, 7, false);
        let fast = m.matmul(&x, 1);
        x[3] = 0.0;
        x[40] = 0.0;
        let zeroed = m.matmul(&x, 1);
        x[3] = f32::NAN;
        x[40] = f32::NAN;
        assert_eq!(m.matmul(&x, 1), zeroed);
        assert_eq!(m.matmul_portable(&x, 1), zeroed);
        assert_ne!(fast, zeroed);
    }
}
