//! The layers a latent-diffusion model is built of, in burn on `[batch, channels, height,
//! width]` images: 2-D convolutions, group normalisation, nearest-neighbour upsampling and
//! multi-head attention over a sequence, each loaded from a component's weights by name.

use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use super::DiffusionError;
use super::weights::Component;
use crate::model::layers::{LayerNorm, Linear, is_flex, upload};

/// A 2-D convolution (`{name}.weight` `[out, in, k, k]`, `{name}.bias`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
    pub in_channels: usize,
    pub out_channels: usize,
}

impl Conv2d {
    /// `stride` and `padding` as the model's code fixes them (the file holds only the kernel).
    pub fn load(
        w: &Component,
        name: &str,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Result<Self, DiffusionError> {
        let weight = w.read(&format!("{name}.weight"))?;
        let [out, inp, kh, kw] = match weight.shape.as_slice() {
            &[o, i, h, k] => [o, i, h, k],
            // A 1×1 convolution saved as a linear layer (attention projections of old VAEs
            // are the other way round: both are accepted).
            &[o, i] => [o, i, 1, 1],
            other => {
                return Err(DiffusionError::Shape(format!("{}: a convolution of shape {other:?}", w.name_of(name))));
            }
        };
        if kh != kw || kh == 0 || kh > 7 {
            return Err(DiffusionError::Shape(format!("{}: a {kh}×{kw} kernel", w.name_of(name))));
        }
        let bias = w.read_opt(&format!("{name}.bias"), out)?.map(|b| upload(b, [out], device));
        Ok(Self {
            weight: upload(weight.data, [out, inp, kh, kw], device),
            bias,
            options: ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
            in_channels: inp,
            out_channels: out,
        })
    }

    /// A 3×3 convolution with padding 1 (the shape-keeping one every block uses), or a 1×1
    /// without, by what the file holds.
    pub fn same(w: &Component, name: &str, device: &Device) -> Result<Self, DiffusionError> {
        let conv = Self::load(w, name, 1, 0, device)?;
        let k = conv.weight.dims()[2];
        Ok(Self { options: ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], 1), ..conv })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let bands = self.bands_for(&x);
        if bands > 1 {
            return self.forward_in_bands(x, bands);
        }
        conv2d(x, self.weight.clone(), self.bias.clone(), self.options.clone())
    }

    /// How many bands of output rows to compute on threads of their own: on flex, whose
    /// convolution runs on the calling thread alone, one per thread this one may use
    /// ([`with_threads`]) when the product is large enough to pay for the split; else 1.
    fn bands_for(&self, x: &Tensor<4>) -> usize {
        let [n, c, _, _] = x.dims();
        let (out_h, out_w) = self.output_size(x);
        let k = self.weight.dims()[2];
        split_threads(&x.device(), n * out_h * out_w * self.out_channels * c * k * k).min(out_h / 2).max(1)
    }

    fn output_size(&self, x: &Tensor<4>) -> (usize, usize) {
        let [_, _, h, w] = x.dims();
        let k = self.weight.dims()[2];
        let side = |len: usize, axis: usize| {
            let (before, after) = self.options.padding[axis];
            (len + before + after).saturating_sub(k) / self.options.stride[axis] + 1
        };
        (side(h, 0), side(w, 1))
    }

    /// The convolution as `bands` horizontal bands of output rows, each on its own thread: a
    /// band reads the input rows its kernel reaches, padded at the image's edges as the whole
    /// would be. The same products as one call, on every core.
    fn forward_in_bands(&self, x: Tensor<4>, bands: usize) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let (out_h, _) = self.output_size(&x);
        let k = self.weight.dims()[2];
        let (s, (pad_top, _)) = (self.options.stride[0], self.options.padding[0]);
        let run = |rows: std::ops::Range<usize>| {
            let (r0, r1) = (rows.start, rows.end);
            // Input rows r0·s − pad_top .. (r1 − 1)·s − pad_top + k, zeros outside the image.
            let start = (r0 * s) as isize - pad_top as isize;
            let end = ((r1 - 1) * s + k) as isize - pad_top as isize;
            let (lo, hi) = (start.max(0) as usize, (end.min(h as isize)).max(0) as usize);
            let padding = [((lo as isize - start) as usize, (end - hi as isize) as usize), self.options.padding[1]];
            let options = ConvOptions::new_with_padding(self.options.stride, padding, [1, 1], 1);
            let band = x.clone().slice([0..n, 0..c, lo..hi, 0..w]);
            conv2d(band, self.weight.clone(), self.bias.clone(), options)
        };
        Tensor::cat(on_threads(out_h, bands, run), 2)
    }
}

/// The threads work on `device` from this thread may spread over: on flex, whose operations run
/// on the calling thread alone, the compute pool's or what [`with_threads`] allows; else 1.
pub fn threads_here(device: &Device) -> usize {
    if is_flex(device) { available_threads() } else { 1 }
}

fn available_threads() -> usize {
    THREADS.get().unwrap_or_else(rayon::current_num_threads).max(1)
}

/// How many threads `work` multiply-adds (or value passes) on `device` are split over:
/// [`threads_here`] when the work pays for the split, else 1.
fn split_threads(device: &Device, work: usize) -> usize {
    if work < MIN_SPLIT_WORK { 1 } else { threads_here(device) }
}

/// `f` over `parts` consecutive ranges of `0..len`, each on a thread of its own (the first on
/// this one), the results in order. Each part may split its own work over its share of the
/// threads this one had.
pub fn on_threads<T: Send>(len: usize, parts: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let parts = parts.max(1);
    let ranges: Vec<_> = (0..parts).map(|b| b * len / parts..(b + 1) * len / parts).filter(|r| !r.is_empty()).collect();
    let Some(first) = ranges.first().cloned() else { return Vec::new() };
    let share = (available_threads() / ranges.len()).max(1);
    std::thread::scope(|scope| {
        let f = &f;
        let rest: Vec<_> =
            ranges[1..].iter().cloned().map(|range| scope.spawn(move || with_threads(share, || f(range)))).collect();
        let mut outputs = vec![with_threads(share, || f(first))];
        // A panic on a thread is the operation's own: raised here as it would be unsplit.
        outputs.extend(rest.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))));
        outputs
    })
}

/// Work below which an operation runs unsplit.
const MIN_SPLIT_WORK: usize = 1 << 24;

thread_local! {
    /// The threads this thread's flex work may split over (`None`: the compute pool's).
    static THREADS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's flex work split over at most `threads` threads (work already
/// spread over threads by the caller does not split again).
pub fn with_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    /// Puts the caller's allowance back, even when `f` panics (the thread may be a pool's,
    /// reused after the panic is caught).
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREADS.set(self.0);
        }
    }
    let _restore = Restore(THREADS.replace(Some(threads)));
    f()
}

/// Group normalisation over `[batch, channels, h, w]` (`torch.nn.GroupNorm`, biased variance).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor<4>,
    bias: Tensor<4>,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn load(
        w: &Component,
        name: &str,
        channels: usize,
        groups: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, DiffusionError> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(DiffusionError::Config(format!("{channels} channels cannot be split into {groups} groups")));
        }
        let weight = w.read_sized(&format!("{name}.weight"), channels)?;
        let bias = w.read_sized(&format!("{name}.bias"), channels)?;
        Ok(Self {
            weight: upload(weight, [1, channels, 1, 1], device),
            bias: upload(bias, [1, channels, 1, 1], device),
            groups,
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.apply(x, false)
    }

    /// `silu(norm(x))`, how every resnet and output layer uses it.
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.apply(x, true)
    }

    /// On flex, large images are normalised a run of groups per thread (groups are independent).
    fn apply(&self, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        // About ten passes over the values: mean, variance, normalise, scale, shift, SiLU.
        let parts = split_threads(&x.device(), 10 * n * c * h * w).min(self.groups);
        if parts <= 1 {
            return Self::normalise(x, self.weight.clone(), self.bias.clone(), self.groups, self.eps, then_silu);
        }
        let per = c / self.groups;
        let outputs = on_threads(self.groups, parts, |groups| {
            let channels = groups.start * per..groups.end * per;
            Self::normalise(
                x.clone().slice([0..n, channels.clone(), 0..h, 0..w]),
                self.weight.clone().slice([0..1, channels.clone(), 0..1, 0..1]),
                self.bias.clone().slice([0..1, channels, 0..1, 0..1]),
                groups.len(),
                self.eps,
                then_silu,
            )
        });
        Tensor::cat(outputs, 1)
    }

    fn normalise(
        x: Tensor<4>,
        weight: Tensor<4>,
        bias: Tensor<4>,
        groups: usize,
        eps: f64,
        then_silu: bool,
    ) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let grouped = x.reshape([n, groups, (c / groups) * h * w]);
        let (var, mean) = grouped.clone().var_mean_bias(2);
        let normed = (grouped - mean) * (var + eps).sqrt().recip();
        let out = normed.reshape([n, c, h, w]) * weight + bias;
        if then_silu { silu(out) } else { out }
    }
}

/// Nearest-neighbour upsampling by 2 (`F.interpolate(scale_factor=2, mode="nearest")`).
pub fn upsample_nearest2(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n * c, h, 1, w, 1]).repeat_dim(2, 2).repeat_dim(4, 2).reshape([n, c, 2 * h, 2 * w])
}

/// Nearest-neighbour resizing to `height`×`width` (`F.interpolate(size=…, mode="nearest")`:
/// source index `⌊i·in/out⌋`).
pub fn resize_nearest(x: Tensor<4>, height: usize, width: usize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if (height, width) == (2 * h, 2 * w) {
        return upsample_nearest2(x);
    }
    let device = x.device();
    let index = |out: usize, inp: usize| {
        let ids: Vec<i64> = (0..out).map(|i| ((i * inp) / out) as i64).collect();
        Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(ids, [out]), &device)
    };
    x.select(2, index(height, h)).select(3, index(width, w))
}

/// `[batch, channels, h, w]` → `[batch, h·w, channels]`.
pub fn to_sequence(x: Tensor<4>) -> Tensor<3> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).swap_dims(1, 2)
}

/// `[batch, h·w, channels]` → `[batch, channels, h, w]`.
pub fn to_image(x: Tensor<3>, h: usize, w: usize) -> Tensor<4> {
    let [n, _, c] = x.dims();
    x.swap_dims(1, 2).reshape([n, c, h, w])
}

/// A linear layer applied to every position of `[batch, len, in]` (on flex, positions split
/// over threads when large).
pub fn linear3(layer: &Linear, x: Tensor<3>) -> Result<Tensor<3>, DiffusionError> {
    let [n, len, d] = x.dims();
    let parts = split_threads(&x.device(), n * len * d * layer.out_features()).min(len / 2);
    if parts > 1 {
        let outputs = on_threads(len, parts, |rows| linear3_whole(layer, x.clone().slice([0..n, rows, 0..d])));
        return Ok(Tensor::cat(outputs.into_iter().collect::<Result<Vec<_>, _>>()?, 1));
    }
    linear3_whole(layer, x)
}

fn linear3_whole(layer: &Linear, x: Tensor<3>) -> Result<Tensor<3>, DiffusionError> {
    let [n, len, d] = x.dims();
    let y = layer.forward(x.reshape([n * len, d]))?;
    let out = y.dims()[1];
    Ok(y.reshape([n, len, out]))
}

/// A layer norm's weight and bias (`{name}.weight`, `{name}.bias`).
pub fn layer_norm(
    w: &Component,
    name: &str,
    dim: usize,
    eps: f64,
    device: &Device,
) -> Result<LayerNorm, DiffusionError> {
    let weight = w.read(&format!("{name}.weight"))?;
    let bias = w.read(&format!("{name}.bias"))?;
    Ok(LayerNorm::from_host(&w.name_of(name), weight, bias, dim, eps, device)?)
}

/// A linear layer `{name}.weight` `[out, in]` (a 1×1 convolution's `[out, in, 1, 1]` too), its
/// bias if the file has one.
pub fn linear(w: &Component, name: &str, device: &Device) -> Result<Linear, DiffusionError> {
    let mut weight = w.read(&format!("{name}.weight"))?;
    if let &[o, i, 1, 1] = weight.shape.as_slice() {
        weight.shape = vec![o, i];
    }
    let [out, inp] = match weight.shape.as_slice() {
        &[o, i] => [o, i],
        other => return Err(DiffusionError::Shape(format!("{}: a linear layer of shape {other:?}", w.name_of(name)))),
    };
    let bias = w.read_opt(&format!("{name}.bias"), out)?;
    let bias = bias.map(|data| crate::model::weights::HostTensor { shape: vec![out], data });
    Ok(Linear::from_host(&w.name_of(name), weight, bias, [out, inp], device)?)
}

/// Most attention scores one product makes (128 MiB of f32): a 1024-pixel SD 1.5 image attends
/// over 16,384 positions, whose full score matrix would take 17 GiB under guidance.
const MAX_SCORES: usize = 32 << 20;

/// Scaled dot-product attention of `q` `[batch, lq, heads·d]` over `k`, `v` `[batch, lk, heads·d]`,
/// the queries taken in chunks that keep the score matrix under [`MAX_SCORES`].
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, causal: bool) -> Tensor<3> {
    attention_within(q, k, v, heads, causal, MAX_SCORES)
}

/// [`attention`] with at most `max_scores` scores a product.
fn attention_within(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    causal: bool,
    max_scores: usize,
) -> Tensor<3> {
    let [n, lq, width] = q.dims();
    let lk = k.dims()[1];
    // On flex, queries split over threads (each attends to all keys; causal masks stay whole).
    let parts = if causal { 1 } else { split_threads(&q.device(), 2 * n * lq * lk * width).min(lq / 2) };
    if parts > 1 {
        let outputs = on_threads(lq, parts, |rows| {
            attention_within(q.clone().slice([0..n, rows, 0..width]), k.clone(), v.clone(), heads, false, max_scores)
        });
        return Tensor::cat(outputs, 1);
    }
    let rows = (max_scores / (n * heads * lk).max(1)).max(1);
    if rows >= lq || causal {
        return attention_block(q, k, v, heads, causal);
    }
    let chunks = (0..lq)
        .step_by(rows)
        .map(|start| {
            let end = (start + rows).min(lq);
            attention_block(q.clone().slice([0..n, start..end, 0..width]), k.clone(), v.clone(), heads, false)
        })
        .collect();
    Tensor::cat(chunks, 1)
}

fn attention_block(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, causal: bool) -> Tensor<3> {
    let [n, lq, width] = q.dims();
    let lk = k.dims()[1];
    let d = width / heads;
    let split = |x: Tensor<3>, len: usize| x.reshape([n, len, heads, d]).swap_dims(1, 2);
    let (q, k, v) = (split(q, lq), split(k, lk), split(v, lk));
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (d as f64).sqrt());
    if causal {
        let mask = Tensor::<2, burn::tensor::Bool>::tril_mask([lq, lk], 0, &scores.device());
        scores = scores.mask_fill(mask.unsqueeze::<4>(), f32::NEG_INFINITY);
    }
    softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([n, lq, width])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn tensor(shape: [usize; 3], seed: usize) -> Tensor<3> {
        let len = shape.iter().product();
        let data: Vec<f32> = (0..len).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0).collect();
        Tensor::from_data(TensorData::new(data, shape), &Device::flex())
    }

    #[test]
    fn attention_in_chunks_of_queries_is_attention_whole() {
        let (q, k, v) = (tensor([2, 37, 16], 1), tensor([2, 23, 16], 2), tensor([2, 23, 16], 3));
        let whole = attention_within(q.clone(), k.clone(), v.clone(), 4, false, usize::MAX);
        // 2 × 4 × 23 scores a query row: 5 rows a chunk, the last one short.
        let chunked = attention_within(q, k, v, 4, false, 2 * 4 * 23 * 5);
        let (a, b) = (whole.into_data().try_to_vec::<f32>().unwrap(), chunked.into_data().try_to_vec::<f32>().unwrap());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "chunked attention differs by {worst}");
    }

    #[test]
    fn attention_and_projections_split_over_threads_are_the_same() {
        let values = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
        let worst = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        // 2 × 1024 × 1024 × 8 multiply-adds: at the split's threshold.
        let (q, k, v) = (tensor([1, 1024, 8], 1), tensor([1, 1024, 8], 2), tensor([1, 1024, 8], 3));
        let one = with_threads(1, || attention(q.clone(), k.clone(), v.clone(), 2, false));
        let two = with_threads(2, || attention(q, k, v, 2, false));
        assert!(worst(values(one), values(two)) < 1e-6);

        let weight =
            crate::model::weights::HostTensor { shape: vec![128, 128], data: values(tensor([1, 128, 128], 4)) };
        let layer = Linear::from_host("test", weight, None, [128, 128], &Device::flex()).unwrap();
        let x = tensor([1, 1024, 128], 5);
        let one = with_threads(1, || linear3(&layer, x.clone())).unwrap();
        let two = with_threads(2, || linear3(&layer, x)).unwrap();
        assert_eq!(one.dims(), two.dims());
        assert!(worst(values(one), values(two)) < 1e-6);
    }

    #[test]
    fn group_norm_split_over_threads_is_the_same() {
        // 10 passes over 2M values: past the split's threshold.
        let x = tensor([1, 8, 512 * 512], 6).reshape([1, 8, 512, 512]);
        let weight = tensor([1, 1, 8], 7).reshape([1, 8, 1, 1]);
        let bias = tensor([1, 1, 8], 8).reshape([1, 8, 1, 1]);
        let norm = GroupNorm { weight, bias, groups: 4, eps: 1e-5 };
        for silu in [false, true] {
            let one = with_threads(1, || norm.apply(x.clone(), silu)).into_data().try_to_vec::<f32>().unwrap();
            let two = with_threads(3, || norm.apply(x.clone(), silu)).into_data().try_to_vec::<f32>().unwrap();
            let worst = one.iter().zip(&two).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-6, "silu {silu}: split group norm differs by {worst}");
        }
    }

    #[test]
    fn a_convolution_in_bands_is_the_convolution_whole() {
        let image =
            |shape: [usize; 4], seed: usize| tensor([shape[0], shape[1], shape[2] * shape[3]], seed).reshape(shape);
        // 3×3 same, strided with odd and even heights (SD's downsamplers), 1×1.
        for (k, stride, pad, h) in [(3, 1, 1, 13), (3, 2, 1, 13), (3, 2, 1, 12), (1, 1, 0, 9)] {
            let x = image([2, 5, h, 11], 1);
            let conv = Conv2d {
                weight: image([7, 5, k, k], 2),
                bias: Some(tensor([1, 1, 7], 3).reshape([7])),
                options: ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1),
                in_channels: 5,
                out_channels: 7,
            };
            let whole = conv2d(x.clone(), conv.weight.clone(), conv.bias.clone(), conv.options.clone());
            let want = whole.clone().into_data().try_to_vec::<f32>().unwrap();
            for bands in [2, 3, 4] {
                let banded = conv.forward_in_bands(x.clone(), bands);
                assert_eq!(banded.dims(), whole.dims(), "k {k} stride {stride} h {h} in {bands} bands");
                let got = banded.into_data().try_to_vec::<f32>().unwrap();
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "k {k} stride {stride} h {h} in {bands} bands differs by {worst}");
            }
        }
    }
}
