//! Products on GGUF block-quantized weights kept on a GPU: a matrix in Q8_0, Q4_0, Q4_1, Q4_K,
//! Q5_0, Q5_1 or Q5_K (as 32-value blocks of bytes or nibbles, see `QuantMatrix::planes`) stays
//! on the device as its blocks' integer values (packed in 32-bit words), one f32 scale and one
//! f32 offset per block — 5–7 bytes a value fewer than an f32 copy — and is decoded inside the
//! kernels that read it.
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

/// How a block's integers are packed in its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// 32 signed bytes in 8 words (Q8_0, and the 5-bit formats).
    Bytes,
    /// 32 nibbles in 4 words, GGUF's order: byte `j` holds element `j` (low nibble) and
    /// `j + 16` (high) (Q4_0, Q4_1, Q4_K).
    Nibbles,
}

impl Packing {
    /// Words per block.
    pub fn words(self) -> usize {
        match self {
            Self::Bytes => 8,
            Self::Nibbles => 4,
        }
    }

    fn is_bytes(self) -> bool {
        self == Self::Bytes
    }
}

/// The operations on block-quantized matrices of `[rows, cols]` (Hugging Face's `[out, in]`):
/// `words` is `[rows, cols / 32 · words per block]` (i32 tensors holding the words' bits),
/// `scales` and `offsets` `[rows, cols / 32]`, and value `c` of row `r` is
/// `scale · q + offset` with `q` its integer.
#[backend_extension(Cube: cfg(all()), Fusion)]
pub trait QuantOps: Backend {
    /// `x · Wᵀ`: `x` is `[tokens, cols]`, the result `[tokens, rows]`.
    #[fusion(dtype = x, shape = Shape::new([x[0], scales[0]]))]
    fn block_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        bytes: bool,
    ) -> FloatTensor<Self>;

    /// `Wᵀ` as f32, `[cols, rows]`: the layout `x.matmul` reads fastest.
    #[fusion(dtype = scales, shape = Shape::new([scales[1] * BLOCK, scales[0]]))]
    fn block_dequantize_transposed(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        bytes: bool,
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
    "a {rows}×{cols} {packing:?} matrix needs {want_words} words and {want_blocks} scales and offsets, got {words}, {scales} and {offsets}"
)]
pub struct PlaneSizeError {
    rows: usize,
    cols: usize,
    packing: Packing,
    want_words: usize,
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
        if !cols.is_multiple_of(BLOCK)
            || words.len() != want_words
            || scales.len() != want_blocks
            || offsets.len() != want_blocks
        {
            return Err(PlaneSizeError {
                rows,
                cols,
                packing,
                want_words,
                want_blocks,
                words: words.len(),
                scales: scales.len(),
                offsets: offsets.len(),
            });
        }
        // The words travel as i32 (the int type every device has); the kernels read their bits.
        let words: Vec<i32> = words.into_iter().map(|w| w as i32).collect();
        let plane = |v: Vec<f32>| Tensor::<2>::from_data(burn::tensor::TensorData::new(v, [rows, blocks]), device);
        Ok(Self {
            words: Tensor::from_data(burn::tensor::TensorData::new(words, [rows, blocks * packing.words()]), device),
            scales: plane(scales),
            offsets: plane(offsets),
            packing,
        })
    }

    /// The device the blocks live on.
    pub fn device(&self) -> burn::tensor::Device {
        self.scales.device()
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        let [rows, blocks] = self.scales.dims();
        [rows, blocks * BLOCK]
    }

    /// `x · Wᵀ` for `x` of `[tokens, cols]`, decoding the blocks in the kernel.
    pub fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(burn::backend::Dispatch::block_matmul(
            x.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.scales.clone().into_dispatch(),
            self.offsets.clone().into_dispatch(),
            self.packing.is_bytes(),
        ))
    }

    /// `Wᵀ` as an f32 `[cols, rows]` tensor (for prompt-sized products through burn's matmul).
    pub fn dequantize_transposed(&self) -> Tensor<2> {
        Tensor::from_dispatch(burn::backend::Dispatch::block_dequantize_transposed(
            self.words.clone().into_dispatch(),
            self.scales.clone().into_dispatch(),
            self.offsets.clone().into_dispatch(),
            self.packing.is_bytes(),
        ))
    }
}
