//! Causal grouped-query attention over a paged f16 key/value cache, for a whole batched step at
//! once: every query row of every sequence in one parallel pass, a task per (row, key/value
//! head) that computes all the query heads sharing that head together — each key and value is
//! loaded and converted from f16 once for them all, not once per query head.
//!
//! Each query head's arithmetic is the same whatever the batch, the tasks or the heads beside
//! it (every score a sum over the dimensions in order, every output a sum over the positions in
//! order), so a sequence's numbers do not depend on what else is in its step.

use rayon::prelude::*;

use crate::ops::exp_in_place;

/// The shape of one sequence's attention call.
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

/// One query row of a batched step: its sequence's block table and its own position (it sees
/// positions `0..=position`).
#[derive(Debug, Clone, Copy)]
pub struct QueryRow<'a> {
    pub table: &'a [u32],
    pub position: usize,
}

/// Causal grouped-query attention over a paged cache: `q` and `out` are `[tokens, heads,
/// head_dim]`; the cache holds positions `0..start + tokens`. Query head `h` reads cache head
/// `h / (heads / kv_heads)`. The arithmetic does not depend on where the pages lie, so a
/// sequence gets the same numbers from any block table.
pub fn attention(q: &[f32], kv: PagedKv<'_>, shape: AttentionShape, out: &mut [f32]) {
    let rows: Vec<QueryRow<'_>> =
        (0..shape.tokens).map(|t| QueryRow { table: kv.table, position: shape.start + t }).collect();
    let shape = AttentionShape { tokens: rows.len(), start: 0, ..shape };
    attention_rows(q, &rows, kv, shape, out);
}

/// [`attention`] for rows of many sequences at once: `q` and `out` are `[rows.len(), heads,
/// head_dim]`, row `i` attending over `rows[i]`'s table in `kv`'s pages (`kv.table` unused).
/// `shape`'s `tokens` and `start` are unused.
pub fn attention_rows(q: &[f32], rows: &[QueryRow<'_>], kv: PagedKv<'_>, shape: AttentionShape, out: &mut [f32]) {
    let AttentionShape { heads, kv_heads, head_dim: dim, .. } = shape;
    let page_len = kv.page * dim;
    let pages_in_pool = if kv_heads == 0 || page_len == 0 { 0 } else { kv.keys.len() / (kv_heads * page_len) };
    assert!(
        q.len() == rows.len() * heads * dim
            && out.len() == q.len()
            && kv.values.len() == kv.keys.len()
            && kv.page > 0
            && kv.page.is_multiple_of(KEY_BLOCK)
            && kv_heads > 0
            && dim > 0
            && heads.is_multiple_of(kv_heads)
            && rows.iter().all(|r| {
                r.position < r.table.len() * kv.page && r.table.iter().all(|&b| (b as usize) < pages_in_pool)
            }),
        "attention buffers do not match their shape {shape:?}"
    );
    let group = heads / kv_heads;
    // One task per (row, kv head): the output slices of a head group are disjoint.
    out.par_chunks_mut(group * dim).enumerate().for_each(|(i, o)| {
        let (row, g) = (rows[i / kv_heads], i % kv_heads);
        let q = &q[i * group * dim..(i + 1) * group * dim];
        let pages = Pages { keys: kv.keys, values: kv.values, table: row.table, page: kv.page, kv_heads, head: g, dim };
        // Heads at most four at a time: their accumulators fill the vector registers.
        for (q, o) in q.chunks(HEADS_AT_ONCE * dim).zip(o.chunks_mut(HEADS_AT_ONCE * dim)) {
            attend_heads(q, pages, row.position + 1, o);
        }
    });
}

/// Most query heads one pass over the keys and values serves.
const HEADS_AT_ONCE: usize = 4;

/// One kv head's pages as one sequence sees them.
#[derive(Clone, Copy)]
struct Pages<'a> {
    keys: &'a [u16],
    values: &'a [u16],
    table: &'a [u32],
    page: usize,
    kv_heads: usize,
    head: usize,
    dim: usize,
}

impl Pages<'_> {
    /// Where page `j` of this head starts.
    fn page_at(&self, j: usize) -> usize {
        (self.table[j] as usize * self.kv_heads + self.head) * self.page * self.dim
    }

    /// The `KEY_BLOCK · dim` keys of key block `b`.
    fn key_block(&self, b: usize) -> &[u16] {
        let per_page = self.page / KEY_BLOCK;
        let at = self.page_at(b / per_page) + (b % per_page) * KEY_BLOCK * self.dim;
        &self.keys[at..at + KEY_BLOCK * self.dim]
    }
}

/// The query heads in `q` (1 to [`HEADS_AT_ONCE`]), each over the first `visible` positions,
/// into `out`: the CPU's kernel for the head count.
fn attend_heads(q: &[f32], pages: Pages<'_>, visible: usize, out: &mut [f32]) {
    let n = q.len() / pages.dim;
    #[cfg(target_arch = "x86_64")]
    if *HAS_F16C {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time).
        return unsafe { attend_f16c(n, q, pages, visible, out) };
    }
    match n {
        1 => attend::<SoftHalves, 1, 4, 64>(q, pages, visible, out),
        2 => attend::<SoftHalves, 2, 4, 32>(q, pages, visible, out),
        3 => attend::<SoftHalves, 3, 3, 16>(q, pages, visible, out),
        _ => attend::<SoftHalves, 4, 2, 16>(q, pages, visible, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn attend_f16c(n: usize, q: &[f32], pages: Pages<'_>, visible: usize, out: &mut [f32]) {
    // Key blocks and value dimensions per pass chosen so that the accumulators and the
    // converted values fit AVX2's 16 registers, with enough independent sums in flight.
    match n {
        1 => attend::<F16cHalves, 1, 4, 64>(q, pages, visible, out),
        2 => attend::<F16cHalves, 2, 4, 32>(q, pages, visible, out),
        3 => attend::<F16cHalves, 3, 3, 16>(q, pages, visible, out),
        _ => attend::<F16cHalves, 4, 2, 16>(q, pages, visible, out),
    }
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

/// The conversion in one F16C instruction. Only [`attend_f16c`] uses it, on a CPU that has
/// F16C.
#[cfg(target_arch = "x86_64")]
struct F16cHalves;

#[cfg(target_arch = "x86_64")]
impl Halves for F16cHalves {
    #[inline(always)]
    fn eight(bits: &[u16]) -> [f32; 8] {
        use std::arch::x86_64::{_mm_loadu_si128, _mm256_cvtph_ps};
        let bits = &bits[..8];
        // SAFETY: `bits` holds 8 values (16 readable bytes); this is only ever inlined into
        // `attend_f16c`, which runs only on a CPU with F16C; `__m256` and `[f32; 8]` have the
        // same size and every bit pattern is valid for both.
        unsafe { std::mem::transmute(_mm256_cvtph_ps(_mm_loadu_si128(bits.as_ptr().cast()))) }
    }
}

#[cfg(target_arch = "x86_64")]
static HAS_F16C: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
});

/// `N` query heads sharing one kv head: scores `KB` key blocks at a time, then sums the values
/// `LANES` dimensions at a time, every head's sums in registers. Plain loops, no closures over
/// the arithmetic: a closure is a function of its own, compiled without the caller's CPU
/// features.
#[inline(always)]
fn attend<H: Halves, const N: usize, const KB: usize, const LANES: usize>(
    q: &[f32],
    pages: Pages<'_>,
    visible: usize,
    out: &mut [f32],
) {
    let dim = pages.dim;
    let scale = 1.0 / (dim as f32).sqrt();
    let blocks = visible.div_ceil(KEY_BLOCK);
    let stride = blocks * KEY_BLOCK;
    // Per head its scores, `stride` apart (a block's tail past `visible` is computed on
    // whatever the page holds there and never read).
    let mut scores = vec![0f32; N * stride];
    // `KB` blocks at once, then one at a time at the end: each score's sum runs over the
    // dimensions in order either way.
    let mut b = 0;
    while b + KB <= blocks {
        score_blocks::<H, N, KB>(q, pages, b, scale, stride, &mut scores);
        b += KB;
    }
    while b < blocks {
        score_blocks::<H, N, 1>(q, pages, b, scale, stride, &mut scores);
        b += 1;
    }
    for h in 0..N {
        softmax(&mut scores[h * stride..h * stride + visible]);
    }
    // The weighted sum of the values, `LANES` dimensions at a time in registers (through the
    // output slice, every multiply-add would wait for the previous one's store).
    for d0 in (0..dim).step_by(LANES) {
        let width = LANES.min(dim - d0);
        let whole = width / 8 * 8;
        let mut acc = [[0f32; LANES]; N];
        for j in 0..visible.div_ceil(pages.page) {
            let at = pages.page_at(j) + d0;
            for r in 0..pages.page.min(visible - j * pages.page) {
                let position = j * pages.page + r;
                let v = &pages.values[at + r * dim..at + r * dim + width];
                let mut p = [0f32; N];
                for h in 0..N {
                    p[h] = scores[h * stride + position];
                }
                if width == LANES {
                    // The common case, its loop bound a constant: the sums stay in registers.
                    weigh_values::<H, N, LANES>(&mut acc, v, LANES / 8, &p);
                    continue;
                }
                weigh_values::<H, N, LANES>(&mut acc, v, whole / 8, &p);
                for (i, v) in v.iter().enumerate().skip(whole) {
                    let v = half::f16::from_bits(*v).to_f32_const();
                    for h in 0..N {
                        acc[h][i] = scores[h * stride + position].mul_add(v, acc[h][i]);
                    }
                }
            }
        }
        for h in 0..N {
            out[h * dim + d0..h * dim + d0 + width].copy_from_slice(&acc[h][..width]);
        }
    }
}

/// `acc[h][i] += p[h] · v[i]` for the first `chunks · 8` values of `v`, converted 8 at a time
/// once for all `N` heads.
#[inline(always)]
fn weigh_values<H: Halves, const N: usize, const LANES: usize>(
    acc: &mut [[f32; LANES]; N],
    v: &[u16],
    chunks: usize,
    p: &[f32; N],
) {
    for c in 0..chunks {
        let v = H::eight(&v[c * 8..(c + 1) * 8]);
        for h in 0..N {
            for l in 0..8 {
                acc[h][c * 8 + l] = p[h].mul_add(v[l], acc[h][c * 8 + l]);
            }
        }
    }
}

/// Scores of key blocks `b..b + J` for the `N` heads in `q`, into each head's row of `scores`
/// (`stride` apart).
#[inline(always)]
fn score_blocks<H: Halves, const N: usize, const J: usize>(
    q: &[f32],
    pages: Pages<'_>,
    b: usize,
    scale: f32,
    stride: usize,
    scores: &mut [f32],
) {
    let dim = pages.dim;
    let mut keys: [&[u16]; J] = [&[]; J];
    for (j, k) in keys.iter_mut().enumerate() {
        *k = pages.key_block(b + j);
    }
    let mut acc = [[[0f32; KEY_BLOCK]; J]; N];
    for d in 0..dim {
        let mut k = [[0f32; KEY_BLOCK]; J];
        for j in 0..J {
            k[j] = H::eight(&keys[j][d * KEY_BLOCK..(d + 1) * KEY_BLOCK]);
        }
        for h in 0..N {
            let qd = q[h * dim + d];
            for j in 0..J {
                for l in 0..KEY_BLOCK {
                    acc[h][j][l] = qd.mul_add(k[j][l], acc[h][j][l]);
                }
            }
        }
    }
    for h in 0..N {
        for j in 0..J {
            let s = &mut scores[h * stride + (b + j) * KEY_BLOCK..][..KEY_BLOCK];
            for l in 0..KEY_BLOCK {
                s[l] = acc[h][j][l] * scale;
            }
        }
    }
}

/// Softmax in place: the maximum subtracted, exponentials, each divided by their sum.
#[inline(always)]
fn softmax(scores: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for s in scores.iter() {
        max = max.max(*s);
    }
    for s in scores.iter_mut() {
        *s -= max;
    }
    exp_in_place(scores);
    let mut sum = 0f32;
    for s in scores.iter() {
        sum += s;
    }
    for p in scores.iter_mut() {
        *p /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys and values of `positions` positions of `kv_heads` heads (`[kv_heads, positions,
    /// dim]`, rounded to f16 as the cache holds them), paged into a pool of `pool_pages`
    /// blocks through `table`, the pages the table does not name filled with NaN.
    fn paged(
        kv_heads: usize,
        positions: usize,
        dim: usize,
        page: usize,
        table: &[u32],
        pool_pages: usize,
        seed: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<u16>, Vec<u16>) {
        let f = |i: usize, m: usize| (((i + seed) * m % 23) as f32 - 11.0) / 7.0;
        let half = |x: f32| half::f16::from_f32(x);
        let keys: Vec<f32> = (0..kv_heads * positions * dim).map(|i| half(f(i, 7)).to_f32()).collect();
        let values: Vec<f32> = (0..kv_heads * positions * dim).map(|i| half(f(i, 3)).to_f32()).collect();
        let mut paged_k = vec![half(f32::NAN).to_bits(); pool_pages * kv_heads * page * dim];
        let mut paged_v = paged_k.clone();
        for g in 0..kv_heads {
            for p in 0..positions {
                let at = (table[p / page] as usize * kv_heads + g) * page * dim;
                for d in 0..dim {
                    paged_k[at + key_offset(p % page, d, dim)] = half(keys[(g * positions + p) * dim + d]).to_bits();
                    paged_v[at + (p % page) * dim + d] = half(values[(g * positions + p) * dim + d]).to_bits();
                }
            }
        }
        (keys, values, paged_k, paged_v)
    }

    /// Against a direct softmax(q·kᵀ/√d)·v, with grouped heads, a causal prompt, pages out of
    /// order in the pool and a spare page; for every number of query heads per kv head.
    #[test]
    fn attention_matches_the_definition() {
        let (page, dim, kv_heads, pool_pages, positions) = (8, 8, 2, 4, 16);
        for group in [1, 2, 3, 4, 5, 9] {
            let heads = kv_heads * group;
            let shape = AttentionShape { heads, kv_heads, head_dim: dim, tokens: 3, start: 7 };
            let f = |i: usize, m: usize| ((i * m % 23) as f32 - 11.0) / 7.0;
            let q: Vec<f32> = (0..3 * heads * dim).map(|i| f(i, 5)).collect();
            // Positions 0..8 in pool block 3, 8..16 in block 1.
            let table = [3u32, 1];
            let (keys, values, paged_k, paged_v) = paged(kv_heads, positions, dim, page, &table, pool_pages, 0);
            let mut out = vec![0f32; q.len()];
            attention(&q, PagedKv { keys: &paged_k, values: &paged_v, table: &table, page }, shape, &mut out);
            for t in 0..3 {
                for h in 0..heads {
                    let g = h / group;
                    let qh = &q[(t * heads + h) * dim..(t * heads + h + 1) * dim];
                    let visible = 7 + t + 1;
                    let scores: Vec<f32> = (0..visible)
                        .map(|j| {
                            (0..dim).map(|d| qh[d] * keys[(g * positions + j) * dim + d]).sum::<f32>()
                                / (dim as f32).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f32::MIN, f32::max);
                    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    for d in 0..dim {
                        let want: f32 = (0..visible).map(|j| e[j] / sum * values[(g * positions + j) * dim + d]).sum();
                        let got = out[(t * heads + h) * dim + d];
                        assert!((got - want).abs() < 1e-5, "{group} per group [{t},{h},{d}] {got} vs {want}");
                    }
                }
            }
        }
    }

    /// Rows of several sequences in one call give each sequence exactly what its own call
    /// gives, and a head's numbers do not depend on the heads computed beside it.
    #[test]
    fn a_batch_of_sequences_equals_each_alone_bit_for_bit() {
        let (page, dim, kv_heads, heads, pool_pages) = (16, 24, 2, 6, 12);
        // Sequence A: 40 positions in blocks 5, 0, 9; sequence B: 20 in blocks 2, 7.
        let (table_a, table_b) = ([5u32, 0, 9], [2u32, 7]);
        let (_, _, mut k, mut v) = paged(kv_heads, 48, dim, page, &table_a, pool_pages, 1);
        let (_, _, kb, vb) = paged(kv_heads, 32, dim, page, &table_b, pool_pages, 2);
        let nan = half::f16::from_f32(f32::NAN).to_bits();
        for (i, (x, y)) in kb.iter().zip(&vb).enumerate() {
            if *x != nan {
                k[i] = *x;
                v[i] = *y;
            }
        }
        let f = |i: usize| ((i * 13 % 29) as f32 - 14.0) / 9.0;
        let row_len = heads * dim;
        let q: Vec<f32> = (0..5 * row_len).map(f).collect();
        let shape = |tokens, start| AttentionShape { heads, kv_heads, head_dim: dim, tokens, start };
        let kv = |table| PagedKv { keys: &k, values: &v, table, page };
        // Alone: A's tokens at 37..40 (rows 0..3), B's at 18..20 (rows 3..5).
        let mut alone = vec![0f32; q.len()];
        attention(&q[..3 * row_len], kv(&table_a), shape(3, 37), &mut alone[..3 * row_len]);
        attention(&q[3 * row_len..], kv(&table_b), shape(2, 18), &mut alone[3 * row_len..]);
        let rows: Vec<QueryRow<'_>> =
            [(&table_a[..], 37), (&table_a, 38), (&table_a, 39), (&table_b, 18), (&table_b, 19)]
                .into_iter()
                .map(|(table, position)| QueryRow { table, position })
                .collect();
        let mut together = vec![0f32; q.len()];
        attention_rows(&q, &rows, kv(&[]), shape(0, 0), &mut together);
        assert!(alone.iter().zip(&together).all(|(a, b)| a.to_bits() == b.to_bits()));
        // One head at a time (each its own kv head): the same numbers as three together.
        for h in 0..heads {
            let one: Vec<f32> = (0..5).flat_map(|r| q[r * row_len + h * dim..][..dim].to_vec()).collect();
            let mut out = vec![0f32; one.len()];
            let g = h / (heads / kv_heads);
            // A pool holding only kv head `g`'s pages, as a one-kv-head cache lays them out.
            let single = |pool: &[u16]| -> Vec<u16> {
                (0..pool_pages)
                    .flat_map(|blk| pool[(blk * kv_heads + g) * page * dim..][..page * dim].to_vec())
                    .collect()
            };
            let (k1, v1) = (single(&k), single(&v));
            let single_shape = AttentionShape { heads: 1, kv_heads: 1, head_dim: dim, tokens: 0, start: 0 };
            attention_rows(&one, &rows, PagedKv { keys: &k1, values: &v1, table: &[], page }, single_shape, &mut out);
            for r in 0..5 {
                let want = &together[r * row_len + h * dim..][..dim];
                assert!(
                    want.iter().zip(&out[r * dim..(r + 1) * dim]).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "head {h}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "attention buffers do not match")]
    fn a_position_past_the_table_is_refused() {
        let (k, v) = (vec![0u16; 2 * 8 * 4], vec![0u16; 2 * 8 * 4]);
        let rows = [QueryRow { table: &[0], position: 8 }];
        let shape = AttentionShape { heads: 1, kv_heads: 1, head_dim: 4, tokens: 0, start: 0 };
        let mut out = vec![0f32; 4];
        attention_rows(&[0.0; 4], &rows, PagedKv { keys: &k, values: &v, table: &[], page: 8 }, shape, &mut out);
    }
}
