//! The dot products of quantized weight rows with one token's 8-bit activations, chosen once
//! for the CPU: AVX2 where it has AVX2, FMA and F16C (checked at run time; never
//! `target-cpu=native`, and nothing here touches AMX), a portable loop elsewhere.

use crate::activations::Q8Row;
use crate::blocks::{BLOCK, QuantType, sub_block};

/// `out[r]` = row `r` of `rows` (whole rows, back to back) · the activations.
pub(crate) type DotFn = fn(&[u8], Q8Row<'_>, &mut [f32]);

/// The fastest kernel this CPU runs for `ty`.
pub(crate) fn kernel(ty: QuantType) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::avx2::available() {
            return match ty {
                QuantType::Q8_0 => crate::avx2::rows_q8_0,
                QuantType::Q4_0 => crate::avx2::rows_q4_0,
                QuantType::Q4_1 => crate::avx2::rows_q4_1,
                QuantType::Q5_0 => crate::avx2::rows_q5_0,
                QuantType::Q5_1 => crate::avx2::rows_q5_1,
                QuantType::Q4K => crate::avx2::rows_q4_k,
                QuantType::Q5K => crate::avx2::rows_q5_k,
                QuantType::Q6K => crate::avx2::rows_q6_k,
            };
        }
    }
    portable(ty)
}

/// `out[r · G + t]` = row `r` · token `t`, for G = 1 to 4 tokens.
pub(crate) type TokensFn = fn(&[u8], &[Q8Row<'_>], &mut [f32]);

/// A kernel that takes several tokens per pass over the rows, where this CPU has one for `ty`
/// (its results are bit-identical to [`kernel`]'s, a token at a time).
pub(crate) fn tokens_kernel(ty: QuantType) -> Option<TokensFn> {
    #[cfg(target_arch = "x86_64")]
    {
        crate::avx2::rows_tokens(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// The portable loop for `ty`, as a plain function pointer (one instance per format).
pub(crate) fn portable(ty: QuantType) -> DotFn {
    macro_rules! per_format {
        ($($t:ident),*) => {
            match ty {
                $(QuantType::$t => |rows, a, out| scalar_rows(QuantType::$t, rows, a, out),)*
            }
        };
    }
    per_format!(Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4K, Q5K, Q6K)
}

fn scalar_rows(ty: QuantType, rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    let row_bytes = a.d.len() * BLOCK / ty.block_values() * ty.block_bytes();
    for (row, o) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
        *o = scalar_dot(ty, row, a);
    }
}

/// Per sub-block: the integer dots of its values with the activations (one per scale),
/// scaled by both blocks' scales, plus its constant term times `d · Σq` of the activations.
fn scalar_dot(ty: QuantType, row: &[u8], a: Q8Row<'_>) -> f32 {
    let subs = ty.block_values() / BLOCK;
    let mut total = 0f32;
    for (b, block) in row.chunks_exact(ty.block_bytes()).enumerate() {
        for j in 0..subs {
            let s = sub_block(ty, block, j);
            let k = b * subs + j;
            let q = &a.q[k * BLOCK..(k + 1) * BLOCK];
            let dot = |range: std::ops::Range<usize>| -> i32 { range.map(|i| s.w[i] * i32::from(q[i])).sum() };
            let (lo, hi) = (dot(0..16), dot(16..32));
            total += a.d[k] * (s.scale[0] * lo as f32 + s.scale[1] * hi as f32) + s.constant * a.s[k];
        }
    }
    total
}
