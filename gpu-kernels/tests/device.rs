//! The kernels on a real wgpu device (lavapipe where there is no GPU: `mesa-vulkan-drivers`),
//! against the blocks' definition computed on the host.

use burn::tensor::{Device, Tensor, TensorData};
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
    let scales: Vec<f32> = (0..blocks).map(|_| (next() % 1000) as f32 / 20000.0 + 0.001).collect();
    let offsets: Vec<f32> = (0..blocks)
        .map(|_| if packing == Packing::Bytes { 0.0 } else { (next() % 1000) as f32 / 10000.0 - 0.05 })
        .collect();
    let mut dense = Vec::with_capacity(rows * cols);
    for b in 0..blocks {
        let w = &words[b * packing.words()..(b + 1) * packing.words()];
        let byte = |j: usize| (w[j / 4] >> (8 * (j % 4))) & 0xFF;
        for e in 0..BLOCK {
            let q = match packing {
                Packing::Bytes => f32::from(byte(e) as u8 as i8),
                Packing::Nibbles => ((byte(e % 16) >> (4 * (e / 16))) & 0x0F) as f32,
            };
            dense.push(scales[b] * q + offsets[b]);
        }
    }
    (words, scales, offsets, dense)
}

#[test]
fn products_and_decoding_match_the_blocks_definition() {
    let device = device();
    let (rows, cols) = (37, 96);
    for packing in [Packing::Bytes, Packing::Nibbles] {
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
