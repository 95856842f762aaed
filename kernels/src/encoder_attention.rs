//! Bidirectional self-attention of an encoder's padded batch on the CPU, read straight from the
//! projections' rows: no tensors of `[batch, heads, len, dim]` transposed into place, no mask
//! tensor (a sequence's keys stop at its own length), no scalar `exp`. A tensor library's
//! version spent more time moving and masking than multiplying.
//!
//! Per sequence and head, the queries, keys (transposed) and values are copied once into tiles'
//! shapes; the scores and the context are then register tiles of 4 queries × 16 keys (or value
//! columns), every multiply-add along vector lanes, with no horizontal sums.

use rayon::prelude::*;

use crate::ops::exp_in_place;

/// One projection's output for the batch: `[tokens, stride]` rows, the heads' values (head
/// after head, `dim` each) from column `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Projected<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub offset: usize,
}

/// A padded batch's layout.
#[derive(Debug, Clone, Copy)]
pub struct EncoderBatch<'a> {
    /// Each sequence's tokens; its rows are `s · padded ..`, the rows past its length padding.
    pub lens: &'a [usize],
    pub padded: usize,
    pub heads: usize,
    pub dim: usize,
    /// Added to every score: `[heads, padded, padded]` (MPNet's relative positions).
    pub bias: Option<&'a [f32]>,
}

/// Attention for every sequence of the batch into `out` (`[sequences · padded, heads · dim]`):
/// softmax(q·kᵀ/√dim + bias)·v over the sequence's own keys; padding rows get zeros.
///
/// # Panics
/// When a projection or `out` is shorter than the layout says.
pub fn encoder_attention(
    q: Projected<'_>,
    k: Projected<'_>,
    v: Projected<'_>,
    batch: EncoderBatch<'_>,
    out: &mut [f32],
) {
    let width = batch.heads * batch.dim;
    let tokens = batch.lens.len() * batch.padded;
    assert!(out.len() >= tokens * width, "attention output too short");
    for p in [q, k, v] {
        assert!(tokens == 0 || p.data.len() >= (tokens - 1) * p.stride + p.offset + width, "projection too short");
    }
    if let Some(bias) = batch.bias {
        assert!(bias.len() >= batch.heads * batch.padded * batch.padded, "score bias too short");
    }
    out[..tokens * width].par_chunks_mut(batch.padded * width).enumerate().for_each(|(s, rows)| {
        sequence(q, k, v, batch, s, rows);
    });
}

multiversion_fn! {
    fn sequence(q: Projected<'_>, k: Projected<'_>, v: Projected<'_>, batch: EncoderBatch<'_>, s: usize, out: &mut [f32]) => sequence_impl
}

/// A token's values of one head in projection `p`.
#[inline(always)]
fn part<'a>(p: &Projected<'a>, token: usize, head: usize, dim: usize) -> &'a [f32] {
    let at = token * p.stride + p.offset + head * dim;
    &p.data[at..at + dim]
}

/// `COLUMNS` values from `at`, as an array (one bounds check; the compiler then vectorises).
#[inline(always)]
fn tile(values: &[f32], at: usize) -> &[f32; COLUMNS] {
    values[at..at + COLUMNS].try_into().expect("a whole tile")
}

/// `acc[q] += x[q] · row`, lane by lane: a tile's multiply-adds in registers.
#[inline(always)]
fn multiply_add(acc: &mut [[f32; COLUMNS]; QUERIES], x: &[f32; QUERIES], row: &[f32; COLUMNS]) {
    for q in 0..QUERIES {
        for l in 0..COLUMNS {
            acc[q][l] = x[q].mul_add(row[l], acc[q][l]);
        }
    }
}

/// Queries per register tile.
const QUERIES: usize = 4;
/// Keys (for scores) or value columns (for the context) per register tile: two 8-lane vectors.
const COLUMNS: usize = 16;

#[inline(always)]
fn sequence_impl(
    q: Projected<'_>,
    k: Projected<'_>,
    v: Projected<'_>,
    batch: EncoderBatch<'_>,
    s: usize,
    out: &mut [f32],
) {
    let (dim, padded) = (batch.dim, batch.padded);
    let width = batch.heads * dim;
    let n = batch.lens[s].min(padded);
    let first = s * padded;
    out[n * width..].fill(0.0);
    if n == 0 {
        return;
    }
    let scale = 1.0 / (dim as f32).sqrt();
    // Per head, copied into tiles' shapes (padding zero): the scaled queries `[n_q, dim]`, the
    // keys transposed `[dim, n_k]`, the values `[n, dim_v]`; then the scores `[n_q, n_k]`.
    let (n_q, n_k, dim_v) = (n.next_multiple_of(QUERIES), n.next_multiple_of(COLUMNS), dim.next_multiple_of(COLUMNS));
    let mut queries = vec![0f32; n_q * dim];
    let mut keys = vec![0f32; dim * n_k];
    let mut values = vec![0f32; n * dim_v];
    let mut scores = vec![0f32; n_q * n_k];
    for head in 0..batch.heads {
        for i in 0..n {
            for (to, &x) in queries[i * dim..(i + 1) * dim].iter_mut().zip(part(&q, first + i, head, dim)) {
                *to = x * scale;
            }
            for (d, &x) in part(&k, first + i, head, dim).iter().enumerate() {
                keys[d * n_k + i] = x;
            }
            values[i * dim_v..i * dim_v + dim].copy_from_slice(part(&v, first + i, head, dim));
        }
        for i0 in (0..n_q).step_by(QUERIES) {
            for j0 in (0..n_k).step_by(COLUMNS) {
                let mut acc = [[0f32; COLUMNS]; QUERIES];
                for d in 0..dim {
                    let key = tile(&keys, d * n_k + j0);
                    let x: [f32; QUERIES] = std::array::from_fn(|qi| queries[(i0 + qi) * dim + d]);
                    multiply_add(&mut acc, &x, key);
                }
                for (qi, acc) in acc.iter().enumerate() {
                    scores[(i0 + qi) * n_k + j0..(i0 + qi) * n_k + j0 + COLUMNS].copy_from_slice(acc);
                }
            }
        }
        for i in 0..n {
            let row = &mut scores[i * n_k..i * n_k + n];
            if let Some(bias) = batch.bias {
                for (x, b) in row.iter_mut().zip(&bias[(head * padded + i) * padded..]) {
                    *x += b;
                }
            }
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            for x in row.iter_mut() {
                *x -= max;
            }
            exp_in_place(row);
            let inverse = 1.0 / row.iter().sum::<f32>();
            for x in row.iter_mut() {
                *x *= inverse;
            }
        }
        for i0 in (0..n_q).step_by(QUERIES) {
            for d0 in (0..dim_v).step_by(COLUMNS) {
                let mut acc = [[0f32; COLUMNS]; QUERIES];
                for j in 0..n {
                    let value = tile(&values, j * dim_v + d0);
                    let p: [f32; QUERIES] = std::array::from_fn(|qi| scores[(i0 + qi) * n_k + j]);
                    multiply_add(&mut acc, &p, value);
                }
                let cols = COLUMNS.min(dim - d0);
                for (qi, acc) in acc.iter().enumerate().take(n.saturating_sub(i0)) {
                    let at = (i0 + qi) * width + head * dim + d0;
                    out[at..at + cols].copy_from_slice(&acc[..cols]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// softmax(q·kᵀ/√dim + bias)·v in f64, one sequence and head at a time.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        qkv: &[f32],
        lens: &[usize],
        padded: usize,
        heads: usize,
        dim: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f64> {
        let width = heads * dim;
        let mut out = vec![0f64; lens.len() * padded * width];
        for (s, &n) in lens.iter().enumerate() {
            for h in 0..heads {
                for i in 0..n {
                    let at = |row: usize, part: usize, d: usize| {
                        qkv[(s * padded + row) * 3 * width + part * width + h * dim + d] as f64
                    };
                    let scores: Vec<f64> = (0..n)
                        .map(|j| {
                            let dot: f64 = (0..dim).map(|d| at(i, 0, d) * at(j, 1, d)).sum();
                            dot / (dim as f64).sqrt() + bias.map_or(0.0, |b| b[(h * padded + i) * padded + j] as f64)
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for d in 0..dim {
                        out[(s * padded + i) * width + h * dim + d] =
                            (0..n).map(|j| e[j] * at(j, 2, d)).sum::<f64>() / total;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_and_zeroes_padding() {
        let (heads, dim, padded) = (3, 8, 11);
        let lens = [11, 4, 1];
        let width = heads * dim;
        let qkv = values(lens.len() * padded * 3 * width, 1);
        for bias in [None, Some(values(heads * padded * padded, 2))] {
            let batch = EncoderBatch { lens: &lens, padded, heads, dim, bias: bias.as_deref() };
            let part = |offset| Projected { data: &qkv, stride: 3 * width, offset };
            let mut out = vec![f32::NAN; lens.len() * padded * width];
            encoder_attention(part(0), part(width), part(2 * width), batch, &mut out);
            let want = reference(&qkv, &lens, padded, heads, dim, bias.as_deref());
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!((*a as f64 - b).abs() < 1e-5, "element {i}: {a} against {b}");
            }
        }
    }
}
