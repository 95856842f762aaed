//! End-to-end tests of the OpenAI API over raw HTTP against the real `hearth` binary serving
//! SmolLM2 (shared by the tests of this file).

mod common;

use std::io::Read;

use common::{Server, agent, get_json, post_json, post_stream, sse_payloads};
use serde_json::{Value, json};

fn server() -> &'static Server {
    Server::shared()
}

fn assert_openai_error(body: &Value, status: u16, expected_status: u16) {
    assert_eq!(status, expected_status, "status; body: {body}");
    let err = &body["error"];
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "error.message in {body}");
    assert!(err["type"].as_str().is_some(), "error.type in {body}");
    assert!(err.get("param").is_some() && err.get("code").is_some(), "error.param and error.code present in {body}");
}

fn greedy_completion(prompt: &str, max_tokens: u32) -> (String, Value) {
    let (status, body) =
        post_json(server(), "/v1/completions", &json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}));
    assert_eq!(status, 200, "{body}");
    (body["choices"][0]["text"].as_str().unwrap().to_owned(), body)
}

fn token_ids(text: &str) -> Vec<u64> {
    let (status, body) = post_json(server(), "/v1/internal/encode", &json!({"text": text}));
    assert_eq!(status, 200, "{body}");
    body["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect()
}

fn decode(ids: &[u64]) -> String {
    let (status, body) = post_json(server(), "/v1/internal/decode", &json!({"tokens": ids}));
    assert_eq!(status, 200, "{body}");
    body["text"].as_str().unwrap().to_owned()
}

#[test]
fn health_and_models_list_the_loaded_model_first() {
    let (status, body) = get_json(server(), "/health");
    assert_eq!((status, body.clone()), (200, json!({"status": "ok"})));
    let (status, body) = get_json(server(), "/v1/models");
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let first = &body["data"][0];
    assert_eq!(first["id"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(first["object"], "model");
    let (status, one) = get_json(server(), "/v1/models/SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(status, 200);
    assert_eq!(&one, first);
    let (status, body) = get_json(server(), "/v1/models/no-such-model");
    assert_openai_error(&body, status, 404);
}

#[test]
fn chat_answers_the_capital_of_france() {
    // Not "What is the capital of France?": its first token is a near-tie that the CPU path's
    // 8-bit activations resolve as llama.cpp does ("L'Étoile…"), not to "The … Paris".
    let (status, body) = post_json(
        server(),
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Which city is the capital of France?"}], "max_tokens": 30, "temperature": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{content}");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[test]
fn usage_prompt_tokens_equal_the_tokenizers_count() {
    let messages = json!([{"role": "user", "content": "Count my tokens, please."}]);
    let (_, prompt) = post_json(server(), "/v1/internal/chat-prompt", &json!({"messages": messages}));
    let prompt = prompt["prompt"].as_str().unwrap().to_owned();
    assert!(prompt.contains("<|im_start|>user\nCount my tokens, please.<|im_end|>"), "{prompt}");
    let (_, count) = post_json(server(), "/v1/internal/token-count", &json!({"text": prompt}));
    let (_, body) =
        post_json(server(), "/v1/chat/completions", &json!({"messages": messages, "max_tokens": 3, "temperature": 0}));
    assert_eq!(body["usage"]["prompt_tokens"], count["length"], "{body}");

    let (text, body) = greedy_completion("The quick brown fox", 7);
    assert_eq!(body["usage"]["prompt_tokens"].as_u64().unwrap() as usize, token_ids("The quick brown fox").len());
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 7);
    assert!(!text.is_empty());
}

/// Finds a stop string made of the last character of one generated token and the first two of
/// the next, that does not occur earlier in the text. Returns (stop, text before it).
fn stop_across_tokens(text: &str) -> (String, String) {
    let ids = token_ids(text);
    for i in 1..ids.len().saturating_sub(1) {
        let left = decode(&ids[..i]);
        let both = decode(&ids[..i + 1]);
        if !both.starts_with(&left) || left.is_empty() {
            continue;
        }
        let next = &both[left.len()..];
        let Some(last) = left.chars().last() else {
            continue;
        };
        let head: String = next.chars().take(2).collect();
        if head.chars().count() < 2 || last == '\n' {
            continue;
        }
        let stop = format!("{last}{head}");
        let cut = left.len() - last.len_utf8();
        if text.find(&stop) == Some(cut) {
            return (stop, text[..cut].to_owned());
        }
    }
    panic!("no stop string across tokens found in {text:?}");
}

#[test]
fn stop_string_spanning_two_tokens_never_reaches_the_client() {
    let prompt = "Write one sentence about the sea:";
    let (full, _) = greedy_completion(prompt, 40);
    let (stop, expected) = stop_across_tokens(&full);

    let (status, body) = post_json(
        server(),
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 40, "temperature": 0, "stop": stop}),
    );
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["text"].as_str().unwrap(), expected, "stop {stop:?}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    let (status, raw) = post_stream(
        server(),
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 40, "temperature": 0, "stop": [stop], "stream": true}),
    );
    assert_eq!(status, 200);
    let payloads = sse_payloads(&raw);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let mut streamed = String::new();
    let mut finish = None;
    for p in &payloads[..payloads.len() - 1] {
        let chunk: Value = serde_json::from_str(p).unwrap();
        streamed.push_str(chunk["choices"][0]["text"].as_str().unwrap_or_default());
        if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(streamed, expected, "streamed text, stop {stop:?}");
    assert_eq!(finish.as_deref(), Some("stop"));
}

#[test]
fn chat_stream_has_role_chunk_usage_chunk_and_done() {
    let (status, raw) = post_stream(
        server(),
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0,
                "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(status, 200);
    let payloads = sse_payloads(&raw);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"), "{raw}");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "", "refusal": null}));
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 8);
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["usage"].is_null(), "usage is null on ordinary chunks: {c}");
    }
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "length");
}

#[test]
fn bad_requests_get_openai_errors_naming_the_field() {
    let s = server();
    let mut resp = agent()
        .post(&s.url("/v1/chat/completions"))
        .header("Content-Type", "application/json")
        .send("{\"messages\": [")
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_openai_error(&body, status, 400);

    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"messages": msgs, "temperature": "hot"}), "temperature"),
        (json!({"messages": msgs, "top_p": 3}), "top_p"),
        (json!({"messages": msgs, "max_tokens": -5}), "max_tokens"),
        (json!({"messages": msgs, "n": 1000}), "n"),
        (json!({"messages": [{"role": "wizard", "content": "hi"}]}), "messages[0].role"),
        (json!({"messages": msgs, "typical_p": 1.5}), "typical_p"),
        (json!({"messages": msgs, "logprobs": true, "top_logprobs": 99}), "top_logprobs"),
        (json!({"messages": msgs, "frobnicate": 1}), "frobnicate"),
        (json!({"messages": []}), "messages"),
    ];
    for (body, field) in cases {
        let (status, resp) = post_json(s, "/v1/chat/completions", &body);
        assert_openai_error(&resp, status, 400);
        assert_eq!(resp["error"]["param"], field, "{resp}");
    }
    let (status, resp) = post_json(s, "/v1/completions", &json!({"prompt": [999999], "max_tokens": 1}));
    assert_openai_error(&resp, status, 400);
    let (status, resp) = post_json(s, "/v1/completions", &json!({"max_tokens": 1}));
    assert_openai_error(&resp, status, 400);
    assert_eq!(resp["error"]["param"], "prompt");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused() {
    let long = "word ".repeat(3000);
    let (status, body) = post_json(server(), "/v1/completions", &json!({"prompt": long, "max_tokens": 4}));
    assert_openai_error(&body, status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded");
}

#[test]
fn an_unknown_model_name_is_served_by_the_loaded_model() {
    let (status, body) = post_json(
        server(),
        "/v1/chat/completions",
        &json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
    );
    assert_eq!(status, 200, "any unknown name is served by the loaded model, as textgen does: {body}");
    assert_eq!(body["model"], "SmolLM2-135M-Instruct.Q4_1");
}

#[test]
fn a_ten_megabyte_body_is_refused_and_the_server_keeps_serving() {
    let big = json!({"prompt": "x".repeat(10 << 20), "max_tokens": 1});
    let (status, body) = post_json(server(), "/v1/completions", &big);
    assert_openai_error(&body, status, 413);
    let (status, _) = get_json(server(), "/health");
    assert_eq!(status, 200);
}

#[test]
fn unknown_routes_and_methods_are_openai_errors() {
    let (status, body) = get_json(server(), "/v1/nothing-here");
    assert_openai_error(&body, status, 404);
    let (status, body) = get_json(server(), "/v1/chat/completions");
    assert_openai_error(&body, status, 405);
}

/// On a server of its own: the other requests are answered after the stream's first chunk, and
/// the generation is still running after them — stop-generation, asked next, ends it with
/// finish_reason "stop" (a generation already over would say "length").
#[test]
fn health_models_and_tokenization_answer_while_a_generation_runs() {
    let s = &Server::smollm2(&[]);
    let mut resp = agent()
        .post(&s.url("/v1/completions"))
        .send_json(json!({"prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0,
                          "ban_eos_token": true, "stream": true}))
        .unwrap();
    let mut reader = resp.body_mut().as_reader();
    let mut first = [0u8; 64];
    let n = reader.read(&mut first).unwrap();
    assert!(n > 0, "the stream started");
    for path in ["/health", "/v1/models"] {
        assert_eq!(get_json(s, path).0, 200, "{path}");
    }
    assert_eq!(post_json(s, "/v1/internal/token-count", &json!({"text": "hello"})).0, 200);
    assert_eq!(post_json(s, "/v1/internal/stop-generation", &json!({})), (200, json!("OK")));
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let payloads = sse_payloads(&rest);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"), "{rest}");
    let last: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "still running after the other requests: {last}");
}

#[test]
fn completions_n_and_echo() {
    let (status, body) = post_json(
        server(),
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 3, "temperature": 1.0, "seed": 11, "n": 2, "echo": true}),
    );
    assert_eq!(status, 200, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert!(c["text"].as_str().unwrap().starts_with("Hello"), "{c}");
    }
}

/// Same seed → same text, for completions and chat; different seeds at temperature 1 → some
/// different texts (12 tokens of a 135M model at temperature 1: five seeds all alike would mean
/// the seed is ignored).
#[test]
fn the_same_seed_gives_the_same_text_and_other_seeds_others() {
    let completion = |seed: u64| {
        let req = json!({"prompt": "My favourite colour is", "max_tokens": 12, "temperature": 1.0, "seed": seed});
        let (status, body) = post_json(server(), "/v1/completions", &req);
        assert_eq!(status, 200, "{body}");
        body["choices"][0]["text"].as_str().unwrap().to_owned()
    };
    let chat = |seed: u64| {
        let req = json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 12,
            "temperature": 1.0, "seed": seed});
        let (status, body) = post_json(server(), "/v1/chat/completions", &req);
        assert_eq!(status, 200, "{body}");
        body["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
    };
    assert_eq!(completion(1234), completion(1234));
    assert_eq!(chat(1234), chat(1234));
    let texts: std::collections::BTreeSet<String> = (1..=5).map(completion).collect();
    assert!(texts.len() > 1, "five seeds, one text: {texts:?}");
    let texts: std::collections::BTreeSet<String> = (1..=5).map(chat).collect();
    assert!(texts.len() > 1, "five seeds, one text: {texts:?}");
}

/// textgen's logits examples: without samplers the next token's probabilities are the model's
/// softmax (here: transformers' reference distribution for the same prompt, within the CPU
/// path's 8-bit rounding), most likely first; with `use_samplers` and `top_k: 3` exactly three
/// tokens come back, renormalised.
#[test]
fn internal_logits_report_the_next_tokens_distribution() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("tests/fixtures/smollm2/reference.json")).unwrap(),
    )
    .unwrap();
    let prompt = &reference["prompts"].as_array().unwrap().iter().find(|p| p["name"] == "france_completion").unwrap();
    let body = json!({"prompt": prompt["text"], "add_bos_token": false, "top_logits": 10});
    let (status, raw) = post_json(server(), "/v1/internal/logits", &body);
    assert_eq!(status, 200, "{raw}");
    let raw = raw.as_object().unwrap();
    assert_eq!(raw.len(), 10, "{raw:?}");
    let probs: Vec<f64> = raw.values().map(|p| p.as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "most likely first: {probs:?}");
    // The reference's three most likely tokens, each within the CPU path's tolerance (see
    // model_reference.rs: llama.cpp's own distance from transformers on this file, 0.41).
    for pair in prompt["top_logprobs"].as_array().unwrap().iter().take(3) {
        let (id, want) = (pair[0].as_u64().unwrap(), pair[1].as_f64().unwrap());
        let token = decode(&[id]);
        let got = raw.get(&token).and_then(Value::as_f64).unwrap_or_else(|| panic!("{token:?} missing from {raw:?}"));
        assert!((got.ln() - want).abs() <= 0.45, "{token:?}: p = {got}, reference log p = {want}");
    }

    let sampled = json!({"prompt": prompt["text"], "use_samplers": true, "top_k": 3, "temperature": 0.7});
    let (status, kept) = post_json(server(), "/v1/internal/logits", &sampled);
    assert_eq!(status, 200, "{kept}");
    let kept = kept.as_object().unwrap();
    assert_eq!(kept.len(), 3, "{kept:?}");
    let total: f64 = kept.values().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "renormalised: {kept:?}");
    assert_eq!(kept.keys().next(), raw.keys().next(), "the same best token");

    let (status, err) = post_json(server(), "/v1/internal/logits", &json!({"prompt": "Hi", "top_logits": 0}));
    assert_openai_error(&err, status, 400);
    assert_eq!(err["error"]["param"], "top_logits");
}

/// The seed's "Chat completions with characters" request: `chat-instruct` with the `Example`
/// character. `/v1/internal/chat-prompt` shows the character's context (names substituted), its
/// greeting, the chat-instruct command around the script and the model's own assistant cue; the
/// completion answers, and never runs on into the user's next line.
#[test]
fn characters_and_chat_modes_shape_the_prompt() {
    let seed = json!({
        "messages": [{"role": "user", "content": "Hello! Who are you?"}],
        "mode": "chat-instruct", "character": "Example",
        "temperature": 0.6, "top_p": 0.95, "top_k": 20
    });
    let (status, body) = post_json(server(), "/v1/internal/chat-prompt", &seed);
    assert_eq!(status, 200, "{body}");
    let prompt = body["prompt"].as_str().unwrap();
    for part in [
        "Write a single reply for the character \"Marisol Vega\"",
        "Marisol Vega's Persona: Marisol Vega is a cheerful botanist",
        "You: What got you into botany?\nMarisol Vega: My grandmother's garden!",
        "Marisol Vega: *Marisol looks up",
        "You: Hello! Who are you?\n",
    ] {
        assert!(prompt.contains(part), "{part:?} missing from {prompt:?}");
    }
    assert!(!prompt.contains("{{user}}") && !prompt.contains("{{char}}"), "{prompt:?}");
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "the model's ChatML cue last: {prompt:?}");

    let chat = json!({
        "messages": [{"role": "user", "content": "Hello! Who are you?"}],
        "mode": "chat", "character": "Example", "user_name": "Sam"
    });
    let (_, body) = post_json(server(), "/v1/internal/chat-prompt", &chat);
    let prompt = body["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("Marisol Vega's Persona"), "{prompt:?}");
    assert!(prompt.contains("Sam: What got you into botany?"), "{{{{user}}}} is the request's name: {prompt:?}");
    assert!(prompt.ends_with("Sam: Hello! Who are you?\nMarisol Vega:"), "{prompt:?}");

    let mut answer = seed.clone();
    answer["max_tokens"] = json!(48);
    answer["seed"] = json!(3);
    let (status, body) = post_json(server(), "/v1/chat/completions", &answer);
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty(), "{body}");
    assert!(!content.contains("\nYou:"), "the reply stops before the user's turn: {content:?}");
}

/// The default character, named instruction templates and `continue_`.
#[test]
fn default_character_named_templates_and_continue() {
    let hello = json!([{"role": "user", "content": "Hi"}]);
    let (_, body) = post_json(server(), "/v1/internal/chat-prompt", &json!({"messages": hello, "mode": "chat"}));
    let prompt = body["prompt"].as_str().unwrap();
    assert!(prompt.contains("AI: How can I help you today?\nYou: Hi\nAI:"), "the Assistant character: {prompt:?}");

    let (_, body) =
        post_json(server(), "/v1/internal/chat-prompt", &json!({"messages": hello, "instruction_template": "Alpaca"}));
    assert!(body["prompt"].as_str().unwrap().ends_with("### Instruction:\nHi\n\n### Response:\n"), "{body}");

    let story = json!([{"role": "user", "content": "Tell a story."}, {"role": "assistant", "content": "Once upon a"}]);
    let (_, body) = post_json(server(), "/v1/internal/chat-prompt", &json!({"messages": story, "continue_": true}));
    assert!(body["prompt"].as_str().unwrap().ends_with("<|im_start|>assistant\nOnce upon a"), "{body}");

    for (request, param) in [
        (json!({"messages": hello, "mode": "chat", "character": "Nobody"}), "character"),
        (json!({"messages": hello, "mode": "chat", "character": "../settings"}), "character"),
        (json!({"messages": hello, "mode": "roleplay"}), "mode"),
        (json!({"messages": hello, "continue_": true}), "continue_"),
        (json!({"messages": hello, "instruction_template": "Nope"}), "instruction_template"),
    ] {
        let (status, err) = post_json(server(), "/v1/chat/completions", &request);
        assert_openai_error(&err, status, 400);
        assert_eq!(err["error"]["param"], param, "{request}: {err}");
    }
}

/// `logit_bias`: +100 makes a token the greedy choice, -100 keeps the greedy answer's first
/// token out of it; ids outside the vocabulary and biases outside -100…100 are 400s.
#[test]
fn logit_bias_moves_and_bans_tokens() {
    let prompt = "The capital of France is";
    let (greedy, _) = greedy_completion(prompt, 4);
    let banana = token_ids(" banana");
    assert_eq!(banana.len(), 1, "one token: {banana:?}");
    let forced =
        json!({"prompt": prompt, "max_tokens": 3, "temperature": 0, "logit_bias": {banana[0].to_string(): 100}});
    let (status, body) = post_json(server(), "/v1/completions", &forced);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], " banana banana banana", "{body}");

    let first = token_ids(&greedy)[0];
    let banned = json!({"prompt": prompt, "max_tokens": 4, "temperature": 0, "logit_bias": {first.to_string(): -100}});
    let (status, body) = post_json(server(), "/v1/completions", &banned);
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert!(!text.starts_with(&decode(&[first])), "{text:?} starts with the banned {:?}", decode(&[first]));

    let msgs = json!([{"role": "user", "content": "hi"}]);
    for bias in [json!({"99999999": 1}), json!({"x": 1}), json!({"5": 101}), json!({"5": "high"})] {
        let (status, err) = post_json(server(), "/v1/chat/completions", &json!({"messages": msgs, "logit_bias": bias}));
        assert_openai_error(&err, status, 400);
        assert_eq!(err["error"]["param"], "logit_bias", "{bias}: {err}");
    }
}

/// Streamed chat with `n: 3`: each choice streams under its own `index` (role chunk first,
/// one finish chunk), choices differ by seed, the one usage chunk counts every choice's tokens,
/// then one `[DONE]`; each streamed choice equals the non-streamed one with the same seed.
#[test]
fn streamed_chat_with_several_choices() {
    let request = json!({"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 6,
        "temperature": 1.0, "seed": 21, "n": 3, "stream": true, "stream_options": {"include_usage": true}});
    let (status, raw) = post_stream(server(), "/v1/chat/completions", &request);
    assert_eq!(status, 200, "{raw}");
    let payloads = sse_payloads(&raw);
    assert_eq!(payloads.iter().filter(|p| *p == "[DONE]").count(), 1, "{raw}");
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"), "{raw}");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]), "usage chunk last: {raw}");
    let mut texts = vec![String::new(); 3];
    for (index, text) in texts.iter_mut().enumerate() {
        let mine: Vec<&Value> =
            chunks.iter().filter(|c| c["choices"].get(0).is_some_and(|ch| ch["index"] == index)).collect();
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant", "choice {index} starts with its role");
        let finishes = mine.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).count();
        assert_eq!(finishes, 1, "choice {index}: one finish chunk");
        *text = mine.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    }
    let mut plain = request.clone();
    plain["stream"] = json!(false);
    plain.as_object_mut().unwrap().remove("stream_options");
    let (status, body) = post_json(server(), "/v1/chat/completions", &plain);
    assert_eq!(status, 200, "{body}");
    for (index, text) in texts.iter().enumerate() {
        assert_eq!(body["choices"][index]["message"]["content"].as_str().unwrap(), text, "choice {index}");
    }
    assert_eq!(usage["usage"]["completion_tokens"], body["usage"]["completion_tokens"], "{usage}");
}

/// `/v1/internal/logits` for `prompt` with extra request fields: `{token text: probability}`.
fn next_token_distribution(prompt: &str, fields: Value) -> serde_json::Map<String, Value> {
    let mut body = json!({"prompt": prompt, "top_logits": 1000});
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    let (status, dist) = post_json(server(), "/v1/internal/logits", &body);
    assert_eq!(status, 200, "{body}: {dist}");
    dist.as_object().unwrap().clone()
}

fn keys(dist: &serde_json::Map<String, Value>) -> std::collections::BTreeSet<String> {
    dist.keys().cloned().collect()
}

/// The tokens of the model's own distribution that pass `keep(p, p_max)`.
fn raw_tokens_where(
    raw: &serde_json::Map<String, Value>,
    keep: impl Fn(f64, f64) -> bool,
) -> std::collections::BTreeSet<String> {
    let best = raw.values().next().unwrap().as_f64().unwrap();
    raw.iter().filter(|(_, p)| keep(p.as_f64().unwrap(), best)).map(|(t, _)| t.clone()).collect()
}

/// textgen's truncation samplers on the real model's next-token distribution: what each keeps
/// is computed here from the model's own softmax, and the server's chain must keep exactly
/// that, renormalised. Order matters: temperature before min-p widens the set,
/// `temperature_last` does not. Presets fill in fields; the request's own win.
#[test]
fn samplers_and_presets_shape_the_real_distribution() {
    let prompt = "The three primary colours are red, yellow and";
    let raw = next_token_distribution(prompt, json!({}));
    let sampled = |fields: Value| {
        let mut f = json!({"use_samplers": true});
        f.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let dist = next_token_distribution(prompt, f);
        let total: f64 = dist.values().map(|p| p.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-3, "renormalised: {dist:?}");
        dist
    };
    assert_eq!(keys(&sampled(json!({"min_p": 0.05}))), raw_tokens_where(&raw, |p, best| p >= 0.05 * best));
    assert_eq!(keys(&sampled(json!({"top_a": 0.2}))), raw_tokens_where(&raw, |p, best| p >= 0.2 * best * best));
    assert_eq!(keys(&sampled(json!({"epsilon_cutoff": 100}))), raw_tokens_where(&raw, |p, _| p >= 0.01));
    let min_p_alone = keys(&sampled(json!({"min_p": 0.1})));
    let hot_first = keys(&sampled(json!({"min_p": 0.1, "temperature": 3.0})));
    let hot_last = keys(&sampled(json!({"min_p": 0.1, "temperature": 3.0, "temperature_last": true})));
    let hot_by_priority =
        keys(&sampled(json!({"min_p": 0.1, "temperature": 3.0, "sampler_priority": ["min_p", "temperature"]})));
    assert!(hot_first.len() > min_p_alone.len(), "{hot_first:?} vs {min_p_alone:?}");
    assert_eq!(hot_last, min_p_alone);
    assert_eq!(hot_by_priority, min_p_alone);
    // Mirostat draws the token itself: one is left. XTC at probability 1 sets the best aside.
    assert_eq!(sampled(json!({"mirostat_mode": 2, "seed": 3})).len(), 1);
    // A threshold under the second token's probability: at least two tokens lie above it, so
    // XTC (at probability 1) always removes the best.
    let second = raw.values().nth(1).unwrap().as_f64().unwrap();
    let xtc = sampled(json!({"xtc_probability": 1.0, "xtc_threshold": second / 2.0}));
    let best = raw.keys().next().unwrap();
    let head: Vec<&String> = xtc.keys().take(5).collect();
    assert!(!xtc.contains_key(best), "XTC keeps the best token {best:?}: {head:?}");
    assert!(xtc.contains_key(raw.keys().nth(1).unwrap()), "XTC keeps the least likely above the threshold: {head:?}");
    // Presets: Top-P is top_p 0.95; a request's own field wins over the preset's.
    assert_eq!(keys(&sampled(json!({"preset": "Top-P"}))), keys(&sampled(json!({"top_p": 0.95}))));
    assert_eq!(keys(&sampled(json!({"preset": "Top-P", "top_p": 0.5}))), keys(&sampled(json!({"top_p": 0.5}))));
    assert_eq!(sampled(json!({"preset": "Deterministic"})).len(), 1);
}

/// DRY turns greedy decoding away from repeating a sequence the context already holds; the
/// n-gram ban forbids it outright.
#[test]
fn dry_and_the_ngram_ban_stop_a_repeat() {
    let prompt = "1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, ";
    let greedy = |fields: Value| {
        let mut f = json!({"use_samplers": true, "do_sample": false});
        f.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let dist = next_token_distribution(prompt, f);
        assert_eq!(dist.len(), 1, "{dist:?}");
        dist.keys().next().unwrap().clone()
    };
    let repeat = greedy(json!({}));
    assert_eq!(repeat.trim(), "4", "the model continues the pattern");
    assert_ne!(greedy(json!({"dry_multiplier": 3.0})), repeat);
    assert_ne!(greedy(json!({"no_repeat_ngram_size": 3})), repeat);
    // With the comma a sequence breaker, a repeat reaches back only to the space after it (one
    // token, under the allowed length 2): DRY leaves the step alone.
    let spared = json!({"dry_multiplier": 3.0, "dry_sequence_breakers": "\",\""});
    assert_eq!(greedy(spared), repeat);
}

/// Every sampler runs in real generations: the same seed gives the same text, and the preset
/// `Deterministic` gives the greedy answer.
#[test]
fn extra_samplers_generate_reproducibly() {
    let completion = |fields: Value| {
        let mut body = json!({"prompt": "Once upon a time", "max_tokens": 12});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let (status, out) = post_json(server(), "/v1/completions", &body);
        assert_eq!(status, 200, "{body}: {out}");
        out["choices"][0]["text"].as_str().unwrap().to_owned()
    };
    for fields in [
        json!({"typical_p": 0.9}),
        json!({"tfs": 0.95}),
        json!({"top_n_sigma": 1.0}),
        json!({"eta_cutoff": 3}),
        json!({"dynamic_temperature": true, "dynatemp_low": 0.5, "dynatemp_high": 1.5}),
        json!({"smoothing_factor": 0.3}),
        json!({"mirostat_mode": 1, "mirostat_tau": 4}),
        json!({"mirostat_mode": 2}),
        json!({"adaptive_target": 0.3}),
        json!({"xtc_probability": 0.5}),
        json!({"dry_multiplier": 0.8}),
        json!({"encoder_repetition_penalty": 1.2}),
        json!({"no_repeat_ngram_size": 2}),
        json!({"preset": "Creative"}),
        json!({"preset": "Mirostat"}),
    ] {
        let mut seeded = fields.clone();
        seeded["seed"] = json!(42);
        assert_eq!(completion(seeded.clone()), completion(seeded), "{fields}");
    }
    assert_eq!(completion(json!({"preset": "Deterministic"})), completion(json!({"temperature": 0})));
}

#[test]
fn bad_sampler_fields_are_400s_naming_them() {
    for (fields, param) in [
        (json!({"temperature": "hot"}), "temperature"),
        (json!({"preset": "No Such Preset"}), "preset"),
        (json!({"preset": "../settings"}), "preset"),
        (json!({"sampler_priority": ["top_k", "beam_search"]}), "sampler_priority"),
        (json!({"mirostat_mode": 3}), "mirostat_mode"),
        (json!({"dry_multiplier": 1, "dry_base": 0.5}), "dry_base"),
        (json!({"dry_multiplier": 1, "dry_sequence_breakers": "\"unclosed"}), "dry_sequence_breakers"),
        (json!({"typical_p": 0}), "typical_p"),
        (json!({"custom_token_bans": "1,999999999"}), "custom_token_bans"),
        (json!({"penalty_alpha": 0.6}), "penalty_alpha"),
    ] {
        let mut body = json!({"prompt": "Hi", "max_tokens": 1});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let (status, err) = post_json(server(), "/v1/completions", &body);
        assert_openai_error(&err, status, 400);
        assert_eq!(err["error"]["param"], param, "{fields}: {err}");
    }
}

/// `grammar_string` (GBNF) restricts the output to the grammar, for completions and chat, n > 1
/// and streamed; a grammar that cannot be read is a 400 naming it.
#[test]
fn a_gbnf_grammar_restricts_the_output() {
    let phone = r#"root ::= "+1 " digit{3} "-" digit{3} "-" digit{4}
digit ::= [0-9]"#;
    let is_phone = |s: &str| {
        let b = s.as_bytes();
        s.len() == 15
            && s.starts_with("+1 ")
            && b[6] == b'-'
            && b[10] == b'-'
            && [3..6, 7..10, 11..15].iter().all(|r| b[r.clone()].iter().all(u8::is_ascii_digit))
    };
    for seed in 0..4 {
        let body = json!({"prompt": "My phone number is", "max_tokens": 30, "temperature": 1.0, "seed": seed,
            "grammar_string": phone, "n": 2});
        let (status, out) = post_json(server(), "/v1/completions", &body);
        assert_eq!(status, 200, "{out}");
        for choice in out["choices"].as_array().unwrap() {
            let text = choice["text"].as_str().unwrap();
            assert!(is_phone(text), "{text:?} is not a phone number");
            assert_eq!(choice["finish_reason"], "stop", "the grammar's end ends the answer");
        }
    }
    let yes_no = "root ::= (\"Yes\" | \"No\") \", because \" [a-z ]{1,40} \".\"";
    let body = json!({"messages": [{"role": "user", "content": "Is the sky blue?"}], "max_tokens": 40,
        "temperature": 0, "grammar_string": yes_no});
    let (status, out) = post_json(server(), "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{out}");
    let answer = out["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(answer.starts_with("Yes, because ") || answer.starts_with("No, because "), "{answer:?}");
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let (status, stream) = post_stream(server(), "/v1/chat/completions", &streamed_body);
    assert_eq!(status, 200);
    let streamed: String = sse_payloads(&stream)
        .iter()
        .filter(|p| *p != "[DONE]")
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, answer);

    for bad in ["root ::= \"unclosed", "start ::= \"no root\"", "root ::= undefined-rule"] {
        let (status, err) =
            post_json(server(), "/v1/completions", &json!({"prompt": "Hi", "max_tokens": 4, "grammar_string": bad}));
        assert_openai_error(&err, status, 400);
        assert_eq!(err["error"]["param"], "grammar_string", "{bad}: {err}");
    }
    let both = json!({"messages": [{"role": "user", "content": "Hi"}], "grammar_string": yes_no,
        "response_format": {"type": "json_object"}});
    let (status, err) = post_json(server(), "/v1/chat/completions", &both);
    assert_openai_error(&err, status, 400);
}

/// A thinking block at the start of the answer goes to `reasoning_content`, never into
/// `content`, streamed (markers split across chunks) or not. A grammar makes SmolLM2 think.
#[test]
fn thinking_goes_to_reasoning_content() {
    let grammar = r##"root ::= "<think>" [a-z ]{5,40} "</think>" "\n\n" [A-Z] [a-z ]{3,30} "." "##;
    let body = json!({"messages": [{"role": "user", "content": "Is fire hot?"}], "max_tokens": 60,
        "temperature": 0, "grammar_string": grammar});
    let (status, out) = post_json(server(), "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{body}: {out}");
    let message = &out["choices"][0]["message"];
    let reasoning = message["reasoning_content"].as_str().unwrap_or_else(|| panic!("no reasoning in {out}"));
    let content = message["content"].as_str().unwrap();
    assert!(!reasoning.is_empty() && !reasoning.contains("think>"), "{reasoning:?}");
    assert!(!content.contains("think>") && content.ends_with('.'), "{content:?}");
    assert!(content.starts_with(|c: char| c.is_ascii_uppercase()), "leading blank lines are dropped: {content:?}");

    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let (status, stream) = post_stream(server(), "/v1/chat/completions", &streamed_body);
    assert_eq!(status, 200);
    let (mut r, mut c) = (String::new(), String::new());
    for chunk in sse_payloads(&stream).iter().filter(|p| *p != "[DONE]") {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        let delta = &chunk["choices"][0]["delta"];
        r.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        c.push_str(delta["content"].as_str().unwrap_or(""));
    }
    assert_eq!((r.as_str(), c.as_str()), (reasoning, content));
    // Without a block, no reasoning_content at all.
    let plain = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0});
    let (_, out) = post_json(server(), "/v1/chat/completions", &plain);
    assert!(out["choices"][0]["message"].get("reasoning_content").is_none(), "{out}");
}

/// A body a handler has no use for (`{}` to stop-generation, as clients send it) is still read
/// before the answer: HTTP/1 keeps the connection for the next request only then. Before, the
/// answer went out at once, the body arrived after it, and the server closed the connection
/// under the client's next request (the soak test's rare "Remote end closed connection").
#[test]
fn a_body_the_handler_ignores_is_read_and_the_connection_kept() {
    use std::io::{Read, Write};
    // A server of its own: stop-generation from this address would stop the shared server's
    // generations that other tests are waiting on.
    let own = Server::smollm2(&["--no-default-plugins"]);
    let host = own.base.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&host).expect("connects");
    let head = format!(
        "POST /v1/internal/stop-generation HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).unwrap();
    // The answer waits for the body: nothing comes back before it is sent.
    conn.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 4096];
    match conn.read(&mut buf) {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        Ok(n) => panic!("answered before the body was sent: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => panic!("the connection failed: {e}"),
    }
    // The body, then a second request on the same connection: both are answered.
    conn.write_all(format!("{{}}GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut seen = String::new();
    while seen.matches("HTTP/1.1 200").count() < 2 {
        let n = conn.read(&mut buf).expect("the connection stays open for the second answer");
        assert!(n > 0, "the server closed the connection: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// A JSON `response_format`, a `grammar_string` and a forced tool call each constrain the answer:
/// two together are a 400 naming the field, before anything is rendered or generated.
#[test]
fn two_answer_constraints_are_a_400() {
    let tools = json!([{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]);
    let forced = json!({"type": "function", "function": {"name": "get_time"}});
    let messages = json!([{"role": "user", "content": "What time is it?"}]);
    let cases = [
        (json!({"response_format": {"type": "json_object"}, "grammar_string": "root ::= \"a\""}), "grammar_string"),
        (json!({"tools": tools, "tool_choice": forced, "grammar_string": "root ::= \"a\""}), "grammar_string"),
        (json!({"tools": tools, "tool_choice": forced, "response_format": {"type": "json_object"}}), "response_format"),
    ];
    for (fields, param) in cases {
        let mut body = json!({"messages": messages, "max_tokens": 4});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        let (status, answer) = post_json(server(), "/v1/chat/completions", &body);
        assert_eq!((status, answer["error"]["param"].as_str()), (400, Some(param)), "{fields} → {answer}");
    }
}
