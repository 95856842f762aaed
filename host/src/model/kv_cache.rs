//! The key/value cache of one sequence. It belongs to the sequence, not the model, so the engine
//! can hold many at once and feed each through the same weights.
//!
//! Storage grows in whole blocks and attention reads whole blocks (the unused tail masked), so
//! the attention matmuls see few distinct shapes: on wgpu every new shape costs a shader compile
//! and an autotune run.

use burn::tensor::{Device, Tensor};

/// Cache capacity and attention width grow in multiples of this many positions.
pub const BLOCK: usize = 128;

/// Keys and values of one layer: `[kv_heads, capacity, head_dim]` each.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor<3>,
    v: Tensor<3>,
}

/// The cache of one sequence across all layers.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    /// Positions filled and committed.
    len: usize,
    /// The most positions this cache may hold (the context length).
    max_len: usize,
    device: Device,
}

impl KvCache {
    pub fn new(num_layers: usize, kv_heads: usize, head_dim: usize, max_len: usize, device: &Device) -> Self {
        Self {
            layers: Vec::with_capacity(num_layers),
            kv_heads,
            head_dim,
            capacity: 0,
            len: 0,
            max_len,
            device: device.clone(),
        }
        .with_layers(num_layers)
    }

    fn with_layers(mut self, n: usize) -> Self {
        let empty = Tensor::zeros([self.kv_heads, 0, self.head_dim], &self.device);
        self.layers = (0..n).map(|_| LayerKv { k: empty.clone(), v: empty.clone() }).collect();
        self
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

    /// Forgets positions from `len` on (they are overwritten by the next step).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The attention width for a step that ends at `end` positions: whole blocks.
    pub fn span_for(end: usize) -> usize {
        end.div_ceil(BLOCK).max(1) * BLOCK
    }

    /// Makes room for positions up to `end` in every layer (zero-filled, so masked positions
    /// hold finite values).
    pub fn reserve(&mut self, end: usize) {
        let span = Self::span_for(end);
        if span <= self.capacity {
            return;
        }
        let new_cap = span.max(self.capacity * 2).div_ceil(BLOCK) * BLOCK;
        let (h, d) = (self.kv_heads, self.head_dim);
        for layer in &mut self.layers {
            for t in [&mut layer.k, &mut layer.v] {
                let grown = Tensor::zeros([h, new_cap, d], &self.device);
                let old = std::mem::replace(t, Tensor::zeros([h, 0, d], &self.device));
                *t = if self.capacity == 0 { grown } else { grown.slice_assign([0..h, 0..self.capacity, 0..d], old) };
            }
        }
        self.capacity = new_cap;
    }

    /// Writes `k`, `v` (`[kv_heads, tokens, head_dim]`) of `layer` at positions `start..` and
    /// returns the layer's keys and values over `0..span` for attention.
    pub fn write(
        &mut self,
        layer: usize,
        start: usize,
        k: Tensor<3>,
        v: Tensor<3>,
        span: usize,
    ) -> (Tensor<3>, Tensor<3>) {
        let tokens = k.dims()[1];
        let (h, d) = (self.kv_heads, self.head_dim);
        let entry = &mut self.layers[layer];
        entry.k.inplace(|c| c.slice_assign([0..h, start..start + tokens, 0..d], k));
        entry.v.inplace(|c| c.slice_assign([0..h, start..start + tokens, 0..d], v));
        (entry.k.clone().slice([0..h, 0..span, 0..d]), entry.v.clone().slice([0..h, 0..span, 0..d]))
    }

    /// Marks positions up to `len` as filled.
    pub fn commit(&mut self, len: usize) {
        self.len = len;
    }
}
