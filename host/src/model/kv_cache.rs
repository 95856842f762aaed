//! The key/value cache of one sequence. It belongs to the sequence, not the model, so the engine
//! can hold many at once and feed each through the same weights.
//!
//! Storage grows in whole blocks and attention reads whole blocks (the unused tail masked), so
//! the attention matmuls see few distinct shapes: on wgpu every new shape costs a shader compile
//! and an autotune run. On the CPU the cache is plain host memory that the attention kernel
//! reads in place, written a token at a time without reallocating (capacity doubles when full).

use burn::tensor::{Device, Tensor};

use hearth_kernels::ops::key_offset;

use super::ModelError;

/// Cache capacity and attention width grow in multiples of this many positions.
pub const BLOCK: usize = 128;

/// Keys and values of one layer: `[kv_heads, capacity, head_dim]` each.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor<3>,
    v: Tensor<3>,
}

/// Keys and values of one layer in host memory: `kv_heads` regions of `capacity · head_dim`
/// values each, values row-major and keys in the attention kernel's blocked layout
/// ([`key_offset`]); a head's first `n` positions are its region's first `n · head_dim` values
/// in both, so growing copies that prefix.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

#[derive(Debug, Clone)]
enum Store {
    Device(Vec<LayerKv>),
    Host(Vec<HostKv>),
}

/// The cache of one sequence across all layers.
#[derive(Debug, Clone)]
pub struct KvCache {
    store: Store,
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
    /// A cache in `device`'s memory, or in host memory for the CPU path (`host`).
    pub fn new(
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        max_len: usize,
        device: &Device,
        host: bool,
    ) -> Self {
        let store = if host {
            Store::Host(vec![HostKv::default(); num_layers])
        } else {
            let empty = Tensor::zeros([kv_heads, 0, head_dim], device);
            Store::Device((0..num_layers).map(|_| LayerKv { k: empty.clone(), v: empty.clone() }).collect())
        };
        Self { store, kv_heads, head_dim, capacity: 0, len: 0, max_len, device: device.clone() }
    }

    /// Whether the cache lives in host memory (the CPU path).
    pub fn is_host(&self) -> bool {
        matches!(self.store, Store::Host(_))
    }

    /// Positions each layer's buffers hold room for.
    pub fn capacity(&self) -> usize {
        self.capacity
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
        let (h, d, old_cap) = (self.kv_heads, self.head_dim, self.capacity);
        match &mut self.store {
            Store::Device(layers) => {
                for layer in layers {
                    for t in [&mut layer.k, &mut layer.v] {
                        let grown = Tensor::zeros([h, new_cap, d], &self.device);
                        let old = std::mem::replace(t, Tensor::zeros([h, 0, d], &self.device));
                        *t = if old_cap == 0 { grown } else { grown.slice_assign([0..h, 0..old_cap, 0..d], old) };
                    }
                }
            }
            Store::Host(layers) => {
                for layer in layers {
                    for buf in [&mut layer.k, &mut layer.v] {
                        let mut grown = vec![0f32; h * new_cap * d];
                        for head in 0..h {
                            grown[head * new_cap * d..(head * new_cap + old_cap) * d]
                                .copy_from_slice(&buf[head * old_cap * d..(head + 1) * old_cap * d]);
                        }
                        *buf = grown;
                    }
                }
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
    ) -> Result<(Tensor<3>, Tensor<3>), ModelError> {
        let tokens = k.dims()[1];
        let (h, d) = (self.kv_heads, self.head_dim);
        let Store::Device(layers) = &mut self.store else {
            return Err(ModelError::Execution("a host cache was given to the device attention path".into()));
        };
        let entry = &mut layers[layer];
        entry.k.inplace(|c| c.slice_assign([0..h, start..start + tokens, 0..d], k));
        entry.v.inplace(|c| c.slice_assign([0..h, start..start + tokens, 0..d], v));
        Ok((entry.k.clone().slice([0..h, 0..span, 0..d]), entry.v.clone().slice([0..h, 0..span, 0..d])))
    }

    /// Writes `k`, `v` (`[tokens, kv_heads, head_dim]`, a projection's layout) of `layer` at
    /// positions `start..` of a host cache (room made by [`Self::reserve`]) and returns the
    /// layer's buffers for attention.
    pub(crate) fn write_host(
        &mut self,
        layer: usize,
        start: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(&[f32], &[f32]), ModelError> {
        let (h, d, cap) = (self.kv_heads, self.head_dim, self.capacity);
        let tokens = k.len() / (h * d).max(1);
        if start + tokens > cap || k.len() != v.len() {
            return Err(ModelError::Execution(format!(
                "the cache holds no room for positions {start}..{}",
                start + tokens
            )));
        }
        let Store::Host(layers) = &mut self.store else {
            return Err(ModelError::Execution("a device cache was given to the CPU attention path".into()));
        };
        let entry = &mut layers[layer];
        for t in 0..tokens {
            for head in 0..h {
                let src = (t * h + head) * d;
                let at = (head * cap + start + t) * d;
                entry.v[at..at + d].copy_from_slice(&v[src..src + d]);
                // Keys in the attention kernel's blocked layout.
                let region = head * cap * d;
                for (i, value) in k[src..src + d].iter().enumerate() {
                    entry.k[region + key_offset(start + t, i, d)] = *value;
                }
            }
        }
        Ok((&entry.k, &entry.v))
    }

    /// Marks positions up to `len` as filled.
    pub fn commit(&mut self, len: usize) {
        self.len = len;
    }
}
