//! The AVX2+FMA+F16C kernels, llama.cpp's method: a block's 32 weights as bytes in one
//! register, multiplied with the 32 activation bytes by `vpmaddubsw` (unsigned × signed pairs
//! summed to i16), widened to i32 pairs by `vpmaddwd`, converted once, and scaled by both
//! blocks' scales into a running f32 vector.

use std::arch::x86_64::*;

use crate::activations::Q8Row;
use crate::blocks::BLOCK;

/// Whether this CPU runs these kernels.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
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
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn two_halves(p: *const u8) -> (f32, f32) {
    // SAFETY: the caller passes a pointer to at least 4 readable bytes.
    let bits = unsafe { p.cast::<i32>().read_unaligned() };
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

/// 32 nibbles (16 bytes at `p`) as 32 bytes: low nibbles first, then high ones, GGUF's order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to at least 16 readable bytes.
    let qs = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), _mm256_set1_epi8(0x0F))
}

/// `rows` holds `out.len()` whole rows as long as the activations.
fn check(rows: &[u8], a: &Q8Row<'_>, block_bytes: usize, out: &[f32]) {
    let blocks = a.d.len();
    assert!(
        rows.len() == out.len() * blocks * block_bytes && a.s.len() == blocks && a.q.len() == blocks * BLOCK,
        "quantized rows and their activations differ in length"
    );
}

pub(crate) fn rows_q4_1(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, 20, out);
    // SAFETY: `kernel` chose this only on a CPU with AVX2, FMA and F16C, and `check` proved
    // each row and the activations hold the same number of whole blocks.
    unsafe { q4::<20, false>(rows, a, out) }
}

pub(crate) fn rows_q4_0(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, 18, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q4::<18, true>(rows, a, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4<const BYTES: usize, const CENTRED: bool>(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    // One block `b` into `acc` and `constants`: `d_w·d_x · Σ n·q` in 8 lanes, with `n` the
    // unsigned nibbles, and `c·s` with `c` the block's constant term (Q4_1: its minimum;
    // Q4_0: `−8·d_w`). A macro, not a function: LLVM declines to inline target-feature helpers
    // here, and a call per block costs more than the block.
    macro_rules! block {
        ($row:ident, $b:expr, $acc:ident, $constants:ident) => {
            // SAFETY: block `$b` (below the block count the caller checked) lies inside `row`
            // and its activations inside `a`: the loads read 4 + 16 bytes of the block (Q4_0:
            // 2 + 16; the two extra bytes of the scale read are the block's own nibbles,
            // ignored) and 32 activation bytes.
            unsafe {
                let p = $row.as_ptr().add($b * BYTES);
                let (d, m) = two_halves(p);
                let (constant, qs) = if CENTRED { (-8.0 * d, p.add(2)) } else { (m, p.add(4)) };
                let q = _mm256_loadu_si256(a.q.as_ptr().add($b * BLOCK).cast());
                let scale = _mm256_set1_ps(d * *a.d.get_unchecked($b));
                $acc = _mm256_fmadd_ps(scale, byte_dot(nibbles(qs), q), $acc);
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

pub(crate) fn rows_q8_0(rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    check(rows, &a, 34, out);
    // SAFETY: as for `rows_q4_1`.
    unsafe { q8_0(rows, a, out) }
}

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
