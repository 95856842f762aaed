//! Products on GGUF block-quantized weights kept on a GPU: a matrix in any of the formats the
//! kernels crate reads (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants, as 32-value blocks of
//! bytes or nibbles, see `QuantMatrix::planes`) stays on the device as its blocks' integer values
//! (packed in 32-bit words), an f32 scale (two for Q6_K's 16-value halves) and an f32 offset per
//! block — 2.6–3.5 bytes a value fewer than an f32 copy — and is decoded inside the kernels that
//! read it.
//!
//! Two operations, written in CubeCL and reached through burn's backend extensions (so a model
//! calls them on its ordinary tensors, lazily, under burn's fusion): a token product that
//! decodes and multiplies in one pass (decode: each weight is read once per token), and a decode
//! of the whole matrix to f32 that prompts multiply with burn's tuned matmul. [`decode`] holds
//! the fused decode step's operations; [`counters`] counts what the device is asked to do.

pub mod counters;
pub mod decode;
mod decode_kernels;
mod kernels;

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, backend_extension};
use burn::tensor::{Int, Shape, Tensor};

/// Values per block.
pub const BLOCK: usize = 32;

/// How a block's integers are packed in its words, and how many scales it has. Each packing
/// holds every block of the ones before it in this order (see [`DeviceBlocks::widen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Packing {
    /// 32 nibbles in 4 words, GGUF's order: byte `j` holds element `j` (low nibble) and
    /// `j + 16` (high) (Q4_0, Q4_1, Q4_K).
    Nibbles,
    /// 32 signed bytes in 8 words (Q8_0, and the 5-bit formats).
    Bytes,
    /// 32 signed bytes in 8 words, a scale for each half of 16 (Q6_K).
    SplitBytes,
}

impl Packing {
    /// Words per block.
    pub fn words(self) -> usize {
        match self {
            Self::Bytes | Self::SplitBytes => 8,
            Self::Nibbles => 4,
        }
    }

    /// Scales per block.
    pub fn scales_per_block(self) -> usize {
        if self == Self::SplitBytes { 2 } else { 1 }
    }
}

/// The operations on block-quantized matrices of `[rows, cols]` (Hugging Face's `[out, in]`):
/// `words` is `[rows, cols / 32 · words per block]` (i32 tensors holding the words' bits),
/// `offsets` `[rows, cols / 32]`, `scales` `[rows, cols / 32 · scales per block]`, and value `c`
/// of row `r` is `scale · q + offset` with `q` its integer and `scale` its block's (or half
/// block's).
#[backend_extension(Cube: cfg(all()), Fusion)]
pub trait QuantOps: Backend {
    /// `x · Wᵀ`: `x` is `[tokens, cols]`, the result `[tokens, rows]`.
    #[fusion(dtype = x, shape = Shape::new([x[0], scales[0]]))]
    fn block_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        packing: Packing,
    ) -> FloatTensor<Self>;

    /// `Wᵀ` as f32, `[cols, rows]`: the layout `x.matmul` reads fastest.
    #[fusion(dtype = scales, shape = Shape::new([offsets[1] * BLOCK, offsets[0]]))]
    fn block_dequantize_transposed(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        packing: Packing,
    ) -> FloatTensor<Self>;
}

/// A block-quantized matrix on a device.
#[derive(Debug, Clone)]
pub struct DeviceBlocks {
    pub(crate) words: Tensor<2, Int>,
    pub(crate) scales: Tensor<2>,
    pub(crate) offsets: Tensor<2>,
    pub(crate) packing: Packing,
}

/// Why the planes of a matrix cannot make a [`DeviceBlocks`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "a {rows}×{cols} {packing:?} matrix needs {want_words} words, {want_scales} scales and {want_blocks} offsets, got {words}, {scales} and {offsets}"
)]
pub struct PlaneSizeError {
    rows: usize,
    cols: usize,
    packing: Packing,
    want_words: usize,
    want_scales: usize,
    want_blocks: usize,
    words: usize,
    scales: usize,
    offsets: usize,
}

impl DeviceBlocks {
    /// Uploads a `[rows, cols]` matrix given as its blocks' words, scales and offsets (row-major,
    /// blocks along a row).
    pub fn new(
        packing: Packing,
        rows: usize,
        cols: usize,
        words: Vec<u32>,
        scales: Vec<f32>,
        offsets: Vec<f32>,
        device: &burn::tensor::Device,
    ) -> Result<Self, PlaneSizeError> {
        let blocks = cols / BLOCK;
        let (want_words, want_blocks) = (rows * blocks * packing.words(), rows * blocks);
        let want_scales = want_blocks * packing.scales_per_block();
        if !cols.is_multiple_of(BLOCK)
            || words.len() != want_words
            || scales.len() != want_scales
            || offsets.len() != want_blocks
        {
            return Err(PlaneSizeError {
                rows,
                cols,
                packing,
                want_words,
                want_scales,
                want_blocks,
                words: words.len(),
                scales: scales.len(),
                offsets: offsets.len(),
            });
        }
        // The words travel as i32 (the int type every device has); the kernels read their bits.
        let words: Vec<i32> = words.into_iter().map(|w| w as i32).collect();
        let plane = |v: Vec<f32>, per_block: usize| {
            Tensor::<2>::from_data(burn::tensor::TensorData::new(v, [rows, blocks * per_block]), device)
        };
        Ok(Self {
            words: Tensor::from_data(burn::tensor::TensorData::new(words, [rows, blocks * packing.words()]), device),
            scales: plane(scales, packing.scales_per_block()),
            offsets: plane(offsets, 1),
            packing,
        })
    }

    /// The device the blocks live on.
    pub fn device(&self) -> burn::tensor::Device {
        self.scales.device()
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        let [rows, blocks] = self.offsets.dims();
        [rows, blocks * BLOCK]
    }

    /// How the blocks are packed.
    pub fn packing(&self) -> Packing {
        self.packing
    }

    /// The same matrix in `to`, a packing that holds this one's blocks (it is never narrowed):
    /// nibbles become bytes (a nibble is 0…15, a byte's value as it is), and one scale becomes
    /// the same scale for both halves. Done on the device, for stacking matrices of different
    /// formats (a K-quant file's Q4_K query beside its Q6_K value projection).
    pub fn widen(&self, to: Packing) -> DeviceBlocks {
        let to = to.max(self.packing);
        let [rows, cols] = self.dims();
        let blocks = cols / BLOCK;
        let mut words = self.words.clone();
        if self.packing == Packing::Nibbles && to != Packing::Nibbles {
            // Byte `j` of a nibble block holds elements `j` (low) and `j + 16` (high); as bytes,
            // element `e` is byte `e % 4` of word `e / 4`: the low nibbles are words 0–3 masked,
            // the high ones words 0–3 shifted down a nibble and masked. An i32's arithmetic
            // shift only changes bits the mask drops.
            let nibbles = words.reshape([rows, blocks, 4]);
            let low = nibbles.clone().bitwise_and_scalar(0x0F0F_0F0F);
            let high = nibbles.bitwise_right_shift_scalar(4).bitwise_and_scalar(0x0F0F_0F0F);
            words = Tensor::cat(vec![low, high], 2).reshape([rows, blocks * 8]);
        }
        let mut scales = self.scales.clone();
        if self.packing != Packing::SplitBytes && to == Packing::SplitBytes {
            scales = scales.reshape([rows, blocks, 1]).repeat_dim(2, 2).reshape([rows, blocks * 2]);
        }
        DeviceBlocks { words, scales, offsets: self.offsets.clone(), packing: to }
    }

    /// `x · Wᵀ` for `x` of `[tokens, cols]`, decoding the blocks in the kernel.
    pub fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(burn::backend::Dispatch::block_matmul(
            x.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.scales.clone().into_dispatch(),
            self.offsets.clone().into_dispatch(),
            self.packing,
        ))
    }

    /// `Wᵀ` as an f32 `[cols, rows]` tensor (for prompt-sized products through burn's matmul).
    pub fn dequantize_transposed(&self) -> Tensor<2> {
        Tensor::from_dispatch(burn::backend::Dispatch::block_dequantize_transposed(
            self.words.clone().into_dispatch(),
            self.scales.clone().into_dispatch(),
            self.offsets.clone().into_dispatch(),
            self.packing,
        ))
    }
}
