//! A small GGUF v3 writer for crafting broken and tiny model files in tests.

#![allow(dead_code)]

use std::path::Path;

pub enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

pub struct Tensor {
    pub name: String,
    /// Innermost first, as GGUF stores them.
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
}

#[derive(Default)]
pub struct GgufWriter {
    pub meta: Vec<(String, Meta)>,
    pub tensors: Vec<Tensor>,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u64).to_le_bytes());
    buf.extend(s.as_bytes());
}

impl GgufWriter {
    pub fn meta(&mut self, key: &str, value: Meta) -> &mut Self {
        self.meta.retain(|(k, _)| k != key);
        self.meta.push((key.to_owned(), value));
        self
    }

    pub fn remove_meta(&mut self, prefix: &str) -> &mut Self {
        self.meta.retain(|(k, _)| !k.starts_with(prefix));
        self
    }

    /// An f32 tensor of `rows × cols` (cols innermost) filled with a small pattern.
    pub fn f32_matrix(&mut self, name: &str, rows: u64, cols: u64) -> &mut Self {
        let data = (0..rows * cols).flat_map(|i| (((i % 7) as f32 - 3.0) * 0.01).to_le_bytes()).collect();
        let dims = if rows == 1 { vec![cols] } else { vec![cols, rows] };
        self.tensors.push(Tensor { name: name.to_owned(), dims, ty: 0, data });
        self
    }

    /// A `rows × cols` K-quant matrix (`ty` 12 = Q4_K, 13 = Q5_K, 14 = Q6_K) of random blocks
    /// whose f16 scales are small (0.001, minimums 0.0005): every other byte is a valid value.
    pub fn k_quant_matrix(&mut self, name: &str, rows: u64, cols: u64, ty: u32, seed: u64) -> &mut Self {
        let (block_bytes, scale_at): (usize, &[usize]) = match ty {
            12 => (144, &[0, 2]),
            13 => (176, &[0, 2]),
            14 => (210, &[208]),
            _ => panic!("not a K-quant type: {ty}"),
        };
        let mut state = seed;
        let blocks = (rows * cols / 256) as usize;
        let mut data = Vec::with_capacity(blocks * block_bytes);
        for _ in 0..blocks {
            let mut block: Vec<u8> = (0..block_bytes)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect();
            for (i, &at) in scale_at.iter().enumerate() {
                let f16: u16 = if i == 0 { 0x1419 } else { 0x1019 };
                block[at..at + 2].copy_from_slice(&f16.to_le_bytes());
            }
            data.extend(block);
        }
        let dims = if rows == 1 { vec![cols] } else { vec![cols, rows] };
        self.raw(name, dims, ty, data)
    }

    pub fn raw(&mut self, name: &str, dims: Vec<u64>, ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(Tensor { name: name.to_owned(), dims, ty, data });
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut buf = b"GGUF".to_vec();
        buf.extend(3u32.to_le_bytes());
        buf.extend((self.tensors.len() as u64).to_le_bytes());
        buf.extend((self.meta.len() as u64).to_le_bytes());
        for (key, value) in &self.meta {
            put_str(&mut buf, key);
            match value {
                Meta::U32(v) => {
                    buf.extend(4u32.to_le_bytes());
                    buf.extend(v.to_le_bytes());
                }
                Meta::F32(v) => {
                    buf.extend(6u32.to_le_bytes());
                    buf.extend(v.to_le_bytes());
                }
                Meta::Bool(v) => {
                    buf.extend(7u32.to_le_bytes());
                    buf.push(*v as u8);
                }
                Meta::Str(s) => {
                    buf.extend(8u32.to_le_bytes());
                    put_str(&mut buf, s);
                }
                Meta::Strs(items) => {
                    buf.extend(9u32.to_le_bytes());
                    buf.extend(8u32.to_le_bytes());
                    buf.extend((items.len() as u64).to_le_bytes());
                    for s in items {
                        put_str(&mut buf, s);
                    }
                }
                Meta::I32s(items) => {
                    buf.extend(9u32.to_le_bytes());
                    buf.extend(5u32.to_le_bytes());
                    buf.extend((items.len() as u64).to_le_bytes());
                    for v in items {
                        buf.extend(v.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            put_str(&mut buf, &t.name);
            buf.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                buf.extend(d.to_le_bytes());
            }
            buf.extend(t.ty.to_le_bytes());
            buf.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset += (t.data.len() as u64).div_ceil(32) * 32;
        }
        while !buf.len().is_multiple_of(32) {
            buf.push(0);
        }
        for t in &self.tensors {
            buf.extend(&t.data);
            while !buf.len().is_multiple_of(32) {
                buf.push(0);
            }
        }
        buf
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).expect("write gguf");
    }
}

/// A tiny but complete llama GGUF: hidden 256, one block, 2 heads (1 KV head), vocabulary of
/// four tokens. Tests break one thing in it.
pub fn tiny_llama() -> GgufWriter {
    let (hidden, ffn, vocab, kv) = (256u64, 256u64, 4u64, 128u64);
    let mut w = GgufWriter::default();
    w.meta("general.architecture", Meta::Str("llama".into()))
        .meta("llama.embedding_length", Meta::U32(hidden as u32))
        .meta("llama.block_count", Meta::U32(1))
        .meta("llama.feed_forward_length", Meta::U32(ffn as u32))
        .meta("llama.attention.head_count", Meta::U32(2))
        .meta("llama.attention.head_count_kv", Meta::U32(1))
        .meta("llama.context_length", Meta::U32(64))
        .meta("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5))
        .meta("tokenizer.ggml.model", Meta::Str("gpt2".into()))
        .meta("tokenizer.ggml.tokens", Meta::Strs(vec!["a".into(), "b".into(), "c".into(), "d".into()]))
        .meta("tokenizer.ggml.token_type", Meta::I32s(vec![1, 1, 1, 1]))
        .meta("tokenizer.ggml.merges", Meta::Strs(vec![]))
        .meta("tokenizer.ggml.eos_token_id", Meta::U32(3));
    w.f32_matrix("token_embd.weight", vocab, hidden)
        .f32_matrix("output_norm.weight", 1, hidden)
        .f32_matrix("blk.0.attn_norm.weight", 1, hidden)
        .f32_matrix("blk.0.attn_q.weight", hidden, hidden)
        .f32_matrix("blk.0.attn_k.weight", kv, hidden)
        .f32_matrix("blk.0.attn_v.weight", kv, hidden)
        .f32_matrix("blk.0.attn_output.weight", hidden, hidden)
        .f32_matrix("blk.0.ffn_norm.weight", 1, hidden)
        .f32_matrix("blk.0.ffn_gate.weight", ffn, hidden)
        .f32_matrix("blk.0.ffn_up.weight", ffn, hidden)
        .f32_matrix("blk.0.ffn_down.weight", hidden, ffn);
    w
}
