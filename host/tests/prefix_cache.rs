//! Prefix reuse and the paged KV cache against the real binary: a chat that resends its history
//! computes only its new turn, requests sharing a long system prompt compute only their tails,
//! `usage.prompt_tokens_details.cached_tokens` says so, `cache_prompt: false` turns it off, a
//! cache too small for the batch delays sequences (preemption) instead of failing them, and
//! afterwards no block is held.

mod common;

use common::{Server, get_json, post_json};
use serde_json::{Value, json};

/// Positions per KV block (the server reports it too).
const BLOCK: u64 = 16;

fn cached(body: &Value) -> u64 {
    body["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens: {body}"))
}

fn prompt_tokens(body: &Value) -> u64 {
    body["usage"]["prompt_tokens"].as_u64().expect("prompt_tokens")
}

/// KV blocks running sequences hold once the engine has ended the ones that answered: a
/// sequence's last event reaches its client just before the engine drops it, so this asks
/// again for a moment while the count is not yet 0.
fn blocks_in_use(server: &Server) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, info) = get_json(server, "/v1/internal/model/info");
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["kv_cache"]["block_tokens"], BLOCK, "{info}");
        let held = info["kv_cache"]["blocks_in_use"].as_u64().unwrap_or_else(|| panic!("no block count: {info}"));
        if held == 0 || std::time::Instant::now() > deadline {
            return held;
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_chat_that_resends_its_history_computes_only_the_new_turn() {
    let server = Server::smollm2(&[]);
    let mut messages = vec![json!({"role": "system", "content": "You are a patient teacher who answers briefly."})];
    let questions = [
        "What is a prime number?",
        "Is 7 one?",
        "And 9?",
        "Name a prime between 20 and 30.",
        "What about one above 100?",
        "Why are primes useful?",
        "Who studied them first?",
        "Is 1 a prime?",
        "How many primes are there?",
        "Thank you. Summarise what we said.",
    ];
    let mut previous_prompt = 0;
    for (turn, q) in questions.iter().enumerate() {
        messages.push(json!({"role": "user", "content": q}));
        let (status, body) = post_json(
            &server,
            "/v1/chat/completions",
            &json!({"messages": messages, "max_tokens": 24, "temperature": 0}),
        );
        assert_eq!(status, 200, "{body}");
        let (prompt, cached) = (prompt_tokens(&body), cached(&body));
        if turn == 0 {
            assert_eq!(cached, 0, "nothing is cached before the first turn: {body}");
        } else {
            // Everything the previous turn's prompt filled in whole blocks is reused; what is
            // computed is the new turn (the answer and question) and at most a block of the old.
            assert!(cached >= previous_prompt / BLOCK * BLOCK, "turn {turn}: {cached} of {prompt} cached");
            assert!(prompt - cached <= prompt - previous_prompt + BLOCK, "turn {turn}: computed {}", prompt - cached);
        }
        previous_prompt = prompt;
        let answer = body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned();
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    assert_eq!(blocks_in_use(&server), 0);
}

#[test]
fn requests_sharing_a_long_system_prompt_compute_only_their_tails() {
    let server = Server::smollm2(&[]);
    let rules: String = (1..=40).map(|i| format!("Rule {i}: answer in plain words and keep it short. ")).collect();
    let ask = |question: &str, cache_prompt: bool| {
        let (status, body) = post_json(
            &server,
            "/v1/chat/completions",
            &json!({"messages": [{"role": "system", "content": rules}, {"role": "user", "content": question}],
                    "max_tokens": 8, "temperature": 0, "cache_prompt": cache_prompt}),
        );
        assert_eq!(status, 200, "{body}");
        body
    };
    let first = ask("What colour is the sky?", true);
    let system_tokens = prompt_tokens(&first) - 20;
    assert!(system_tokens > 480, "the system prompt is about 500 tokens ({system_tokens})");
    assert_eq!(cached(&first), 0);
    let second = ask("How many legs has a spider?", true);
    assert!(cached(&second) >= system_tokens - BLOCK, "{} of {} cached", cached(&second), prompt_tokens(&second));
    // Asked not to, a request computes its whole prompt.
    let third = ask("How many legs has a spider?", false);
    assert_eq!(cached(&third), 0, "{third}");

    // Streaming reports it in the usage chunk too.
    let mut resp = common::agent()
        .post(&server.url("/v1/chat/completions"))
        .send_json(json!({"messages": [{"role": "system", "content": rules}, {"role": "user", "content": "Hi"}],
                          "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}}))
        .expect("sent");
    let text = resp.body_mut().read_to_string().expect("stream read");
    let usage = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|chunk| chunk["usage"].is_object())
        .unwrap_or_else(|| panic!("no usage chunk: {text}"));
    assert!(cached(&usage) >= system_tokens - BLOCK, "{usage}");
    assert_eq!(blocks_in_use(&server), 0);
}

#[test]
fn a_cache_too_small_for_the_batch_delays_sequences_instead_of_failing_them() {
    // 20 blocks (320 positions) for 8 sequences of ~20 prompt + 48 generated positions each:
    // they cannot all hold their caches at once. A preempted sequence recomputes its context
    // as it was computed, so it still writes what it writes alone.
    let server = Server::smollm2(&["--parallel", "8", "--cache-size", "320"]);
    let body = |i: usize| {
        json!({"prompt": format!("Story number {i}. Once upon a time, in a village by the sea, there lived"),
               "max_tokens": 48, "ban_eos_token": true, "temperature": 0})
    };
    let alone: Vec<Value> = (0..8).map(|i| post_json(&server, "/v1/completions", &body(i)).1).collect();
    let together: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (server, body) = (&server, body(i));
                scope.spawn(move || post_json(server, "/v1/completions", &body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a client thread")).collect()
    });
    for (i, ((status, body), first)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 48, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
        assert_eq!(body["choices"][0]["text"], first["choices"][0]["text"], "request {i}");
    }
    assert!(server.log().contains("the KV cache is full"), "no sequence had to wait:\n{}", server.log());
    assert_eq!(blocks_in_use(&server), 0);
}
