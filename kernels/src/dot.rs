//! The dot products of quantized weight rows with one token's 8-bit activations, chosen once
//! for the CPU: AVX2 where it has AVX2, FMA and F16C (checked at run time; never
//! `target-cpu=native`, and nothing here touches AMX), a portable loop elsewhere.

use crate::activations::Q8Row;
use crate::blocks::{BLOCK, QuantType, block_ints, half_at};

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
            };
        }
    }
    portable(ty)
}

pub(crate) fn portable(ty: QuantType) -> DotFn {
    match ty {
        QuantType::Q8_0 => |rows, a, out| scalar_rows(QuantType::Q8_0, rows, a, out),
        QuantType::Q4_0 => |rows, a, out| scalar_rows(QuantType::Q4_0, rows, a, out),
        QuantType::Q4_1 => |rows, a, out| scalar_rows(QuantType::Q4_1, rows, a, out),
    }
}

fn scalar_rows(ty: QuantType, rows: &[u8], a: Q8Row<'_>, out: &mut [f32]) {
    let row_bytes = a.d.len() * ty.block_bytes();
    for (row, o) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
        *o = scalar_dot(ty, row, a);
    }
}

/// Per block: the integer dot of the stored values with the activations, scaled by both
/// scales, plus the block's constant term times `d · Σq` of the activations (Q4_1: its
/// minimum; Q4_0: −8 steps).
fn scalar_dot(ty: QuantType, row: &[u8], a: Q8Row<'_>) -> f32 {
    let mut total = 0f32;
    for (b, block) in row.chunks_exact(ty.block_bytes()).enumerate() {
        let w = block_ints(ty, block);
        let dot: i32 = w.iter().zip(&a.q[b * BLOCK..(b + 1) * BLOCK]).map(|(w, q)| w * i32::from(*q)).sum();
        let d = half_at(block, 0);
        let constant = match ty {
            QuantType::Q8_0 => 0.0,
            QuantType::Q4_0 => -8.0 * d,
            QuantType::Q4_1 => half_at(block, 2),
        };
        total += d * a.d[b] * dot as f32 + constant * a.s[b];
    }
    total
}
