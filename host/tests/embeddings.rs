//! `/v1/embeddings` and the embedding-moderation plugin on the real binary: openai-python's
//! `embeddings.create` (string and list, float and base64, token ids) against
//! sentence-transformers' vectors, the tiny MPNet through the API, bad requests as OpenAI-shaped
//! 400s, a missing model as a 503 while chat keeps working, and `/v1/moderations` scoring by
//! embeddings.

mod common;

use std::sync::OnceLock;

use common::{Server, post_json, repo_root};
use serde_json::{Value, json};

/// A server with no chat model, embedding with all-MiniLM-L6-v2 on flex.
fn minilm() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start_with_env(&["--device", "flex"], &[("OPENEDAI_EMBEDDING_MODEL", "all-MiniLM-L6-v2")])
    })
}

fn error_param(body: &Value) -> &str {
    body["error"]["param"].as_str().unwrap_or_default()
}

#[test]
fn openai_python_embeds_strings_lists_floats_base64_and_token_ids() {
    common::run_python("openai_embeddings.py", minilm());
}

#[test]
fn bad_embedding_requests_are_400s_naming_the_field() {
    let server = minilm();
    let cases = [
        (json!({"input": []}), "input"),
        (json!({"input": [[]]}), "input"),
        (json!({"input": [-3]}), "input"),
        (json!({"input": ["a", 1]}), "input"),
        (json!({"input": 7}), "input"),
        (json!({"input": [40000]}), "input"),
        (json!({"input": "a", "dimensions": 12}), "dimensions"),
        (json!({"input": "a", "dimensions": 0}), "dimensions"),
        (json!({"input": "a", "encoding_format": "int8"}), "encoding_format"),
        (json!({"input": "a", "temperature": 1}), "temperature"),
        (json!({}), "input"),
    ];
    for (body, param) in cases {
        let (status, answer) = post_json(server, "/v1/embeddings", &body);
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(error_param(&answer), param, "{body} → {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
    }
    let many: Vec<String> = (0..2049).map(|i| i.to_string()).collect();
    let (status, answer) = post_json(server, "/v1/embeddings", &json!({"input": many}));
    assert_eq!((status, error_param(&answer)), (400, "input"), "{answer}");
}

fn vector(body: &Value, i: usize) -> Vec<f64> {
    body["data"][i]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Concurrent requests run together in shared forward passes: each still gets its own vectors
/// (as it gets them alone), and a bad request among them fails alone.
#[test]
fn concurrent_requests_share_passes_and_keep_their_own_vectors() {
    let server = minilm();
    let texts: Vec<String> = (0..24)
        .map(|i| format!("Request {i} asks about {} lighthouses on the coast.", "stormy ".repeat(i % 7)))
        .collect();
    let alone: Vec<Vec<f64>> = texts
        .iter()
        .map(|t| {
            let (status, body) = post_json(server, "/v1/embeddings", &json!({"input": t}));
            assert_eq!(status, 200, "{body}");
            vector(&body, 0)
        })
        .collect();
    let together: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let bad = scope.spawn(|| post_json(server, "/v1/embeddings", &json!({"input": [40000]})));
        let handles: Vec<_> = texts
            .iter()
            .map(|t| {
                scope.spawn(move || post_json(server, "/v1/embeddings", &json!({"input": [t, "and a second input"]})))
            })
            .collect();
        let (status, body) = bad.join().unwrap();
        assert_eq!((status, error_param(&body)), (400, "input"), "{body}");
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((status, body), want) in together.iter().zip(&alone) {
        assert_eq!(*status, 200, "{body}");
        let got = vector(body, 0);
        let cosine = got.iter().zip(want).map(|(a, b)| a * b).sum::<f64>();
        assert!(cosine > 0.99999, "a text's vector alone and among concurrent requests: cosine {cosine}");
    }
}

#[test]
fn very_long_and_empty_inputs_embed() {
    let long = "word ".repeat(20_000);
    let (status, body) = post_json(minilm(), "/v1/embeddings", &json!({"input": [long, ""], "dimensions": 384}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 256 + 2, "cut at max_seq_length, and [CLS] [SEP]: {}", body["usage"]);
    for item in body["data"].as_array().unwrap() {
        let v: Vec<f64> = item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(v.len() == 384 && (norm - 1.0).abs() < 1e-3, "a unit 384-d vector: {norm}");
    }
    // The first use loaded the model, and the log followed it layer by layer.
    assert!(minilm().log().contains("loading the embedding model: 100% (7 of 7 parts)"), "{}", minilm().log());
}

/// f32 (`OPENEDAI_EMBEDDING_PRECISION=f32`) within 1e-4 of sentence-transformers; the default
/// (8-bit products on a CPU with AVX-512 VNNI) within cosine 0.999.
#[test]
fn the_tiny_mpnet_through_the_api_matches_sentence_transformers() {
    let dir = repo_root().join("tests/fixtures/embeddings/tiny-mpnet");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/embeddings/tiny-mpnet.json")).unwrap(),
    )
    .unwrap();
    for precision in ["f32", "auto"] {
        let server = Server::start_with_env(
            &["--device", "flex"],
            &[("OPENEDAI_EMBEDDING_MODEL", dir.to_str().unwrap()), ("OPENEDAI_EMBEDDING_PRECISION", precision)],
        );
        let (status, body) = post_json(&server, "/v1/embeddings", &json!({"input": reference["texts"]}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], "tiny-mpnet");
        let lengths: u64 =
            reference["ids"].as_array().unwrap().iter().map(|s| s.as_array().unwrap().len() as u64).sum();
        assert_eq!(body["usage"]["prompt_tokens"], lengths);
        for (i, theirs) in reference["embeddings"].as_array().unwrap().iter().enumerate() {
            let ours = vector(&body, i);
            let theirs: Vec<f64> = theirs.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            if precision == "f32" {
                let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(worst <= 1e-4, "f32: differs by {worst}");
            } else {
                let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
                let cosine = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum::<f64>() / (norm(&ours) * norm(&theirs));
                assert!(cosine >= 0.999, "{precision}: cosine {cosine}");
            }
        }
    }
}

#[test]
fn a_missing_embedding_model_is_a_503_and_chat_still_works() {
    let model = common::smollm2();
    let server = Server::start_with_env(
        &["--model", model.to_str().unwrap(), "--device", "flex", "--ctx-size", "512"],
        &[("OPENEDAI_EMBEDDING_MODEL", "no-such-embedder")],
    );
    let (status, body) = post_json(&server, "/v1/embeddings", &json!({"input": "hello"}));
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("no-such-embedder") && message.contains("all-MiniLM-L6-v2"), "{message}");
    let (status, chat) = post_json(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
    );
    assert_eq!(status, 200, "{chat}");
}

#[test]
fn embedding_moderation_flags_violence_and_not_neutral_text() {
    let wasm = repo_root().join("plugins/wasm/embedding_moderation.wasm");
    assert!(wasm.exists(), "{} is missing: run scripts/build-plugins (scripts/test does)", wasm.display());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("embedding-moderation");
    std::fs::create_dir_all(&dir).unwrap();
    let settings = dir.join("settings.yaml");
    std::fs::write(
        &settings,
        format!(
            "plugin_cache_dir: {}\nplugins:\n  - {{name: moderation, path: {}, grants: [embed]}}\n",
            dir.join("cache").display(),
            wasm.display()
        ),
    )
    .unwrap();
    let server = Server::start_with_env(
        &["--device", "flex", "--settings", settings.to_str().unwrap()],
        &[("OPENEDAI_EMBEDDING_MODEL", "all-MiniLM-L6-v2")],
    );
    common::run_python("openai_embedding_moderation.py", &server);
}
