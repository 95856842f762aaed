//! SmolLM2 (Q4_1 GGUF) against Hugging Face transformers on the same dequantized weights
//! (`tests/fixtures/smollm2/reference.json`, made by `scripts/reference/make_smollm2_reference.py`):
//! next-token log-probabilities within 1e-3 over the reference's top 10, and 32-token greedy
//! continuations equal wherever the reference's top-1 margin is clear — on flex and on wgpu.

mod common;

use hearth::model::{self, DeviceRequest, LoadedModel, LogitsFor};
use serde_json::Value;

const LOGPROB_TOLERANCE: f64 = 1e-3;
/// Below this top-1/top-2 logit margin, float noise may legitimately flip the argmax.
const CLEAR_MARGIN: f64 = 0.1;

fn reference() -> Value {
    let path = common::repo_root().join("tests/fixtures/smollm2/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference fixture")).expect("json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits.iter().map(|&l| l as f64 - max - sum.ln()).collect()
}

fn last_logits(m: &LoadedModel, cache: &mut hearth::model::KvCache, input: &[u32]) -> Vec<f32> {
    let t = m.llama.forward(input, cache, LogitsFor::Last).expect("forward");
    t.into_data().try_to_vec::<f32>().expect("f32 logits")
}

fn check_against_reference(device: DeviceRequest) {
    let reference = reference();
    let dev = model::device::select(device).expect("device opens");
    let m = model::load(&common::smollm2(), &dev).expect("SmolLM2 loads");

    let mut worst = 0f64;
    for prompt in reference["prompts"].as_array().unwrap() {
        let name = prompt["name"].as_str().unwrap();
        let prompt_ids = ids(&prompt["ids"]);
        // Our tokenizer must agree first, or the comparison is meaningless.
        let ours = m.tokenizer.encode(prompt["text"].as_str().unwrap(), false).unwrap();
        assert_eq!(ours, prompt_ids, "{name}: token ids");
        let mut cache = m.llama.new_cache(2048);
        let logprobs = log_softmax(&last_logits(&m, &mut cache, &prompt_ids));
        for pair in prompt["top_logprobs"].as_array().unwrap().iter().take(10) {
            let (id, want) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap());
            let diff = (logprobs[id] - want).abs();
            worst = worst.max(diff);
            assert!(
                diff <= LOGPROB_TOLERANCE,
                "{name} ({device}): token {id} logprob {} vs {want} (diff {diff})",
                logprobs[id]
            );
        }
    }
    eprintln!("{device}: worst top-10 logprob difference {worst:.2e}");

    // Greedy continuations, teacher-forced with the reference's ids through our KV-cache decode
    // path: every step's log-probability of the reference token within tolerance, and our
    // argmax equal to it wherever the reference's top-1 margin is clear.
    for g in reference["greedy"].as_array().unwrap() {
        let name = g["name"].as_str().unwrap();
        let mut cache = m.llama.new_cache(2048);
        let mut input = ids(&g["prompt_ids"]);
        let mut clear_steps = 0;
        for step in g["steps"].as_array().unwrap() {
            let logits = last_logits(&m, &mut cache, &input);
            let want = step["id"].as_u64().unwrap() as u32;
            let logprob = log_softmax(&logits)[want as usize];
            let diff = (logprob - step["logprob"].as_f64().unwrap()).abs();
            assert!(diff <= LOGPROB_TOLERANCE, "{name} ({device}): step {} logprob differs by {diff}", step["step"]);
            if step["margin"].as_f64().unwrap() >= CLEAR_MARGIN {
                let ours = hearth::sampling::argmax(&logits) as u32;
                assert_eq!(ours, want, "{name} ({device}): greedy step {}", step["step"]);
                clear_steps += 1;
            }
            input = vec![want];
        }
        eprintln!("{device}: {name}: {clear_steps} clear greedy steps equal the reference");
        assert!(clear_steps >= 16, "{name}: too few clear steps to compare ({clear_steps})");
    }
}

#[test]
fn flex_matches_transformers() {
    check_against_reference(DeviceRequest::Flex);
}

#[test]
fn wgpu_matches_transformers() {
    check_against_reference(DeviceRequest::Wgpu);
}
