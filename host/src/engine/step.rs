//! What the scheduler needs of a model: one batched step over the sequences' caches, and how
//! those caches are made. [`Llama`] is the real one; the scheduler's tests drive a counting
//! model through the same seam, without weights.

use burn::tensor::Device;

use crate::model::{BatchItem, KvCache, Llama, LogitsFor, ModelError, StepLogits};

/// The shape of a model's keys and values, for a pool of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// A model the scheduler can run.
pub trait StepModel: Send + 'static {
    /// Runs `items`' tokens after what their caches hold, appends them to the caches and
    /// returns each item's logits (`[rows, vocab]` row-major; see [`LogitsFor`]), or where an
    /// item asks for them and the model can, its candidates ([`BatchItem::candidates`]).
    fn forward_step(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<StepLogits>, ModelError>;

    /// The shape of a shared pool of host blocks, when the model's caches are paged (the CPU
    /// path); `None` when each sequence's cache lives on a device ([`Self::own_cache`]).
    fn paged_kv(&self) -> Option<KvShape>;

    /// A device cache for one sequence of at most `max_len` positions.
    fn own_cache(&self, max_len: usize) -> KvCache;

    /// The device paged caches are made for.
    fn device(&self) -> &Device;

    fn vocab_size(&self) -> usize;

    /// The most positions a sequence may hold.
    fn max_positions(&self) -> usize;

    /// Runs the model once on the shapes generation uses most (wgpu compiles kernels per
    /// shape); nothing where there is nothing to compile.
    fn warm_up(&self, context_length: usize) -> Result<(), ModelError>;
}

impl StepModel for Llama {
    fn forward_step(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<StepLogits>, ModelError> {
        Llama::forward_step(self, items)
    }

    fn paged_kv(&self) -> Option<KvShape> {
        let c = self.config();
        self.runs_on_cpu().then_some(KvShape { layers: c.num_layers, kv_heads: c.num_kv_heads, head_dim: c.head_dim })
    }

    fn own_cache(&self, max_len: usize) -> KvCache {
        self.new_cache(max_len)
    }

    fn device(&self) -> &Device {
        Llama::device(self)
    }

    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn max_positions(&self) -> usize {
        self.config().max_position_embeddings
    }

    fn warm_up(&self, context_length: usize) -> Result<(), ModelError> {
        if self.runs_on_cpu() {
            return Ok(());
        }
        for len in [16, 64] {
            let mut cache = self.new_cache(context_length);
            let prompt = vec![0u32; len.min(context_length.saturating_sub(1)).max(1)];
            self.forward(&prompt, &mut cache, LogitsFor::Last)?;
            self.forward(&[0], &mut cache, LogitsFor::Last)?;
        }
        Ok(())
    }
}
