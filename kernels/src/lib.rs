//! Matrices kept in GGUF's block-quantized formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the
//! K-quants Q4_K, Q5_K, Q6_K) and multiplied in that form on the CPU. Decode is bound by reading
//! weights, and these blocks are 4–7× smaller than f32 copies.
//!
//! A token's product (decode, and short prompts) quantizes the activations to 8 bits per block
//! ([`activations`]) and runs integer multiply-adds on the weight blocks as they are ([`dot`]):
//! llama.cpp's method, with its rounding. Prompt-sized products dequantize tiles of rows once and
//! multiply them with every token by an f32 GEMM. Rows are split across rayon's threads.
//!
//! A crate of its own so that it is built optimised in every profile (the server's own crate
//! is built at opt-level 1 for tests, where these loops would run several times slower).

// First: its macro serves the modules after it.
#[macro_use]
mod multiversion;
mod activations;
mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod blocks;
mod dot;
mod encoder_attention;
mod int8;
pub mod ops;

use rayon::prelude::*;

use activations::Q8Activations;
use blocks::BLOCK;
pub use blocks::{QuantType, dequantize_block};
pub use int8::{BLOCK as INT8_BLOCK, Int8Error, Int8Matrix, int8_available};

/// From this many tokens on, a product runs as f32 GEMMs on dequantized tiles of rows.
const GEMM_TOKENS: usize = 8;

/// Rows per dequantized tile (64 rows of 1536 values: 384 KiB, within a core's L2).
const TILE_ROWS: usize = 64;

/// Columns per GEMM call of a tile product, the partial sums added up in the output. The
/// `gemm` crate splits the shared dimension by the product's size (512 when both sides are at
/// most 64, else by cache sizes), and where it splits decides how a sum is rounded: calls of at
/// most 512 columns it never splits, so every row comes out the same whatever the number of
/// rows beside it.
const GEMM_DEPTH: usize = 512;

/// Fewest tokens per GEMM call: below 5 rows `gemm` takes small-matrix paths with their own
/// summation order, so fewer are padded with zero rows.
const GEMM_MIN_TOKENS: usize = 8;

/// Rows per parallel task of a token product: enough to amortise rayon's scheduling.
const ROWS_PER_TASK: usize = 16;

/// A row-major output that parallel tasks fill, each at places no other task writes (its own
/// rows, for every token): they write through a shared pointer rather than into a
/// `[rows, tokens]` buffer transposed afterwards, which for a vocabulary-sized head costs as much
/// as a layer.
struct Scatter<'a> {
    ptr: *mut f32,
    len: usize,
    /// The buffer stays mutably borrowed while the tasks write.
    _buffer: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: `Scatter` holds the buffer's only borrow for its lifetime, and the tasks' ranges are
// disjoint (each writes only its own rows), so no two threads touch one element.
unsafe impl Sync for Scatter<'_> {}

impl<'a> Scatter<'a> {
    fn new(buffer: &'a mut [f32]) -> Self {
        Self { ptr: buffer.as_mut_ptr(), len: buffer.len(), _buffer: std::marker::PhantomData }
    }

    /// Writes `values` from index `at` on; the caller's task is the only writer of those places.
    fn write(&self, at: usize, values: impl ExactSizeIterator<Item = f32>) {
        assert!(at + values.len() <= self.len, "a write past the output");
        for (i, v) in values.enumerate() {
            // SAFETY: in bounds (asserted above); no other task writes this element (see the
            // `Sync` implementation), and the buffer is alive while tasks run.
            unsafe { self.ptr.add(at + i).write(v) };
        }
    }
}

/// Why a quantized matrix cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("a {ty:?} matrix of {rows}×{cols} needs {expected} bytes, got {got}")]
    Size { ty: QuantType, rows: usize, cols: usize, expected: usize, got: usize },
    #[error("a {ty:?} row of {cols} values is not a whole number of {per_block}-value blocks")]
    Cols { ty: QuantType, cols: usize, per_block: usize },
    #[error("matrices of different formats or widths cannot be stacked")]
    Mismatch,
}

/// A matrix split for a GPU (see [`QuantMatrix::planes`]): 32-value blocks in row-major order,
/// [`PlaneWidth::scales_per_block`] scales and one offset per block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlanes {
    pub width: PlaneWidth,
    pub words: Vec<u32>,
    pub scales: Vec<f32>,
    pub offsets: Vec<f32>,
}

/// How a plane's block holds its 32 integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneWidth {
    /// 32 signed bytes in 8 words.
    Bytes,
    /// 32 nibbles in 4 words: byte `j` holds element `j` (low nibble) and `j + 16` (high).
    Nibbles,
    /// 32 signed bytes in 8 words, each half of 16 with its own scale (Q6_K's sub-blocks).
    SplitBytes,
}

impl PlaneWidth {
    /// Words a block's integers take.
    pub fn words_per_block(self) -> usize {
        match self {
            Self::Bytes | Self::SplitBytes => 8,
            Self::Nibbles => 4,
        }
    }

    /// Scales a block has: one, or one per half for [`Self::SplitBytes`].
    pub fn scales_per_block(self) -> usize {
        if self == Self::SplitBytes { 2 } else { 1 }
    }
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
        let per_block = ty.block_values();
        if !cols.is_multiple_of(per_block) {
            return Err(QuantError::Cols { ty, cols, per_block });
        }
        let expected = rows * cols / per_block * ty.block_bytes();
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
        self.cols / self.ty.block_values() * self.ty.block_bytes()
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

    /// The matrices' rows one after another (`[Σ rows, cols]`): layers that read the same
    /// input (q/k/v, gate/up) run as one product.
    pub fn stack(parts: &[&QuantMatrix]) -> Result<Self, QuantError> {
        let first = parts.first().ok_or(QuantError::Mismatch)?;
        if parts.iter().any(|p| p.ty != first.ty || p.cols != first.cols) {
            return Err(QuantError::Mismatch);
        }
        let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        Ok(Self { ty: first.ty, rows: parts.iter().map(|p| p.rows).sum(), cols: first.cols, data })
    }

    /// `y = x Wᵀ`: `x` is `[tokens, cols]`, the result `[tokens, rows]` (the matrix is in
    /// Hugging Face's `[out, in]` layout).
    pub fn matmul(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), tokens * self.cols);
        if tokens >= GEMM_TOKENS {
            return self.matmul_tiles(x, tokens);
        }
        self.matmul_tokens(x, tokens)
    }

    /// `y = x Wᵀ` for the tokens of a prompt: f32 products on dequantized tiles of rows, each
    /// token's result the same however many tokens the call holds (a prompt's numbers then do
    /// not depend on how it was split into chunks, nor on how much of it came from a cache).
    pub fn matmul_prompt(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), tokens * self.cols);
        self.matmul_tiles(x, tokens)
    }

    /// `y = x Wᵀ` for `tokens` independent tokens, each computed exactly as a lone token's
    /// product is (8-bit activations), however many there are: a batch of decode steps of
    /// different sequences reads every weight block once, and each sequence gets the numbers it
    /// would get running alone.
    pub fn matmul_tokens(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), tokens * self.cols);
        let a = Q8Activations::quantize(x, self.cols);
        // A lone token takes the AVX2 kernel, whose weight decoding costs less per block when
        // nothing shares it; both give the same bits.
        #[cfg(target_arch = "x86_64")]
        if tokens > 1
            && let Some(kernel) = avx512::kernel(self.ty)
        {
            return self.matmul_paired(&avx512::Paired::new(&a, tokens), tokens, kernel);
        }
        self.matmul_q8(&a, tokens, dot::kernel(self.ty))
    }

    /// Token products with an AVX-512 kernel: tasks of whole rows, each for every token, a
    /// group of up to [`avx512::GROUP`] tokens per pass over the rows (read from memory once,
    /// decoded once per group); results go straight to their places in `[tokens, rows]`.
    #[cfg(target_arch = "x86_64")]
    fn matmul_paired(&self, a: &avx512::Paired, tokens: usize, kernel: avx512::PairFn) -> Vec<f32> {
        let rb = self.row_bytes();
        let mut y = vec![0f32; tokens * self.rows];
        let out = Scatter::new(&mut y);
        (0..self.rows.div_ceil(ROWS_PER_TASK)).into_par_iter().for_each(|task| {
            let first = task * ROWS_PER_TASK;
            let n = ROWS_PER_TASK.min(self.rows - first);
            let rows = &self.data[first * rb..(first + n) * rb];
            let mut local = [0f32; ROWS_PER_TASK * avx512::GROUP];
            for group in 0..tokens.div_ceil(avx512::GROUP) {
                let t0 = group * avx512::GROUP;
                let g = avx512::GROUP.min(tokens - t0);
                kernel(rows, a, group, &mut local[..n * g]);
                for t in 0..g {
                    let at = (t0 + t) * self.rows + first;
                    out.write(at, (0..n).map(|i| local[i * g + t]));
                }
            }
        });
        y
    }

    /// Token products on 8-bit activations with `dot`.
    fn matmul_q8(&self, a: &Q8Activations, tokens: usize, dot: dot::DotFn) -> Vec<f32> {
        let rb = self.row_bytes();
        // Several tokens at once, each weight block decoded once for up to four of them.
        let together = if tokens > 1 { dot::tokens_kernel(self.ty) } else { None };
        let acts: Vec<_> = if together.is_some() { (0..tokens).map(|t| a.token(t)).collect() } else { Vec::new() };
        // Tasks of whole rows, each for every token: a task's rows are read from memory once.
        let mut by_row = vec![0f32; tokens * self.rows];
        by_row.par_chunks_mut(ROWS_PER_TASK * tokens).enumerate().for_each(|(task, out)| {
            let first = task * ROWS_PER_TASK;
            let n = out.len() / tokens;
            let rows = &self.data[first * rb..(first + n) * rb];
            if tokens == 1 {
                return dot(rows, a.token(0), out);
            }
            if let Some(kernel) = together {
                let mut local = [0f32; ROWS_PER_TASK * 4];
                for t0 in (0..tokens).step_by(4) {
                    let g = (tokens - t0).min(4);
                    kernel(rows, &acts[t0..t0 + g], &mut local[..n * g]);
                    for i in 0..n {
                        out[i * tokens + t0..i * tokens + t0 + g].copy_from_slice(&local[i * g..(i + 1) * g]);
                    }
                }
                return;
            }
            let mut local = [0f32; ROWS_PER_TASK];
            for t in 0..tokens {
                dot(rows, a.token(t), &mut local[..n]);
                for (i, v) in local[..n].iter().enumerate() {
                    out[i * tokens + t] = *v;
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
        // Too few tokens take `gemm`'s small-matrix paths: pad them with zero rows.
        let m = tokens.max(GEMM_MIN_TOKENS);
        let padded;
        let x = if m > tokens {
            let mut p = vec![0f32; m * self.cols];
            p[..x.len()].copy_from_slice(x);
            padded = p;
            &padded[..]
        } else {
            x
        };
        let tiles: Vec<Vec<f32>> = (0..self.rows.div_ceil(TILE_ROWS))
            .into_par_iter()
            .map(|tile| {
                let first = tile * TILE_ROWS;
                let n = TILE_ROWS.min(self.rows - first);
                // Always a whole tile (zero rows after a short last one): a narrow product
                // would take `gemm`'s small-matrix paths too.
                let mut w = vec![0f32; TILE_ROWS * self.cols];
                for (r, row) in (first..first + n).zip(w.chunks_exact_mut(self.cols)) {
                    row.copy_from_slice(&self.row_f32(r));
                }
                let mut out = vec![0f32; m * TILE_ROWS];
                for k0 in (0..self.cols).step_by(GEMM_DEPTH) {
                    let depth = GEMM_DEPTH.min(self.cols - k0);
                    // SAFETY: `out` is `[m, TILE_ROWS]` row-major, `x` is `[m, cols]` row-major
                    // and `w` is `[TILE_ROWS, cols]` row-major, read as its transpose; both
                    // are read from column `k0` for `depth` columns, within their rows. Every
                    // stride and size matches those buffers, which outlive the call.
                    unsafe {
                        gemm::gemm(
                            m,
                            TILE_ROWS,
                            depth,
                            out.as_mut_ptr(),
                            1,
                            TILE_ROWS as isize,
                            k0 > 0,
                            x[k0..].as_ptr(),
                            1,
                            self.cols as isize,
                            w[k0..].as_ptr(),
                            self.cols as isize,
                            1,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
                out
            })
            .collect();
        let mut y = vec![0f32; tokens * self.rows];
        for (tile, out) in tiles.iter().enumerate() {
            let first = tile * TILE_ROWS;
            let n = TILE_ROWS.min(self.rows - first);
            for t in 0..tokens {
                y[t * self.rows + first..t * self.rows + first + n]
                    .copy_from_slice(&out[t * TILE_ROWS..t * TILE_ROWS + n]);
            }
        }
        y
    }

    /// The matrix as planes a GPU kernel decodes: per 32-value block its integers packed in
    /// little-endian 32-bit words, its scale, and the offset that value `scale · q + offset`
    /// adds — the same numbers as [`blocks::dequantize_block`]'s, so nothing is rounded. Q8_0
    /// and the 5-bit formats (Q5_0, Q5_1, Q5_K, their integers centred as the format centres
    /// them) go as bytes; Q4_0, Q4_1 and Q4_K as nibbles, Q4_0's offset `−8 · scale`; Q6_K as
    /// split bytes (its integers −32…31, a scale per 16-value sub-block, no offset).
    pub fn planes(&self) -> BlockPlanes {
        let (width, raw) = match self.ty {
            QuantType::Q8_0 => (PlaneWidth::Bytes, Some((2, 32))),
            QuantType::Q4_0 => (PlaneWidth::Nibbles, Some((2, 16))),
            QuantType::Q4_1 => (PlaneWidth::Nibbles, Some((4, 16))),
            QuantType::Q4K => (PlaneWidth::Nibbles, None),
            QuantType::Q5_0 | QuantType::Q5_1 | QuantType::Q5K => (PlaneWidth::Bytes, None),
            QuantType::Q6K => (PlaneWidth::SplitBytes, None),
        };
        let blocks = self.rows * self.cols / BLOCK;
        let words_per_block = width.words_per_block();
        let mut planes = BlockPlanes {
            width,
            words: Vec::with_capacity(blocks * words_per_block),
            scales: Vec::with_capacity(blocks * width.scales_per_block()),
            offsets: Vec::with_capacity(blocks),
        };
        let word = |b: [u8; 4]| u32::from_le_bytes(b);
        for block in self.data.chunks_exact(self.ty.block_bytes()) {
            if let Some((header, payload)) = raw {
                // GGUF's own layout is the planes' layout: the bytes go as they are.
                let d = blocks::half_at(block, 0);
                planes.scales.push(d);
                planes.offsets.push(match self.ty {
                    QuantType::Q4_0 => -8.0 * d,
                    QuantType::Q4_1 => blocks::half_at(block, 2),
                    _ => 0.0,
                });
                let body = &block[header..header + payload];
                planes.words.extend(body.chunks_exact(4).map(|w| word([w[0], w[1], w[2], w[3]])));
                continue;
            }
            for j in 0..self.ty.block_values() / BLOCK {
                let sub = blocks::sub_block(self.ty, block, j);
                planes.scales.extend_from_slice(&sub.scale[..width.scales_per_block()]);
                planes.offsets.push(sub.constant);
                let mut bytes = [0u8; BLOCK];
                match width {
                    // Q5 integers are −16…15 or 0…31, Q6_K's −32…31: a signed byte holds them.
                    PlaneWidth::Bytes | PlaneWidth::SplitBytes => {
                        bytes.iter_mut().zip(sub.w).for_each(|(b, w)| *b = w as i8 as u8)
                    }
                    // Q4_K's are 0…15.
                    PlaneWidth::Nibbles => {
                        for (i, b) in bytes.iter_mut().take(BLOCK / 2).enumerate() {
                            *b = (sub.w[i] as u8 & 0x0F) | ((sub.w[i + 16] as u8 & 0x0F) << 4);
                        }
                    }
                }
                let used = &bytes[..words_per_block * 4];
                planes.words.extend(used.chunks_exact(4).map(|w| word([w[0], w[1], w[2], w[3]])));
            }
        }
        planes
    }

    /// Row `r` as f32 (embedding lookups).
    pub fn row_f32(&self, r: usize) -> Vec<f32> {
        let rb = self.row_bytes();
        let mut out = vec![0f32; self.cols];
        let blocks = self.data[r * rb..(r + 1) * rb].chunks_exact(self.ty.block_bytes());
        for (block, o) in blocks.zip(out.chunks_exact_mut(self.ty.block_values())) {
            dequantize_block(self.ty, block, o);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    /// A random matrix in `ty`'s block format, and its values as f32: random bytes, with every
    /// f16 field a small positive scale or a small minimum, and Q8_0's values within −127…127
    /// as GGUF's are.
    fn random_matrix(ty: QuantType, rows: usize, cols: usize, seed: u64) -> (QuantMatrix, Vec<f32>) {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        // Offsets of the f16 scale and of the f16 minimum (or K-quant `dmin`) in a block.
        let (scale_at, min_at) = match ty {
            QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => (0, Some(2)),
            QuantType::Q6K => (208, None),
            _ => (0, None),
        };
        let mut data = Vec::new();
        for _ in 0..rows * cols / ty.block_values() {
            let mut block: Vec<u8> = (0..ty.block_bytes()).map(|_| next() as u8).collect();
            if ty == QuantType::Q8_0 {
                for q in &mut block[2..] {
                    if *q == 0x80 {
                        *q = 0x81;
                    }
                }
            }
            let d = f16::from_f32((next() % 1000) as f32 / 20000.0 + 0.001);
            block[scale_at..scale_at + 2].copy_from_slice(&d.to_bits().to_le_bytes());
            if let Some(at) = min_at {
                let m = f16::from_f32((next() % 1000) as f32 / 10000.0 - 0.05);
                block[at..at + 2].copy_from_slice(&m.to_bits().to_le_bytes());
            }
            data.extend_from_slice(&block);
        }
        let m = QuantMatrix::new(ty, rows, cols, data).unwrap();
        let dense = (0..rows).flat_map(|r| m.row_f32(r)).collect();
        (m, dense)
    }

    fn activations(tokens: usize, cols: usize) -> Vec<f32> {
        (0..tokens * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect()
    }

    const FORMATS: [QuantType; 8] = QuantType::ALL;

    /// `Σ w·x` and `Σ |w·x|`: sums in another order differ by a few f32 steps of the latter
    /// (the terms cancel, so the former is no measure of the rounding).
    fn dot_and_magnitude(w: &[f32], x: &[f32]) -> (f32, f32) {
        let want = w.iter().zip(x).map(|(w, x)| w * x).sum();
        (want, w.iter().zip(x).map(|(w, x)| (w * x).abs()).sum::<f32>().max(1.0))
    }

    /// A row width every format divides: two K-quant super-blocks.
    const COLS: usize = 512;

    /// Token products equal the dequantized matrix times the activations as 8-bit rounding
    /// leaves them, up to the order of f32 additions — with this CPU's kernel, the AVX2 one
    /// (which an AVX-512 CPU does not otherwise run) and the portable one alike; for rows of
    /// an odd number of blocks too, and more tokens than one pass takes.
    #[test]
    fn token_products_multiply_the_dequantized_matrix_with_the_rounded_activations() {
        let rows = ROWS_PER_TASK * 3 + 5;
        for ty in FORMATS {
            let widths: &[usize] = if ty.block_values() == BLOCK { &[COLS, COLS + BLOCK] } else { &[COLS] };
            for &cols in widths {
                let (m, dense) = random_matrix(ty, rows, cols, 7);
                for tokens in [1, 3, 9] {
                    let x = activations(tokens, cols);
                    let a = Q8Activations::quantize(&x, cols);
                    let rounded: Vec<f32> = (0..tokens)
                        .flat_map(|t| {
                            let row = a.token(t);
                            (0..cols).map(move |c| row.d[c / BLOCK] * f32::from(row.q[c]))
                        })
                        .collect();
                    for (name, y) in [
                        ("this CPU's", m.matmul_tokens(&x, tokens)),
                        ("AVX2 or portable", m.matmul_q8(&a, tokens, dot::kernel(ty))),
                        ("portable", m.matmul_q8(&a, tokens, dot::portable(ty))),
                    ] {
                        for t in 0..tokens {
                            for r in 0..rows {
                                let (want, scale) = dot_and_magnitude(
                                    &dense[r * cols..(r + 1) * cols],
                                    &rounded[t * cols..(t + 1) * cols],
                                );
                                let got = y[t * rows + r];
                                assert!(
                                    (got - want).abs() <= 1e-5 * scale,
                                    "{ty:?} {name} {cols} columns [{t},{r}]: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Against exact f32 activations the error stays within the rounding's bound: half a step
    /// per activation times the weights' magnitudes.
    #[test]
    fn rounding_the_activations_costs_at_most_half_a_step_per_value() {
        let (rows, cols) = (8, COLS);
        for ty in FORMATS {
            let (m, dense) = random_matrix(ty, rows, cols, 11);
            let x = activations(1, cols);
            let a = Q8Activations::quantize(&x, cols);
            let y = m.matmul(&x, 1);
            for r in 0..rows {
                let exact: f32 = (0..cols).map(|c| dense[r * cols + c] * x[c]).sum();
                let bound: f32 = (0..cols).map(|c| dense[r * cols + c].abs() * a.token(0).d[c / BLOCK] / 2.0).sum();
                assert!((y[r] - exact).abs() <= bound + 1e-4, "{ty:?} row {r}: {} vs {exact} (bound {bound})", y[r]);
            }
        }
    }

    #[test]
    fn prompt_products_multiply_like_the_dequantized_matrix() {
        // Two tiles, one partial.
        let (rows, cols, tokens) = (TILE_ROWS + 37, COLS, GEMM_TOKENS + 3);
        for ty in FORMATS {
            let (m, dense) = random_matrix(ty, rows, cols, 5);
            let x = activations(tokens, cols);
            let y = m.matmul(&x, tokens);
            for t in 0..tokens {
                for r in 0..rows {
                    let (want, scale) =
                        dot_and_magnitude(&dense[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols]);
                    let got = y[t * rows + r];
                    assert!((got - want).abs() <= 1e-5 * scale, "{ty:?} [{t},{r}]: {got} vs {want}");
                }
            }
        }
    }

    /// A prompt token's product is the same in a chunk of any size and at any place in it:
    /// what lets a cached prefix, chunked prefill and batching leave a request's numbers alone.
    #[test]
    fn prompt_products_do_not_depend_on_the_other_tokens() {
        // Depths gemm would split differently by the number of rows (576 into 288s beyond 64
        // rows, 512 + 64 up to them), over several GEMM calls; a short last tile.
        let rows = TILE_ROWS + 37;
        for (ty, cols) in
            [(QuantType::Q4_1, 576), (QuantType::Q8_0, 576), (QuantType::Q6K, 768), (QuantType::Q4_0, 1600)]
        {
            let (m, _) = random_matrix(ty, rows, cols, 13);
            let x = activations(300, cols);
            let all = m.matmul_prompt(&x, 300);
            for (first, len) in [(0, 1), (3, 2), (7, 7), (11, 30), (100, 64), (5, 65), (13, 200), (0, 299)] {
                let part = m.matmul_prompt(&x[first * cols..(first + len) * cols], len);
                assert!(part == all[first * rows..(first + len) * rows], "{ty:?}: {len} tokens from {first}");
            }
        }
    }

    /// The planes decode to the same values as the blocks (what the GPU kernels rely on).
    #[test]
    fn planes_hold_each_block_as_scale_times_integer_plus_offset() {
        for ty in [
            QuantType::Q8_0,
            QuantType::Q4_0,
            QuantType::Q4_1,
            QuantType::Q5_0,
            QuantType::Q5_1,
            QuantType::Q4K,
            QuantType::Q5K,
            QuantType::Q6K,
        ] {
            let (m, dense) = random_matrix(ty, 3, 512, 9);
            let p = m.planes();
            let per_block = p.width.words_per_block();
            let scales = p.width.scales_per_block();
            assert_eq!(
                (p.words.len(), p.scales.len()),
                (dense.len() / BLOCK * per_block, dense.len() / BLOCK * scales)
            );
            for (i, want) in dense.iter().enumerate() {
                let (b, e) = (i / BLOCK, i % BLOCK);
                let word = |j: usize| p.words[b * per_block + j / 4] >> (8 * (j % 4)) & 0xFF;
                let q = match p.width {
                    PlaneWidth::Bytes | PlaneWidth::SplitBytes => f32::from(word(e) as u8 as i8),
                    PlaneWidth::Nibbles => ((word(e % 16) >> (4 * (e / 16))) & 0x0F) as f32,
                };
                let scale = p.scales[b * scales + e * scales / BLOCK];
                let got = scale * q + p.offsets[b];
                assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "{ty:?}[{i}]: {got} vs {want}");
            }
        }
    }

    #[test]
    fn permuted_rows_move_whole() {
        let (m, _) = random_matrix(QuantType::Q8_0, 4, 64, 3);
        let p = m.permute_rows(&[2, 0, 3, 1]);
        assert_eq!(p.row_f32(0), m.row_f32(2));
        assert_eq!(p.row_f32(3), m.row_f32(1));
    }

    #[test]
    fn stacked_matrices_keep_their_rows_in_order() {
        let (a, _) = random_matrix(QuantType::Q4_1, 3, 64, 1);
        let (b, _) = random_matrix(QuantType::Q4_1, 2, 64, 2);
        let s = QuantMatrix::stack(&[&a, &b]).unwrap();
        assert_eq!((s.rows(), s.cols()), (5, 64));
        assert_eq!(s.row_f32(1), a.row_f32(1));
        assert_eq!(s.row_f32(4), b.row_f32(1));
        let (c, _) = random_matrix(QuantType::Q8_0, 2, 64, 2);
        assert_eq!(QuantMatrix::stack(&[&a, &c]).unwrap_err(), QuantError::Mismatch);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(QuantMatrix::new(QuantType::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(QuantMatrix::new(QuantType::Q4_1, 2, 30, vec![0; 40]).is_err());
    }

    /// The AVX-512 kernels give the AVX2 kernels' bits (on a CPU that runs both), for rows of
    /// an odd number of blocks too: either may serve a token.
    #[test]
    fn avx512_and_avx2_kernels_give_the_same_bits() {
        #[cfg(target_arch = "x86_64")]
        for ty in FORMATS {
            let Some(kernel) = avx512::kernel(ty) else { continue };
            for cols in [COLS, COLS + BLOCK] {
                let rows = ROWS_PER_TASK + 3;
                let (m, _) = random_matrix(ty, rows, cols, 5);
                for tokens in [1usize, 2, 9] {
                    let a = Q8Activations::quantize(&activations(tokens, cols), cols);
                    let wide = m.matmul_paired(&avx512::Paired::new(&a, tokens), tokens, kernel);
                    let narrow = m.matmul_q8(&a, tokens, dot::kernel(ty));
                    assert!(
                        wide.iter().zip(&narrow).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{ty:?}, {cols} columns, {tokens} tokens"
                    );
                }
            }
        }
    }

    /// Tokens multiplied together give exactly what each gives alone, in every format, with
    /// this CPU's kernels and with the AVX2 ones (on a CPU that has them).
    #[test]
    fn tokens_together_equal_tokens_alone_bit_for_bit() {
        for ty in FORMATS {
            let rows = 40;
            let widths: &[usize] = if ty.block_values() == BLOCK { &[COLS, COLS + BLOCK] } else { &[COLS] };
            for &cols in widths {
                let (m, _) = random_matrix(ty, rows, cols, 11);
                for tokens in [2usize, 3, 4, 5, 9, 16, 19] {
                    let x: Vec<f32> = (0..tokens * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
                    let a = Q8Activations::quantize(&x, cols);
                    let together = [m.matmul_tokens(&x, tokens), m.matmul_q8(&a, tokens, dot::kernel(ty))];
                    for t in 0..tokens {
                        let lone = &x[t * cols..(t + 1) * cols];
                        let alone =
                            [m.matmul(lone, 1), m.matmul_q8(&Q8Activations::quantize(lone, cols), 1, dot::kernel(ty))];
                        for (path, (together, alone)) in together.iter().zip(&alone).enumerate() {
                            let row = &together[t * rows..(t + 1) * rows];
                            assert!(
                                row.iter().zip(alone).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{ty:?}, {cols} columns, path {path}, token {t} of {tokens}"
                            );
                        }
                    }
                }
            }
        }
    }
}
