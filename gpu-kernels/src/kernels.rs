//! The CubeCL kernels behind [`QuantOps`](crate::QuantOps), and their launch on the CubeCL
//! backend (wgpu here; the same code compiles for CUDA, ROCm and Metal).

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};

use crate::{BLOCK, Packing, QuantOps};

/// Integer `i` of a block from its words: element `4k + i` of a byte block is byte `i` of word
/// `k`, sign-extended; a nibble block's element `j < 16` is the low nibble of byte `j`, `j + 16`
/// its high nibble. The words hold u32 bits in i32 lanes: every shift is masked, so the sign of
/// a lane never leaks in.
#[cube]
fn block_value(words: &Tensor<i32>, base: usize, e: usize, #[comptime] packing: Packing) -> f32 {
    if comptime!(packing != Packing::Nibbles) {
        let w = words[base + e / 4];
        let byte = (w >> (8 * (e % 4)) as i32) & 255;
        // Bytes ≥ 128 are negative: subtract 256 for them.
        f32::cast_from(byte) - 256.0 * f32::cast_from(byte >> 7)
    } else {
        let j = e % 16;
        let w = words[base + j / 4];
        let byte = (w >> (8 * (j % 4)) as i32) & 255;
        let shift = (4 * (e / 16)) as i32;
        f32::cast_from((byte >> shift) & 15)
    }
}

/// One output `[t, r]` per unit: the whole row's [`row_dot`] with token `t`.
#[cube(launch_unchecked)]
fn block_matmul_kernel(
    x: &Tensor<f32>,
    words: &Tensor<i32>,
    scales: &Tensor<f32>,
    offsets: &Tensor<f32>,
    out: &mut Tensor<f32>,
    #[comptime] packing: Packing,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let rows = out.shape(1);
    let (t, r) = (pos / rows, pos % rows);
    // `x` stands in for the norm weight, which is not read.
    out[pos] = row_dot(x, t * x.shape(1), x, words, scales, offsets, r, 0usize, 1usize, false, packing);
}

/// Part of `Σ_c W[row, c] · x[xb + c] (· norm_w[c])` over the row's blocks `first`,
/// `first + step`, … (all of them from 0 by 1; a lane's share when `step` lanes split a row):
/// each block as `scale · Σ q·x + offset · Σ x` (split bytes: a scale for each half's `Σ q·x`),
/// each word read once and its bytes taken apart by unrolled shifts.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_dot(
    x: &Tensor<f32>,
    xb: usize,
    norm_w: &Tensor<f32>,
    words: &Tensor<i32>,
    scales: &Tensor<f32>,
    offsets: &Tensor<f32>,
    row: usize,
    first: usize,
    #[comptime] step: usize,
    #[comptime] norm: bool,
    #[comptime] packing: Packing,
) -> f32 {
    let blocks = offsets.shape(1);
    let split = comptime!(packing == Packing::SplitBytes);
    let mut acc = 0.0f32;
    let mut b = first;
    while b < blocks {
        let s = row * blocks + b;
        let c0 = b * 32;
        let mut dot = 0.0f32;
        // The second half's `Σ q·x` when the halves have their own scales.
        let mut dot_high = 0.0f32;
        let mut sum = 0.0f32;
        if comptime!(packing != Packing::Nibbles) {
            #[unroll]
            for k in 0..8usize {
                let w = words[s * 8 + k];
                #[unroll]
                for i in 0..4usize {
                    let c = c0 + 4 * k + i;
                    let mut xv = x[xb + c];
                    if comptime!(norm) {
                        xv *= norm_w[c];
                    }
                    let byte = (w >> comptime!(8 * i as i32)) & 255;
                    // Bytes ≥ 128 are negative: subtract 256 for them.
                    let term = (f32::cast_from(byte) - 256.0 * f32::cast_from(byte >> 7)) * xv;
                    if comptime!(split && k >= 4) {
                        dot_high += term;
                    } else {
                        dot += term;
                    }
                    // The 5-bit formats' blocks have an offset too.
                    sum += xv;
                }
            }
        } else {
            #[unroll]
            for k in 0..4usize {
                let w = words[s * 4 + k];
                #[unroll]
                for i in 0..4usize {
                    let c = c0 + 4 * k + i;
                    let mut lo = x[xb + c];
                    let mut hi = x[xb + c + 16];
                    if comptime!(norm) {
                        lo *= norm_w[c];
                        hi *= norm_w[c + 16];
                    }
                    let byte = (w >> comptime!(8 * i as i32)) & 255;
                    dot += f32::cast_from(byte & 15) * lo + f32::cast_from(byte >> 4) * hi;
                    sum += lo + hi;
                }
            }
        }
        if comptime!(split) {
            acc += scales[2 * s] * dot + scales[2 * s + 1] * dot_high + offsets[s] * sum;
        } else {
            acc += scales[s] * dot + offsets[s] * sum;
        }
        b += step;
    }
    acc
}

/// One value of `Wᵀ` (`[cols, rows]`) per unit.
#[cube(launch_unchecked)]
fn block_dequantize_transposed_kernel(
    words: &Tensor<i32>,
    scales: &Tensor<f32>,
    offsets: &Tensor<f32>,
    out: &mut Tensor<f32>,
    #[comptime] packing: Packing,
) {
    let pos = ABSOLUTE_POS;
    if pos >= out.len() {
        terminate!();
    }
    let rows = out.shape(1);
    let (c, r) = (pos / rows, pos % rows);
    let blocks = offsets.shape(1);
    let per_block = comptime!(packing.words());
    let halves = comptime!(packing.scales_per_block());
    let (b, e) = (c / 32, c % 32);
    let s = r * blocks + b;
    let scale = scales[s * halves + e * halves / 32];
    out[pos] = scale * block_value(words, s * per_block, e, packing) + offsets[s];
}

/// An f32 output of `shape` on the device of `like`, and the grid of one unit per value.
fn output(like: &CubeTensor, shape: Shape) -> (CubeTensor, CubeCount, CubeDim) {
    let units = shape.num_elements();
    let cube_dim = CubeDim::new(&like.client, units);
    let cube_count = calculate_cube_count_elemwise(&like.client, units, cube_dim);
    (empty_device_dtype(like.client.clone(), like.device.clone(), shape, DType::F32), cube_count, cube_dim)
}

impl QuantOps for CubeBackend {
    fn block_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        packing: Packing,
    ) -> FloatTensor<Self> {
        let (x, words, scales, offsets) =
            (into_contiguous(x), into_contiguous(words), into_contiguous(scales), into_contiguous(offsets));
        let tokens = x.meta.shape()[0];
        let rows = scales.meta.shape()[0];
        let (out, cube_count, cube_dim) = output(&x, Shape::new([tokens, rows]));
        // SAFETY: every index the kernel reads is inside its tensors by construction: unit
        // `t·rows + r` (checked against the output's length) reads row `t` of `x`, whose width
        // the fusion metadata and `DeviceBlocks` tie to the blocks' count, and block
        // `r·blocks + b` of the planes, which `DeviceBlocks::new` sized.
        unsafe {
            block_matmul_kernel::launch_unchecked(
                &out.client,
                cube_count,
                cube_dim,
                x.into_tensor_arg(),
                words.into_tensor_arg(),
                scales.into_tensor_arg(),
                offsets.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                packing,
            );
        }
        out
    }

    fn block_dequantize_transposed(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        packing: Packing,
    ) -> FloatTensor<Self> {
        let (words, scales, offsets) = (into_contiguous(words), into_contiguous(scales), into_contiguous(offsets));
        let [rows, blocks] = [offsets.meta.shape()[0], offsets.meta.shape()[1]];
        let (out, cube_count, cube_dim) = output(&scales, Shape::new([blocks * BLOCK, rows]));
        // SAFETY: unit `c·rows + r` (checked against the output's length) reads block
        // `r·blocks + c/32` of planes `DeviceBlocks::new` sized.
        unsafe {
            block_dequantize_transposed_kernel::launch_unchecked(
                &out.client,
                cube_count,
                cube_dim,
                words.into_tensor_arg(),
                scales.into_tensor_arg(),
                offsets.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                packing,
            );
        }
        out
    }
}
