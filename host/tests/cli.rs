//! The `hearth` command line: `generate` answers with the real model, and broken model files end
//! in a clear error naming the file and the problem, a non-zero exit and no panic.

mod common;

#[path = "common/gguf_writer.rs"]
mod gguf_writer;

use std::path::{Path, PathBuf};
use std::process::Command;

use gguf_writer::{Meta, tiny_llama};

fn hearth(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).current_dir(common::repo_root()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `generate` on `path` and checks it fails cleanly with a message containing `needles`.
fn assert_clean_failure(path: &Path, needles: &[&str]) {
    let (ok, _out, err) =
        hearth(&["generate", "--model", path.to_str().unwrap(), "--prompt", "hi", "--device", "flex"]);
    assert!(!ok, "generate should fail for {}", path.display());
    assert!(!err.contains("panicked"), "no panic, got:\n{err}");
    assert!(err.contains(&path.display().to_string()), "the error names the file:\n{err}");
    for n in needles {
        assert!(err.contains(n), "the error says {n:?}:\n{err}");
    }
}

#[test]
fn generate_answers_the_capital_of_france() {
    let model = common::smollm2();
    let (ok, out, err) = hearth(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--chat",
        "--prompt",
        // A question whose answer's first token is no near-tie (see api.rs).
        "Which city is the capital of France?",
        "--max-tokens",
        "24",
        "--device",
        "flex",
    ]);
    assert!(ok, "generate failed:\n{err}");
    assert!(out.contains("Paris"), "answer: {out}");
    assert!(err.contains("tok/s"), "timing line on stderr: {err}");
}

#[test]
fn wrong_magic_is_a_clear_error() {
    let path = scratch("not-a-model.gguf");
    std::fs::write(&path, b"this is not a gguf file at all").unwrap();
    assert_clean_failure(&path, &["not a GGUF file"]);
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let path = scratch("truncated.gguf");
    let mut bytes = std::fs::read(common::smollm2()).unwrap();
    bytes.truncate(8 << 20);
    std::fs::write(&path, bytes).unwrap();
    assert_clean_failure(&path, &["truncated"]);
}

#[test]
fn unsupported_tensor_type_is_a_clear_error() {
    let path = scratch("q2k.gguf");
    let mut w = tiny_llama();
    w.tensors.retain(|t| t.name != "blk.0.attn_q.weight");
    // Q2_K (type 10): 84 bytes per 256 values; Hearth has no dequantizer for it.
    w.raw("blk.0.attn_q.weight", vec![256, 256], 10, vec![0u8; 256 * 84]);
    w.write(&path);
    assert_clean_failure(&path, &["blk.0.attn_q.weight", "Q2_K"]);
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let path = scratch("no-tokenizer.gguf");
    let mut w = tiny_llama();
    w.remove_meta("tokenizer.");
    w.write(&path);
    assert_clean_failure(&path, &["no tokenizer"]);
}

#[test]
fn config_that_does_not_match_the_weights_is_a_clear_error() {
    let path = scratch("mismatch.gguf");
    let mut w = tiny_llama();
    w.meta("llama.embedding_length", Meta::U32(128));
    w.write(&path);
    assert_clean_failure(&path, &["token_embd.weight", "[4, 256]"]);
}

#[test]
fn the_tiny_model_itself_loads_and_generates() {
    // The broken variants above fail because of what was broken, not because the base is bad.
    let path = scratch("tiny.gguf");
    tiny_llama().write(&path);
    let (ok, _out, err) = hearth(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        "ab",
        "--max-tokens",
        "3",
        "--device",
        "flex",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn a_missing_model_file_is_a_clear_error() {
    let path = scratch("does-not-exist.gguf");
    assert_clean_failure(&path, &["no such file"]);
}

#[test]
fn a_missing_gpu_driver_is_a_clear_error() {
    let model = common::smollm2();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["generate", "--model", model.to_str().unwrap(), "--prompt", "hi", "--device", "wgpu"])
        // No Vulkan driver and no other graphics API: wgpu finds no adapter.
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "no panic:\n{err}");
    assert!(err.contains("no wgpu adapter") && err.contains("--device flex"), "{err}");
}

/// SIGTERM (what `docker stop` and Kubernetes send) stops the server as Ctrl-C does: it drains
/// and exits 0, also as a container's PID 1, which ignores signals it has no handler for.
#[test]
fn sigterm_stops_the_server() {
    let server = common::Server::start(&["--device", "flex"]);
    server.signal(libc::SIGTERM);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.exit_status() {
            break status;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "still running 20 s after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{status}; stderr:\n{}", server.log());
    assert!(server.wait_for_log("shutting down", std::time::Duration::from_secs(5)), "{}", server.log());
}
