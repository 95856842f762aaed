//! The layers a latent-diffusion model is built of, in burn on `[batch, channels, height,
//! width]` images: 2-D convolutions, group normalisation, nearest-neighbour upsampling and
//! multi-head attention over a sequence, each loaded from a component's weights by name.

use burn::tensor::activation::softmax;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use super::DiffusionError;
use super::weights::Component;
use crate::model::layers::{LayerNorm, Linear, upload};

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
        conv2d(x, self.weight.clone(), self.bias.clone(), self.options.clone())
    }
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
        let [n, c, h, w] = x.dims();
        let grouped = x.reshape([n, self.groups, (c / self.groups) * h * w]);
        let (var, mean) = grouped.clone().var_mean_bias(2);
        let normed = (grouped - mean) * (var + self.eps).sqrt().recip();
        normed.reshape([n, c, h, w]) * self.weight.clone() + self.bias.clone()
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

/// A linear layer applied to every position of `[batch, len, in]`.
pub fn linear3(layer: &Linear, x: Tensor<3>) -> Result<Tensor<3>, DiffusionError> {
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
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
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
}
