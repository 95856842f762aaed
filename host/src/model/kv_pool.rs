//! The paged KV cache's memory: per layer one pool of fixed-size blocks of [`PAGE`] positions,
//! shared by every sequence of a model (each holds a block table, see `kv_cache`), and the
//! prefix index that lets a new sequence start from blocks an earlier one computed.
//!
//! Blocks are reference-counted. A full block is registered under its chain key — the key of
//! the block before it plus its own tokens — so two sequences whose prompts agree up to a block
//! boundary computed the same keys and values there and may share them. When no sequence holds
//! a registered block any more it stays in the index as *cached* until its memory is needed;
//! then the least recently used goes first (a sequence's later blocks before its earlier ones,
//! so a shared system prompt outlives the conversations built on it).
//!
//! Chain keys name the parent by a serial number given once per registration and never reused,
//! so a lookup is exact: no hash collision can hand a sequence another prompt's keys. A key also
//! says how many of the block's positions were computed as prompt tokens (the rest as generated
//! ones, which are multiplied differently): a block is only reused where it holds the very
//! numbers the new sequence would compute itself.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

/// Positions per block (a multiple of the attention kernel's key block).
pub const PAGE: usize = 16;

/// A block's index in the pool.
pub type BlockId = u32;

/// The serial that stands for "no block before this one".
pub const ROOT: u64 = 0;

/// What identifies a full block's contents: the block before it, its own tokens, and how many
/// of them (from the first) were computed as prompt tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChainKey {
    parent: u64,
    tokens: [u32; PAGE],
    prompt_rows: u8,
}

impl ChainKey {
    fn new(parent: u64, tokens: &[u32], prompt_rows: usize) -> Option<Self> {
        Some(Self { parent, tokens: tokens.try_into().ok()?, prompt_rows: prompt_rows.min(PAGE) as u8 })
    }
}

#[derive(Debug, Default)]
struct BlockMeta {
    /// Sequences holding the block.
    refs: u32,
    /// Set while the block is in the prefix index: its serial and key.
    registered: Option<(u64, ChainKey)>,
    /// When it was last released (orders eviction).
    stamp: u64,
}

/// Keys and values of one layer of the pool as f16 bits (llama.cpp's default cache type: half
/// the memory of f32, and half the bytes a batched decode step reads): its pages, keys in the
/// attention kernel's blocked layout ([`hearth_kernels::ops::key_offset`]) and values
/// row-major.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostKv {
    pub k: Vec<u16>,
    pub v: Vec<u16>,
}

/// Block counts, for load reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub total: usize,
    /// Held by at least one sequence.
    pub in_use: usize,
    /// Held by none but kept for prefix reuse (free to take when needed).
    pub cached: usize,
}

/// The blocks of one model's KV cache.
#[derive(Debug)]
pub struct KvPool {
    /// Per layer, keys and values: `blocks · kv_heads` pages of `PAGE · head_dim` values each,
    /// a block's pages head after head.
    layers: Vec<HostKv>,
    kv_heads: usize,
    head_dim: usize,
    meta: Vec<BlockMeta>,
    /// Blocks nobody holds and the index does not name, lowest first (so a quiet server
    /// touches as little of the pool's memory as it can).
    free: BinaryHeap<Reverse<BlockId>>,
    /// Registered blocks by chain key.
    index: HashMap<ChainKey, BlockId>,
    /// Registered blocks nobody holds, least recently released first.
    evictable: BTreeSet<(u64, BlockId)>,
    clock: u64,
    next_serial: u64,
}

impl KvPool {
    /// A pool of `blocks` blocks for a model of `num_layers` layers. The memory is requested
    /// zeroed, so the system commits a page only when a block first uses it.
    pub fn new(blocks: usize, num_layers: usize, kv_heads: usize, head_dim: usize) -> Self {
        let values = blocks * kv_heads * PAGE * head_dim;
        let layers = (0..num_layers).map(|_| HostKv { k: vec![0u16; values], v: vec![0u16; values] }).collect();
        Self {
            layers,
            kv_heads,
            head_dim,
            meta: (0..blocks).map(|_| BlockMeta::default()).collect(),
            free: (0..blocks as BlockId).map(Reverse).collect(),
            index: HashMap::new(),
            evictable: BTreeSet::new(),
            clock: 0,
            next_serial: ROOT + 1,
        }
    }

    /// A pool whose memory is committed now, page by page: a server's resident size then
    /// includes its whole cache from the start (as llama.cpp's does) instead of creeping up as
    /// blocks are first used and then staying there, and a cache the machine cannot hold shows
    /// at start instead of under load.
    pub fn committed(blocks: usize, num_layers: usize, kv_heads: usize, head_dim: usize) -> Self {
        let mut pool = Self::new(blocks, num_layers, kv_heads, head_dim);
        // One write per 4 KiB page; volatile, so it is not folded away as a store of the zero
        // the fresh allocation already holds.
        const PAGE_VALUES: usize = 4096 / std::mem::size_of::<u16>();
        for layer in &mut pool.layers {
            for buf in [&mut layer.k, &mut layer.v] {
                for value in buf.iter_mut().step_by(PAGE_VALUES) {
                    // SAFETY: `value` is a valid, aligned, exclusive reference into the buffer.
                    unsafe { std::ptr::write_volatile(value, 0) };
                }
            }
        }
        pool
    }

    /// Bytes one position takes across all layers (keys and values).
    pub fn bytes_per_position(num_layers: usize, kv_heads: usize, head_dim: usize) -> usize {
        num_layers * kv_heads * head_dim * 2 * std::mem::size_of::<u16>()
    }

    pub fn stats(&self) -> PoolStats {
        let total = self.meta.len();
        let cached = self.evictable.len();
        PoolStats { total, in_use: total - self.free.len() - cached, cached }
    }

    /// Blocks a sequence could take now (free ones and cached ones).
    pub fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Takes a block for a sequence: a free one, else the least recently used cached one
    /// (dropping it from the index). `None` when every block is held.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let block = match self.free.pop() {
            Some(Reverse(b)) => b,
            None => {
                let (stamp, b) = self.evictable.pop_first()?;
                debug_assert!(self.meta[b as usize].stamp == stamp);
                if let Some((_, key)) = self.meta[b as usize].registered.take() {
                    self.index.remove(&key);
                }
                b
            }
        };
        self.meta[block as usize].refs = 1;
        Some(block)
    }

    /// Gives a sequence's blocks back, last first (so its later blocks are evicted before its
    /// earlier ones, which more sequences are likely to share).
    pub fn release(&mut self, table: &[BlockId]) {
        for &b in table.iter().rev() {
            let meta = &mut self.meta[b as usize];
            meta.refs = meta.refs.saturating_sub(1);
            if meta.refs > 0 {
                continue;
            }
            if meta.registered.is_some() {
                self.clock += 1;
                meta.stamp = self.clock;
                self.evictable.insert((meta.stamp, b));
            } else {
                self.free.push(Reverse(b));
            }
        }
    }

    /// The registered block that follows `parent` with `tokens`, the first `prompt_rows` of
    /// them computed as prompt tokens, taken for a sequence (one more reference), with its
    /// serial.
    pub fn lookup(&mut self, parent: u64, tokens: &[u32], prompt_rows: usize) -> Option<(BlockId, u64)> {
        let key = ChainKey::new(parent, tokens, prompt_rows)?;
        let &b = self.index.get(&key)?;
        let meta = &mut self.meta[b as usize];
        if meta.refs == 0 {
            self.evictable.remove(&(meta.stamp, b));
        }
        meta.refs += 1;
        meta.registered.as_ref().map(|(serial, _)| (b, *serial))
    }

    /// Puts full block `block`, whose tokens are `tokens` (the first `prompt_rows` computed as
    /// prompt tokens) after the block of serial `parent`, into the index; returns the serial its
    /// successor names as parent. A block with the same chain key already there keeps its place
    /// (the two hold the same values).
    pub fn register(&mut self, block: BlockId, parent: u64, tokens: &[u32], prompt_rows: usize) -> u64 {
        let Some(key) = ChainKey::new(parent, tokens, prompt_rows) else {
            return ROOT;
        };
        if let Some(&existing) = self.index.get(&key) {
            return self.meta[existing as usize].registered.as_ref().map_or(ROOT, |(serial, _)| *serial);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.index.insert(key.clone(), block);
        self.meta[block as usize].registered = Some((serial, key));
        serial
    }

    /// Keys and values of `layer` (the attention kernel's pools).
    pub(crate) fn layer(&self, layer: usize) -> &HostKv {
        &self.layers[layer]
    }

    pub(crate) fn layer_mut(&mut self, layer: usize) -> &mut HostKv {
        &mut self.layers[layer]
    }

    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(seed: u32) -> Vec<u32> {
        (0..PAGE as u32).map(|i| seed * 100 + i).collect()
    }

    #[test]
    fn blocks_come_back_when_released() {
        let mut pool = KvPool::new(3, 1, 1, 8);
        let a: Vec<_> = (0..3).filter_map(|_| pool.allocate()).collect();
        assert_eq!(a, [0, 1, 2]);
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.stats(), PoolStats { total: 3, in_use: 3, cached: 0 });
        pool.release(&a);
        assert_eq!(pool.stats(), PoolStats { total: 3, in_use: 0, cached: 0 });
        assert_eq!(pool.allocate(), Some(0), "lowest first");
    }

    #[test]
    fn registered_blocks_are_found_by_their_chain_and_evicted_least_recent_first() {
        let mut pool = KvPool::new(3, 1, 1, 8);
        let (a, b) = (pool.allocate().unwrap_or(99), pool.allocate().unwrap_or(99));
        let sa = pool.register(a, ROOT, &tokens(1), PAGE);
        let sb = pool.register(b, sa, &tokens(2), 3);
        pool.release(&[a, b]);
        assert_eq!(pool.stats(), PoolStats { total: 3, in_use: 0, cached: 2 });
        // Found only along the same chain, and only with the same prompt rows.
        assert_eq!(pool.lookup(ROOT, &tokens(2), PAGE), None);
        assert_eq!(pool.lookup(sa, &tokens(2), PAGE), None);
        assert_eq!(pool.lookup(ROOT, &tokens(1), PAGE), Some((a, sa)));
        assert_eq!(pool.lookup(sa, &tokens(2), 3), Some((b, sb)));
        assert_eq!(pool.stats().in_use, 2);
        pool.release(&[a, b]);
        // A registration of the same contents keeps the first block.
        let c = pool.allocate().unwrap_or(99);
        assert_eq!(c, 2, "a free block before a cached one");
        assert_eq!(pool.register(c, ROOT, &tokens(1), PAGE), sa);
        pool.release(&[c]);
        // Eviction takes the later block of the chain first.
        assert_eq!(pool.allocate(), Some(2));
        assert_eq!(pool.allocate(), Some(b));
        assert_eq!(pool.lookup(sa, &tokens(2), 3), None);
        assert_eq!(pool.lookup(ROOT, &tokens(1), PAGE), Some((a, sa)));
    }
}
