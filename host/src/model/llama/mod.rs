//! The llama-family decoder in burn: grouped-query attention with rotary embeddings (optional
//! q/k/v biases for Qwen2, per-head q/k RMS norms for Qwen3), SwiGLU feed-forward, RMS norms and
//! an output head that may share the embedding matrix. Written once against burn 0.22's
//! runtime-dispatched `Tensor`/`Device`, so the same code runs on flex and wgpu.

use burn::tensor::activation::softmax;
use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use hearth_gpu_kernels::decode::top_candidates;
use hearth_kernels::QuantMatrix;
use hearth_kernels::ops::{self, AttentionShape, QueryRow};

mod fused;
mod load;

use super::ModelError;
use super::TopCandidates;
use super::config::LlamaConfig;
use super::cpu::{self, HostValues};
use super::kv_cache::KvCache;
use super::layers::{Linear, Mlp, RmsNorm, RowGroup, read_back, transpose, upload};
use super::media::{self, MediaSpan};
use super::rope::{self, Rope};

/// Largest slice of the output matrix kept in one device buffer: lavapipe caps storage buffers at
/// 128 MiB, so big vocabularies are split by rows.
const MAX_HEAD_CHUNK_BYTES: usize = 64 << 20;

/// Which positions of a forward pass need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last token's (generation).
    Last,
    /// Every token's (prompt log-probabilities).
    All,
}

/// One sequence's part of a batched step ([`Llama::forward_batch`]).
pub struct BatchItem<'a> {
    /// The tokens to run after what the cache holds: one for a decode step, a chunk of the
    /// prompt for a prefill.
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub logits: LogitsFor,
    /// How many of `tokens`, from the first, are prompt tokens; the rest are generated ones
    /// (a preempted sequence recomputing its own). The two are multiplied differently — prompt
    /// rows on dequantized tiles, generated rows as lone decode tokens — and a row is always
    /// computed by its kind, so a sequence's numbers depend neither on how its prompt was
    /// chunked nor on what else shared the step.
    pub prompt_rows: usize,
    /// On a GPU, read back only the last row's candidates ([`StepLogits::Top`]) at this
    /// temperature (the request's, for its normaliser), when the sampler can choose from them;
    /// `None` reads back the logits.
    pub candidates: Option<f32>,
    /// The sequence's media: positions whose input rows are given, not looked up.
    pub media: &'a [MediaSpan],
}

/// One item's logits from [`Llama::forward_step`].
pub enum StepLogits {
    /// Every wanted row, `[rows, vocab]` row-major.
    Full(Vec<f32>),
    /// The last row's normalisers and most likely tokens, read back small; the row itself stays
    /// on the device for a sampler that finds the candidates too few.
    Top(Box<TopLogits>),
}

/// The candidates of a row and the row.
pub struct TopLogits {
    pub candidates: TopCandidates,
    row: Tensor<2>,
}

impl StepLogits {
    /// Every logit of the item's rows (read back now for [`Self::Top`]).
    pub fn into_full(self) -> Result<Vec<f32>, ModelError> {
        match self {
            Self::Full(rows) => Ok(rows),
            Self::Top(top) => read_back(top.row),
        }
    }
}

struct Attention {
    qkv: Qkv,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

/// The query, key and value projections of one input.
// Built once per layer when a model loads and never moved on a hot path: boxing the large
// variant would only add an indirection to every product.
#[allow(clippy::large_enum_variant)]
enum Qkv {
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// One quantized matrix of q, k and v rows (the CPU path): one product per step.
    Stacked(Linear),
}

impl Qkv {
    fn new(q: Linear, k: Linear, v: Linear) -> Self {
        match Linear::stack(&[&q, &k, &v]) {
            Some(all) => Self::Stacked(all),
            None => Self::Separate { q, k, v },
        }
    }

    /// `(q, k, v)`, each `[tokens, features]`.
    fn project(
        &self,
        x: Tensor<2>,
        q_dim: usize,
        kv_dim: usize,
    ) -> Result<(Tensor<2>, Tensor<2>, Tensor<2>), ModelError> {
        let rows = x.dims()[0];
        self.project_grouped(x, q_dim, kv_dim, &[RowGroup { rows, tokenwise: false }])
    }

    /// [`Self::project`] over the rows of a batched step.
    fn project_grouped(
        &self,
        x: Tensor<2>,
        q_dim: usize,
        kv_dim: usize,
        groups: &[RowGroup],
    ) -> Result<(Tensor<2>, Tensor<2>, Tensor<2>), ModelError> {
        Ok(match self {
            Self::Separate { q, k, v } => (
                q.forward_grouped(x.clone(), groups)?,
                k.forward_grouped(x.clone(), groups)?,
                v.forward_grouped(x, groups)?,
            ),
            Self::Stacked(all) => {
                let y = all.forward_grouped(x, groups)?;
                let tokens = y.dims()[0];
                (
                    y.clone().slice([0..tokens, 0..q_dim]),
                    y.clone().slice([0..tokens, q_dim..q_dim + kv_dim]),
                    y.slice([0..tokens, q_dim + kv_dim..q_dim + 2 * kv_dim]),
                )
            }
        })
    }
}

struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

/// The token embedding, kept on the host: a lookup is a row copy, and it keeps one of the largest
/// matrices out of the device's buffer limits. A block-quantized table stays quantized and rows
/// are decoded on lookup.
enum Embedding {
    Dense { table: Vec<f32>, hidden: usize },
    Quantized(Arc<QuantMatrix>),
}

impl Embedding {
    /// `[rows, hidden]`.
    fn dims(&self) -> [usize; 2] {
        match self {
            Self::Dense { table, hidden } => [table.len() / (*hidden).max(1), *hidden],
            Self::Quantized(m) => [m.rows(), m.cols()],
        }
    }

    fn rows(&self, tokens: &[u32], device: &Device) -> Tensor<2> {
        self.rows_with(tokens, |_| None, device)
    }

    /// [`Self::rows`], with `given(i)`'s row instead of token `i`'s where it has one.
    fn rows_with<'m>(&self, tokens: &[u32], given: impl Fn(usize) -> Option<&'m [f32]>, device: &Device) -> Tensor<2> {
        let hidden = match self {
            Self::Dense { hidden, .. } => *hidden,
            Self::Quantized(m) => m.cols(),
        };
        let mut data = Vec::with_capacity(tokens.len() * hidden);
        for (i, &t) in tokens.iter().enumerate() {
            if let Some(row) = given(i).filter(|r| r.len() == hidden) {
                data.extend_from_slice(row);
                continue;
            }
            match self {
                Self::Dense { table, .. } => {
                    data.extend_from_slice(&table[t as usize * hidden..(t as usize + 1) * hidden])
                }
                Self::Quantized(m) => data.extend_from_slice(&m.row_f32(t as usize)),
            }
        }
        upload(data, [tokens.len(), hidden], device)
    }
}

/// The output projection to the vocabulary.
// Built once per layer when a model loads and never moved on a hot path: boxing the large
// variant would only add an indirection to every product.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// `[hidden, rows]` slices of the output matrix, in vocabulary order (wgpu's buffers are
    /// limited in size).
    Chunks(Vec<Tensor<2>>),
    /// The block-quantized matrix, on the host for the CPU or on a GPU (it may hold more rows
    /// than the vocabulary).
    Quantized(Linear),
}

/// The loaded model.
pub struct Llama {
    config: LlamaConfig,
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: Head,
    rope: Rope,
    device: Device,
    /// Pad prompt chunks to a few lengths (wgpu compiles a kernel per shape).
    bucket_prompts: bool,
    /// Whether a lone token runs as the fused decode step (a GPU, every projection
    /// block-quantized on it, no per-head norms).
    fused_decode: bool,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("config", &self.config).field("device", &self.device).finish()
    }
}

impl Llama {
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the model runs on the CPU backend (no per-shape kernel compilation to amortise).
    pub fn runs_on_cpu(&self) -> bool {
        !self.bucket_prompts
    }

    /// A fresh, empty cache for one sequence of at most `max_len` positions.
    pub fn new_cache(&self, max_len: usize) -> KvCache {
        let c = &self.config;
        KvCache::new(c.num_layers, c.num_kv_heads, c.head_dim, max_len, &self.device, self.runs_on_cpu())
    }

    /// Runs `tokens` after what `cache` holds, appends them to it, and returns logits
    /// `[n, vocab]` for the last token or every token.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, which: LogitsFor) -> Result<Tensor<2>, ModelError> {
        if cache.is_host() {
            // A lone token runs as a decode step; several as a prompt.
            let prompt_rows = if tokens.len() > 1 { tokens.len() } else { 0 };
            let mut item = [BatchItem { tokens, cache, logits: which, prompt_rows, candidates: None, media: &[] }];
            let mut logits = self.forward_batch(&mut item)?;
            let rows = logits.pop().unwrap_or_default();
            let n = rows.len() / self.config.vocab_size.max(1);
            return Ok(cpu::tensor(rows, [n, self.config.vocab_size]));
        }
        // The whole step runs on one of the compute pool's threads: the CPU path's parallel
        // operations then start from inside the pool instead of each waking it from outside
        // (a thread hand-off per operation, ~150 a token).
        rayon::scope(|_| self.forward_in_pool(tokens, cache, which, &[]))
    }

    /// Runs one step of several sequences and returns each one's logits on the host (`[rows,
    /// vocab]` row-major: its last position's, or every position's). On the CPU every linear
    /// layer multiplies all the step's tokens in one pass over its weights, and attention runs
    /// per sequence over its own cache; decode tokens are computed as lone tokens and each
    /// prompt chunk as that chunk alone, so a sequence gets the same numbers batched or not. On
    /// a GPU the sequences run one after another.
    pub fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.forward_step(items)?.into_iter().map(StepLogits::into_full).collect()
    }

    /// [`Self::forward_batch`], reading back on a GPU only the candidates of the items that
    /// ask for them (a few hundred bytes instead of the vocabulary's logits).
    pub fn forward_step(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<StepLogits>, ModelError> {
        for item in items.iter() {
            self.check_step(item.tokens, item.cache)?;
        }
        if items.iter().all(|i| i.cache.is_host()) {
            return Ok(rayon::scope(|_| self.forward_batch_in_pool(items))?
                .into_iter()
                .map(StepLogits::Full)
                .collect());
        }
        // The decode tokens run as one fused step; prompts and scored rows one by one.
        let fused: Vec<bool> = items
            .iter()
            .map(|i| {
                self.fused_decode
                    && i.tokens.len() == 1
                    && i.logits == LogitsFor::Last
                    && !media::touches(i.media, i.cache.len(), 1)
            })
            .collect();
        let mut rows: Vec<Option<Tensor<2>>> = vec![None; items.len()];
        // The fused step's logits, all its rows, when it ran for several tokens.
        let mut fused_logits = None;
        if fused.iter().filter(|&&f| f).count() > 1 {
            let mut steps: Vec<(u32, &mut KvCache)> =
                items.iter_mut().zip(&fused).filter(|(_, f)| **f).map(|(i, _)| (i.tokens[0], &mut *i.cache)).collect();
            let logits = rayon::scope(|_| self.decode_fused(&mut steps))?;
            let [n, vocab] = logits.dims();
            let mut next = (0..n).map(|r| logits.clone().slice([r..r + 1, 0..vocab]));
            for (slot, _) in rows.iter_mut().zip(&fused).filter(|(_, f)| **f) {
                *slot = next.next();
            }
            fused_logits = Some(logits);
        }
        let mut logits = Vec::with_capacity(items.len());
        for (item, row) in items.iter_mut().zip(rows) {
            logits.push(match row {
                Some(row) => row,
                None => rayon::scope(|_| self.forward_in_pool(item.tokens, item.cache, item.logits, item.media))?,
            });
        }

        // Every row that asks for candidates gets them from one dispatch and one readback.
        let asking: Vec<(usize, f32)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match (item.candidates, item.logits) {
                (Some(temperature), LogitsFor::Last) => Some((i, temperature)),
                _ => None,
            })
            .collect();
        let mut tops: Vec<Option<TopCandidates>> = vec![None; items.len()];
        if !asking.is_empty() {
            let fused_rows: Vec<usize> = (0..items.len()).filter(|&i| fused_logits.is_some() && fused[i]).collect();
            let asked: Vec<usize> = asking.iter().map(|&(i, _)| i).collect();
            let stacked = match (fused_logits, asked.as_slice()) {
                // The common case, every decode token of the step asking: the step's own logits.
                (Some(all), _) if asked == fused_rows => all,
                // One row (a lone sequence's step) is read as it is: a copy would cost a dispatch.
                (_, &[only]) => logits[only].clone(),
                _ => Tensor::cat(asked.iter().map(|&i| logits[i].clone()).collect(), 0),
            };
            let temperatures: Vec<f32> = asking.iter().map(|&(_, t)| t).collect();
            let flat = read_back(top_candidates(stacked, &temperatures))?;
            let width = flat.len() / asking.len();
            for (&i, row) in asked.iter().zip(flat.chunks(width)) {
                tops[i] = Some(TopCandidates::from_device_row(row));
            }
        }
        let mut out = Vec::with_capacity(items.len());
        for (row, top) in logits.into_iter().zip(tops) {
            out.push(match top {
                Some(candidates) => StepLogits::Top(Box::new(TopLogits { candidates, row })),
                None => StepLogits::Full(read_back(row)?),
            });
        }
        Ok(out)
    }

    /// Whether `tokens` may run after what `cache` holds.
    fn check_step(&self, tokens: &[u32], cache: &KvCache) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::Input("no tokens to run".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let needed = cache.len() + tokens.len();
        if needed > cache.max_len() {
            return Err(ModelError::ContextFull { needed, max: cache.max_len() });
        }
        Ok(())
    }

    /// The CPU path of [`Self::forward_batch`].
    fn forward_batch_in_pool(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let hidden = self.config.hidden_size;
        let groups = row_groups(items);
        let starts: Vec<usize> = items.iter().map(|i| i.cache.len()).collect();
        let ids: Vec<u32> = items.iter().flat_map(|i| i.tokens.iter().copied()).collect();
        let mut tables: Vec<(Vec<f32>, Vec<f32>)> = Vec::with_capacity(items.len());
        for (item, &start) in items.iter_mut().zip(&starts) {
            let end = start + item.tokens.len();
            item.cache.reserve(end)?;
            tables.push(self.rope.host_tables(&(start..end).collect::<Vec<_>>()));
        }
        let mut x = if items.iter().all(|i| i.media.is_empty()) {
            self.embedding.rows(&ids, &self.device)
        } else {
            // Each row's sequence and position, for the rows media gives.
            let mut owner = Vec::with_capacity(ids.len());
            for (k, (item, &start)) in items.iter().zip(&starts).enumerate() {
                owner.extend((0..item.tokens.len()).map(|i| (k, start + i)));
            }
            let given = |r: usize| {
                let (k, position) = owner[r];
                media::row_at(items[k].media, position, hidden)
            };
            self.embedding.rows_with(&ids, given, &self.device)
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let normed = block.attn_norm.forward(x.clone())?;
            let attended = self.attention_host(layer, &block.attn, normed, items, &starts, &tables, &groups)?;
            let h = x + attended;
            x = h.clone() + block.mlp.forward_grouped(block.ffn_norm.forward(h)?, &groups)?;
        }
        for (item, &start) in items.iter_mut().zip(&starts) {
            item.cache.commit(&media::cache_keys(item.tokens, start, item.media), item.prompt_rows);
        }

        // The rows whose logits are wanted, gathered, then normed and projected together.
        let all = HostValues::get(x)?;
        let all = all.values();
        let (mut rows, mut per_item, mut first) = (Vec::new(), Vec::with_capacity(items.len()), 0);
        for item in items.iter() {
            let n = item.tokens.len();
            let wanted = match item.logits {
                LogitsFor::Last => first + n - 1..first + n,
                LogitsFor::All => first..first + n,
            };
            per_item.push(wanted.len());
            rows.extend_from_slice(&all[wanted.start * hidden..wanted.end * hidden]);
            first += n;
        }
        let count = per_item.iter().sum();
        let x = self.norm.forward(cpu::tensor(rows, [count, hidden]))?;
        // Every logits row as a lone row: a token's log-probability is then the same whether it
        // was generated or scored as part of a prompt, and whether the prompt was scored or not.
        let head_groups = [RowGroup { rows: count, tokenwise: true }];
        let logits = self.head_logits(x, &head_groups)?;
        let vocab = self.config.vocab_size;
        let mut out = Vec::with_capacity(per_item.len());
        let mut first = 0;
        for n in per_item {
            out.push(logits[first * vocab..(first + n) * vocab].to_vec());
            first += n;
        }
        Ok(out)
    }

    /// `[rows, vocab]` logits on the host for normed hidden states `x`.
    fn head_logits(&self, x: Tensor<2>, groups: &[RowGroup]) -> Result<Vec<f32>, ModelError> {
        let vocab = self.config.vocab_size;
        let logits = match &self.head {
            Head::Chunks(chunks) => {
                let parts: Vec<Tensor<2>> = chunks.iter().map(|w| x.clone().matmul(w.clone())).collect();
                Tensor::cat(parts, 1)
            }
            Head::Quantized(linear) => linear.forward_grouped(x, groups)?,
        };
        let [rows, full] = logits.dims();
        let logits = if full > vocab { logits.slice([0..rows, 0..vocab]) } else { logits };
        Ok(HostValues::get(logits)?.values().into_owned())
    }

    fn forward_in_pool(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: LogitsFor,
        media: &[MediaSpan],
    ) -> Result<Tensor<2>, ModelError> {
        self.check_step(tokens, cache)?;
        let start = cache.len();
        if let (true, &[token], LogitsFor::Last, false) =
            (self.fused_decode, tokens, which, media::touches(media, start, 1))
        {
            return self.decode_fused(&mut [(token, cache)]);
        }
        let n = tokens.len();
        // Padding tokens only ever sit after the real ones, so causal masking keeps them from
        // influencing real positions; their cache entries are overwritten later.
        let padded = if self.bucket_prompts && n > 1 { bucket_len(n).min(cache.max_len() - start) } else { n };
        let mut ids = tokens.to_vec();
        ids.resize(padded, 0);
        let end = start + padded;
        cache.reserve(end)?;
        let span = KvCache::span_for(end);

        let positions: Vec<usize> = (start..end).collect();
        let hidden = self.config.hidden_size;
        let mut x = self.embedding.rows_with(&ids, |i| media::row_at(media, start + i, hidden), &self.device);
        let (cos, sin) = self.rope.tables(&positions, &self.device);
        let mask = self.causal_mask(start, padded, span);
        for (i, block) in self.blocks.iter().enumerate() {
            let normed = block.attn_norm.forward(x.clone())?;
            let attended = self.attention(i, &block.attn, normed, cache, start, &cos, &sin, &mask, span)?;
            let h = x + attended;
            x = h.clone() + block.mlp.forward(block.ffn_norm.forward(h)?)?;
        }
        cache.commit(&media::cache_keys(tokens, start, media), tokens.len());

        let x = match which {
            LogitsFor::Last => x.slice([n - 1..n, 0..self.config.hidden_size]),
            LogitsFor::All => x.slice([0..n, 0..self.config.hidden_size]),
        };
        self.device_head(self.norm.forward(x)?)
    }

    /// Logits `[rows, vocab]` of normed hidden states on a device.
    fn device_head(&self, normed: Tensor<2>) -> Result<Tensor<2>, ModelError> {
        let logits = match &self.head {
            Head::Chunks(chunks) => {
                let parts: Vec<Tensor<2>> = chunks.iter().map(|w| normed.clone().matmul(w.clone())).collect();
                if parts.len() == 1 {
                    parts.into_iter().next().unwrap_or_else(|| unreachable!())
                } else {
                    Tensor::cat(parts, 1)
                }
            }
            Head::Quantized(linear) => linear.forward(normed)?,
        };
        Ok(self.vocab_columns(logits))
    }

    /// `logits` without the columns of head rows past the vocabulary.
    fn vocab_columns(&self, logits: Tensor<2>) -> Tensor<2> {
        let [rows, full] = logits.dims();
        if full > self.config.vocab_size { logits.slice([0..rows, 0..self.config.vocab_size]) } else { logits }
    }

    /// Additive mask `[1, rep * tokens, span]`: 0 where query `i` may see key `j`, -inf elsewhere
    /// (later positions and the unused tail of the cache block).
    fn causal_mask(&self, start: usize, tokens: usize, span: usize) -> Tensor<3> {
        let rep = self.config.num_heads / self.config.num_kv_heads;
        let mut row_block = vec![f32::NEG_INFINITY; tokens * span];
        for i in 0..tokens {
            row_block[i * span..i * span + start + i + 1].fill(0.0);
        }
        let mut data = Vec::with_capacity(rep * tokens * span);
        for _ in 0..rep {
            data.extend_from_slice(&row_block);
        }
        upload(data, [1, rep * tokens, span], &self.device)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        attn: &Attention,
        x: Tensor<2>,
        cache: &mut KvCache,
        start: usize,
        cos: &Tensor<2>,
        sin: &Tensor<2>,
        mask: &Tensor<3>,
        span: usize,
    ) -> Result<Tensor<2>, ModelError> {
        let c = &self.config;
        let tokens = x.dims()[0];
        let (heads, kv_heads, dim) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let split = |t: Tensor<2>, h: usize| t.reshape([tokens, h, dim]).swap_dims(0, 1);
        let (q, k, v) = attn.qkv.project(x, c.q_dim(), c.kv_dim())?;
        let (mut q, mut k, v) = (split(q, heads), split(k, kv_heads), split(v, kv_heads));
        if let (Some(qn), Some(kn)) = (&attn.q_norm, &attn.k_norm) {
            q = qn.forward(q)?;
            k = kn.forward(k)?;
        }
        let q = rope::apply(q, cos, sin);
        let k = rope::apply(k, cos, sin);
        let (keys, values) = cache.write(layer, start, k, v, span)?;

        // Grouped-query attention without copying keys: the query heads that share a key/value
        // head are stacked along the token axis.
        let rep = heads / kv_heads;
        let q = q.reshape([kv_heads, rep * tokens, dim]);
        let scores = q.matmul(keys.swap_dims(1, 2)).mul_scalar(1.0 / (dim as f64).sqrt()) + mask.clone();
        let out = softmax(scores, 2).matmul(values);
        let out = out.reshape([heads, tokens, dim]).swap_dims(0, 1).reshape([tokens, heads * dim]);
        attn.o.forward(out)
    }

    /// The CPU path's attention for a batched step: the projections over every row at once
    /// (grouped as the step's rows are), then per sequence its norms and rotary embedding on
    /// the host values, its keys and values written into its host cache, and one attention
    /// kernel over that cache (heads in parallel, causal by position).
    #[allow(clippy::too_many_arguments)]
    fn attention_host(
        &self,
        layer: usize,
        attn: &Attention,
        x: Tensor<2>,
        items: &mut [BatchItem<'_>],
        starts: &[usize],
        tables: &[(Vec<f32>, Vec<f32>)],
        groups: &[RowGroup],
    ) -> Result<Tensor<2>, ModelError> {
        let c = &self.config;
        let rows = x.dims()[0];
        let (q_dim, kv_dim, dim) = (c.q_dim(), c.kv_dim(), c.head_dim);
        let read = |t: Tensor<2>| HostValues::get(t).map(|h| h.values().into_owned());
        let (q_all, k_all, v_all) = match &attn.qkv {
            // Split on the host: three tensor slices and their copies cost more per step.
            Qkv::Stacked(all) => {
                let y = HostValues::get(all.forward_grouped(x, groups)?)?;
                let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
                for row in y.values().chunks_exact(q_dim + 2 * kv_dim) {
                    let (rq, rest) = row.split_at(q_dim);
                    let (rk, rv) = rest.split_at(kv_dim);
                    q.extend_from_slice(rq);
                    k.extend_from_slice(rk);
                    v.extend_from_slice(rv);
                }
                (q, k, v)
            }
            Qkv::Separate { .. } => {
                let (q, k, v) = attn.qkv.project_grouped(x, q_dim, kv_dim, groups)?;
                (read(q)?, read(k)?, read(v)?)
            }
        };
        let norms = match (&attn.q_norm, &attn.k_norm) {
            (Some(qn), Some(kn)) => match (qn.host_weight(), kn.host_weight()) {
                (Some(qw), Some(kw)) => Some((qw, qn.eps(), kw, kn.eps())),
                _ => return Err(ModelError::Execution("the q/k norms of the CPU path have no host weights".into())),
            },
            _ => None,
        };
        let mut q_all = q_all;
        // Per sequence: its norms and rotary embedding, its keys and values into its cache.
        let mut spans = Vec::with_capacity(items.len());
        let mut first = 0;
        for ((item, &start), (cos, sin)) in items.iter_mut().zip(starts).zip(tables) {
            let tokens = item.tokens.len();
            let (r0, r1) = (first, first + tokens);
            let q = &mut q_all[r0 * q_dim..r1 * q_dim];
            let mut k = k_all[r0 * kv_dim..r1 * kv_dim].to_vec();
            if let Some((qw, q_eps, kw, k_eps)) = norms {
                ops::rms_norm(q, qw, q_eps);
                ops::rms_norm(&mut k, kw, k_eps);
            }
            ops::rope(q, cos, sin, dim);
            ops::rope(&mut k, cos, sin, dim);
            item.cache.write_host(layer, start, &k, &v_all[r0 * kv_dim..r1 * kv_dim])?;
            spans.push((start, tokens));
            first = r1;
        }
        // Then one attention call for every row of every sequence: its tasks spread over the
        // threads whatever the batch's shape, each kv head's pages read once for its query heads.
        let mut out = vec![0f32; rows * q_dim];
        let caches: Vec<&KvCache> = items.iter().map(|item| &*item.cache).collect();
        let shape =
            AttentionShape { heads: c.num_heads, kv_heads: c.num_kv_heads, head_dim: dim, tokens: rows, start: 0 };
        KvCache::attend_paged(&caches, layer, |kv, item_tables| {
            let mut query_rows = Vec::with_capacity(rows);
            for (&(start, tokens), &table) in spans.iter().zip(item_tables) {
                query_rows.extend((start..start + tokens).map(|position| QueryRow { table, position }));
            }
            ops::attention_rows(&q_all, &query_rows, kv, shape, &mut out);
        })?;
        attn.o.forward_grouped(cpu::tensor(out, [rows, q_dim]), groups)
    }
}

/// How a batched step's rows split for the products: each item's prompt rows, then its
/// generated rows, neighbouring runs of one kind together.
fn row_groups(items: &[BatchItem<'_>]) -> Vec<RowGroup> {
    let mut groups: Vec<RowGroup> = Vec::new();
    for item in items {
        let prompt = item.prompt_rows.min(item.tokens.len());
        for (rows, tokenwise) in [(prompt, false), (item.tokens.len() - prompt, true)] {
            if rows == 0 {
                continue;
            }
            match groups.last_mut() {
                Some(g) if g.tokenwise == tokenwise => g.rows += rows,
                _ => groups.push(RowGroup { rows, tokenwise }),
            }
        }
    }
    groups
}

/// Prompt chunk lengths used on devices that compile a kernel per shape.
fn bucket_len(n: usize) -> usize {
    match n {
        0..=16 => 16,
        17..=64 => 64,
        _ => n.div_ceil(128) * 128,
    }
}

/// Splits a row-major `[vocab, hidden]` output matrix into `[hidden, rows]` device slices.
fn head_chunks(data: &[f32], vocab: usize, hidden: usize, device: &Device) -> Vec<Tensor<2>> {
    let rows_per_chunk = (MAX_HEAD_CHUNK_BYTES / (hidden * 4)).clamp(1, vocab);
    (0..vocab)
        .step_by(rows_per_chunk)
        .map(|r0| {
            let rows = rows_per_chunk.min(vocab - r0);
            let block = &data[r0 * hidden..(r0 + rows) * hidden];
            upload(transpose(block, rows, hidden), [hidden, rows], device)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_lengths_cover_the_prompt() {
        for n in [1, 15, 16, 17, 64, 65, 200, 1000] {
            assert!(bucket_len(n) >= n);
        }
        assert_eq!(bucket_len(65), 128);
    }
}
