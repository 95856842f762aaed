//! Whisper in burn, the same code on flex and wgpu, with weights read from CTranslate2's
//! `model.bin` or a Hugging Face folder ([`WhisperWeights`], named as CTranslate2 names them):
//! the encoder (two GELU convolutions over the log-mel frames, the second halving
//! them, sinusoidal positions, pre-norm blocks) and the decoder (token and learned position
//! embeddings, pre-norm blocks of causal self-attention, cross-attention to the audio and a GELU
//! feed-forward, the output projection tied to the embedding).
//!
//! Decoding keeps each layer's self-attention keys and values ([`DecoderCache`]), so a step
//! computes only its new token; [`Whisper::next_logits`] recomputes a whole prefix (the
//! reference the cached path is tested against).

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Tensor};

use super::ctranslate2::{Ct2Error, Ct2Model};
use super::mel::LogMel;
use crate::model::ModelError;
use crate::model::layers::{LayerNorm, Linear, read_back, upload};
use crate::model::weights::{HostTensor, WeightError};

/// Whisper's layer-norm epsilon.
const EPS: f64 = 1e-5;

#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error(transparent)]
    File(#[from] Ct2Error),
    #[error(transparent)]
    Weight(#[from] WeightError),
    #[error("{0}")]
    Shape(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The sizes read from the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhisperDims {
    pub mel_bands: usize,
    pub width: usize,
    pub heads: usize,
    pub audio_positions: usize,
    pub text_positions: usize,
    pub vocab: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
}

struct SelfAttention {
    norm: LayerNorm,
    /// Query, key and value stacked (`[3·width, width]`; the key's bias is zero).
    qkv: Linear,
    out: Linear,
}

struct CrossAttention {
    norm: LayerNorm,
    query: Linear,
    /// Key and value of the audio, stacked.
    kv: Linear,
    out: Linear,
}

struct FeedForward {
    norm: LayerNorm,
    up: Linear,
    down: Linear,
}

struct EncoderBlock {
    attention: SelfAttention,
    ffn: FeedForward,
}

struct DecoderBlock {
    attention: SelfAttention,
    cross: CrossAttention,
    ffn: FeedForward,
}

/// The audio's keys and values for every decoder layer (`[heads, frames, head_dim]` each).
pub struct AudioContext {
    layers: Vec<(Tensor<3>, Tensor<3>)>,
}

/// The decoder's self-attention keys and values so far (`[heads, tokens, head_dim]` a layer).
#[derive(Default, Clone)]
pub struct DecoderCache {
    layers: Vec<(Tensor<3>, Tensor<3>)>,
    len: usize,
}

impl DecoderCache {
    /// Tokens already decoded into it.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub struct Whisper {
    pub dims: WhisperDims,
    conv1: (Vec<f32>, Vec<f32>),
    conv2: (Vec<f32>, Vec<f32>),
    audio_positions: Tensor<2>,
    encoder: Vec<EncoderBlock>,
    encoder_norm: LayerNorm,
    /// Token embeddings on the host: a lookup is a row copy.
    embeddings: HostTensor,
    text_positions: HostTensor,
    decoder: Vec<DecoderBlock>,
    decoder_norm: LayerNorm,
    projection: Linear,
    device: Device,
}

/// Whisper's weights by CTranslate2's names (`encoder/layer_0/self_attention/linear_0/weight`:
/// query, key and value stacked; `decoder/layer_0/attention/linear_1`: the cross-attention's key
/// and value stacked), whatever layout they are stored in.
pub trait WhisperWeights {
    /// A float tensor and its shape.
    fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), WhisperError>;
    fn has(&self, name: &str) -> bool;
    /// Attention heads, when the weights say.
    fn heads(&self) -> Option<usize>;
}

impl WhisperWeights for Ct2Model {
    fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), WhisperError> {
        Ok(Ct2Model::floats(self, name)?)
    }

    fn has(&self, name: &str) -> bool {
        self.variable(name).is_some()
    }

    fn heads(&self) -> Option<usize> {
        self.int_scalar("encoder/num_heads").map(|h| h as usize)
    }
}

/// Reads tensors by name, checking shapes.
struct Reader<'a> {
    model: &'a dyn WhisperWeights,
    device: &'a Device,
    width: usize,
}

impl Reader<'_> {
    fn host(&self, name: &str) -> Result<HostTensor, WhisperError> {
        let (shape, data) = self.model.floats(name)?;
        Ok(HostTensor { shape, data })
    }

    fn linear(&self, name: &str, out_in: [usize; 2]) -> Result<Linear, WhisperError> {
        let bias = match self.model.has(&format!("{name}/bias")) {
            true => Some(self.host(&format!("{name}/bias"))?),
            false => None,
        };
        Ok(Linear::from_host(name, self.host(&format!("{name}/weight"))?, bias, out_in, self.device)?)
    }

    fn norm(&self, name: &str) -> Result<LayerNorm, WhisperError> {
        let (gamma, beta) = (self.host(&format!("{name}/gamma"))?, self.host(&format!("{name}/beta"))?);
        Ok(LayerNorm::from_host(name, gamma, beta, self.width, EPS, self.device)?)
    }

    fn self_attention(&self, scope: &str) -> Result<SelfAttention, WhisperError> {
        let w = self.width;
        Ok(SelfAttention {
            norm: self.norm(&format!("{scope}/layer_norm"))?,
            qkv: self.linear(&format!("{scope}/linear_0"), [3 * w, w])?,
            out: self.linear(&format!("{scope}/linear_1"), [w, w])?,
        })
    }

    fn ffn(&self, scope: &str, hidden: usize) -> Result<FeedForward, WhisperError> {
        let w = self.width;
        Ok(FeedForward {
            norm: self.norm(&format!("{scope}/layer_norm"))?,
            up: self.linear(&format!("{scope}/linear_0"), [hidden, w])?,
            down: self.linear(&format!("{scope}/linear_1"), [w, hidden])?,
        })
    }
}

/// Counts `prefix{i}/…` layers.
fn count_layers(model: &dyn WhisperWeights, prefix: &str) -> usize {
    (0..).take_while(|i| model.has(&format!("{prefix}{i}/ffn/linear_0/weight"))).count()
}

impl Whisper {
    /// Loads a CTranslate2 Whisper (`WhisperSpec`).
    pub fn load_ct2(model: &Ct2Model, device: &Device) -> Result<Self, WhisperError> {
        if model.spec != "WhisperSpec" {
            return Err(WhisperError::Shape(format!("a `{}` model, not Whisper", model.spec)));
        }
        Self::load(model, device)
    }

    /// Loads Whisper from weights in any layout.
    pub fn load(model: &dyn WhisperWeights, device: &Device) -> Result<Self, WhisperError> {
        let (conv1_shape, conv1_weight) = model.floats("encoder/conv1/weight")?;
        let [width, mel_bands, 3] = conv1_shape[..] else {
            return Err(WhisperError::Shape(format!("encoder/conv1/weight is {conv1_shape:?}, not [width, bands, 3]")));
        };
        let heads = model.heads().unwrap_or(6);
        if heads == 0 || !width.is_multiple_of(heads) {
            return Err(WhisperError::Shape(format!("{heads} heads for width {width}")));
        }
        let r = Reader { model, device, width };
        let (_, conv1_bias) = model.floats("encoder/conv1/bias")?;
        let (_, conv2_weight) = model.floats("encoder/conv2/weight")?;
        let (_, conv2_bias) = model.floats("encoder/conv2/bias")?;
        if conv2_weight.len() != width * width * 3 || conv1_bias.len() != width || conv2_bias.len() != width {
            return Err(WhisperError::Shape("the encoder's convolutions do not fit its width".into()));
        }
        let audio = r.host("encoder/position_encodings/encodings")?;
        let text_positions = r.host("decoder/position_encodings/encodings")?;
        let embeddings = r.host("decoder/embeddings/weight")?;
        let [vocab, _] = embeddings.matrix_dims("decoder/embeddings/weight")?;
        let hidden = model.floats("encoder/layer_0/ffn/linear_0/bias")?.1.len();
        let dims = WhisperDims {
            mel_bands,
            width,
            heads,
            audio_positions: audio.shape.first().copied().unwrap_or(0),
            text_positions: text_positions.shape.first().copied().unwrap_or(0),
            vocab,
            encoder_layers: count_layers(model, "encoder/layer_"),
            decoder_layers: count_layers(model, "decoder/layer_"),
        };
        let encoder = (0..dims.encoder_layers)
            .map(|i| {
                let scope = format!("encoder/layer_{i}");
                Ok(EncoderBlock {
                    attention: r.self_attention(&format!("{scope}/self_attention"))?,
                    ffn: r.ffn(&format!("{scope}/ffn"), hidden)?,
                })
            })
            .collect::<Result<Vec<_>, WhisperError>>()?;
        let decoder = (0..dims.decoder_layers)
            .map(|i| {
                let scope = format!("decoder/layer_{i}");
                let cross = format!("{scope}/attention");
                Ok(DecoderBlock {
                    attention: r.self_attention(&format!("{scope}/self_attention"))?,
                    cross: CrossAttention {
                        norm: r.norm(&format!("{cross}/layer_norm"))?,
                        query: r.linear(&format!("{cross}/linear_0"), [width, width])?,
                        kv: r.linear(&format!("{cross}/linear_1"), [2 * width, width])?,
                        out: r.linear(&format!("{cross}/linear_2"), [width, width])?,
                    },
                    ffn: r.ffn(&format!("{scope}/ffn"), hidden)?,
                })
            })
            .collect::<Result<Vec<_>, WhisperError>>()?;
        let projection = Linear::from_host("decoder/projection", embeddings.clone(), None, [vocab, width], device)?;
        Ok(Self {
            dims,
            conv1: (conv1_weight, conv1_bias),
            conv2: (conv2_weight, conv2_bias),
            audio_positions: upload(audio.data, [dims.audio_positions, width], device),
            encoder,
            encoder_norm: r.norm("encoder/layer_norm")?,
            embeddings,
            text_positions,
            decoder,
            decoder_norm: r.norm("decoder/layer_norm")?,
            projection,
            device: device.clone(),
        })
    }

    /// A 1-D convolution of width 3 over `[channels, frames]` host values, padded by 1: output
    /// `[frames / stride, out]` rows (frame-major), bias added, through GELU.
    fn conv(
        &self,
        input: &[f32],
        channels: usize,
        frames: usize,
        stride: usize,
        conv: &(Vec<f32>, Vec<f32>),
    ) -> Tensor<2> {
        let out_frames = frames.div_ceil(stride);
        // Each output frame's window, channel-major with the 3 taps inner (the weight's order).
        let mut patches = vec![0f32; out_frames * channels * 3];
        for t in 0..out_frames {
            let row = &mut patches[t * channels * 3..(t + 1) * channels * 3];
            for c in 0..channels {
                for k in 0..3 {
                    let src = (t * stride + k) as isize - 1;
                    if src >= 0 && (src as usize) < frames {
                        row[c * 3 + k] = input[c * frames + src as usize];
                    }
                }
            }
        }
        let width = conv.1.len();
        // [out, channels·3] → [channels·3, out] for the product.
        let weight = crate::model::layers::transpose(&conv.0, width, channels * 3);
        let y = upload(patches, [out_frames, channels * 3], &self.device).matmul(upload(
            weight,
            [channels * 3, width],
            &self.device,
        )) + upload(conv.1.clone(), [1, width], &self.device);
        gelu(y)
    }

    /// The encoder's output for one 30 s window: `[audio_positions, width]`.
    pub fn encode(&self, mel: &LogMel) -> Result<Tensor<2>, WhisperError> {
        let d = self.dims;
        if mel.bands != d.mel_bands || mel.frames != 2 * d.audio_positions {
            return Err(WhisperError::Shape(format!(
                "{} bands × {} frames for a model of {} bands × {} frames",
                mel.bands,
                mel.frames,
                d.mel_bands,
                2 * d.audio_positions
            )));
        }
        let x = self.conv(&mel.values, d.mel_bands, mel.frames, 1, &self.conv1);
        // The second convolution reads channel-major values.
        let x = read_back(x.swap_dims(0, 1))?;
        let mut x = self.conv(&x, d.width, mel.frames, 2, &self.conv2) + self.audio_positions.clone();
        for block in &self.encoder {
            x = x.clone() + self.self_attention(&block.attention, x, false)?;
            x = x.clone() + self.feed_forward(&block.ffn, x)?;
        }
        Ok(self.encoder_norm.forward(x))
    }

    /// The audio's keys and values, once per window, for every decoding step.
    pub fn audio_context(&self, audio: &Tensor<2>) -> Result<AudioContext, WhisperError> {
        let w = self.dims.width;
        let layers = self
            .decoder
            .iter()
            .map(|block| {
                let kv = block.cross.kv.forward(audio.clone())?;
                let [frames, _] = kv.dims();
                Ok((self.heads(kv.clone().slice([0..frames, 0..w])), self.heads(kv.slice([0..frames, w..2 * w]))))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(AudioContext { layers })
    }

    /// `[len, width]` → `[heads, len, head_dim]`.
    fn heads(&self, x: Tensor<2>) -> Tensor<3> {
        let [len, _] = x.dims();
        let (heads, dim) = (self.dims.heads, self.dims.width / self.dims.heads);
        x.reshape([len, heads, dim]).swap_dims(0, 1)
    }

    /// Scaled dot-product attention over heads; `causal` masks keys after each query's own
    /// position (the queries are the last `len` of the keys' positions).
    fn attend(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, causal: bool) -> Tensor<2> {
        let [heads, len, dim] = q.dims();
        let keys = k.dims()[1];
        let mut scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(1.0 / (dim as f64).sqrt());
        if causal && len > 1 {
            let before = keys - len;
            let mask: Vec<f32> = (0..len)
                .flat_map(|i| (0..keys).map(move |j| if j > before + i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            scores = scores + upload(mask, [1, len, keys], &self.device);
        }
        softmax(scores, 2).matmul(v).swap_dims(0, 1).reshape([len, heads * dim])
    }

    fn self_attention(&self, a: &SelfAttention, x: Tensor<2>, causal: bool) -> Result<Tensor<2>, ModelError> {
        let w = self.dims.width;
        let qkv = a.qkv.forward(a.norm.forward(x))?;
        let [len, _] = qkv.dims();
        let part = |i: usize| self.heads(qkv.clone().slice([0..len, i * w..(i + 1) * w]));
        let y = self.attend(part(0), part(1), part(2), causal);
        a.out.forward(y)
    }

    fn feed_forward(&self, f: &FeedForward, x: Tensor<2>) -> Result<Tensor<2>, ModelError> {
        f.down.forward(gelu(f.up.forward(f.norm.forward(x))?))
    }

    /// The next token's logits after `tokens` (the prompt and what was decoded so far),
    /// computed from scratch.
    pub fn next_logits(&self, audio: &AudioContext, tokens: &[u32]) -> Result<Vec<f32>, WhisperError> {
        self.decode(audio, &mut DecoderCache::default(), tokens)
    }

    /// Feeds `tokens` after what `cache` holds and returns the next token's logits; the cache
    /// then holds them too.
    pub fn decode(
        &self,
        audio: &AudioContext,
        cache: &mut DecoderCache,
        tokens: &[u32],
    ) -> Result<Vec<f32>, WhisperError> {
        let x = self.decoder_states(audio, cache, tokens, &[], &mut Vec::new())?;
        let d = self.dims;
        let last = self.decoder_norm.forward(x.slice([tokens.len() - 1..tokens.len(), 0..d.width]));
        Ok(read_back(self.projection.forward(last)?)?)
    }

    /// The cross-attention scores (`q·k / √d`, before the softmax) of `heads` — (layer, head)
    /// pairs — for every token of `tokens` fed from the start: `[heads.len(), tokens, frames]`
    /// on the host, in `heads`' order. Word timestamps align text to audio with them.
    pub fn cross_attention_scores(
        &self,
        audio: &AudioContext,
        tokens: &[u32],
        heads: &[(usize, usize)],
    ) -> Result<Vec<f32>, WhisperError> {
        for &(layer, head) in heads {
            if layer >= self.dims.decoder_layers || head >= self.dims.heads {
                return Err(WhisperError::Shape(format!("alignment head ({layer}, {head}) is not in the model")));
            }
        }
        let mut scores = Vec::new();
        self.decoder_states(audio, &mut DecoderCache::default(), tokens, heads, &mut scores)?;
        // Layer by layer as computed; `heads`' order is asked for.
        let mut computed: Vec<(usize, usize)> = heads.to_vec();
        computed.sort_unstable();
        let mut out = Vec::new();
        for pair in heads {
            let i = computed.iter().position(|p| p == pair).unwrap_or(0);
            out.extend(read_back(scores[i].clone())?);
        }
        Ok(out)
    }

    /// The decoder's hidden states for `tokens` fed after what `cache` holds, which then holds
    /// them too; the cross-attention scores of `capture`'s heads are pushed to `scores` in
    /// (layer, head) order, each `[tokens, frames]`.
    fn decoder_states(
        &self,
        audio: &AudioContext,
        cache: &mut DecoderCache,
        tokens: &[u32],
        capture: &[(usize, usize)],
        scores: &mut Vec<Tensor<2>>,
    ) -> Result<Tensor<2>, WhisperError> {
        let d = self.dims;
        let start = cache.len;
        if tokens.is_empty() || start + tokens.len() > d.text_positions {
            return Err(WhisperError::Shape(format!(
                "{} tokens after {start} (1 to {} fit)",
                tokens.len(),
                d.text_positions
            )));
        }
        let mut rows = Vec::with_capacity(tokens.len() * d.width);
        for (i, &t) in tokens.iter().enumerate() {
            let pos = start + i;
            let t = t as usize;
            if t >= d.vocab {
                return Err(WhisperError::Shape(format!("token {t} is outside the vocabulary of {}", d.vocab)));
            }
            let embedding = &self.embeddings.data[t * d.width..(t + 1) * d.width];
            let position = &self.text_positions.data[pos * d.width..(pos + 1) * d.width];
            rows.extend(embedding.iter().zip(position).map(|(e, p)| e + p));
        }
        let mut x = upload(rows, [tokens.len(), d.width], &self.device);
        let w = d.width;
        for (layer, (block, (k, v))) in self.decoder.iter().zip(&audio.layers).enumerate() {
            let a = &block.attention;
            let qkv = a.qkv.forward(a.norm.forward(x.clone()))?;
            let len = tokens.len();
            let part = |i: usize| self.heads(qkv.clone().slice([0..len, i * w..(i + 1) * w]));
            let (q, mut keys, mut values) = (part(0), part(1), part(2));
            if let Some((past_k, past_v)) = cache.layers.get(layer) {
                keys = Tensor::cat(vec![past_k.clone(), keys], 1);
                values = Tensor::cat(vec![past_v.clone(), values], 1);
            }
            let attended = a.out.forward(self.attend(q, keys.clone(), values.clone(), true))?;
            match cache.layers.get_mut(layer) {
                Some(slot) => *slot = (keys, values),
                None => cache.layers.push((keys, values)),
            }
            x = x + attended;
            let c = &block.cross;
            let q = self.heads(c.query.forward(c.norm.forward(x.clone()))?);
            let mut wanted: Vec<usize> = capture.iter().filter(|(l, _)| *l == layer).map(|&(_, h)| h).collect();
            wanted.sort_unstable();
            for head in wanted {
                let [_, frames, dim] = k.dims();
                let qh = q.clone().slice([head..head + 1, 0..len, 0..dim]).reshape([len, dim]);
                let kh = k.clone().slice([head..head + 1, 0..frames, 0..dim]).reshape([frames, dim]);
                scores.push(qh.matmul(kh.transpose()).mul_scalar(1.0 / (dim as f64).sqrt()));
            }
            x = x + c.out.forward(self.attend(q, k.clone(), v.clone(), false))?;
            x = x.clone() + self.feed_forward(&block.ffn, x)?;
        }
        cache.len = start + tokens.len();
        Ok(x)
    }
}
