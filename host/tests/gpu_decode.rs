//! The fused GPU decode step on real weights (SmolLM2 Q4_1 on wgpu; lavapipe where there is no
//! GPU), through its counters: a decoded token costs at most six dispatches a layer and one
//! readback of at most 1 KiB, and the tokens chosen from the candidates that readback brings
//! are the ones the whole row gives — greedily, and drawn with a seed, reproducibly.
//!
//! One test in its own binary: the counters are process-wide, and another test running beside
//! it would add its own dispatches.

mod common;

use hearth::model::{self, BatchItem, DeviceChoice, KvCache, LoadedModel, LogitsFor, StepLogits};
use hearth::sampling::{Sampler, SamplingParams};
use hearth_gpu_kernels::counters::{self, DeviceWork};

/// One token after what `cache` holds, asking for candidates at `temperature`.
fn step(m: &LoadedModel, cache: &mut KvCache, token: u32, candidates: Option<f32>) -> StepLogits {
    let item = BatchItem { tokens: &[token], cache, logits: LogitsFor::Last, prompt_rows: 0, candidates };
    m.llama.forward_step(&mut [item]).expect("step").pop().expect("one sequence's output")
}

fn work() -> DeviceWork {
    counters::device_work().expect("wgpu counts its work")
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

    // Drawn with a seed: the same tokens twice.
    let sampled = SamplingParams { temperature: 0.8, top_p: 0.9, seed: Some(11), ..SamplingParams::default() };
    let first = generate(&m, &prompt, sampled.clone(), 16);
    assert_eq!(generate(&m, &prompt, sampled, 16), first, "seeded sampling is reproducible on wgpu");
}
