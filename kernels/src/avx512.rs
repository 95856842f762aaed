//! AVX-512 kernels (F, BW, VL and VNNI) for the 32-value block formats — Q8_0, Q4_0, Q4_1,
//! Q5_0, Q5_1 — on 8-bit activations.
//!
//! Two blocks lie side by side in one 512-bit register, the even block in the low half and the
//! odd one in the high half: the AVX2 kernels' two accumulators (by block parity) in one
//! register, at half the instructions. `vpdpbusd` computes each 4-byte group's integer dot in
//! one instruction where AVX2 needs `vpmaddubsw` + `vpmaddwd` (no partial sum here comes near
//! i16's range, so the integers are the same). Each weight pair is decoded once for up to
//! [`GROUP`] tokens, and each token's arithmetic is the same whatever tokens share its group:
//! a lone decode step and a batch of sequences get bit-identical results. The arithmetic is
//! also the AVX2 kernels', operation for operation (the same products, rounded in the same
//! order), so the two give the same bits and a caller may take either.

use std::arch::x86_64::*;

use crate::activations::Q8Activations;
// The AVX2 kernels' horizontal sum: the same order of additions, so the same bits.
use crate::avx2::hsum;
use crate::blocks::{BLOCK, QuantType};

/// Most tokens per pass over a weight row (eight accumulators, plus the constant terms of all
/// eight in one 8-lane register).
pub(crate) const GROUP: usize = 8;

/// Whether this CPU runs these kernels.
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// `out[r · G + t]` = row `r` of `rows` · token `group · GROUP + t`, for the G tokens of that
/// group.
pub(crate) type PairFn = fn(&[u8], &Paired, usize, &mut [f32]);

/// The kernel for `ty`, where this module has one and the CPU runs it.
pub(crate) fn kernel(ty: QuantType) -> Option<PairFn> {
    if !available() {
        return None;
    }
    Some(match ty {
        QuantType::Q8_0 => q8_0_rows,
        QuantType::Q4_0 => |rows, acts, group, out| q4_q5_rows::<18, true, false>(rows, acts, group, out),
        QuantType::Q4_1 => |rows, acts, group, out| q4_q5_rows::<20, false, false>(rows, acts, group, out),
        QuantType::Q5_0 => |rows, acts, group, out| q4_q5_rows::<22, true, true>(rows, acts, group, out),
        QuantType::Q5_1 => |rows, acts, group, out| q4_q5_rows::<24, false, true>(rows, acts, group, out),
        QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => return None,
    })
}

/// Tokens' 8-bit activations laid out for these kernels: everything a pair of blocks needs
/// per token is one aligned-size load.
pub(crate) struct Paired {
    tokens: usize,
    blocks: usize,
    pairs: usize,
    /// Per token, `pairs · 64` bytes: its values, an odd last block followed by 32 zeros.
    q: Vec<i8>,
    /// Per token and pair, 16 lanes: the even block's scale 8 times, then the odd one's (0
    /// past the last block).
    d: Vec<f32>,
    /// Per group of [`GROUP`] tokens and block, 8 lanes: the block's `d · Σq` of the group's
    /// tokens, lane `t` for token `t` (0 past the group's last token).
    s: Vec<f32>,
}

impl Paired {
    pub(crate) fn new(a: &Q8Activations, tokens: usize) -> Self {
        let blocks = a.token(0).d.len();
        let pairs = blocks.div_ceil(2);
        let groups = tokens.div_ceil(GROUP);
        let mut p = Self {
            tokens,
            blocks,
            pairs,
            q: vec![0; tokens * pairs * 2 * BLOCK],
            d: vec![0.0; tokens * pairs * 16],
            s: vec![0.0; groups * blocks * GROUP],
        };
        for t in 0..tokens {
            let row = a.token(t);
            p.q[t * pairs * 2 * BLOCK..][..row.q.len()].copy_from_slice(row.q);
            for (b, &d) in row.d.iter().enumerate() {
                let at = (t * pairs + b / 2) * 16 + (b % 2) * 8;
                p.d[at..at + 8].fill(d);
            }
            let (group, lane) = (t / GROUP, t % GROUP);
            for (b, &s) in row.s.iter().enumerate() {
                p.s[(group * blocks + b) * GROUP + lane] = s;
            }
        }
        p
    }

    /// Tokens in group `group`.
    fn group_len(&self, group: usize) -> usize {
        (self.tokens - group * GROUP).min(GROUP)
    }
}

/// Checks what the kernels' loads rely on: `rows` is whole rows of `ty` as long as the
/// activations, `out` has a place per row and token of the group.
fn check(rows: &[u8], acts: &Paired, group: usize, ty: QuantType, out: &[f32]) -> usize {
    let g = acts.group_len(group);
    assert!(
        group * GROUP < acts.tokens
            && out.len().is_multiple_of(g)
            && rows.len() == out.len() / g * acts.blocks * ty.block_bytes(),
        "quantized rows, their activations and the outputs differ in length"
    );
    g
}

/// Runs `$kernel::<…, G>` for the group's token count G (a constant, so the per-token loops
/// unroll and the accumulators stay in registers).
macro_rules! by_group_len {
    ($g:expr, $kernel:ident, [$($c:ident),*], ($($arg:expr),*)) => {
        match $g {
            1 => $kernel::<$($c,)* 1>($($arg),*),
            2 => $kernel::<$($c,)* 2>($($arg),*),
            3 => $kernel::<$($c,)* 3>($($arg),*),
            4 => $kernel::<$($c,)* 4>($($arg),*),
            5 => $kernel::<$($c,)* 5>($($arg),*),
            6 => $kernel::<$($c,)* 6>($($arg),*),
            7 => $kernel::<$($c,)* 7>($($arg),*),
            _ => $kernel::<$($c,)* 8>($($arg),*),
        }
    };
}

fn q4_q5_rows<const BYTES: usize, const CENTRED: bool, const FIVE: bool>(
    rows: &[u8],
    acts: &Paired,
    group: usize,
    out: &mut [f32],
) {
    let ty = match (BYTES, FIVE) {
        (18, _) => QuantType::Q4_0,
        (20, _) => QuantType::Q4_1,
        (22, _) => QuantType::Q5_0,
        _ => QuantType::Q5_1,
    };
    let g = check(rows, acts, group, ty, out);
    // SAFETY: `kernel` hands this out only on a CPU with every feature the kernel enables, and
    // `check` proved the lengths its loads rely on.
    unsafe { by_group_len!(g, q4_q5, [BYTES, CENTRED, FIVE], (rows, acts, group, out)) }
}

fn q8_0_rows(rows: &[u8], acts: &Paired, group: usize, out: &mut [f32]) {
    let g = check(rows, acts, group, QuantType::Q8_0, out);
    // SAFETY: as for `q4_q5_rows`.
    unsafe { by_group_len!(g, q8_0, [], (rows, acts, group, out)) }
}

/// The high 256 bits of `v`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn high_half(v: __m512) -> __m256 {
    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
}

/// The f16 pairs at `even` and (where there is one) `odd` as f32: `[even.0, even.1, odd.0,
/// odd.1]` (a block's scale and minimum, or its scale and two bytes it ignores).
///
/// # Safety
/// `even` and a non-null `odd` point to 4 readable bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn halves(even: *const u8, odd: *const u8) -> __m128 {
    // SAFETY: as the caller promises.
    let (e, o) = unsafe {
        let e = even.cast::<i32>().read_unaligned();
        let o = if odd.is_null() { 0 } else { odd.cast::<i32>().read_unaligned() };
        (e, o)
    };
    _mm_cvtph_ps(_mm_set_epi32(0, 0, o, e))
}

/// The weights' scales for a pair: lanes 0–7 lane 0 of `h`, lanes 8–15 its lane 2.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_scales(h: __m128) -> __m512 {
    let spread = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(h))
}

/// `acc + (weight scales · activation scales) · dot`, lane by lane; for a last block without a
/// partner (`alone`) the high half is left as it is, as the AVX2 kernels add nothing to their
/// odd accumulator there — so the two kernels' results are the same bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn accumulate(scales: __m512, d: __m512, dot: __m512, acc: __m512, alone: bool) -> __m512 {
    let scale = _mm512_mul_ps(scales, d);
    if alone { _mm512_mask3_fmadd_ps(scale, dot, acc, 0x00FF) } else { _mm512_fmadd_ps(scale, dot, acc) }
}

/// The token's final sum: its two halves (even and odd blocks), then its constant terms.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn finish(acc: __m512, c_even: f32, c_odd: f32) -> f32 {
    hsum(_mm256_add_ps(_mm512_castps512_ps256(acc), high_half(acc))) + c_even + c_odd
}

/// Q4_0, Q4_1, Q5_0 and Q5_1 (scale, optional minimum, optional 32 fifth bits, 16 bytes of
/// nibbles) for the `G` tokens of `group`. Per pair of blocks and token: one `vpdpbusd`, one
/// conversion, the scales' product and one FMA; the constant terms (`m · d·Σq`, or `−8·d`/
/// `−16·d` for the centred formats) of all G tokens at once in 8 lanes.
///
/// # Safety
/// The CPU has every feature this function enables, `group` is one of `acts`' groups and holds
/// `G` tokens, and `rows` holds `out.len() / G` whole rows of the format as long as the
/// activations (what `check` asserts).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_q5<const BYTES: usize, const CENTRED: bool, const FIVE: bool, const G: usize>(
    rows: &[u8],
    acts: &Paired,
    group: usize,
    out: &mut [f32],
) {
    let header = 2 + if CENTRED { 0 } else { 2 } + if FIVE { 4 } else { 0 };
    let centre = _mm256_set1_ps(if FIVE { -16.0 } else { -8.0 });
    let (n, pairs) = (acts.blocks, acts.pairs);
    let first = group * GROUP;
    let nibble = _mm512_set1_epi8(0x0F);
    let fifth = _mm512_set1_epi8(0x10);
    for r in 0..out.len() / G {
        let row = rows[r * n * BYTES..(r + 1) * n * BYTES].as_ptr();
        let mut acc = [_mm512_setzero_ps(); G];
        let (mut c_even, mut c_odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for p in 0..pairs {
            let b = 2 * p;
            // SAFETY: blocks `b` and (where `b + 1 < n`) `b + 1` lie inside `row` (`check`
            // proved its length); each token's pair `p` lies inside `acts.q` and `acts.d`, and
            // each block's 8 constants inside `acts.s` (sized so by `Paired::new`).
            unsafe {
                let even = row.add(b * BYTES);
                let odd = if b + 1 < n { even.add(BYTES) } else { std::ptr::null() };
                let h = halves(even, odd);
                // 128-bit lanes: even's nibbles (low), even's (high), odd's (low), odd's (high).
                let mut w = _mm512_broadcast_i32x4(_mm_loadu_si128(even.add(header).cast()));
                if !odd.is_null() {
                    w = _mm512_mask_broadcast_i32x4(w, 0xFF00, _mm_loadu_si128(odd.add(header).cast()));
                }
                w = _mm512_and_si512(_mm512_mask_srli_epi16(w, 0xFF00_FF00, w, 4), nibble);
                if FIVE {
                    let bits_even = even.add(header - 4).cast::<u32>().read_unaligned();
                    let bits_odd = if odd.is_null() { 0 } else { odd.add(header - 4).cast::<u32>().read_unaligned() };
                    let set = u64::from(bits_even) | (u64::from(bits_odd) << 32);
                    w = _mm512_mask_add_epi8(w, set, w, fifth);
                }
                let scales = pair_scales(h);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let token = first + t;
                    let q = _mm512_loadu_si512(acts.q.as_ptr().add((token * pairs + p) * 2 * BLOCK).cast());
                    let dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, q));
                    let d = _mm512_loadu_ps(acts.d.as_ptr().add((token * pairs + p) * 16));
                    *acc = accumulate(scales, d, dot, *acc, odd.is_null());
                }
                let (m_even, m_odd) = if CENTRED {
                    (
                        _mm256_mul_ps(centre, _mm256_broadcastss_ps(h)),
                        _mm256_mul_ps(centre, _mm256_permutexvar_ps(_mm256_set1_epi32(2), _mm256_castps128_ps256(h))),
                    )
                } else {
                    (
                        _mm256_permutexvar_ps(_mm256_set1_epi32(1), _mm256_castps128_ps256(h)),
                        _mm256_permutexvar_ps(_mm256_set1_epi32(3), _mm256_castps128_ps256(h)),
                    )
                };
                let s = acts.s.as_ptr().add((group * n + b) * GROUP);
                c_even = _mm256_add_ps(c_even, _mm256_mul_ps(m_even, _mm256_loadu_ps(s)));
                if !odd.is_null() {
                    c_odd = _mm256_add_ps(c_odd, _mm256_mul_ps(m_odd, _mm256_loadu_ps(s.add(GROUP))));
                }
            }
        }
        let (mut ce, mut co) = ([0f32; 8], [0f32; 8]);
        // SAFETY: two 8-lane stores into 8-element arrays.
        unsafe {
            _mm256_storeu_ps(ce.as_mut_ptr(), c_even);
            _mm256_storeu_ps(co.as_mut_ptr(), c_odd);
        }
        for t in 0..G {
            out[r * G + t] = finish(acc[t], ce[t], co[t]);
        }
    }
}

/// Q8_0 (f16 scale, 32 signed bytes) for the `G` tokens of `group`: signed × signed through the
/// unsigned × signed instruction, |w| times q with w's sign moved onto q (|−128| reads as the
/// unsigned 128 and activations stay within ±127, so every product is exact).
///
/// # Safety
/// The CPU has every feature this function enables, `group` is one of `acts`' groups and holds
/// `G` tokens, and `rows` holds `out.len() / G` whole Q8_0 rows as long as the activations (what
/// `check` asserts).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0<const G: usize>(rows: &[u8], acts: &Paired, group: usize, out: &mut [f32]) {
    const BYTES: usize = 34;
    let (n, pairs) = (acts.blocks, acts.pairs);
    let first = group * GROUP;
    for r in 0..out.len() / G {
        let row = rows[r * n * BYTES..(r + 1) * n * BYTES].as_ptr();
        let mut acc = [_mm512_setzero_ps(); G];
        for p in 0..pairs {
            let b = 2 * p;
            // SAFETY: as in `q4_q5`; a block's scale read takes 4 bytes, its own 2 and its
            // first two values (ignored).
            unsafe {
                let even = row.add(b * BYTES);
                let odd = if b + 1 < n { even.add(BYTES) } else { std::ptr::null() };
                let scales = pair_scales(halves(even, odd));
                let low = _mm256_loadu_si256(even.add(2).cast());
                let w = if odd.is_null() {
                    _mm512_zextsi256_si512(low)
                } else {
                    _mm512_inserti64x4(_mm512_castsi256_si512(low), _mm256_loadu_si256(odd.add(2).cast()), 1)
                };
                let negative = _mm512_movepi8_mask(w);
                let magnitude = _mm512_abs_epi8(w);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let token = first + t;
                    let q = _mm512_loadu_si512(acts.q.as_ptr().add((token * pairs + p) * 2 * BLOCK).cast());
                    let q = _mm512_mask_sub_epi8(q, negative, _mm512_setzero_si512(), q);
                    let dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), magnitude, q));
                    let d = _mm512_loadu_ps(acts.d.as_ptr().add((token * pairs + p) * 16));
                    *acc = accumulate(scales, d, dot, *acc, odd.is_null());
                }
            }
        }
        for t in 0..G {
            let acc = acc[t];
            out[r * G + t] = hsum(_mm256_add_ps(_mm512_castps512_ps256(acc), high_half(acc)));
        }
    }
}
