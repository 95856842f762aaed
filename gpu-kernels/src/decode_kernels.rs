//! The CubeCL kernels behind [`DecodeOps`](crate::decode::DecodeOps), and their launch.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{CubeCount, CubeDim};

use crate::Packing;
use crate::decode::{
    ATTENTION_CHUNK, ATTENTION_UNITS, AttentionDims, CANDIDATES, DecodeOps, LANES, MAX_ATTENTION_SPLITS, MAX_HEAD_DIM,
    ROWS, SELECT_UNITS,
};
use crate::kernels::row_dot;

/// `SELECT_UNITS` as a power of two.
const SELECT_LOG2: usize = 8;
const _: () = assert!(SELECT_UNITS == 1 << SELECT_LOG2);

/// `LANES` as a power of two.
const LANES_LOG2: usize = 3;
const _: () = assert!(LANES == 1 << LANES_LOG2);

/// This lane's part of `Σ x[xb + c]²` over the columns `lane`, `lane + LANES`, ….
#[cube]
fn lane_squares(x: &Tensor<f32>, xb: usize, cols: usize, lane: usize) -> f32 {
    let mut ss = 0.0f32;
    let mut c = lane;
    while c < cols {
        let v = x[xb + c];
        ss += v * v;
        c += LANES;
    }
    ss
}

/// Adds the `LANES` partial sums of each row slot in `sh` into its first lane's entry (the
/// slot's units all write theirs before the cube's first barrier here).
#[cube]
fn sum_lanes(sh: &mut Shared<[f32]>, unit: usize, lane: usize) {
    #[unroll]
    for i in 0..LANES_LOG2 {
        let half = comptime!(LANES >> (i + 1));
        if lane < half {
            sh[unit] += sh[unit + half];
        }
        sync_cube();
    }
}

/// `1 / sqrt(mean square + eps)` from a row slot's summed squares.
#[cube]
fn inv_rms(squares: f32, cols: usize, eps: f32) -> f32 {
    1.0f32 / (squares / f32::cast_from(cols) + eps).sqrt()
}

/// Cube `(i, t)` computes rows `i·ROWS ..` of token `t`, `LANES` units a row; see
/// `DecodeOps::fused_block_matmul`. Each row's lanes also sum the squares of the row of `x`
/// themselves (a few hundred values): the norm then costs no barrier of its own.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn fused_block_matmul_kernel(
    x: &Tensor<f32>,
    norm_w: &Tensor<f32>,
    addend: &Tensor<f32>,
    words: &Tensor<i32>,
    scales: &Tensor<f32>,
    offsets: &Tensor<f32>,
    out: &mut Tensor<f32>,
    eps: f32,
    #[comptime] packing: Packing,
    #[comptime] norm: bool,
    #[comptime] add: bool,
) {
    let lane = UNIT_POS_X as usize;
    let slot = UNIT_POS_Y as usize;
    let unit = slot * LANES + lane;
    let t = CUBE_POS_Y as usize;
    let rows = out.shape(1);
    let cols = x.shape(1);
    let row = CUBE_POS_X as usize * ROWS + slot;
    let xb = t * cols;
    let mut sh = Shared::<[f32]>::new_slice(comptime!(LANES * ROWS));
    let mut squares = Shared::<[f32]>::new_slice(comptime!(LANES * ROWS));
    let mut partial = 0.0f32;
    if row < rows {
        partial = row_dot(x, xb, norm_w, words, scales, offsets, row, lane, LANES, norm, packing);
    }
    sh[unit] = partial;
    if comptime!(norm) {
        squares[unit] = lane_squares(x, xb, cols, lane);
    }
    sync_cube();
    sum_lanes(&mut sh, unit, lane);
    if comptime!(norm) {
        sum_lanes(&mut squares, unit, lane);
    }
    if lane == 0 && row < rows {
        let mut y = sh[unit];
        if comptime!(norm) {
            y *= inv_rms(squares[unit], cols, eps);
        }
        if comptime!(add) {
            y += addend[t * rows + row];
        }
        out[t * rows + row] = y;
    }
}

/// Cube `(i, t)` computes gated rows `i·ROWS ..` of token `t`; see `DecodeOps::fused_gate_up`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn fused_gate_up_kernel(
    x: &Tensor<f32>,
    norm_w: &Tensor<f32>,
    words: &Tensor<i32>,
    scales: &Tensor<f32>,
    offsets: &Tensor<f32>,
    out: &mut Tensor<f32>,
    eps: f32,
    #[comptime] packing: Packing,
) {
    let lane = UNIT_POS_X as usize;
    let slot = UNIT_POS_Y as usize;
    let unit = slot * LANES + lane;
    let t = CUBE_POS_Y as usize;
    let n = out.shape(1);
    let cols = x.shape(1);
    let row = CUBE_POS_X as usize * ROWS + slot;
    let xb = t * cols;
    let mut gate = Shared::<[f32]>::new_slice(comptime!(LANES * ROWS));
    let mut up = Shared::<[f32]>::new_slice(comptime!(LANES * ROWS));
    let mut squares = Shared::<[f32]>::new_slice(comptime!(LANES * ROWS));
    let mut g = 0.0f32;
    let mut u = 0.0f32;
    if row < n {
        g = row_dot(x, xb, norm_w, words, scales, offsets, row, lane, LANES, true, packing);
        u = row_dot(x, xb, norm_w, words, scales, offsets, row + n, lane, LANES, true, packing);
    }
    gate[unit] = g;
    up[unit] = u;
    squares[unit] = lane_squares(x, xb, cols, lane);
    sync_cube();
    sum_lanes(&mut gate, unit, lane);
    sum_lanes(&mut up, unit, lane);
    sum_lanes(&mut squares, unit, lane);
    if lane == 0 && row < n {
        let scale = inv_rms(squares[unit], cols, eps);
        let g = scale * gate[unit];
        let u = scale * up[unit];
        out[t * n + row] = g / (1.0 + (-g).exp()) * u;
    }
}

/// Cube `(h, s)` is query head `h` of step row `row` over split `s` of the positions (`chunk`
/// of them; one split when the cache is short); see `DecodeOps::fused_decode_attention`. The
/// query and the new key are rotated (rotate-half form) into shared memory; in the last split
/// the first head of each key/value group writes the new key and value into the cache, and
/// every head reads position `start` from shared memory rather than from the cache, which
/// another cube may not have written yet. Scores go `ATTENTION_UNITS` positions at a time, one
/// per unit, under an online softmax. One split writes the head's output; several each write
/// their running maximum, normaliser and unnormalised output to `partial` for
/// [`combine_splits_kernel`] (flash-decoding: a long cache is read by many cubes at once, not
/// by one cube per head).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn fused_decode_attention_kernel(
    qkv: &Tensor<f32>,
    keys: &mut Tensor<f32>,
    values: &mut Tensor<f32>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    out: &mut Tensor<f32>,
    partial: &mut Tensor<f32>,
    row: u32,
    start: u32,
    kv_heads: u32,
    head_dim: u32,
    scale: f32,
    chunk: u32,
) {
    let u = UNIT_POS_X as usize;
    let h = CUBE_POS_X as usize;
    let heads = CUBE_COUNT_X as usize;
    let split = CUBE_POS_Y as usize;
    let splits = CUBE_COUNT_Y as usize;
    let hd = head_dim as usize;
    let half = hd / 2;
    let groups = kv_heads as usize;
    let g = h / (heads / groups);
    // `%`: CubeCL expands operators, not `is_multiple_of`.
    #[allow(clippy::manual_is_multiple_of)]
    let writer = h % (heads / groups) == 0;
    let start = start as usize;
    let len = start + 1;
    let first = split * chunk as usize;
    let end = len.min(first + chunk as usize);
    let cap = keys.shape(1);
    let q_dim = heads * hd;
    let kv_dim = groups * hd;
    let mut q_s = Shared::<[f32]>::new_slice(MAX_HEAD_DIM);
    let mut k_s = Shared::<[f32]>::new_slice(MAX_HEAD_DIM);
    let mut v_s = Shared::<[f32]>::new_slice(MAX_HEAD_DIM);
    let mut acc = Shared::<[f32]>::new_slice(MAX_HEAD_DIM);
    let mut sc = Shared::<[f32]>::new_slice(ATTENTION_UNITS);

    // Row `row` of the step's q/k/v, rope tables and output.
    let row = row as usize;
    let rb = row * qkv.shape(1);
    let qb = rb + h * hd;
    let kb = rb + q_dim + g * hd;
    let tb = row * hd;
    let ob = row * q_dim + h * hd;
    let mut d = u;
    while d < hd {
        // rotate-half: element d pairs with d ± half, negated in the first half.
        let partner = (d + half) % hd;
        let sign = 2.0 * f32::cast_from(d >= half) - 1.0;
        let qp = sign * qkv[qb + partner];
        let kp = sign * qkv[kb + partner];
        q_s[d] = qkv[qb + d] * cos[tb + d] + qp * sin[tb + d];
        let k = qkv[kb + d] * cos[tb + d] + kp * sin[tb + d];
        let v = qkv[kb + kv_dim + d];
        k_s[d] = k;
        v_s[d] = v;
        if writer && split + 1 == splits {
            let at = (g * cap + start) * hd + d;
            keys[at] = k;
            values[at] = v;
        }
        acc[d] = 0.0;
        d += ATTENTION_UNITS;
    }
    sync_cube();

    // Below every score a real one can reach (WGSL has no infinity literal).
    let mut m = 0.0f32;
    m -= 3.0e38;
    let mut l = 0.0f32;
    let mut p0 = first;
    while p0 < end {
        let p = p0 + u;
        let mut s = 0.0f32;
        s -= 3.0e38;
        if p < end {
            let mut dot = 0.0f32;
            if p < start {
                let base = (g * cap + p) * hd;
                for i in 0..hd {
                    dot += q_s[i] * keys[base + i];
                }
            } else {
                for i in 0..hd {
                    dot += q_s[i] * k_s[i];
                }
            }
            s = dot * scale;
        }
        sc[u] = s;
        sync_cube();
        let mut top = m;
        for j in 0..ATTENTION_UNITS {
            let sj = sc[j];
            if sj > top {
                top = sj;
            }
        }
        // Every unit has read the scores before they are replaced by weights.
        sync_cube();
        let mut w = 0.0f32;
        if p < end {
            w = (s - top).exp();
        }
        sc[u] = w;
        sync_cube();
        let carry = (m - top).exp();
        let mut total = 0.0f32;
        for j in 0..ATTENTION_UNITS {
            total += sc[j];
        }
        l = l * carry + total;
        let mut d = u;
        while d < hd {
            let mut a = acc[d] * carry;
            for j in 0..ATTENTION_UNITS {
                let pj = p0 + j;
                // Positions past `end` are another split's (their weight here is 0).
                if pj < start && pj < end {
                    a += sc[j] * values[(g * cap + pj) * hd + d];
                } else if pj == start {
                    a += sc[j] * v_s[d];
                }
            }
            acc[d] = a;
            d += ATTENTION_UNITS;
        }
        m = top;
        // Every unit has used this chunk's weights before the next chunk's scores land.
        sync_cube();
        p0 += ATTENTION_UNITS;
    }
    let mut d = u;
    if splits == 1 {
        while d < hd {
            out[ob + d] = acc[d] / l;
            d += ATTENTION_UNITS;
        }
    } else {
        let pb = (h * splits + split) * (hd + 2);
        while d < hd {
            partial[pb + d] = acc[d];
            d += ATTENTION_UNITS;
        }
        if u == 0 {
            partial[pb + hd] = m;
            partial[pb + hd + 1] = l;
        }
    }
}

/// Cube `h` joins head `h`'s splits from `partial` (`[heads, splits, head_dim + 2]`: output
/// sums, maximum, normaliser) into its output in row `row` of `out`: each split's sums and
/// normaliser rescaled to the largest maximum, as the online softmax does within a split.
#[cube(launch_unchecked)]
fn combine_splits_kernel(partial: &Tensor<f32>, out: &mut Tensor<f32>, row: u32, head_dim: u32) {
    let u = UNIT_POS_X as usize;
    let h = CUBE_POS_X as usize;
    let heads = CUBE_COUNT_X as usize;
    let hd = head_dim as usize;
    let splits = partial.shape(1);
    let width = hd + 2;
    let hb = h * splits * width;
    let mut top = 0.0f32;
    top -= 3.0e38;
    for s in 0..splits {
        let m = partial[hb + s * width + hd];
        if m > top {
            top = m;
        }
    }
    let mut total = 0.0f32;
    for s in 0..splits {
        let b = hb + s * width;
        total += partial[b + hd + 1] * (partial[b + hd] - top).exp();
    }
    let ob = row as usize * heads * hd + h * hd;
    let mut d = u;
    while d < hd {
        let mut a = 0.0f32;
        for s in 0..splits {
            let b = hb + s * width;
            a += partial[b + d] * (partial[b + hd] - top).exp();
        }
        out[ob + d] = a / total;
        d += ATTENTION_UNITS;
    }
}

/// Whether `(v, i)` ranks before `(w, j)`: larger value first, lower id on ties.
#[cube]
fn ranks_before(v: f32, i: u32, w: f32, j: u32) -> bool {
    v > w || (v == w && i < j)
}

/// Cube `r` takes row `r`; see `DecodeOps::top_candidates`. The normalisers are tree
/// reductions over the cube; the candidates are `CANDIDATES` rounds of a cube-wide arg-max
/// among the entries ranked after the previous round's pick (so ties come out lower id first).
#[cube(launch_unchecked)]
fn top_candidates_kernel(logits: &Tensor<f32>, inv_temperatures: &Tensor<f32>, out: &mut Tensor<f32>) {
    let u = UNIT_POS_X as usize;
    let r = CUBE_POS_X as usize;
    let inv_temperature = inv_temperatures[r];
    let vocab = logits.shape(1);
    let base = r * vocab;
    let ob = r * (2 + 2 * CANDIDATES);
    let mut vals = Shared::<[f32]>::new_slice(SELECT_UNITS);
    let mut ids = Shared::<[u32]>::new_slice(SELECT_UNITS);

    // The row's largest logit.
    let mut top = 0.0f32;
    top -= 3.0e38;
    let mut c = u;
    while c < vocab {
        let l = logits[base + c];
        if l > top {
            top = l;
        }
        c += SELECT_UNITS;
    }
    vals[u] = top;
    sync_cube();
    #[unroll]
    for i in 0..SELECT_LOG2 {
        let half = comptime!(SELECT_UNITS >> (i + 1));
        if u < half && vals[u + half] > vals[u] {
            vals[u] = vals[u + half];
        }
        sync_cube();
    }
    let max = vals[0];
    sync_cube();

    // Σ exp(l - max) and Σ exp((l - max) / t).
    let mut sum = 0.0f32;
    let mut sum_t = 0.0f32;
    let mut c = u;
    while c < vocab {
        let d = logits[base + c] - max;
        sum += d.exp();
        sum_t += (d * inv_temperature).exp();
        c += SELECT_UNITS;
    }
    vals[u] = sum;
    sync_cube();
    #[unroll]
    for i in 0..SELECT_LOG2 {
        let half = comptime!(SELECT_UNITS >> (i + 1));
        if u < half {
            vals[u] += vals[u + half];
        }
        sync_cube();
    }
    let total = vals[0];
    sync_cube();
    vals[u] = sum_t;
    sync_cube();
    #[unroll]
    for i in 0..SELECT_LOG2 {
        let half = comptime!(SELECT_UNITS >> (i + 1));
        if u < half {
            vals[u] += vals[u + half];
        }
        sync_cube();
    }
    if u == 0 {
        out[ob] = max + total.ln();
        out[ob + 1] = max * inv_temperature + vals[0].ln();
    }
    sync_cube();

    // The candidates, one cube-wide arg-max per round.
    let mut prev_v = 0.0f32;
    prev_v += 3.0e38;
    let mut prev_i = 0u32;
    let mut first = true;
    for k in 0..CANDIDATES {
        let mut best_v = 0.0f32;
        best_v -= 3.0e38;
        // Past every id: ranks after any real entry of equal value.
        let mut best_i = vocab as u32;
        let mut c = u;
        while c < vocab {
            let l = logits[base + c];
            let id = c as u32;
            if (first || ranks_before(prev_v, prev_i, l, id)) && ranks_before(l, id, best_v, best_i) {
                best_v = l;
                best_i = id;
            }
            c += SELECT_UNITS;
        }
        vals[u] = best_v;
        ids[u] = best_i;
        sync_cube();
        #[unroll]
        for i in 0..SELECT_LOG2 {
            let half = comptime!(SELECT_UNITS >> (i + 1));
            if u < half && ranks_before(vals[u + half], ids[u + half], vals[u], ids[u]) {
                vals[u] = vals[u + half];
                ids[u] = ids[u + half];
            }
            sync_cube();
        }
        prev_v = vals[0];
        prev_i = ids[0];
        first = false;
        if u == 0 {
            out[ob + 2 + k] = prev_v;
            out[ob + 2 + CANDIDATES + k] = f32::cast_from(prev_i);
        }
        // Every unit has read this round's pick before the next round overwrites it.
        sync_cube();
    }
}

/// A new f32 tensor of `shape` on the device of `like`.
fn empty_like(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
}

/// The product grid: a cube per `ROWS` rows and token, `LANES × ROWS` units.
fn product_grid(rows: usize, tokens: usize) -> (CubeCount, CubeDim) {
    (CubeCount::Static(rows.div_ceil(ROWS) as u32, tokens as u32, 1), CubeDim::new_2d(LANES as u32, ROWS as u32))
}

/// A cache the kernel may write: itself when nothing else holds its buffer, else a copy.
fn writable(cache: CubeTensor) -> CubeTensor {
    let cache = into_contiguous(cache);
    if cache.can_mut() { cache } else { cache.copy() }
}

impl DecodeOps for CubeBackend {
    fn top_candidates(logits: FloatTensor<Self>, inv_temperatures: FloatTensor<Self>) -> FloatTensor<Self> {
        let (logits, inv_temperatures) = (into_contiguous(logits), into_contiguous(inv_temperatures));
        let rows = logits.meta.shape()[0];
        assert_eq!(inv_temperatures.meta.shape().num_elements(), rows, "a temperature for each row");
        let out = empty_like(&logits, Shape::new([rows, 2 + 2 * CANDIDATES]));
        // SAFETY: cube `r < rows` reads row `r` of `logits` (its width read in the kernel) and
        // entry `r` of `inv_temperatures` (one per row, checked above), and writes row `r` of
        // `out`, `2 + 2·CANDIDATES` wide as allocated here.
        unsafe {
            top_candidates_kernel::launch_unchecked(
                &out.client,
                CubeCount::Static(rows as u32, 1, 1),
                CubeDim::new_1d(SELECT_UNITS as u32),
                logits.into_tensor_arg(),
                inv_temperatures.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            );
        }
        out
    }

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
    ) -> FloatTensor<Self> {
        let [x, norm_w, addend, words, scales, offsets] =
            [x, norm_w, addend, words, scales, offsets].map(into_contiguous);
        let tokens = x.meta.shape()[0];
        let rows = scales.meta.shape()[0];
        let out = empty_like(&x, Shape::new([tokens, rows]));
        let (count, dim) = product_grid(rows, tokens);
        // SAFETY: cube (i, t) reads row t of `x` (`t` < its rows by the grid), blocks of rows
        // < `rows` (checked in the kernel) of planes `DeviceBlocks::new` sized for `x`'s
        // width, `norm_w` over that width and `addend` at `[t, row]`, both only when their flag
        // says the caller gave them with those shapes.
        unsafe {
            fused_block_matmul_kernel::launch_unchecked(
                &out.client,
                count,
                dim,
                x.into_tensor_arg(),
                norm_w.into_tensor_arg(),
                addend.into_tensor_arg(),
                words.into_tensor_arg(),
                scales.into_tensor_arg(),
                offsets.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                eps,
                packing,
                norm,
                add,
            );
        }
        out
    }

    fn fused_gate_up(
        x: FloatTensor<Self>,
        norm_w: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
        eps: f32,
        packing: Packing,
    ) -> FloatTensor<Self> {
        let [x, norm_w, words, scales, offsets] = [x, norm_w, words, scales, offsets].map(into_contiguous);
        let tokens = x.meta.shape()[0];
        let n = scales.meta.shape()[0] / 2;
        let out = empty_like(&x, Shape::new([tokens, n]));
        let (count, dim) = product_grid(n, tokens);
        // SAFETY: as for `fused_block_matmul`; rows `row` and `row + n` are < the matrix's
        // `2n` rows for every `row < n`.
        unsafe {
            fused_gate_up_kernel::launch_unchecked(
                &out.client,
                count,
                dim,
                x.into_tensor_arg(),
                norm_w.into_tensor_arg(),
                words.into_tensor_arg(),
                scales.into_tensor_arg(),
                offsets.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                eps,
                packing,
            );
        }
        out
    }

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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [qkv, cos, sin] = [qkv, cos, sin].map(into_contiguous);
        let (keys, values, out) = (writable(keys), writable(values), writable(out));
        let scale = 1.0 / (dims.head_dim as f32).sqrt();
        let splits = (start + 1).div_ceil(ATTENTION_CHUNK).min(MAX_ATTENTION_SPLITS);
        let chunk = (start + 1).div_ceil(splits);
        // One split writes the output itself; `partial` is then never read or written.
        let partial =
            empty_like(&qkv, Shape::new([dims.heads, splits, if splits > 1 { dims.head_dim + 2 } else { 1 }]));
        // SAFETY: the caller (`decode_attention`'s user, the model) gives `qkv` of rows of
        // `(heads + 2·kv_heads)·head_dim` values, rope tables and `out` (`heads·head_dim`
        // wide) with a row `row`, caches of `[kv_heads, capacity > start, head_dim]` and
        // `head_dim ≤ MAX_HEAD_DIM`; cube `h < heads` touches only head `h`'s query and output
        // in that row and its group's key/value rows.
        unsafe {
            fused_decode_attention_kernel::launch_unchecked(
                &out.client,
                CubeCount::Static(dims.heads as u32, splits as u32, 1),
                CubeDim::new_1d(ATTENTION_UNITS as u32),
                qkv.into_tensor_arg(),
                keys.clone().into_tensor_arg(),
                values.clone().into_tensor_arg(),
                cos.into_tensor_arg(),
                sin.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                partial.clone().into_tensor_arg(),
                row as u32,
                start as u32,
                dims.kv_heads as u32,
                dims.head_dim as u32,
                scale,
                chunk as u32,
            );
        }
        if splits > 1 {
            // SAFETY: `partial` is `[heads, splits, head_dim + 2]` as allocated above, written
            // whole by the attention cubes (every split holds at least one position); cube
            // `h < heads` writes head `h`'s outputs in row `row` of `out`, as the attention did.
            unsafe {
                combine_splits_kernel::launch_unchecked(
                    &out.client,
                    CubeCount::Static(dims.heads as u32, 1, 1),
                    CubeDim::new_1d(ATTENTION_UNITS as u32),
                    partial.into_tensor_arg(),
                    out.clone().into_tensor_arg(),
                    row as u32,
                    dims.head_dim as u32,
                );
            }
        }
        (out, keys, values)
    }
}
