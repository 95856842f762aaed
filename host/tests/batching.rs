//! The batching engine against the real binary: requests that share forward passes get exactly
//! the text they get alone (on flex, and on wgpu through lavapipe), and a full queue answers 429
//! with Retry-After.
//!
//! The second run of each request starts from the cached blocks of the first (the prompt cache
//! is on by default): the text is the same all the same.

mod common;

use common::{Server, agent, post_json};
use serde_json::{Value, json};

/// 32 mixed greedy requests: chat and completions, short and long prompts (one longer than a
/// prefill chunk, so it prefills over several steps beside the others' decoding).
fn requests() -> Vec<(&'static str, Value)> {
    let topics = [
        "the sea",
        "a mountain",
        "bread",
        "the moon",
        "a library",
        "winter",
        "a bicycle",
        "coffee",
        "rain",
        "a garden",
        "the city at night",
        "a violin",
        "an old map",
        "the desert",
        "a lighthouse",
        "autumn",
    ];
    let mut out = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        out.push((
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": format!("Write one sentence about {topic}.")}],
                   "max_tokens": 20 + i % 7, "temperature": 0}),
        ));
        let prompt = if i == 3 {
            format!("{} Now, about {topic}:", "Once upon a time there was a story that went on and on. ".repeat(60))
        } else {
            format!("A short note about {topic}:")
        };
        out.push(("/v1/completions", json!({"prompt": prompt, "max_tokens": 16 + i % 5, "temperature": 0})));
    }
    out
}

fn text_of(body: &Value) -> String {
    let choice = &body["choices"][0];
    choice["message"]["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or_default().to_owned()
}

fn run_all(server: &Server, reqs: &[(&str, Value)], concurrent: bool) -> Vec<String> {
    let one = |(path, body): &(&str, Value)| {
        let (status, answer) = post_json(server, path, body);
        assert_eq!(status, 200, "{answer}");
        text_of(&answer)
    };
    if !concurrent {
        return reqs.iter().map(one).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = reqs.iter().map(|r| scope.spawn(move || one(r))).collect();
        handles.into_iter().map(|h| h.join().expect("a client thread")).collect()
    })
}

#[test]
fn batched_requests_generate_what_they_generate_alone() {
    let server = Server::smollm2(&["--parallel", "16", "--prefill-chunk", "256"]);
    let reqs = requests();
    let alone = run_all(&server, &reqs, false);
    let together = run_all(&server, &reqs, true);
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i} ({}) differs when batched", reqs[i].0);
    }
    // Sampled requests with a seed are reproducible inside a batch too.
    let sampled: Vec<(&str, Value)> = (0..8)
        .map(|i| {
            (
                "/v1/completions",
                json!({"prompt": format!("List {i} colours:"), "max_tokens": 16,
                                       "temperature": 0.9, "top_p": 0.95, "seed": 100 + i}),
            )
        })
        .collect();
    assert_eq!(run_all(&server, &sampled, false), run_all(&server, &sampled, true));
}

/// The same scheduler drives the wgpu backend (its sequences run one after another inside each
/// step): 8 short requests, alone and together, give the same text.
#[test]
fn batched_requests_on_wgpu_generate_what_they_generate_alone() {
    let model = common::smollm2();
    let server = Server::start(&[
        "--model",
        model.to_str().expect("utf-8 path"),
        "--device",
        "wgpu",
        "--ctx-size",
        "1024",
        "--parallel",
        "8",
    ]);
    let reqs: Vec<(&str, Value)> = requests()
        .into_iter()
        .filter(|(_, body)| body["prompt"].as_str().is_none_or(|p| p.len() <= 200))
        .take(8)
        .map(|(path, mut body)| {
            body["max_tokens"] = json!(10);
            (path, body)
        })
        .collect();
    let alone = run_all(&server, &reqs, false);
    let together = run_all(&server, &reqs, true);
    assert!(alone.iter().all(|t| !t.is_empty()), "{alone:?}");
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i} ({}) differs when batched on wgpu", reqs[i].0);
    }
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let server = Server::smollm2(&["--parallel", "1", "--max-queue", "1"]);
    let body = json!({"prompt": "Count: 1, 2, 3,", "max_tokens": 60, "ban_eos_token": true});
    let outcomes: Vec<(u16, Option<String>, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                scope.spawn(|| {
                    let mut resp = agent().post(&server.url("/v1/completions")).send_json(&body).expect("sent");
                    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let status = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    (status, retry, serde_json::from_str(&text).unwrap_or(Value::Null))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a client thread")).collect()
    });
    let refused: Vec<_> = outcomes.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(!refused.is_empty(), "six requests for one slot and one queue place: {outcomes:?}");
    for (_, retry, body) in &refused {
        assert_eq!(retry.as_deref(), Some("1"), "{body}");
        assert_eq!(body["error"]["code"], "server_overloaded", "{body}");
    }
    assert!(outcomes.iter().all(|(s, _, _)| *s == 200 || *s == 429), "{outcomes:?}");
}
