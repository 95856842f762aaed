//! The kernels' speed, as numbers to compare across changes and machines (not tests: nothing
//! here passes or fails). `scripts/bench-kernels` runs it:
//!
//!     cargo bench -p hearth-kernels --bench kernels [-- FILTER]
//!
//! - `decode`: one decode token's product with a SmolLM2-sized matrix in every block format
//!   (µs and the weight bandwidth it reaches), on one thread;
//! - `batch`: a batch of independent tokens' product, per token, as the batched decode step
//!   runs it;
//! - `attention`: one decode token's attention over a paged cache of 384 positions, per layer;
//! - `int8`: an encoder-sized product on 8-bit weights against the f32 GEMM, per thread count;
//! - `encoder-attention`: a padded batch's bidirectional attention (MiniLM's heads).

use std::hint::black_box;
use std::time::Instant;

use hearth_kernels::ops::{self, AttentionShape, EncoderBatch, PagedKv, Projected};
use hearth_kernels::{Int8Matrix, QuantMatrix, QuantType};

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool")
}

/// Seconds per call of `f`, run `n` times inside `pool` (as the model runs kernels: no hand-off
/// per call), after one warm-up call.
fn per_call(pool: &rayon::ThreadPool, n: usize, mut f: impl FnMut() + Send) -> f64 {
    pool.install(|| {
        f();
        let started = Instant::now();
        for _ in 0..n {
            f();
        }
        started.elapsed().as_secs_f64() / n as f64
    })
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn decode() {
    let one = pool(1);
    for ty in QuantType::ALL {
        // SmolLM2's gate/up shape, or its down projection for the 256-value K-quants.
        let (rows, cols) = if ty.block_values() == 256 { (576, 1536) } else { (1536, 576) };
        let bytes = rows * cols / ty.block_values() * ty.block_bytes();
        let m = QuantMatrix::new(ty, rows, cols, vec![0x11u8; bytes]).expect("a matrix");
        let x = vec![0.5f32; cols];
        let per = per_call(&one, 2000, || {
            black_box(m.matmul(&x, 1));
        });
        println!("decode {ty:?}: {:.1} µs per {rows}×{cols} GEMV, {:.2} GB/s", per * 1e6, bytes as f64 / per / 1e9);
    }
}

fn batch() {
    let m = QuantMatrix::new(QuantType::Q4_1, 1536, 576, vec![0x11u8; 1536 * 576 / 32 * 20]).expect("a matrix");
    let all = pool(rayon::current_num_threads());
    for tokens in [1usize, 4, 16, 32, 64] {
        let x: Vec<f32> = (0..tokens * 576).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let per = per_call(&all, 4000 / tokens, || {
            black_box(m.matmul_tokens(&x, tokens));
        });
        println!("batch Q4_1 1536×576, {tokens:>2} tokens: {:.1} µs a token", per / tokens as f64 * 1e6);
    }
}

fn attention() {
    let (heads, kv_heads, dim, page, pages) = (9, 3, 64, 16, 2000);
    let keys: Vec<u16> =
        (0..pages * kv_heads * page * dim).map(|i| half::f16::from_f32((i % 13) as f32 * 0.01).to_bits()).collect();
    let table: Vec<u32> = (0..24u32).map(|i| i * 37 % 2000).collect();
    let q = vec![0.1f32; heads * dim];
    let mut out = vec![0f32; heads * dim];
    let shape = AttentionShape { heads, kv_heads, head_dim: dim, tokens: 1, start: 383 };
    let per = per_call(&pool(1), 5000, || {
        ops::attention(&q, PagedKv { keys: &keys, values: &keys, table: &table, page }, shape, &mut out);
    });
    println!("attention, 384 positions, 9 heads of 64: {:.1} µs per layer-token", per * 1e6);
}

fn int8() {
    let (rows, cols, tokens) = (1536usize, 384usize, 1024usize);
    let w = values(rows * cols, 1);
    let x = values(tokens * cols, 2);
    let m = Int8Matrix::quantize(&w, rows, cols, None).expect("a matrix");
    let macs = (rows * cols * tokens) as f64;
    for threads in [1usize, 2] {
        let p = pool(threads);
        let per = per_call(&p, 10, || {
            black_box(m.matmul(&x, tokens));
        });
        let mut y = vec![0f32; tokens * rows];
        let f32_per = per_call(&p, 10, || {
            // SAFETY: `y` is `[tokens, rows]`, `x` `[tokens, cols]`, `w` `[rows, cols]` read
            // transposed; the strides match those buffers.
            unsafe {
                gemm::gemm(
                    tokens,
                    rows,
                    cols,
                    y.as_mut_ptr(),
                    1,
                    rows as isize,
                    false,
                    x.as_ptr(),
                    1,
                    cols as isize,
                    w.as_ptr(),
                    cols as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                )
            }
        });
        println!(
            "int8 {rows}×{cols}, {tokens} tokens, {threads} threads: {:.2} ms ({:.0} GMAC/s); f32 GEMM {:.2} ms ({:.0} GMAC/s)",
            per * 1e3,
            macs / per / 1e9,
            f32_per * 1e3,
            macs / f32_per / 1e9
        );
    }
}

fn encoder_attention() {
    let (heads, dim, padded) = (12, 32, 48);
    let lens: Vec<usize> = (0..32).map(|i| 24 + i % 25).collect();
    let width = heads * dim;
    let qkv = values(lens.len() * padded * 3 * width, 3);
    let mut out = vec![0f32; lens.len() * padded * width];
    let per = per_call(&pool(1), 50, || {
        let part = |offset| Projected { data: &qkv, stride: 3 * width, offset };
        let batch = EncoderBatch { lens: &lens, padded, heads, dim, bias: None };
        ops::encoder_attention(part(0), part(width), part(2 * width), batch, &mut out);
    });
    let tokens: usize = lens.iter().sum();
    println!(
        "encoder attention, 32 sequences of 24-48 tokens, 12 heads of 32: {:.2} µs a token",
        per / tokens as f64 * 1e6
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is a filter on the names.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let runs: [(&str, fn()); 5] = [
        ("decode", decode),
        ("batch", batch),
        ("attention", attention),
        ("int8", int8),
        ("encoder-attention", encoder_attention),
    ];
    for (name, run) in runs {
        if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
            run();
        }
    }
}
