//! The fused GPU decode step on real weights (SmolLM2 Q4_1 on wgpu; lavapipe where there is no
//! GPU), through its counters: a decoded token costs at most six dispatches a layer and one
//! readback of at most 1 KiB, and the tokens chosen from the candidates that readback brings
//! are the ones the whole row gives — greedily, and drawn with a seed, reproducibly.
//!
//! The tests here take turns (`ONE_AT_A_TIME`), in their own binary: the counters are
//! process-wide, and another test running beside one would add its own dispatches.

mod common;
#[path = "common/gguf_writer.rs"]
mod gguf_writer;

use std::sync::Mutex;

use hearth::model::{self, BatchItem, DeviceChoice, KvCache, LoadedModel, LogitsFor, StepLogits};
use hearth::sampling::{Sampler, SamplingParams};
use hearth_gpu_kernels::counters::{self, DeviceWork};

/// One token after what `cache` holds, asking for candidates at `temperature`.
fn step(m: &LoadedModel, cache: &mut KvCache, token: u32, candidates: Option<f32>) -> StepLogits {
    let item = BatchItem { tokens: &[token], cache, logits: LogitsFor::Last, prompt_rows: 0, candidates, media: &[] };
    m.llama.forward_step(&mut [item]).expect("step").pop().expect("one sequence's output")
}

fn work() -> DeviceWork {
    counters::device_work().expect("wgpu counts its work")
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `n` tokens sampled by `params` after `prompt`, each from the candidates when they decide.
fn generate(m: &LoadedModel, prompt: &[u32], params: SamplingParams, n: usize) -> Vec<u32> {
    let mut cache = m.llama.new_cache(512);
    let (last, head) = prompt.split_last().expect("a prompt");
    m.llama.forward(head, &mut cache, LogitsFor::Last).expect("prefill");
    let mut sampler = Sampler::new(params);
    let temperature = sampler.candidate_temperature();
    let (mut token, mut out) = (*last, Vec::new());
    for _ in 0..n {
        let next = match step(m, &mut cache, token, temperature) {
            StepLogits::Top(top) => match sampler.sample_candidates(&top.candidates, &[]) {
                Some(s) => s.id,
                None => sampler.sample(&StepLogits::Top(top).into_full().expect("row"), &[]).id,
            },
            full => sampler.sample(&full.into_full().expect("row"), &[]).id,
        };
        out.push(next);
        token = next;
    }
    out
}

#[test]
fn a_decoded_token_is_a_few_dispatches_and_one_small_readback() {
    let _alone = alone();
    let dev = model::device::select(DeviceChoice::Wgpu).expect("wgpu opens");
    let m = model::load(&common::smollm2(), &dev).expect("SmolLM2 loads");
    let layers = m.llama.config().num_layers as u64;
    let prompt = m.tokenizer.encode("The lighthouse keeper climbed the stairs", false).expect("tokenizes");

    let (last, head) = prompt.split_last().expect("a prompt");

    // Compiled, and autotuned, before counting: the same prefill and a few steps, so that no
    // tuning benchmark (its launches count too) still runs while a counted token does.
    let mut warm = m.llama.new_cache(512);
    m.llama.forward(head, &mut warm, LogitsFor::Last).expect("prefill");
    for _ in 0..3 {
        let _ = step(&m, &mut warm, *last, Some(1.0));
    }

    // Greedy from the candidates, token after token, beside a twin cache run on whole rows.
    let mut cache = m.llama.new_cache(512);
    let mut twin = m.llama.new_cache(512);
    m.llama.forward(head, &mut cache, LogitsFor::Last).expect("prefill");
    m.llama.forward(head, &mut twin, LogitsFor::Last).expect("prefill");
    let mut greedy = Sampler::new(SamplingParams { temperature: 0.0, ..SamplingParams::default() });
    let mut token = *last;
    for _ in 0..8 {
        let before = work();
        let out = step(&m, &mut cache, token, Some(1.0));
        let after = work();
        let dispatches = after.dispatches - before.dispatches;
        assert!(dispatches <= 6 * layers + 2, "{dispatches} dispatches for one token of {layers} layers");
        assert_eq!(after.readbacks - before.readbacks, 1, "one readback a token");
        let bytes = after.readback_bytes - before.readback_bytes;
        assert!(bytes <= 1024, "{bytes} bytes read back for one token");

        let StepLogits::Top(top) = out else { panic!("a greedy step reads back candidates") };
        let chosen = greedy.sample_candidates(&top.candidates, &[]).expect("greedy is decided by the candidates").id;
        let row = m.llama.forward(&[token], &mut twin, LogitsFor::Last).expect("step");
        let row = row.into_data().try_to_vec::<f32>().expect("f32 logits");
        assert_eq!(chosen, hearth::sampling::argmax(&row) as u32, "the candidates' best is the whole row's");
        token = chosen;
    }

    // A batched step of three sequences, each at its own temperature: one readback brings every
    // row's candidates, each the same as its sequence's step alone.
    let temperatures = [1.0, 0.7, 1.3];
    let prefilled = |len: usize| {
        let mut c = m.llama.new_cache(512);
        m.llama.forward(&head[..len], &mut c, LogitsFor::Last).expect("prefill").into_data();
        c
    };
    let lengths = [head.len(), head.len() - 1, head.len() - 2];
    let mut batched: Vec<KvCache> = lengths.iter().map(|&n| prefilled(n)).collect();
    let mut alone: Vec<KvCache> = lengths.iter().map(|&n| prefilled(n)).collect();
    let before = work();
    let mut items: Vec<BatchItem> = batched
        .iter_mut()
        .zip(temperatures)
        .map(|(cache, t)| BatchItem {
            tokens: std::slice::from_ref(last),
            cache,
            logits: LogitsFor::Last,
            prompt_rows: 0,
            candidates: Some(t),
            media: &[],
        })
        .collect();
    let outs = m.llama.forward_step(&mut items).expect("batched step");
    let after = work();
    assert_eq!(after.readbacks - before.readbacks, 1, "one readback for the step's three tokens");
    assert!(after.readback_bytes - before.readback_bytes <= 3 * 1024, "at most 1 KiB a token");
    for ((out, cache), t) in outs.into_iter().zip(&mut alone).zip(temperatures) {
        let (StepLogits::Top(together), StepLogits::Top(by_itself)) = (out, step(&m, cache, *last, Some(t))) else {
            panic!("steps asking for candidates read back candidates")
        };
        assert_eq!(together.candidates.ids, by_itself.candidates.ids, "temperature {t}: the same candidates");
        let (a, b) = (together.candidates.log_norm_t, by_itself.candidates.log_norm_t);
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "temperature {t}: normaliser {a} batched, {b} alone");
    }

    // Drawn with a seed: the same tokens twice.
    let sampled = SamplingParams { temperature: 0.8, top_p: 0.9, seed: Some(11), ..SamplingParams::default() };
    let first = generate(&m, &prompt, sampled.clone(), 16);
    assert_eq!(generate(&m, &prompt, sampled, 16), first, "seeded sampling is reproducible on wgpu");
}

/// A K-quant file mixes formats in one layer (llama.cpp's Q4_K_M: Q4_K query and key, Q6_K
/// value and down projections and head): on a GPU they all stay block-quantized, the q/k/v and
/// gate/up products stack (widened to the widest packing), and a token takes the fused step —
/// with the numbers of the other paths, after a cache long enough that its attention splits
/// across cubes.
#[test]
fn mixed_k_quant_layers_take_the_fused_step() {
    let _alone = alone();
    let (hidden, ffn, kv) = (256, 256, 128);
    let mut w = gguf_writer::tiny_llama();
    w.meta("llama.context_length", gguf_writer::Meta::U32(512));
    w.tensors.retain(|t| t.name.contains("norm"));
    w.k_quant_matrix("blk.0.attn_q.weight", hidden, hidden, 12, 1)
        .k_quant_matrix("blk.0.attn_k.weight", kv, hidden, 12, 2)
        .k_quant_matrix("blk.0.attn_v.weight", kv, hidden, 14, 3)
        .k_quant_matrix("blk.0.attn_output.weight", hidden, hidden, 13, 4)
        .k_quant_matrix("blk.0.ffn_gate.weight", ffn, hidden, 12, 5)
        .k_quant_matrix("blk.0.ffn_up.weight", ffn, hidden, 13, 6)
        .k_quant_matrix("blk.0.ffn_down.weight", hidden, ffn, 14, 7)
        .k_quant_matrix("token_embd.weight", 4, hidden, 12, 8)
        .k_quant_matrix("output.weight", 4, hidden, 14, 9);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny-k-quants.gguf");
    w.write(&path);

    let wgpu = model::device::select(DeviceChoice::Wgpu).expect("wgpu opens");
    let flex = model::device::select(DeviceChoice::Flex).expect("flex opens");
    let gpu = model::load(&path, &wgpu).expect("the K-quant file loads on wgpu");
    let cpu = model::load(&path, &flex).expect("the K-quant file loads on flex");
    // Past ATTENTION_CHUNK positions: the step's attention is split and joined.
    let tokens: Vec<u32> = (0..hearth_gpu_kernels::decode::ATTENTION_CHUNK as u32 + 40).map(|i| i * 7 % 3).collect();
    let (last, head) = tokens.split_last().expect("tokens");

    let mut warm = gpu.llama.new_cache(512);
    gpu.llama.forward(head, &mut warm, LogitsFor::Last).expect("prefill");
    let _ = gpu.llama.forward(&[*last], &mut warm, LogitsFor::Last).expect("step");

    let mut cache = gpu.llama.new_cache(512);
    // Read, so the prefill's queued kernels (burn's fusion runs lazily) are not counted below.
    gpu.llama.forward(head, &mut cache, LogitsFor::Last).expect("prefill").into_data();
    let before = work();
    let stepped = gpu.llama.forward(&[*last], &mut cache, LogitsFor::Last).expect("step");
    let stepped = stepped.into_data().try_to_vec::<f32>().expect("f32 logits");
    let dispatches = work().dispatches - before.dispatches;
    assert!(dispatches <= 6 + 2, "{dispatches} dispatches for a token of one layer: not the fused step");

    // The references: the GPU's prompt path (the plain product kernel, burn's norm, rope and
    // attention), which shares only the block decoding with the fused step; and, loosely, the
    // CPU's (its 8-bit activations differ by a few thousandths), whose block decoding the
    // kernels crate pins — a half-block's scale or a nibble taken wrong is far off that.
    let last_row = |m: &LoadedModel| {
        let mut cache = m.llama.new_cache(512);
        let logits = m.llama.forward(&tokens, &mut cache, LogitsFor::Last).expect("prompt");
        logits.into_data().try_to_vec::<f32>().expect("f32 logits")
    };
    for (reference, tolerance, what) in [(last_row(&gpu), 1e-4, "wgpu's prompt path"), (last_row(&cpu), 2e-2, "flex")] {
        let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
        assert_eq!(stepped.len(), reference.len());
        for (i, (got, want)) in stepped.iter().zip(&reference).enumerate() {
            assert!((got - want).abs() <= tolerance * scale, "logit {i}: fused step {got}, {what} {want}");
        }
    }
}
