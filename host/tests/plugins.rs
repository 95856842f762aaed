//! WebAssembly plugins end to end (SPEC §10): the real `hearth` binary loads real components
//! built by `scripts/build-plugins` — first-party plugins, hostile ones, one built for another
//! WIT version — and a plugin built from the SDK's template outside the workspace.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, agent, post_json, post_stream, repo_root, sse_payloads};
use serde_json::{Value, json};

/// A component from `tests/plugins/wasm` or `plugins/wasm`, built by `scripts/build-plugins`.
fn component(dir: &str, file: &str) -> PathBuf {
    let path = repo_root().join(dir).join("wasm").join(file);
    assert!(path.exists(), "{} is missing: run scripts/build-plugins (scripts/test does)", path.display());
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugins").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a settings file whose `plugins:` list is `plugins` (YAML lines) and returns its path.
fn settings(name: &str, plugins: &str) -> PathBuf {
    let dir = scratch(name);
    let path = dir.join("settings.yaml");
    let cache = dir.join("cache");
    std::fs::write(&path, format!("plugin_cache_dir: {}\nplugins:\n{plugins}", cache.display())).unwrap();
    path
}

/// A SmolLM2 server (flex) with the given settings file.
fn serve(settings: &Path) -> Server {
    Server::smollm2(&["--settings", settings.to_str().unwrap()])
}

/// `(status, body text)` of any request.
fn call(server: &Server, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let url = server.url(path);
    let mut resp = match (method, body) {
        ("GET", _) => agent().get(&url).call(),
        (_, Some(b)) => agent().post(&url).send_json(b),
        (_, None) => agent().post(&url).send_empty(),
    }
    .expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON error: {body}"));
    assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "not OpenAI-shaped: {v}");
    v["error"].clone()
}

/// A question whose greedy answer names Paris under f32 and 8-bit-activation numerics alike
/// ("What is the capital of France?" starts with a near-tie, "The" vs "L", that llama.cpp's
/// rounding, and so the CPU path's, resolves to "L'Étoile…").
fn chat_body(stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
        "max_tokens": 24,
        "temperature": 0,
        "stream": stream,
    })
}

fn chat_text(server: &Server) -> String {
    let (status, body) = post_json(server, "/v1/chat/completions", &chat_body(false));
    assert_eq!(status, 200, "{body}");
    body["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
}

fn streamed_chat_text(server: &Server) -> String {
    let (status, body) = post_stream(server, "/v1/chat/completions", &chat_body(true));
    assert_eq!(status, 200, "{body}");
    let mut text = String::new();
    for p in sse_payloads(&body) {
        if p == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&p).unwrap();
        assert!(chunk.get("error").is_none(), "error event: {p}");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    text
}

/// The greedy answer of a server without plugins.
fn baseline_answer() -> String {
    chat_text(Server::shared())
}

// ---------------------------------------------------------------------------------------------
// Hostile endpoint plugin: every misbehaviour is an error for that request alone.

fn hostile_server() -> Server {
    let hostile = component("tests/plugins", "hostile.wasm");
    let tools = component("plugins", "token_tools.wasm");
    let path = settings(
        "hostile",
        &format!(
            "  - {{name: hostile, path: {}, limits: {{memory_mb: 64, call_ms: 300}}}}\n  - {{name: token-tools, path: {}, grants: [tokenize], limits: {{host_ms: 5000}}}}\n  - {{name: generator, path: {}, grants: [generate, clock], limits: {{host_ms: 3000}}}}\n",
            hostile.display(),
            tools.display(),
            hostile.display()
        ),
    );
    serve(&path)
}

fn assert_ok_after(server: &Server, what: &str) {
    let (status, body) = call(server, "GET", "/v1/plugins/hostile/ok", None);
    assert_eq!((status, body.as_str()), (200, "ok"), "the plugin does not work after {what}");
}

#[test]
fn hostile_endpoint_plugins_fail_only_their_own_request() {
    let server = hostile_server();
    assert_ok_after(&server, "start-up");

    // (path, status, error code, words the message must contain)
    let cases: &[(&str, u16, &str, &[&str])] = &[
        ("/loop", 504, "plugin_timeout", &["hostile", "CPU deadline", "300 ms"]),
        ("/memory", 502, "plugin_memory_limit", &["hostile", "memory limit", "64 MiB"]),
        ("/panic", 502, "plugin_crashed", &["hostile", "crashed"]),
        ("/big", 502, "plugin_bad_output", &["hostile", "byte limit"]),
        ("/bad-status", 502, "plugin_bad_output", &["hostile", "9999"]),
        ("/file", 502, "plugin_failed", &["hostile", "cannot read /etc/passwd"]),
        ("/socket", 502, "plugin_failed", &["hostile", "cannot connect"]),
        ("/env", 502, "plugin_failed", &["hostile", "no environment variables are visible"]),
        ("/sleep", 502, "plugin_crashed", &["hostile", "may not sleep"]),
    ];
    for (path, status, code, words) in cases {
        let started = Instant::now();
        let (got, body) = call(&server, "GET", &format!("/v1/plugins/hostile{path}"), None);
        let err = error_of(&body);
        assert_eq!(got, *status, "{path}: {body}");
        assert_eq!(err["code"], *code, "{path}: {body}");
        assert_eq!(err["type"], "plugin_error", "{path}: {body}");
        let message = err["message"].as_str().unwrap();
        for w in *words {
            assert!(message.contains(w), "{path}: the message should mention {w:?}: {message}");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{path} took {:?}", started.elapsed());
        assert_ok_after(&server, path);
    }
    assert!(server.exit_status().is_none(), "the server died:\n{}", server.log());
}

#[test]
fn a_looping_plugin_does_not_hold_up_other_requests() {
    let server = hostile_server();
    let looping = std::thread::scope(|scope| {
        let looping: Vec<_> =
            (0..3).map(|_| scope.spawn(|| call(&server, "GET", "/v1/plugins/hostile/loop", None).0)).collect();
        // While three calls spin to their deadline: the same plugin, another plugin, the
        // model and the health check all answer.
        for _ in 0..3 {
            assert_ok_after(&server, "nothing (concurrently with /loop)");
        }
        let (status, body) =
            call(&server, "POST", "/v1/plugins/token-tools/count", Some(&json!({"text": "Hello world"})));
        assert_eq!(status, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["tokens"], 2);
        let (status, _) = call(&server, "GET", "/health", None);
        assert_eq!(status, 200);
        assert!(chat_text(&server).contains("Paris"));
        looping.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    assert_eq!(looping, vec![504, 504, 504]);
}

#[test]
fn a_full_instance_pool_answers_busy_and_recovers() {
    let hostile = component("tests/plugins", "hostile.wasm");
    let path =
        settings("pool", &format!("  - {{name: hostile, path: {}, limits: {{call_ms: 300}}}}\n", hostile.display()));
    // Two instance slots; twelve calls that each spin for 300 ms of CPU overflow them.
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap() + "plugin_max_instances: 2\n").unwrap();
    let server = serve(&path);
    let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
        let calls: Vec<_> =
            (0..12).map(|_| scope.spawn(|| call(&server, "GET", "/v1/plugins/hostile/loop", None))).collect();
        calls.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|(s, _)| *s == 503 || *s == 504), "{statuses:?}");
    let busy: Vec<&String> = statuses.iter().filter(|(s, _)| *s == 503).map(|(_, b)| b).collect();
    assert!(!busy.is_empty(), "12 concurrent calls should overflow 2 slots: {statuses:?}");
    let err = error_of(busy[0]);
    assert_eq!(err["code"], "plugin_busy", "{err}");
    assert!(err["message"].as_str().unwrap().contains("hostile"), "{err}");
    assert_ok_after(&server, "a full pool");
}

#[test]
fn the_token_tools_endpoint_uses_the_model_tokenizer() {
    let server = hostile_server();
    let text = "The quick brown fox jumps over the lazy dog.";
    let (status, body) = post_json(&server, "/v1/internal/encode", &json!({"text": text}));
    assert_eq!(status, 200, "{body}");
    let ids = body["tokens"].clone();

    let (status, body) = call(&server, "POST", "/v1/plugins/token-tools/tokenize", Some(&json!({"text": text})));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ids"], ids);
    assert_eq!(answer["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect::<String>(), text);

    let (status, body) =
        call(&server, "POST", "/v1/plugins/token-tools/truncate", Some(&json!({"text": text, "max_tokens": 3})));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer, json!({"text": "The quick brown", "tokens": 3, "truncated": true}));

    // The plugin's own input errors are its answers, not plugin failures.
    let (status, body) = call(&server, "POST", "/v1/plugins/token-tools/count", Some(&json!({"txt": 1})));
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(&server, "GET", "/v1/plugins/no-such-plugin/x", None);
    assert_eq!(status, 404, "{body}");
    error_of(&body);
}

#[test]
fn a_granted_plugin_runs_the_model() {
    let server = hostile_server();
    let (status, body) = call(&server, "GET", "/v1/plugins/generator/generate", None);
    assert_eq!(status, 200, "{body}");
    let parts: Vec<&str> = body.split('|').collect();
    assert_eq!(parts.len(), 3, "{body}");
    assert!(parts[0].contains("Paris"), "{body}");
    assert_eq!(parts[1], "stop", "the stop string `.` should end it: {body}");
    // The same component without the grant is refused by the host.
    let (status, body) = call(&server, "GET", "/v1/plugins/hostile/generate", None);
    assert_eq!(status, 502, "{body}");
    assert!(error_of(&body)["message"].as_str().unwrap().contains("not granted `generate`"), "{body}");
}

#[test]
fn host_functions_are_charged_to_the_calls_host_time() {
    let server = hostile_server();
    // A plugin that generates until refused holds its thread only for its `host_ms` (3 s).
    let started = Instant::now();
    let (status, body) = call(&server, "GET", "/v1/plugins/generator/generate-forever", None);
    assert_eq!(status, 502, "{body}");
    let message = error_of(&body)["message"].as_str().unwrap().to_owned();
    assert!(message.contains("host-function time"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(60), "it held a thread for {:?}", started.elapsed());
    assert_ok_after(&server, "a plugin that generates forever");
    // 2,000 detokenize calls (one per piece) fit token-tools' 5 s: each once rebuilt the
    // vocabulary map, 15 s in all.
    let text = "word ".repeat(2_000);
    let (status, body) = call(&server, "POST", "/v1/plugins/token-tools/tokenize", Some(&json!({"text": text})));
    assert_eq!(status, 200, "{}", &body[..body.len().min(400)]);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(answer["pieces"].as_array().unwrap().len() >= 2_000, "{answer}");
}

#[test]
fn plugin_headers_cross_only_on_allow_lists() {
    let server = hostile_server();
    let mut resp = agent()
        .get(&server.url("/v1/plugins/hostile/headers"))
        .header("Cookie", "session=secret")
        .header("X-Api-Token", "secret")
        .header("Accept", "text/plain")
        .call()
        .expect("request sent");
    assert_eq!(resp.status().as_u16(), 200);
    let headers = resp.headers().clone();
    let seen = resp.body_mut().read_to_string().unwrap();
    let seen: Vec<&str> = seen.split(',').collect();
    assert!(seen.contains(&"accept"), "{seen:?}");
    for hidden in ["cookie", "x-api-token", "authorization", "host"] {
        assert!(!seen.contains(&hidden), "the plugin saw `{hidden}`: {seen:?}");
    }
    assert_eq!(headers.get("x-plugin").and_then(|v| v.to_str().ok()), Some("hostile"));
    for dropped in ["set-cookie", "access-control-allow-origin"] {
        assert!(headers.get(dropped).is_none(), "the plugin set `{dropped}`");
    }
}

#[test]
fn the_clock_stands_still_without_its_grant() {
    let server = hostile_server();
    let (status, body) = call(&server, "GET", "/v1/plugins/hostile/clock", None);
    assert_eq!((status, body.as_str()), (200, "0"), "an ungranted plugin must not see the time");
    // `generator` is granted `clock` too.
    let (status, body) = call(&server, "GET", "/v1/plugins/generator/clock", None);
    assert_eq!(status, 200, "{body}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(body.parse::<u64>().unwrap().abs_diff(now) < 60, "{body} vs {now}");
}

#[test]
fn host_functions_need_their_grant() {
    let tools = component("plugins", "token_tools.wasm");
    let path = settings("ungranted", &format!("  - {{name: tools, path: {}}}\n", tools.display()));
    let server = serve(&path);
    let (status, body) = call(&server, "POST", "/v1/plugins/tools/count", Some(&json!({"text": "hi"})));
    assert_eq!(status, 502, "{body}");
    let message = error_of(&body)["message"].as_str().unwrap().to_owned();
    assert!(message.contains("not granted `tokenize`"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Loading: what is refused, and how.

/// Runs `hearth` until it exits (or `timeout`, then kills it): `(exited with success, stderr)`.
fn run_hearth(args: &[&str], timeout: Duration) -> (Option<bool>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["--api-port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status, stderr)
}

fn assert_refused(name: &str, file: &Path, needles: &[&str]) {
    let path = settings(name, &format!("  - {{name: {name}, path: {}}}\n", file.display()));
    let (status, stderr) = run_hearth(&["--settings", path.to_str().unwrap()], Duration::from_secs(120));
    assert_eq!(status, Some(false), "hearth should exit with an error; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr should mention {n:?}:\n{stderr}");
    }
}

#[test]
fn a_plugin_for_another_wit_version_is_refused_at_load() {
    let file = component("tests/plugins", "other_version.wasm");
    assert_refused("future", &file, &["plugin `future`", "hearth:plugin@0.2.0", "hearth:plugin@0.1.0"]);
}

#[test]
fn files_that_are_not_components_are_refused_at_load() {
    let dir = scratch("not-components");
    let core = dir.join("core.wasm");
    // The smallest valid core module: magic and version 1.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    assert_refused("core", &core, &["plugin `core`", "core WebAssembly module, not a component"]);

    let text = dir.join("text.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    assert_refused("text", &text, &["plugin `text`", "not a WebAssembly file"]);

    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0\xff\xff\xff").unwrap();
    assert_refused("garbage", &garbage, &["plugin `garbage`", "not a valid component"]);

    assert_refused("missing", &dir.join("missing.wasm"), &["plugin `missing`", "cannot read the file"]);
}

#[test]
fn an_optional_plugin_that_cannot_load_is_left_out() {
    let tools = component("plugins", "token_tools.wasm");
    let path = settings(
        "optional",
        &format!(
            "  - {{name: gone, path: /nonexistent/gone.wasm, optional: true}}\n  - {{name: tools, path: {}, grants: [tokenize]}}\n",
            tools.display()
        ),
    );
    let server = serve(&path);
    assert!(server.log().contains("plugin `gone`"), "{}", server.log());
    let (status, body) = call(&server, "POST", "/v1/plugins/tools/count", Some(&json!({"text": "hi"})));
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Sampler plugins change generation exactly as they say.

#[test]
fn a_banned_word_never_appears_streamed_or_not() {
    let baseline = baseline_answer();
    let at = baseline.find("Paris").unwrap_or_else(|| panic!("the baseline should name Paris: {baseline:?}"));
    let banned = component("plugins", "banned_strings.wasm");
    let path = settings(
        "banned",
        &format!("  - {{name: no-paris, path: {}, config: {{banned: [Paris]}}}}\n", banned.display()),
    );
    let server = serve(&path);
    let plain = chat_text(&server);
    let streamed = streamed_chat_text(&server);
    for text in [&plain, &streamed] {
        assert!(!text.contains("Paris"), "the banned word appeared: {text:?}");
        // Greedy decoding is untouched until the step that would have completed the word.
        assert!(text.starts_with(baseline[..at].trim_end()), "{text:?} should start like {baseline:?}");
    }
    assert_eq!(plain, streamed);
}

#[test]
fn a_failing_sampler_fails_the_request_or_is_skipped_per_on_error() {
    let hostile = component("tests/plugins", "hostile_sampler.wasm");
    let baseline = baseline_answer();

    let path = settings(
        "sampler-fail",
        &format!("  - {{name: crashy, path: {}, config: {{mode: panic}}, on_error: fail}}\n", hostile.display()),
    );
    let server = serve(&path);
    let (status, body) = post_json(&server, "/v1/chat/completions", &chat_body(false));
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "plugin_crashed", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("crashy"), "{body}");
    // Streamed: the error arrives as an OpenAI-shaped error (status or final event), never a hang.
    let (status, stream) = post_stream(&server, "/v1/chat/completions", &chat_body(true));
    assert!(status == 502 || stream.contains("plugin_crashed"), "{status} {stream}");
    // The server keeps serving after a failed generation.
    let (status, _) = call(&server, "GET", "/v1/models", None);
    assert_eq!(status, 200);
    drop(server);

    let path = settings(
        "sampler-skip",
        &format!(
            "  - {{name: loopy, path: {}, config: {{mode: loop}}, limits: {{call_ms: 20}}, on_error: skip}}\n",
            hostile.display()
        ),
    );
    let server = serve(&path);
    assert_eq!(chat_text(&server), baseline, "a skipped sampler must leave the output as it was");
    assert!(server.wait_for_log("CPU deadline", Duration::from_secs(10)), "{}", server.log());

    let path = settings(
        "sampler-ban-all",
        &format!("  - {{name: greedy-ban, path: {}, config: {{mode: ban-all}}}}\n", hostile.display()),
    );
    let server = serve(&path);
    let (status, body) = post_json(&server, "/v1/chat/completions", &chat_body(false));
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "plugin_bad_output", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("every candidate"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Moderation through the keyword plugin, driven by openai-python.

#[test]
fn moderations_with_the_keyword_plugin_and_openai_python() {
    let keywords = component("plugins", "keyword_moderation.wasm");
    let path = settings("moderation", &format!("  - {{name: keywords, path: {}}}\n", keywords.display()));
    let server = serve(&path);
    let out = common::run_python("openai_moderation.py", &server);
    assert!(out.contains("threat flagged"), "{out}");
}

#[test]
fn moderations_without_a_plugin_say_so() {
    let server = Server::smollm2(&["--no-default-plugins"]);
    let (status, body) = post_json(&server, "/v1/moderations", &json!({"input": "hello"}));
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("moderation plugin"), "{body}");
}

// ---------------------------------------------------------------------------------------------
// A third party's plugin: the SDK template, copied outside the workspace, built with one cargo
// command, loaded by one settings line; the host is not rebuilt.

#[test]
fn a_plugin_from_the_sdk_template_builds_and_serves() {
    let root = repo_root();
    let dir = scratch("third-party");
    let plugin = dir.join("text-stats");
    copy_dir(&root.join("plugin-sdk/template"), &plugin);
    let manifest = plugin.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sdk = root.join("plugin-sdk");
    let pointed = text.replace("path = \"..\"", &format!("path = {:?}", sdk.display().to_string()));
    assert_ne!(text, pointed, "the template's SDK path line changed; update this test");
    std::fs::write(&manifest, pointed).unwrap();

    // Share compiled dependencies with scripts/build-plugins (same profile) to save CI time.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet"])
        .current_dir(&plugin)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let wasm = target.join("wasm32-wasip2/release/my_plugin.wasm");
    assert!(wasm.exists(), "{} was not built", wasm.display());

    let path = settings(
        "third-party-settings",
        &format!("  - {{name: text-stats, path: {}, grants: [tokenize]}}\n", wasm.display()),
    );
    let server = serve(&path);
    let text = "Hello there, world";
    let (status, body) = call(&server, "POST", "/v1/plugins/text-stats/", Some(&json!({"text": text})));
    assert_eq!(status, 200, "{body}");
    let (_, count) = post_json(&server, "/v1/internal/token-count", &json!({"text": text}));
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer, json!({"characters": 18, "words": 3, "lines": 1, "tokens": count["length"]}));
    let (status, body) = call(&server, "GET", "/v1/plugins/text-stats/", None);
    assert_eq!(status, 405, "{body}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}
