//! The small building blocks of a transformer block in burn: linear projections stored in the
//! layout the matmul wants, RMS normalisation and the SwiGLU feed-forward of the llama family
//! (on the CPU each runs as one of [`super::cpu`]'s operations), and the encoders' layer norm.

use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use std::sync::Arc;

use super::ModelError;
use super::cpu::{self, HostValues};
use super::weights::{HostTensor, WeightError};
use hearth_gpu_kernels::{DeviceBlocks, Packing};
use hearth_kernels::{Int8Matrix, PlaneWidth, QuantMatrix, ops};

/// From this many tokens a GPU product on block-quantized weights decodes the matrix to f32 and
/// runs burn's tuned matmul; below it, the fused kernel reads each weight once per token.
const GPU_GEMM_TOKENS: usize = 8;

/// Largest f32 copy a prompt product may decode a device matrix into (lavapipe's storage
/// buffers stop at 128 MiB; larger matrices, such as a big vocabulary's head, keep the fused
/// kernel).
const MAX_DECODED_BYTES: usize = 64 << 20;

/// Whether `device` is burn's CPU backend, where the CPU operations run.
pub(crate) fn is_flex(device: &Device) -> bool {
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// Converts host data to a device tensor of rank `D`.
pub(crate) fn upload<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// A device tensor's values on the host: a wait for the device and a copy, counted in
/// [`hearth_gpu_kernels::counters`].
pub(crate) fn read_back<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    let data = t.try_into_data().map_err(|e| ModelError::Execution(format!("reading the device's result: {e:?}")))?;
    hearth_gpu_kernels::counters::note_readback(data.bytes().len());
    data.try_to_vec::<f32>().map_err(|e| ModelError::Execution(format!("reading the device's result: {e:?}")))
}

/// Transposes a row-major `[rows, cols]` matrix.
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    // Blocked so both sides stay in cache for large matrices.
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    out[c * rows + r] = data[r * cols + c];
                }
            }
        }
    }
    out
}

/// A projection `y = x W + b`. A dense `W` is kept as `[in, out]`: transposed once at load,
/// because `x.matmul(w)` in that layout runs several times faster on wgpu than a transposed
/// view. A block-quantized `W` stays quantized: on the CPU in host memory, multiplied by the
/// kernels crate; on a GPU in device memory, decoded inside the GPU kernels.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor<2>>,
}

// Built once per layer when a model loads and never moved on a hot path: boxing the large
// variant would only add an indirection to every product.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum LinearWeight {
    Dense(Tensor<2>),
    /// `[out, in]` blocks, multiplied on the host (the CPU device's own memory).
    Quantized(Arc<QuantMatrix>),
    /// `[out, in]` blocks on a GPU.
    Device(DeviceBlocks),
    /// Dense weights as 8-bit integers with their bias, multiplied on the host.
    Int8(Arc<Int8Matrix>),
}

impl Linear {
    /// Builds the layer from a Hugging Face `[out, in]` weight (and an optional `[out]` bias).
    pub fn from_host(
        name: &str,
        weight: HostTensor,
        bias: Option<HostTensor>,
        expect: [usize; 2],
        device: &Device,
    ) -> Result<Self, WeightError> {
        let [out_f, in_f] = expect_matrix(name, &weight, expect)?;
        let bias = check_bias(name, bias, out_f, device)?;
        let weight = upload(transpose(&weight.data, out_f, in_f), [in_f, out_f], device);
        Ok(Self { weight: LinearWeight::Dense(weight), bias })
    }

    /// Builds the layer from a Hugging Face `[out, in]` weight (and an optional `[out]` bias)
    /// held as 8-bit integers on the host ([`Int8Matrix`]): for the CPU device, on CPUs that
    /// run its kernel, where products of many tokens run several times faster than in f32.
    pub fn from_host_int8(
        name: &str,
        weight: HostTensor,
        bias: Option<HostTensor>,
        expect: [usize; 2],
    ) -> Result<Self, WeightError> {
        let [out_f, in_f] = expect_matrix(name, &weight, expect)?;
        let matrix = Int8Matrix::quantize(&weight.data, out_f, in_f, bias.as_ref().map(|b| b.data.as_slice()))
            .map_err(|e| WeightError::Invalid { name: name.to_owned(), reason: e.to_string() })?;
        Ok(Self { weight: LinearWeight::Int8(Arc::new(matrix)), bias: None })
    }

    /// The layers' rows stacked into one block-quantized layer, when every one is quantized in
    /// the same format: projections of the same input then run as one product. On the host
    /// only layers without a bias stack; on a GPU the biases are stacked too (zeros for a
    /// layer without one).
    pub fn stack(parts: &[&Linear]) -> Option<Linear> {
        if let Some(devices) = parts
            .iter()
            .map(|l| match &l.weight {
                LinearWeight::Device(w) => Some(w),
                _ => None,
            })
            .collect::<Option<Vec<&DeviceBlocks>>>()
        {
            let weight = DeviceBlocks::stack(&devices)?;
            let bias = if parts.iter().any(|l| l.bias.is_some()) {
                let pieces = parts
                    .iter()
                    .zip(&devices)
                    .map(|(l, w)| match &l.bias {
                        Some(b) => b.clone(),
                        None => Tensor::zeros([1, w.dims()[0]], &w.device()),
                    })
                    .collect();
                Some(Tensor::cat(pieces, 1))
            } else {
                None
            };
            return Some(Self { weight: LinearWeight::Device(weight), bias });
        }
        let matrices: Option<Vec<&QuantMatrix>> = parts
            .iter()
            .map(|l| match (&l.weight, &l.bias) {
                (LinearWeight::Quantized(w), None) => Some(w.as_ref()),
                _ => None,
            })
            .collect();
        let stacked = QuantMatrix::stack(&matrices?).ok()?;
        Some(Self { weight: LinearWeight::Quantized(Arc::new(stacked)), bias: None })
    }

    /// The matrix when it is block-quantized on a GPU, and the bias (`[1, out]`).
    pub fn device_parts(&self) -> Option<(&DeviceBlocks, Option<&Tensor<2>>)> {
        match &self.weight {
            LinearWeight::Device(w) => Some((w, self.bias.as_ref())),
            _ => None,
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        match &self.weight {
            LinearWeight::Dense(w) => w.dims()[1],
            LinearWeight::Quantized(w) => w.rows(),
            LinearWeight::Device(w) => w.dims()[0],
            LinearWeight::Int8(w) => w.rows(),
        }
    }

    /// Builds the layer on a GPU from a block-quantized `[out, in]` weight, kept quantized on
    /// the device (the kernels decode every format the kernels crate reads).
    pub fn device_blocks(
        name: &str,
        weight: &QuantMatrix,
        bias: Option<HostTensor>,
        expect: [usize; 2],
        device: &Device,
    ) -> Result<Self, WeightError> {
        let shape_err = |expected: String| WeightError::Shape {
            name: name.to_owned(),
            expected,
            found: vec![weight.rows(), weight.cols()],
        };
        if [weight.rows(), weight.cols()] != expect {
            return Err(shape_err(format!("{expect:?}")));
        }
        let planes = weight.planes();
        let packing = match planes.width {
            PlaneWidth::Bytes => Packing::Bytes,
            PlaneWidth::Nibbles => Packing::Nibbles,
            PlaneWidth::SplitBytes => Packing::SplitBytes,
        };
        let blocks = DeviceBlocks::new(
            packing,
            weight.rows(),
            weight.cols(),
            planes.words,
            planes.scales,
            planes.offsets,
            device,
        )
        .map_err(|e| shape_err(e.to_string()))?;
        let bias = check_bias(name, bias, weight.rows(), device)?;
        Ok(Self { weight: LinearWeight::Device(blocks), bias })
    }

    /// Builds the layer from a block-quantized `[out, in]` weight (CPU devices only).
    pub fn quantized(
        name: &str,
        weight: Arc<QuantMatrix>,
        bias: Option<HostTensor>,
        expect: [usize; 2],
        device: &Device,
    ) -> Result<Self, WeightError> {
        if [weight.rows(), weight.cols()] != expect {
            return Err(WeightError::Shape {
                name: name.to_owned(),
                expected: format!("{expect:?}"),
                found: vec![weight.rows(), weight.cols()],
            });
        }
        let bias = check_bias(name, bias, weight.rows(), device)?;
        Ok(Self { weight: LinearWeight::Quantized(weight), bias })
    }

    /// `x`: `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, ModelError> {
        let y = match &self.weight {
            LinearWeight::Dense(w) => x.matmul(w.clone()),
            LinearWeight::Quantized(w) => {
                let [tokens, _] = x.dims();
                let x = HostValues::get(x)?;
                cpu::tensor(w.matmul(&x.values(), tokens), [tokens, w.rows()])
            }
            LinearWeight::Int8(w) => {
                let [tokens, _] = x.dims();
                let x = HostValues::get(x)?;
                cpu::tensor(w.matmul(&x.values(), tokens), [tokens, w.rows()])
            }
            LinearWeight::Device(w) => {
                let [rows, cols] = w.dims();
                if x.dims()[0] >= GPU_GEMM_TOKENS && rows * cols * 4 <= MAX_DECODED_BYTES {
                    x.matmul(w.dequantize_transposed())
                } else {
                    w.matmul(x)
                }
            }
        };
        Ok(match &self.bias {
            Some(b) => y + b.clone(),
            None => y,
        })
    }
}

/// A run of rows of a batched step that is multiplied as one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroup {
    pub rows: usize,
    /// Rows that are generated tokens (decode steps, or a preempted sequence recomputing its
    /// own): each is computed as a lone token would be, whatever the group's size. Otherwise
    /// the rows are prompt tokens, computed on dequantized tiles. Either way a row's numbers do
    /// not depend on the rows beside it.
    pub tokenwise: bool,
}

impl Linear {
    /// `x`: `[Σ rows, in]` → `[Σ rows, out]`, each group of rows multiplied by its kind, in one
    /// pass over the weights per group. Weights on the host split the rows by group; other
    /// weights multiply all rows at once.
    pub fn forward_grouped(&self, x: Tensor<2>, groups: &[RowGroup]) -> Result<Tensor<2>, ModelError> {
        let LinearWeight::Quantized(w) = &self.weight else {
            return self.forward(x);
        };
        let [tokens, cols] = x.dims();
        let host = HostValues::get(x)?;
        let values = host.values();
        let mut y = Vec::with_capacity(tokens * w.rows());
        let mut first = 0;
        for g in groups {
            let part = values.get(first * cols..(first + g.rows) * cols).ok_or_else(|| {
                ModelError::Execution(format!("row groups cover more than the {tokens} rows of the batch"))
            })?;
            y.extend(if g.tokenwise { w.matmul_tokens(part, g.rows) } else { w.matmul_prompt(part, g.rows) });
            first += g.rows;
        }
        let y = cpu::tensor(y, [tokens, w.rows()]);
        Ok(match &self.bias {
            Some(b) => y + b.clone(),
            None => y,
        })
    }
}

/// The `[out, in]` of a weight that must be exactly `expect`.
fn expect_matrix(name: &str, weight: &HostTensor, expect: [usize; 2]) -> Result<[usize; 2], WeightError> {
    let dims = weight.matrix_dims(name)?;
    if dims != expect {
        return Err(WeightError::Shape {
            name: name.to_owned(),
            expected: format!("{expect:?}"),
            found: weight.shape.clone(),
        });
    }
    Ok(dims)
}

/// An optional `[out]` bias, checked and uploaded as `[1, out]`.
fn check_bias(
    name: &str,
    bias: Option<HostTensor>,
    out_f: usize,
    device: &Device,
) -> Result<Option<Tensor<2>>, WeightError> {
    Ok(match bias {
        Some(b) if b.data.len() != out_f => {
            return Err(WeightError::Shape {
                name: format!("{name} (bias)"),
                expected: format!("[{out_f}]"),
                found: b.shape,
            });
        }
        Some(b) => Some(upload(b.data, [1, out_f], device)),
        None => None,
    })
}

/// Root-mean-square normalisation over the last dimension, computed in f32 as transformers does.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor<1>,
    /// The weight on the host, for the CPU operation.
    host: Option<Vec<f32>>,
    eps: f64,
}

impl RmsNorm {
    pub fn from_host(
        name: &str,
        weight: HostTensor,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, WeightError> {
        if weight.data.len() != dim {
            return Err(WeightError::Shape {
                name: name.to_owned(),
                expected: format!("[{dim}]"),
                found: weight.shape,
            });
        }
        let host = is_flex(device).then(|| weight.data.clone());
        Ok(Self { weight: upload(weight.data, [dim], device), host, eps })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>, ModelError> {
        if let Some(w) = &self.host {
            return cpu::map_in_place(x, |v| ops::rms_norm(v, w, self.eps as f32));
        }
        let variance = x.clone().powi_scalar(2).mean_dim(D - 1);
        let normed = x * (variance + self.eps).sqrt().recip();
        Ok(normed * self.weight.clone().unsqueeze::<D>())
    }

    /// The weight on the host (CPU devices only).
    pub fn host_weight(&self) -> Option<&[f32]> {
        self.host.as_deref()
    }

    pub fn eps(&self) -> f32 {
        self.eps as f32
    }

    /// The weight where the model's tensors live.
    pub fn weight(&self) -> &Tensor<1> {
        &self.weight
    }
}

/// Layer normalisation over the last dimension with a scale and a shift, as BERT-style
/// encoders use it (biased variance, as `torch.nn.LayerNorm`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    /// Weight and bias on the host, for the CPU operation.
    host: Option<(Vec<f32>, Vec<f32>)>,
    eps: f64,
}

impl LayerNorm {
    pub fn from_host(
        name: &str,
        weight: HostTensor,
        bias: HostTensor,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, WeightError> {
        for (part, t) in [("weight", &weight), ("bias", &bias)] {
            if t.data.len() != dim {
                return Err(WeightError::Shape {
                    name: format!("{name}.{part}"),
                    expected: format!("[{dim}]"),
                    found: t.shape.clone(),
                });
            }
        }
        let host = is_flex(device).then(|| (weight.data.clone(), bias.data.clone()));
        Ok(Self { weight: upload(weight.data, [dim], device), bias: upload(bias.data, [dim], device), host, eps })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let normed = (x - mean) * (var + self.eps).sqrt().recip();
        normed * self.weight.clone().unsqueeze::<D>() + self.bias.clone().unsqueeze::<D>()
    }

    /// `LayerNorm(x + residual)`, a post-norm block's ending; on the CPU one pass in place.
    pub fn forward_residual(&self, x: Tensor<2>, residual: Option<Tensor<2>>) -> Result<Tensor<2>, ModelError> {
        let Some((weight, bias)) = &self.host else {
            return Ok(self.forward(match residual {
                Some(r) => x + r,
                None => x,
            }));
        };
        if let Some(r) = &residual
            && r.dims() != x.dims()
        {
            return Err(ModelError::Execution(format!("a residual of {:?} for {:?}", r.dims(), x.dims())));
        }
        let residual = residual.map(HostValues::get).transpose()?;
        let residual = residual.as_ref().map(HostValues::values);
        cpu::map_in_place(x, |v| ops::layer_norm(v, residual.as_deref(), weight, bias, self.eps as f32))
    }
}

/// The SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_up: GateUp,
    down: Linear,
}

// Built once per layer when a model loads and never moved on a hot path: boxing the large
// variant would only add an indirection to every product.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum GateUp {
    Separate {
        gate: Linear,
        up: Linear,
    },
    /// Gate rows then up rows in one quantized matrix (the CPU path): one product, and the
    /// gate applied by one CPU operation.
    Stacked {
        both: Linear,
        intermediate: usize,
    },
}

impl Mlp {
    pub fn new(gate: Linear, up: Linear, down: Linear) -> Self {
        let gate_up = match Linear::stack(&[&gate, &up]) {
            Some(both) => GateUp::Stacked { both, intermediate: gate.out_features() },
            None => GateUp::Separate { gate, up },
        };
        Self { gate_up, down }
    }

    /// On a GPU with the gate and up rows in one block-quantized matrix: that matrix and the
    /// down projection, for the fused decode step.
    pub fn device_parts(&self) -> Option<(&DeviceBlocks, &Linear)> {
        match &self.gate_up {
            GateUp::Stacked { both, .. } => both.device_parts().map(|(w, _)| (w, &self.down)),
            GateUp::Separate { .. } => None,
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, ModelError> {
        let rows = x.dims()[0];
        self.forward_grouped(x, &[RowGroup { rows, tokenwise: false }])
    }

    /// [`Self::forward`] over the rows of a batched step (see [`Linear::forward_grouped`]).
    pub fn forward_grouped(&self, x: Tensor<2>, groups: &[RowGroup]) -> Result<Tensor<2>, ModelError> {
        let gated = match &self.gate_up {
            GateUp::Separate { gate, up } => {
                silu(gate.forward_grouped(x.clone(), groups)?) * up.forward_grouped(x, groups)?
            }
            GateUp::Stacked { both, intermediate } if both.device_parts().is_some() => {
                let y = both.forward(x)?;
                let [tokens, n] = [y.dims()[0], *intermediate];
                silu(y.clone().slice([0..tokens, 0..n])) * y.slice([0..tokens, n..2 * n])
            }
            GateUp::Stacked { both, intermediate } => {
                let tokens = x.dims()[0];
                let y = HostValues::get(both.forward_grouped(x, groups)?)?;
                let y = y.values();
                let n = *intermediate;
                let mut gated = Vec::with_capacity(tokens * n);
                for row in y.chunks_exact(2 * n) {
                    let start = gated.len();
                    gated.extend_from_slice(&row[..n]);
                    ops::silu_mul(&mut gated[start..], &row[n..]);
                }
                cpu::tensor(gated, [tokens, n])
            }
        };
        self.down.forward_grouped(gated, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let data: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(transpose(&data, 2, 3), vec![0., 3., 1., 4., 2., 5.]);
    }

    #[test]
    fn rms_norm_matches_the_formula() {
        let device = Device::flex();
        let norm =
            RmsNorm::from_host("n", HostTensor { shape: vec![4], data: vec![1., 2., 1., 0.5] }, 4, 1e-5, &device)
                .unwrap();
        let x = upload(vec![1., 2., 3., 4.], [1, 4], &device);
        let y: Vec<f32> = norm.forward(x).unwrap().into_data().try_to_vec().unwrap();
        let rms = ((1. + 4. + 9. + 16.) / 4.0f32 + 1e-5).sqrt();
        let want = [1. / rms, 4. / rms, 3. / rms, 2. / rms];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn layer_norm_matches_the_formula() {
        let device = Device::flex();
        let t = |v: Vec<f32>| HostTensor { shape: vec![v.len()], data: v };
        let norm =
            LayerNorm::from_host("n", t(vec![1., 2., 1., 1.]), t(vec![0., 0., 1., 0.]), 4, 1e-5, &device).unwrap();
        let y: Vec<f32> = norm.forward(upload(vec![1., 2., 3., 6.], [1, 4], &device)).into_data().try_to_vec().unwrap();
        let (mean, var) = (3.0f32, (4. + 1. + 0. + 9.) / 4.0f32);
        let s = (var + 1e-5).sqrt();
        let want = [(1. - mean) / s, 2. * (2. - mean) / s, (3. - mean) / s + 1., (6. - mean) / s];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn linear_computes_x_times_w_transposed_plus_bias() {
        let device = Device::flex();
        // W is [out=2, in=3] in HF layout.
        let w = HostTensor { shape: vec![2, 3], data: vec![1., 0., 0., 0., 1., 1.] };
        let b = HostTensor { shape: vec![2], data: vec![0.5, -0.5] };
        let lin = Linear::from_host("l", w, Some(b), [2, 3], &device).unwrap();
        let y: Vec<f32> =
            lin.forward(upload(vec![1., 2., 3.], [1, 3], &device)).unwrap().into_data().try_to_vec().unwrap();
        assert_eq!(y, vec![1.5, 4.5]);
    }

    #[test]
    fn a_weight_of_the_wrong_shape_is_named() {
        let device = Device::flex();
        let w = HostTensor { shape: vec![3, 2], data: vec![0.; 6] };
        let err = Linear::from_host("blk.0.attn_q.weight", w, None, [2, 3], &device).unwrap_err();
        assert!(err.to_string().contains("blk.0.attn_q.weight"), "{err}");
    }
}
