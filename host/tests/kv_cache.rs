//! The paged KV cache on real weights (SmolLM2 on flex): a prompt gets the same logits, bit for
//! bit, computed whole, in chunks, or from another sequence's cached blocks; only blocks
//! computed the way the new sequence would compute them are reused; and every block goes back
//! to the pool when the caches are dropped.

mod common;

use std::sync::{Arc, Mutex};

use hearth::model::kv_pool::PAGE;
use hearth::model::{self, BatchItem, DeviceChoice, KvCache, KvPool, LoadedModel, LogitsFor, PoolStats};

fn load() -> LoadedModel {
    let dev = model::device::select(DeviceChoice::Flex).expect("flex opens");
    model::load(&common::smollm2(), &dev).expect("SmolLM2 loads")
}

/// The last position's logits after running `tokens`, the first `prompt_rows` as prompt.
fn run(m: &LoadedModel, cache: &mut KvCache, tokens: &[u32], prompt_rows: usize) -> Vec<f32> {
    let item = BatchItem { tokens, cache, logits: LogitsFor::Last, prompt_rows, candidates: None, media: &[] };
    m.llama.forward_batch(&mut [item]).expect("forward").pop().expect("one sequence's logits")
}

fn stats(pool: &Mutex<KvPool>) -> PoolStats {
    pool.lock().expect("pool lock").stats()
}

fn prompt(m: &LoadedModel) -> Vec<u32> {
    let text = "The lighthouse keeper climbed the stairs every evening, counted the steps, lit the lamp \
                and watched the ships pass until the morning came. In winter the storms were so loud that he \
                could not hear his own voice, and the light was all that spoke for him";
    m.tokenizer.encode(text, false).expect("tokenizes")
}

#[test]
fn a_prompt_gets_the_same_logits_whole_chunked_or_from_the_cache() {
    let m = load();
    let c = m.llama.config();
    let pool = Arc::new(Mutex::new(KvPool::new(32, c.num_layers, c.num_kv_heads, c.head_dim)));
    let prompt = prompt(&m);
    let n = prompt.len();
    assert!(n > 2 * PAGE + 1, "the prompt spans two whole blocks and more ({n})");
    let paged = || KvCache::paged(pool.clone(), 2048, m.llama.device());

    // Whole: one chunk. Its full blocks are registered as it commits.
    let mut whole = paged();
    let reference = run(&m, &mut whole, &prompt, n);
    assert_eq!(stats(&pool).in_use, n.div_ceil(PAGE));

    // In chunks of other sizes, in its own blocks (no reuse asked for).
    let mut chunked = paged();
    for part in [&prompt[..5], &prompt[5..23], &prompt[23..n - 1]] {
        run(&m, &mut chunked, part, part.len());
    }
    assert_eq!(run(&m, &mut chunked, &prompt[n - 1..], 1), reference, "chunked");

    // From the cache: the first sequence's blocks, shared, not copied; only the rest computed.
    let held = stats(&pool).in_use;
    let mut cached = paged();
    let adopted = cached.adopt_prefix(&prompt, n);
    assert_eq!(adopted, (n - 1) / PAGE * PAGE);
    assert_eq!(stats(&pool).in_use, held, "adopted blocks are shared");
    assert_eq!(run(&m, &mut cached, &prompt[adopted..], n - adopted), reference, "from the cache");

    // Generated tokens are computed differently from prompt tokens: a prompt that continues
    // with a sequence's generated tokens does not take the blocks that hold them; the sequence
    // that generated them (resuming after a preemption) does.
    let tail: Vec<u32> = prompt[PAGE..2 * PAGE + 1].iter().rev().copied().collect();
    let continued = [&prompt[..PAGE], &tail[..]].concat();
    let mut generating = paged();
    assert_eq!(generating.adopt_prefix(&continued[..PAGE + 1], PAGE + 1), PAGE);
    // Its prompt's last token, then 16 generated ones.
    run(&m, &mut generating, &continued[PAGE..PAGE + 1], 1);
    for &t in &continued[PAGE + 1..] {
        run(&m, &mut generating, &[t], 0);
    }
    let mut as_prompt = paged();
    assert_eq!(as_prompt.adopt_prefix(&continued, continued.len()), PAGE, "a generated block taken for a prompt");
    let mut resumed = paged();
    assert_eq!(resumed.adopt_prefix(&continued, PAGE + 1), 2 * PAGE, "its own generated block");

    drop((whole, chunked, cached, generating, as_prompt, resumed));
    let after = stats(&pool);
    assert_eq!(after.in_use, 0, "every block is back: {after:?}");
    assert!(after.cached >= 3, "the full blocks stay for reuse: {after:?}");
}

#[test]
fn a_full_pool_is_an_error_for_the_step_not_a_panic() {
    let m = load();
    let c = m.llama.config();
    let pool = Arc::new(Mutex::new(KvPool::new(1, c.num_layers, c.num_kv_heads, c.head_dim)));
    let mut cache = KvCache::paged(pool.clone(), 2048, m.llama.device());
    let prompt: Vec<u32> = (0..PAGE as u32 + 1).map(|i| 100 + i).collect();
    let err = m.llama.forward(&prompt, &mut cache, LogitsFor::Last).expect_err("17 positions in one block");
    assert!(err.to_string().contains("KV cache is full"), "{err}");
    drop(cache);
    assert_eq!(stats(&pool).in_use, 0);
}
