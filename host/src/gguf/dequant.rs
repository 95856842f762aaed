//! Dequantization of GGML tensors to f32, bit-exact with ggml's reference `dequantize_row_*`
//! functions (and the `gguf` Python package, which the fixtures in `tests/fixtures/gguf` pin).
//! The block formats' decoding lives with the kernels that compute on them.

use half::{bf16, f16};
use hearth_kernels::{QuantType, dequantize_block};

use super::GgmlType;

/// Why a block buffer could not be dequantized.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DequantError {
    #[error("dequantizing {0} is not supported")]
    Unsupported(GgmlType),
    #[error("{ty} data of {bytes} bytes does not hold {values} values")]
    Size { ty: GgmlType, bytes: usize, values: usize },
}

/// Dequantizes `data` (whole blocks of type `ty`) into `out`; `out.len()` is the value count.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), DequantError> {
    let (per_block, block_bytes) = ty.block_layout().ok_or(DequantError::Unsupported(ty))?;
    let size_err = DequantError::Size { ty, bytes: data.len(), values: out.len() };
    if !out.len().is_multiple_of(per_block) || data.len() != out.len() / per_block * block_bytes {
        return Err(size_err);
    }
    let blocks = data.chunks_exact(block_bytes).zip(out.chunks_exact_mut(per_block));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, o)| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => blocks.for_each(|(b, o)| o[0] = f16_at(b, 0)),
        GgmlType::BF16 => blocks.for_each(|(b, o)| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        // The block formats decode in the kernels crate, which computes on them: one decoder
        // for both, pinned by the `gguf` package's values in this module's tests.
        other => match kernel_type(other) {
            Some(kt) => blocks.for_each(|(b, o)| dequantize_block(kt, b, o)),
            None => return Err(DequantError::Unsupported(other)),
        },
    }
    Ok(())
}

/// Whether [`dequantize`] handles `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) || kernel_type(ty).is_some()
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The block format Hearth's kernels compute on, for the GGML types they know.
pub fn kernel_type(ty: GgmlType) -> Option<QuantType> {
    Some(match ty {
        GgmlType::Q4_0 => QuantType::Q4_0,
        GgmlType::Q4_1 => QuantType::Q4_1,
        GgmlType::Q5_0 => QuantType::Q5_0,
        GgmlType::Q5_1 => QuantType::Q5_1,
        GgmlType::Q8_0 => QuantType::Q8_0,
        GgmlType::Q4K => QuantType::Q4K,
        GgmlType::Q5K => QuantType::Q5K,
        GgmlType::Q6K => QuantType::Q6K,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_uses_low_nibbles_first() {
        let mut block = vec![0u8; 20];
        block[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        block[4] = 0x31; // value 0 = 1, value 16 = 3
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &block, &mut out).unwrap();
        assert_eq!(out[0], -0.5);
        assert_eq!(out[16], 0.5);
        assert_eq!(out[1], -1.0);
    }

    #[test]
    fn wrong_size_is_an_error_not_a_panic() {
        let mut out = [0f32; 32];
        let err = dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out).unwrap_err();
        assert!(matches!(err, DequantError::Size { .. }));
        let err = dequantize(GgmlType::Q3K, &[0u8; 110], &mut [0f32; 256]).unwrap_err();
        assert_eq!(err, DequantError::Unsupported(GgmlType::Q3K));
    }
}
