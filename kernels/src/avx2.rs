//! The AVX2+FMA+F16C kernels, llama.cpp's method: a block's 32 weights as bytes in one
//! register, multiplied with the 32 activation bytes by `vpmaddubsw` (unsigned × signed pairs
//! summed to i16), widened to i32 pairs by `vpmaddwd`, converted once, and scaled by both
//! blocks' scales into a running f32 vector.

use std::arch::x86_64::*;

use crate::activations::Q8Row;
use crate::blocks::{BLOCK, QuantType, scales_mins_k4};

/// Whether this CPU runs these kernels.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Σ of 32 products `w·q` (`w` unsigned bytes ≤ 127, `q` signed) as 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn byte_dot(w: __m256i, q: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w, q), _mm256_set1_epi16(1)))
}

/// The two f16 at `p` (a Q4_1 block's scale and minimum) as f32, by one F16C conversion (the
/// `half` crate checks the CPU's features on every call, which costs more than a block's
/// arithmetic).
///
/// # Safety
/// `p` points to 4 readable bytes, and the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn two_halves(p: *const u8) -> (f32, f32) {
    // SAFETY: the caller passes a pointer to at least 4 readable bytes.
    let bits = unsafe { p.cast::<i32>().read_unaligned() };
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// 32 nibbles (16 bytes at `p`) as 32 bytes: low nibbles first, then high ones, GGUF's order.
///
/// # Safety
/// `p` points to 16 readable bytes, and the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to at least 16 readable bytes.
    let qs = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), _mm256_set1_epi8(0x0F))
}

/// `rows` holds `out.len()` whole rows of `ty` as long as the activations.
fn check(rows: &[u8], a: &Q8Row<'_>, ty: QuantType, out: &[f32]) {
    let blocks = a.d.len();
    let per_block = ty.block_values() / BLOCK;
    assert!(
        blocks.is_multiple_of(per_block)
            && rows.len() == out.len() * blocks / per_block * ty.block_bytes()
            && a.s.len() == blocks
            && a.q.len() == blocks * BLOCK,
        "quantized rows and their activations differ in length"
    );
}

/// 32 bytes that are 0x10 where bit `i` of the 32 bits at `p` is set (a Q5 block's fifth
/// bits, element `i`'s in byte `i`), else 0: llama.cpp's `bytes_from_bits_32`.
///
/// # Safety
/// `p` points to 4 readable bytes, and the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to at least 4 readable bytes.
    let bits = unsafe { p.cast::<i32>().read_unaligned() };
    // Byte i gets source byte i / 8, then all bits but bit i % 8 are set: 0xFF iff that bit is.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0),
    );
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

pub(crate) fn rows_q4_1(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, QuantType::Q4_1, out);
    // SAFETY: `kernel` chose this only on a CPU with AVX2, FMA and F16C, and `check` proved
    // each row and the activations hold the same number of whole blocks.
    unsafe { q4_q5::<20, false, false>(rows, a, out) }
}

pub(crate) fn rows_q4_0(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, QuantType::Q4_0, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q4_q5::<18, true, false>(rows, a, out) }
}

pub(crate) fn rows_q5_1(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, QuantType::Q5_1, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q4_q5::<24, false, true>(rows, a, out) }
}

pub(crate) fn rows_q5_0(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, QuantType::Q5_0, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q4_q5::<22, true, true>(rows, a, out) }
}

/// Q4_0, Q4_1, Q5_0 and Q5_1: the same block shape (scale, optional minimum, optional 32
/// fifth bits, 16 bytes of nibbles).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and `rows` holds `out.len()` whole rows of the format as long
/// as the activations (what `check` asserts).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_q5<const BYTES: usize, const CENTRED: bool, const FIVE: bool>(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    // Where the nibbles start, and the step the centred formats subtract.
    let header = 2 + if CENTRED { 0 } else { 2 } + if FIVE { 4 } else { 0 };
    let centre = if FIVE { -16.0 } else { -8.0 };
    // One block `b` into `acc` and `constants`: `d_w·d_x · Σ n·q` in 8 lanes, with `n` the
    // unsigned stored values, and `c·s` with `c` the block's constant term (the minimum; for
    // the centred formats `−8·d_w` or `−16·d_w`). A macro, not a function: LLVM declines to
    // inline target-feature helpers here, and a call per block costs more than the block.
    macro_rules! block {
        ($row:ident, $b:expr, $acc:ident, $constants:ident) => {
            // SAFETY: block `$b` (below the block count the caller checked) lies inside `row`
            // and its activations inside `a`: the loads read the block's first 4 bytes (for
            // Q4_0 the two after its scale are its own nibbles, ignored), its 4 fifth-bit
            // bytes, its 16 bytes of nibbles, and 32 activation bytes.
            unsafe {
                let p = $row.as_ptr().add($b * BYTES);
                let (d, m) = two_halves(p);
                let constant = if CENTRED { centre * d } else { m };
                let mut w = nibbles(p.add(header));
                if FIVE {
                    w = _mm256_or_si256(w, fifth_bits(p.add(header - 4)));
                }
                let q = _mm256_loadu_si256(a.q.as_ptr().add($b * BLOCK).cast());
                let scale = _mm256_set1_ps(d * *a.d.get_unchecked($b));
                $acc = _mm256_fmadd_ps(scale, byte_dot(w, q), $acc);
                $constants += constant * *a.s.get_unchecked($b);
            }
        };
    }
    let n = a.d.len();
    for (r, o) in out.iter_mut().enumerate() {
        let row = &rows[r * n * BYTES..(r + 1) * n * BYTES];
        // Two blocks per iteration into two accumulators (vector and scalar), so consecutive
        // blocks do not wait on each other's FMA latency.
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut c0, mut c1) = (0f32, 0f32);
        let mut b = 0;
        while b + 1 < n {
            block!(row, b, acc0, c0);
            block!(row, b + 1, acc1, c1);
            b += 2;
        }
        if b < n {
            block!(row, b, acc0, c0);
        }
        *o = hsum(_mm256_add_ps(acc0, acc1)) + c0 + c1;
    }
}

/// `out[r · G + t]` = row `r` · token `t`'s activations, for G = `acts.len()` (1 to 4) tokens
/// at once (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): each weight block is decoded once for all of them,
/// and each token's arithmetic is [`q4_q5`]'s or [`q8_0`]'s in the same order, so its result is
/// bit-identical to a lone token's. `None` for the K-quants.
pub(crate) fn rows_tokens(ty: QuantType) -> Option<crate::dot::TokensFn> {
    macro_rules! family {
        ($bytes:literal, $centred:literal, $five:literal) => {
            |rows: &[u8], acts: &[Q8Row<'_>], out: &mut [f32]| {
                let g = acts.len();
                assert!((1..=4).contains(&g) && out.len() % g == 0, "1 to 4 tokens, whole rows of outputs");
                for a in acts {
                    check(rows, a, ty_of($bytes, $centred), &out[..out.len() / g]);
                }
                // SAFETY: `kernel` chose these only on a CPU with AVX2, FMA and F16C, and
                // `check` proved each row and every token's activations hold the same number
                // of whole blocks.
                unsafe {
                    match g {
                        1 => q4_q5_tokens::<$bytes, $centred, $five, 1>(rows, acts, out),
                        2 => q4_q5_tokens::<$bytes, $centred, $five, 2>(rows, acts, out),
                        3 => q4_q5_tokens::<$bytes, $centred, $five, 3>(rows, acts, out),
                        _ => q4_q5_tokens::<$bytes, $centred, $five, 4>(rows, acts, out),
                    }
                }
            }
        };
    }
    if !available() {
        return None;
    }
    Some(match ty {
        QuantType::Q4_1 => family!(20, false, false),
        QuantType::Q4_0 => family!(18, true, false),
        QuantType::Q5_1 => family!(24, false, true),
        QuantType::Q5_0 => family!(22, true, true),
        QuantType::Q8_0 => |rows: &[u8], acts: &[Q8Row<'_>], out: &mut [f32]| {
            let g = acts.len();
            assert!((1..=4).contains(&g) && out.len().is_multiple_of(g), "1 to 4 tokens, whole rows of outputs");
            for a in acts {
                check(rows, a, QuantType::Q8_0, &out[..out.len() / g]);
            }
            // SAFETY: as for the Q4/Q5 family above.
            unsafe {
                match g {
                    1 => q8_0_tokens::<1>(rows, acts, out),
                    2 => q8_0_tokens::<2>(rows, acts, out),
                    3 => q8_0_tokens::<3>(rows, acts, out),
                    _ => q8_0_tokens::<4>(rows, acts, out),
                }
            }
        },
        _ => return None,
    })
}

/// [`q8_0`] for `G` tokens, each block's scale and weights loaded once; each token's
/// arithmetic is `q8_0`'s in the same order.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `acts` holds `G` tokens and `rows` holds `out.len() / G` whole
/// Q8_0 rows as long as each token's activations (what `check` asserts).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_tokens<const G: usize>(rows: &[u8], acts: &[Q8Row<'_>], out: &mut [f32]) {
    let n = acts[0].d.len();
    for r in 0..out.len() / G {
        let row = &rows[r * n * 34..(r + 1) * n * 34];
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for b in 0..n {
            // SAFETY: block `b` (34 bytes, below the block count the caller checked) lies
            // inside `row` and its 32 activation bytes inside every token's `a`; the loads are
            // `q8_0`'s.
            unsafe {
                let p = row.as_ptr().add(b * 34);
                let (d, _) = two_halves(p);
                let w = _mm256_loadu_si256(p.add(2).cast());
                let w_abs = _mm256_sign_epi8(w, w);
                let parity = b % 2;
                for t in 0..G {
                    let a = &acts[t];
                    let q = _mm256_loadu_si256(a.q.as_ptr().add(b * BLOCK).cast());
                    let dot = byte_dot(w_abs, _mm256_sign_epi8(q, w));
                    acc[t][parity] = _mm256_fmadd_ps(_mm256_set1_ps(d * *a.d.get_unchecked(b)), dot, acc[t][parity]);
                }
            }
        }
        for t in 0..G {
            out[r * G + t] = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
        }
    }
}

/// The format of a Q4/Q5 block of `bytes` bytes.
fn ty_of(bytes: usize, centred: bool) -> QuantType {
    match (bytes, centred) {
        (20, _) => QuantType::Q4_1,
        (18, _) => QuantType::Q4_0,
        (24, _) => QuantType::Q5_1,
        _ => QuantType::Q5_0,
    }
}

/// [`q4_q5`] for `G` tokens: the same per-token sequence of operations (two vector and two
/// scalar accumulators by block parity, summed the same way), with each block's scale, constant
/// and weight bytes decoded once.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `acts` holds `G` tokens and `rows` holds `out.len() / G` whole
/// rows of the format as long as each token's activations (what `check` asserts).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_q5_tokens<const BYTES: usize, const CENTRED: bool, const FIVE: bool, const G: usize>(
    rows: &[u8],
    acts: &[Q8Row<'_>],
    out: &mut [f32],
) {
    let header = 2 + if CENTRED { 0 } else { 2 } + if FIVE { 4 } else { 0 };
    let centre = if FIVE { -16.0 } else { -8.0 };
    let n = acts[0].d.len();
    for r in 0..out.len() / G {
        let row = &rows[r * n * BYTES..(r + 1) * n * BYTES];
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        let mut constants = [[0f32; 2]; G];
        for b in 0..n {
            // SAFETY: block `b` (below the block count the caller checked) lies inside `row`
            // and its activations inside every token's `a`: the same loads as `q4_q5`'s.
            unsafe {
                let p = row.as_ptr().add(b * BYTES);
                let (d, m) = two_halves(p);
                let constant = if CENTRED { centre * d } else { m };
                let mut w = nibbles(p.add(header));
                if FIVE {
                    w = _mm256_or_si256(w, fifth_bits(p.add(header - 4)));
                }
                let parity = b % 2;
                for t in 0..G {
                    let a = &acts[t];
                    let q = _mm256_loadu_si256(a.q.as_ptr().add(b * BLOCK).cast());
                    let scale = _mm256_set1_ps(d * *a.d.get_unchecked(b));
                    acc[t][parity] = _mm256_fmadd_ps(scale, byte_dot(w, q), acc[t][parity]);
                    constants[t][parity] += constant * *a.s.get_unchecked(b);
                }
            }
        }
        for t in 0..G {
            out[r * G + t] = hsum(_mm256_add_ps(acc[t][0], acc[t][1])) + constants[t][0] + constants[t][1];
        }
    }
}

pub(crate) fn rows_q8_0(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, QuantType::Q8_0, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q8_0(rows, a, out) }
}

/// # Safety
/// The CPU has AVX2, FMA and F16C, and `rows` holds `out.len()` whole Q8_0 rows as long as the
/// activations (what `check` asserts).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    // One block `b`'s `d_w·d_x · Σ w·q` into `acc` (a macro for the reason `q4` gives).
    macro_rules! block {
        ($row:ident, $b:expr, $acc:ident) => {
            // SAFETY: block `$b` (34 bytes, below the block count the caller checked) lies
            // inside `row` and its 32 activation bytes inside `a`. The scale read takes 4
            // bytes: its own 2 and the first two values, ignored.
            unsafe {
                let p = $row.as_ptr().add($b * 34);
                let (d, _) = two_halves(p);
                let w = _mm256_loadu_si256(p.add(2).cast());
                let q = _mm256_loadu_si256(a.q.as_ptr().add($b * BLOCK).cast());
                // Signed × signed through the unsigned × signed instruction: |w| times q with
                // w's sign moved onto q (|−128| reads as the unsigned 128, so all are exact).
                let dot = byte_dot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
                $acc = _mm256_fmadd_ps(_mm256_set1_ps(d * *a.d.get_unchecked($b)), dot, $acc);
            }
        };
    }
    let n = a.d.len();
    for (r, o) in out.iter_mut().enumerate() {
        let row = &rows[r * n * 34..(r + 1) * n * 34];
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut b = 0;
        while b + 1 < n {
            block!(row, b, acc0);
            block!(row, b + 1, acc1);
            b += 2;
        }
        if b < n {
            block!(row, b, acc0);
        }
        *o = hsum(_mm256_add_ps(acc0, acc1));
    }
}

/// The f16 at `p` as f32 (Q6_K's scale, the last two bytes of its block: reading four would
/// run past the matrix at its last block).
///
/// # Safety
/// `p` points to 2 readable bytes, and the CPU has AVX2, FMA and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_half(p: *const u8) -> f32 {
    // SAFETY: the caller passes a pointer to at least 2 readable bytes.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

pub(crate) fn rows_q4_k(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, QuantType::Q4K, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q4_k_q5_k::<144, false>(rows, a, out) }
}

pub(crate) fn rows_q5_k(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, QuantType::Q5K, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q4_k_q5_k::<176, true>(rows, a, out) }
}

/// Q4_K and Q5_K: per 256-value super-block, 32 bytes of nibbles hold two sub-blocks (low
/// nibbles, then high), each against its own 32 activation bytes with its own 6-bit scale;
/// the minimums fold into the activations' block sums.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and `rows` holds `out.len()` whole rows of the format as long
/// as the activations (what `check` asserts).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_q5_k<const BYTES: usize, const FIVE: bool>(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    let qs_at = if FIVE { 48 } else { 16 };
    let supers = a.d.len() / 8;
    let low = _mm256_set1_epi8(0x0F);
    for (r, o) in out.iter_mut().enumerate() {
        let row = &rows[r * supers * BYTES..(r + 1) * supers * BYTES];
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut mins = 0f32;
        for (s, block) in row.chunks_exact(BYTES).enumerate() {
            let p = block.as_ptr();
            // SAFETY: `block` has BYTES bytes, of which the loads read its 4 bytes of scales,
            // 32 of fifth bits (Q5_K) and 4 × 32 of nibbles; sub-block `j` of super-block `s`
            // has activations 8s + j, inside `a` by `check`.
            unsafe {
                let (d, dmin) = two_halves(p);
                let (sc, m) = scales_mins_k4(&block[4..16]);
                let qh = if FIVE { _mm256_loadu_si256(p.add(16).cast()) } else { _mm256_setzero_si256() };
                for c in 0..4 {
                    let raw = _mm256_loadu_si256(p.add(qs_at + c * 32).cast());
                    let mut w0 = _mm256_and_si256(raw, low);
                    let mut w1 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);
                    if FIVE {
                        // Bit 2c of high-bits byte i is element i's fifth bit in sub-block 2c.
                        let fifth = |bit: i32| {
                            let b = _mm256_set1_epi8(bit as i8);
                            let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, b), b);
                            _mm256_and_si256(set, _mm256_set1_epi8(0x10))
                        };
                        w0 = _mm256_or_si256(w0, fifth(1 << (2 * c)));
                        w1 = _mm256_or_si256(w1, fifth(2 << (2 * c)));
                    }
                    let j = 8 * s + 2 * c;
                    let q0 = _mm256_loadu_si256(a.q.as_ptr().add(j * BLOCK).cast());
                    let q1 = _mm256_loadu_si256(a.q.as_ptr().add((j + 1) * BLOCK).cast());
                    let (x0, x1) = (*a.d.get_unchecked(j), *a.d.get_unchecked(j + 1));
                    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * f32::from(sc[2 * c]) * x0), byte_dot(w0, q0), acc0);
                    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * f32::from(sc[2 * c + 1]) * x1), byte_dot(w1, q1), acc1);
                    mins += dmin
                        * (f32::from(m[2 * c]) * *a.s.get_unchecked(j)
                            + f32::from(m[2 * c + 1]) * *a.s.get_unchecked(j + 1));
                }
            }
        }
        *o = hsum(_mm256_add_ps(acc0, acc1)) - mins;
    }
}

pub(crate) fn rows_q6_k(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, QuantType::Q6K, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q6_k(rows, a, out) }
}

/// Q6_K: per half of a super-block, 64 bytes of low nibbles and 32 of 2-bit highs make four
/// sub-blocks of unsigned 6-bit values; `(w − 32)·q` comes from two `vpmaddubsw` (the values,
/// and 32, against the activations), and the two scales of a sub-block (one per 16 values)
/// multiply its halves in `vpmaddwd`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and `rows` holds `out.len()` whole Q6_K rows as long as the
/// activations (what `check` asserts).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    const BYTES: usize = 210;
    let supers = a.d.len() / 8;
    let (low, two_bits, centre) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03), _mm256_set1_epi8(32));
    for (r, o) in out.iter_mut().enumerate() {
        let row = &rows[r * supers * BYTES..(r + 1) * supers * BYTES];
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (s, block) in row.chunks_exact(BYTES).enumerate() {
            let p = block.as_ptr();
            // SAFETY: `block` has 210 bytes: the loads read 2 × 64 of low nibbles, 2 × 32 of
            // high bits, 16 scales and the final 2-byte scale; activations as in `q4_k_q5_k`.
            unsafe {
                let d = one_half(p.add(208));
                for half in 0..2 {
                    let qh = _mm256_loadu_si256(p.add(128 + half * 32).cast());
                    let scales = &block[192 + half * 8..200 + half * 8];
                    for k in 0..4 {
                        let raw = _mm256_loadu_si256(p.add(half * 64 + (k % 2) * 32).cast());
                        let nib = if k < 2 { raw } else { _mm256_srli_epi16(raw, 4) };
                        let high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)), two_bits);
                        let w = _mm256_or_si256(_mm256_and_si256(nib, low), _mm256_slli_epi16(high, 4));
                        let j = 8 * s + 4 * half + k;
                        let q = _mm256_loadu_si256(a.q.as_ptr().add(j * BLOCK).cast());
                        let pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(w, q), _mm256_maddubs_epi16(centre, q));
                        let sc = _mm256_set_m128i(
                            _mm_set1_epi16(i16::from(scales[2 * k + 1] as i8)),
                            _mm_set1_epi16(i16::from(scales[2 * k] as i8)),
                        );
                        let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, sc));
                        let scale = _mm256_set1_ps(d * *a.d.get_unchecked(j));
                        if k % 2 == 0 {
                            acc0 = _mm256_fmadd_ps(scale, dot, acc0);
                        } else {
                            acc1 = _mm256_fmadd_ps(scale, dot, acc1);
                        }
                    }
                }
            }
        }
        *o = hsum(_mm256_add_ps(acc0, acc1));
    }
}
