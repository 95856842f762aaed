//! Piper's VITS in burn, the same code on flex and wgpu, with the weights read from the voice's
//! `.onnx` file ([`OnnxWeights`]): the text encoder (phoneme embeddings, post-norm transformer
//! blocks with windowed relative-position attention), the stochastic duration predictor run
//! backwards from noise (its rational-quadratic spline flows in [`super::spline`], on the host:
//! two values per phoneme), the length regulator, the flow that turns the prior into the
//! decoder's latent, and the HiFi-GAN decoder.
//!
//! Every size — widths, layer counts, kernels, dilations, upsampling rates — comes from the
//! file, so Piper's low, medium and high voices load alike. One sentence runs at a time (batch
//! 1, no padding, so every mask is all ones and left out).

use burn::tensor::activation::{gelu, leaky_relu, relu, sigmoid, softmax, tanh};
use burn::tensor::module::{conv_transpose1d, conv1d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use rand_distr::StandardNormal;

use super::onnx::{ConvLayer, OnnxError, OnnxWeights};
use super::spline;
use crate::model::ModelError;
use crate::model::layers::{LayerNorm, read_back, upload};
use crate::model::weights::HostTensor;

/// VITS's layer-norm epsilon.
const EPS: f64 = 1e-5;
/// HiFi-GAN's leaky-ReLU slope inside the decoder (its last one uses PyTorch's default 0.01).
const LRELU_SLOPE: f64 = 0.1;
/// The spline flows' bound, as VITS trains them.
const TAIL_BOUND: f32 = 5.0;
/// Frames one sentence may expand to (about 12 minutes at Piper's 256-sample hop): durations a
/// broken voice predicts cannot ask for unbounded memory.
const MAX_FRAMES: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum VitsError {
    #[error(transparent)]
    File(#[from] OnnxError),
    #[error("the voice's weights do not fit together: {0}")]
    Shape(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the predicted durations ask for {0} frames for one sentence, more than {MAX_FRAMES}")]
    TooLong(usize),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// How much randomness and how slow: Piper's `noise_scale`, `length_scale`, `noise_w`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub noise: f32,
    pub length: f32,
    pub noise_w: f32,
}

enum ConvKind {
    Plain(ConvOptions<1>),
    Transposed(ConvTransposeOptions<1>),
}

/// A convolution on the device.
struct Conv {
    weight: Tensor<3>,
    bias: Option<Tensor<1>>,
    kind: ConvKind,
    out_channels: usize,
    in_channels: usize,
}

impl Conv {
    /// The layer as the file runs it, checked to map `inputs` channels to `outputs` (`None`:
    /// any).
    fn load(
        w: &OnnxWeights,
        layer: &str,
        inputs: Option<usize>,
        outputs: Option<usize>,
        device: &Device,
    ) -> Result<Self, VitsError> {
        let c = w.conv(layer)?;
        Self::from_layer(layer, c, inputs, outputs, false, device)
    }

    /// A convolution the exporter padded with a separate node (the encoder's feed-forward):
    /// padded here as the model pads it, `(k - 1) / 2` before and `k / 2` after.
    fn load_same(w: &OnnxWeights, layer: &str, inputs: usize, device: &Device) -> Result<Self, VitsError> {
        let c = w.conv(layer)?;
        Self::from_layer(layer, c, Some(inputs), None, true, device)
    }

    fn from_layer(
        layer: &str,
        c: ConvLayer,
        inputs: Option<usize>,
        outputs: Option<usize>,
        same: bool,
        device: &Device,
    ) -> Result<Self, VitsError> {
        let [a, b, kernel] = c.weight.shape[..] else { unreachable!("checked by OnnxWeights::conv") };
        let (out_channels, in_channels) = if c.transposed { (b * c.groups, a) } else { (a, b * c.groups) };
        let bad = |what: String| VitsError::Shape(format!("{layer}: {what}"));
        if c.groups == 0 || in_channels % c.groups != 0 || out_channels % c.groups != 0 {
            return Err(bad(format!("{in_channels} → {out_channels} channels in {} groups", c.groups)));
        }
        if let Some(n) = inputs
            && n != in_channels
        {
            return Err(bad(format!("reads {in_channels} channels where {n} arrive")));
        }
        if let Some(n) = outputs
            && n != out_channels
        {
            return Err(bad(format!("gives {out_channels} channels where {n} are needed")));
        }
        if let Some(bias) = &c.bias
            && bias.data.len() != out_channels
        {
            return Err(bad(format!("a bias of {} for {out_channels} channels", bias.data.len())));
        }
        let kind = if c.transposed {
            if c.pads.0 != c.pads.1 {
                return Err(VitsError::Unsupported(format!("{layer}: uneven transposed padding {:?}", c.pads)));
            }
            ConvKind::Transposed(ConvTransposeOptions::new([c.stride], [c.pads.0], [0], [c.dilation], c.groups))
        } else {
            let pads = if same { ((kernel - 1) / 2, kernel / 2) } else { c.pads };
            ConvKind::Plain(ConvOptions::new_with_padding([c.stride], [pads], [c.dilation], c.groups))
        };
        let shape = [c.weight.shape[0], c.weight.shape[1], kernel];
        Ok(Self {
            weight: upload(c.weight.data, shape, device),
            bias: c.bias.map(|b| upload(b.data, [out_channels], device)),
            kind,
            out_channels,
            in_channels,
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.kind {
            ConvKind::Plain(o) => conv1d(x, self.weight.clone(), self.bias.clone(), o.clone()),
            ConvKind::Transposed(o) => conv_transpose1d(x, self.weight.clone(), self.bias.clone(), o.clone()),
        }
    }
}

/// VITS's layer norm over the channels of `[1, channels, frames]`.
struct ChannelNorm(LayerNorm);

impl ChannelNorm {
    fn load(w: &OnnxWeights, name: &str, channels: usize, device: &Device) -> Result<Self, VitsError> {
        let gamma = w.tensor(&format!("{name}.gamma"))?;
        let beta = w.tensor(&format!("{name}.beta"))?;
        LayerNorm::from_host(name, gamma, beta, channels, EPS, device)
            .map(Self)
            .map_err(|e| VitsError::Shape(e.to_string()))
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.0.forward(x.swap_dims(1, 2)).swap_dims(1, 2)
    }
}

struct EncoderLayer {
    query: Conv,
    key: Conv,
    value: Conv,
    out: Conv,
    /// `[2·window + 1, head width]` on the host: each sentence pads or slices them to its length.
    relative_keys: Vec<f32>,
    relative_values: Vec<f32>,
    norm1: ChannelNorm,
    ffn_up: Conv,
    ffn_down: Conv,
    norm2: ChannelNorm,
}

/// The text encoder: phonemes to the prior's mean and log-scale per phoneme.
struct TextEncoder {
    /// `[symbols, hidden]` on the host.
    embeddings: Vec<f32>,
    symbols: usize,
    hidden: usize,
    heads: usize,
    window: usize,
    layers: Vec<EncoderLayer>,
    proj: Conv,
}

/// A depth-separable, dilated convolution stack (the duration predictor's).
struct DdsConv {
    layers: Vec<(Conv, ChannelNorm, Conv, ChannelNorm)>,
}

impl DdsConv {
    fn load(w: &OnnxWeights, prefix: &str, channels: usize, device: &Device) -> Result<Self, VitsError> {
        let n = w.count(&format!("{prefix}.convs_sep"), "");
        if n == 0 {
            return Err(VitsError::Shape(format!("{prefix} has no layers")));
        }
        let layers = (0..n)
            .map(|i| {
                Ok((
                    Conv::load(w, &format!("{prefix}.convs_sep.{i}"), Some(channels), Some(channels), device)?,
                    ChannelNorm::load(w, &format!("{prefix}.norms_1.{i}"), channels, device)?,
                    Conv::load(w, &format!("{prefix}.convs_1x1.{i}"), Some(channels), Some(channels), device)?,
                    ChannelNorm::load(w, &format!("{prefix}.norms_2.{i}"), channels, device)?,
                ))
            })
            .collect::<Result<_, VitsError>>()?;
        Ok(Self { layers })
    }

    fn forward(&self, mut x: Tensor<3>, g: Option<Tensor<3>>) -> Tensor<3> {
        if let Some(g) = g {
            x = x + g;
        }
        for (sep, norm1, pointwise, norm2) in &self.layers {
            let y = gelu(norm1.forward(sep.forward(x.clone())));
            let y = gelu(norm2.forward(pointwise.forward(y)));
            x = x + y;
        }
        x
    }
}

/// A spline coupling flow of the duration predictor.
struct ConvFlow {
    pre: Conv,
    dds: DdsConv,
    proj: Conv,
    bins: usize,
    /// The widths' and heights' divisor, √filter channels.
    scale: f32,
}

enum DurationStep {
    Flip,
    Spline(Box<ConvFlow>),
    /// `(x - m) · e^{-logs}` per channel.
    Affine {
        shift: [f32; 2],
        inverse_scale: [f32; 2],
    },
}

enum DurationPredictor {
    /// The stochastic one, run backwards: noise through the flows to log-durations.
    Stochastic(Box<StochasticDurations>),
    /// The deterministic one some VITS voices use.
    Plain(Box<PlainDurations>),
}

/// The stochastic duration predictor's layers, and its flows in the order they run backwards.
struct StochasticDurations {
    pre: Conv,
    dds: DdsConv,
    proj: Conv,
    steps: Vec<DurationStep>,
}

/// The deterministic duration predictor's layers.
struct PlainDurations {
    conv1: Conv,
    norm1: ChannelNorm,
    conv2: Conv,
    norm2: ChannelNorm,
    proj: Conv,
}

/// WaveNet-style layers inside a coupling flow.
struct WaveNet {
    hidden: usize,
    input: Vec<Conv>,
    res_skip: Vec<Conv>,
}

struct Coupling {
    pre: Conv,
    net: WaveNet,
    post: Conv,
    half: usize,
}

enum ResBlock {
    /// Pairs of a dilated and an undilated convolution.
    One(Vec<(Conv, Conv)>),
    Two(Vec<Conv>),
}

struct Generator {
    pre: Conv,
    ups: Vec<Conv>,
    /// `kernels` blocks after each upsampling.
    blocks: Vec<ResBlock>,
    kernels: usize,
    post: Conv,
}

pub struct Vits {
    encoder: TextEncoder,
    durations: DurationPredictor,
    flow: Vec<Coupling>,
    generator: Generator,
    /// Output samples per latent frame.
    pub hop: usize,
    device: Device,
}

fn matrix(t: &HostTensor, name: &str) -> Result<[usize; 2], VitsError> {
    match t.shape[..] {
        [a, b] => Ok([a, b]),
        [1, a, b] => Ok([a, b]),
        _ => Err(VitsError::Shape(format!("{name} has shape {:?}", t.shape))),
    }
}

impl Vits {
    pub fn load(w: &OnnxWeights, device: &Device) -> Result<Self, VitsError> {
        if w.has_conv("dec.cond") || w.has("emb_g.weight") {
            return Err(VitsError::Unsupported(
                "multi-speaker voices are not supported yet; use a single-speaker Piper voice".into(),
            ));
        }
        let encoder = Self::load_encoder(w, device)?;
        let hidden = encoder.hidden;
        let durations = Self::load_durations(w, hidden, device)?;
        let flow = Self::load_flow(w, device)?;
        let inter = encoder.proj.out_channels / 2;
        if flow.first().is_some_and(|c| c.half * 2 != inter) {
            return Err(VitsError::Shape("the flow's width differs from the prior's".into()));
        }
        let generator = Self::load_generator(w, inter, device)?;
        let hop = generator
            .ups
            .iter()
            .map(|u| match &u.kind {
                ConvKind::Transposed(o) => o.stride[0],
                ConvKind::Plain(_) => 1,
            })
            .product();
        Ok(Self { encoder, durations, flow, generator, hop, device: device.clone() })
    }

    fn load_encoder(w: &OnnxWeights, device: &Device) -> Result<TextEncoder, VitsError> {
        // The exporter may rename the embedding table (Piper's files call it `sid`), so it is
        // read through the node that looks it up.
        let table = if w.has("enc_p.emb.weight") {
            w.tensor("enc_p.emb.weight")?
        } else {
            w.node_input("/enc_p/emb/Gather", 0)?
        };
        let [symbols, hidden] = matrix(&table, "enc_p.emb")?;
        let n = w.count("enc_p.encoder.attn_layers", ".conv_q");
        if n == 0 {
            return Err(VitsError::Shape("the text encoder has no layers".into()));
        }
        let mut layers = Vec::with_capacity(n);
        let mut geometry = None;
        for i in 0..n {
            let p = format!("enc_p.encoder.attn_layers.{i}");
            let rk = w.tensor(&format!("{p}.emb_rel_k"))?;
            let rv = w.tensor(&format!("{p}.emb_rel_v"))?;
            if rk.shape.len() == 3 && rk.shape[0] != 1 {
                return Err(VitsError::Unsupported(format!("{p}: relative positions per head")));
            }
            let [positions, head_width] = matrix(&rk, &format!("{p}.emb_rel_k"))?;
            if matrix(&rv, &format!("{p}.emb_rel_v"))? != [positions, head_width]
                || positions % 2 == 0
                || head_width == 0
                || hidden % head_width != 0
            {
                return Err(VitsError::Shape(format!("{p}: relative embeddings {:?} for width {hidden}", rk.shape)));
            }
            geometry = Some((hidden / head_width, (positions - 1) / 2));
            let c = |name: &str| Conv::load(w, &format!("{p}.{name}"), Some(hidden), Some(hidden), device);
            let f = format!("enc_p.encoder.ffn_layers.{i}");
            let ffn_up = Conv::load_same(w, &format!("{f}.conv_1"), hidden, device)?;
            let ffn_down = Conv::load_same(w, &format!("{f}.conv_2"), ffn_up.out_channels, device)?;
            if ffn_down.out_channels != hidden {
                return Err(VitsError::Shape(format!("{f}.conv_2 gives {} channels", ffn_down.out_channels)));
            }
            layers.push(EncoderLayer {
                query: c("conv_q")?,
                key: c("conv_k")?,
                value: c("conv_v")?,
                out: c("conv_o")?,
                relative_keys: rk.data,
                relative_values: rv.data,
                norm1: ChannelNorm::load(w, &format!("enc_p.encoder.norm_layers_1.{i}"), hidden, device)?,
                ffn_up,
                ffn_down,
                norm2: ChannelNorm::load(w, &format!("enc_p.encoder.norm_layers_2.{i}"), hidden, device)?,
            });
        }
        let (heads, window) = geometry.unwrap_or((1, 0));
        let proj = Conv::load(w, "enc_p.proj", Some(hidden), None, device)?;
        if proj.out_channels % 2 != 0 {
            return Err(VitsError::Shape("enc_p.proj gives an odd number of channels".into()));
        }
        Ok(TextEncoder { embeddings: table.data, symbols, hidden, heads, window, layers, proj })
    }

    fn load_durations(w: &OnnxWeights, hidden: usize, device: &Device) -> Result<DurationPredictor, VitsError> {
        if w.has_conv("dp.conv_1") {
            let conv1 = Conv::load(w, "dp.conv_1", Some(hidden), None, device)?;
            let filter = conv1.out_channels;
            return Ok(DurationPredictor::Plain(Box::new(PlainDurations {
                conv1,
                norm1: ChannelNorm::load(w, "dp.norm_1", filter, device)?,
                conv2: Conv::load(w, "dp.conv_2", Some(filter), Some(filter), device)?,
                norm2: ChannelNorm::load(w, "dp.norm_2", filter, device)?,
                proj: Conv::load(w, "dp.proj", Some(filter), Some(1), device)?,
            })));
        }
        let pre = Conv::load(w, "dp.pre", Some(hidden), None, device)?;
        let filter = pre.out_channels;
        let dds = DdsConv::load(w, "dp.convs", filter, device)?;
        let proj = Conv::load(w, "dp.proj", Some(filter), Some(filter), device)?;
        // flows: [affine, spline 1, flip, spline 3, flip, …]; backwards VITS skips spline 1.
        let splines = (2..).take_while(|k| w.has_conv(&format!("dp.flows.{}.pre", 2 * k - 1))).count();
        if splines == 0 {
            return Err(VitsError::Shape("the duration predictor has no flows".into()));
        }
        let mut steps = Vec::new();
        for k in (2..splines + 2).rev() {
            let p = format!("dp.flows.{}", 2 * k - 1);
            let pre = Conv::load(w, &format!("{p}.pre"), Some(1), Some(filter), device)?;
            let dds = DdsConv::load(w, &format!("{p}.convs"), filter, device)?;
            let proj = Conv::load(w, &format!("{p}.proj"), Some(filter), None, device)?;
            if proj.out_channels % 3 != 2 {
                return Err(VitsError::Shape(format!("{p}.proj gives {} channels, not 3·bins − 1", proj.out_channels)));
            }
            let bins = proj.out_channels.div_ceil(3);
            steps.push(DurationStep::Flip);
            steps.push(DurationStep::Spline(Box::new(ConvFlow {
                pre,
                dds,
                proj,
                bins,
                scale: (filter as f32).sqrt(),
            })));
        }
        steps.push(DurationStep::Flip);
        let shift = w.tensor("dp.flows.0.m")?;
        // `e^{-logs}`, which the exporter folded into a constant when it did not keep `logs`.
        let inverse_scale = if w.has("dp.flows.0.logs") {
            let logs = w.tensor("dp.flows.0.logs")?;
            HostTensor { shape: logs.shape, data: logs.data.iter().map(|l| (-l).exp()).collect() }
        } else {
            w.node_input("/dp/flows.0/Mul", 1)?
        };
        let pair = |t: &HostTensor, name: &str| -> Result<[f32; 2], VitsError> {
            match t.data[..] {
                [a, b] => Ok([a, b]),
                _ => Err(VitsError::Shape(format!("{name} has {} values, not 2", t.data.len()))),
            }
        };
        steps.push(DurationStep::Affine {
            shift: pair(&shift, "dp.flows.0.m")?,
            inverse_scale: pair(&inverse_scale, "dp.flows.0.logs")?,
        });
        Ok(DurationPredictor::Stochastic(Box::new(StochasticDurations { pre, dds, proj, steps })))
    }

    fn load_flow(w: &OnnxWeights, device: &Device) -> Result<Vec<Coupling>, VitsError> {
        let mut flow = Vec::new();
        // Couplings sit at even indices, a flip after each.
        for i in (0..).step_by(2) {
            let p = format!("flow.flows.{i}");
            if !w.has_conv(&format!("{p}.pre")) {
                break;
            }
            let pre = Conv::load(w, &format!("{p}.pre"), None, None, device)?;
            let half = pre.in_channels;
            let hidden = pre.out_channels;
            let n = w.count(&format!("{p}.enc.in_layers"), "");
            if n == 0 {
                return Err(VitsError::Shape(format!("{p} has no WaveNet layers")));
            }
            let mut input = Vec::with_capacity(n);
            let mut res_skip = Vec::with_capacity(n);
            for l in 0..n {
                input.push(Conv::load(w, &format!("{p}.enc.in_layers.{l}"), Some(hidden), Some(2 * hidden), device)?);
                let out = if l + 1 < n { 2 * hidden } else { hidden };
                res_skip.push(Conv::load(w, &format!("{p}.enc.res_skip_layers.{l}"), Some(hidden), Some(out), device)?);
            }
            let post = Conv::load(w, &format!("{p}.post"), Some(hidden), Some(half), device)?;
            flow.push(Coupling { pre, net: WaveNet { hidden, input, res_skip }, post, half });
        }
        if flow.is_empty() {
            return Err(VitsError::Shape("the voice has no flow".into()));
        }
        Ok(flow)
    }

    fn load_generator(w: &OnnxWeights, inter: usize, device: &Device) -> Result<Generator, VitsError> {
        let pre = Conv::load(w, "dec.conv_pre", Some(inter), None, device)?;
        let mut channels = pre.out_channels;
        let n_ups = w.count("dec.ups", "");
        let n_blocks = w.count("dec.resblocks", ".convs.0") + w.count("dec.resblocks", ".convs1.0");
        if n_ups == 0 || n_blocks == 0 || !n_blocks.is_multiple_of(n_ups) {
            return Err(VitsError::Shape(format!("{n_ups} upsamplings and {n_blocks} residual blocks")));
        }
        let kernels = n_blocks / n_ups;
        let mut ups = Vec::with_capacity(n_ups);
        let mut blocks = Vec::with_capacity(n_blocks);
        for i in 0..n_ups {
            let up = Conv::load(w, &format!("dec.ups.{i}"), Some(channels), None, device)?;
            if !matches!(up.kind, ConvKind::Transposed(_)) {
                return Err(VitsError::Shape(format!("dec.ups.{i} is not a transposed convolution")));
            }
            channels = up.out_channels;
            ups.push(up);
            for j in 0..kernels {
                let p = format!("dec.resblocks.{}", i * kernels + j);
                let c = |name: String| Conv::load(w, &name, Some(channels), Some(channels), device);
                blocks.push(if w.has_conv(&format!("{p}.convs1.0")) {
                    let n = w.count(&format!("{p}.convs1"), "");
                    ResBlock::One(
                        (0..n)
                            .map(|k| Ok((c(format!("{p}.convs1.{k}"))?, c(format!("{p}.convs2.{k}"))?)))
                            .collect::<Result<_, VitsError>>()?,
                    )
                } else {
                    let n = w.count(&format!("{p}.convs"), "");
                    ResBlock::Two((0..n).map(|k| c(format!("{p}.convs.{k}"))).collect::<Result<_, _>>()?)
                });
            }
        }
        let post = Conv::load(w, "dec.conv_post", Some(channels), Some(1), device)?;
        Ok(Generator { pre, ups, blocks, kernels, post })
    }

    /// One sentence's waveform (`[-1, 1]`, at the voice's rate) from its phoneme ids; `rng`
    /// draws the noise the scales multiply.
    pub fn synthesize(&self, ids: &[i64], scales: Scales, rng: &mut impl Rng) -> Result<Vec<f32>, VitsError> {
        self.synthesize_with_durations(ids, scales, rng).map(|(audio, _)| audio)
    }

    /// [`Vits::synthesize`], also returning each phoneme id's duration in frames.
    pub fn synthesize_with_durations(
        &self,
        ids: &[i64],
        scales: Scales,
        rng: &mut impl Rng,
    ) -> Result<(Vec<f32>, Vec<usize>), VitsError> {
        if ids.is_empty() {
            return Err(VitsError::Shape("no phoneme ids".into()));
        }
        let (x, mean, log_scale) = self.encode(ids)?;
        let log_durations = self.log_durations(x, scales.noise_w, rng)?;
        let frames_of: Vec<usize> = log_durations
            .iter()
            .map(|l| {
                let d = (l.exp() * scales.length).ceil();
                if d.is_finite() && d > 0.0 { d as usize } else { 0 }
            })
            .collect();
        let total: usize = frames_of.iter().sum();
        if total > MAX_FRAMES {
            return Err(VitsError::TooLong(total));
        }
        let total = total.max(1);
        let mut index = Vec::with_capacity(total);
        for (phoneme, &n) in frames_of.iter().enumerate() {
            index.extend(std::iter::repeat_n(phoneme as i64, n));
        }
        index.resize(total, (ids.len() - 1) as i64);
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [total]), &self.device);
        let mean = mean.select(2, index.clone());
        let log_scale = log_scale.select(2, index);
        let [_, channels, _] = mean.dims();
        let mut z = mean;
        if scales.noise != 0.0 {
            let noise: Vec<f32> = (0..channels * total).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
            z = z + upload(noise, [1, channels, total], &self.device) * log_scale.exp() * scales.noise;
        }
        for coupling in self.flow.iter().rev() {
            z = coupling.reverse(z.flip([1]));
        }
        let audio = self.generator.forward(z);
        Ok((read_back(audio)?, frames_of))
    }

    /// The encoder's output, the prior's mean and its log-scale: `[1, channels, phonemes]` each.
    fn encode(&self, ids: &[i64]) -> Result<(Tensor<3>, Tensor<3>, Tensor<3>), VitsError> {
        let e = &self.encoder;
        let t = ids.len();
        let scale = (e.hidden as f32).sqrt();
        let mut x = vec![0f32; e.hidden * t];
        for (pos, &id) in ids.iter().enumerate() {
            let row = usize::try_from(id)
                .ok()
                .filter(|&r| r < e.symbols)
                .ok_or_else(|| VitsError::Shape(format!("phoneme id {id} is outside the voice's {}", e.symbols)))?;
            for c in 0..e.hidden {
                x[c * t + pos] = e.embeddings[row * e.hidden + c] * scale;
            }
        }
        let mut x = upload(x, [1, e.hidden, t], &self.device);
        for layer in &e.layers {
            let y = self.attention(layer, x.clone());
            x = layer.norm1.forward(x + y);
            let y = layer.ffn_down.forward(relu(layer.ffn_up.forward(x.clone())));
            x = layer.norm2.forward(x + y);
        }
        let stats = e.proj.forward(x.clone());
        let half = e.proj.out_channels / 2;
        let mean = stats.clone().slice([0..1, 0..half, 0..t]);
        let log_scale = stats.slice([0..1, half..2 * half, 0..t]);
        Ok((x, mean, log_scale))
    }

    /// Self-attention with relative positions within the window, as VITS computes it (the
    /// relative logits moved to absolute positions by padding and reshaping).
    fn attention(&self, layer: &EncoderLayer, x: Tensor<3>) -> Tensor<3> {
        let e = &self.encoder;
        let [_, channels, t] = x.dims();
        let (h, d) = (e.heads, channels / e.heads);
        let q = layer.query.forward(x.clone()).reshape([h, d, t]).swap_dims(1, 2) * (1.0 / (d as f64).sqrt());
        let k = layer.key.forward(x.clone()).reshape([h, d, t]);
        let v = layer.value.forward(x).reshape([h, d, t]).swap_dims(1, 2);
        let span = 2 * t - 1;
        let keys = self.relative_embeddings(&layer.relative_keys, d, t);
        let relative = q.clone().matmul(keys.swap_dims(0, 1).unsqueeze::<3>().expand([h, d, span]));
        let scores = q.matmul(k) + relative_to_absolute(relative, &self.device);
        let p = softmax(scores, 2);
        let values = self.relative_embeddings(&layer.relative_values, d, t);
        let out = p.clone().matmul(v)
            + absolute_to_relative(p, &self.device).matmul(values.unsqueeze::<3>().expand([h, span, d]));
        layer.out.forward(out.swap_dims(1, 2).reshape([1, channels, t]))
    }

    /// The `2t − 1` relative embeddings a sentence of `t` phonemes uses: the window's, padded
    /// with zeros or cut to the sentence.
    fn relative_embeddings(&self, table: &[f32], d: usize, t: usize) -> Tensor<2> {
        let w = self.encoder.window;
        let pad = t.saturating_sub(w + 1);
        let start = (w + 1).saturating_sub(t);
        let span = 2 * t - 1;
        let mut out = vec![0f32; span * d];
        for r in 0..span {
            // Row `start + r` of the table padded by `pad` rows of zeros on each side.
            let padded = start + r;
            if padded >= pad && padded - pad < 2 * w + 1 {
                let src = padded - pad;
                out[r * d..(r + 1) * d].copy_from_slice(&table[src * d..(src + 1) * d]);
            }
        }
        upload(out, [span, d], &self.device)
    }

    /// The predicted log-duration of each phoneme.
    fn log_durations(&self, x: Tensor<3>, noise_w: f32, rng: &mut impl Rng) -> Result<Vec<f32>, VitsError> {
        let [_, _, t] = x.dims();
        let (pre, dds, proj, steps) = match &self.durations {
            DurationPredictor::Plain(p) => {
                let y = p.norm1.forward(relu(p.conv1.forward(x)));
                let y = p.norm2.forward(relu(p.conv2.forward(y)));
                return Ok(read_back(p.proj.forward(y))?);
            }
            DurationPredictor::Stochastic(s) => (&s.pre, &s.dds, &s.proj, &s.steps),
        };
        let g = proj.forward(dds.forward(pre.forward(x), None));
        // The two channels of the flows' variable, on the host.
        let mut z: [Vec<f32>; 2] = std::array::from_fn(|_| {
            (0..t).map(|_| if noise_w == 0.0 { 0.0 } else { rng.sample::<f32, _>(StandardNormal) * noise_w }).collect()
        });
        for step in steps {
            match step {
                DurationStep::Flip => z.swap(0, 1),
                DurationStep::Affine { shift, inverse_scale } => {
                    for c in 0..2 {
                        for v in &mut z[c] {
                            *v = (*v - shift[c]) * inverse_scale[c];
                        }
                    }
                }
                DurationStep::Spline(flow) => {
                    let x0 = upload(z[0].clone(), [1, 1, t], &self.device);
                    let h = flow.proj.forward(flow.dds.forward(flow.pre.forward(x0), Some(g.clone())));
                    let h = read_back(h)?;
                    let n = flow.bins;
                    let parameters = 3 * n - 1;
                    let mut p = vec![0f32; parameters];
                    for (i, v) in z[1].iter_mut().enumerate() {
                        for (k, slot) in p.iter_mut().enumerate() {
                            *slot = h[k * t + i];
                        }
                        for w in &mut p[..2 * n] {
                            *w /= flow.scale;
                        }
                        *v = spline::inverse(*v, &p[..n], &p[n..2 * n], &p[2 * n..], TAIL_BOUND);
                    }
                }
            }
        }
        let [log_w, _] = z;
        Ok(log_w)
    }
}

/// `[h, t, 2t − 1]` relative logits → `[h, t, t]` absolute ones.
fn relative_to_absolute(x: Tensor<3>, device: &Device) -> Tensor<3> {
    let [h, t, _] = x.dims();
    let x = Tensor::cat(vec![x, Tensor::zeros([h, t, 1], device)], 2);
    let flat = Tensor::cat(vec![x.reshape([h, 2 * t * t]), Tensor::zeros([h, t - 1], device)], 1);
    flat.reshape([h, t + 1, 2 * t - 1]).slice([0..h, 0..t, t - 1..2 * t - 1])
}

/// `[h, t, t]` absolute weights → `[h, t, 2t − 1]` relative ones.
fn absolute_to_relative(x: Tensor<3>, device: &Device) -> Tensor<3> {
    let [h, t, _] = x.dims();
    let x = Tensor::cat(vec![x, Tensor::zeros([h, t, t - 1], device)], 2);
    let flat = Tensor::cat(vec![Tensor::zeros([h, t], device), x.reshape([h, t * (2 * t - 1)])], 1);
    flat.reshape([h, t, 2 * t]).slice([0..h, 0..t, 1..2 * t])
}

impl Coupling {
    /// The coupling backwards (mean only): the second half less what the first predicts.
    fn reverse(&self, x: Tensor<3>) -> Tensor<3> {
        let [_, _, t] = x.dims();
        let x0 = x.clone().slice([0..1, 0..self.half, 0..t]);
        let x1 = x.slice([0..1, self.half..2 * self.half, 0..t]);
        let mean = self.post.forward(self.net.forward(self.pre.forward(x0.clone())));
        Tensor::cat(vec![x0, x1 - mean], 1)
    }
}

impl WaveNet {
    fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        let [_, _, t] = x.dims();
        let h = self.hidden;
        let mut out: Option<Tensor<3>> = None;
        let last = self.input.len() - 1;
        for (i, (input, res_skip)) in self.input.iter().zip(&self.res_skip).enumerate() {
            let a = input.forward(x.clone());
            let acts = tanh(a.clone().slice([0..1, 0..h, 0..t])) * sigmoid(a.slice([0..1, h..2 * h, 0..t]));
            let rs = res_skip.forward(acts);
            let skip = if i < last {
                x = x + rs.clone().slice([0..1, 0..h, 0..t]);
                rs.slice([0..1, h..2 * h, 0..t])
            } else {
                rs
            };
            out = Some(match out {
                Some(o) => o + skip,
                None => skip,
            });
        }
        out.unwrap_or(x)
    }
}

impl Generator {
    fn forward(&self, z: Tensor<3>) -> Tensor<3> {
        let mut x = self.pre.forward(z);
        for (i, up) in self.ups.iter().enumerate() {
            x = up.forward(leaky_relu(x, LRELU_SLOPE));
            let mut sum: Option<Tensor<3>> = None;
            for block in &self.blocks[i * self.kernels..(i + 1) * self.kernels] {
                let y = block.forward(x.clone());
                sum = Some(match sum {
                    Some(s) => s + y,
                    None => y,
                });
            }
            if let Some(s) = sum {
                x = s / self.kernels as f64;
            }
        }
        tanh(self.post.forward(leaky_relu(x, 0.01)))
    }
}

impl ResBlock {
    fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        match self {
            ResBlock::One(pairs) => {
                for (dilated, plain) in pairs {
                    let y = dilated.forward(leaky_relu(x.clone(), LRELU_SLOPE));
                    x = plain.forward(leaky_relu(y, LRELU_SLOPE)) + x;
                }
            }
            ResBlock::Two(convs) => {
                for conv in convs {
                    x = conv.forward(leaky_relu(x.clone(), LRELU_SLOPE)) + x;
                }
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reshaping trick against its definition: `abs[i][j] = rel[i][j − i + t − 1]`.
    #[test]
    fn relative_and_absolute_positions_convert_as_vits_defines_them() {
        let device = Device::default();
        let (h, t) = (2, 4);
        let span = 2 * t - 1;
        let rel: Vec<f32> = (0..h * t * span).map(|v| v as f32).collect();
        let abs = read_back(relative_to_absolute(upload(rel.clone(), [h, t, span], &device), &device)).unwrap();
        for head in 0..h {
            for i in 0..t {
                for j in 0..t {
                    assert_eq!(abs[(head * t + i) * t + j], rel[(head * t + i) * span + (j + t - 1 - i)]);
                }
            }
        }
        let back = read_back(absolute_to_relative(upload(abs.clone(), [h, t, t], &device), &device)).unwrap();
        for head in 0..h {
            for i in 0..t {
                for r in 0..span {
                    let j = r as isize - (t as isize - 1) + i as isize;
                    let expected =
                        if (0..t as isize).contains(&j) { abs[(head * t + i) * t + j as usize] } else { 0.0 };
                    assert_eq!(back[(head * t + i) * span + r], expected);
                }
            }
        }
    }
}
