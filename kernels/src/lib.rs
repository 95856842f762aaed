//! Matrices kept in GGUF's block-quantized formats (Q8_0, Q4_0, Q4_1) and multiplied in that
//! form on the CPU: each row is dequantized a block at a time, in registers, and dotted with
//! f32 activations. Decode is bound by reading weights, and these blocks are 4–7× smaller than
//! f32 copies. The activations stay f32, so results equal a dequantize-then-matmul up to the
//! order of the additions (the reference fixtures hold at f32 tolerance).
//!
//! Kernels: AVX2+FMA+F16C where the CPU has it (checked at run time; never `target-cpu=native`, and
//! nothing here touches AMX), a portable scalar loop elsewhere. Rows are split across rayon's
//! threads (`RAYON_NUM_THREADS`).
//!
//! A crate of its own so that it is built optimised in every profile (the server's own crate
//! is built at opt-level 1 for tests, where these loops would run several times slower).

use half::f16;
use rayon::prelude::*;

/// Values per block in every format here.
const BLOCK: usize = 32;

/// From this many tokens on, a product runs as f32 GEMMs on dequantized tiles of rows.
const GEMM_TOKENS: usize = 8;

/// Rows per dequantized tile (64 rows of 1536 values: 384 KiB, within a core's L2).
const TILE_ROWS: usize = 64;

/// A block-quantized format Hearth computes on directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// f16 scale, 32 × i8: `d * q`.
    Q8_0,
    /// f16 scale, 16 bytes of nibbles: `d * (q - 8)`.
    Q4_0,
    /// f16 scale, f16 minimum, 16 bytes of nibbles: `d * q + m`.
    Q4_1,
}

impl QuantType {
    /// Bytes of one block of 32 values.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
        }
    }
}

/// Why a quantized matrix cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("a {ty:?} matrix of {rows}×{cols} needs {expected} bytes, got {got}")]
    Size { ty: QuantType, rows: usize, cols: usize, expected: usize, got: usize },
    #[error("a {ty:?} row of {cols} values is not a whole number of 32-value blocks")]
    Cols { ty: QuantType, cols: usize },
}

/// A `[rows, cols]` matrix of quantized blocks, row-major (blocks run along a row).
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl QuantMatrix {
    /// Takes GGUF block bytes for a `[rows, cols]` matrix.
    pub fn new(ty: QuantType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, QuantError> {
        if cols % BLOCK != 0 {
            return Err(QuantError::Cols { ty, cols });
        }
        let expected = rows * cols / BLOCK * ty.block_bytes();
        if data.len() != expected {
            return Err(QuantError::Size { ty, rows, cols, expected, got: data.len() });
        }
        Ok(Self { ty, rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn quant_type(&self) -> QuantType {
        self.ty
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.ty.block_bytes()
    }

    /// The matrix with its rows reordered: row `i` of the result is row `order[i]` of this one
    /// (whole rows of blocks move, so no value changes).
    pub fn permute_rows(&self, order: &[usize]) -> Self {
        let rb = self.row_bytes();
        let mut data = Vec::with_capacity(self.data.len());
        for &r in order {
            data.extend_from_slice(&self.data[r * rb..(r + 1) * rb]);
        }
        Self { data, ..self.clone() }
    }

    /// `y = x Wᵀ`: `x` is `[tokens, cols]`, the result `[tokens, rows]` (the matrix is in
    /// Hugging Face's `[out, in]` layout).
    pub fn matmul(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), tokens * self.cols);
        if tokens >= GEMM_TOKENS {
            return self.matmul_tiles(x, tokens);
        }
        let blocks = self.cols / BLOCK;
        // Σx per block, once per token: Q4_1's minimum multiplies it.
        let sums: Vec<f32> = x.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect();
        let rb = self.row_bytes();
        let dot = kernel(self.ty);
        // Parallel over output rows, in chunks big enough to amortise the scheduling; every
        // token of a chunk reuses the rows while they are in cache.
        const ROWS_PER_TASK: usize = 16;
        let mut by_row = vec![0f32; tokens * self.rows];
        by_row.par_chunks_mut(ROWS_PER_TASK * tokens).enumerate().for_each(|(chunk, out)| {
            let first = chunk * ROWS_PER_TASK;
            for (i, out_row) in out.chunks_mut(tokens).enumerate() {
                let row = &self.data[(first + i) * rb..(first + i + 1) * rb];
                for (t, o) in out_row.iter_mut().enumerate() {
                    *o = dot(row, &x[t * self.cols..(t + 1) * self.cols], &sums[t * blocks..(t + 1) * blocks]);
                }
            }
        });
        // `by_row` is `[rows, tokens]`; the model wants `[tokens, rows]` (the same thing for one
        // token, the decode step).
        if tokens == 1 {
            return by_row;
        }
        let mut y = vec![0f32; tokens * self.rows];
        for r in 0..self.rows {
            for t in 0..tokens {
                y[t * self.rows + r] = by_row[r * tokens + t];
            }
        }
        y
    }

    /// Prompt-sized products: each tile of rows is dequantized once (into a buffer that stays
    /// in cache) and multiplied with every token by an f32 GEMM, so decoding a block costs once
    /// per tile rather than once per token.
    fn matmul_tiles(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        let tiles: Vec<Vec<f32>> = (0..self.rows.div_ceil(TILE_ROWS))
            .into_par_iter()
            .map(|tile| {
                let first = tile * TILE_ROWS;
                let n = TILE_ROWS.min(self.rows - first);
                let mut w = Vec::with_capacity(n * self.cols);
                for r in first..first + n {
                    w.extend_from_slice(&self.row_f32(r));
                }
                let mut out = vec![0f32; tokens * n];
                // SAFETY: `out` is `[tokens, n]` row-major, `x` is `[tokens, cols]` row-major
                // and `w` is `[n, cols]` row-major, read as its transpose `[cols, n]`; every
                // stride and size below matches those buffers, which outlive the call.
                unsafe {
                    gemm::gemm(
                        tokens,
                        n,
                        self.cols,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        x.as_ptr(),
                        1,
                        self.cols as isize,
                        w.as_ptr(),
                        self.cols as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                out
            })
            .collect();
        let mut y = vec![0f32; tokens * self.rows];
        for (tile, out) in tiles.iter().enumerate() {
            let first = tile * TILE_ROWS;
            let n = out.len() / tokens;
            for t in 0..tokens {
                y[t * self.rows + first..t * self.rows + first + n].copy_from_slice(&out[t * n..(t + 1) * n]);
            }
        }
        y
    }

    /// Row `r` as f32 (embedding lookups).
    pub fn row_f32(&self, r: usize) -> Vec<f32> {
        let rb = self.row_bytes();
        let mut out = Vec::with_capacity(self.cols);
        for block in self.data[r * rb..(r + 1) * rb].chunks_exact(self.ty.block_bytes()) {
            out.extend_from_slice(&dequantize_block(self.ty, block));
        }
        out
    }
}

type DotFn = fn(&[u8], &[f32], &[f32]) -> f32;

fn kernel(ty: QuantType) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return match ty {
                QuantType::Q8_0 => avx2::dot_q8_0,
                QuantType::Q4_0 => avx2::dot_q4_0,
                QuantType::Q4_1 => avx2::dot_q4_1,
            };
        }
    }
    match ty {
        QuantType::Q8_0 => |row, x, _| scalar_dot(QuantType::Q8_0, row, x),
        QuantType::Q4_0 => |row, x, _| scalar_dot(QuantType::Q4_0, row, x),
        QuantType::Q4_1 => |row, x, _| scalar_dot(QuantType::Q4_1, row, x),
    }
}

fn half_at(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

/// The 32 values of one block.
fn dequantize_block(ty: QuantType, block: &[u8]) -> [f32; BLOCK] {
    let mut v = [0f32; BLOCK];
    let d = half_at(block, 0);
    match ty {
        QuantType::Q8_0 => {
            for (i, q) in block[2..34].iter().enumerate() {
                v[i] = d * f32::from(*q as i8);
            }
        }
        QuantType::Q4_0 | QuantType::Q4_1 => {
            let (qs, m) = if ty == QuantType::Q4_1 { (&block[4..20], half_at(block, 2)) } else { (&block[2..18], 0.0) };
            let offset = if ty == QuantType::Q4_0 { 8 } else { 0 };
            for (i, q) in qs.iter().enumerate() {
                v[i] = d * f32::from((q & 0x0F) as i8 - offset) + m;
                v[i + 16] = d * f32::from((q >> 4) as i8 - offset) + m;
            }
        }
    }
    v
}

fn scalar_dot(ty: QuantType, row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(ty.block_bytes())
        .zip(x.chunks_exact(BLOCK))
        .map(|(block, xb)| dequantize_block(ty, block).iter().zip(xb).map(|(w, x)| w * x).sum::<f32>())
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2+FMA+F16C kernels: a block's 32 weights widened to four vectors of 8 f32 and fused
    //! into a per-block sum, scaled by the block's `d` into the running total.

    use std::arch::x86_64::*;

    use super::BLOCK;

    /// The f16 at `at` as f32, by the F16C instruction (the `half` crate's conversion checks
    /// the CPU's features on every call, which costs more than the block's arithmetic).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn half_at(block: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([block[at], block[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// Horizontal sum of 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Σ q·x over 32 nibbles (`lo`: elements 0–15, `hi`: 16–31, each widened from bytes).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn nibble_dot(lo: __m128i, hi: __m128i, x: &[f32]) -> __m256 {
        // SAFETY: `x` holds one block (32 floats): the four unaligned loads stay inside it.
        unsafe {
            let p = x.as_ptr();
            let q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
            let q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
            let q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
            let q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
            // Two short chains rather than one of four: the latency of dependent FMAs, not
            // arithmetic, bounds this loop.
            let a = _mm256_fmadd_ps(q1, _mm256_loadu_ps(p.add(8)), _mm256_mul_ps(q0, _mm256_loadu_ps(p)));
            let b = _mm256_fmadd_ps(q3, _mm256_loadu_ps(p.add(24)), _mm256_mul_ps(q2, _mm256_loadu_ps(p.add(16))));
            _mm256_add_ps(a, b)
        }
    }

    /// Low and high nibbles of 16 bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn nibbles(bytes: &[u8]) -> (__m128i, __m128i) {
        debug_assert!(bytes.len() >= 16);
        // SAFETY: 16 bytes are read from a slice that holds at least 16.
        let qs = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
        let mask = _mm_set1_epi8(0x0F);
        (_mm_and_si128(qs, mask), _mm_and_si128(_mm_srli_epi16(qs, 4), mask))
    }

    fn check(row: &[u8], x: &[f32], block_bytes: usize) {
        assert_eq!(row.len() / block_bytes * BLOCK, x.len(), "a quantized row and its activations differ in length");
    }

    pub fn dot_q4_1(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        check(row, x, 20);
        // SAFETY: the CPU has AVX2, FMA and F16C (checked by `kernel` before choosing this).
        unsafe { q4_1(row, x, sums) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4_1(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        // Alternate blocks between two accumulators so consecutive blocks do not wait on each
        // other.
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut mins = 0f32;
        for (i, ((block, xb), sum)) in row.chunks_exact(20).zip(x.chunks_exact(BLOCK)).zip(sums).enumerate() {
            let (lo, hi) = nibbles(&block[4..20]);
            acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(half_at(block, 0)), nibble_dot(lo, hi, xb), acc[i & 1]);
            mins += half_at(block, 2) * sum;
        }
        hsum(_mm256_add_ps(acc[0], acc[1])) + mins
    }

    pub fn dot_q4_0(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        check(row, x, 18);
        // SAFETY: the CPU has AVX2, FMA and F16C (checked by `kernel` before choosing this).
        unsafe { q4_0(row, x, sums) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q4_0(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        // d·(q − 8)·x = d·q·x − 8·d·Σx.
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut offsets = 0f32;
        for (i, ((block, xb), sum)) in row.chunks_exact(18).zip(x.chunks_exact(BLOCK)).zip(sums).enumerate() {
            let d = half_at(block, 0);
            let (lo, hi) = nibbles(&block[2..18]);
            acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(d), nibble_dot(lo, hi, xb), acc[i & 1]);
            offsets += 8.0 * d * sum;
        }
        hsum(_mm256_add_ps(acc[0], acc[1])) - offsets
    }

    pub fn dot_q8_0(row: &[u8], x: &[f32], _sums: &[f32]) -> f32 {
        check(row, x, 34);
        // SAFETY: the CPU has AVX2, FMA and F16C (checked by `kernel` before choosing this).
        unsafe { q8_0(row, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn q8_0(row: &[u8], x: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 2];
        for (i, (block, xb)) in row.chunks_exact(34).zip(x.chunks_exact(BLOCK)).enumerate() {
            // SAFETY: a block holds 32 bytes of values after its 2-byte scale, and `xb` 32
            // floats: every load below stays inside them.
            let s = unsafe {
                let q = block.as_ptr().add(2);
                let p = xb.as_ptr();
                let w = |k: usize| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(q.add(8 * k).cast())));
                let a = _mm256_fmadd_ps(w(1), _mm256_loadu_ps(p.add(8)), _mm256_mul_ps(w(0), _mm256_loadu_ps(p)));
                let b =
                    _mm256_fmadd_ps(w(3), _mm256_loadu_ps(p.add(24)), _mm256_mul_ps(w(2), _mm256_loadu_ps(p.add(16))));
                _mm256_add_ps(a, b)
            };
            acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(half_at(block, 0)), s, acc[i & 1]);
        }
        hsum(_mm256_add_ps(acc[0], acc[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random matrix in `ty`'s block format, and its values as f32.
    fn random_matrix(ty: QuantType, rows: usize, cols: usize, seed: u64) -> (QuantMatrix, Vec<f32>) {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut data = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            let d = f16::from_f32((next() % 1000) as f32 / 20000.0 + 0.001);
            data.extend_from_slice(&d.to_bits().to_le_bytes());
            if ty == QuantType::Q4_1 {
                let m = f16::from_f32((next() % 1000) as f32 / 10000.0 - 0.05);
                data.extend_from_slice(&m.to_bits().to_le_bytes());
            }
            let payload = if ty == QuantType::Q8_0 { 32 } else { 16 };
            for _ in 0..payload {
                data.push(next() as u8);
            }
        }
        let m = QuantMatrix::new(ty, rows, cols, data).unwrap();
        let dense = (0..rows).flat_map(|r| m.row_f32(r)).collect();
        (m, dense)
    }

    #[test]
    fn every_format_multiplies_like_its_dequantized_matrix() {
        for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1] {
            // 1 and 3 tokens take the per-token kernels, 11 the tiled GEMM (two tiles, one partial).
            for tokens in [1, 3, 11] {
                let (rows, cols) = (TILE_ROWS + 37, 96);
                let (m, dense) = random_matrix(ty, rows, cols, 7);
                let x: Vec<f32> = (0..tokens * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
                let y = m.matmul(&x, tokens);
                for t in 0..tokens {
                    for r in 0..rows {
                        let want: f32 = (0..cols).map(|c| dense[r * cols + c] * x[t * cols + c]).sum();
                        let got = y[t * rows + r];
                        assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{ty:?} [{t},{r}]: {got} vs {want}");
                        let scalar = scalar_dot(
                            ty,
                            &m.data[r * m.row_bytes()..(r + 1) * m.row_bytes()],
                            &x[t * cols..(t + 1) * cols],
                        );
                        assert!(
                            (scalar - want).abs() <= 1e-4 * want.abs().max(1.0),
                            "{ty:?} scalar: {scalar} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn values_decode_as_gguf_defines_them() {
        // Q4_1: d = 0.5, m = -1, first byte 0x21 → element 0 is 1 (0.5·1 − 1 + …), element 16 is 2.
        let mut block = Vec::new();
        block.extend_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        block.extend_from_slice(&f16::from_f32(-1.0).to_bits().to_le_bytes());
        block.push(0x21);
        block.extend_from_slice(&[0; 15]);
        let v = dequantize_block(QuantType::Q4_1, &block);
        assert_eq!((v[0], v[16], v[1]), (-0.5, 0.0, -1.0));
        // Q4_0 subtracts 8.
        let mut block = f16::from_f32(2.0).to_bits().to_le_bytes().to_vec();
        block.push(0x9F);
        block.extend_from_slice(&[0x88; 15]);
        let v = dequantize_block(QuantType::Q4_0, &block);
        assert_eq!((v[0], v[16], v[1]), (14.0, 2.0, 0.0));
    }

    #[test]
    fn permuted_rows_move_whole() {
        let (m, _) = random_matrix(QuantType::Q8_0, 4, 64, 3);
        let p = m.permute_rows(&[2, 0, 3, 1]);
        assert_eq!(p.row_f32(0), m.row_f32(2));
        assert_eq!(p.row_f32(3), m.row_f32(1));
    }

    #[test]
    fn sizes_are_checked() {
        assert!(QuantMatrix::new(QuantType::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(QuantMatrix::new(QuantType::Q4_1, 2, 30, vec![0; 40]).is_err());
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test -p hearth-kernels --release -- --ignored --nocapture speed`
    #[test]
    #[ignore]
    fn speed_of_a_decode_step_sized_matmul() {
        for ty in [QuantType::Q4_1, QuantType::Q8_0] {
            let (rows, cols) = (1536, 576);
            let data = vec![0x11u8; rows * cols / BLOCK * ty.block_bytes()];
            let m = QuantMatrix::new(ty, rows, cols, data).unwrap();
            let x = vec![0.5f32; cols];
            let start = std::time::Instant::now();
            let n = 2000;
            let mut acc = 0.0;
            for _ in 0..n {
                acc += m.matmul(&x, 1)[0];
            }
            let per = start.elapsed().as_secs_f64() / n as f64;
            eprintln!(
                "{ty:?}: {:.1} µs per 1536×576 GEMV, {:.2} GB/s ({acc})",
                per * 1e6,
                (rows * cols / BLOCK * ty.block_bytes()) as f64 / per / 1e9
            );
        }
    }
}
