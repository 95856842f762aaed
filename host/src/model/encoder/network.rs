//! BERT and MPNet encoders in burn, written once for every device: token, position (and BERT's
//! token-type) embeddings, then post-norm blocks of bidirectional self-attention and a GELU
//! feed-forward. MPNet adds a relative-position bias to every attention score, shared by all
//! layers. A batch is padded to one length; padded keys are masked out of the attention, so a
//! padded sequence gets exactly the vectors it gets alone.

use burn::tensor::activation::{gelu, gelu_approximate, relu, softmax};
use burn::tensor::{Device, Tensor};

use super::EncoderError;
use super::layout::{Activation, EncoderArch, EncoderConfig};
use crate::model::cpu::{self, HostValues};
use crate::model::layers::{LayerNorm, Linear, is_flex, upload};
use crate::model::progress::LoadProgress;
use crate::model::weights::{HostTensor, SafetensorsWeights, WeightError};
use hearth_kernels::ops::{self, EncoderBatch, Projected};
use hearth_kernels::{INT8_BLOCK, int8_available};
use hearth_settings::EmbeddingPrecision;

/// Added to the attention scores of padded keys: their weight after the softmax is exactly 0.
const MASKED: f32 = -1e30;
/// MPNet's relative positions beyond this distance share the last bucket.
const RELATIVE_MAX_DISTANCE: i64 = 128;

/// The query, key and value projections.
// Built once per layer at load and never moved: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
enum Qkv {
    /// Stacked into one `[3·hidden, hidden]` projection: one product.
    Stacked(Linear),
    /// 8-bit query and key stacked, the value apart in f32: of all the projections, the value's
    /// 8-bit rounding moves the vectors most (measured on all-MiniLM-L6-v2: as much as all the
    /// others together).
    Split { qk: Linear, v: Linear },
}

/// The bias every attention score gets, where the attention runs.
// One per forward pass, never moved: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Scores {
    /// MPNet's `[heads, len, len]` relative positions, if any (padded keys are skipped).
    Host(Option<Vec<f32>>),
    /// Padded keys masked (and MPNet's relative positions added).
    Device(Tensor<4>),
}

struct Block {
    qkv: Qkv,
    out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    ffn_norm: LayerNorm,
}

/// A loaded encoder.
pub struct Encoder {
    config: EncoderConfig,
    /// Embedding tables on the host: a lookup is a row copy.
    word: HostTensor,
    position: HostTensor,
    /// BERT's token-type row 0 (every input is a single segment).
    token_type: Option<Vec<f32>>,
    embed_norm: LayerNorm,
    blocks: Vec<Block>,
    /// MPNet's `[buckets, heads]` relative-position bias.
    relative_bias: Option<HostTensor>,
    device: Device,
    /// On the CPU the exact GELU runs as one vectorised pass (burn's calls a scalar `erf`).
    cpu: bool,
    /// The projections hold 8-bit weights.
    int8: bool,
}

/// The checkpoint's tensor names: with or without the `bert.`/`mpnet.` prefix a task head adds.
#[derive(Clone, Copy)]
struct Names<'a> {
    weights: &'a SafetensorsWeights,
    prefix: &'static str,
    /// Projections become [`Linear::from_host_int8`] layers (the caller checked the CPU).
    int8: bool,
}

impl Names<'_> {
    fn read(&self, name: &str) -> Result<HostTensor, WeightError> {
        self.weights.read_named(&format!("{}{name}", self.prefix))
    }

    /// A layer norm, under today's `weight`/`bias` names or TF-era `gamma`/`beta`.
    fn norm(&self, name: &str, c: &EncoderConfig, device: &Device) -> Result<LayerNorm, WeightError> {
        let part = |new: &str, old: &str| {
            self.read(&format!("{name}.{new}")).or_else(|e| self.read(&format!("{name}.{old}")).map_err(|_| e))
        };
        LayerNorm::from_host(
            name,
            part("weight", "gamma")?,
            part("bias", "beta")?,
            c.hidden_size,
            c.layer_norm_eps,
            device,
        )
    }

    fn linear(&self, name: &str, out_in: [usize; 2], device: &Device) -> Result<Linear, WeightError> {
        let weight = self.read(&format!("{name}.weight"))?;
        let bias = Some(self.read(&format!("{name}.bias"))?);
        self.projection(name, weight, bias, out_in, device)
    }

    /// A projection in the chosen precision: 8-bit where asked and its width is whole
    /// activation blocks, else f32.
    fn projection(
        &self,
        name: &str,
        weight: HostTensor,
        bias: Option<HostTensor>,
        out_in: [usize; 2],
        device: &Device,
    ) -> Result<Linear, WeightError> {
        if self.int8 && out_in[1].is_multiple_of(INT8_BLOCK) {
            Linear::from_host_int8(name, weight, bias, out_in)
        } else {
            Linear::from_host(name, weight, bias, out_in, device)
        }
    }

    /// Query, key and value, stacked as the precision allows.
    fn qkv(&self, names: &[String; 3], h: usize, device: &Device) -> Result<Qkv, WeightError> {
        if !self.int8 {
            return Ok(Qkv::Stacked(self.stacked(names, [h, h], device)?));
        }
        let exact = Names { int8: false, ..*self };
        Ok(Qkv::Split { qk: self.stacked(&names[..2], [h, h], device)?, v: exact.linear(&names[2], [h, h], device)? })
    }

    /// Several `[out, in]` projections of the same input as one.
    fn stacked(&self, names: &[String], out_in: [usize; 2], device: &Device) -> Result<Linear, WeightError> {
        let mut weight = Vec::new();
        let mut bias = Vec::new();
        for name in names {
            let w = self.read(&format!("{name}.weight"))?;
            if w.shape != out_in {
                return Err(WeightError::Shape {
                    name: format!("{name}.weight"),
                    expected: format!("{out_in:?}"),
                    found: w.shape,
                });
            }
            weight.extend_from_slice(&w.data);
            bias.extend_from_slice(&self.read(&format!("{name}.bias"))?.data);
        }
        let rows = out_in[0] * names.len();
        let weight = HostTensor { shape: vec![rows, out_in[1]], data: weight };
        let bias = HostTensor { shape: vec![bias.len()], data: bias };
        self.projection(&names.join("+"), weight, Some(bias), [rows, out_in[1]], device)
    }
}

fn expect_rows(name: &str, t: &HostTensor, rows: usize, cols: usize) -> Result<(), WeightError> {
    match t.shape.as_slice() {
        [r, c] if *r >= rows && *c == cols => Ok(()),
        _ => {
            Err(WeightError::Shape { name: name.into(), expected: format!("[{rows}, {cols}]"), found: t.shape.clone() })
        }
    }
}

impl Encoder {
    /// Loads the encoder; with [`EmbeddingPrecision::Auto`] on the CPU device of a CPU with
    /// AVX-512 VNNI its projections hold 8-bit weights.
    pub fn load(
        config: &EncoderConfig,
        weights: &SafetensorsWeights,
        device: &Device,
        precision: EmbeddingPrecision,
        progress: &LoadProgress,
    ) -> Result<Self, EncoderError> {
        let c = config;
        // The embeddings, then each layer.
        progress.begin(c.num_layers + 1);
        let prefix = ["", "bert.", "mpnet.", "model."]
            .into_iter()
            .find(|p| weights.names().any(|n| n == format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| WeightError::Missing("embeddings.word_embeddings.weight".into()))?;
        let int8 = precision == EmbeddingPrecision::Auto && is_flex(device) && int8_available();
        let names = Names { weights, prefix, int8 };
        let h = c.hidden_size;
        let word = names.read("embeddings.word_embeddings.weight")?;
        expect_rows("embeddings.word_embeddings.weight", &word, c.vocab_size, h)?;
        let position = names.read("embeddings.position_embeddings.weight")?;
        expect_rows("embeddings.position_embeddings.weight", &position, c.max_position_embeddings, h)?;
        let token_type = match c.arch {
            EncoderArch::Bert if c.type_vocab_size > 0 => {
                let t = names.read("embeddings.token_type_embeddings.weight")?;
                expect_rows("embeddings.token_type_embeddings.weight", &t, 1, h)?;
                Some(t.data[..h].to_vec())
            }
            _ => None,
        };
        let embed_norm = names.norm("embeddings.LayerNorm", c, device)?;
        let relative_bias = match c.arch {
            EncoderArch::MpNet => {
                let t = names.read("encoder.relative_attention_bias.weight")?;
                if t.shape != [c.relative_attention_buckets, c.num_heads] {
                    return Err(WeightError::Shape {
                        name: "encoder.relative_attention_bias.weight".into(),
                        expected: format!("[{}, {}]", c.relative_attention_buckets, c.num_heads),
                        found: t.shape,
                    }
                    .into());
                }
                Some(t)
            }
            EncoderArch::Bert => None,
        };
        progress.advance();
        let mut blocks = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let l = format!("encoder.layer.{i}");
            let (qkv, out, attn_norm) = match c.arch {
                EncoderArch::Bert => (
                    [
                        format!("{l}.attention.self.query"),
                        format!("{l}.attention.self.key"),
                        format!("{l}.attention.self.value"),
                    ],
                    format!("{l}.attention.output.dense"),
                    format!("{l}.attention.output.LayerNorm"),
                ),
                EncoderArch::MpNet => (
                    [format!("{l}.attention.attn.q"), format!("{l}.attention.attn.k"), format!("{l}.attention.attn.v")],
                    format!("{l}.attention.attn.o"),
                    format!("{l}.attention.LayerNorm"),
                ),
            };
            blocks.push(Block {
                qkv: names.qkv(&qkv, h, device)?,
                out: names.linear(&out, [h, h], device)?,
                attn_norm: names.norm(&attn_norm, c, device)?,
                up: names.linear(&format!("{l}.intermediate.dense"), [c.intermediate_size, h], device)?,
                down: names.linear(&format!("{l}.output.dense"), [h, c.intermediate_size], device)?,
                ffn_norm: names.norm(&format!("{l}.output.LayerNorm"), c, device)?,
            });
            progress.advance();
        }
        Ok(Self {
            config: c.clone(),
            word,
            position,
            token_type,
            embed_norm,
            blocks,
            relative_bias,
            device: device.clone(),
            cpu: is_flex(device),
            int8,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Whether the projections compute on 8-bit weights and activations.
    pub fn is_int8(&self) -> bool {
        self.int8
    }

    /// The last hidden states of `batch` padded to `len` tokens: `[batch, len, hidden]`
    /// row-major on the host. Every sequence must be 1..=`len` tokens of the vocabulary, and
    /// `len` within the position table.
    pub fn forward(&self, batch: &[&[u32]], len: usize) -> Result<Vec<f32>, EncoderError> {
        let c = &self.config;
        let (b, h) = (batch.len(), c.hidden_size);
        if b == 0 || len == 0 || len > c.usable_positions() || batch.iter().any(|s| s.is_empty() || s.len() > len) {
            return Err(EncoderError::Input(format!("a batch of sequences of 1 to {} tokens", c.usable_positions())));
        }
        if let Some(&bad) = batch.iter().flat_map(|s| s.iter()).find(|&&t| t as usize >= c.vocab_size) {
            return Err(EncoderError::Input(format!("token id {bad} is outside the vocabulary of {}", c.vocab_size)));
        }
        let x = upload(self.embed(batch, len), [b * len, h], &self.device);
        let mut x = self.embed_norm.forward_residual(x, None)?;
        let lens: Vec<usize> = batch.iter().map(|s| s.len()).collect();
        let scores = if self.cpu {
            Scores::Host(self.relative_bias.as_ref().map(|t| self.relative_position_bias(t, len)))
        } else {
            Scores::Device(self.score_bias(&lens, len))
        };
        for block in &self.blocks {
            let context = match &scores {
                Scores::Host(bias) => self.attention_on_host(block, &x, &lens, len, bias.as_deref())?,
                Scores::Device(bias) => self.attention_on_device(block, &x, b, len, bias)?,
            };
            x = block.attn_norm.forward_residual(block.out.forward(context)?, Some(x))?;
            let up = block.up.forward(x.clone())?;
            let up = match c.activation {
                Activation::Gelu if self.cpu => cpu::map_in_place(up, ops::gelu)?,
                Activation::Gelu => gelu(up),
                Activation::GeluTanh => gelu_approximate(up),
                Activation::Relu => relu(up),
            };
            x = block.ffn_norm.forward_residual(block.down.forward(up)?, Some(x))?;
        }
        let data = x.try_into_data().map_err(|e| EncoderError::Execution(format!("{e:?}")))?;
        hearth_gpu_kernels::counters::note_readback(data.bytes().len());
        data.try_to_vec::<f32>().map_err(|e| EncoderError::Execution(format!("{e:?}")))
    }

    /// `[batch, heads, len, len]`-broadcastable scores' bias on the device: padded keys masked,
    /// MPNet's relative positions added.
    fn score_bias(&self, lens: &[usize], len: usize) -> Tensor<4> {
        let (b, heads) = (lens.len(), self.config.num_heads);
        let mut mask = vec![0f32; b * len];
        for (row, &n) in mask.chunks_exact_mut(len).zip(lens) {
            row[n..].fill(MASKED);
        }
        let mut bias: Tensor<4> = upload(mask, [b, 1, 1, len], &self.device);
        if let Some(table) = &self.relative_bias {
            bias = bias + upload(self.relative_position_bias(table, len), [1, heads, len, len], &self.device);
        }
        bias
    }

    /// The projections' values for the block's attention, `[tokens, hidden]` each.
    fn project(&self, block: &Block, x: &Tensor<2>, tokens: usize) -> Result<[Tensor<2>; 3], EncoderError> {
        let h = self.config.hidden_size;
        Ok(match &block.qkv {
            Qkv::Stacked(qkv) => {
                let qkv = qkv.forward(x.clone())?;
                [
                    qkv.clone().slice([0..tokens, 0..h]),
                    qkv.clone().slice([0..tokens, h..2 * h]),
                    qkv.slice([0..tokens, 2 * h..3 * h]),
                ]
            }
            Qkv::Split { qk, v } => {
                let qk = qk.forward(x.clone())?;
                [qk.clone().slice([0..tokens, 0..h]), qk.slice([0..tokens, h..2 * h]), v.forward(x.clone())?]
            }
        })
    }

    /// Attention with burn's operations (a GPU): heads split out, masked scores, softmax.
    fn attention_on_device(
        &self,
        block: &Block,
        x: &Tensor<2>,
        b: usize,
        len: usize,
        bias: &Tensor<4>,
    ) -> Result<Tensor<2>, EncoderError> {
        let c = &self.config;
        let (h, heads, dim) = (c.hidden_size, c.num_heads, c.head_dim());
        let heads_of = |t: Tensor<2>| t.reshape([b, len, heads, dim]).swap_dims(1, 2);
        let [q, k, v] = self.project(block, x, b * len)?.map(heads_of);
        let scale = 1.0 / (dim as f64).sqrt();
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + bias.clone();
        Ok(softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b * len, h]))
    }

    /// Attention on the CPU: one pass of [`ops::encoder_attention`] over the projections' rows.
    fn attention_on_host(
        &self,
        block: &Block,
        x: &Tensor<2>,
        lens: &[usize],
        len: usize,
        bias: Option<&[f32]>,
    ) -> Result<Tensor<2>, EncoderError> {
        let c = &self.config;
        let (h, heads, dim) = (c.hidden_size, c.num_heads, c.head_dim());
        let tokens = lens.len() * len;
        let batch = EncoderBatch { lens, padded: len, heads, dim, bias };
        let mut out = vec![0f32; tokens * h];
        match &block.qkv {
            Qkv::Stacked(qkv) => {
                let qkv = HostValues::get(qkv.forward(x.clone())?)?;
                let qkv = qkv.values();
                let part = |offset| Projected { data: &qkv, stride: 3 * h, offset };
                ops::encoder_attention(part(0), part(h), part(2 * h), batch, &mut out);
            }
            Qkv::Split { qk, v } => {
                let qk = HostValues::get(qk.forward(x.clone())?)?;
                let v = HostValues::get(v.forward(x.clone())?)?;
                let (qk, v) = (qk.values(), v.values());
                let part = |offset| Projected { data: &qk, stride: 2 * h, offset };
                ops::encoder_attention(part(0), part(h), Projected { data: &v, stride: h, offset: 0 }, batch, &mut out);
            }
        }
        Ok(cpu::tensor(out, [tokens, h]))
    }

    /// Token + position (+ token type) embeddings of the padded batch, `[batch·len, hidden]`.
    fn embed(&self, batch: &[&[u32]], len: usize) -> Vec<f32> {
        let c = &self.config;
        let h = c.hidden_size;
        let mut out = vec![0f32; batch.len() * len * h];
        for (rows, seq) in out.chunks_exact_mut(len * h).zip(batch) {
            // MPNet numbers positions as RoBERTa does: after the padding id, counting only
            // tokens that are not the padding id (a padding id inside the input stays at it).
            let mut counted = 0usize;
            for (i, (row, &id)) in rows.chunks_exact_mut(h).zip(seq.iter()).enumerate() {
                let position = match c.arch {
                    EncoderArch::Bert => i,
                    EncoderArch::MpNet if id == c.pad_token_id => c.pad_token_id as usize,
                    EncoderArch::MpNet => {
                        counted += 1;
                        c.pad_token_id as usize + counted
                    }
                };
                let word = &self.word.data[id as usize * h..(id as usize + 1) * h];
                let pos = &self.position.data[position * h..(position + 1) * h];
                for ((o, w), p) in row.iter_mut().zip(word).zip(pos) {
                    *o = w + p;
                }
                if let Some(tt) = &self.token_type {
                    for (o, t) in row.iter_mut().zip(tt) {
                        *o += t;
                    }
                }
            }
        }
        out
    }

    /// MPNet's `[heads, len, len]` bias: each head's learned value for the bucket of the
    /// key's offset from the query.
    fn relative_position_bias(&self, table: &HostTensor, len: usize) -> Vec<f32> {
        let heads = self.config.num_heads;
        let buckets = self.config.relative_attention_buckets;
        let mut out = vec![0f32; heads * len * len];
        for q in 0..len {
            for k in 0..len {
                let bucket = relative_bucket(k as i64 - q as i64, buckets);
                for head in 0..heads {
                    out[(head * len + q) * len + k] = table.data[bucket * heads + head];
                }
            }
        }
        out
    }
}

/// transformers' `MPNetEncoder.relative_position_bucket`: half the buckets per direction, exact
/// offsets below a quarter of them, then logarithmic up to [`RELATIVE_MAX_DISTANCE`]. The
/// logarithm runs in f32 as torch runs it, so offsets on a bucket edge fall the same way.
pub fn relative_bucket(relative: i64, buckets: usize) -> usize {
    let half = (buckets / 2) as i64;
    let n = -relative;
    let ret = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    if n < max_exact {
        return (ret + n) as usize;
    }
    let scale = (RELATIVE_MAX_DISTANCE as f64 / max_exact as f64).ln() as f32;
    let large = max_exact + ((n as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32) as i64;
    (ret + large.min(half - 1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_buckets_follow_transformers() {
        // Values printed by transformers' MPNetEncoder.relative_position_bucket (32 buckets).
        let want: &[(i64, usize)] = &[
            (0, 0),
            (-1, 1),
            (1, 17),
            (-7, 7),
            (-8, 8),
            (-12, 9),
            (-16, 10),
            (-40, 12),
            (-127, 15),
            (-500, 15),
            (8, 24),
            (16, 26),
            (500, 31),
        ];
        for &(rel, bucket) in want {
            assert_eq!(relative_bucket(rel, 32), bucket, "offset {rel}");
        }
    }
}
