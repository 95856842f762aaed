//! GGUF's block formats: what a block holds and how it decodes. Every format here splits into
//! sub-blocks of 32 values (a K-quant's 256-value super-block into 8), each decoding as
//! `scale · w + constant` with small integers `w`; that is what the products multiply with the
//! activations' 32-value blocks, and what dequantization writes out.

use half::f16;

/// Values per sub-block in every format here, and per block of the 8-bit activations.
pub const BLOCK: usize = 32;

/// A block-quantized format Hearth computes on directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// f16 scale, 32 × i8: `d · q`.
    Q8_0,
    /// f16 scale, 16 bytes of nibbles: `d · (q − 8)`.
    Q4_0,
    /// f16 scale, f16 minimum, 16 bytes of nibbles: `d · q + m`.
    Q4_1,
    /// f16 scale, 32 fifth bits, 16 bytes of nibbles: `d · (q − 16)`.
    Q5_0,
    /// f16 scale, f16 minimum, 32 fifth bits, 16 bytes of nibbles: `d · q + m`.
    Q5_1,
    /// 256 values: f16 `d` and `dmin`, 6-bit scale and minimum per 32, nibbles:
    /// `d · sc · q − dmin · m`.
    Q4K,
    /// Q4_K with a fifth bit per value.
    Q5K,
    /// 256 values: 6-bit values, a signed 8-bit scale per 16, f16 `d`: `d · sc · (q − 32)`.
    Q6K,
}

impl QuantType {
    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Values in one block: 32, or 256 for the K-quants.
    pub fn block_values(self) -> usize {
        match self {
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
            _ => BLOCK,
        }
    }

    /// Every format, for tests and tables.
    pub const ALL: [QuantType; 8] =
        [Self::Q8_0, Self::Q4_0, Self::Q4_1, Self::Q5_0, Self::Q5_1, Self::Q4K, Self::Q5K, Self::Q6K];
}

pub(crate) fn half_at(block: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[at], block[at + 1]])).to_f32()
}

/// One sub-block of 32 values: value `i` is `scale[i / 16] · w[i] + constant` (two scales
/// because Q6_K scales each 16 values; the other formats repeat one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubBlock {
    pub w: [i32; BLOCK],
    pub scale: [f32; 2],
    pub constant: f32,
}

/// Sub-block `j` (below `block_values / 32`) of `block`. The integers are centred where the
/// format centres them (Q4_0, Q5_0, Q6_K), so every value decodes exactly as ggml's reference
/// `dequantize_row_*` computes it.
pub(crate) fn sub_block(ty: QuantType, block: &[u8], j: usize) -> SubBlock {
    let mut w = [0i32; BLOCK];
    let d = half_at(block, 0);
    let one = |scale: f32, constant: f32, w| SubBlock { w, scale: [scale; 2], constant };
    match ty {
        QuantType::Q8_0 => {
            for (i, q) in block[2..34].iter().enumerate() {
                w[i] = i32::from(*q as i8);
            }
            one(d, 0.0, w)
        }
        QuantType::Q4_0 | QuantType::Q4_1 => {
            let (qs, offset) = if ty == QuantType::Q4_1 { (&block[4..20], 0) } else { (&block[2..18], 8) };
            // Element `i < 16` is the low nibble of byte `i`, element `i + 16` its high nibble.
            for (i, q) in qs.iter().enumerate() {
                w[i] = i32::from(q & 0x0F) - offset;
                w[i + 16] = i32::from(q >> 4) - offset;
            }
            one(d, if ty == QuantType::Q4_1 { half_at(block, 2) } else { 0.0 }, w)
        }
        QuantType::Q5_0 | QuantType::Q5_1 => {
            let at = if ty == QuantType::Q5_1 { 4 } else { 2 };
            let qh = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            let offset = if ty == QuantType::Q5_1 { 0 } else { 16 };
            // Bit `i` of `qh` is element `i`'s fifth bit.
            for (i, q) in block[at + 4..at + 20].iter().enumerate() {
                w[i] = (i32::from(q & 0x0F) | (((qh >> i) & 1) << 4) as i32) - offset;
                w[i + 16] = (i32::from(q >> 4) | (((qh >> (i + 16)) & 1) << 4) as i32) - offset;
            }
            one(d, if ty == QuantType::Q5_1 { half_at(block, 2) } else { 0.0 }, w)
        }
        QuantType::Q4K | QuantType::Q5K => {
            // Sub-blocks 2c and 2c+1 share 32 bytes of nibbles: low nibbles, then high.
            let (chunk, high) = (j / 2, j % 2 == 1);
            let (sc, m) = scale_min_k4(j, &block[4..16]);
            let qs_at = if ty == QuantType::Q5K { 48 } else { 16 };
            let qs = &block[qs_at + chunk * 32..qs_at + chunk * 32 + 32];
            for (i, q) in qs.iter().enumerate() {
                let nibble = if high { q >> 4 } else { q & 0x0F };
                // Q5_K: bit `j` of high-bits byte `i` is this element's fifth bit.
                let fifth = if ty == QuantType::Q5K { ((block[16 + i] >> j) & 1) << 4 } else { 0 };
                w[i] = i32::from(nibble | fifth);
            }
            one(d * f32::from(sc), -(half_at(block, 2) * f32::from(m)), w)
        }
        QuantType::Q6K => {
            // Halves of 128 values; in a half, sub-block k takes low (k < 2) or high nibbles of
            // 32 bytes of `ql` and bits 2k, 2k+1 of 32 bytes of `qh`.
            let (half, k) = (j / 4, j % 4);
            let ql = &block[half * 64 + (k % 2) * 32..][..32];
            let qh = &block[128 + half * 32..][..32];
            for i in 0..BLOCK {
                let low = if k < 2 { ql[i] & 0x0F } else { ql[i] >> 4 };
                w[i] = i32::from(low | (((qh[i] >> (2 * k)) & 3) << 4)) - 32;
            }
            let d = half_at(block, 208);
            let sc = |s: usize| d * f32::from(block[192 + half * 8 + s] as i8);
            SubBlock { w, scale: [sc(2 * k), sc(2 * k + 1)], constant: 0.0 }
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` from a Q4_K / Q5_K block's 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The 6-bit scales and minimums of all 8 sub-blocks of a Q4_K / Q5_K block.
pub(crate) fn scales_mins_k4(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, q);
    }
    (sc, m)
}

/// Decodes one block (`out.len()` = its value count).
pub fn dequantize_block(ty: QuantType, block: &[u8], out: &mut [f32]) {
    for (j, o) in out.chunks_exact_mut(BLOCK).enumerate() {
        let s = sub_block(ty, block, j);
        for (i, v) in o.iter_mut().enumerate() {
            // Written as ggml writes it: no constant term is added where the format has none.
            let x = s.scale[i / 16] * s.w[i] as f32;
            *v = if s.constant == 0.0 { x } else { x + s.constant };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(ty: QuantType, block: &[u8]) -> Vec<f32> {
        let mut out = vec![0f32; ty.block_values()];
        dequantize_block(ty, block, &mut out);
        out
    }

    #[test]
    fn values_decode_as_gguf_defines_them() {
        // Q4_1: d = 0.5, m = -1, first byte 0x21 → element 0 is 1 (0.5·1 − 1 + …), element 16 is 2.
        let mut block = Vec::new();
        block.extend_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        block.extend_from_slice(&f16::from_f32(-1.0).to_bits().to_le_bytes());
        block.push(0x21);
        block.extend_from_slice(&[0; 15]);
        let v = decode(QuantType::Q4_1, &block);
        assert_eq!((v[0], v[16], v[1]), (-0.5, 0.0, -1.0));
        // Q4_0 subtracts 8.
        let mut block = f16::from_f32(2.0).to_bits().to_le_bytes().to_vec();
        block.push(0x9F);
        block.extend_from_slice(&[0x88; 15]);
        let v = decode(QuantType::Q4_0, &block);
        assert_eq!((v[0], v[16], v[1]), (14.0, 2.0, 0.0));
        // Q8_0 is signed.
        let mut block = f16::from_f32(0.25).to_bits().to_le_bytes().to_vec();
        block.push(0xFC);
        block.extend_from_slice(&[4; 31]);
        let v = decode(QuantType::Q8_0, &block);
        assert_eq!((v[0], v[1]), (-1.0, 1.0));
        // Q5_0: bit 16 of the high bits is element 16's fifth bit; values are centred on 16.
        let mut block = f16::from_f32(1.0).to_bits().to_le_bytes().to_vec();
        block.extend_from_slice(&(1u32 << 16).to_le_bytes());
        block.push(0x13);
        block.extend_from_slice(&[0; 15]);
        let v = decode(QuantType::Q5_0, &block);
        assert_eq!((v[0], v[16], v[1]), (-13.0, 1.0, -16.0));
    }

    #[test]
    fn k_quant_scales_pack_six_bits() {
        // Sub-blocks 0–3 take the low 6 bits of bytes 0–3 (scales) and 4–7 (minimums);
        // 4–7 take nibbles of bytes 8–11 and the top two bits of bytes 0–7.
        let mut q = [0u8; 12];
        q[0] = 0b11_000101; // scale 0 = 5, top bits → scale 4's high bits
        q[4] = 0b01_000111; // min 0 = 7, top bits → min 4's high bits
        q[8] = 0x9A; // scale 4 low nibble 0xA, min 4 low nibble 0x9
        let (sc, m) = scales_mins_k4(&q);
        assert_eq!((sc[0], m[0]), (5, 7));
        assert_eq!((sc[4], m[4]), (0x3A, 0x19));
    }
}
