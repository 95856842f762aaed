//! The fused decode step of the llama family on a GPU: one token's layer in five dispatches
//! instead of the ~50 that burn's operations take one by one.
//!
//! - [`DeviceBlocks::norm_matmul`]: RMS norm of the input fused into the product that reads it,
//!   a residual or bias add fused into its output (q/k/v in one product; the output projection
//!   and the down projection with their residual adds);
//! - [`DeviceBlocks::norm_gate_up`]: RMS norm, the stacked gate/up product and SiLU·mul;
//! - [`decode_attention`]: rotary embedding of the query and the new key, the key and value
//!   written into the cache, and attention of the one query over the cache (online softmax);
//!   past [`ATTENTION_CHUNK`] positions split across cubes (flash-decoding) and joined by a
//!   second dispatch.
//!
//! Each product gives an output row to [`LANES`] units that split its blocks and add their
//! partial sums in shared memory (a cooperative reduction, not one unit per output), and every
//! cube recomputes the norm of its token's row (a few hundred values) rather than waiting for
//! another dispatch to do it.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, backend_extension};
use burn::tensor::{Shape, Tensor};

use crate::{DeviceBlocks, Packing};

/// Units that share one output row of a product.
pub const LANES: usize = 8;
/// Output rows per cube of a product.
pub const ROWS: usize = 32;
/// Units of an attention cube (one query head), and positions it scores at a time.
pub const ATTENTION_UNITS: usize = 64;
/// Positions a cube of [`decode_attention`] reads at most (before [`MAX_ATTENTION_SPLITS`]
/// caps the splits): a cache longer than this is split across cubes, their results joined by a
/// second dispatch.
pub const ATTENTION_CHUNK: usize = 256;
/// Most splits of one head's positions (a 16k-position cache: 64 cubes a head).
pub const MAX_ATTENTION_SPLITS: usize = 64;
/// Largest head size [`decode_attention`] takes.
pub const MAX_HEAD_DIM: usize = 256;
/// Candidates [`top_candidates`] returns per row: with the two normalisers, 1,016 bytes to read
/// back instead of the whole vocabulary's logits.
pub const CANDIDATES: usize = 126;
/// Units of a [`top_candidates`] cube (one row).
pub const SELECT_UNITS: usize = 256;

/// The sizes of grouped-query attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

fn stacked_rows(scales: &Shape, halves: usize) -> usize {
    scales[0] / halves
}

/// The fused operations; see the module documentation. Matrices are given as [`DeviceBlocks`]'
/// planes; `norm` says whether `norm_w` is applied (else it is not read), `add` whether `addend`
/// is added (else it is not read).
#[backend_extension(Cube: cfg(all()), Fusion)]
pub trait DecodeOps: Backend {
    /// `rms_norm(x)·norm_w · Wᵀ + addend`: `x` `[tokens, cols]`, `addend` `[tokens, rows]`.
    #[fusion(dtype = x, shape = Shape::new([x[0], scales[0]]))]
    #[allow(clippy::too_many_arguments)]
    fn fused_block_matmul(
        x: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        addend: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        eps: f32,
        packing: Packing,
        norm: bool,
        add: bool,
    ) -> FloatTensor<Self>;

    /// `silu(g)·u` where `[g | u] = rms_norm(x)·norm_w · Wᵀ` (the matrix holds the gate rows,
    /// then as many up rows): `[tokens, rows / 2]`.
    #[fusion(dtype = x, shape = Shape::new([x[0], stacked_rows(scales, 2)]))]
    fn fused_gate_up(
        x: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        eps: f32,
        packing: Packing,
    ) -> FloatTensor<Self>;

    /// One sequence's token in a step: `qkv` `[tokens, (heads + 2·kv_heads)·head_dim]` as the
    /// stacked projection gives it, of which row `row` is this sequence's; `keys`/`values`
    /// `[kv_heads, capacity, head_dim]` holding its positions `0..start`; `cos`/`sin`
    /// `[tokens, head_dim]`, row `row` for position `start`. Writes the heads' outputs into row
    /// `row` of `out` `[tokens, heads·head_dim]` and position `start` into the caches, and
    /// returns the three (written in place when nothing else holds them).
    #[fusion(meta = |_qkv, keys, values, _cos, _sin, out, _row, _start, _dims| {
        (out.clone(), keys.clone(), values.clone())
    })]
    #[allow(clippy::too_many_arguments)]
    fn fused_decode_attention(
        qkv: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        out: FloatTensor<Self>,
        row: usize,
        start: usize,
        dims: AttentionDims,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Per row `r` of `logits` `[rows, vocab]`: `[lse, lse_t, top logits…, their ids…]` where
    /// `lse` is the log-sum-exp of the row, `lse_t` that of the row times `inv_temperatures[r]`
    /// (`[rows]`), and the `CANDIDATES` largest logits are sorted, most likely first (ties:
    /// lower id first), their ids given as exact f32 integers.
    #[fusion(dtype = logits, shape = Shape::new([logits[0], 2 + 2 * CANDIDATES]))]
    fn top_candidates(logits: FloatTensor<Self>, inv_temperatures: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// An RMS norm's weight and epsilon.
#[derive(Debug, Clone, Copy)]
pub struct NormWeight<'a> {
    pub weight: &'a Tensor<1>,
    pub eps: f32,
}

impl DeviceBlocks {
    /// `norm(x) · Wᵀ + addend` in one dispatch: `x` `[tokens, cols]`, `addend` (a residual or
    /// a bias) `[tokens, rows]`; without a norm `x` is multiplied as it is.
    pub fn norm_matmul(&self, x: Tensor<2>, norm: Option<NormWeight<'_>>, addend: Option<Tensor<2>>) -> Tensor<2> {
        // Operands a flag turns off are never read: `x` stands in for them.
        let norm_w = norm.map_or_else(|| x.clone().reshape([-1]), |n| n.weight.clone());
        let (add, addend) = match addend {
            Some(a) => (true, a),
            None => (false, x.clone()),
        };
        Tensor::from_dispatch(burn::backend::Dispatch::fused_block_matmul(
            x.into_dispatch(),
            norm_w.into_dispatch(),
            addend.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.scales.clone().into_dispatch(),
            self.offsets.clone().into_dispatch(),
            norm.map_or(0.0, |n| n.eps),
            self.packing,
            norm.is_some(),
            add,
        ))
    }

    /// `silu(g)·u` of `[g | u] = norm(x) · Wᵀ`, this matrix holding the gate rows then the up
    /// rows, in one dispatch.
    pub fn norm_gate_up(&self, x: Tensor<2>, norm: NormWeight<'_>) -> Tensor<2> {
        Tensor::from_dispatch(burn::backend::Dispatch::fused_gate_up(
            x.into_dispatch(),
            norm.weight.clone().into_dispatch(),
            self.words.clone().into_dispatch(),
            self.scales.clone().into_dispatch(),
            self.offsets.clone().into_dispatch(),
            norm.eps,
            self.packing,
        ))
    }

    /// The matrices' rows one after another, as one matrix of the widest of their packings
    /// (the others [widened](DeviceBlocks::widen) to it), or `None` when their widths differ.
    pub fn stack(parts: &[&DeviceBlocks]) -> Option<DeviceBlocks> {
        let first = parts.first()?;
        if parts.iter().any(|p| p.dims()[1] != first.dims()[1]) {
            return None;
        }
        let packing = parts.iter().map(|p| p.packing).max()?;
        let parts: Vec<DeviceBlocks> = parts.iter().map(|p| p.widen(packing)).collect();
        let cat2 = |f: &dyn Fn(&DeviceBlocks) -> Tensor<2>| Tensor::cat(parts.iter().map(f).collect(), 0);
        Some(DeviceBlocks {
            words: Tensor::cat(parts.iter().map(|p| p.words.clone()).collect(), 0),
            scales: cat2(&|p| p.scales.clone()),
            offsets: cat2(&|p| p.offsets.clone()),
            packing,
        })
    }
}

/// One sequence's grouped-query attention over its cache, in one dispatch; see
/// [`DecodeOps::fused_decode_attention`]. Returns `(out, keys, values)`.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    qkv: Tensor<2>,
    keys: Tensor<3>,
    values: Tensor<3>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    out: Tensor<2>,
    row: usize,
    start: usize,
    dims: AttentionDims,
) -> (Tensor<2>, Tensor<3>, Tensor<3>) {
    let (out, keys, values) = burn::backend::Dispatch::fused_decode_attention(
        qkv.into_dispatch(),
        keys.into_dispatch(),
        values.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        out.into_dispatch(),
        row,
        start,
        dims,
    );
    (Tensor::from_dispatch(out), Tensor::from_dispatch(keys), Tensor::from_dispatch(values))
}

/// The log-normalisers and the [`CANDIDATES`] most likely tokens of each row of `logits`, in
/// one dispatch, row `r`'s second normaliser at `temperatures[r]` (one per row); see
/// [`DecodeOps::top_candidates`].
pub fn top_candidates(logits: Tensor<2>, temperatures: &[f32]) -> Tensor<2> {
    let inverse: Vec<f32> = temperatures.iter().map(|t| 1.0 / t).collect();
    let inverse =
        Tensor::<1>::from_data(burn::tensor::TensorData::new(inverse, [temperatures.len()]), &logits.device());
    Tensor::from_dispatch(burn::backend::Dispatch::top_candidates(logits.into_dispatch(), inverse.into_dispatch()))
}
