//! SmolLM2 (Q4_1 GGUF) against Hugging Face transformers on the same dequantized weights
//! (`tests/fixtures/smollm2/reference.json`, made by `scripts/reference/make_smollm2_reference.py`):
//! next-token log-probabilities over the reference's top 10, and 32-token greedy continuations
//! equal wherever the reference's top-1 margin is clear — on flex and on wgpu.
//!
//! wgpu computes in f32 on dequantized weights, as transformers does: within 1e-3. The CPU path
//! computes on the Q4_1/Q8_0 blocks with 8-bit activations, llama.cpp's method, which moves the
//! logits by that rounding; its tolerance is set from how far llama.cpp itself lands from
//! transformers on the same file and prompts (`tests/fixtures/smollm2/llama_cpp.json`, made by
//! `scripts/reference/make_smollm2_llama_cpp_reference.py`; 0.41 at worst): Hearth may land no
//! farther than llama.cpp does, and greedy steps are compared where the margin is twice that.

mod common;

use hearth::model::{self, DeviceChoice, LoadedModel, LogitsFor};
use serde_json::Value;

const LOGPROB_TOLERANCE: f64 = 1e-3;
/// Below this top-1/top-2 logit margin, float noise may legitimately flip the argmax.
const CLEAR_MARGIN: f64 = 0.1;

fn fixture(name: &str) -> Value {
    let path = common::repo_root().join("tests/fixtures/smollm2").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference fixture")).expect("json")
}

fn reference() -> Value {
    fixture("reference.json")
}

/// The largest difference between llama.cpp's log-probabilities and transformers' over the
/// same comparisons this test makes.
fn llama_cpp_worst(reference: &Value) -> f64 {
    let llama = fixture("llama_cpp.json");
    let mut worst = 0f64;
    for (ours, theirs) in llama["prompts"].as_array().unwrap().iter().zip(reference["prompts"].as_array().unwrap()) {
        assert_eq!(ours["name"], theirs["name"], "the llama.cpp fixture follows reference.json");
        for (a, b) in ours["top_logprobs"].as_array().unwrap().iter().zip(theirs["top_logprobs"].as_array().unwrap()) {
            assert_eq!(a[0], b[0]);
            worst = worst.max((a[1].as_f64().unwrap() - b[1].as_f64().unwrap()).abs());
        }
    }
    for (ours, theirs) in llama["greedy"].as_array().unwrap().iter().zip(reference["greedy"].as_array().unwrap()) {
        for (a, b) in ours["steps"].as_array().unwrap().iter().zip(theirs["steps"].as_array().unwrap()) {
            assert_eq!(a["id"], b["id"]);
            worst = worst.max((a["logprob"].as_f64().unwrap() - b["logprob"].as_f64().unwrap()).abs());
        }
    }
    worst
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

fn check_against_reference(device: DeviceChoice) {
    let reference = reference();
    let dev = model::device::select(device).expect("device opens");
    let m = model::load(&common::smollm2(), &dev).expect("SmolLM2 loads");

    // The CPU path rounds activations to 8 bits as llama.cpp does (see the module's comment).
    let (tolerance, clear_margin) = if m.llama.runs_on_cpu() {
        let llama = llama_cpp_worst(&reference);
        eprintln!("{device}: llama.cpp's worst difference from transformers is {llama:.2e}");
        let tolerance = llama.max(LOGPROB_TOLERANCE);
        (tolerance, CLEAR_MARGIN.max(2.0 * tolerance))
    } else {
        (LOGPROB_TOLERANCE, CLEAR_MARGIN)
    };
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
                diff <= tolerance,
                "{name} ({device}): token {id} logprob {} vs {want} (diff {diff}, tolerance {tolerance:.2e})",
                logprobs[id]
            );
        }
    }
    eprintln!("{device}: worst top-10 logprob difference {worst:.2e} (tolerance {tolerance:.2e})");

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
            worst = worst.max(diff);
            assert!(diff <= tolerance, "{name} ({device}): step {} logprob differs by {diff}", step["step"]);
            if step["margin"].as_f64().unwrap() >= clear_margin {
                let ours = hearth::sampling::argmax(&logits) as u32;
                assert_eq!(ours, want, "{name} ({device}): greedy step {}", step["step"]);
                clear_steps += 1;
            }
            input = vec![want];
        }
        eprintln!("{device}: {name}: {clear_steps} clear greedy steps equal the reference");
        assert!(clear_steps >= 16, "{name}: too few clear steps to compare ({clear_steps})");
    }
    eprintln!("{device}: worst logprob difference overall {worst:.2e}");
}

#[test]
fn flex_matches_transformers() {
    check_against_reference(DeviceChoice::Flex);
}

#[test]
fn wgpu_matches_transformers() {
    check_against_reference(DeviceChoice::Wgpu);
}

/// Hearth's log-probabilities at the points llama.cpp's fixture `llama` records: each prompt's
/// top-10 tokens, then each teacher-forced greedy step's token.
fn logprobs_at(m: &LoadedModel, reference: &Value, llama: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    for (theirs, prompt) in llama["prompts"].as_array().unwrap().iter().zip(reference["prompts"].as_array().unwrap()) {
        let mut cache = m.llama.new_cache(2048);
        let logprobs = log_softmax(&last_logits(m, &mut cache, &ids(&prompt["ids"])));
        out.extend(
            theirs["top_logprobs"].as_array().unwrap().iter().map(|p| logprobs[p[0].as_u64().unwrap() as usize]),
        );
    }
    for (theirs, g) in llama["greedy"].as_array().unwrap().iter().zip(reference["greedy"].as_array().unwrap()) {
        let mut cache = m.llama.new_cache(2048);
        let mut input = ids(&g["prompt_ids"]);
        for step in theirs["steps"].as_array().unwrap() {
            let id = step["id"].as_u64().unwrap() as u32;
            out.push(log_softmax(&last_logits(m, &mut cache, &input))[id as usize]);
            input = vec![id];
        }
    }
    out
}

/// llama.cpp's log-probabilities in the order [`logprobs_at`] computes them.
fn llama_cpp_logprobs(llama: &Value) -> Vec<f64> {
    let prompts =
        llama["prompts"].as_array().unwrap().iter().flat_map(|p| {
            p["top_logprobs"].as_array().unwrap().iter().map(|x| x[1].as_f64().unwrap()).collect::<Vec<_>>()
        });
    let steps = llama["greedy"].as_array().unwrap().iter().flat_map(|g| {
        g["steps"].as_array().unwrap().iter().map(|s| s["logprob"].as_f64().unwrap()).collect::<Vec<_>>()
    });
    prompts.chain(steps).collect()
}

fn worst_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// K-quant files (Q4_K_M: Q4_K, Q6_K, Q5_0 and Q8_0 blocks; Q5_K_M: Q5_K, Q6_K, Q5_1, Q8_0):
/// the CPU path (8-bit activations on the blocks) lands no farther from exact f32 arithmetic on
/// the same file's dequantized weights (the wgpu path, which the tests above pin to
/// transformers) than llama.cpp does. Ignored: the files are made by llama.cpp's quantizer,
/// which CI does not have — `scripts/reference/make_smollm2_llama_cpp_reference.py --quantize
/// Q4_K_M` (and Q5_K_M) makes them and the fixtures, then
/// `cargo test --test model_reference -- --ignored k_quant --nocapture`.
#[test]
#[ignore = "needs K-quant files made by llama.cpp's quantizer (see the comment)"]
fn k_quant_files_match_llama_cpp() {
    let reference = reference();
    let flex = model::device::select(DeviceChoice::Flex).expect("flex opens");
    let wgpu = model::device::select(DeviceChoice::Wgpu).expect("wgpu opens");
    for ftype in ["Q4_K_M", "Q5_K_M"] {
        let llama = fixture(&format!("llama_cpp.{ftype}.json"));
        let path = common::model_dir().join(llama["model_file"].as_str().unwrap());
        let load = |dev| model::load(&path, dev).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let cpu = logprobs_at(&load(&flex), &reference, &llama);
        let exact = logprobs_at(&load(&wgpu), &reference, &llama);
        let theirs = llama_cpp_logprobs(&llama);
        let (ours, llama_cpp) = (worst_difference(&cpu, &exact), worst_difference(&theirs, &exact));
        eprintln!(
            "{ftype}: worst logprob difference from f32 on the same weights: Hearth's CPU path {ours:.3}, \
             llama.cpp {llama_cpp:.3}; between the two {:.3}",
            worst_difference(&cpu, &theirs)
        );
        assert!(ours <= llama_cpp.max(LOGPROB_TOLERANCE), "{ftype}: {ours} from f32, llama.cpp {llama_cpp}");
    }
}
