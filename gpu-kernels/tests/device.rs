//! The kernels on a real wgpu device (lavapipe where there is no GPU: `mesa-vulkan-drivers`),
//! against the blocks' definition computed on the host.

use burn::tensor::{Device, Tensor, TensorData};
use hearth_gpu_kernels::decode::{
    ATTENTION_CHUNK, AttentionDims, CANDIDATES, NormWeight, decode_attention, top_candidates,
};
use hearth_gpu_kernels::{BLOCK, DeviceBlocks, Packing};

/// The one wgpu device of the process (wgpu's service initialises once).
fn device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            Device::wgpu_options().init().expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)")
        })
        .clone()
}

/// A random `[rows, cols]` matrix's planes, and its values by the planes' definition.
fn random(packing: Packing, rows: usize, cols: usize, seed: u64) -> (Vec<u32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 32) as u32
    };
    let blocks = rows * cols / BLOCK;
    let words: Vec<u32> = (0..blocks * packing.words()).map(|_| next()).collect();
    let halves = packing.scales_per_block();
    let scales: Vec<f32> = (0..blocks * halves).map(|_| (next() % 1000) as f32 / 20000.0 + 0.001).collect();
    // Bytes blocks have offsets too (Q5_1, Q5_K), not only nibble blocks.
    let offsets: Vec<f32> = (0..blocks).map(|_| (next() % 1000) as f32 / 10000.0 - 0.05).collect();
    let mut dense = Vec::with_capacity(rows * cols);
    for b in 0..blocks {
        let w = &words[b * packing.words()..(b + 1) * packing.words()];
        let byte = |j: usize| (w[j / 4] >> (8 * (j % 4))) & 0xFF;
        for e in 0..BLOCK {
            let q = match packing {
                Packing::Bytes | Packing::SplitBytes => f32::from(byte(e) as u8 as i8),
                Packing::Nibbles => ((byte(e % 16) >> (4 * (e / 16))) & 0x0F) as f32,
            };
            dense.push(scales[b * halves + e * halves / BLOCK] * q + offsets[b]);
        }
    }
    (words, scales, offsets, dense)
}

const PACKINGS: [Packing; 3] = [Packing::Bytes, Packing::Nibbles, Packing::SplitBytes];

#[test]
fn products_and_decoding_match_the_blocks_definition() {
    let device = device();
    let (rows, cols) = (37, 96);
    for packing in PACKINGS {
        let (words, scales, offsets, dense) = random(packing, rows, cols, 3);
        let m = DeviceBlocks::new(packing, rows, cols, words, scales, offsets, &device).unwrap();
        assert_eq!(m.dims(), [rows, cols]);
        let decoded: Vec<f32> = m.dequantize_transposed().into_data().try_to_vec::<f32>().unwrap();
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(decoded[c * rows + r], dense[r * cols + c], "{packing:?} W[{r},{c}]");
            }
        }
        for tokens in [1, 5] {
            let x: Vec<f32> = (0..tokens * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let y: Vec<f32> = m
                .matmul(Tensor::<2>::from_data(TensorData::new(x.clone(), [tokens, cols]), &device))
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            for t in 0..tokens {
                for r in 0..rows {
                    let terms = (0..cols).map(|c| dense[r * cols + c] * x[t * cols + c]);
                    let (want, magnitude) = terms.fold((0f32, 0f32), |(s, m), v| (s + v, m + v.abs()));
                    let got = y[t * rows + r];
                    assert!((got - want).abs() <= 1e-5 * magnitude.max(1.0), "{packing:?} [{t},{r}]: {got} vs {want}");
                }
            }
        }
    }
}

fn upload<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// `rms_norm(x)·w` of each row, as the fused products compute it before multiplying.
fn normed(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(w.len())
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32 + eps).sqrt();
            row.iter().zip(w).map(move |(v, g)| v * inv * g).collect::<Vec<_>>()
        })
        .collect()
}

/// `x · Wᵀ` on the host, row-major `[tokens, rows]`.
fn product(x: &[f32], dense: &[f32], cols: usize) -> Vec<f32> {
    let rows = dense.len() / cols;
    x.chunks(cols)
        .flat_map(|xr| (0..rows).map(move |r| (0..cols).map(|c| dense[r * cols + c] * xr[c]).sum::<f32>()))
        .collect()
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn fused_products_match_norm_then_product_then_add() {
    let device = device();
    let (rows, cols, tokens, eps) = (45, 128, 2, 1e-5);
    for packing in PACKINGS {
        let (words, scales, offsets, dense) = random(packing, rows, cols, 5);
        let m = DeviceBlocks::new(packing, rows, cols, words, scales, offsets, &device).unwrap();
        let x: Vec<f32> = (0..tokens * cols).map(|i| ((i * 29 % 83) as f32 - 41.0) / 13.0).collect();
        let g: Vec<f32> = (0..cols).map(|i| 0.5 + (i % 7) as f32 / 10.0).collect();
        let add: Vec<f32> = (0..tokens * rows).map(|i| (i % 11) as f32 - 5.0).collect();
        let weight = upload(g.clone(), [cols], &device);
        let norm = Some(NormWeight { weight: &weight, eps });
        let xt = upload(x.clone(), [tokens, cols], &device);

        let plain = host(m.norm_matmul(xt.clone(), None, None));
        close(&plain, &product(&x, &dense, cols), &format!("{packing:?} product"));
        let with_norm = host(m.norm_matmul(xt.clone(), norm, Some(upload(add.clone(), [tokens, rows], &device))));
        let want: Vec<f32> = product(&normed(&x, &g, eps), &dense, cols).iter().zip(&add).map(|(p, a)| p + a).collect();
        close(&with_norm, &want, &format!("{packing:?} norm, product, add"));

        // Gate rows then up rows (here the same matrix twice): silu(y)·y.
        let stacked = DeviceBlocks::stack(&[&m, &m]).unwrap();
        let gated = host(stacked.norm_gate_up(xt, NormWeight { weight: &weight, eps }));
        let y = product(&normed(&x, &g, eps), &dense, cols);
        let want: Vec<f32> = y.iter().map(|&v| v / (1.0 + (-v).exp()) * v).collect();
        close(&gated, &want, &format!("{packing:?} gate/up"));
    }
}

/// Matrices of different packings stack into the widest (a K-quant file's Q4_K query rows with
/// its Q6_K value rows), each part's values and products unchanged.
#[test]
fn mixed_packings_stack_into_the_widest() {
    let device = device();
    let cols = 64;
    let parts: Vec<(Packing, usize)> = vec![(Packing::Nibbles, 5), (Packing::SplitBytes, 3), (Packing::Bytes, 4)];
    let mut dense = Vec::new();
    let mut matrices = Vec::new();
    for (i, &(packing, rows)) in parts.iter().enumerate() {
        let (words, scales, offsets, values) = random(packing, rows, cols, 11 + i as u64);
        matrices.push(DeviceBlocks::new(packing, rows, cols, words, scales, offsets, &device).unwrap());
        dense.extend(values);
    }
    let refs: Vec<&DeviceBlocks> = matrices.iter().collect();
    let stacked = DeviceBlocks::stack(&refs).unwrap();
    assert_eq!(stacked.packing(), Packing::SplitBytes);
    let rows = dense.len() / cols;
    assert_eq!(stacked.dims(), [rows, cols]);
    let decoded = host(stacked.dequantize_transposed());
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(decoded[c * rows + r], dense[r * cols + c], "W[{r},{c}]");
        }
    }
    let x: Vec<f32> = (0..cols).map(|i| ((i * 17 % 31) as f32 - 15.0) / 7.0).collect();
    let y = host(stacked.norm_matmul(upload(x.clone(), [1, cols], &device), None, None));
    close(&y, &product(&x, &dense, cols), "stacked product");
    // Nibbles widen to bytes alone too.
    let bytes = matrices[0].widen(Packing::Bytes);
    assert_eq!(bytes.packing(), Packing::Bytes);
    let want: Vec<f32> =
        (0..cols).flat_map(|c| (0..5).map(move |r| (r, c))).map(|(r, c)| dense[r * cols + c]).collect();
    assert_eq!(host(bytes.dequantize_transposed()), want);
    // A matrix is never narrowed.
    assert_eq!(matrices[1].widen(Packing::Nibbles).packing(), Packing::SplitBytes);
}

/// One query over a cache, as the definition computes it: rope (rotate-half) on the query and
/// the new key, the new key and value written at `start`, softmax attention over `0..=start` —
/// for a short cache (one cube a head) and long ones (split across cubes, then joined).
#[test]
fn decode_attention_matches_the_definition_split_or_not() {
    let device = device();
    let dims = AttentionDims { heads: 4, kv_heads: 2, head_dim: 64 };
    let (hd, half, cap) = (dims.head_dim, dims.head_dim / 2, 3 * ATTENTION_CHUNK);
    let width = (dims.heads + 2 * dims.kv_heads) * hd;
    let wave = |i: usize, k: usize| ((i * k % 211) as f32 / 211.0 - 0.5) * 2.0;
    for start in [5, ATTENTION_CHUNK, ATTENTION_CHUNK + 44, 2 * ATTENTION_CHUNK + 190] {
        let keys: Vec<f32> = (0..dims.kv_heads * cap * hd).map(|i| wave(i, 37)).collect();
        let values: Vec<f32> = (0..dims.kv_heads * cap * hd).map(|i| wave(i, 53)).collect();
        let qkv: Vec<f32> = (0..width).map(|i| wave(i, 71)).collect();
        let angle: Vec<f32> = (0..hd).map(|d| start as f32 * 0.9f32.powi((d % half) as i32)).collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = angle.iter().map(|a| (a.cos(), a.sin())).unzip();
        let (out, k_cache, v_cache) = decode_attention(
            upload(qkv.clone(), [1, width], &device),
            upload(keys.clone(), [dims.kv_heads, cap, hd], &device),
            upload(values.clone(), [dims.kv_heads, cap, hd], &device),
            upload(cos.clone(), [1, hd], &device),
            upload(sin.clone(), [1, hd], &device),
            upload(vec![0.0; dims.heads * hd], [1, dims.heads * hd], &device),
            0,
            start,
            dims,
        );
        let (out, k_cache, v_cache) = (
            host(out),
            host(k_cache.reshape([dims.kv_heads * cap, hd])),
            host(v_cache.reshape([dims.kv_heads * cap, hd])),
        );

        let rope = |x: &[f32]| -> Vec<f32> {
            (0..hd)
                .map(|d| {
                    let rotated = if d < half { -x[d + half] } else { x[d - half] };
                    x[d] * cos[d] + rotated * sin[d]
                })
                .collect()
        };
        let per_group = dims.heads / dims.kv_heads;
        for h in 0..dims.heads {
            let g = h / per_group;
            let q = rope(&qkv[h * hd..(h + 1) * hd]);
            let kb = (dims.heads + g) * hd;
            let k_new = rope(&qkv[kb..kb + hd]);
            let vb = (dims.heads + dims.kv_heads + g) * hd;
            let v_new = &qkv[vb..vb + hd];
            let at = (g * cap + start) * hd;
            close(&k_cache[at..at + hd], &k_new, &format!("start {start}: key written for group {g}"));
            close(&v_cache[at..at + hd], v_new, &format!("start {start}: value written for group {g}"));
            let key = |p: usize| if p == start { &k_new[..] } else { &keys[(g * cap + p) * hd..][..hd] };
            let value = |p: usize| if p == start { v_new } else { &values[(g * cap + p) * hd..][..hd] };
            let scores: Vec<f32> = (0..=start)
                .map(|p| q.iter().zip(key(p)).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt())
                .collect();
            let max = scores.iter().copied().fold(f32::MIN, f32::max);
            let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = weights.iter().sum();
            let want: Vec<f32> =
                (0..hd).map(|d| (0..=start).map(|p| weights[p] * value(p)[d]).sum::<f32>() / total).collect();
            close(&out[h * hd..(h + 1) * hd], &want, &format!("start {start}: head {h}"));
        }
    }
}

/// Rows of a batched step in one dispatch, each at its own temperature.
#[test]
fn candidates_are_the_largest_logits_with_the_normalisers() {
    let device = device();
    let vocab = 3000;
    // Many ties, so the order among equal logits (lower id first) is checked.
    let rows: Vec<Vec<f32>> =
        [7919usize, 104_729].iter().map(|&k| (0..vocab).map(|i| ((i * k) % 61) as f32 / 4.0 - 7.0).collect()).collect();
    let temperatures = [0.5, 1.7];
    let all = host(top_candidates(upload(rows.concat(), [2, vocab], &device), &temperatures));
    let width = 2 + 2 * CANDIDATES;
    assert_eq!(all.len(), 2 * width);
    for ((row, out), t) in rows.iter().zip(all.chunks(width)).zip(temperatures) {
        let lse = |t: f32| {
            let max = row.iter().copied().fold(f32::MIN, f32::max) / t;
            max + row.iter().map(|l| (l / t - max).exp()).sum::<f32>().ln()
        };
        assert!((out[0] - lse(1.0)).abs() < 1e-4 && (out[1] - lse(t)).abs() < 1e-4, "normalisers {:?}", &out[..2]);
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for k in 0..CANDIDATES {
            assert_eq!(out[2 + CANDIDATES + k] as usize, order[k], "candidate {k}'s id");
            assert_eq!(out[2 + k], row[order[k]], "candidate {k}'s logit");
        }
    }
}

#[test]
fn planes_of_the_wrong_size_are_an_error() {
    let device = device();
    let err = DeviceBlocks::new(Packing::Nibbles, 2, 32, vec![0; 7], vec![0.0; 2], vec![0.0; 2], &device).unwrap_err();
    assert!(err.to_string().contains("needs 8 words"), "{err}");
}

/// `cargo test -p hearth-gpu-kernels --test device -- --ignored --nocapture speed`
#[test]
#[ignore]
fn speed_of_a_decode_step_sized_product() {
    let device = device();
    let (rows, cols) = (1536, 576);
    for packing in [Packing::Nibbles, Packing::Bytes, Packing::Nibbles] {
        let (words, scales, offsets, _) = random(packing, rows, cols, 1);
        let m = DeviceBlocks::new(packing, rows, cols, words, scales, offsets, &device).unwrap();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; cols], [1, cols]), &device);
        let _ = m.matmul(x.clone()).into_data();
        let n = 50;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let _ = m.matmul(x.clone()).into_data();
        }
        let fused = start.elapsed().as_secs_f64() * 1e3 / n as f64;
        // The same product on an f32 copy, through burn's matmul.
        let w = m.dequantize_transposed();
        let _ = x.clone().matmul(w.clone()).into_data();
        let start = std::time::Instant::now();
        for _ in 0..n {
            let _ = x.clone().matmul(w.clone()).into_data();
        }
        let dense = start.elapsed().as_secs_f64() * 1e3 / n as f64;
        eprintln!("{packing:?}: {fused:.2} ms per {rows}×{cols} product on the blocks, {dense:.2} ms on an f32 copy");
    }
}
