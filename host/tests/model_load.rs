//! `/v1/internal/model/load` and `/unload` on the real binary: the seed's load request (its
//! `args` shape) swaps in another model from the model dir while a streamed answer from the old
//! one runs to its end and other requests keep being answered; `/v1/internal/model/info` then
//! names the new model; bad names and arguments change nothing; unloading leaves 503s.

mod common;

#[path = "common/gguf_writer.rs"]
mod gguf_writer;

use std::io::{BufRead, Read};
use std::time::{Duration, Instant};

use common::{Server, agent, get_json, post_json, sse_payloads};
use serde_json::{Value, json};

#[test]
fn a_model_loads_by_name_while_requests_keep_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let real = common::smollm2();
    for name in ["first.gguf", "second.gguf"] {
        std::os::unix::fs::symlink(&real, dir.path().join(name)).unwrap();
    }
    gguf_writer::tiny_llama().write(&dir.path().join("tiny.gguf"));
    let model_dir = dir.path().to_str().unwrap();
    let server =
        Server::start(&["--model-dir", model_dir, "--model", "first", "--device", "flex", "--ctx-size", "2048"]);
    let server = &server;
    assert_eq!(get_json(server, "/v1/internal/model/info").1["model_name"], "first");

    // Each load logs its device first, and says it is ready before the new model answers.
    let loads_begun = || server.log().matches("device: ").count();
    let ready = "is ready; it now answers every request";
    assert_eq!(loads_begun(), 1, "{}", server.log());
    std::thread::scope(|s| {
        // A streamed answer on the old model, running before the load begins (its first chunk
        // has arrived), read to its end afterwards.
        let (running_tx, running_rx) = std::sync::mpsc::channel();
        let streamed = s.spawn(move || {
            let body = json!({"messages": [{"role": "user", "content": "Write a poem about rivers."}],
                "max_tokens": 96, "temperature": 0, "stream": true});
            let mut resp = agent().post(&server.url("/v1/chat/completions")).send_json(body).unwrap();
            let status = resp.status().as_u16();
            let mut reader = std::io::BufReader::new(resp.body_mut().as_reader());
            let mut raw = String::new();
            while !raw.contains("data: {") && reader.read_line(&mut raw).unwrap() > 0 {}
            running_tx.send(()).unwrap();
            reader.read_to_string(&mut raw).unwrap();
            (status, raw)
        });
        running_rx.recv().unwrap();
        // Requests while the load runs (begun, not yet ready) are answered by the old model
        // (token counts: they need the served model and answer in milliseconds, so several fit
        // in a load of a quarter second).
        let during = s.spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while loads_begun() < 2 {
                assert!(Instant::now() < deadline, "the load never began: {}", server.log());
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut answered = 0;
            loop {
                let (status, body) = post_json(server, "/v1/internal/token-count", &json!({"text": "Hi there"}));
                assert_eq!(status, 200, "a request during the load: {body}");
                // The ready line comes before the swap: absent now, the answer was the old model's.
                if server.log().contains(ready) {
                    return answered;
                }
                answered += 1;
            }
        });
        let started = Instant::now();
        // The seed's "Load model" body, with a model of our model dir.
        let seed =
            json!({"model_name": "second.gguf", "args": {"ctx_size": 1024, "flash_attn": true, "cache_type": "q8_0"}});
        let (status, body) = post_json(server, "/v1/internal/model/load", &seed);
        let took = started.elapsed();
        assert_eq!((status, body.clone()), (200, json!("OK")), "load: {body}");
        let answered = during.join().unwrap();
        assert!(answered >= 1, "no request was answered during a {took:?} load");

        let (status, stream) = streamed.join().unwrap();
        assert_eq!(status, 200);
        let events = sse_payloads(&stream);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "the old model's stream ends whole: {stream}");
        assert!(!stream.contains("\"error\""), "{stream}");
    });

    let (_, info) = get_json(server, "/v1/internal/model/info");
    assert_eq!(info["model_name"], "second", "{info}");
    let (status, answer) =
        post_json(server, "/v1/completions", &json!({"prompt": "The capital of France is", "max_tokens": 4}));
    assert_eq!(status, 200, "the new model answers: {answer}");
    // ctx_size from args: a 1100-token prompt no longer fits.
    let long = "word ".repeat(1100);
    let (status, err) = post_json(server, "/v1/completions", &json!({"prompt": long, "max_tokens": 1}));
    assert_eq!(status, 400, "{err}");

    for (body, status, param) in [
        (json!({"model_name": "missing.gguf"}), 404, "model_name"),
        (json!({"model_name": "../etc/passwd"}), 400, "model_name"),
        (json!({"model_name": "tiny.gguf", "args": {"ctx_size": "big"}}), 400, "args.ctx_size"),
        (json!({"model_name": "tiny.gguf", "args": {"rope_scaling": 2}}), 400, "args.rope_scaling"),
        (json!({"model_name": "tiny.gguf", "instruction_template": "Nope"}), 400, "instruction_template"),
    ] {
        let (got, err) = post_json(server, "/v1/internal/model/load", &body);
        assert_eq!(got, status, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
    }
    assert_eq!(get_json(server, "/v1/internal/model/info").1["model_name"], "second", "bad loads change nothing");

    // A load's instruction template becomes the default of later chat requests.
    let (status, body) = post_json(
        server,
        "/v1/internal/model/load",
        &json!({"model_name": "tiny", "instruction_template": "Vicuna-v1.1"}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, prompt) =
        post_json(server, "/v1/internal/chat-prompt", &json!({"messages": [{"role": "user", "content": "Hi"}]}));
    assert!(prompt["prompt"].as_str().unwrap().ends_with("USER: Hi\nASSISTANT:"), "{prompt}");

    let (status, body) = post_json(server, "/v1/internal/model/unload", &Value::Null);
    assert_eq!((status, body), (200, json!("OK")));
    assert_eq!(get_json(server, "/v1/internal/model/info").1["model_name"], "None");
    let (status, _) = post_json(server, "/v1/completions", &json!({"prompt": "Hi"}));
    assert_eq!(status, 503);
}

/// The model dir's tables: `config.yaml` guesses a template for a model without one of its own
/// (a later match wins), `config-user.yaml` overrides; `/v1/internal/chat-prompt` shows which.
#[test]
fn the_model_dirs_tables_choose_templates() {
    let dir = tempfile::tempdir().unwrap();
    gguf_writer::tiny_llama().write(&dir.path().join("tiny-vicuna.gguf"));
    gguf_writer::tiny_llama().write(&dir.path().join("tiny-mine.gguf"));
    std::fs::write(
        dir.path().join("config.yaml"),
        ".*tiny:\n  instruction_template: Alpaca\n.*vicuna:\n  instruction_template: Vicuna-v1.1\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("config-user.yaml"), "tiny-mine:\n  instruction_template: ChatML\n").unwrap();
    let model_dir = dir.path().to_str().unwrap();
    let server = Server::start(&["--model-dir", model_dir, "--model", "tiny-vicuna", "--device", "flex"]);
    let prompt = |server: &Server| {
        let (status, body) =
            post_json(server, "/v1/internal/chat-prompt", &json!({"messages": [{"role": "user", "content": "Hi"}]}));
        assert_eq!(status, 200, "{body}");
        body["prompt"].as_str().unwrap().to_owned()
    };
    let vicuna = prompt(&server);
    assert!(vicuna.contains("USER: Hi\n") && vicuna.ends_with("ASSISTANT:"), "{vicuna:?}");
    let (status, body) = post_json(&server, "/v1/internal/model/load", &json!({"model_name": "tiny-mine.gguf"}));
    assert_eq!(status, 200, "{body}");
    let mine = prompt(&server);
    assert!(mine.contains("<|im_start|>user\nHi<|im_end|>"), "{mine:?}");
}

/// Writes a tiny llama in the Hugging Face layout into `dir`: config.json, model.safetensors
/// (small deterministic weights, tied embeddings) and a word-level tokenizer.json of 8 tokens
/// whose `added_tokens` list five more, ids 8–12, past the embedding's 8 rows.
fn write_folder_with_added_tokens(dir: &std::path::Path) {
    use safetensors::tensor::{Dtype, TensorView};
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let (vocab, hidden, ffn, kv) = (8usize, 64usize, 128usize, 32usize);
    let config = json!({
        "model_type": "llama", "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": ffn,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let shapes: Vec<(&str, Vec<usize>)> = vec![
        ("model.embed_tokens.weight", vec![vocab, hidden]),
        ("model.norm.weight", vec![hidden]),
        ("model.layers.0.input_layernorm.weight", vec![hidden]),
        ("model.layers.0.self_attn.q_proj.weight", vec![hidden, hidden]),
        ("model.layers.0.self_attn.k_proj.weight", vec![kv, hidden]),
        ("model.layers.0.self_attn.v_proj.weight", vec![kv, hidden]),
        ("model.layers.0.self_attn.o_proj.weight", vec![hidden, hidden]),
        ("model.layers.0.post_attention_layernorm.weight", vec![hidden]),
        ("model.layers.0.mlp.gate_proj.weight", vec![ffn, hidden]),
        ("model.layers.0.mlp.up_proj.weight", vec![ffn, hidden]),
        ("model.layers.0.mlp.down_proj.weight", vec![hidden, ffn]),
    ];
    let bytes: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let norm = name.ends_with("norm.weight");
            (0..n)
                .flat_map(|i| (if norm { 1.0f32 } else { ((i * 37 % 17) as f32 - 8.0) / 40.0 }).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = shapes
        .iter()
        .zip(&bytes)
        .map(|((name, shape), data)| (*name, TensorView::new(Dtype::F32, shape.clone(), data).unwrap()))
        .collect();
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    let words = ["<unk>", "a", "b", "c", "d", "e", "f", "g"];
    let vocab_map: serde_json::Map<String, Value> =
        words.iter().enumerate().map(|(i, w)| (w.to_string(), json!(i))).collect();
    let added: Vec<Value> = (0..5)
        .map(|i| {
            json!({"id": vocab + i, "content": format!("<extra_{i}>"), "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "<unk>"},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
}

/// Fine-tunes and conversions often leave a few added tokens in tokenizer.json past the
/// embedding's rows: such a folder loads (a warning names the ids) and answers; a prompt that
/// holds one of them, as text or as an id, is a 400 naming it.
#[test]
fn a_folder_with_added_tokens_past_the_embedding_loads_and_answers() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("added-tokens").join("tiny-llama");
    write_folder_with_added_tokens(&dir);
    let server = Server::start(&["--model", dir.to_str().unwrap(), "--device", "flex"]);
    let log = server.log();
    assert!(log.contains("have no embedding row") && log.contains("12 `<extra_4>`"), "{log}");

    let (status, body) =
        post_json(&server, "/v1/completions", &json!({"prompt": "a b c", "max_tokens": 4, "temperature": 0}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4, "{body}");

    let (status, body) = post_json(&server, "/v1/completions", &json!({"prompt": "a <extra_2> b", "max_tokens": 4}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`<extra_2>` (id 10)"), "{body}");

    let (status, body) = post_json(&server, "/v1/completions", &json!({"prompt": [1, 9], "max_tokens": 4}));
    assert_eq!(status, 400, "{body}");
}

/// While the start-up model loads, `/health` answers 503 `{"status": "loading"}` (with the share
/// read as `progress` once the loader knows its parts), then 200 `ok`; the log shows the load's
/// quarters. Polled from the moment the server announces its address: the load (≈0.2 s for
/// SmolLM2) starts after that announcement, so the first poll finds it loading.
#[test]
fn health_says_loading_with_progress_until_the_model_is_ready() {
    let model = common::smollm2();
    let server = Server::spawn(&["--model", model.to_str().unwrap(), "--device", "flex"], &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut loading, mut progress) = (0, Vec::new());
    loop {
        let (status, body) = get_json(&server, "/health");
        if status == 200 {
            assert_eq!(body["status"], "ok", "{body}");
            break;
        }
        assert_eq!((status, body["status"].as_str()), (503, Some("loading")), "{body}");
        loading += 1;
        if let Some(p) = body["progress"].as_f64() {
            progress.push(p);
        }
        assert!(Instant::now() < deadline, "never ready: {}", server.log());
    }
    assert!(loading > 0, "/health never said loading");
    assert!(progress.iter().all(|p| (0.0..=1.0).contains(p)), "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {progress:?}");
    assert!(server.log().contains("loading the model: 100%"), "{}", server.log());
}

/// On a terminal the load draws a progress bar (stderr a TTY: `script` gives the server one),
/// and not the quarter lines a log gets.
#[test]
fn a_terminal_shows_the_load_as_a_progress_bar() {
    use std::os::unix::process::CommandExt;
    let model = common::smollm2();
    let command = format!(
        "{} --model {} --device flex --api-port 0",
        env!("CARGO_BIN_EXE_hearth"),
        model.to_str().expect("a UTF-8 path")
    );
    let mut child = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("script (util-linux) runs");
    let group = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    while !seen.contains("is ready") && Instant::now() < deadline {
        if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    // SAFETY: killpg(2) on the process group this test made for `script` and the server.
    unsafe { libc::killpg(group, libc::SIGKILL) };
    let _ = child.wait();
    assert!(seen.contains("is ready"), "the server never became ready on a terminal:\n{seen}");
    assert!(seen.contains("loading the model ["), "no progress bar on a terminal:\n{seen}");
    assert!(seen.contains("32/32 parts (100%)"), "the bar ends whole:\n{seen}");
    assert!(!seen.contains("loading the model: 25%"), "a terminal gets the bar, not the log's quarters:\n{seen}");
}
