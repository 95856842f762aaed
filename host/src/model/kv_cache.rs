//! The key/value cache of one sequence. It belongs to the sequence, not the model, so the engine
//! can hold many at once and feed each through the same weights.
//!
//! On the CPU a cache is a block table into its model's [`KvPool`] (a paged cache): it takes a
//! block when its positions need one, registers each block it fills for prefix reuse, may start
//! from blocks an earlier sequence registered ([`KvCache::adopt_prefix`]), and gives its blocks
//! back when dropped — a finished, cancelled or disconnected sequence frees them at once.
//!
//! On a GPU a cache is a pair of device tensors per layer that grow in whole blocks and that
//! attention reads in whole blocks (the unused tail masked), so the attention matmuls see few
//! distinct shapes: on wgpu every new shape costs a shader compile and an autotune run.

use std::sync::{Arc, Mutex, MutexGuard};

use burn::tensor::{Device, Tensor};
use half::f16;

use hearth_kernels::ops::{PagedKv, key_offset};

use super::ModelError;
use super::kv_pool::{BlockId, KvPool, PAGE, ROOT};

/// Device cache capacity and attention width grow in multiples of this many positions.
pub const BLOCK: usize = 128;

/// Keys and values of one layer on a device: `[kv_heads, capacity, head_dim]` each.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor<3>,
    v: Tensor<3>,
}

/// A sequence's share of a [`KvPool`].
#[derive(Debug)]
struct Paged {
    pool: Arc<Mutex<KvPool>>,
    /// The blocks of positions `0, PAGE, 2·PAGE, …`.
    table: Vec<BlockId>,
    /// The tokens at the committed positions (the chain keys of its blocks).
    tokens: Vec<u32>,
    /// Leading positions computed as prompt tokens (the rest were generated).
    prompt_positions: usize,
    /// Leading blocks already in the pool's prefix index, and the last one's serial.
    registered: usize,
    parent: u64,
}

#[derive(Debug)]
enum Store {
    Device(Vec<LayerKv>),
    Paged(Paged),
}

/// The cache of one sequence across all layers.
#[derive(Debug)]
pub struct KvCache {
    store: Store,
    kv_heads: usize,
    head_dim: usize,
    /// Positions the device buffers or the block table hold room for.
    capacity: usize,
    /// Positions filled and committed.
    len: usize,
    /// The most positions this cache may hold (the context length).
    max_len: usize,
    device: Device,
}

/// Locks a pool. A panic elsewhere while it was held left it between two of its operations
/// (none of them panics halfway), so its state is still whole.
fn lock(pool: &Mutex<KvPool>) -> MutexGuard<'_, KvPool> {
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KvCache {
    /// A cache in `device`'s memory, or for the CPU path (`host`) a paged cache with a pool of
    /// its own with room for `max_len` positions (tests and one-off runs; the engine's
    /// sequences share one pool, [`Self::paged`]).
    pub fn new(
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        max_len: usize,
        device: &Device,
        host: bool,
    ) -> Self {
        if host {
            let pool = KvPool::new(max_len.div_ceil(PAGE), num_layers, kv_heads, head_dim);
            return Self::paged(Arc::new(Mutex::new(pool)), max_len, device);
        }
        let empty = Tensor::zeros([kv_heads, 0, head_dim], device);
        let store = Store::Device((0..num_layers).map(|_| LayerKv { k: empty.clone(), v: empty.clone() }).collect());
        Self { store, kv_heads, head_dim, capacity: 0, len: 0, max_len, device: device.clone() }
    }

    /// An empty cache whose blocks come from `pool`.
    pub fn paged(pool: Arc<Mutex<KvPool>>, max_len: usize, device: &Device) -> Self {
        let (kv_heads, head_dim) = {
            let p = lock(&pool);
            (p.kv_heads(), p.head_dim())
        };
        let paged =
            Paged { pool, table: Vec::new(), tokens: Vec::new(), prompt_positions: 0, registered: 0, parent: ROOT };
        Self { store: Store::Paged(paged), kv_heads, head_dim, capacity: 0, len: 0, max_len, device: device.clone() }
    }

    /// Starts an empty paged cache from the blocks of `tokens`' longest prefix that its pool
    /// holds, leaving at least the last token to run (its logits choose the next token). The
    /// first `prompt_len` tokens are a prompt, the rest were generated (a preempted sequence
    /// resuming): only blocks computed the same way are taken, so the cache holds the numbers
    /// it would compute itself. Returns the positions adopted (0 for a device cache).
    pub fn adopt_prefix(&mut self, tokens: &[u32], prompt_len: usize) -> usize {
        let Store::Paged(paged) = &mut self.store else {
            return 0;
        };
        if self.len != 0 || tokens.is_empty() {
            return 0;
        }
        let whole = (tokens.len() - 1).min(self.max_len) / PAGE;
        let mut pool = lock(&paged.pool);
        for (b, block_tokens) in tokens.chunks_exact(PAGE).take(whole).enumerate() {
            let prompt_rows = prompt_len.saturating_sub(b * PAGE).min(PAGE);
            match pool.lookup(paged.parent, block_tokens, prompt_rows) {
                Some((block, serial)) => {
                    paged.table.push(block);
                    paged.parent = serial;
                }
                None => break,
            }
        }
        paged.registered = paged.table.len();
        self.len = paged.table.len() * PAGE;
        self.capacity = self.len;
        paged.tokens = tokens[..self.len].to_vec();
        paged.prompt_positions = self.len.min(prompt_len);
        self.len
    }

    /// Whether the cache lives in host memory (the CPU path).
    pub fn is_host(&self) -> bool {
        matches!(self.store, Store::Paged(_))
    }

    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The attention width of a device step that ends at `end` positions: whole blocks.
    pub fn span_for(end: usize) -> usize {
        end.div_ceil(BLOCK).max(1) * BLOCK
    }

    /// Blocks from the pool this cache still needs to hold positions up to `end` (0 for a
    /// device cache, which no pool backs).
    pub fn blocks_needed(&self, end: usize) -> usize {
        match &self.store {
            Store::Paged(paged) => end.div_ceil(PAGE).saturating_sub(paged.table.len()),
            Store::Device(_) => 0,
        }
    }

    /// Makes room for positions up to `end` in every layer: blocks from the pool for a paged
    /// cache (an error when none is left), grown buffers on a device (zero-filled, so masked
    /// positions hold finite values).
    pub fn reserve(&mut self, end: usize) -> Result<(), ModelError> {
        let (h, d, old_cap) = (self.kv_heads, self.head_dim, self.capacity);
        match &mut self.store {
            Store::Paged(paged) => {
                if paged.table.len() * PAGE < end {
                    let mut pool = lock(&paged.pool);
                    while paged.table.len() * PAGE < end {
                        paged.table.push(pool.allocate().ok_or(ModelError::CacheFull)?);
                    }
                }
                self.capacity = paged.table.len() * PAGE;
            }
            Store::Device(layers) => {
                let span = Self::span_for(end);
                if span <= old_cap {
                    return Ok(());
                }
                let new_cap = span.max(old_cap * 2).div_ceil(BLOCK) * BLOCK;
                for layer in layers {
                    for t in [&mut layer.k, &mut layer.v] {
                        let grown = Tensor::zeros([h, new_cap, d], &self.device);
                        let old = std::mem::replace(t, Tensor::zeros([h, 0, d], &self.device));
                        *t = if old_cap == 0 { grown } else { grown.slice_assign([0..h, 0..old_cap, 0..d], old) };
                    }
                }
                self.capacity = new_cap;
            }
        }
        Ok(())
    }

    /// Writes `k`, `v` (`[kv_heads, tokens, head_dim]`) of `layer` at positions `start..` of a
    /// device cache and returns the layer's keys and values over `0..span` for attention.
    pub fn write(
        &mut self,
        layer: usize,
        start: usize,
        k: Tensor<3>,
        v: Tensor<3>,
        span: usize,
    ) -> Result<(Tensor<3>, Tensor<3>), ModelError> {
        let tokens = k.dims()[1];
        let (h, d) = (self.kv_heads, self.head_dim);
        let Store::Device(layers) = &mut self.store else {
            return Err(ModelError::Execution("a paged cache was given to the device attention path".into()));
        };
        let entry = &mut layers[layer];
        entry.k.inplace(|c| c.slice_assign([0..h, start..start + tokens, 0..d], k));
        entry.v.inplace(|c| c.slice_assign([0..h, start..start + tokens, 0..d], v));
        Ok((entry.k.clone().slice([0..h, 0..span, 0..d]), entry.v.clone().slice([0..h, 0..span, 0..d])))
    }

    /// Hands `layer`'s device keys and values (`[kv_heads, capacity, head_dim]`, room made by
    /// [`Self::reserve`]) to `step`, which returns them written (in place where it can).
    pub fn update_device_layer<R>(
        &mut self,
        layer: usize,
        step: impl FnOnce(Tensor<3>, Tensor<3>) -> (R, Tensor<3>, Tensor<3>),
    ) -> Result<R, ModelError> {
        let Store::Device(layers) = &mut self.store else {
            return Err(ModelError::Execution("a paged cache was given to the device attention path".into()));
        };
        if layer >= layers.len() {
            return Err(ModelError::Execution(format!("the cache has no layer {layer}")));
        }
        // Taken out rather than cloned: a clone left behind would make the kernel copy the
        // buffer instead of writing into it.
        let LayerKv { k, v } = layers.remove(layer);
        let (result, k, v) = step(k, v);
        layers.insert(layer, LayerKv { k, v });
        Ok(result)
    }

    /// Writes `k`, `v` (`[tokens, kv_heads, head_dim]`, a projection's layout) of `layer` at
    /// positions `start..` of a paged cache (room made by [`Self::reserve`]).
    pub(crate) fn write_host(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) -> Result<(), ModelError> {
        let (h, d) = (self.kv_heads, self.head_dim);
        let tokens = k.len() / (h * d).max(1);
        let Store::Paged(paged) = &mut self.store else {
            return Err(ModelError::Execution("a device cache was given to the CPU attention path".into()));
        };
        if start + tokens > paged.table.len() * PAGE || k.len() != v.len() {
            return Err(ModelError::Execution(format!(
                "the cache holds no room for positions {start}..{}",
                start + tokens
            )));
        }
        let mut pool = lock(&paged.pool);
        let entry = pool.layer_mut(layer);
        for t in 0..tokens {
            let position = start + t;
            let (block, offset) = (paged.table[position / PAGE] as usize, position % PAGE);
            for head in 0..h {
                let src = (t * h + head) * d;
                let page = (block * h + head) * PAGE * d;
                let at = page + offset * d;
                for (dst, value) in entry.v[at..at + d].iter_mut().zip(&v[src..src + d]) {
                    *dst = f16::from_f32(*value).to_bits();
                }
                for (i, value) in k[src..src + d].iter().enumerate() {
                    entry.k[page + key_offset(offset, i, d)] = f16::from_f32(*value).to_bits();
                }
            }
        }
        Ok(())
    }

    /// Runs `attend` over `layer`'s pages of the pool that every cache in `caches` shares, with
    /// each cache's block table (in order): one attention call for a whole batched step. The
    /// `PagedKv`'s own table is empty.
    pub(crate) fn attend_paged<R>(
        caches: &[&KvCache],
        layer: usize,
        attend: impl FnOnce(PagedKv<'_>, &[&[u32]]) -> R,
    ) -> Result<R, ModelError> {
        let mut pool_of_all: Option<&Arc<Mutex<KvPool>>> = None;
        let mut tables = Vec::with_capacity(caches.len());
        for cache in caches {
            let Store::Paged(paged) = &cache.store else {
                return Err(ModelError::Execution("a device cache was given to the CPU attention path".into()));
            };
            match pool_of_all {
                Some(pool) if !Arc::ptr_eq(pool, &paged.pool) => {
                    return Err(ModelError::Execution(
                        "the sequences of one step hold blocks of different pools".into(),
                    ));
                }
                _ => pool_of_all = Some(&paged.pool),
            }
            tables.push(&paged.table[..]);
        }
        let Some(pool) = pool_of_all else {
            return Ok(attend(PagedKv { keys: &[], values: &[], table: &[], page: PAGE }, &tables));
        };
        let pool = lock(pool);
        let entry = pool.layer(layer);
        Ok(attend(PagedKv { keys: &entry.k, values: &entry.v, table: &[], page: PAGE }, &tables))
    }

    /// Marks the next `tokens.len()` positions (the tokens just run, the first `prompt_rows`
    /// of them as prompt tokens) as filled; a paged cache registers every block this fills for
    /// prefix reuse.
    pub fn commit(&mut self, tokens: &[u32], prompt_rows: usize) {
        if let Store::Paged(paged) = &mut self.store {
            // Prompt rows only ever follow prompt rows.
            if paged.prompt_positions == self.len {
                paged.prompt_positions += prompt_rows.min(tokens.len());
            }
        }
        self.len += tokens.len();
        if let Store::Paged(paged) = &mut self.store {
            paged.tokens.extend_from_slice(tokens);
            let full = self.len / PAGE;
            if paged.registered < full {
                let mut pool = lock(&paged.pool);
                while paged.registered < full {
                    let at = paged.registered;
                    let block_tokens = &paged.tokens[at * PAGE..(at + 1) * PAGE];
                    let prompt_rows = paged.prompt_positions.saturating_sub(at * PAGE).min(PAGE);
                    paged.parent = pool.register(paged.table[at], paged.parent, block_tokens, prompt_rows);
                    paged.registered += 1;
                }
            }
        }
    }
}

impl Drop for KvCache {
    fn drop(&mut self) {
        if let Store::Paged(paged) = &self.store {
            lock(&paged.pool).release(&paged.table);
        }
    }
}
