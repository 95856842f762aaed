//! Requests that once took the whole server down or reached past the caller, each against the
//! real `hearth` binary: after every one the server must still be serving. (The endpoint
//! plugins' header and host-time findings are in `plugins.rs`, beside the other hostile-plugin
//! tests.)

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Server, agent, model_dir, post_json};
use serde_json::{Value, json};

fn server() -> &'static Server {
    Server::shared()
}

/// The server answers `/health` and a short completion: it survived what came before.
fn assert_still_serving(server: &Server, after: &str) {
    assert!(server.exit_status().is_none(), "the server died after {after}:\n{}", server.log());
    let (status, body) = post_json(server, "/v1/completions", &json!({"prompt": "Hello", "max_tokens": 2}));
    assert_eq!(status, 200, "after {after}: {body}");
}

fn assert_refused(status: u16, body: &Value, param: &str, words: &[&str]) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], param, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    for w in words {
        assert!(message.contains(w), "the message should mention {w:?}: {message}");
    }
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 4});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// A JSON schema whose `$ref`s chain `n` deep.
fn ref_chain(n: usize) -> Value {
    let mut defs = serde_json::Map::new();
    for i in 0..n {
        let next = if i + 1 < n { json!({"$ref": format!("#/$defs/d{}", i + 1)}) } else { json!({"type": "boolean"}) };
        defs.insert(format!("d{i}"), next);
    }
    json!({"$ref": "#/$defs/d0", "$defs": defs})
}

#[test]
fn deep_grammars_compile_or_are_refused_without_overflowing_a_stack() {
    let s = server();
    // 500 nested optional rules: legitimate, and once a stack overflow.
    let (status, body) = post_json(
        s,
        "/v1/completions",
        &json!({"prompt": "Write a's:", "max_tokens": 6, "grammar_string": "root ::= \"a\"{0,500}"}),
    );
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert!(text.chars().all(|c| c == 'a'), "{text:?}");
    assert_still_serving(s, "a repetition of 500");

    let chain: String = (0..20_000).map(|i| format!("r{i} ::= r{} \"x\"\n", i + 1)).collect();
    let gbnf = format!("root ::= r0\n{chain}r20000 ::= \"y\"\n");
    let (status, body) =
        post_json(s, "/v1/completions", &json!({"prompt": "x", "max_tokens": 2, "grammar_string": gbnf}));
    assert_refused(status, &body, "grammar_string", &["too large"]);
    let chain: String = (0..4_100).map(|i| format!("r{i} ::= r{}\n", i + 1)).collect();
    let gbnf = format!("root ::= r0\n{chain}r4100 ::= \"y\"\n");
    let (status, body) =
        post_json(s, "/v1/completions", &json!({"prompt": "x", "max_tokens": 2, "grammar_string": gbnf}));
    assert_refused(status, &body, "grammar_string", &["rules"]);
    assert_still_serving(s, "20,000 chained rules");

    let (status, body) = post_json(
        s,
        "/v1/chat/completions",
        &chat(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": ref_chain(2000)}}}),
        ),
    );
    assert_refused(status, &body, "response_format", &["$ref"]);
    assert_still_serving(s, "a $ref chain 2,000 deep");

    // A chain of 300 is within the bounds: it compiles on the deep stack and is obeyed.
    let (status, body) = post_json(
        s,
        "/v1/chat/completions",
        &chat(
            json!({"max_tokens": 8, "response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": ref_chain(300)}}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap().trim();
    assert!(content == "true" || content == "false", "{content:?}");
}

#[test]
fn expanding_grammars_are_refused_before_they_expand() {
    let s = server();
    let cases = [
        (format!("root ::= \"{}\"{{2000}}", "x".repeat(100_000)), "bytes"),
        (format!("root ::= \"{}\"{{2000}}", "x".repeat(1_000)), "elements"),
        ("root ::= \"ab\"{2000}{2000}{2000}".to_owned(), "elements"),
    ];
    for (gbnf, word) in cases {
        let (status, body) =
            post_json(s, "/v1/completions", &json!({"prompt": "x", "max_tokens": 2, "grammar_string": gbnf}));
        assert_refused(status, &body, "grammar_string", &[word]);
    }
    assert_still_serving(s, "amplifying grammars");
}

#[test]
fn request_templates_cannot_allocate_without_bound() {
    let s = server();
    let templates = [
        ("{{ messages | tojson(indent=9223372036854775807) }}", "too wide"),
        ("{{ 'a\nb' | indent(4611686018427387904) }}", "too wide"),
        ("{{ '%0999999999999d' | format(1) }}", "too wide"),
        ("{% for i in range(5) %}{{ 'x' * 100000000 }}{% endfor %}", "exceeds"),
        // Doubles a string past any memory: the render's child dies, not the server.
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "memory",
        ),
    ];
    // minijinja folds constant expressions while it compiles: 30 of these are 3 GB before any
    // render, so a request's template is compiled in the child too.
    let folded = "{{ 'x' * 100000000 }}".repeat(30);
    let templates = templates.into_iter().chain([(folded.as_str(), "memory")]);
    for (template, word) in templates {
        for field in ["instruction_template_str", "chat_template_str"] {
            let mode = if field == "chat_template_str" { "chat" } else { "instruct" };
            let (status, body) = post_json(s, "/v1/chat/completions", &chat(json!({field: template, "mode": mode})));
            assert_eq!(status, 400, "{field} {template}: {body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(word), "{field} {template}: {message}");
        }
    }
    assert_still_serving(s, "unbounded templates");
}

/// The longest `/health` takes while `work` runs on other threads.
fn slowest_health_during(s: &Server, work: impl FnOnce() + Send) -> Duration {
    std::thread::scope(|scope| {
        let busy = scope.spawn(work);
        let mut slowest = Duration::ZERO;
        while !busy.is_finished() {
            let started = Instant::now();
            let status = agent().get(&s.url("/health")).call().map(|r| r.status().as_u16());
            assert_eq!(status.ok(), Some(200));
            slowest = slowest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        busy.join().expect("the work thread");
        slowest
    })
}

#[test]
fn heavy_tokenizing_neither_stalls_health_nor_runs_past_its_list_bound() {
    let s = server();
    let slowest = slowest_health_during(s, || {
        std::thread::scope(|scope| {
            let lists = scope.spawn(|| {
                let lists: Vec<Vec<u32>> = (0..1500).map(|i| vec![100 + i % 1000]).collect();
                post_json(s, "/v1/completions", &json!({"prompt": lists, "max_tokens": 1}))
            });
            let counts: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let text = "All work and no play makes Jack a dull boy. ".repeat(90_000);
                        post_json(s, "/v1/internal/token-count", &json!({"text": text}))
                    })
                })
                .collect();
            let (status, body) = lists.join().unwrap();
            assert_refused(status, &body, "prompt", &["at most 32", "1500"]);
            for count in counts {
                let (status, body) = count.join().unwrap();
                assert_eq!(status, 200, "{body}");
                assert!(body["length"].as_u64().unwrap() > 900_000, "{body}");
            }
        });
    });
    // Before, each of these stalled the async runtime for seconds (11 s for the lists).
    assert!(slowest < Duration::from_secs(2), "/health took {slowest:?} while requests tokenized");
    assert_still_serving(s, "heavy tokenizing");
}

/// `(status, access-control-allow-origin)` of a request with an `Origin` header.
fn with_origin(s: &Server, method: &str, path: &str, origin: &str) -> (u16, Option<String>) {
    let url = s.url(path);
    let resp = match method {
        "OPTIONS" => agent()
            .options(&url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type,authorization")
            .call(),
        "POST" => agent().post(&url).header("Origin", origin).send_json(json!({"text": "hi"})),
        _ => agent().get(&url).header("Origin", origin).call(),
    }
    .expect("request sent");
    let allow = resp.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (resp.status().as_u16(), allow)
}

#[test]
fn web_pages_of_other_origins_cannot_drive_the_api_by_default() {
    let s = Server::start(&["--model-dir", model_dir().to_str().unwrap()]);
    for (method, path) in [
        ("GET", "/v1/models"),
        ("POST", "/v1/internal/stop-generation"),
        ("OPTIONS", "/v1/chat/completions"),
        ("POST", "/v1/internal/model/unload"),
    ] {
        let (status, allow) = with_origin(&s, method, path, "https://evil.example");
        assert_eq!((status, allow), (403, None), "{method} {path}");
    }
    // A page of Hearth's own origin, and clients that are not browsers, are served.
    let own = format!("http://127.0.0.1:{}", s.port);
    assert_eq!(with_origin(&s, "GET", "/v1/models", &own).0, 200);
    assert_eq!(agent().get(&s.url("/v1/models")).call().unwrap().status().as_u16(), 200);
    // A body a browser may send cross-origin without asking first is not taken as JSON.
    let resp = agent()
        .post(&s.url("/v1/internal/token-count"))
        .header("Content-Type", "text/plain")
        .send("{\"text\": \"hi\"}")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
}

#[test]
fn allowed_origins_get_cors_but_never_for_model_management() {
    let s =
        Server::start(&["--model-dir", model_dir().to_str().unwrap(), "--cors-allow-origin", "https://app.example"]);
    let (status, allow) = with_origin(&s, "GET", "/v1/models", "https://app.example");
    assert_eq!((status, allow.as_deref()), (200, Some("https://app.example")));
    let (status, allow) = with_origin(&s, "OPTIONS", "/v1/chat/completions", "https://app.example");
    assert_eq!((status, allow.as_deref()), (200, Some("https://app.example")));
    for (method, path) in [("GET", "/v1/internal/model/list"), ("OPTIONS", "/v1/internal/model/load")] {
        let (status, allow) = with_origin(&s, method, path, "https://app.example");
        assert_eq!((status, allow), (403, None), "{method} {path}");
    }
    assert_eq!(with_origin(&s, "GET", "/v1/models", "https://evil.example"), (403, None));
}

#[test]
fn stop_generation_stops_only_the_callers_own_unless_admin() {
    let s = Server::smollm2(&["--api-key", "user-key", "--admin-key", "admin-key"]);
    let script = common::repo_root().join("tests/clients/stop_generation_scope.py");
    common::run_client(&common::python(), &[script.to_str().unwrap()], &s, &[]);
}

#[test]
fn a_bracketed_ipv6_loopback_keeps_the_host_guard_on() {
    let s = Server::start(&["--model-dir", model_dir().to_str().unwrap(), "--listen-host", "[::1]"]);
    let ask = |host: &str| {
        let mut stream = std::net::TcpStream::connect(("::1", s.port)).expect("connects to [::1]");
        write!(stream, "GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer.split(' ').nth(1).unwrap_or_default().to_owned()
    };
    assert_eq!(ask("evil.example"), "400");
    assert_eq!(ask(&format!("[::1]:{}", s.port)), "200");
}
