//! GGUF's block formats: what a block of 32 values holds and how it decodes to f32.

use half::f16;

/// Values per block in every format here.
pub const BLOCK: usize = 32;

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

pub(crate) fn half_at(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

/// The block's integer values as GGUF stores them (Q4 nibbles unsigned, 0–15; element `i` of
/// a Q4 block is the low nibble of byte `i` for `i < 16`, the high nibble of byte `i − 16`
/// after).
pub(crate) fn block_ints(ty: QuantType, block: &[u8]) -> [i32; BLOCK] {
    let mut v = [0i32; BLOCK];
    match ty {
        QuantType::Q8_0 => {
            for (i, q) in block[2..34].iter().enumerate() {
                v[i] = i32::from(*q as i8);
            }
        }
        QuantType::Q4_0 | QuantType::Q4_1 => {
            let qs = if ty == QuantType::Q4_1 { &block[4..20] } else { &block[2..18] };
            for (i, q) in qs.iter().enumerate() {
                v[i] = i32::from(q & 0x0F);
                v[i + 16] = i32::from(q >> 4);
            }
        }
    }
    v
}

/// The 32 values of one block.
pub(crate) fn dequantize_block(ty: QuantType, block: &[u8]) -> [f32; BLOCK] {
    let d = half_at(block, 0);
    let (offset, m) = match ty {
        QuantType::Q8_0 => (0, 0.0),
        QuantType::Q4_0 => (8, 0.0),
        QuantType::Q4_1 => (0, half_at(block, 2)),
    };
    block_ints(ty, block).map(|q| d * (q - offset) as f32 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Q8_0 is signed.
        let mut block = f16::from_f32(0.25).to_bits().to_le_bytes().to_vec();
        block.push(0xFC);
        block.extend_from_slice(&[4; 31]);
        let v = dequantize_block(QuantType::Q8_0, &block);
        assert_eq!((v[0], v[1]), (-1.0, 1.0));
    }
}
